"""The README's first hour, as a new user meets it: the curl walk-through run as written against
`make run`, and the one-line errors of a busy port and of a database that is not there."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tests.integration.conftest import (
    PG_ADMIN,
    ROOT,
    Service,
    _env,
    _postgres_available,
    free_port,
    make_run,
)

pytestmark = pytest.mark.integration
MARK = "@@block"


def walkthrough_blocks(readme: str) -> list[str]:
    """The fenced sh blocks of the section "Walk-through with curl", in order."""
    section = readme.split("\n## Walk-through with curl\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from make_run(tmp_path_factory.mktemp("readme"))


@pytest.fixture(scope="module")
def outputs(service: Service, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    """Each block's stdout, run in one bash like a user's second terminal, in a fresh folder."""
    blocks = walkthrough_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 5, blocks
    folder = tmp_path_factory.mktemp("user")
    for name in ("Makefile", "pyproject.toml", ".venv"):  # "in the same folder" as `make run`
        (folder / name).symlink_to(ROOT / name)
    script = "set -euo pipefail\n" + "".join(f"echo {MARK} {i}\n{b}" for i, b in enumerate(blocks))
    out = subprocess.run(["bash", "-c", script], cwd=folder, capture_output=True, text=True,
                         timeout=600, env=_env(PRETRAINER_URL=service.base), check=False)
    assert out.returncode == 0, f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    parts = re.split(rf"^{MARK} \d+\n", out.stdout, flags=re.MULTILINE)[1:]
    assert len(parts) == len(blocks), out.stdout
    return parts, folder


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_step_0_writes_every_file_the_readme_uses(outputs):
    _, folder = outputs
    readme = (ROOT / "README.md").read_text()
    demo = {p.name for p in (folder / "demo").iterdir()}
    named = set(re.findall(r"[\w-]+\.(?:csv|zip|png)", readme)) & {
        "blobs.csv", "queries.csv", "digits.zip", "seven.png", "eight.png",
        "digits-unlabelled.zip", "digits-10-per-class.zip"}
    assert named == {"blobs.csv", "queries.csv", "digits.zip", "seven.png", "eight.png",
                     "digits-unlabelled.zip", "digits-10-per-class.zip"}
    assert named <= demo, named - demo
    assert (folder / "demo" / "seven.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_step_1_uploads_and_shows_the_dataset(outputs):
    (ds,) = _json_lines(outputs[0][1])
    assert ds["id"].startswith("ds_") and ds["kind"] == "tabular" and ds["format"] == "csv"
    assert ds["n_rows"] == 300 and ds["columns"] == ["a", "b", "c", "d"]


def test_step_2_lists_the_params(outputs):
    (alg,) = _json_lines(outputs[0][2])
    assert alg["name"] == "kmeans" and "n_clusters" in alg["params"]


def test_step_3_captures_the_job_id(outputs):
    assert re.fullmatch(r"job_\w+\n", outputs[0][3])


def test_step_4_waits_until_the_job_succeeded(outputs):
    (job,) = _json_lines(outputs[0][4])
    assert job["status"] == "succeeded" and job["model_id"].startswith("mdl_")
    assert job["silhouette"] > 0.7  # three well-separated blobs


def test_step_5_predictions_and_embeddings_are_scikit_learns(outputs):
    parts, folder = outputs
    predicted, embedded = _json_lines(parts[5])
    x = np.loadtxt(folder / "demo" / "blobs.csv", delimiter=",", skiprows=1)
    queries = np.loadtxt(folder / "demo" / "queries.csv", delimiter=",", skiprows=1, ndmin=2)
    # the job's defaults: standardised rows, then scikit-learn's KMeans
    reference = make_pipeline(StandardScaler(), KMeans(n_clusters=3, random_state=0, n_init="auto")).fit(x)
    assert predicted["predictions"] == reference.predict(queries).tolist()
    np.testing.assert_allclose(embedded["embeddings"],
                               reference.transform([[1.0, 4.2, -2.0, 3.3]]), rtol=1e-6)


# --- the one-line errors -------------------------------------------------------------------

def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_a_busy_port_is_one_line_naming_pretrainer_port(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = subprocess.run(["make", "--no-print-directory", "run"], cwd=ROOT, timeout=180,
                             capture_output=True, text=True,
                             env=_env(PRETRAINER_PORT=str(port),
                                      PRETRAINER_DATA_DIR=str(tmp_path / "data")), check=False)
    assert out.returncode != 0
    (line,) = _error_lines(out.stderr)
    assert f"127.0.0.1:{port}" in line and "PRETRAINER_PORT" in line, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "exited with" not in out.stderr


def _pretrainer(command: str, tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "pretrainer"), command],
                          capture_output=True, text=True, timeout=120,
                          env=_env(PRETRAINER_DATA_DIR=str(tmp_path / "data"),
                                   PRETRAINER_PORT=str(free_port()),
                                   PRETRAINER_DATABASE_URL=url), check=False)


def test_a_missing_database_is_one_line_naming_createdb(tmp_path):
    if reason := _postgres_available():
        pytest.skip(reason)
    url = PG_ADMIN.rsplit("/", 1)[0] + "/pretrainer_absent_db"
    started = time.monotonic()
    out = _pretrainer("up", tmp_path, url)
    assert out.returncode == 2 and time.monotonic() - started < 60
    (line,) = _error_lines(out.stderr)
    assert "'pretrainer_absent_db' does not exist" in line and "createdb" in line, out.stderr
    assert "Traceback" not in out.stderr


def test_an_unreachable_database_is_one_line_that_names_it(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _pretrainer("migrate", tmp_path,
                      f"postgresql+psycopg://app:s3cret@127.0.0.1:{port}/pretrainer")
    assert out.returncode == 2
    (line,) = _error_lines(out.stderr)
    assert f"127.0.0.1:{port}" in line and "PRETRAINER_DATABASE_URL" in line, out.stderr
    assert "s3cret" not in out.stderr and "Traceback" not in out.stderr


def test_jq_and_curl_are_what_the_walkthrough_needs():
    # The walk-through says it needs curl and jq; fail loudly rather than skip if CI lacks them.
    assert shutil.which("curl") and shutil.which("jq")
