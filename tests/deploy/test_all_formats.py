"""Every registered format writes a verified file; every distinct layer configuration of
the variant table in the formats where a variant can fail on its own.

One fastvit_t8 (BN statistics and layer scales randomized before fusing, so folding
errors show) is exported once per format at 64x64 with a dynamic batch, and the
round-trip tests below share those files: ONNX, TorchScript, torch.export (``.pt2``) and
OpenVINO at full depth, ExecuTorch at one block per stage (its lowering is the slow one,
and the full-depth fastvit_t8 is lowered already: the fp32 ``.pte`` of the int8 fixture
in tests/deploy/test_executorch.py, the digits weights at 32x32 and a fixed batch,
verified <= 1e-4). The slow test takes each variant at one block per stage: its widths,
MLP ratio, mixers, positional encodings and head, the layers an exporter meets one by
one (depth repeats them, it adds none: there fastvit_sa24 and fastvit_sa36 are
fastvit_sa12). The first of each distinct set of layer kinds (the same modules, whatever
their widths: fastvit_sa12's attention, the MobileCLIP towers' squeeze-excite
downsampling, fastvit_mci3's LayerNorm and fifth stage) is converted to every format:
Core ML, ONNX, TorchScript (a fresh trace), OpenVINO, ExecuTorch and torch.export
(fastvit_t8: Core ML here, the others the shared files). A structure that differs from
one of those only in its numbers (widths, MLP ratio, heads) is exported to ONNX,
TorchScript and OpenVINO, each checked numerically (so every variant is verified in
OpenVINO); Core ML (no numerical check off macOS) and the two slow lowerings meet no new
layer in it.
Full-depth reparameterization of every variant is checked in eager mode
(tests/models/test_reparam.py).
Tolerances: ONNX Runtime, OpenVINO and ExecuTorch <= 1e-4, TorchScript and torch.export <= 1e-5.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from fastvit.deploy.coreml import export_coreml
from fastvit.deploy.executorch_export import export_executorch, pte_runner, read_pte_metadata
from fastvit.deploy.export import export_model
from fastvit.deploy.metadata import export_metadata
from fastvit.deploy.onnx_export import export_onnx
from fastvit.deploy.onnx_runtime import ort_session, read_onnx_metadata
from fastvit.deploy.openvino_export import export_openvino
from fastvit.deploy.registry import FORMATS
from fastvit.deploy.torch_export import export_program
from fastvit.deploy.torchscript_export import export_torchscript
from fastvit.models import VARIANTS, list_models
from fastvit.pipeline import load_model
from tests.deploy.test_export import coreml_spec, fused_randomized
from tests.helpers.shallow import one_block_per_stage, one_block_per_stage_fused

SIZE = 64
META = {"fastvit.variant": "fastvit_t8"}
EXPORTERS = {"onnx": export_onnx, "torchscript": export_torchscript,
             "torch-export": export_program, "executorch": export_executorch,
             "openvino": export_openvino}
TOLERANCE = {"onnx": 1e-4, "torchscript": 1e-5, "torch-export": 1e-5, "executorch": 1e-4,
             "openvino": 1e-4}
#: formats every distinct structure is exported to, and those (and Core ML) once per
#: distinct set of layer kinds
EVERY_STRUCTURE = ("onnx", "torchscript", "openvino")
EVERY_LAYER_KIND = ("executorch", "torch-export")
#: formats the shared fastvit_t8 file is written in at one block per stage
SHALLOW_T8 = ("executorch",)
HAS_EXECUTORCH = importlib.util.find_spec("executorch") is not None
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_executorch = pytest.mark.skipif(not HAS_EXECUTORCH,
                                      reason="pip install 'fastvit[executorch]'")
MISSING = {fmt for fmt, present in (("executorch", HAS_EXECUTORCH),
                                    ("openvino", HAS_OPENVINO)) if not present}


@pytest.fixture(scope="module")
def t8(tmp_path_factory) -> tuple[dict[str, torch.nn.Module], dict[str, Path], dict]:
    """fastvit_t8 exported once to every tensor format (dynamic batch): the model each
    file was made from (full depth, or one block per stage in :data:`SHALLOW_T8`), the
    files and their verification results."""
    folder = tmp_path_factory.mktemp("t8")
    full = fused_randomized("fastvit_t8", seed=11)
    shallow = one_block_per_stage_fused("fastvit_t8", seed=11)
    models, files, checks = {}, {}, {}
    for fmt, export in EXPORTERS.items():
        if fmt in MISSING:
            continue
        models[fmt] = shallow if fmt in SHALLOW_T8 else full
        files[fmt] = folder / f"t8{FORMATS[fmt].suffix}"
        checks[fmt] = export(models[fmt], files[fmt], image_size=SIZE, dynamic_batch=True,
                             metadata=META)
    return models, files, checks


@pytest.mark.slow
def test_every_tensor_format_verifies_with_a_dynamic_batch(t8) -> None:
    _, _, checks = t8
    assert set(checks) == set(EXPORTERS) - MISSING
    for fmt, check in checks.items():
        assert check.batches == (1, 4), fmt
        assert check.max_abs_diff <= TOLERANCE[fmt], (fmt, check.max_abs_diff)


def fresh(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch + 7))


@pytest.mark.slow
def test_onnx_file_is_portable_and_takes_unseen_batches(t8) -> None:
    models, files, _ = t8
    model, path = models["onnx"], files["onnx"]
    onnx.checker.check_model(str(path))
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == 18
    assert {o.domain for o in proto.opset_import} <= {"", "ai.onnx"}  # portable ops only
    assert read_onnx_metadata(path)["fastvit.variant"] == "fastvit_t8"
    session = ort_session(path)
    for batch in (1, 3):  # one file, batch sizes the check did not use
        got = session.run(None, {"input": fresh(batch).numpy()})[0]
        with torch.no_grad():
            expected = model(fresh(batch)).numpy()
        assert got.shape == (batch, 1000)
        assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.slow
def test_gelu_is_fused_by_onnx_runtime(t8, tmp_path) -> None:
    """The exported erf-GELU must reach ORT in the operand order it fuses (3x on CPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(t8[1]["onnx"]), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    # every block's GELU is fused; ORT leaves the head's one (after squeeze-excite, 8x8)
    assert ops.count("Gelu") >= 16 and ops.count("Erf") <= 1


@pytest.mark.slow
def test_torchscript_and_pt2_files_reload_for_unseen_batches(t8) -> None:
    models, files, _ = t8
    with open(files["torch-export"], "rb") as fh:
        program = torch.export.load(fh).module()
    scripted = torch.jit.load(str(files["torchscript"]))
    x = fresh(3)
    with torch.no_grad():
        assert (program(x) - models["torch-export"](x)).abs().max() <= 1e-5
        assert (scripted(x) - models["torchscript"](x)).abs().max() <= 1e-5


@needs_executorch
@pytest.mark.slow
def test_pte_file_takes_batches_it_never_saw(t8) -> None:
    models, files, _ = t8
    model = models["executorch"]  # one block per stage: every convolution kind t8 has
    assert read_pte_metadata(files["executorch"]) == META
    run = pte_runner(files["executorch"])
    # 17: past a CPU-backend heuristic (batch >= 16) that would otherwise cap the planned
    # batch at 15
    for batch in (1, 3, 17):
        x = fresh(batch)
        with torch.no_grad():
            expected = model(x)
        got = run(x)
        assert len(got) == 1 and got[0].shape == (batch, 1000)
        assert (got[0] - expected).abs().max() <= 1e-4


def check_coreml_tensor_spec(path: Path, classifier: bool) -> None:
    spec = coreml_spec(path)
    (tensor,) = spec.description.input
    assert tensor.name == "input"
    assert list(tensor.type.multiArrayType.shape) == [1, 3, SIZE, SIZE]
    assert tensor.type.multiArrayType.dataType == tensor.type.multiArrayType.FLOAT32
    outputs = [o.name for o in spec.description.output]
    assert outputs == (["classLabel", "classLabel_probs"] if classifier else ["logits"])
    assert spec.description.metadata.userDefined["fastvit.image_size"] == str(SIZE)
    assert (path / "Manifest.json").exists()


@functools.lru_cache(maxsize=1)
def distinct_structures() -> dict[str, bool]:
    """The first variant of each distinct one-block-per-stage architecture, and whether it
    is also the first of its layer kinds (its architecture with the numbers left out).
    Built on the meta device (no weights): it runs at collection, in every xdist worker."""
    structures: dict[str, bool] = {}
    seen_structures, seen_kinds = set(), set()
    for name in list_models("all"):
        with torch.device("meta"):
            structure = repr(one_block_per_stage(name))
        kinds = re.sub(r"\d+", "#", structure)
        if structure not in seen_structures:
            structures[name] = kinds not in seen_kinds
        seen_structures.add(structure)
        seen_kinds.add(kinds)
    return structures


def test_the_distinct_structures_are_the_ones_expected() -> None:
    # a new variant with a new layer configuration joins the slow test below by itself
    assert distinct_structures() == {
        "fastvit_t8": True, "fastvit_t12": False, "fastvit_s12": False,
        "fastvit_sa12": True, "fastvit_ma36": False,
        # MobileCLIP towers: squeeze-excite downsampling; then LayerNorm and five stages
        "fastvit_mci0": True, "fastvit_mci2": False, "fastvit_mci3": True,
        "fastvit_mci4": False}


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
@pytest.mark.parametrize(("name", "new_kinds"), distinct_structures().items())
def test_every_variant_structure_verifies(tmp_path, name: str, new_kinds: bool) -> None:
    pytest.importorskip("coremltools")
    model = one_block_per_stage_fused(name, seed=11)
    formats = EVERY_STRUCTURE + (EVERY_LAYER_KIND if new_kinds else ())
    if name == "fastvit_t8":
        formats = ()  # the shared files above
    for fmt in formats:
        if fmt in MISSING:
            continue
        check = EXPORTERS[fmt](model, tmp_path / f"{name}{FORMATS[fmt].suffix}",
                               image_size=SIZE, dynamic_batch=True)
        assert check.batches == (1, 4), fmt
        assert check.max_abs_diff <= TOLERANCE[fmt], (fmt, check.max_abs_diff)
    if not new_kinds:
        return
    loaded = dataclasses.replace(load_model(name), model=model)  # ImageNet's class names
    path = tmp_path / f"{name}.mlpackage"
    if name == "fastvit_sa12":  # fp32 compute, plain logits output
        assert export_coreml(loaded, path, image_size=SIZE, precision="fp32",
                             metadata=export_metadata(loaded, SIZE, False),
                             classifier=False) is None  # Core ML predicts on macOS only
        check_coreml_tensor_spec(path, classifier=False)
    else:  # what fastvit export writes: fp16, a classifier where the outputs have names
        coreml = export_model(loaded, "coreml", path, image_size=SIZE)
        assert coreml.description == "Core ML mlprogram (fp16)"
        named = loaded.labels is not None  # not a MobileCLIP tower's embedding
        assert named == (VARIANTS[name].family == "paper")
        check_coreml_tensor_spec(coreml.path, classifier=named)
