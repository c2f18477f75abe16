"""Synthetic MANO model and FreiHAND-format dataset for the hand-mesh tests.

The MANO stand-in has the real model's array layout (778 vertices, 1538 faces,
16 joints with MANO's kinematic tree, 135 pose correctives, 10 shape
directions, PCA components and mean pose), a hand-like skeleton and skinning,
and the five FreiHAND fingertip vertices placed at the finger tips. The dataset
poses it with random MANO parameters, puts it in front of a pinhole camera
and draws the projected mesh and skeleton on one background per version.
"""

from __future__ import annotations

import json
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from fastvit.tasks.hand.data import project
from fastvit.tasks.hand.mano import FREIHAND_FINGERTIPS, ManoLayer

NUM_VERTS, NUM_FACES = 778, 1538
# MANO joint order: wrist, index(1-3), middle(4-6), little(7-9), ring(10-12), thumb(13-15)
PARENTS = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
FINGER_ANGLES = {1: 20.0, 4: 0.0, 7: -40.0, 10: -20.0, 13: 60.0}  # degrees, in the x-y plane
# fingertip vertex -> last joint of its finger (thumb, index, middle, ring, little)
TIP_JOINT = dict(zip(FREIHAND_FINGERTIPS, (15, 3, 6, 12, 9), strict=True))


