"""Fixtures shared by every test package: small datasets made here, and an API on a temp dir."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.datasets import make_blobs

from app.config import Settings
from app.db.migrate import upgrade
from app.main import create_app


def blobs(n: int = 300, d: int = 4, centers: int = 3, seed: int = 0) -> np.ndarray:
    """Well-separated clusters, the data every clustering test starts from."""
    x, _ = make_blobs(n_samples=n, n_features=d, centers=centers, random_state=seed)
    return x


def to_csv(x: np.ndarray, names: list[str] | None = None) -> bytes:
    """A CSV with a header row (columns a, b, c… unless named)."""
    names = names or [chr(ord("a") + i) for i in range(x.shape[1])]
    buf = io.StringIO()
    buf.write(",".join(names) + "\n")
    np.savetxt(buf, x, delimiter=",", fmt="%.17g")
    return buf.getvalue().encode()


def small_pngs_zip(n: int = 40) -> bytes:
    """A ZIP of n random 8x8 grey PNGs: a small unlabelled image dataset."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(n):
            png = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(png, "PNG")
            z.writestr(f"{i:03}.png", png.getvalue())
    return buf.getvalue()

@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded-default settings in a fresh data dir, migrated."""
    s = Settings(data_dir=tmp_path / "data")
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    return s


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The API in-process; jobs are queued on the filesystem broker with no worker to take them."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def blobs_csv() -> bytes:
    return to_csv(blobs())


def upload(client: TestClient, content: bytes, filename: str = "data.csv", **data: str) -> dict:
    """POST /v1/datasets and return the JSON (asserting nothing about the status)."""
    r = client.post("/v1/datasets", files={"file": (filename, content)}, data=data)
    return {"status": r.status_code, "body": r.json(), "headers": dict(r.headers)}


def finished(client: TestClient, settings: Settings, response, headers: dict | None = None) -> dict:
    """Run the job a 202 response queued, in this process as a worker would; the job as
    GET /v1/jobs/{id} shows it then, whatever its status."""
    from app.runner import run_job  # not at import: most tests never run a job

    assert response.status_code == 202, response.json()
    run_job(response.json()["id"], settings=settings, worker="test")
    return client.get(f"/v1/jobs/{response.json()['id']}", headers=headers).json()


def run_in_process(client: TestClient, settings: Settings, body: dict,
                   headers: dict | None = None) -> dict:
    """POST /v1/jobs with body and run the job in this process: the job as GET shows it after."""
    return finished(client, settings, client.post("/v1/jobs", json=body, headers=headers), headers)


def trained(client: TestClient, settings: Settings, content: bytes, filename: str,
            algorithm: str, params: dict, **job: object) -> tuple[str, str]:
    """Upload content and train a job on it in this process: (model id, dataset id); the job
    must succeed."""
    ds = upload(client, content, filename)["body"]["id"]
    done = run_in_process(client, settings, {"dataset_id": ds, "algorithm": algorithm,
                                             "params": params, **job})
    assert done["status"] == "succeeded", done
    return done["model_id"], ds


def read_events(http, job_id: str, resource: str = "jobs", **kwargs) -> list[tuple[str, dict]]:
    """Follow GET /v1/{resource}/{id}/events (a job's, or a sweep's) to its end; return
    (event, data) pairs."""
    import json

    events, event = [], None
    with http.stream("GET", f"/v1/{resource}/{job_id}/events", **kwargs) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
    return events
