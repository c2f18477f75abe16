"""The format registry: the docs table, the command's choices and help, and the refusals
all follow the formats' declarations (no export runs here: these checks are instant)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from fastvit.cli import build_parser
from fastvit.cli import main as cli
from fastvit.deploy.export import default_export_path
from fastvit.deploy.formats import OPTION_FLAGS, scientific
from fastvit.deploy.registry import (
    FORMATS,
    TABLE_BEGIN,
    TABLE_END,
    check_export_options,
    documented_table,
    export_format,
    formats_table,
    write_formats_table,
)
from fastvit.errors import ConfigError
from fastvit.extras import MissingExtraError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"


def test_docs_formats_table_is_the_rendered_registry() -> None:
    assert documented_table(DOCS.read_text()) == formats_table(), (
        "docs/deployment.md's formats table is stale: run "
        "`python -m fastvit.deploy.registry docs/deployment.md`")


def test_write_formats_table_replaces_a_stale_table_only(tmp_path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Export\n\n{TABLE_BEGIN}\n| old | table |\n{TABLE_END}\n\nprose\n")
    assert write_formats_table(doc) is True
    text = doc.read_text()
    assert text == f"# Export\n\n{formats_table()}\n\nprose\n"
    assert write_formats_table(doc) is False and doc.read_text() == text
    doc.write_text("no markers")
    with pytest.raises(ConfigError, match="no formats table markers"):
        write_formats_table(doc)


def test_every_format_is_declared_completely() -> None:
    assert list(FORMATS) == ["onnx", "coreml", "torchscript", "torch-export", "executorch",
                             "openvino"]
    suffixes = [f.suffix for f in FORMATS.values()]
    assert len(set(suffixes)) == len(suffixes) and all(s.startswith(".") for s in suffixes)
    for name, fmt in FORMATS.items():
        assert fmt.name == name and callable(fmt.export)
        assert fmt.extra in (None, "export", "executorch", "openvino")
        assert fmt.verified_by and fmt.tolerance
        assert default_export_path("fastvit_t8", 64, name, "out") == Path(
            f"out/fastvit_t8_64{fmt.suffix}")
    assert [n for n, f in FORMATS.items() if f.int8] == ["onnx", "executorch", "openvino"]
    assert [n for n, f in FORMATS.items() if not f.dynamic_batch] == ["coreml"]
    assert FORMATS["executorch"].max_batch == 64


def test_table_rows_say_what_each_format_supports() -> None:
    rows = {line.split("`")[1]: line for line in formats_table().splitlines()
            if line.startswith("| `") and not line.startswith("| `--")}
    assert list(rows) == list(FORMATS)
    cells = [c.strip() for c in rows["coreml"].strip("|").split("|")]
    assert cells[1:7] == ["`.mlpackage`", "`fastvit[export]`", "no", "no", "`--image-input`",
                          "yes"]
    cells = [c.strip() for c in rows["executorch"].strip("|").split("|")]
    assert cells[1:5] == ["`.pte`", "`fastvit[executorch]`", "yes", "up to 64"]
    assert "| core install |" in rows["torchscript"]
    cells = [c.strip() for c in rows["openvino"].strip("|").split("|")]
    assert cells[1:7] == ["`.xml`", "`fastvit[openvino]`", "yes", "yes", "yes", "yes"]
    assert rows["onnx"].endswith("| 1e-4 |") and rows["torchscript"].endswith("| 1e-5 |")


def test_scientific_tolerances() -> None:
    assert [scientific(v) for v in (1e-4, 1e-5, 2e-2)] == ["1e-4", "1e-5", "2e-2"]


def test_cli_format_choices_and_help_come_from_the_registry() -> None:
    parser, _ = build_parser("export")
    (action,) = [a for a in parser._actions if a.dest == "format"]
    assert list(action.choices) == list(FORMATS)
    text = parser.format_help().replace("\n", " ")
    for fmt in FORMATS.values():
        assert fmt.suffix in text
    assert "fastvit[executorch]" in text and "executorch up to batch 64" in text


UNSUPPORTED = [(name, option) for name, fmt in FORMATS.items() for option in OPTION_FLAGS
               if not fmt.supports(option)]


@pytest.mark.parametrize(("name", "option"), UNSUPPORTED)
def test_an_unsupported_option_is_one_error_naming_who_has_it(name: str, option: str) -> None:
    others = [n for n, f in FORMATS.items() if f.supports(option)]
    with pytest.raises(ConfigError) as err:
        check_export_options(name, **{option: True})
    message = str(err.value)
    assert message.startswith(f"--format {name} has no {OPTION_FLAGS[option]}")
    assert message.endswith(f"formats with {OPTION_FLAGS[option]}: {', '.join(others)}")


def test_supported_options_pass_the_check() -> None:
    for name, fmt in FORMATS.items():
        if all(importlib.util.find_spec(m.split(".")[0]) for m in fmt.requires):
            asked = {o: True for o in OPTION_FLAGS if fmt.supports(o) and o != "int8"}
            assert check_export_options(name, **asked) is fmt


def test_int8_needs_a_classifier() -> None:
    with pytest.raises(ConfigError, match="needs a classifier, not --features-only"):
        check_export_options("onnx", int8=True, features_only=True)


def test_unknown_format_and_small_size() -> None:
    with pytest.raises(ConfigError, match="unknown export format 'tflite'; choose one of onnx"):
        export_format("tflite")
    with pytest.raises(ConfigError, match="--image-size must be >= 32"):
        check_export_options("torchscript", image_size=16)


def test_a_missing_extra_names_its_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "coremltools", None)  # import fails
    with pytest.raises(MissingExtraError, match=r"--format coreml needs coremltools: "
                                                r"pip install 'fastvit\[export\]'"):
        check_export_options("coreml")


@pytest.mark.parametrize(("argv", "message"), [
    (["--format", "coreml", "--dynamic-batch"], "Core ML export is batch 1"),
    (["--format", "coreml", "--raw-pixels"], "use --image-input"),
    (["--format", "onnx", "--image-input"], "formats with --image-input: coreml"),
    (["--format", "torchscript", "--int8", "--calibration", "x"],
     "formats with --int8: onnx, executorch"),
])
def test_cli_refusals_are_one_line_before_any_work(tmp_path, capsys, argv, message) -> None:
    out = tmp_path / "x"
    assert cli(["export", "--model", "fastvit_t8", "--output", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastvit export: error:") and message in err
    assert len(err.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []
