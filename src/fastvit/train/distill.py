"""Knowledge distillation: DeiT-style hard and soft losses and frozen teachers.

Hard (the paper): ``(1 - alpha) * base + alpha * CE(student, argmax teacher)``
with ``alpha = 0.5``; no distillation token. Soft: ``KL(teacher_T || student_T)
* T^2`` averaged over the batch (``batchmean``, the mathematically defined KL;
DeiT divides by the number of logits instead, i.e. by ``num_classes`` more).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastvit.errors import CheckpointError, ConfigError


def hard_distillation_term(student_logits: torch.Tensor,
                           teacher_logits: torch.Tensor) -> torch.Tensor:
    """Cross entropy of the student against the teacher's top-1 class."""
    return F.cross_entropy(student_logits, teacher_logits.argmax(dim=1))


def soft_distillation_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                           temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, mean over the batch."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits.float() / t, dim=1),
                  F.log_softmax(teacher_logits.float() / t, dim=1),
                  reduction="batchmean", log_target=True)
    return kl * (t * t)


class DistillationLoss(nn.Module):
    """Wraps the base criterion; the teacher sees the same (mixed) images as the student."""

    def __init__(self, base: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 teacher: nn.Module, kind: str = "hard", alpha: float = 0.5,
                 temperature: float = 1.0) -> None:
        super().__init__()
        if kind not in ("hard", "soft"):
            raise ConfigError(f"distillation kind must be hard or soft, got {kind!r}")
        self.base, self.teacher = base, teacher
        self.kind, self.alpha, self.temperature = kind, alpha, temperature

    def forward(self, images: torch.Tensor, student_logits: torch.Tensor,
                targets: torch.Tensor) -> torch.Tensor:
        base = self.base(student_logits, targets)
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        if teacher_logits.shape[-1] != student_logits.shape[-1]:
            raise ConfigError(f"teacher predicts {teacher_logits.shape[-1]} classes, the student "
                              f"{student_logits.shape[-1]}: they must share the label set")
        if self.kind == "hard":
            term = hard_distillation_term(student_logits, teacher_logits)
        else:
            term = soft_distillation_term(student_logits, teacher_logits, self.temperature)
        return (1.0 - self.alpha) * base + self.alpha * term


def build_teacher(name: str, weights: str | Path, num_classes: int,
                  device: torch.device | str = "cpu") -> nn.Module:
    """A frozen eval-mode teacher.

    ``name`` is a FastViT variant (``weights``: anything :func:`fastvit.load_model`
    reads, a weights tag such as ``dist_in1k`` too; the teacher is used in its deploy
    form, which changes nothing in eval mode but runs faster) or a torchvision
    classifier such as ``regnet_y_16gf`` whose file holds a state dict
    (``torch.save(model.state_dict())``, read with ``weights_only=True``, or safetensors).
    """
    from fastvit.models import VARIANTS
    from fastvit.pipeline import load_model

    path = Path(weights)
    if name in VARIANTS:
        teacher = load_model(name, checkpoint=weights, num_classes=num_classes).model
    elif not path.is_file():
        raise ConfigError(f"teacher weights not found: {path}")
    else:
        teacher = _torchvision_teacher(name, path, num_classes)
    teacher.eval().requires_grad_(False)
    return teacher.to(device)


def _torchvision_teacher(name: str, path: Path, num_classes: int) -> nn.Module:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise ConfigError(f"unknown teacher {name!r}: use a FastViT variant or a torchvision "
                          f"classifier ({', '.join(sorted(known)[:8])}, ...)")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    state = _read_state_dict(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not hold {name} weights for {num_classes} classes: "
                              f"{str(err).splitlines()[0]}") from None
    return model


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise CheckpointError(f"cannot read teacher weights {path}: {err}") from None
    for key in ("state_dict", "model", "model_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds no state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}
