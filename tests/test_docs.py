"""Every ``fastvit COMMAND --flag`` the documentation writes is a flag that command has."""

import argparse
import re
from pathlib import Path

import pytest

from fastvit.cli import ALIASES, COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
SPAN = re.compile(r"`([^`\n]+)`")
# "fastvit CMD" at the start of a command: line start, after a space, "-m", "$ ", "(", ...
INVOCATION = re.compile(r"(?:^|[\s($])fastvit((?:\s+--debug)?\s+[a-z][a-z-]*\b.*)")
COMMAND_SEPARATOR = re.compile(r"&&|\|\||[|;]")
COMMENT = re.compile(r"\s#.*")


def _code(text: str) -> list[str]:
    """The lines of fenced blocks (continuations joined) and the inline code spans."""
    lines = []
    for block in FENCE.findall(text):
        lines += block.replace("\\\n", " ").splitlines()
    return lines + SPAN.findall(FENCE.sub("", text))


def documented_invocations() -> list[tuple[str, list[str]]]:
    """``(where, tokens after "fastvit")`` of every command the docs show."""
    found = []
    for path in DOCS:
        for line in _code(path.read_text(encoding="utf-8")):
            for command in COMMAND_SEPARATOR.split(COMMENT.sub("", line)):
                match = INVOCATION.search(command)
                if match is None:
                    continue
                # "[--amp bf16]" is an optional flag: the brackets are not part of it
                tokens = [t.strip("[]") for t in match.group(1).split() if t != "--debug"]
                if tokens and (tokens[0] in COMMANDS or tokens[0] in ALIASES):
                    found.append((f"{path.relative_to(ROOT)}: fastvit{match.group(1)}",
                                  tokens))
    return found


def _options(parser: argparse.ArgumentParser, tokens: list[str]) -> set[str]:
    """The option strings of ``parser``, or of its action ``tokens[0]`` when it has actions."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and tokens[:1] and (
                tokens[0] in action.choices):
            return _options(action.choices[tokens[0]], tokens[1:])
    return {s for action in parser._actions for s in action.option_strings}


INVOCATIONS = documented_invocations()


def test_the_docs_show_commands():
    assert len(INVOCATIONS) > 40
    assert {tokens[0] for _, tokens in INVOCATIONS} >= {"train", "evaluate", "export", "bench"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_documented_flag_exists(command):
    parser, _ = build_parser(command)
    unknown = []
    for where, tokens in INVOCATIONS:
        if ALIASES.get(tokens[0], tokens[0]) != command:
            continue
        known = _options(parser, tokens[1:])
        unknown += [f"{where} -> {flag}" for flag in
                    (t.split("=")[0] for t in tokens[1:] if t.startswith("--"))
                    if flag not in known]
    assert not unknown, "\n".join(unknown)


def test_an_unknown_flag_is_found():
    parser, _ = build_parser("evaluate")
    assert "--compile" not in _options(parser, [])
    assert "--train-time" in _options(parser, [])
    detect, _ = build_parser("detect")
    assert "--val-ann" in _options(detect, ["train"])
    assert "--val-ann" not in _options(detect, ["predict"])
