"""The generated Postman collection, played by newman against `make run`: every request's
assertions pass (upload → train → poll → predict, embed, generate → plots → downloads → delete)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from app import postman
from tests.integration.conftest import ROOT, Service

pytestmark = pytest.mark.integration

# Where `.ci/run` (and this test, when npm is there) installs newman when none is on PATH.
LOCAL = ROOT / ".tools" / "newman"
NEWMAN_VERSION = "6"


def newman() -> str:
    """The newman executable: on PATH, in .tools/, or installed there now from npm."""
    found = shutil.which("newman") or (LOCAL / "node_modules" / ".bin" / "newman")
    if isinstance(found, str) or found.exists():
        return str(found)
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("newman needs Node.js and npm, and neither newman nor npm is installed")
    run = subprocess.run(["npm", "install", "--prefix", str(LOCAL), "--no-audit", "--no-fund",
                          f"newman@{NEWMAN_VERSION}"], capture_output=True, text=True, timeout=600,
                         check=False)
    if run.returncode != 0 or not (LOCAL / "node_modules" / ".bin" / "newman").exists():
        pytest.skip(f"newman could not be installed from npm: {run.stderr.strip()[-500:]}")
    return str(LOCAL / "node_modules" / ".bin" / "newman")


def test_the_collection_runs_end_to_end_under_newman(embedded: Service, tmp_path: Path) -> None:
    report = tmp_path / "newman.json"
    run = subprocess.run(
        [newman(), "run", str(ROOT / "postman" / postman.COLLECTION_FILE),
         "-e", str(ROOT / "postman" / postman.ENVIRONMENT_FILE),
         "--env-var", f"baseUrl={embedded.base}", "--reporters", "cli,json",
         "--reporter-json-export", str(report), "--color", "off", "--timeout-request", "60000"],
        capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    stats = json.loads(report.read_text())["run"]["stats"]
    assert stats["assertions"]["failed"] == 0 and stats["requests"]["failed"] == 0
    executions = json.loads(report.read_text())["run"]["executions"]
    names = [e["item"]["name"] for e in executions]
    # Every operation ran, each asserted something, and the deletes ran last.
    assert stats["assertions"]["total"] >= 2 * len(set(names))
    assert names[-3:] == ["Delete Model", "Delete Dataset", "Delete Webhook"]
    for name in ("Predict", "Embed", "Generate", "Download Dataset", "Model Plot"):
        assert name in names
