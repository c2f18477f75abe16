"""``fastvit predict --data SOURCE``: top-k over the evaluation split of a ``--data`` source,
with each sample's true label, and top-1 / top-5 over them.

The split is the one ``fastvit evaluate --data`` scores
(:meth:`fastvit.data.sources.DataSource.eval_split`): the val shards, a datasets
source's validation / val / test split, an ImageFolder's ``val/``; where there is
none, the part of train the weights' training held out (recorded with eager weights),
else the whole train split (a folder of class folders: all of it). Each row is named
as ``skipped_images.txt`` names samples (a file's path, ``SHARD.tar:KEY.EXT``,
``SOURCE[split]#ROW``); an unreadable sample is skipped, listed once and kept as a
row with ``error``, as an unreadable file found in a folder is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from fastvit.deploy.predict import Predictor, classify_rows
from fastvit.errors import DataError

#: the ranks the summary states accuracy at
SUMMARY_RANKS = (1, 5)


def predict_source(value: str, predictor: Predictor, *, topk: int = 5, batch_size: int = 16
                   ) -> tuple[list[dict], dict[str, Any]]:
    """``(rows, summary)``: ``[{image, label, predictions}]`` for every sample of the
    evaluation split of ``value`` (``label``: its true class name), and ``{source, count,
    skipped, top1, top5}`` (accuracy in percent over the rows that were read)."""
    from fastvit.data.bad_images import BadImageLog
    from fastvit.data.datasets import BadSample, UnreadableImage
    from fastvit.data.sources import named_samples, resolve_source

    source = resolve_source(value)
    dataset, classes = source.eval_split(predictor.transform, held_out=predictor.held_out)
    to_model = model_indices(classes, predictor.class_names, source.describe())
    bad = BadImageLog()

    def entries() -> Iterator[tuple[dict, torch.Tensor | None]]:
        for name, item in named_samples(dataset):
            if isinstance(item, BadSample):
                bad.add([UnreadableImage(name, item.reason)])
                yield {"image": name, "label": "", "predictions": [], "error": item.reason}, None
            else:
                image, label = item
                yield {"image": name, "label": classes[label], "predictions": []}, image

    rows = classify_rows(entries(), predictor, topk=max(topk, *SUMMARY_RANKS),
                         batch_size=batch_size)
    hits = dict.fromkeys(SUMMARY_RANKS, 0)
    scored = [row for row in rows if "error" not in row]
    for row in scored:
        truth = to_model[row["label"]]
        ranks = [p["index"] for p in row["predictions"]]
        for k in SUMMARY_RANKS:
            hits[k] += truth in ranks[:k]
        row["predictions"] = row["predictions"][:topk]
    summary: dict[str, Any] = {"source": source.describe_eval(held_out=predictor.held_out),
                               "count": len(scored), "skipped": len(rows) - len(scored)}
    for k in SUMMARY_RANKS:
        summary[f"top{k}"] = round(100 * hits[k] / len(scored), 2) if scored else None
    return rows, summary


def model_indices(classes: list[str], model_names: list[str] | None, what: str
                  ) -> dict[str, int]:
    """The model output of each class of the data: by name (the names stored with the
    weights, or ImageNet wnid folders for a 1000-class model), else by position."""
    if model_names is None:
        return {name: i for i, name in enumerate(classes)}
    index = {name: i for i, name in enumerate(model_names)}
    if all(name in index for name in classes):
        return {name: index[name] for name in classes}
    if len(model_names) == 1000:
        from fastvit.data.robustness import wnid_to_index

        wnids = wnid_to_index()
        if all(name in wnids for name in classes):
            return {name: wnids[name] for name in classes}
    unknown = [name for name in classes if name not in index]
    raise DataError(f"the classes of {what} are not the model's: {', '.join(unknown[:3])}"
                    f"{' ...' if len(unknown) > 3 else ''} not among its "
                    f"{len(model_names)} class names (first: {', '.join(model_names[:3])})")


def format_summary(summary: dict[str, Any]) -> str:
    """One line: top-1 / top-5 over the rows, and which split they are."""
    if summary["top1"] is None:
        return f"no readable sample in {summary['source']} ({summary['skipped']} skipped)"
    return (f"top-1 {summary['top1']:.2f}%  top-5 {summary['top5']:.2f}%  over "
            f"{summary['count']} images of {summary['source']}"
            + (f" ({summary['skipped']} skipped)" if summary["skipped"] else ""))
