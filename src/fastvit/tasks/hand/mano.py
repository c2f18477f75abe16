"""The MANO hand model: one-time safe conversion of the licensed pickle, and the
runtime layer built on :mod:`smplx`.

Why a conversion step: the official ``MANO_RIGHT.pkl`` is a Python-2 pickle
whose arrays are ``chumpy`` objects and whose joint regressor is a
``scipy.sparse`` matrix. Unpickling runs code chosen by the file, so the
package unpickles it exactly once, in ``fastvit hand convert-mano``, on the
user's word that the file is the one they downloaded from the MANO website
(the user vouches for it). Even then :class:`_RestrictedUnpickler` only lets
through numpy arrays, plain containers and the two foreign types the release
uses (``chumpy.ch.Ch``, ``scipy.sparse`` csc/csr matrices), each rebuilt as a
plain numpy array, so neither chumpy nor scipy is needed and anything else in
the file (``os.system``, ``eval``...) is refused. The result is an ``.npz`` of
plain numeric arrays that every later run reads with ``allow_pickle=False``.

At runtime :func:`build_mano_layer` hands those arrays to ``smplx.MANO``
through its ``data_struct`` argument (``smplx.MANO(model_path=...)`` would
itself unpickle a ``.pkl`` or load an ``.npz`` with ``allow_pickle=True``).
"""

from __future__ import annotations

import builtins
import codecs
import contextlib
import copyreg
import importlib
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastvit.errors import ConfigError, DataError
from fastvit.extras import require
from fastvit.files import atomic_write

# Arrays smplx.MANO reads from its data struct (hands_components even with use_pca=False).
MANO_ARRAYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights",
               "kintree_table", "f", "hands_mean", "hands_components")
NUM_MANO_JOINTS = 16
NUM_BETAS = 10
NUM_POSE = 48  # global orientation (3) + 15 finger joints (45), axis-angle, PCA-free

# FreiHAND keypoint order: wrist, then thumb, index, middle, ring, little finger,
# each MCP/PIP/DIP/tip (thumb: CMC/MCP/IP/tip). MANO's 16 joints are wrist, index(3),
# middle(3), little(3), ring(3), thumb(3); the 5 tips are mesh vertices appended as
# joints 16..20 in the order thumb, index, middle, ring, little. Entry k below is the
# index (into those 21) of FreiHAND keypoint k -- the mapping of the FreiHAND
# toolbox (utils/mano_utils.py, get_keypoints_from_mesh_ch).
MANO_TO_FREIHAND = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)
# Fingertip vertices (thumb, index, middle, ring, little) the FreiHAND toolbox used to
# build its ground-truth keypoints (``kpId2vertices``). Other code bases use nearby
# vertices (smplx: 744, 320, 443, 554, 671; I2L-MeshNet/METRO: 745, 317, 444, 556, 673);
# matching the ground truth's own choice matters for the 5 tip joints.
FREIHAND_FINGERTIPS = (744, 320, 443, 555, 672)


# --------------------------------------------------------------------------------------
# One-time conversion of the licensed pickle


