"""Every export format passes its numeric check for all seven variants (slow).

ONNX Runtime (<= 1e-4), TorchScript and torch.export (<= 1e-5) and ExecuTorch
(<= 1e-4) run the written file against the fused eager model, dynamic batch
(1 and 4); Core ML converts here (its predictions run on macOS only, where
``export_model`` checks them too). 64x64 inputs keep the 35 exports short; BN
statistics and layer scales are randomized before fusing so folding errors show.
"""

from __future__ import annotations

import pytest

from fastvit.deploy.executorch_export import export_executorch
from fastvit.deploy.export import export_model
from fastvit.deploy.onnx_export import export_onnx
from fastvit.deploy.torch_export import export_program, export_torchscript
from fastvit.models import list_models
from fastvit.pipeline import load_model
from tests.deploy.test_export import fused_randomized

SIZE = 64
EXPORTERS = {
    "onnx": (export_onnx, ".onnx", 1e-4),
    "torchscript": (export_torchscript, ".ts.pt", 1e-5),
    "torch-export": (export_program, ".pt2", 1e-5),
    "executorch": (export_executorch, ".pte", 1e-4),
}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("name", list_models())
def test_every_format_verifies_for_every_variant(tmp_path, name: str) -> None:
    pytest.importorskip("executorch.runtime")
    pytest.importorskip("coremltools")
    assert len(list_models()) == 7
    model = fused_randomized(name, seed=11)
    for fmt, (export, suffix, tolerance) in EXPORTERS.items():
        check = export(model, tmp_path / f"{name}{suffix}", image_size=SIZE, dynamic_batch=True)
        assert check.batches == (1, 4), fmt
        assert check.max_abs_diff <= tolerance, (fmt, check.max_abs_diff)
    coreml = export_model(load_model(name), "coreml", tmp_path / f"{name}.mlpackage",
                          image_size=SIZE)
    assert coreml.path.is_dir() and (coreml.path / "Manifest.json").exists()
