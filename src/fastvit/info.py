"""The variant table (``fastvit info``), computed from the models themselves."""

from __future__ import annotations

from fastvit.errors import ConfigError
from fastvit.factory import create_model
from fastvit.models import VARIANTS, count_gmacs, count_params


def variant_row(name: str, image_size: int = 256) -> dict:
    """Measured facts about one variant (params both forms, fused GMACs, layout); the
    classifier is the row's (1000 classes; the CLIP projection for MCi towers)."""
    spec = VARIANTS[name]
    model = create_model(name)
    params_train = count_params(model)
    fused = model.reparameterize()
    attention = [i + 1 for i in spec.attention_stages]
    return {
        "variant": name,
        "params_train_m": params_train / 1e6,
        "params_fused_m": count_params(fused) / 1e6,
        "gmacs": count_gmacs(fused, image_size),
        "image_size": image_size,
        "depths": list(spec.depths),
        "widths": list(spec.widths),
        "mlp_ratio": spec.mlp_ratio,
        "num_stages": spec.num_stages,
        "mixers": spec.mixers,
        "pos_emb": (f"RepCPE (stage{'s' * (len(attention) > 1)} "
                    f"{', '.join(map(str, attention))})" if attention else "-"),
        "family": spec.family,
        "num_classes": model.num_classes,
        "layer_scale_init": spec.layer_scale_init,
        "crop_pct": spec.crop_pct,
        "published_top1": spec.published.get("top1"),
    }


def format_table(rows: list[dict]) -> str:
    head = ("| variant | params train / fused (M) | GMACs | depths | widths | mlp | stage mixers "
            "| pos. emb. | paper top-1 |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        mix = "/".join("RM" if m == "RepMixer" else "Attn" for m in r["mixers"])
        lines.append(
            f"| {r['variant']} | {r['params_train_m']:.2f} / {r['params_fused_m']:.2f} "
            f"| {r['gmacs']:.2f} | {','.join(map(str, r['depths']))} "
            f"| {','.join(map(str, r['widths']))} | {r['mlp_ratio']:g} | {mix} | {r['pos_emb']} "
            f"| {r['published_top1']} |")
    return "\n".join(lines)


def variant_table(names: list[str] | None = None, image_size: int = 256) -> list[dict]:
    """:func:`variant_row` for ``names`` (default: every variant, smallest first)."""
    names = names or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    return [variant_row(name, image_size) for name in names]
