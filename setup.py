"""Build hook: ships hls.js, the player page's script, as package data.

`build_py` (run by `pip wheel .`, `pip install .` and `pip install -e .`) first copies
the npm package's build, `node_modules/hls.js/dist/hls.min.js`, and its LICENSE into
`origin/playback/static/vendor/hls.js/` (git-ignored, never committed), where package data picks
them up. Run `npm ci` first (scripts/setup does): without hls.js the build stops.
Everything else about the distribution is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
NPM_PACKAGE = ROOT / "node_modules" / "hls.js"
VENDOR_DIR = ROOT / "origin" / "playback" / "static" / "vendor" / "hls.js"
VENDORED = {"dist/hls.min.js": "hls.min.js", "LICENSE": "LICENSE"}  # npm path -> ours


def vendor_hlsjs() -> None:
    """Copy hls.js from node_modules; an sdist, which has no node_modules, carries the
    copies already."""
    if all((NPM_PACKAGE / src).is_file() for src in VENDORED):
        VENDOR_DIR.mkdir(parents=True, exist_ok=True)
        for src, dst in VENDORED.items():
            shutil.copyfile(NPM_PACKAGE / src, VENDOR_DIR / dst)
    elif not all((VENDOR_DIR / dst).is_file() for dst in VENDORED.values()):
        raise SystemExit(
            f"storyforge-origin build: hls.js not found in {NPM_PACKAGE}: "
            "install the npm packages first (npm ci, or scripts/setup)"
        )


class BuildPyWithHlsJs(build_py):
    def finalize_options(self) -> None:
        # before package data is collected (build_py lists it lazily, after this)
        vendor_hlsjs()
        super().finalize_options()


setup(cmdclass={"build_py": BuildPyWithHlsJs})
