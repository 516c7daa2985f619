"""The code itself: ruff's lint and format rules and mypy's types (pyproject.toml
configures all three), so CI refuses what a reviewer would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_code(command):
    tool = Path(sys.executable).parent / command[0]
    done = subprocess.run(
        [str(tool), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr


# Layers of docs/ARCHITECTURE.md, lowest first: a module may import modules of its
# own rank or lower, never higher. origin never imports workers or storyforge.
RANKS = [
    ("origin.server", 4.0),
    ("origin.fastpath", 3.5),
    ("origin.app", 3.0),
    ("origin.handlers", 2.0),
    ("origin.http", 1.0),
    ("workers", 0.5),
    ("origin", 0.0),
    ("storyforge", 5.0),
]


def _rank(module: str) -> float | None:
    for prefix, rank in RANKS:
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def _imports(path: Path) -> set[str]:
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_module_imports_upward():
    wrong = []
    for package in ("origin", "workers", "storyforge"):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(
                ".__init__"
            )
            mine = _rank(module)
            assert mine is not None, module
            for target in _imports(path):
                theirs = _rank(target)
                if theirs is None:
                    continue  # not ours
                upward = theirs > mine
                crossing = module.startswith("origin") and target.split(".")[0] != "origin"
                if upward or crossing:
                    wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(set(wrong)))
