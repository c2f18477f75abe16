"""Photo search: rank the images of an embeddings index by a text query or an example image.

The index holds L2-normalized image embeddings (:mod:`fastvit.clip.index`); the query is
embedded by the same CLIP model (the text tower for words, the image tower for a photo)
and the images are ranked by cosine similarity, highest first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fastvit.clip.index import EmbeddingIndex
from fastvit.clip.model import ClipModel
from fastvit.errors import ConfigError
from fastvit.pipeline import eval_transform


def check_model(index: EmbeddingIndex, clip: ClipModel) -> None:
    """The query must be embedded by the model that embedded the images."""
    if clip.name != index.model:
        raise ConfigError(f"the index was embedded with {index.model}, not {clip.name}")
    if clip.embed_dim != index.embeddings.shape[1]:
        raise ConfigError(f"the index holds {index.embeddings.shape[1]}-dimensional embeddings "
                          f"but {clip.name} makes {clip.embed_dim}-dimensional ones")


@torch.inference_mode()
def text_query(clip: ClipModel, text: str) -> torch.Tensor:
    """The normalized text embedding of ``text`` (one vector)."""
    if not text.strip():
        raise ConfigError("the search text is empty")
    return clip.encode_text([text])[0].float().cpu()


@torch.inference_mode()
def image_query(clip: ClipModel, image: str | Path,
                preprocessing: dict[str, Any] | None = None) -> torch.Tensor:
    """The normalized embedding of an example image, preprocessed as the index was."""
    from fastvit.deploy.predict import read_image

    transform = eval_transform({**clip.cfg, **(preprocessing or {})})
    batch = transform(read_image(image)).unsqueeze(0).to(clip.device)
    return clip.encode_image(batch)[0].float().cpu()


def search(index: EmbeddingIndex, query: torch.Tensor, top: int = 10) -> list[dict[str, Any]]:
    """``[{rank, image, score}]`` of the ``top`` images most similar to ``query`` (cosine)."""
    if top < 1:
        raise ConfigError("--top must be >= 1")
    if query.shape[-1] != index.embeddings.shape[1]:
        raise ConfigError(f"a {query.shape[-1]}-dimensional query cannot search "
                          f"{index.embeddings.shape[1]}-dimensional embeddings")
    scores = index.embeddings @ query.float()
    values, order = scores.topk(min(top, len(index.paths)))
    return [{"rank": r + 1, "image": index.paths[int(i)], "score": float(v)}
            for r, (v, i) in enumerate(zip(values, order, strict=True))]


def format_hits(hits: list[dict[str, Any]]) -> str:
    return "\n".join(f"{h['rank']:>3}. {h['score']:.4f}  {h['image']}" for h in hits)
