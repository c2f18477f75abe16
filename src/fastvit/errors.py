"""User-facing errors: the CLI prints their message, without a traceback."""


class FastVitError(Exception):
    """Base class of errors caused by the user's input (files, options, data)."""


class CheckpointError(FastVitError, ValueError):
    """A checkpoint is unreadable, unsafe, of an unknown layout or of another model."""


class DataError(FastVitError, ValueError):
    """A dataset or image is missing, empty, corrupt or inconsistent."""


class ConfigError(FastVitError, ValueError):
    """A recipe or command-line option is invalid."""
