"""Helpers of the training tests: tiny learnable image folders, tiny recipes, subprocess runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastvit.run.recipes import apply_overrides
from fastvit.train.config import TrainConfig, load_recipe

REPO = Path(__file__).resolve().parents[2]
# CI runs on CPU; on a GPU machine `FASTVIT_TRAIN_TEST_DEVICE=cuda pytest tests/test_train_resume.py
# tests/test_train_loop.py` repeats the exactness checks on CUDA (the gloo DDP test stays on CPU).
TEST_DEVICE = os.environ.get("FASTVIT_TRAIN_TEST_DEVICE", "cpu")
CLASS_COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40)]


def make_image_folder(root: Path, num_classes: int = 3, train_per_class: int = 8,
                      val_per_class: int = 3, size: int = 40, seed: int = 0) -> Path:
    """``root/{train,val}/c<k>/<i>.png``: noisy images whose dominant colour is the class."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for k in range(num_classes):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                noise = rng.integers(-60, 60, (size, size, 3))
                pixels = np.clip(np.array(CLASS_COLOURS[k]) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def tiny_overrides(out_dir: Path, data: Path | str, **extra: object) -> list[str]:
    """A few-second recipe: fastvit_t8 at 32 px, batch 4, every random component switched on."""
    values: dict[str, object] = {
        "data.path": data, "data.image_size": 32, "data.batch_size": 4,
        "data.eval_batch_size": 5, "data.workers": 0, "data.crop_pct": 0.9,
        "data.mixup": 0.2, "data.cutmix": 1.0, "model.drop_path": 0.1,
        "optim.global_batch": "null", "optim.lr": 1e-3, "optim.lr_base": "null",
        "schedule.epochs": 2, "schedule.warmup_epochs": 1, "schedule.cooldown_epochs": 0,
        "ema.decay": 0.9, "run.out_dir": out_dir, "run.device": TEST_DEVICE, "run.amp": "none",
        "run.save_every_steps": 2, "run.log_every": 1, "run.progress": False,
        "run.deterministic": True,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def tiny_config(out_dir: Path, data: Path | str, **extra: object) -> TrainConfig:
    return apply_overrides(load_recipe("fastvit_t8"), tiny_overrides(out_dir, data, **extra))


def cli_set_args(overrides: list[str]) -> list[str]:
    args: list[str] = []
    for item in overrides:
        args += ["--set", item]
    return args


def subprocess_env() -> dict[str, str]:
    """One thread per process: deterministic kernels and fair sharing of the CI cores."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_train(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastvit", "train", *args], env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def load_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def tensors_equal(a: object, b: object, where: str = "") -> list[str]:
    """Paths of every tensor (or value) that differs between two nested containers."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
              and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b))
        return [] if ok else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where} keys {sorted(map(str, set(a) ^ set(b)))}"]
        return [d for k in a for d in tensors_equal(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where} length"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in tensors_equal(x, y, f"{where}[{i}]")]
    return [] if a == b else [where]


def torchrun_cmd(args: list[str], nproc: int = 2, *torchrun_args: str) -> list[str]:
    """``torchrun --standalone --nnodes 1 --nproc-per-node N [TORCHRUN_ARGS] -m fastvit ARGS``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
            "--nproc-per-node", str(nproc), *torchrun_args, "-m", "fastvit", *args]


def torchrun_workers(agent_pid: int) -> list[dict[str, str]]:
    """The live worker processes a torchrun agent started (scanning /proc): each as its
    environment (``RANK``, ``TORCHELASTIC_RESTART_COUNT``...) plus ``pid``."""
    workers = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) != agent_pid or fields[0] == "Z":
                continue
            environ = (entry / "environ").read_bytes().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        env = dict(kv.split("=", 1) for kv in environ.split("\0") if "=" in kv)
        workers.append({**env, "pid": entry.name})
    return workers
