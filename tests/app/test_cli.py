"""``fastvit app``: the Hugging Face Space it exports, and one line (exit 2) for bad
input or a missing extra."""

from __future__ import annotations

import ast
import sys
from importlib import metadata

import pytest

from fastvit.cli import main
from tests.app.conftest import classifier_file, needs_gradio
from tests.helpers.images import make_image_folder

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


def test_the_command_binds_localhost_by_default(monkeypatch, capsys, shallow_t8, tmp_path):
    """What ``fastvit app`` hands to the page (the server itself is not started here): this
    machine only, the photo folder, its first images to pick from."""
    import fastvit.app

    photos = make_image_folder(tmp_path / "photos", {"a": 2, "b": 1}, size=(20, 20))
    seen = {}
    monkeypatch.setattr(fastvit.app, "serve", lambda app, **kw: seen.update(kw, app=app))
    assert main(["app", "--model", "fastvit_t8", "--threads", "1", "--photos",
                 str(photos)]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 7860
    assert seen["photos"] == str(photos) and seen["app"].source == "random weights"
    assert [p.relative_to(photos).as_posix() for p in seen["examples"]] == \
        ["a/0.jpg", "a/1.jpg", "b/0.jpg"]
    err = capsys.readouterr().err
    assert "serving http://127.0.0.1:7860" in err and "uploads up to 20 MB" in err
