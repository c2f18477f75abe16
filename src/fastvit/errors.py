"""User-facing errors: the CLI prints their message, without a traceback (and the
clean stop on a signal, which the CLI maps to its own exit code)."""


class FastVitError(Exception):
    """Base class of errors caused by the user's input (files, options, data)."""


class CheckpointError(FastVitError, ValueError):
    """A checkpoint is unreadable, unsafe, of an unknown layout or of another model."""


class DataError(FastVitError, ValueError):
    """A dataset or image is missing, empty, corrupt or inconsistent."""


class ConfigError(FastVitError, ValueError):
    """A recipe or command-line option is invalid."""


class OutputWriteError(FastVitError, OSError):
    """An output file could not be written (disk full, quota, read-only or no permission);
    nothing half-written is left and a file it would have replaced is untouched."""


class StoppedBySignal(Exception):  # noqa: N818 - not an error: a clean, resumable stop
    """Training stopped on SIGTERM, SIGINT or SIGUSR1 after writing a resumable checkpoint.

    The command line exits with :attr:`exit_code` (75, ``EX_TEMPFAIL``: "try
    again later"), distinct from success (0), errors (2) and an abort (130).
    """

    exit_code = 75

    def __init__(self, signal_name: str, step: int, checkpoint: str | None) -> None:
        where = f"; checkpoint {checkpoint}" if checkpoint else ""
        super().__init__(f"stopped by {signal_name} after step {step}{where}; continue with "
                         f"the same command and --resume auto")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint

    def __reduce__(self) -> tuple:
        return type(self), (self.signal_name, self.step, self.checkpoint)
