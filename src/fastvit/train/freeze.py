"""Training part of a model: ``model.freeze: backbone`` trains the classifier alone.

A linear probe (the ``linear_probe`` recipe) keeps a pretrained network as it is and
fits a new classifier on its pooled features: every parameter but the classifier's
(``head.fc``) stops requiring gradients (the optimizer then never sees them: no
update, no weight decay), and every BatchNorm of the frozen part stays in eval mode,
so its running statistics are used and never updated, even when the training loop
calls ``model.train()``. Drop path has no place on a frozen network: the trainer
builds it with none (see :func:`fastvit.train.config.validate`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

FREEZE_CHOICES = ("backbone",)  # model.freeze; null: nothing is frozen


class EvalBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d pinned to eval mode: ``train()`` leaves it in eval (running
    statistics used, never updated). Same parameters and state-dict keys."""

    def train(self, mode: bool = True) -> EvalBatchNorm2d:
        return super().train(False)


@dataclass
class Frozen:
    """What :func:`freeze_backbone` froze, for the run's header."""

    trainable: int  # parameters still trained
    total: int
    batchnorms: int  # BatchNorm layers pinned to eval mode

    def describe(self) -> str:
        return (f"frozen: the backbone (model.freeze backbone): only the classifier head.fc "
                f"trains ({self.trainable:,} of {self.total:,} parameters), "
                f"{self.batchnorms} BatchNorm layer(s) in eval mode, no drop path")


def freeze_backbone(model: nn.Module) -> Frozen:
    """Freeze every parameter of ``model`` (a FastViT classifier) but its classifier
    ``head.fc``, and pin the BatchNorms outside it to eval mode; in place."""
    classifier = model.get_classifier()
    keep = {id(p) for p in classifier.parameters()}
    if not keep:
        raise ValueError("the model has no classifier parameters to train")
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    inside = {id(m) for m in classifier.modules()}
    pinned = 0
    for module in model.modules():
        if type(module) is nn.BatchNorm2d and id(module) not in inside:
            module.__class__ = EvalBatchNorm2d
            module.eval()
            pinned += 1
    params = list(model.parameters())
    return Frozen(sum(p.numel() for p in params if p.requires_grad),
                  sum(p.numel() for p in params), pinned)
