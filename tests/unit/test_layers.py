"""The packages production runs (origin, workers) never import the `storyforge`
package: the CLI and its dev tooling (storyforge/dev/) sit above them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ["origin", "workers"])
def test_production_packages_never_import_storyforge(package):
    modules = sorted((ROOT / package).rglob("*.py"))
    assert modules
    upward = {
        str(path.relative_to(ROOT)): sorted(
            n for n in _imported(path) if n == "storyforge" or n.startswith("storyforge.")
        )
        for path in modules
    }
    assert {k: v for k, v in upward.items() if v} == {}
