"""Reproduce through the real worker of `make run`: the Python client (sync and async), the
command line and the dashboard rerun a model from its record, and the worker says the artifact
is identical."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from pretrainer_client import AsyncClient, Client
from tests.conftest import blobs, to_csv
from tests.integration.chromium import chromium_binary
from tests.integration.test_cli import cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(embedded, tmp_path_factory):
    """A k-means model trained by the real worker, and its dataset's bytes."""
    path = tmp_path_factory.mktemp("reproduce") / "blobs.csv"
    path.write_bytes(to_csv(blobs(150)))
    with Client(embedded.base) as c:
        job = c.train("kmeans", c.upload(path), {"n_clusters": 3})
        return c.model(job.model_id), path.read_bytes()


def test_the_worker_reproduces_a_model_identically(embedded, trained):
    model, content = trained
    record = model.reproducibility
    assert record["dataset"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert record["device"] == "cpu" and set(record["artifact_sha256"]) >= {"estimator.skops"}
    with Client(embedded.base) as c:
        job = c.reproduce(model)
        assert job.kind == "reproduce" and job.source_model_id == model.id
        done = c.follow(job, raise_on_failure=True)
        again = c.model(done.model_id)
    assert done.metrics["identical"] is True and done.metrics["max_abs_diff"] == 0.0
    assert again.reproducibility["artifact_sha256"] == record["artifact_sha256"]
    assert again.id != model.id and again.reproducibility["seed"] == record["seed"]


def test_the_async_client_and_the_command_line_reproduce_too(embedded, trained):
    model, _ = trained

    async def flow():
        async with AsyncClient(embedded.base) as c:
            return await c.follow(await c.reproduce(model.id))
    job = asyncio.run(flow())
    assert job.status == "succeeded" and job.metrics["identical"] is True
    out = json.loads(cli(embedded, "models", "reproduce", model.id, "--follow", "--json").stdout)
    assert out["kind"] == "reproduce" and out["status"] == "succeeded"
    assert out["metrics"]["identical"] is True and out["metrics"]["max_abs_diff"] == 0.0
    gone = cli(embedded, "models", "reproduce", "mdl_nope", check=False)
    assert gone.returncode == 1 and "mdl_nope" in gone.stdout + gone.stderr


@pytest.mark.skipif(chromium_binary() is None,
                    reason="chromium is not installed (apt-get install chromium)")
def test_the_dashboard_shows_the_record_and_its_button_reproduces(embedded, trained, browser):
    model, content = trained
    browser.goto(f"{embedded.base}/ui/#models/{model.id}")
    facts = browser.wait_for(
        "(() => { const r = [...document.querySelectorAll('#reproducibility tbody tr')];"
        " return r.length ? r.map((tr) => [...tr.cells].map((c) => c.textContent)) : null; })()")
    shown = {row[0]: row[1] for row in facts}
    assert shown["dataset sha256"] == hashlib.sha256(content).hexdigest()
    assert shown["estimator.skops"] == model.reproducibility["artifact_sha256"]["estimator.skops"]
    assert shown["seed"] == str(model.reproducibility["seed"])
    browser.evaluate("document.querySelector('#reproduce').click()")
    job_id = browser.wait_for("location.hash.startsWith('#jobs/') ? location.hash.slice(6) : null")
    status = browser.wait_for("(() => { const s = document.querySelector('#job-status');"
                              " return s && ['succeeded', 'failed'].includes(s.textContent)"
                              " ? s.textContent : null; })()", timeout=120)
    assert status == "succeeded"
    job = embedded.http.get(f"/v1/jobs/{job_id}").json()
    assert job["kind"] == "reproduce" and job["metrics"]["identical"] is True
    text = browser.evaluate("document.body.innerText")
    assert "identical" in text and "max_abs_diff" in text
