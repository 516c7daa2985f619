"""The deployment lint tools: hadolint on the Dockerfile, `terraform fmt` and checkov on
infra/. The tools come from .venv-tools/lint (`scripts/setup check`; terraform from
the machine image). What infra/ and the Dockerfile must agree on with the code is
checked in the suite (tests/integration/test_infra.py, test_container.py)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.helpers.tools import (
    CHECKOV,
    HADOLINT,
    NO_TERRAFORM_REASON,
    ROOT,
    missing_tool_reason,
    terraform,
)


@pytest.mark.skipif(terraform() is None, reason=NO_TERRAFORM_REASON)
def test_terraform_fmt_is_clean():
    done = subprocess.run(
        [str(terraform()), "fmt", "-check", "-recursive", "-diff", "infra/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"terraform fmt -check failed:\n{done.stdout}{done.stderr}"


@pytest.mark.skipif(not CHECKOV.exists(), reason=missing_tool_reason(CHECKOV))
def test_checkov_passes_and_every_skip_says_why():
    done = subprocess.run(
        [
            str(CHECKOV),
            "--directory",
            "infra",
            "--framework",
            "terraform",
            "--output",
            "json",
            "--skip-download",  # no network: no guideline download
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert done.stdout.strip(), done.stderr
    report = json.loads(done.stdout)
    results = report.get("results", {})
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for c in results.get("failed_checks", [])
    ]
    assert not failed, "checkov failed:\n" + "\n".join(failed)
    assert not results.get("parsing_errors"), results["parsing_errors"]
    assert report["summary"]["passed"] > 100, report["summary"]
    for check in results.get("skipped_checks", []):
        reason = (check.get("check_result") or {}).get("suppress_comment") or ""
        assert len(reason) >= 20, f"{check['check_id']} on {check['resource']}: no reason given"
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not HADOLINT.exists(), reason=missing_tool_reason(HADOLINT))
def test_hadolint_passes():
    done = subprocess.run(
        [str(HADOLINT), "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
