"""Classification evaluation: top-1/top-5 on an ImageFolder and the ImageNet robustness sets.

The reusable piece is :func:`evaluate_classifier`: it sums correct predictions, loss and
sample counts and all-reduces the sums when a process group is up, so under
``torchrun`` (with :func:`fastvit.data.build_eval_loader`'s unpadded shards)
every image counts exactly once and the result equals a single-process run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fastvit.checkpoints import val_split_from_metadata
from fastvit.data import ImageFolderDataset, build_eval_loader, find_split
from fastvit.data.bad_images import BadImageLog
from fastvit.data.datasets import describe_val_split, has_split, keep_held_out, split_batch
from fastvit.data.loaders import dist_rank_world
from fastvit.data.robustness import (
    CorruptionNormalizer,
    class_folders,
    corruption_summary,
    find_imagenet_c,
    imagenet_class_map,
    parse_robustness_spec,
    subset_class_indices,
    subset_wnids,
    wnid_to_index,
)
from fastvit.data.sources import FOLDER, HF, DataSource, resolve_source
from fastvit.errors import ConfigError, DataError
from fastvit.models import is_fused
from fastvit.pipeline import Loaded, eval_transform
from fastvit.run.compiling import compile_model
from fastvit.run.evaluation import evaluation_mode


def _label_lookup(class_indices: Sequence[int], device: torch.device) -> torch.Tensor:
    """Map a full-label-space index to its position in ``class_indices`` (-1 if absent)."""
    lookup = torch.full((max(class_indices) + 1,), -1, dtype=torch.long, device=device)
    lookup[torch.as_tensor(list(class_indices), device=device)] = torch.arange(
        len(class_indices), device=device)
    return lookup


@torch.inference_mode()
def evaluate_classifier(model: nn.Module, loader: Iterable, *,
                        device: str | torch.device = "cpu",
                        amp_dtype: torch.dtype | None = None,
                        class_indices: Sequence[int] | None = None,
                        channels_last: bool = False, progress: bool = False,
                        desc: str = "eval", per_sample: bool = False) -> dict[str, Any]:
    """Top-1/top-5 accuracy (percent), mean cross-entropy and sample count of ``model``.

    ``class_indices`` keeps only those logits (e.g. ImageNet-R's 200 classes)
    and renumbers the labels to positions in that list. Batches may be
    ``(images, labels)`` or :class:`fastvit.data.Batch`; unreadable images a
    :class:`~fastvit.data.Batch` reports are counted in ``skipped``. With
    ``per_sample``, ``"samples"`` holds this process's ``labels``, top-1
    ``predictions`` and their ``confidence`` (softmax) in loader order (tensors).
    A DDP wrapper is looked through; the model's train/eval mode is restored afterwards.
    """
    with evaluation_mode(model) as net:
        return _evaluate(net, loader, torch.device(device), amp_dtype, class_indices,
                         channels_last, progress, desc, per_sample)


def _evaluate(model: nn.Module, loader: Iterable, device: torch.device,
              amp_dtype: torch.dtype | None, class_indices: Sequence[int] | None,
              channels_last: bool, progress: bool, desc: str,
              per_sample: bool = False) -> dict[str, Any]:
    samples: dict[str, list[torch.Tensor]] = {"labels": [], "predictions": [], "confidence": []}
    lookup = _label_lookup(class_indices, device) if class_indices is not None else None
    subset = (torch.as_tensor(list(class_indices), device=device)
              if class_indices is not None else None)
    # float64 sums: exact integer counts far beyond ImageNet sizes.
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # correct1, correct5, loss, n
    skipped: list[str] = []
    rank, _ = dist_rank_world()
    bar = tqdm(loader, desc=desc, disable=not progress or rank != 0, leave=False, unit="batch")
    for batch in bar:
        images, labels, bad = split_batch(batch)
        skipped.extend(bad)
        if images is None:
            continue
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16,
                            enabled=amp_dtype is not None):
            logits = model(images)
        logits = logits.float()
        if subset is not None:
            logits = logits.index_select(1, subset)
            mapped = lookup[labels.clamp(0, len(lookup) - 1)]
            if bool(((mapped < 0) | (labels < 0) | (labels >= len(lookup))).any()):
                raise DataError("a label lies outside the evaluated class subset")
            labels = mapped
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        if per_sample:
            confidence, predicted = logits.softmax(dim=1).max(dim=1)
            for key, value in (("labels", labels), ("predictions", predicted),
                               ("confidence", confidence)):
                samples[key].append(value.cpu())
        hits = top.eq(labels.unsqueeze(1))
        sums += torch.stack([hits[:, 0].sum(), hits.any(1).sum(),
                             F.cross_entropy(logits, labels, reduction="sum"),
                             torch.tensor(labels.numel(), device=device)]).double()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, skipped)
        skipped = [p for part in gathered for p in part]
    correct1, correct5, loss, count = sums.tolist()
    if count == 0:
        raise DataError(f"{desc}: no images could be evaluated")
    out = {"top1": 100.0 * correct1 / count, "top5": 100.0 * correct5 / count,
           "loss": loss / count, "count": int(count), "skipped": skipped}
    if per_sample:
        out["samples"] = {k: torch.cat(v) if v else torch.zeros(0) for k, v in samples.items()}
    return out


def _gather_samples(local: dict[str, list]) -> dict[str, list]:
    """Concatenate every process's per-sample lists (one process: unchanged)."""
    if not (dist.is_available() and dist.is_initialized()):
        return local
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    return {k: [v for part in parts for v in part[k]] for k in local}


# -- label maps --------------------------------------------------------------------------------


def main_class_map(folder: Path, num_classes: int, class_names: list[str] | None
                   ) -> dict[str, int] | None:
    """Label map for the main split: checkpoint class names, ImageNet wnids or folder order."""
    folders = class_folders(folder)
    if class_names:
        unknown = [f for f in folders if f not in class_names]
        if unknown:
            raise DataError(f"{folder}: class folders the checkpoint does not know: "
                            f"{', '.join(unknown[:8])}")
        return {f: class_names.index(f) for f in folders}
    index = wnid_to_index()
    if num_classes == 1000 and folders and all(f in index for f in folders):
        return {f: index[f] for f in folders}
    if len(folders) != num_classes:
        raise DataError(f"{folder} has {len(folders)} class folders but the model predicts "
                        f"{num_classes} classes; pass a checkpoint with class names or "
                        f"--num-classes {len(folders)}")
    return None  # sorted folder order


# -- the robustness suites ---------------------------------------------------------------------


class Evaluator:
    """Evaluates one model on several folders with the same transform and loader settings."""

    def __init__(self, model: nn.Module, transform: Any, *, batch_size: int = 128,
                 workers: int = 0, device: torch.device | str = "cpu",
                 amp_dtype: torch.dtype | None = None, channels_last: bool = False,
                 bad_images: str = "skip", distributed: bool = False,
                 alexnet_errors: str | Path | None = None) -> None:
        self.model, self.transform = model, transform
        self.batch_size, self.workers, self.device = batch_size, workers, torch.device(device)
        self.amp_dtype, self.channels_last = amp_dtype, channels_last
        self.bad_images, self.distributed = bad_images, distributed
        self.alexnet_errors = alexnet_errors

    def folder(self, root: Path, desc: str, class_to_idx: dict[str, int] | None = None,
               class_indices: Sequence[int] | None = None, per_sample: bool = False,
               held_out: tuple[float, int] | None = None) -> dict[str, Any]:
        """Scores on ``root``; with ``per_sample`` also ``"samples"``: every image's path,
        label, top-1 prediction and confidence (gathered from all processes). ``held_out``
        ``(val_fraction, seed)``: only the images training held out of ``root``."""
        dataset = ImageFolderDataset(root, self.transform, self.bad_images, class_to_idx)
        if held_out is not None:
            keep_held_out(dataset, *held_out)
        loader = build_eval_loader(dataset, self.batch_size, self.workers, self.distributed)
        out = evaluate_classifier(self.model, loader, device=self.device,
                                  amp_dtype=self.amp_dtype, class_indices=class_indices,
                                  channels_last=self.channels_last, progress=True, desc=desc,
                                  per_sample=per_sample)
        if dist_rank_world()[0] == 0:
            BadImageLog().add(out["skipped"])  # one line per unreadable file
        if per_sample:
            skipped = set(out["skipped"])
            paths = [dataset.samples[i][0] for i in loader.sampler
                     if dataset.samples[i][0] not in skipped]
            out["samples"] = _gather_samples({"paths": paths, **{
                k: v.tolist() for k, v in out["samples"].items()}})
        return out

    def dataset(self, dataset: Any, desc: str) -> dict[str, Any]:
        """Scores on a ready dataset (WebDataset shards, a Hugging Face split)."""
        loader = build_eval_loader(dataset, self.batch_size, self.workers, self.distributed)
        out = evaluate_classifier(self.model, loader, device=self.device,
                                  amp_dtype=self.amp_dtype, channels_last=self.channels_last,
                                  progress=True, desc=desc)
        if dist_rank_world()[0] == 0:
            BadImageLog().add(out["skipped"])
        return out

    def subset(self, name: str, root: Path) -> dict[str, Any]:
        """ImageNet-A/R: logits restricted to the benchmark's 200 classes."""
        class_map = imagenet_class_map(root, allowed=subset_wnids(name))
        out = self.folder(root, name, class_map, subset_class_indices(name))
        return {**out, "num_classes": 200}

    def sketch(self, root: Path) -> dict[str, Any]:
        return self.folder(root, "sketch", imagenet_class_map(root))

    def corruptions(self, root: Path, clean_error: float | None) -> dict[str, Any]:
        errors: dict[str, dict[int, float]] = {}
        counts = 0
        for corruption, levels in find_imagenet_c(root).items():
            for severity, folder in sorted(levels.items()):
                out = self.folder(folder, f"{corruption}/{severity}", imagenet_class_map(folder))
                errors.setdefault(corruption, {})[severity] = 1 - out["top1"] / 100
                counts += out["count"]
        normalizer = CorruptionNormalizer.load(self.alexnet_errors)
        return {**corruption_summary(errors, normalizer, clean_error), "count": counts}


# -- the whole evaluation --------------------------------------------------------------------


def format_table(results: dict[str, Any]) -> str:
    """Human-readable summary of :func:`run_evaluation`'s results."""
    lines = [f"{'set':<28} {'images':>8} {'top-1':>7} {'top-5':>7}"]
    for name, row in results["sets"].items():
        lines.append(f"{name:<28} {row['count']:>8d} {row['top1']:>7.2f} {row['top5']:>7.2f}")
        if row.get("source"):
            lines.append(f"  ({row['source']})")
        if row.get("skipped"):
            lines.append(f"  ({len(row['skipped'])} unreadable images skipped)")
    if results.get("analysis"):
        from fastvit.error_analysis import format_per_class

        lines += ["", format_per_class(results["analysis"])]
    for name, path in results.get("artifacts", {}).items():
        lines.append(f"{name.replace('_', ' ')}: {path}")
    corr = results.get("imagenet-c")
    if corr:
        lines += ["", f"ImageNet-C ({corr['count']} images), top-1 error % per severity 1-5:",
                  f"{'corruption':<20} {'1':>6} {'2':>6} {'3':>6} {'4':>6} {'5':>6} "
                  f"{'mean':>6} {'CE':>6}"]
        for name, row in corr["corruptions"].items():
            errs = " ".join(f"{row['errors'].get(str(s), float('nan')):>6.2f}" for s in range(1, 6))
            ce = f"{row['ce']:>6.2f}" if "ce" in row else f"{'-':>6}"
            lines.append(f"{name:<20} {errs} {row['mean_error']:>6.2f} {ce}")
        for key, label in (("mce", "mCE"), ("mce_partial", "mCE (partial)"),
                           ("relative_mce", "relative mCE"),
                           ("relative_mce_partial", "relative mCE (partial)"),
                           ("mean_error", "mean error (unnormalized)")):
            if corr.get(key) is not None:
                lines.append(f"{label}: {corr[key]:.2f}")
        if corr["missing_benchmark_corruptions"]:
            lines.append("missing benchmark corruptions/severities: "
                         + ", ".join(corr["missing_benchmark_corruptions"]))
    return "\n".join(lines)


def _analyse(samples: dict[str, list], names: Sequence[str], split: str,
             report_dir: str | Path | None) -> tuple[dict[str, Any], dict[str, str]]:
    """Per-class accuracy, confusion matrix, worst mistakes; their plots on rank 0."""
    from fastvit import error_analysis as ea

    report = ea.class_report(samples, names)
    report["worst_mistakes"] = ea.worst_mistakes(samples)
    artifacts: dict[str, str] = {}
    if report_dir is not None and dist_rank_world()[0] == 0:
        folder = Path(report_dir)
        confusion = ea.plot_confusion(report, folder / "confusion_matrix.png",
                                      f"confusion matrix, {split} split")
        worst = ea.plot_worst(report["worst_mistakes"], names, folder / "worst_mistakes.png")
        artifacts = {k: str(v) for k, v in (("confusion_matrix", confusion),
                                            ("worst_mistakes", worst)) if v is not None}
    if len(names) > ea.MAX_CONFUSION_CLASSES:  # 1000 x 1000 counts do not belong in JSON
        del report["confusion_matrix"]
    return {"split": split, **report}, artifacts


def folder_class_count(data: str | Path, split: str = "val") -> int:
    """Number of class folders of ``DATA/split`` (the classifier size of random weights),
    or of classes of another ``--data`` source."""
    source = resolve_source(str(data))
    if source.kind != FOLDER:
        return len(source.open_split(split, None).classes)
    return len(class_folders(find_split(data, split)))


def check_source_classes(classes: list[str], loaded: Loaded, what: str) -> None:
    """The data's class names (shards, datasets) must be the model's outputs, in order."""
    if len(classes) != loaded.num_classes:
        raise DataError(f"{what} has {len(classes)} classes but {loaded.source} predicts "
                        f"{loaded.num_classes}")
    if loaded.class_names and list(loaded.class_names) != classes:
        raise DataError(f"the class names of {what} differ from those stored with "
                        f"{loaded.source} (first: {classes[:3]} vs "
                        f"{list(loaded.class_names)[:3]})")


def _source_split(source: DataSource, split: str, transform: Any, bad_images: str,
                  loaded: Loaded) -> tuple[Any, list[str]]:
    """``split`` of a shards / datasets source (:meth:`DataSource.eval_split`); a datasets
    source without a val split is scored on the rows its training run held out (recorded
    with the weights)."""
    recorded = val_split_from_metadata(loaded.metadata)
    if source.kind == HF and split == "val" and recorded is None and not source.has_val():
        raise DataError(f"{source.value} has no validation/val/test split and "
                        f"{loaded.source} records no held-out part of its train split")
    return source.eval_split(transform, split=split, bad_images=bad_images, held_out=recorded)


def split_source(data: str | Path, split: str, loaded: Loaded,
                 val_fraction: float | None = None) -> tuple[Path, tuple[float, int] | None]:
    """The folder to score and, for a dataset without ``val/``, which of its ``train/``
    images to keep: those the checkpoint's training run held out (recorded with its
    weights), or a seeded ``val_fraction`` of each class (the trainer's split)."""
    if split != "val" or has_split(data, "val"):
        if val_fraction is not None:
            raise ConfigError(f"--val-fraction holds images out of {data}/train/ when there is "
                              f"no val/ folder; {data} has one (or --split is not val)")
        return find_split(data, split), None
    recorded = val_split_from_metadata(loaded.metadata)
    if val_fraction is None and recorded is None:
        raise DataError(f"no val split in {data} (no val/ folder), and {loaded.source} "
                        f"records no held-out split of train/: pass --val-fraction F to score "
                        f"a seeded F of each class (the trainer's --val-fraction split)")
    held = recorded if val_fraction is None else (val_fraction, recorded[1] if recorded else 0)
    return find_split(data, "train"), held


def run_evaluation(loaded: Loaded, *, data: str | Path | None = None, split: str = "val",
                   val_fraction: float | None = None, robustness: str | None = None,
                   batch_size: int = 128, workers: int = 0,
                   image_size: int | None = None, crop_pct: float | None = None,
                   amp_dtype: torch.dtype | None = None, channels_last: bool = False,
                   bad_images: str = "skip", alexnet_errors: str | Path | None = None,
                   device: torch.device | str = "cpu", distributed: bool = False,
                   report_dir: str | Path | None = None,
                   compiled: bool = False) -> dict[str, Any]:
    """Score ``loaded.model`` on ``DATA/split`` and/or the robustness sets.

    ``robustness`` is ``"imagenet-a=DIR,imagenet-r=DIR,sketch=DIR,imagenet-c=DIR"``.
    A ``data`` folder without ``val/`` is scored on the images training held out of
    ``train/`` (:func:`split_source`).
    The split also gets ``results["analysis"]``: per-class accuracy, the confusion
    matrix (up to 50 classes) and the most confident mistakes; ``report_dir``
    receives ``confusion_matrix.png`` and ``worst_mistakes.png``
    (:mod:`fastvit.error_analysis`), listed in ``results["artifacts"]``.
    The images are preprocessed with :func:`fastvit.pipeline.eval_transform` of the
    model's cfg (``image_size`` / ``crop_pct`` override it). Under torchrun every
    rank scores its shard and the sums are reduced: the result equals one process.
    ``compiled`` scores through ``torch.compile`` (:mod:`fastvit.run.compiling`).
    """
    if not data and not robustness:
        raise ConfigError("nothing to evaluate: pass --data and/or --robustness")
    source = resolve_source(str(data)) if data else None
    if source is not None and source.kind not in (FOLDER,):
        if val_fraction is not None:
            raise ConfigError(f"--val-fraction holds images out of an ImageFolder; "
                              f"{source.describe()} is scored on its own {split} split")
        split_dir, held_out = None, None
    else:
        split_dir, held_out = (split_source(data, split, loaded, val_fraction) if data
                               else (None, None))
    robust = parse_robustness_spec(robustness) if robustness else {}
    num_classes = loaded.num_classes
    if robust and num_classes != 1000:
        raise ConfigError(f"robustness sets need a 1000-class ImageNet model; "
                          f"{loaded.variant} here predicts {num_classes} classes")
    device = torch.device(device)
    model = loaded.model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    transform = eval_transform(loaded.cfg, image_size, crop_pct)
    runner = Evaluator(compile_model(model, device) if compiled else model, transform,
                       batch_size=batch_size, workers=workers, device=device,
                       amp_dtype=amp_dtype, channels_last=channels_last, bad_images=bad_images,
                       distributed=distributed, alexnet_errors=alexnet_errors)
    results: dict[str, Any] = {
        "model": loaded.variant, "checkpoint": loaded.source, "num_classes": num_classes,
        "reparameterized": is_fused(model),
        "image_size": image_size or loaded.image_size,
        "crop_pct": crop_pct or loaded.cfg["crop_pct"],
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else None,
        "world_size": dist_rank_world()[1], "compiled": compiled, "sets": {},
    }
    clean_error = None
    if source is not None and split_dir is None:
        dataset, classes = _source_split(source, split, transform, bad_images, loaded)
        check_source_classes(classes, loaded, source.describe())
        results["sets"][split] = runner.dataset(dataset, split)
        clean_error = 1 - results["sets"][split]["top1"] / 100
    if split_dir is not None:
        class_map = main_class_map(split_dir, num_classes, loaded.class_names)
        row = runner.folder(split_dir, split, class_map, per_sample=True, held_out=held_out)
        if held_out is not None:
            row["source"] = describe_val_split(data, *held_out)
        names = loaded.labels if class_map is not None else class_folders(split_dir)
        results["analysis"], artifacts = _analyse(row.pop("samples"), names, split, report_dir)
        if artifacts:
            results["artifacts"] = artifacts
        results["sets"][split] = row
        clean_error = 1 - row["top1"] / 100
    for name, root in robust.items():
        if name in ("imagenet-a", "imagenet-r"):
            results["sets"][name] = runner.subset(name, root)
        elif name == "sketch":
            results["sets"][name] = runner.sketch(root)
        else:
            results["imagenet-c"] = runner.corruptions(
                root, clean_error if num_classes == 1000 else None)
    return results
