"""The distribution as it is installed: a wheel built from this checkout as the image
builds it, installed into a fresh virtualenv outside it with the wheels of
requirements/runtime.txt only (as the image installs them: no index, no resolving,
`pip check`), runs `storyforge migrate` against an empty database and `storyforge
serve` until /readyz, /player/{scene} and the page's hls.js answer; and the editable
install finds the same package data in the checkout.

The runtime lock's wheels are fetched hash-checked (pip's cache makes a second run
local). For the editable install, third-party dependencies come from this interpreter's
site-packages through a `.pth` file; the product code imported is the one installed
there, which the tests check."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.helpers.services import free_port

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "wheel-test-token-0123456789"
PACKAGES = ("core", "origin", "workers", "storyforge", "migrations")


def _pip(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        cwd=cwd,
        env=_clean_env(),  # with the checkout on PYTHONPATH, pip would see it installed
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _venv(path: Path, *install: str, our_dependencies: bool = True) -> Path:
    """A virtualenv without pip, with `pip install --no-deps INSTALL...` done. With
    `our_dependencies`, its third-party packages are then this interpreter's (added
    after the install, so pip never sees this interpreter's own storyforge-origin);
    without, INSTALL must bring them, and `pip check` proves that it does."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    _pip("--python", str(python), "install", "-q", "--no-deps", *install, cwd=path.parent)
    if not our_dependencies:
        _pip("--python", str(python), "check", cwd=path.parent)
        return python
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = sysconfig.get_paths()
    (Path(site) / "_storyforge_test_deps.pth").write_text(
        "\n".join(sorted({ours["purelib"], ours["platlib"]})) + "\n"
    )
    return python


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return {**env, **extra}


