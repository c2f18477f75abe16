"""What an export format is: the contract each format module declares (``FORMAT``) and
:mod:`fastvit.deploy.registry` collects.

A format names its file suffix, the pip extra it needs, what it supports (int8,
dynamic batch, raw-pixel input, a features-only backbone) and how it verifies the
written file. Options a format does not support are refused from these
declarations, before any work is done, so the command line, the ``--help`` text and
the docs' formats table all read the same facts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastvit.errors import ConfigError
from fastvit.extras import require

if TYPE_CHECKING:
    from torch import nn

    from fastvit.deploy.verification import Verification
    from fastvit.pipeline import Loaded


@dataclass(frozen=True)
class ExportJob:
    """What a format's exporter is given: the module to write, where, and how.

    ``module`` is :func:`fastvit.deploy.export.exported_module` (``loaded.model``,
    normalization baked in with ``raw_pixels``); ``metadata`` is what the file
    records about its input (:func:`fastvit.deploy.metadata.export_metadata`).
    """

    loaded: Loaded
    module: nn.Module
    path: Path
    image_size: int
    metadata: dict[str, str]
    opset: int  # ONNX
    exporter: str  # ONNX: dynamo or torchscript
    coreml_precision: str  # Core ML: fp16 or fp32
    dynamic_batch: bool = False
    raw_pixels: bool = False
    image_input: bool = False

    def tensor_options(self) -> dict[str, Any]:
        """The keywords every tensor-in/tensor-out exporter takes, so each format's
        adapter names only what is its own (ONNX: opset and exporter)."""
        return {"image_size": self.image_size, "dynamic_batch": self.dynamic_batch,
                "raw_pixels": self.raw_pixels, "metadata": self.metadata}


@dataclass(frozen=True)
class Int8Job:
    """An int8 sibling of the verified fp32 export ``fp32``, calibrated on an ImageFolder
    and scored (fp32/int8 top-1 agreement; an embedding model: cosine similarity and
    nearest-neighbour agreement) on ``eval_dir`` or the calibration images."""

    fp32: ExportJob
    calibration: Path
    calibration_size: int = 128
    eval_dir: Path | None = None
    min_agreement: float | None = None
    min_cosine: float | None = None  # embedding models: the least mean cosine similarity


def scientific(value: float) -> str:
    """``1e-4`` (not ``0.0001``) for a tolerance in the docs."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


#: option -> its command-line flag, for the refusals
OPTION_FLAGS = {"int8": "--int8", "dynamic_batch": "--dynamic-batch",
                "raw_pixels": "--raw-pixels", "image_input": "--image-input",
                "features_only": "--features-only"}


@dataclass(frozen=True)
class ExportFormat:
    """One export format: its facts, its exporter and (when it has one) its int8 path."""

    name: str  # the --format value
    title: str  # what the file is, for reports and docs
    suffix: str
    extra: str | None  # the pip extra (fastvit[extra]) it needs, None: the core install
    requires: tuple[str, ...]  # import names checked before any work
    verified_by: str  # how the written file is checked against eager (docs)
    tolerance: str  # max |diff| accepted by that check (docs)
    export: Callable[[ExportJob], Verification | None]
    quantize: Callable[[Int8Job], dict] | None = None  # None: no int8
    int8_requires: tuple[str, ...] = ()  # import names the int8 path needs besides
    dynamic_batch: bool = True
    raw_pixels: bool = True
    image_input: bool = False
    features_only: bool = True
    max_batch: int | None = None  # the largest batch a dynamic-batch file takes, None: any
    #: the written file in one phrase when it depends on the options (else ``title``)
    describe: Callable[[ExportJob], str] | None = None
    #: option -> why it is refused and what to use instead
    hints: Mapping[str, str] = field(default_factory=dict)

    @property
    def int8(self) -> bool:
        return self.quantize is not None

    def description(self, job: ExportJob) -> str:
        return self.describe(job) if self.describe is not None else self.title

    def supports(self, option: str) -> bool:
        """Whether ``option`` (a key of :data:`OPTION_FLAGS`) is available in this format."""
        if option not in OPTION_FLAGS:
            raise KeyError(option)
        return bool(getattr(self, option))

    def require_installed(self, int8: bool = False) -> None:
        """Raise :class:`~fastvit.extras.MissingExtraError` naming the extra to install."""
        for module in self.requires:
            require(module, f"--format {self.name}", self.extra)
        for module in self.int8_requires if int8 else ():
            require(module, f"--format {self.name} --int8", self.extra)

    def refuse(self, option: str, others: list[str]) -> ConfigError:
        """The one error for ``option`` given with this format; ``others`` support it."""
        flag = OPTION_FLAGS[option]
        hint = self.hints.get(option)
        where = f"formats with {flag}: {', '.join(others)}" if others else "no format has it"
        return ConfigError(f"--format {self.name} has no {flag}" + (f" ({hint})" if hint else "")
                           + f"; {where}")
