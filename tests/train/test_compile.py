"""``--compile``: the CPU crash guard, no graph breaks in the training forward, and exact
resume of a compiled run (stop + resume == uninterrupted, compiled, on CPU).

Inductor's code generation for a training step runs in the crash-guard test (a child
process, forward and backward of the convolution that needs the guard) and in
``benchmarks/compile_guard.py`` (fastvit_t8 steps); on the fused model in
tests/models/test_reparam.py. The run-path tests below compile on the ``aot_eager``
backend: Dynamo and AOTAutograd capture the same graphs, which then run as captured,
because what they check is the run path's use of ``torch.compile`` (wrapping, the header,
checkpoints, resume, evaluation) and a cold Inductor build of a training graph costs a
minute of CPU even at one block per stage."""

from __future__ import annotations

import logging
import math
import subprocess
import sys

import pytest
import torch

import fastvit
from fastvit.models import VARIANTS
from fastvit.run.compiling import compile_options
from fastvit.run.store import checkpoint_name
from fastvit.train.memory_format import to_channels_last
from fastvit.train.trainer import fit
from tests.helpers.shallow import one_block_per_stage_spec
from tests.helpers.training import load_state, subprocess_env, tensors_equal, tiny_config
from tests.train.test_loop import _Colours

pytestmark = pytest.mark.usefixtures("one_thread")

# The minimal repro of docs/training.md ("Compiled training"): Inductor's layout optimization
# runs this 1x1 stride-2 convolution's backward in channels_last, which corrupts the heap.
REPRO = """
import sys, torch
from fastvit.run.compiling import compile_model
torch.set_num_threads(2)
conv = torch.nn.Conv2d(3, 48, 1, stride=2)
x = torch.randn(16, 3, 128, 128, requires_grad=True)
run = compile_model(conv, "cpu") if sys.argv[1] == "ours" else torch.compile(conv)
for _ in range(2):
    run(x).sum().backward()
print("alive")
"""


@pytest.mark.slow
def test_compiled_strided_pointwise_conv_backward_survives_on_cpu() -> None:
    assert compile_options("cpu") == {"layout_optimization": False}
    assert compile_options("cuda") == {}
    done = subprocess.run([sys.executable, "-c", REPRO, "ours"], env=subprocess_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "alive" in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize("channels_last", [False, True])
def test_training_forward_has_no_graph_breaks(channels_last: bool) -> None:
    model = fastvit.create_model("fastvit_t8", num_classes=3, drop_path_rate=0.1).train()
    x = torch.randn(2, 3, 64, 64)
    if channels_last:  # the trainer's conversion, with its eager-mode guard hooks
        model = to_channels_last(model, "cpu")
        x = x.contiguous(memory_format=torch.channels_last)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def aot_eager_compile(compile_):
    """``torch.compile`` as the run path calls it, on the ``aot_eager`` backend: Dynamo
    and AOTAutograd capture the graphs, which run as they are (no code generation)."""
    def aot_eager(model, *, options=None, dynamic=None):
        assert options == compile_options("cpu")  # what Inductor would have been given
        return compile_(model, backend="aot_eager", dynamic=dynamic)
    return aot_eager


@pytest.fixture
def shallow_t8(monkeypatch) -> None:
    """fastvit_t8 cut to one block per stage, compiled on ``aot_eager`` (module docstring):
    graph capture time grows with every block."""
    monkeypatch.setitem(VARIANTS, "fastvit_t8", one_block_per_stage_spec("fastvit_t8"))
    monkeypatch.setattr(torch, "compile", aot_eager_compile(torch.compile))


def _datasets():
    """test_loop's data with 10 validation images, two full evaluation batches of 5: one
    evaluation graph to compile (a smaller last batch would compile a dynamic-shape one)."""
    return _Colours(24), _Colours(10), ["a", "b", "c"]


@pytest.mark.slow
def test_compiled_stop_and_resume_equals_uninterrupted(tmp_path, shallow_t8) -> None:
    torch._dynamo.reset()
    reference = tiny_config(tmp_path / "reference", "unused")
    done = fit(reference, datasets=_datasets(), compiled=True, log=lambda _m: None)
    final = done["step"]
    stopped = tiny_config(tmp_path / "stopped", "unused", **{"run.max_steps": 5})
    first = fit(stopped, datasets=_datasets(), compiled=True, log=lambda _m: None)
    assert first["step"] == 5 < final
    torch._dynamo.reset()  # a new process would start with nothing compiled
    resumed = tiny_config(tmp_path / "stopped", "unused")
    messages: list[str] = []
    fit(resumed, resume="auto", datasets=_datasets(), compiled=True, log=messages.append)
    assert any("torch.compile" in m for m in messages)  # the header says so
    assert any(m.startswith("resumed ") for m in messages)
    name = checkpoint_name(final)
    ref, got = load_state(tmp_path / "reference" / name), load_state(tmp_path / "stopped" / name)
    for key in ("model", "ema", "optimizer", "scheduler", "step", "epoch", "batch_in_epoch"):
        diffs = tensors_equal(ref[key], got[key], key)
        assert not diffs, f"compiled resume differs from the uninterrupted run at {diffs[:5]}"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_task_trainer_runs_compiled(tmp_path, capsys, caplog, monkeypatch) -> None:
    """A dense-task run (hand mesh regression) compiled: Dynamo captures the hand model's
    forward and AOTAutograd its backward (``aot_eager``, module docstring)."""
    monkeypatch.setattr(torch, "compile", aot_eager_compile(torch.compile))
    from fastvit.tasks.hand import engine as hand_engine
    from fastvit.tasks.hand.recipe import DEFAULT_RECIPE, HandRecipe
    from fastvit.tasks.recipes import load_task_recipe
    from tests.helpers.hand import make_freihand, write_mano_npz

    caplog.set_level(logging.INFO, logger="fastvit")
    torch._dynamo.reset()
    mano = write_mano_npz(tmp_path / "mano_right.npz")
    data = make_freihand(tmp_path / "FreiHAND", mano, num_samples=4, versions=1, image_size=64)
    recipe = load_task_recipe(HandRecipe, DEFAULT_RECIPE, values={
        "model.variant": "fastvit_t8", "data.image_size": 64, "data.batch_size": 2,
        "schedule.epochs": 1, "data.workers": 0, "head.hidden": 64, "data.versions": (0,),
        "schedule.warmup_iters": 1, "run.log_every": 1})
    report = hand_engine.train(recipe, data=data, mano_path=mano, out_dir=tmp_path / "run",
                               device="cpu", eval_split=None, compiled=True)
    captured = capsys.readouterr()  # the run's header is logged (stderr under the CLI)
    assert "torch.compile (inductor, layout_optimization=False)" in (
        captured.out + captured.err + caplog.text)
    losses = [r["loss"] for r in report["train"]]
    assert report["step"] == 2 and losses and all(math.isfinite(v) for v in losses)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compiled_evaluation_scores_like_eager(tmp_path, shallow_t8) -> None:
    """The evaluation path compiled (Inductor's numerics on the fused model are checked in
    tests/models/test_reparam.py)."""
    from fastvit.evaluate import run_evaluation
    from fastvit.pipeline import load_model
    from tests.helpers.training import make_image_folder

    data = make_image_folder(tmp_path / "data", num_classes=3, val_per_class=4, size=48)
    loaded = load_model("fastvit_t8", num_classes=3)
    runs = {compiled: run_evaluation(loaded, data=data, split="val", batch_size=5,
                                     image_size=64, compiled=compiled)
            for compiled in (False, True)}
    assert runs[True]["compiled"] is True and runs[False]["compiled"] is False
    eager, compiled = runs[False]["sets"]["val"], runs[True]["sets"]["val"]
    assert compiled["count"] == eager["count"] == 12  # 5 + 5 + 2: a smaller last batch too
    assert compiled["top1"] == eager["top1"]
    assert abs(compiled["loss"] - eager["loss"]) < 1e-4