def _where(python: Path, cwd: Path) -> dict[str, str]:
    """Where the installed interpreter finds our packages and their data."""
    code = (
        "import json, origin, workers, storyforge.dev, core.db as db, "
        "origin.playback.player as p; print(json.dumps({"
        "'origin': origin.__file__, 'workers': workers.__file__, "
        "'dev': storyforge.dev.__file__, 'migrations': str(db.MIGRATIONS_DIR), "
        "'count': str(len(db.load_migrations())), "
        "'hls': str(p._STATIC['hls.min.js'][0]), "
        "'hls_found': str(p._STATIC['hls.min.js'][0].is_file())}))"
    )
    done = subprocess.run(
        [str(python), "-c", code], cwd=cwd, env=_clean_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _get(url: str, **kw) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, **kw)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _fresh_clone(dest: Path) -> list[str]:
    """The checkout's files as git sees them (tracked, or untracked and not ignored) and
    its node_modules: a clone after `npm ci`, without the build/ a previous build left
    (setuptools would ship stale modules from it). Returns the relative paths copied."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    copied = []
    for name in sorted({os.fsdecode(n) for n in listed if n}):
        if (ROOT / name).is_file() and not (ROOT / name).is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
            copied.append(name)
    (dest / "node_modules").symlink_to((ROOT / "node_modules").resolve())
    return copied


@pytest.mark.slow
def test_wheel_installs_migrates_and_serves(fresh_db, tmp_path):
    assert not tmp_path.is_relative_to(ROOT)
    source = tmp_path / "checkout"
    files = _fresh_clone(source)
    wheelhouse = tmp_path / "wheels"
    # as the image's build stage: the runtime lock's wheels, hash-checked, then the
    # project's wheel by the locked setuptools this interpreter has (requirements/dev.txt
    # holds build.txt's version), without its dependencies
    lock = source / "requirements" / "runtime.txt"
    _pip(
        "wheel",
        "-q",
        "--require-hashes",
        "-w",
        str(wheelhouse / "deps"),
        "-r",
        str(lock),
        cwd=source,
    )
    _pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheelhouse), ".", cwd=source)
    (wheel,) = wheelhouse.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        shipped_hlsjs = zf.read("origin/playback/static/vendor/hls.js/hls.min.js")
    assert shipped_hlsjs == (ROOT / "node_modules/hls.js/dist/hls.min.js").read_bytes()
    # every module of the packages, subpackages included, and nothing else
    modules = {f for f in files if f.endswith(".py") and f.split("/")[0] in PACKAGES}
    assert {n for n in names if n.endswith(".py")} == modules
    migrations = sorted(f for f in files if f.startswith("migrations/") and f.endswith(".sql"))
    data = {
        *(
            f
            for f in files
            if f.startswith(("migrations/", "core/sql/", "origin/playback/static/"))
            and not f.endswith(".py")
        ),
        "origin/playback/static/vendor/hls.js/hls.min.js",
        "origin/playback/static/vendor/hls.js/LICENSE",
    }
    assert {n for n in names if not n.endswith(".py") and ".dist-info/" not in n} == data

    deps = sorted(str(w) for w in (wheelhouse / "deps").glob("*.whl"))
    assert len(deps) == len(re.findall(r"(?m)^[A-Za-z0-9]", lock.read_text()))
    python = _venv(tmp_path / "venv", "--no-index", *deps, str(wheel), our_dependencies=False)
    where = _where(python, tmp_path)
    venv = str(tmp_path / "venv")
    for key in ("origin", "workers", "dev", "migrations", "hls"):
        assert where[key].startswith(venv + "/"), where
    assert where["count"] == str(len(migrations)) != "0"

    storyforge = tmp_path / "venv" / "bin" / "storyforge"
    env = _clean_env(
        DATABASE_URL=fresh_db,
        STORAGE="local",
        STORAGE_ROOT=str(tmp_path / "storage"),
        HOST="127.0.0.1",
        PORT=str(free_port()),
        API_TOKENS=TOKEN,
        LOG_FORMAT="text",
    )
    migrate = subprocess.run(
        [str(storyforge), "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert migrate.returncode == 0, migrate.stderr
    assert migrate.stdout == "applied: " + ", ".join(Path(m).name for m in migrations) + "\n"

    base = f"http://127.0.0.1:{env['PORT']}"
    serve = subprocess.Popen(
        [str(storyforge), "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert serve.poll() is None, serve.communicate()[1]
            try:
                if _get(base + "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "no /readyz 200 within 60 s"
            time.sleep(0.2)
        status, _, body = _get(
            base + "/api/v1/scenes",
            data=json.dumps({"title": "from the wheel"}).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            method="POST",
        )
        assert status == 201, body
        scene = json.loads(body)["id"]
        status, _, page = _get(f"{base}/player/{scene}")
        assert status == 200 and b"from the wheel" in page
        # every script of the page is served from the wheel: hls.js as the lock has it,
        # and the page's own (the captions fix for hls.js, the player)
        scripts = re.findall(rb'<script src="([^"]*)"', page)
        hlsjs = [s for s in scripts if s.endswith(b"/hls.min.js")]
        assert len(hlsjs) == 1 and len(scripts) > 1, page
        for src in scripts:
            status, headers, script = _get(base + src.decode())
            assert status == 200, src
            assert headers["Content-Type"].startswith("text/javascript"), src
            assert script == shipped_hlsjs if src in hlsjs else script, src
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()


@pytest.mark.slow
def test_editable_install_finds_package_data_in_the_checkout(tmp_path):
    python = _venv(tmp_path / "venv", "-e", str(ROOT))
    where = _where(python, tmp_path)
    assert where["origin"] == str(ROOT / "origin" / "__init__.py")
    assert where["migrations"] == str(ROOT / "migrations")
    assert where["count"] == str(len(list((ROOT / "migrations").glob("*.sql"))))
    hls = ROOT / "origin" / "playback" / "static" / "vendor" / "hls.js" / "hls.min.js"
    assert where["hls"] == str(hls)
    assert where["hls_found"] == "True"
