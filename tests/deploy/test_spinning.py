"""The good-neighbour policy: no spinning thread pools unless ``--spin`` / ``FASTVIT_SPIN=1``."""

from __future__ import annotations

from fastvit.deploy.onnx_runtime import ort_session_options
from fastvit.deploy.spinning import ORT_SPIN_KEYS, ort_spin_entries, policy, spin_enabled


def test_ort_sessions_do_not_spin_unless_asked(monkeypatch) -> None:
    monkeypatch.delenv("FASTVIT_SPIN", raising=False)
    assert not spin_enabled() and spin_enabled(True)
    for key in ORT_SPIN_KEYS:
        assert ort_session_options(threads=2).get_session_config_entry(key) == "0"
        assert ort_session_options(spinning=True).get_session_config_entry(key) == "1"
    assert "no spinning" in policy()
    monkeypatch.setenv("FASTVIT_SPIN", "1")  # the dedicated-host switch
    assert ort_spin_entries() == dict.fromkeys(ORT_SPIN_KEYS, "1")
    assert ort_session_options().get_session_config_entry(ORT_SPIN_KEYS[0]) == "1"
    assert ort_spin_entries(False) == dict.fromkeys(ORT_SPIN_KEYS, "0")  # explicit wins
