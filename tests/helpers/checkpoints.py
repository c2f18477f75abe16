"""Fixtures for the checkpoint tests.

``official_layout_fixture`` renames our (timm's) keys to the official
release's. It is written on purpose without fastvit.checkpoints.layouts, from
the layout facts (the reference key lists of the official release and timm in
tests/checkpoints/reference_keys/), as regular-expression rewrites and a
hard-coded ``network`` index table, so a bug in the package's converter cannot
hide in the test.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

import fastvit

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "checkpoints" / "reference_keys"

# Position of each stage part in the official flat ``network`` list.
_NETWORK_INDEX_CONV_STAGE4 = {  # T8/T12/S12: RepMixer everywhere, no RepCPE
    "stages.0.blocks": 0, "stages.1.downsample": 1, "stages.1.blocks": 2,
    "stages.2.downsample": 3, "stages.2.blocks": 4, "stages.3.downsample": 5,
    "stages.3.blocks": 6,
}
_NETWORK_INDEX_ATTN_STAGE4 = {  # SA/MA: RepCPE before the stage-4 attention blocks
    **{k: v for k, v in _NETWORK_INDEX_CONV_STAGE4.items() if k != "stages.3.blocks"},
    "stages.3.pos_emb": 6, "stages.3.blocks": 7,
}

_RENAMES = [
    (r"^stem\.", "patch_embed."),
    (r"^final_conv\.", "conv_exp."),
    (r"^head\.fc\.", "head."),
    (r"\.layer_scale(_1|_2)?\.gamma$", r".layer_scale\1"),
    (r"\.conv_kxk\.", ".rbr_conv."),
    (r"\.conv_scale\.", ".rbr_scale."),
    (r"\.identity\.", ".rbr_skip."),
    (r"\.large_conv\.", ".lkb_origin."),
    (r"\.mlp\.", ".convffn."),
    (r"\.se\.fc1\.", ".se.reduce."),
    (r"\.se\.fc2\.", ".se.expand."),
    (r"^(network\.\d+\.proj\.0)\.reparam_conv\.", r"\1.lkb_reparam."),
    (r"^(network\.\d+)\.pos_enc\.", r"\1.pe."),
]


def official_layout_fixture(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our-layout state dict -> the official release's key names (same tensors)."""
    attention = any(k.startswith("stages.3.pos_emb.") for k in state_dict)
    table = _NETWORK_INDEX_ATTN_STAGE4 if attention else _NETWORK_INDEX_CONV_STAGE4
    out = {}
    for key, value in state_dict.items():
        m = re.match(r"^(stages\.\d\.(?:downsample|pos_emb|blocks))\.(.*)$", key)
        if m:
            key = f"network.{table[m.group(1)]}.{m.group(2)}"
        for pattern, replacement in _RENAMES:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def read_reference(name: str) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` from a reference list (lines ``key (d0, d1, ...)``)."""
    out = {}
    for line in (REFERENCE_DIR / f"{name}.txt").read_text().splitlines():
        key, shape = line.split(" ", 1)
        out[key] = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
    return out


def shapes(state_dict: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def random_model(name: str, seed: int = 0, **kwargs) -> fastvit.FastVit:
    """A variant with random BatchNorm statistics and layer scales (eval mode)."""
    torch.manual_seed(seed)
    model = fastvit.create_model(name, **kwargs)
    return fastvit.randomize_model_stats(model, seed).eval()


def relative_difference(a: torch.nn.Module, b: torch.nn.Module, size: int = 64) -> float:
    return fastvit.max_abs_difference(a, b, (1, 3, size, size), relative=True)


def same_state(model: torch.nn.Module, reference: torch.nn.Module | dict) -> bool:
    """Bit-identical state dicts (same keys, same values): the cheap exactness check
    for two models of the same architecture."""
    ref = reference.state_dict() if isinstance(reference, torch.nn.Module) else reference
    got = model.state_dict()
    return got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in got)
