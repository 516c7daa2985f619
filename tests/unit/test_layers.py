"""The layers of docs/ARCHITECTURE.md, checked on the code: every module of core/,
origin/, workers/ and storyforge/ has a rank, and a module imports only modules of
its own rank or lower; core imports neither origin nor workers, origin and workers
never import each other, and a route module never imports another route module.
Imports made only for type checking (`if TYPE_CHECKING:`) are not counted."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "origin", "workers", "storyforge", "migrations")

# Lowest first: (module prefix, rank); the longest matching prefix gives the rank.
# core: pure rules (no I/O) under everything else of core.
CORE_PURE = (
    "backoff cachetags captions conditional exportplan ffargs framerate invalidation layout orphans playlists "
    "settings signing webhooks"
).split()
RANKS: list[tuple[str, float]] = [
    ("migrations", 0.0),
    *[(f"core.{name}", 0.0) for name in CORE_PURE],
    ("core", 1.0),
    # workers: media (argument lists, ffmpeg runs) < the loop < jobs < the process
    ("workers.media", 2.0),
    ("workers.runtime.metrics", 2.0),  # a leaf: what the worker counts, ffmpeg runs report
    ("workers.runtime", 2.5),
    ("workers.jobs", 3.0),
    ("workers.runtime.main", 4.0),
    ("workers", 4.0),
    # origin: keys < HTTP layer < domain services < routes < app < server
    ("origin.keys", 2.0),
    ("origin.http", 2.5),
    ("origin.assets", 3.0),
    ("origin.captions", 3.0),
    ("origin.exports", 3.0),
    ("origin.ingest", 3.0),
    ("origin.lifecycle", 3.0),
    ("origin.playback", 3.0),
    ("origin.health", 3.5),
    ("origin.app", 4.0),
    ("origin.server", 4.5),
    ("origin", 4.5),
    ("storyforge", 5.0),
]
DOMAINS = ("assets", "captions", "exports", "ingest", "lifecycle", "playback")


def rank(module: str) -> float | None:
    if module.startswith("origin.") and module.removeprefix("origin.") in DOMAINS:
        return 3.5  # a domain's package: its add_routes, over its route modules
    best: tuple[int, float] | None = None
    for prefix, value in RANKS:
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > best[0]:
                best = (len(prefix), value)
    return None if best is None else best[1]


def is_route_module(module: str) -> bool:
    """A domain's route table (`origin.<domain>.routes`) or origin.health."""
    parts = module.split(".")
    return module == "origin.health" or (
        len(parts) == 3 and parts[0] == "origin" and parts[1] in DOMAINS and parts[2] == "routes"
    )


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(tree: ast.AST) -> set[str]:
    """Names imported at run time (`from x import y` gives x.y: the module x.y, or the
    name y of module x)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[dotted.removesuffix(".__init__")] = path
    return found


def ours(target: str, known: dict[str, Path]) -> str | None:
    """`target` as one of our modules (a name imported from a module is that module)."""
    while target:
        if target in known:
            return target
        target = target.rpartition(".")[0]
    return None


def violations(module: str, targets: set[str], known: dict[str, Path]) -> list[str]:
    wrong = []
    top = module.split(".")[0]
    for raw in sorted(targets):
        target = ours(raw, known)
        if target is None or target == module:
            continue
        there = target.split(".")[0]
        mine, theirs = rank(module), rank(target)
        assert mine is not None and theirs is not None, (module, target)
        if top == "core" and there not in ("core", "migrations"):
            wrong.append(f"{module} imports {target}: core imports only core")
        elif {top, there} == {"origin", "workers"}:
            wrong.append(f"{module} imports {target}: origin and workers never import each other")
        elif is_route_module(module) and is_route_module(target):
            wrong.append(f"{module} imports {target}: route modules never import each other")
        elif theirs > mine:
            wrong.append(f"{module} imports {target}: upward ({mine} < {theirs})")
    return wrong


def test_every_module_has_a_rank():
    assert [m for m in modules() if rank(m) is None] == []


def test_no_module_imports_against_the_layers():
    known = modules()
    wrong: list[str] = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        wrong += violations(module, imports(tree), known)
    assert not wrong, "\n".join(wrong)


def test_no_two_modules_of_origin_share_a_name():
    """`routes` is every domain's route table; any other name means one module."""
    names: dict[str, list[str]] = {}
    for module in modules():
        leaf = module.rpartition(".")[2]
        if module.startswith("origin.") and leaf != "routes" and module.count(".") >= 1:
            if module.split(".")[1] not in DOMAINS or module.count(".") == 2:
                names.setdefault(leaf, []).append(module)
    assert {k: v for k, v in names.items() if len(v) > 1} == {}


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("core.catalog", "from origin import keys", "core imports only core"),
        ("core.layout", "from core import db", "upward"),
        ("workers.jobs.export", "from origin.exports import routes", "never import each other"),
        ("origin.playback.routes", "from origin.exports import routes", "route modules"),
        ("origin.http.auth", "from origin.playback import caches", "upward"),
        ("origin.keys", "if TYPE_CHECKING:\n    from origin.playback import caches", None),
        ("origin.playback.routes", "from core import catalog", None),
    ],
)
def test_the_rules_catch_what_they_name(module, source, expected):
    found = violations(module, imports(ast.parse(source)), modules())
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0], found
