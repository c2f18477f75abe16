"""The `fastvit` entry point and `fastvit info`."""

import json
import subprocess
import sys

import pytest

from fastvit.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_is_one_clear_error(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'frobnicate'" in err and "Traceback" not in err


@pytest.mark.slow
def test_info_table_and_json(capsys):
    assert main(["info", "fastvit_t8", "fastvit_sa12"]) == 0
    out = capsys.readouterr().out
    assert "| fastvit_t8 | 4.03 / 4.00 | 0.69 | 2,2,4,2 | 48,96,192,384 |" in out
    assert "RM/RM/RM/Attn" in out
    assert main(["info", "fastvit_ma36", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["variant"] == "fastvit_ma36"
    assert abs(rows[0]["params_train_m"] - 44.07) < 0.01
    assert rows[0]["depths"] == [6, 6, 18, 6]


def test_info_unknown_variant(capsys):
    assert main(["info", "resnet50"]) == 2
    err = capsys.readouterr().err
    assert "unknown variant 'resnet50'" in err and "fastvit_t8" in err


@pytest.mark.slow
def test_console_script_module_entry():
    out = subprocess.run([sys.executable, "-m", "fastvit", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.startswith("fastvit ")


def _parse(command: str, argv: list[str]):
    from fastvit.cli import build_parser

    parser, _ = build_parser(command)
    return parser.parse_args(argv)


def test_one_spelling_per_concept_across_commands():
    """The shared groups give every command the same flags for the same concepts."""
    assert _parse("export", ["--format", "onnx", "--threads", "3"]).threads == 3  # CPU only
    for command, argv in (("evaluate", ["--data", "d"]), ("predict", ["x.jpg"]), ("bench", []),
                          ("train", []),
                          ("detect", ["train", "--out", "o"]),
                          ("segment", ["train", "--data", "d", "--out", "o"]),
                          ("hand", ["train", "--data", "d", "--mano", "m", "--out", "o"])):
        args = _parse(command, [*argv, "--device", "cuda:1", "--threads", "3"])
        assert (args.device, args.threads) == ("cuda:1", 3), command
    for command, argv in (("train", []), ("detect", ["train", "--out", "o"]),
                          ("segment", ["train", "--data", "d", "--out", "o"]),
                          ("hand", ["train", "--data", "d", "--mano", "m", "--out", "o"])):
        args = _parse(command, [*argv, "--config", "r.yaml", "--set", "optim.lr=1", "--pretrained",
                                "w.pt", "--max-steps", "5", "--amp", "bf16"])
        assert (args.config, args.overrides, args.pretrained, args.max_steps, args.amp) == (
            "r.yaml", ["optim.lr=1"], "w.pt", 5, "bf16"), command


def test_old_spellings_still_work_and_name_the_new_one(caplog):
    import re

    caplog.set_level("WARNING", logger="fastvit")

    def renamed() -> list[tuple[str, str]]:
        """``(old, new)`` of each note since the last call: one line each."""
        notes = [re.fullmatch(r"fastvit [a-z ]+: (\S+) is an old spelling \(still accepted\); "
                              r"use (.+)", r.getMessage()) for r in caplog.records]
        caplog.clear()
        assert all(notes)
        return [note.groups() for note in notes]

    args = _parse("train", ["--checkpoint", "w.pt", "--stop-at-step", "7"])
    assert (args.pretrained, args.max_steps) == ("w.pt", 7)
    assert renamed() == [("--checkpoint", "--pretrained"), ("--stop-at-step", "--max-steps")]
    assert _parse("detect", ["train", "--out", "o", "--recipe", "r.yaml"]).config == "r.yaml"
    assert renamed() == [("--recipe", "--config")]
    assert _parse("segment", ["train", "--data", "d", "--out", "o", "--amp"]).amp == "on"
    hand = _parse("hand", ["train", "--data", "d", "--mano", "m", "--out", "o", "--no-amp",
                           "--input-size", "96", "--eval-split", "none"])
    assert (hand.amp, hand.image_size, hand.val_split) == ("none", 96, "none")
    assert renamed() == [("--no-amp", "--amp none"), ("--input-size", "--image-size"),
                         ("--eval-split", "--val-split")]
    assert _parse("validate", ["--data", "d", "--no-reparam"]).train_time
    assert renamed() == [("--no-reparam", "--train-time")]
    for command in ("detect", "segment"):  # evaluate --out FILE: the old --json FILE
        argv = ["evaluate", "--data", "d", "--checkpoint", "c.pt", "--out", "m.json"]
        assert _parse(command, argv).json == "m.json"
        assert renamed() == [("--out", "--json FILE")]
    assert _parse("export", ["--format", "onnx", "--output", "m.onnx"]).output == "m.onnx"
    assert _parse("info", ["--json"]).json == "-"  # the old switch prints to stdout
    assert _parse("train", ["--max-steps", "3", "--pretrained", "w.pt"]).max_steps == 3
    assert renamed() == []  # the current spellings say nothing


def test_old_spellings_are_hidden_from_help(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--max-steps" in out and "--stop-at-step" not in out


def test_an_input_error_is_one_line_and_debug_shows_its_traceback(capsys, monkeypatch):
    import pytest

    from fastvit.errors import FastVitError

    monkeypatch.delenv("FASTVIT_DEBUG", raising=False)
    assert main(["info", "resnet50"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastvit info: error: unknown variant")
    with pytest.raises(FastVitError, match="unknown variant 'resnet50'"):
        main(["--debug", "info", "resnet50"])
    monkeypatch.setenv("FASTVIT_DEBUG", "1")
    with pytest.raises(FastVitError):
        main(["info", "resnet50"])
    monkeypatch.setenv("FASTVIT_DEBUG", "0")
    assert main(["info", "resnet50"]) == 2
    assert main(["--help"]) == 0
    assert "--debug" in capsys.readouterr().out


def test_a_bug_is_not_disguised_as_an_input_error(monkeypatch):
    """Only the project's own errors print as one line: anything else is a bug and keeps
    Python's traceback (and exit status 1), even a ValueError or an OSError."""
    import pytest

    import fastvit.cli.info

    for bug in (ValueError("not the user's fault"), FileNotFoundError(2, "No such file")):
        def broken(args, bug=bug):
            raise bug

        monkeypatch.setattr(fastvit.cli.info, "main", broken)
        with pytest.raises(type(bug)):
            main(["info"])


@pytest.mark.slow
def test_a_bug_exits_1_with_its_traceback():
    code = ("import fastvit.cli.info as info, fastvit.cli as cli\n"
            "info.main = lambda args: 1 / 0\n"
            "cli.main(['info'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "ZeroDivisionError" in out.stderr


def test_help_shows_defaults(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 50)" in out and "(default: outputs/bench)" in out
    assert "(default: None)" not in out


def test_an_output_that_cannot_be_written_names_its_option(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["info", "fastvit_t8", "--json", str(blocker / "rows.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fastvit info: error: --json {blocker / 'rows.json'}: cannot write it: "
                   f"File exists: {blocker}"], err  # the folder it needs is a file
