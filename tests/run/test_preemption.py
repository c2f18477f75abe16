"""Stop signals in the shared run layer (in process, a tiny MLP run: 6 steps per epoch,
2 epochs): SIGTERM/SIGINT/SIGUSR1 finish the optimizer step, write a checkpoint and raise
StoppedBySignal; the resumed run ends bit-identical to an uninterrupted one wherever the
signal lands (mid-epoch, at an epoch end, at the last step, during an evaluation); a
second Ctrl-C aborts; the previous handlers come back; ranks agree on the step."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from pathlib import Path

import pytest
import torch

from fastvit.errors import StoppedBySignal
from fastvit.run.distributed import DistEnv
from fastvit.run.metrics_log import read_metrics
from fastvit.run.preemption import ELASTIC_ENV, StopSignals
from fastvit.run.store import BEST_NAME, checkpoint_name, list_checkpoints
from tests.helpers.fit import TinyRun, ddp_rank, run_tiny, signal_at
from tests.helpers.training import load_state, tensors_equal

pytestmark = pytest.mark.usefixtures("one_thread")
PER_EPOCH, FINAL = 6, 12
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    torch.set_num_threads(1)
    result = run_tiny(TinyRun(out))
    assert not result.stopped and result.progress.step == FINAL
    return out


def _handlers() -> dict[int, object]:
    return {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}


def _stop(run: TinyRun) -> StoppedBySignal:
    before = _handlers()
    with pytest.raises(StoppedBySignal) as caught:
        run_tiny(run)
    assert _handlers() == before, "the run did not restore the previous signal handlers"
    return caught.value


def _resume_and_compare(out: Path, reference: Path, messages: list[str] | None = None) -> None:
    result = run_tiny(TinyRun(out, resume="auto"), say=(messages or []).append)
    assert not result.stopped and result.progress.step == FINAL
    for name in (checkpoint_name(FINAL), BEST_NAME):
        ref, got = load_state(reference / name), load_state(out / name)
        diffs = tensors_equal(ref, got, name)
        assert not diffs, f"resumed run differs from the uninterrupted one at {diffs[:5]}"
    assert ([r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "eval"]
            == [r for r in read_metrics(reference / "metrics.jsonl") if r["kind"] == "eval"])


@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_mid_epoch_checkpoints_the_step_and_resumes_exactly(tmp_path, reference, sig):
    stop = _stop(TinyRun(tmp_path, hook=signal_at(4, sig)))
    assert (stop.signal_name, stop.step) == (signal.Signals(sig).name, 4)
    assert stop.checkpoint == str(tmp_path / checkpoint_name(4))
    assert "--resume auto" in str(stop)
    state = load_state(tmp_path / checkpoint_name(4))
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (4, 0, 4)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4]
    _resume_and_compare(tmp_path, reference)


def test_signal_at_the_last_step_of_an_epoch_leaves_its_evaluation_to_the_resume(
        tmp_path, reference):
    stop = _stop(TinyRun(tmp_path, hook=signal_at(PER_EPOCH, signal.SIGTERM)))
    assert stop.step == PER_EPOCH
    state = load_state(tmp_path / checkpoint_name(PER_EPOCH))
    assert (state["epoch"], state["batch_in_epoch"]) == (0, PER_EPOCH)  # end of epoch pending
    assert not [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "eval"]
    _resume_and_compare(tmp_path, reference)


def test_signal_at_the_final_step_leaves_the_final_evaluation_to_the_resume(
        tmp_path, reference):
    stop = _stop(TinyRun(tmp_path, hook=signal_at(FINAL, signal.SIGTERM)))
    assert stop.step == FINAL
    assert load_state(tmp_path / checkpoint_name(FINAL))["epoch"] == 1
    _resume_and_compare(tmp_path, reference)


def test_signal_during_an_evaluation_stops_before_the_next_epoch(tmp_path, reference):
    def eval_hook(progress):
        os.kill(os.getpid(), signal.SIGUSR1)

    stop = _stop(TinyRun(tmp_path, eval_hook=eval_hook))
    assert stop.step == PER_EPOCH
    state = load_state(tmp_path / checkpoint_name(PER_EPOCH))
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 0)
    _resume_and_compare(tmp_path, reference)


def test_second_ctrl_c_aborts_without_a_checkpoint_of_the_current_step(tmp_path):
    before = _handlers()
    with pytest.raises(KeyboardInterrupt):
        run_tiny(TinyRun(tmp_path, save_every=2, hook=signal_at(4, signal.SIGINT,
                                                                 signal.SIGINT)))
    assert _handlers() == before
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]
    assert not list(tmp_path.glob(".*.tmp"))


def test_under_torchrun_repeated_signals_do_not_abort(tmp_path, monkeypatch):
    """torchrun forwards one SIGINT to each worker and escalates itself (SIGKILL after
    its shutdown timeout); a worker keeps going to its checkpoint."""
    monkeypatch.setenv(ELASTIC_ENV, "test")
    stop = _stop(TinyRun(tmp_path, hook=signal_at(4, signal.SIGINT, signal.SIGINT,
                                                  signal.SIGTERM)))
    assert (stop.signal_name, stop.step) == ("SIGINT", 4)


def test_handlers_are_restored_after_a_complete_run(tmp_path):
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: seen.append(1))
    try:
        run_tiny(TinyRun(tmp_path, epochs=1))
        os.kill(os.getpid(), signal.SIGUSR1)
        assert seen == [1]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_outside_the_main_thread_signals_keep_their_handlers():
    before, inside = _handlers(), []

    def body():
        with StopSignals(DistEnv()) as stop:
            inside.append(_handlers())
            inside.append(stop.agreed())

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert inside == [before, None]


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_ranks_stop_after_the_same_step_when_only_one_gets_the_signal(tmp_path):
    """2 gloo processes, 6 steps per epoch each; only rank 1 gets SIGTERM (during step 3):
    the MAX all-reduce after each step makes both stop after step 3, and rank 0 writes
    the checkpoint both reached."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=ddp_rank, args=(rank, str(tmp_path / "store"),
                                                str(tmp_path / "out"), 1, 3, results))
             for rank in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(100)
    outcomes = dict(results.get(timeout=5) for _ in procs)
    assert outcomes == {0: "stopped SIGTERM at 3", 1: "stopped SIGTERM at 3"}
    assert [p.exitcode for p in procs] == [0, 0]
    state = load_state(tmp_path / "out" / checkpoint_name(3))
    assert (state["step"], state["world_size"], len(state["rng"])) == (3, 2, 2)
