"""The container image (Dockerfile, .dockerignore, docker/healthcheck.py), checked
without a container engine (hadolint runs in scripts/check): the commands against the
real `storyforge` argument parser, COPY sources against the repository and the build
context, the build stage against what pyproject.toml packages and requirements/ locks,
the runtime user, and the health check script against a live HTTP server."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.settings import Settings
from storyforge.cli import _parser
from tests.helpers.services import free_port, wait_port
from tests.helpers.tools import ROOT

DOCKERFILE = ROOT / "Dockerfile"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
PRODUCTION_COMMANDS = ("serve", "worker", "migrate")


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages and their instructions; continuation lines joined, comments dropped."""
    stages: list[Stage] = []
    pending = ""
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        ins = Instruction(keyword.upper(), args.strip(), start)
        if ins.keyword == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", ins.args, re.I)
            assert m, f"line {n}: cannot read FROM {ins.args}"
            stages.append(Stage(m.group(2) or str(len(stages)), m.group(1)))
        else:
            assert stages, f"line {n}: {keyword} before FROM"
            stages[-1].instructions.append(ins)
    return stages


def flags_and_words(args: str) -> tuple[dict[str, str], list[str]]:
    flags: dict[str, str] = {}
    words = shlex.split(args)
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, words


def exec_form(args: str) -> list[str]:
    import json

    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


# --------------------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    return re.compile(out)


def dockerignored(relpath: str, patterns: list[str]) -> bool:
    """Docker's rules: patterns in order, the last match wins, `!` re-includes, and a
    pattern that matches a directory matches everything below it."""
    parts = relpath.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = os.path.normpath(raw[1:] if negate else raw).lstrip("/")
        regex = _pattern_regex(pattern)
        if any(regex.fullmatch(c) for c in candidates):
            ignored = not negate
    return ignored


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_dockerignore_matcher_follows_dockers_rules():
    patterns = ["**", "!origin/", "**/__pycache__"]
    assert dockerignored(".venv/bin/python", patterns)
    assert not dockerignored("origin/app.py", patterns)
    assert dockerignored("origin/__pycache__/app.cpython-311.pyc", patterns)
    assert dockerignored("node_modules/hls.js/package.json", ["node_modules"])


# --------------------------------------------------------------------------- tests