class _ChumpyArray:
    """Stand-in for ``chumpy.ch.Ch``: keeps only the wrapped array ``x``."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_numpy(self) -> np.ndarray:
        state = self.state if isinstance(self.state, dict) else {}
        if "x" not in state:
            raise DataError("a chumpy object in the MANO file has no array 'x'; only plain "
                            "chumpy.Ch arrays (as in the official release) are supported")
        return _plain(state["x"])


class _SparseMatrix:
    """Stand-in for a ``scipy.sparse`` csc/csr matrix, densified with numpy."""

    fmt = "csc"

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_numpy(self) -> np.ndarray:
        s = self.state
        try:
            data, indices, indptr = (np.asarray(s[k]) for k in ("data", "indices", "indptr"))
            shape = tuple(int(n) for n in s.get("_shape", s.get("shape")))
        except (KeyError, TypeError) as err:
            raise DataError(f"unreadable sparse matrix in the MANO file ({err})") from None
        dense = np.zeros(shape, dtype=np.float64)
        outer = shape[1] if self.fmt == "csc" else shape[0]
        for j in range(outer):
            lo, hi = int(indptr[j]), int(indptr[j + 1])
            if self.fmt == "csc":
                dense[indices[lo:hi], j] = data[lo:hi]
            else:
                dense[j, indices[lo:hi]] = data[lo:hi]
        return dense


class _CsrMatrix(_SparseMatrix):
    fmt = "csr"


def _numpy_attr(module: str, name: str) -> Any:
    # numpy 2 moved numpy.core to numpy._core; pickles name either.
    tail = module.split(".", 2)[-1] if module.startswith(("numpy.core", "numpy._core")) else ""
    for candidate in ([f"numpy._core.{tail}", f"numpy.core.{tail}"] if tail else [module]):
        try:
            return getattr(importlib.import_module(candidate.rstrip(".")), name)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(name)


_NUMPY_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}
_BUILTINS_ALLOWED = {"object", "set", "frozenset", "list", "dict", "tuple"}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the classes a MANO release file needs (see module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return copyreg._reconstructor
        if module in ("__builtin__", "builtins") and name in _BUILTINS_ALLOWED:
            return getattr(builtins, name)
        if (module, name) == ("_codecs", "encode"):  # how Python 3 pickles bytes (protocol < 3)
            return codecs.encode
        if (module, name) in _NUMPY_ALLOWED:
            return _numpy_attr(module, name)
        if module.startswith("chumpy") and name == "Ch":
            return _ChumpyArray
        if module.startswith("scipy.sparse") and name == "csc_matrix":
            return _SparseMatrix
        if module.startswith("scipy.sparse") and name == "csr_matrix":
            return _CsrMatrix
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a MANO model file holds only numpy arrays, "
            f"chumpy arrays and sparse matrices")


def _plain(value: Any) -> Any:
    """Replace stand-ins by numpy arrays (recursively for chumpy's ``x``)."""
    if isinstance(value, (_ChumpyArray, _SparseMatrix)):
        return value.to_numpy()
    return value


def read_mano_source(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a MANO model from the official pickle (restricted) or a plain ``.npz``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"MANO model file {path} does not exist")
    if zipfile.is_zipfile(path):  # an .npz (e.g. a previous conversion): no pickles
        return load_mano_arrays(path)
    try:
        with open(path, "rb") as fh:
            raw = _RestrictedUnpickler(fh, encoding="latin1").load()
    except pickle.UnpicklingError as err:
        raise DataError(f"{path}: {err}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise DataError(f"{path} is not a readable MANO pickle ({type(err).__name__}: {err})"
                        ) from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a dict of MANO arrays, got {type(raw).__name__}")
    arrays = {}
    for key in MANO_ARRAYS:
        if key not in raw:
            raise DataError(f"{path} has no {key!r}; is it a MANO model (MANO_RIGHT.pkl)?")
        arrays[key] = np.asarray(_plain(raw[key]))
    return _validated(arrays, path)


def _validated(arrays: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """Check shapes against one another and cast to plain float/int dtypes."""
    try:
        out = {k: np.ascontiguousarray(arrays[k], dtype=np.float32) for k in MANO_ARRAYS
               if k not in ("kintree_table", "f")}
        out["kintree_table"] = np.asarray(arrays["kintree_table"]).astype(np.int64)
        out["f"] = np.asarray(arrays["f"]).astype(np.int64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: MANO arrays are not numeric ({err})") from None
    nv = out["v_template"].shape[0]
    nj = out["J_regressor"].shape[0]
    expect = {
        "v_template": (nv, 3), "shapedirs": (nv, 3, None), "posedirs": (nv, 3, (nj - 1) * 9),
        "J_regressor": (nj, nv), "weights": (nv, nj), "kintree_table": (2, nj), "f": (None, 3),
        "hands_mean": ((nj - 1) * 3,), "hands_components": (None, (nj - 1) * 3),
    }
    for key, shape in expect.items():
        got = out[key].shape
        if len(got) != len(shape) or any(e is not None and e != g
                                         for e, g in zip(shape, got, strict=True)):
            raise DataError(f"{path}: MANO array {key!r} has shape {got}, expected "
                            f"{tuple('*' if e is None else e for e in shape)}")
    if nj != NUM_MANO_JOINTS:
        raise DataError(f"{path}: MANO has {NUM_MANO_JOINTS} joints, this file has {nj}")
    if out["shapedirs"].shape[-1] < NUM_BETAS:
        raise DataError(f"{path}: need at least {NUM_BETAS} shape directions")
    if out["f"].size and (out["f"].min() < 0 or out["f"].max() >= nv):
        raise DataError(f"{path}: face indices out of range for {nv} vertices")
    out["kintree_table"][0, 0] = -1  # the release stores the root's parent as 2**32 - 1
    return out


def convert_mano(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Convert the (trusted) MANO pickle ``src`` to the safe array file ``dst`` (.npz)."""
    dst = Path(dst)
    if dst.suffix != ".npz":
        raise ConfigError(f"the converted MANO file must end in .npz, got {dst}")
    arrays = read_mano_source(src)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    return atomic_write(dst, write)


# --------------------------------------------------------------------------------------
# Runtime: safe loading and the smplx layer


def load_mano_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load a converted MANO ``.npz`` without ever unpickling (``allow_pickle=False``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"MANO model file {path} does not exist (convert the licensed "
                        f"MANO_RIGHT.pkl once with `fastvit hand convert-mano MANO_RIGHT.pkl "
                        f"{path.name}`)")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a converted MANO .npz file; a MANO pickle must first "
                        f"go through `fastvit hand convert-mano` (pickles are never loaded "
                        f"at run time)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in MANO_ARRAYS if k in npz.files}
    except ValueError as err:  # an object array would need pickle
        raise DataError(f"{path} holds non-numeric (pickled) arrays; refusing to load it "
                        f"({err})") from None
    except (OSError, zipfile.BadZipFile) as err:
        raise DataError(f"{path} is not a readable .npz file ({err})") from None
    missing = [k for k in MANO_ARRAYS if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks MANO arrays {missing}")
    return _validated(arrays, path)


class ManoLayer(nn.Module):
    """MANO forward kinematics (``smplx.MANO``) returning FreiHAND-ordered joints.

    ``pose`` is the FreiHAND parameterization: 48 axis-angle numbers (global
    orientation + 15 finger joints, no PCA), relative to the MANO mean hand pose
    unless ``flat_hand_mean`` (FreiHAND's toolbox poses the mean-pose model, i.e.
    ``flat_hand_mean=False``). The 16 skeleton joints are the MANO joint regressor
    applied to the posed mesh, as the FreiHAND toolbox (MANO v1.2) computes its
    ground truth; the 5 fingertips are mesh vertices.
    """

    def __init__(self, arrays: dict[str, np.ndarray], *, flat_hand_mean: bool = False,
                 fingertip_vertex_ids: tuple[int, ...] = FREIHAND_FINGERTIPS) -> None:
        super().__init__()
        smplx = require("smplx", "fastvit hand")
        Struct = require("smplx.utils", "fastvit hand").Struct  # noqa: N806

        nv = arrays["v_template"].shape[0]
        tips = tuple(int(i) for i in fingertip_vertex_ids)
        if len(tips) != 5 or any(not 0 <= i < nv for i in tips):
            raise ConfigError(f"fingertip_vertex_ids must be 5 vertex indices below {nv}, "
                              f"got {list(tips)}")
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a 10-betas notice
            self.mano = smplx.MANO(model_path="", data_struct=Struct(**arrays), is_rhand=True,
                                   use_pca=False, flat_hand_mean=flat_hand_mean,
                                   num_betas=NUM_BETAS, create_global_orient=False,
                                   create_hand_pose=False, create_betas=False,
                                   create_transl=False)
        self.register_buffer("fingertips", torch.tensor(tips, dtype=torch.long),
                             persistent=False)
        self.register_buffer("joint_order", torch.tensor(MANO_TO_FREIHAND, dtype=torch.long),
                             persistent=False)
        self.register_buffer("faces", torch.as_tensor(arrays["f"], dtype=torch.long),
                             persistent=False)

    @property
    def num_vertices(self) -> int:
        return int(self.mano.v_template.shape[0])

    def forward(self, pose: torch.Tensor, betas: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 48) pose, (B, 10) shape -> vertices (B, V, 3), joints (B, 21, 3), metres."""
        out = self.mano(betas=betas, global_orient=pose[:, :3], hand_pose=pose[:, 3:])
        verts = out.vertices
        skeleton = torch.einsum("jv,bvc->bjc", self.mano.J_regressor, verts)
        tips = verts.index_select(1, self.fingertips)
        joints = torch.cat([skeleton, tips], dim=1).index_select(1, self.joint_order)
        return verts, joints


def build_mano_layer(path: str | os.PathLike, **kwargs: Any) -> ManoLayer:
    """The runtime MANO layer from a converted ``.npz`` (see :func:`convert_mano`)."""
    return ManoLayer(load_mano_arrays(path), **kwargs)


# --------------------------------------------------------------------------------------
# Rotation helpers (axis-angle <-> matrix), for the in-plane rotation augmentation


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 3, 3) rotation matrices (smplx's Rodrigues)."""
    batch_rodrigues = require("smplx.lbs", "fastvit hand").batch_rodrigues
    shape = aa.shape[:-1]
    return batch_rodrigues(aa.reshape(-1, 3)).reshape(*shape, 3, 3)


def matrix_to_axis_angle(rot: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 3) axis-angle, stable near 0 and pi."""
    m = rot.double()
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # Quaternion via the largest-diagonal branch (Shepperd's method).
    cands = torch.stack([
        1 + trace, 1 + 2 * m[..., 0, 0] - trace, 1 + 2 * m[..., 1, 1] - trace,
        1 + 2 * m[..., 2, 2] - trace], dim=-1)
    best = cands.argmax(-1)
    q = torch.zeros(*m.shape[:-2], 4, dtype=m.dtype, device=m.device)
    w = torch.stack([cands[..., 0], m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                     m[..., 1, 0] - m[..., 0, 1]], -1)
    x = torch.stack([m[..., 2, 1] - m[..., 1, 2], cands[..., 1], m[..., 0, 1] + m[..., 1, 0],
                     m[..., 0, 2] + m[..., 2, 0]], -1)
    y = torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], cands[..., 2],
                     m[..., 1, 2] + m[..., 2, 1]], -1)
    z = torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0],
                     m[..., 1, 2] + m[..., 2, 1], cands[..., 3]], -1)
    for i, v in enumerate((w, x, y, z)):
        sel = best == i
        q[sel] = v[sel] / (2 * cands[..., i][sel].clamp_min(1e-12).sqrt()).unsqueeze(-1)
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0)  # w >= 0: angle in [0, pi]
    vec = q[..., 1:]
    sin_half = vec.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, q[..., :1])
    scale = torch.where(sin_half > 1e-8, angle / sin_half.clamp_min(1e-12), 2.0)
    return (vec * scale).to(rot.dtype)
