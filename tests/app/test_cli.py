"""``fastvit app``: the Hugging Face Space it exports, and one line (exit 2) for bad
input or a missing extra."""

from __future__ import annotations

import ast
import os
import sys
from importlib import metadata

import pytest

from fastvit.cli import main
from tests.app.conftest import classifier_file, needs_gradio

pytestmark = needs_gradio


def test_export_space_writes_a_space_that_loads_the_same_model(tmp_path, shallow_t8, capsys,
                                                               monkeypatch):
    from fastvit.app import load_app_model

    weights = classifier_file(tmp_path / "t8.safetensors")
    space = tmp_path / "space"
    assert main(["app", "--checkpoint", str(weights), "--export-space", str(space),
                 "--max-pixels", "1000000"]) == 0
    assert "wrote a Hugging Face Space for fastvit_t8" in capsys.readouterr().err
    assert (space / "t8.safetensors").read_bytes() == weights.read_bytes()
    assert (space / "fastvit" / "app" / "server.py").is_file()
    assert not list(space.rglob("__pycache__"))
    readme = (space / "README.md").read_text()
    assert readme.startswith("---\n") and "sdk: gradio\n" in readme
    assert "app_file: app.py\n" in readme
    requirements = (space / "requirements.txt").read_text().split()
    assert f"gradio=={metadata.version('gradio')}" in requirements
    assert f"torch=={metadata.version('torch')}" in requirements
    code = (space / "app.py").read_text()
    tree = ast.parse(code)
    model = next(ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and node.targets[0].id == "MODEL")
    assert model == {"checkpoint": "t8.safetensors"} and "max_pixels=1000000" in code
    monkeypatch.chdir(space)  # the Space runs app.py from its folder
    app = load_app_model(**model)
    assert app.kind == "classifier" and app.name == "fastvit_t8"


@pytest.mark.parametrize(("argv", "message"), [
    (["app"], "no model: give --checkpoint FILE"),
    (["app", "--model", "fastvit_t8", "--port", "0"], "--port 0: a port is 1..65535"),
    (["app", "--checkpoint", "missing.safetensors"], "checkpoint not found: missing"),
    (["app", "--model", "fastvit_t8", "--max-pixels", "0"], "must be positive"),
])
def test_bad_input_is_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastvit app: error: ") and message in err
    assert err.count("\n") == 1


def test_without_gradio_the_command_names_the_extra(monkeypatch, capsys):
    for name in list(sys.modules):
        if name.split(".")[0] == "gradio":
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "gradio", None)
    assert main(["app", "--model", "fastvit_t8"]) == 2
    assert capsys.readouterr().err == ("fastvit app: error: fastvit app needs gradio: "
                                       "pip install 'fastvit[app]'\n")


def test_the_command_binds_localhost_by_default(monkeypatch, capsys, shallow_t8):
    """What ``fastvit app`` hands to Gradio (the server itself is not started here)."""
    import fastvit.app

    seen = {}
    monkeypatch.setattr(fastvit.app, "serve", lambda app, **kw: seen.update(kw, app=app))
    assert main(["app", "--model", "fastvit_t8", "--threads", "1"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 7860
    assert seen["app"].source == "random weights"
    err = capsys.readouterr().err
    assert "serving http://127.0.0.1:7860" in err and "uploads up to 20 MB" in err
    assert os.environ.get("GRADIO_SERVER_NAME") is None
