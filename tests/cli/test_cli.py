"""The `fastvit` entry point and `fastvit info`."""

import json
import subprocess
import sys

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


def test_console_script_module_entry():
    out = subprocess.run([sys.executable, "-m", "fastvit", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.startswith("fastvit ")
