"""The same images three ways: ImageFolder, WebDataset shards, a datasets folder.

    python benchmarks/data_sources.py --out runs/data_sources [--train-per-class 640]
        [--val-per-class 160] [--workers 2] [--rounds 3] [--epochs 6] [--image-size 64]
        [--shard-size 500] [--seeds 1] [--sources imagefolder shards datasets]
        [--no-train] [--no-loader]

Builds the digit ImageFolder of ``benchmarks/small_folder.py``, writes it as shards
(``fastvit shards``) and as a ``save_to_disk`` folder, then per source:

* loader throughput (unless ``--no-loader``): one epoch of the real training loader
  (:func:`fastvit.run.sampling.build_train_loader`, the recipe's train transform at
  ``--image-size``, decode included, batch 64, ``--workers`` workers), ``--rounds``
  rounds interleaved over the sources, the median images/s of the whole epoch (worker
  start-up and a shuffle buffer's fill included) and of its steady state (the batches
  after the first quarter of the epoch, timed from the batch before them);
* files opened in one epoch: ``openat`` calls under the data folder, counted by
  ``strace -f`` on a child process that runs that epoch (workers included);
* unless ``--no-train``, ``fastvit train --data SOURCE --model fastvit_t8 --epochs E
  --image-size S --batch-size 64 --seed K`` (plain flags) for ``--seeds`` seeds
  (K = 0, 1, ...) and its best held-out top-1: per source the mean and standard
  deviation over the seeds, and each source's difference of means to the ImageFolder
  (a single seed differs by the sample order alone).

Prints one JSON object (also ``OUT/result.json``) with the CPU model and ISA flags.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from small_folder import build_digit_folder  # noqa: E402

from fastvit.bench.run import cpu_name  # noqa: E402

EPOCH_SCRIPT = """
import sys, time
from fastvit.data import build_train_transform
from fastvit.data.sources import resolve_source
from fastvit.run.sampling import build_train_loader
data, size, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
train, _, _ = resolve_source(data).build(train_transform=build_train_transform(size),
                                         eval_transform=None)
loader = build_train_loader(train, batch_size=64, workers=workers, seed=0)
loader.sampler.set_epoch(0)
stamps, counts = [time.perf_counter()], []
for batch in loader:
    stamps.append(time.perf_counter())
    counts.append(0 if batch.targets is None else len(batch.targets))
warm = len(counts) // 4  # steady state: the batches after the first quarter
print(sum(counts), stamps[-1] - stamps[0], sum(counts[warm + 1:]), stamps[-1] - stamps[warm + 1])
"""


def write_datasets_folder(folder: Path, out: Path) -> Path:
    """``folder`` (train/ + val/ of class folders) as a DatasetDict saved to disk."""
    import datasets

    classes = sorted(p.name for p in (folder / "train").iterdir())
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=classes)})
    splits = {}
    for split, name in (("train", "train"), ("val", "validation")):
        files = sorted((folder / split).glob("*/*.png"))
        splits[name] = datasets.Dataset.from_dict(
            {"image": [{"bytes": f.read_bytes(), "path": None} for f in files],
             "label": [classes.index(f.parent.name) for f in files]}, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(out))
    return out


def epoch_seconds(data: str, size: int, workers: int) -> tuple[int, float, int, float]:
    """One epoch in a fresh process (no page cache advantage from the process): the images
    it gave and the seconds of the loop alone (workers start inside it), then the images
    and seconds of its steady state."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", EPOCH_SCRIPT, data, str(size), str(workers)],
                         check=True, capture_output=True, text=True, env=env)
    count, seconds, steady_count, steady_seconds = out.stdout.split()[-4:]
    return int(count), float(seconds), int(steady_count), float(steady_seconds)


def files_opened(data: str, root: Path, size: int, workers: int) -> int | None:
    if shutil.which("strace") is None:
        return None
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    log = root / "strace.log"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat", "-o", str(log), sys.executable,
                    "-c", EPOCH_SCRIPT, data, str(size), str(workers)], check=True,
                   capture_output=True, env=env)
    prefix = f'"{root.resolve()}/'
    return sum(1 for line in log.read_text().splitlines()
               if prefix in line and "ENOENT" not in line and "O_DIRECTORY" not in line)


def train_top1(data: str, out: Path, epochs: int, size: int, workers: int, seed: int
               ) -> tuple[float, float]:
    """``(best held-out top-1, seconds)`` of one plain ``fastvit train`` run."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fastvit", "train", "--data", data, "--model",
                    "fastvit_t8", "--epochs", str(epochs), "--image-size", str(size),
                    "--batch-size", "64", "--workers", str(workers), "--seed", str(seed),
                    "--out", str(out), "--no-progress"], check=True, capture_output=True,
                   env=env)
    summary = json.loads((out / "summary.json").read_text())
    return float(summary["best_top1"]), time.perf_counter() - start


def loader_numbers(sources: dict[str, Path], args: argparse.Namespace) -> dict[str, dict]:
    """Per source: the median whole-epoch and steady-state images/s over the rounds."""
    runs: dict[str, list[tuple[int, float, int, float]]] = {name: [] for name in sources}
    for _ in range(args.rounds):  # interleaved: the machine's load hits every source alike
        for name, path in sources.items():
            runs[name].append(epoch_seconds(str(path), args.image_size, args.workers))
    out = {}
    for name, path in sources.items():
        images = runs[name][0][0]
        out[name] = {
            "images_per_epoch": images,
            "epoch_s_rounds": [round(r[1], 2) for r in runs[name]],
            "images_per_s": round(statistics.median(r[0] / r[1] for r in runs[name]), 1),
            "steady_images_per_s": round(statistics.median(r[2] / r[3] for r in runs[name]), 1),
            "files_opened_per_epoch": files_opened(str(path), path, args.image_size,
                                                   args.workers)}
    return out


SOURCES = ("imagefolder", "shards", "datasets")


def top1_numbers(sources: dict[str, Path], args: argparse.Namespace, result: dict) -> None:
    """Every source trained with seeds 0..seeds-1: mean and std of the best top-1 per
    source, and each source's difference of means to the ImageFolder."""
    for seed in range(args.seeds):  # interleaved, as the loader rounds
        for name, path in sources.items():
            top1, seconds = train_top1(str(path), args.out / f"run_{name}_seed{seed}",
                                       args.epochs, args.image_size, args.workers, seed)
            row = result["sources"].setdefault(name, {})
            row.setdefault("top1_per_seed", []).append(top1)
            row.setdefault("train_s_per_seed", []).append(round(seconds))
            _write(args.out, result)
    folder = result["sources"].get("imagefolder", {}).get("top1_per_seed")
    for row in result["sources"].values():
        runs = row["top1_per_seed"]
        row["top1_mean"] = round(statistics.mean(runs), 2)
        row["top1_std"] = round(statistics.stdev(runs), 2) if len(runs) > 1 else None
        if folder:
            row["top1_mean_minus_imagefolder"] = round(statistics.mean(runs)
                                                       - statistics.mean(folder), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/data_sources"))
    parser.add_argument("--train-per-class", type=int, default=640)
    parser.add_argument("--val-per-class", type=int, default=160)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=1,
                        help="training runs per source (seeds 0..N-1): mean and std of top-1")
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES),
                        help="which of the three to measure (default: all)")
    parser.add_argument("--no-train", action="store_true", help="loader numbers only")
    parser.add_argument("--no-loader", action="store_true",
                        help="top-1 only (no timing: needs no quiet machine)")
    args = parser.parse_args()
    from fastvit.data.shard_writer import write_shards

    out = args.out
    data_root = out / "data"
    if data_root.exists():
        shutil.rmtree(data_root)
    folder = build_digit_folder(data_root / "folder", args.train_per_class, args.val_per_class)
    write_shards(folder, data_root / "shards", shard_size=args.shard_size, progress=False)
    write_datasets_folder(folder, data_root / "datasets")
    every = {"imagefolder": folder, "shards": data_root / "shards",
             "datasets": data_root / "datasets"}
    sources = {name: path for name, path in every.items() if name in args.sources}
    result: dict = {"cpu": cpu_name(), "isa": _isa(), "workers": args.workers,
                    "image_size": args.image_size, "train_images": 10 * args.train_per_class,
                    "sources": {name: {} for name in sources}}
    if not args.no_loader:
        result["sources"] = loader_numbers(sources, args)
        _write(out, result)  # the loader numbers stand on their own: kept before training
    if not args.no_train:
        result.update(epochs=args.epochs, seeds=args.seeds)
        top1_numbers(sources, args, result)
        _write(out, result)
    print(json.dumps(result, indent=2))


def _write(out: Path, result: dict) -> None:
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")


def _isa() -> list[str]:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile", "neon") if f in flags]


if __name__ == "__main__":
    main()