def synthetic_mano_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Plain-array MANO stand-in (the layout ``convert-mano`` produces)."""
    rng = np.random.default_rng(seed)
    joints = np.zeros((16, 3))
    tips = {}
    for base, angle in FINGER_ANGLES.items():
        d = np.array([np.sin(np.radians(angle)), -np.cos(np.radians(angle)), 0.0])
        start = 0.02 if base == 13 else 0.045
        for k, length in enumerate((start, 0.03, 0.022)):
            prev = joints[0] if k == 0 else joints[base + k - 1]
            joints[base + k] = prev + d * length
        tips[base + 2] = joints[base + 2] + d * 0.02
    owner = np.arange(NUM_VERTS) % 16
    for vid, j in TIP_JOINT.items():
        owner[vid] = j
    verts = np.zeros((NUM_VERTS, 3))
    regressor = np.zeros((16, NUM_VERTS))
    for j in range(16):
        ids = np.flatnonzero(owner == j)
        children = [c for c, p in enumerate(PARENTS) if p == j]
        end = joints[children[0]] if children else tips[j]
        ring = ids[:6]  # these sit symmetrically around the joint: the regressor averages them
        phase = np.linspace(0, 2 * np.pi, len(ring), endpoint=False)
        verts[ring] = joints[j] + 0.006 * np.stack([np.cos(phase), np.zeros_like(phase),
                                                    np.sin(phase)], 1)
        regressor[j, ring] = 1.0 / len(ring)
        rest = ids[6:]
        t = rng.uniform(0.1, 1.0, len(rest))[:, None]
        verts[rest] = joints[j] + t * (end - joints[j]) + rng.normal(0, 0.004, (len(rest), 3))
    for vid, j in TIP_JOINT.items():
        verts[vid] = tips[j]
    weights = np.zeros((NUM_VERTS, 16))
    weights[np.arange(NUM_VERTS), owner] = 0.8
    parent = np.array([max(PARENTS[j], 0) for j in owner])
    weights[np.arange(NUM_VERTS), parent] += 0.2
    faces = np.stack([rng.permutation(np.flatnonzero(owner == j))[:3]
                      for j in rng.integers(0, 16, NUM_FACES)])
    shapedirs = verts[:, :, None] * rng.normal(0, 0.03, (1, 3, 10))
    q, _ = np.linalg.qr(rng.normal(size=(45, 45)))
    kintree = np.array([[2**32 - 1] + PARENTS[1:], list(range(16))], dtype=np.int64)
    return {
        "v_template": verts, "shapedirs": shapedirs,
        "posedirs": rng.normal(0, 1e-4, (NUM_VERTS, 3, 135)),
        "J_regressor": regressor, "weights": weights, "kintree_table": kintree,
        "f": faces.astype(np.uint32), "hands_mean": rng.normal(0, 0.1, 45),
        "hands_components": q,
    }


def write_mano_npz(path: Path, seed: int = 0) -> Path:
    np.savez(path, **synthetic_mano_arrays(seed))
    return path


def fake_chumpy_module(monkeypatch) -> type:
    """Install a stand-in ``chumpy.ch.Ch`` so pickles reference it like the release."""
    chumpy = types.ModuleType("chumpy")
    ch = types.ModuleType("chumpy.ch")

    class Ch:  # what matters to pickle is the module/name it records
        def __init__(self, x):
            self.x = np.asarray(x)
            self._dirty_vars = set()

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch.Ch = Ch
    chumpy.ch = ch
    monkeypatch.setitem(sys.modules, "chumpy", chumpy)
    monkeypatch.setitem(sys.modules, "chumpy.ch", ch)
    return Ch


def write_release_style_pickle(path: Path, monkeypatch, protocol: int = 2, seed: int = 0
                               ) -> dict[str, np.ndarray]:
    """Pickle the synthetic model as the official MANO_RIGHT.pkl stores it:
    chumpy arrays, a scipy.sparse joint regressor, strings for the blend style."""
    import scipy.sparse

    arrays = synthetic_mano_arrays(seed)
    Ch = fake_chumpy_module(monkeypatch)
    data = dict(arrays)
    for key in ("v_template", "shapedirs", "posedirs"):
        data[key] = Ch(arrays[key])
    data["J"] = Ch(arrays["J_regressor"] @ arrays["v_template"])
    data["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
    data["bs_style"], data["bs_type"] = "lbs", "lrotmin"
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=protocol)
    return arrays


BONES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
         (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18),
         (18, 19), (19, 20)]
BACKGROUNDS = [(20, 120, 20), (90, 90, 90), (30, 40, 110), (120, 80, 40)]
FINGER_COLOURS = [(255, 255, 255), (255, 60, 60), (255, 230, 0), (0, 220, 120), (0, 150, 255),
                  (230, 0, 230)]


def make_freihand(root: Path, mano_npz: Path, *, num_samples: int = 8, versions: int = 4,
                  image_size: int = 64, focal: float = 200.0, depth: float = 0.6,
                  seed: int = 0, eval_samples: int = 0, pose_std: float = 0.3) -> Path:
    """Write a FreiHAND-layout folder rendered from random poses of the synthetic MANO."""
    from fastvit.tasks.hand.mano import load_mano_arrays

    mano = ManoLayer(load_mano_arrays(mano_npz))
    gen = torch.Generator().manual_seed(seed)

    def split(name: str, n: int, n_versions: int) -> None:
        pose = torch.randn(n, 48, generator=gen) * pose_std
        pose[:, :3] = pose[:, :3] * 1.5  # wider global orientations
        shape = torch.randn(n, 10, generator=gen)
        with torch.no_grad():
            verts, joints = mano(pose, shape)
        shift = torch.randn(n, 1, 3, generator=gen) * torch.tensor([0.01, 0.01, 0.03])
        offset = torch.tensor([0.0, 0.0, depth]) + shift - joints[:, 9:10]
        verts, joints = verts + offset, joints + offset
        c = image_size / 2.0
        K = torch.tensor([[focal, 0.0, c], [0.0, focal, c], [0.0, 0.0, 1.0]]).expand(n, 3, 3)
        uv_root = project(K, joints[:, 9:10])[:, 0]
        bone = (joints[:, 9] - joints[:, 10]).norm(dim=-1)
        mano_vec = torch.cat([pose, shape, uv_root, focal / joints[:, 9, 2:3]], dim=1)
        files = {"K": K, "xyz": joints, "verts": verts, "scale": bone,
                 "mano": mano_vec[:, None, :]}
        for key, value in files.items():
            (root / f"{name}_{key}.json").write_text(json.dumps(value.tolist()))
        rgb = root / name / "rgb"
        rgb.mkdir(parents=True, exist_ok=True)
        for v in range(n_versions):
            for i in range(n):
                draw_hand(K[i], joints[i], verts[i], image_size, BACKGROUNDS[v % 4]).save(
                    rgb / f"{v * n + i:08d}.jpg", quality=95)

    root.mkdir(parents=True, exist_ok=True)
    split("training", num_samples, versions)
    if eval_samples:
        split("evaluation", eval_samples, 1)
    return root


def draw_hand(K: torch.Tensor, joints: torch.Tensor, verts: torch.Tensor, size: int,
              background: tuple[int, int, int]) -> Image.Image:
    img = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(img)
    for x, y in project(K, verts).tolist():
        draw.point((x, y), fill=(230, 190, 160))
    uv = project(K, joints).tolist()
    for a, b in BONES:
        draw.line([tuple(uv[a]), tuple(uv[b])], fill=FINGER_COLOURS[(b - 1) // 4 + 1], width=1)
    for k, (x, y) in enumerate(uv):
        colour = FINGER_COLOURS[0 if k == 0 else (k - 1) // 4 + 1]
        draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=colour)
    return img


def random_rotation(seed: int) -> torch.Tensor:
    """A seeded uniformly random proper rotation (float64, det +1)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q
