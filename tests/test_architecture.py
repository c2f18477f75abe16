"""The layering of docs/architecture.md, checked: no import circles, each floor imports
only the floors below it, files short enough to read, no large files in git."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = SRC / "fastvit"
MAX_LINES = 450
MAX_TRACKED_BYTES = 1 << 20

# module prefix -> prefixes it must never import (directly or in a function body)
FORBIDDEN = {
    "fastvit.models": ("fastvit.checkpoints", "fastvit.factory", "fastvit.pipeline",
                       "fastvit.data", "fastvit.run", "fastvit.train", "fastvit.tasks",
                       "fastvit.deploy", "fastvit.bench", "fastvit.cli", "fastvit.files"),
    "fastvit.weights": ("fastvit.checkpoints", "fastvit.factory", "fastvit.pipeline",
                        "fastvit.data", "fastvit.run", "fastvit.train", "fastvit.tasks",
                        "fastvit.deploy", "fastvit.bench", "fastvit.cli", "fastvit.publish"),
    "fastvit.publish": ("fastvit.run", "fastvit.train", "fastvit.tasks", "fastvit.deploy",
                        "fastvit.bench", "fastvit.cli"),
    "fastvit.checkpoints": ("fastvit.factory", "fastvit.pipeline", "fastvit.run",
                            "fastvit.train", "fastvit.tasks", "fastvit.deploy", "fastvit.bench",
                            "fastvit.cli"),
    "fastvit.data": ("fastvit.pipeline", "fastvit.run", "fastvit.train", "fastvit.tasks",
                     "fastvit.deploy", "fastvit.bench", "fastvit.cli"),
    "fastvit.pipeline": ("fastvit.publish", "fastvit.run", "fastvit.train", "fastvit.tasks",
                         "fastvit.deploy", "fastvit.bench", "fastvit.cli"),
    "fastvit.run": ("fastvit.train", "fastvit.tasks", "fastvit.deploy", "fastvit.bench",
                    "fastvit.cli", "fastvit.evaluate"),
    "fastvit.evaluate": ("fastvit.train", "fastvit.tasks", "fastvit.cli"),
    "fastvit.tasks": ("fastvit.train", "fastvit.cli"),
    "fastvit.deploy": ("fastvit.train", "fastvit.tasks", "fastvit.bench", "fastvit.cli"),
    "fastvit.bench": ("fastvit.train", "fastvit.tasks", "fastvit.cli"),
    "fastvit.train": ("fastvit.tasks", "fastvit.deploy", "fastvit.bench", "fastvit.cli"),
    "fastvit.clip": ("fastvit.train", "fastvit.tasks", "fastvit.bench", "fastvit.cli",
                     "fastvit.app"),
    # the web page sits on the jobs it shows; only the command line imports it
    "fastvit.app": ("fastvit.train", "fastvit.bench", "fastvit.cli"),
}
for _floor in ("fastvit.models", "fastvit.weights", "fastvit.publish", "fastvit.checkpoints",
               "fastvit.data", "fastvit.pipeline", "fastvit.run", "fastvit.evaluate",
               "fastvit.tasks", "fastvit.deploy", "fastvit.bench", "fastvit.train"):
    FORBIDDEN[_floor] += ("fastvit.app",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Package modules ``path`` imports anywhere in its body (``TYPE_CHECKING`` aside)."""
    tree = ast.parse(path.read_text())
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    return {m for m in found if m in known and m != this}


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    known = set(modules)
    return {name: imported_modules(path, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_planted_cycle_is_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]


def test_each_floor_imports_only_the_floors_below():
    offenders = []
    for module, imports in import_graph().items():
        for prefix, banned in FORBIDDEN.items():
            if module == prefix or module.startswith(prefix + "."):
                offenders += [f"{module} imports {m}" for m in sorted(imports)
                              if any(m == b or m.startswith(b + ".") for b in banned)]
    assert not offenders, "\n".join(offenders)


def test_the_model_file_imports_only_its_layers():
    imports = import_graph()["fastvit.models.network"]
    assert imports == {"fastvit.models.layers"}, imports


def test_files_are_short_enough_to_read_in_one_sitting():
    long = [f"{p.relative_to(REPO)}: {n} lines" for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, long


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="not a git checkout")
def test_no_large_file_is_tracked_outside_docs():
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    large = [f"{name} ({(REPO / name).stat().st_size} bytes)" for name in listed
             if name and not name.startswith("docs/") and (REPO / name).is_file()
             and (REPO / name).stat().st_size > MAX_TRACKED_BYTES]
    assert not large, f"tracked files over 1 MiB outside docs/: {large}"