def test_entrypoint_and_cmd_name_real_commands(stages):
    runtime = stages[-1]
    [entrypoint] = runtime.all("ENTRYPOINT")
    [cmd] = runtime.all("CMD")
    assert exec_form(entrypoint.args) == ["storyforge"]
    argv = exec_form(cmd.args)
    try:
        args = _parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"CMD {argv} is not a `storyforge` command")
    assert args.command in PRODUCTION_COMMANDS
    # the commands the image is meant to run all exist (`storyforge --help`)
    help_text = subprocess.run(
        [sys.executable, "-m", "storyforge.cli", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    if "usage:" not in help_text:  # no __main__ guard: ask the parser itself
        help_text = _parser().format_help()
    for command in PRODUCTION_COMMANDS:
        assert re.search(rf"^\s+{command}\s", help_text, re.M), command
        _parser().parse_args([command])


def test_copy_sources_exist_in_the_repository_and_the_build_context(stages):
    patterns = dockerignore_patterns()
    names = [s.name for s in stages]
    checked = 0
    for index, stage in enumerate(stages):
        earlier = names[:index]
        for ins in stage.instructions:
            if ins.keyword == "ADD":
                pytest.fail(f"line {ins.line}: use COPY (ADD fetches URLs and unpacks)")
            if ins.keyword == "RUN":
                for source in re.findall(r"--mount=\S*\bfrom=([\w.-]+)", ins.args):
                    assert source in earlier, f"line {ins.line}: no earlier stage {source}"
            if ins.keyword != "COPY":
                continue
            flags, words = flags_and_words(ins.args)
            sources = words[:-1]
            assert sources, f"line {ins.line}: COPY without a source"
            if "from" in flags:
                producer = flags["from"]
                assert producer in earlier, f"line {ins.line}: no earlier stage {producer}"
                made = " ".join(i.args for i in stages[names.index(producer)].instructions).replace(
                    "npm ci", "npm ci node_modules"
                )
                for source in sources:
                    base = Path(source.rstrip("/")).name
                    assert base in made, f"line {ins.line}: stage {producer} makes no {source}"
                continue
            for source in sources:
                path = ROOT / source
                assert path.exists(), f"line {ins.line}: COPY {source}: not in the repository"
                files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
                for f in files:
                    rel = f.relative_to(ROOT).as_posix()
                    if "__pycache__" in rel or rel.endswith(".pyc"):
                        continue
                    assert not dockerignored(rel, patterns), (
                        f"line {ins.line}: {rel} is excluded by .dockerignore"
                    )
                    checked += 1
    assert checked > 20


def _builds_the_checkout(ins: Instruction) -> bool:
    """A RUN that builds the project's wheel: `pip wheel ... .`."""
    return ins.keyword == "RUN" and re.search(r"\bpip wheel\b[^&]*\s\.(\s|$)", ins.args) is not None


def test_build_stage_has_what_the_wheel_needs(stages):
    """Everything pyproject.toml packages is copied in before the project's `pip wheel`,
    and so is node_modules (the build copies hls.min.js from it into package data)."""
    build = next(s for s in stages if any(_builds_the_checkout(i) for i in s.instructions))
    wheel_at = next(i.line for i in build.instructions if _builds_the_checkout(i))
    copied: set[str] = set()
    for ins in build.all("COPY"):
        if ins.line > wheel_at:
            continue
        flags, words = flags_and_words(ins.args)
        for source in words[:-1]:
            copied.add(Path(source.rstrip("/")).name)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", "node_modules"}
    readme = project["project"].get("readme")
    if isinstance(readme, str):
        needed.add(readme)
    setuptools = project.get("tool", {}).get("setuptools", {})
    packages = setuptools.get("packages", [])
    if isinstance(packages, dict):  # [tool.setuptools.packages.find]: include patterns
        packages = [p.rstrip("*") for p in packages.get("find", {}).get("include", [])]
    needed |= {p.split(".")[0] for p in packages}
    needed |= {d.split("/")[0] for d in setuptools.get("package-dir", {}).values() if d}
    build_system = project["build-system"]
    if build_system.get("backend-path"):  # an in-tree build backend (it copies hls.js?)
        top = build_system["build-backend"].split(".")[0].split(":")[0]
        needed.add(f"{top}.py" if (ROOT / f"{top}.py").is_file() else top)
    needed |= {n for n in ("setup.py", "setup.cfg", "MANIFEST.in") if (ROOT / n).exists()}
    assert needed <= copied, f"not copied before `pip wheel`: {sorted(needed - copied)}"
    # the runtime installs the project's wheel by its file name
    wheel = re.sub(r"[-_.]+", "_", project["project"]["name"]).lower()
    assert any(f"/{wheel}-*.whl" in i.args for i in stages[-1].all("RUN")), wheel
    npm = next(s for s in stages if any("npm ci" in i.args for i in s.all("RUN")))
    npm_copied = {w for i in npm.all("COPY") for w in flags_and_words(i.args)[1][:-1]}
    assert {"package.json", "package-lock.json"} <= npm_copied


def test_the_image_installs_the_locks_only(stages):
    """The build stage fetches only what requirements/ locks, hash-checked: the build
    backend from build.txt, the dependencies' wheels from runtime.txt; the project's
    wheel is built without build isolation (which would fetch an unlocked setuptools)
    and without its dependencies. The runtime installs those wheels and nothing else."""
    build = next(s for s in stages if any(_builds_the_checkout(i) for i in s.instructions))
    pip = re.compile(r"\bpip (install|wheel|download)\b")
    commands = [c.strip() for i in build.all("RUN") for c in i.args.split("&&") if pip.search(c)]
    for lock in ("requirements/build.txt", "requirements/runtime.txt"):
        assert (ROOT / lock).is_file(), lock
        assert any(f"-r {lock}" in c and "--require-hashes" in c for c in commands), lock
    for command in commands:
        locked = "--require-hashes" in command
        project = "--no-deps" in command and "--no-build-isolation" in command
        assert locked or project, f"an unlocked pip command: {command}"
    installs = [i.args for i in stages[-1].all("RUN") if re.search(r"\bpip install\b", i.args)]
    assert installs, "the runtime installs no wheels"
    for run in installs:
        assert "--no-index" in run and "--no-deps" in run and "pip check" in run, run


def test_runtime_runs_as_a_non_root_user_with_ffmpeg(stages):
    runtime = stages[-1]
    assert re.fullmatch(r"python:3\.1[1-9]-slim-\w+", runtime.base), runtime.base
    users = runtime.all("USER")
    assert users, "the runtime stage sets no USER (it would run as root)"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), user
    assert any("apt-get install" in i.args and " ffmpeg" in i.args for i in runtime.all("RUN"))
    [stop] = runtime.all("STOPSIGNAL")
    assert stop.args == "SIGTERM"
    # HEALTHCHECK: the copied script, which asks /healthz
    [health] = runtime.all("HEALTHCHECK")
    command = exec_form(health.args.split("CMD", 1)[1].strip())
    assert command == ["storyforge-healthcheck"]
    installs = [flags_and_words(i.args)[1] for i in runtime.all("COPY") if "--from" not in i.args]
    assert ["docker/healthcheck.py", "/usr/local/bin/storyforge-healthcheck"] in installs
    assert "/healthz" in HEALTHCHECK.read_text()
    # the port it listens on is the one it exposes
    env = " ".join(i.args for i in runtime.all("ENV"))
    port = re.search(r"\bPORT=(\d+)", env)
    assert port and re.search(r"\bHOST=0\.0\.0\.0\b", env)
    [expose] = runtime.all("EXPOSE")
    assert expose.args == port.group(1) == str(Settings().port)


FAKE_SERVE = """
import http.server, os
status = int(os.environ["FAKE_STATUS"])

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the check reads /proc")
@pytest.mark.parametrize("status,healthy", [(200, True), (503, False)])
def test_healthcheck_asks_a_running_serve_for_healthz(tmp_path, status, healthy):
    fake = tmp_path / "storyforge"  # so its command line reads `... storyforge serve`
    fake.write_text(FAKE_SERVE)
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "0.0.0.0", "FAKE_STATUS": str(status)}
    server = subprocess.Popen([sys.executable, str(fake), "serve"], env=env)
    try:
        wait_port(port)
        done = subprocess.run(
            [sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, text=True, timeout=30
        )
        assert (done.returncode == 0) == healthy, done.stderr
    finally:
        server.terminate()
        server.wait(10)
