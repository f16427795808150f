"""The dashboard in real headless Chromium against `make run`: upload, train, live curve, serve."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest

from pretrainer_client import Client
from tests.conftest import blobs, to_csv
from tests.integration.chromium import Browser, chromium_binary

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(chromium_binary() is None,
                                 reason="chromium is not installed (apt-get install chromium)")]
EPOCHS = 20  # a few seconds even on an idle machine: the page polls the stream 4x/s
PNG = b"\x89PNG\r\n\x1a\n"


def _click(browser: Browser, selector: str) -> None:
    browser.evaluate(f"document.querySelector({selector!r}).click()")


def _choose(browser: Browser, selector: str, value: str) -> None:
    browser.evaluate(f"(() => {{ const e = document.querySelector({selector!r}); e.value = {value!r};"
                     " e.dispatchEvent(new Event('change')); })()")


def test_a_job_started_from_the_dashboard_draws_its_loss_curve_live(embedded, browser, tmp_path):
    rng = np.random.default_rng(0)
    rows = tmp_path / "sensors.csv"
    rows.write_bytes(to_csv(rng.normal(size=(2000, 8))))
    browser.goto(f"{embedded.base}/ui/")
    browser.wait_for("!!document.querySelector('#upload-file')")

    # Upload through the page's file input, as a user would.
    browser.set_files("#upload-file", [rows])
    _choose(browser, "#upload-name", "sensors from the browser")
    _click(browser, "#upload-btn")
    notice = browser.wait_for("document.querySelector('#notice.ok')?.textContent", timeout=60)
    assert "uploaded sensors from the browser: 2000 rows" in notice
    dataset_id = notice.rsplit("(", 1)[1].rstrip(")")
    assert browser.wait_for(f"!!document.querySelector('[data-dataset-id=\"{dataset_id}\"]')")

    # Train an autoencoder from the form: the params come from the algorithm's schema.
    browser.evaluate(f"location.hash = 'train/{dataset_id}'")
    browser.wait_for("!!document.querySelector('#train-algorithm option[value=autoencoder]')")
    _choose(browser, "#train-algorithm", "autoencoder")
    browser.wait_for("!!document.querySelector('#param-epochs')")
    _choose(browser, "#param-epochs", str(EPOCHS))
    _choose(browser, "#param-batch_size", "16")
    _choose(browser, "#param-hidden_dims", "[32]")
    _click(browser, "#train-submit")
    job_id = browser.wait_for("location.hash.startsWith('#jobs/job_') && location.hash.slice(6)")

    # The curve gains points while the job runs, from the event stream alone (no reload).
    seen: list[int] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = browser.evaluate("[document.querySelector('#job-status')?.textContent, "
                                 "Number(document.querySelector('#loss-chart')?.dataset.points)]")
        status, points = state
        if status == "running" and (not seen or points != seen[-1]):
            seen.append(points)
        if status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.1)
    assert status == "succeeded", browser.evaluate("document.body.innerText")
    # At least one partial curve was on the page while the job ran (how many the page shows
    # depends on the machine's speed: a fast one trains several epochs between two looks).
    growing = [p for p in seen if 0 < p < EPOCHS]
    assert growing and growing == sorted(growing), seen
    assert browser.evaluate("Number(document.querySelector('#loss-chart').dataset.points)") == EPOCHS
    assert browser.evaluate("document.querySelectorAll('#loss-chart polyline.curve').length") == 2
    shot = browser.screenshot(tmp_path / "job.png")
    assert shot.startswith(PNG) and len(shot) > 10_000

    # The model it made: metrics, its embedding picture, and a prediction from the page.
    _click(browser, "#job-model")
    browser.wait_for("document.querySelector('#embedding-plot img')?.naturalWidth > 0", timeout=120)
    browser.wait_for("!!document.querySelector('#serve-predict')")
    _click(browser, "#serve-predict")
    output = browser.wait_for("document.querySelector('#serve-output')?.textContent", timeout=60)
    assert '"predictions"' in output and '"reconstruction_error"' in output
    shot = browser.screenshot(tmp_path / "model.png")
    assert shot.startswith(PNG) and len(shot) > 10_000
    job = embedded.http.get(f"/v1/jobs/{job_id}").json()
    assert len(job["history"]) == EPOCHS


def test_the_usage_panel_shows_each_quota_against_its_limit(embedded, browser):
    datasets = embedded.http.get("/v1/datasets").json()["total"]
    browser.goto(f"{embedded.base}/ui/#usage")
    rows = browser.wait_for("(() => { const r = [...document.querySelectorAll('#usage tbody tr')];"
                            " return r.length ? r.map((tr) => [...tr.cells].map((c) => "
                            "c.textContent)) : null; })()")
    names = [r[0] for r in rows]
    assert names == ["stored_bytes", "datasets", "models", "running_jobs", "queued_jobs",
                     "serving_requests"]
    by_name = {r[0]: r for r in rows}
    assert by_name["datasets"][1:3] == [str(datasets), "10000"]
    assert by_name["datasets"][4] == "settings"


def test_a_large_file_goes_from_the_dashboard_over_tus_in_chunks(embedded, browser, tmp_path):
    rows = tmp_path / "big.csv"
    rows.write_bytes(to_csv(np.random.default_rng(1).normal(size=(3000, 8))))
    browser.goto(f"{embedded.base}/ui/")
    browser.wait_for("!!document.querySelector('#upload-file')")
    # Lower the page's threshold and chunk so a small file takes the resumable path in pieces.
    browser.evaluate("window.PRETRAINER_TUS_ABOVE = 1024; window.PRETRAINER_TUS_CHUNK = 64 * 1024;"
                     " window.sent = []; const open = XMLHttpRequest.prototype.open;"
                     " XMLHttpRequest.prototype.open = function (m, u) {"
                     " window.sent.push(m + ' ' + u); return open.apply(this, arguments); }")
    browser.set_files("#upload-file", [rows])
    _choose(browser, "#upload-name", "resumable from the browser")
    _click(browser, "#upload-btn")
    notice = browser.wait_for("document.querySelector('#notice.ok')?.textContent", timeout=60)
    assert "uploaded resumable from the browser: 3000 rows" in notice
    sent = browser.evaluate("window.sent")
    patches = [s for s in sent if s.startswith("PATCH /v1/uploads/up_")]
    assert len(patches) == -(-rows.stat().st_size // (64 * 1024)) and len(set(patches)) == 1
    assert not any(s.startswith("POST /v1/datasets") for s in sent)
    dataset_id = notice.rsplit("(", 1)[1].rstrip(")")
    ds = embedded.http.get(f"/v1/datasets/{dataset_id}").json()
    assert ds["sha256"] == hashlib.sha256(rows.read_bytes()).hexdigest()


# ------------------------------------------------------------------ the model registry


def _registry_rows(selector: str) -> str:
    """JS: the text of each cell of the rows under selector, or null while there are none."""
    return (f"(() => {{ const r = [...document.querySelectorAll({selector!r})]; return r.length "
            "? r.map((tr) => [...tr.cells].map((c) => c.textContent)) : null; })()")


def test_register_from_the_model_page_and_point_an_alias(embedded, browser, tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(to_csv(blobs(80)))
    with Client(embedded.base) as c:
        model_id = c.train("kmeans", c.upload(path), {"n_clusters": 2}).model_id
    browser.goto(f"{embedded.base}/ui/#models/{model_id}")
    browser.wait_for("document.querySelector('#register-name') !== null")
    browser.evaluate("document.querySelector('#register-name').value = 'dash'")
    browser.evaluate("document.querySelector('#register').click()")
    versions = browser.wait_for(_registry_rows("#registry-versions tbody tr"))
    assert browser.evaluate("location.hash") == "#registry/dash"
    assert versions[0][:2] == ["1", model_id]
    browser.evaluate("document.querySelector('#alias-name').value = 'production'")
    browser.evaluate("document.querySelector('#alias-set').click()")
    history = browser.wait_for(_registry_rows("#registry-history tbody tr"))
    assert history[0][:4] == ["production", "(new)", "1", "anonymous"]
    entry = embedded.http.get("/v1/registry/dash").json()
    assert entry["aliases"] == {"production": 1} and entry["history"][0]["to_version"] == 1
    browser.goto(f"{embedded.base}/ui/#registry")
    names = browser.wait_for(_registry_rows("#registry-names tbody tr"))
    assert ["dash", "1", "production → 1"] in [row[:3] for row in names]
    # The model's page says what it is registered as.
    browser.goto(f"{embedded.base}/ui/#models/{model_id}")
    shown = browser.wait_for("document.querySelector('#registered-as')?.textContent")
    assert shown == "dash@1 (dash@production)"
