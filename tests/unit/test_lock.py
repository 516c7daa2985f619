"""The locks in requirements/ (scripts/lock) against pyproject.toml and the installed
.venv: every entry pinned with hashes; dev.txt exactly the dependency closure of
pyproject's dependencies, its test extra and its build requirements, runtime.txt
exactly that of the dependencies alone, both at the same versions; every range in
pyproject.toml holds its locked version, aiohttp's with an upper bound; and .venv
holds what dev.txt locks (scripts/setup installs nothing else)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEPENDENCIES = [Requirement(r) for r in PROJECT["project"]["dependencies"]]
TEST_EXTRA = [Requirement(r) for r in PROJECT["project"]["optional-dependencies"]["test"]]
BUILD = [Requirement(r) for r in PROJECT["build-system"]["requires"]]
LOCKS = sorted(REQUIREMENTS.rglob("*.txt"))

_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$")
_HASH = re.compile(r"^    --hash=sha256:[0-9a-f]{64}( \\)?$")


def read_lock(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (version, hashes); fails on any line that is not a pinned entry, one of
    its hashes, or a comment."""
    entries: dict[str, tuple[str, frozenset[str]]] = {}
    name = ""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        where = f"{path.relative_to(ROOT)}:{n}"
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        entry = _ENTRY.match(line)
        if entry:
            name = canonicalize_name(entry.group(1))
            assert name not in entries, f"{where}: {name} twice"
            entries[name] = (entry.group(2), frozenset())
            continue
        assert _HASH.match(line) and name, f"{where}: not `name==version \\` or a hash: {line}"
        version, hashes = entries[name]
        entries[name] = (version, hashes | {line.split("sha256:")[1].split()[0]})
    for name, (_, hashes) in entries.items():
        assert hashes, f"{path.relative_to(ROOT)}: {name} has no hash"
    return entries


def closure(roots: list[Requirement]) -> set[str]:
    """The names of every distribution `roots` need on this interpreter, by the metadata
    of the installed distributions (markers evaluated, extras followed)."""
    seen: set[tuple[str, str]] = set()
    todo = [(canonicalize_name(r.name), extra) for r in roots for extra in ("", *r.extras)]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        for text in metadata.distribution(name).requires or ():
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": extra}):
                dep = canonicalize_name(req.name)
                todo += [(dep, e) for e in ("", *req.extras)]
    return {name for name, _ in seen}


@pytest.fixture(scope="module")
def dev() -> dict[str, tuple[str, frozenset[str]]]:
    return read_lock(REQUIREMENTS / "dev.txt")


def test_every_lock_pins_every_entry_with_hashes():
    names = {p.relative_to(REQUIREMENTS).as_posix() for p in LOCKS}
    assert {"dev.txt", "runtime.txt", "build.txt", "tools/uv.txt"} <= names, names
    for path in LOCKS:
        assert read_lock(path), path


def test_dev_lock_is_the_closure_of_dependencies_test_extra_and_build(dev):
    assert set(dev) == closure(DEPENDENCIES + TEST_EXTRA + BUILD)


def test_image_locks_are_subsets_at_the_same_versions(dev):
    runtime = read_lock(REQUIREMENTS / "runtime.txt")
    assert set(runtime) == closure(DEPENDENCIES)
    build = read_lock(REQUIREMENTS / "build.txt")
    assert set(build) == closure(BUILD)
    for name, entry in {**runtime, **build}.items():
        assert entry == dev[name], f"{name}: {entry[0]} in an image lock, {dev[name][0]} in dev"


def test_pyproject_ranges_hold_the_locked_versions(dev):
    for req in DEPENDENCIES + TEST_EXTRA + BUILD:
        version = dev[canonicalize_name(req.name)][0]
        assert req.specifier.contains(version, prereleases=True), f"{req} vs {version}"
    # the fast path uses aiohttp internals (tests/unit/test_fastpath_hooks.py): bounded
    [aiohttp] = [r for r in DEPENDENCIES if r.name == "aiohttp"]
    assert {s.operator for s in aiohttp.specifier} == {">=", "<"}, aiohttp


def test_venv_holds_the_locked_versions(dev):
    for name, (version, _) in dev.items():
        assert metadata.version(name) == version, f"{name}: run scripts/setup"


def test_tool_locks_hold_their_pins():
    for source in sorted((REQUIREMENTS / "tools").glob("*.in")):
        locked = read_lock(source.with_suffix(".txt"))
        for line in source.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                req = Requirement(line)
                assert [s.operator for s in req.specifier] == ["=="], f"{source.name}: {req}"
                version = locked[canonicalize_name(req.name)][0]
                assert req.specifier.contains(version), f"{source.name}: {req} vs {version}"
