"""The dashboard's sweeps pages in real headless Chromium against `make run`."""

from __future__ import annotations

import time

import pytest

from tests.conftest import blobs, to_csv
from tests.integration.chromium import chromium_binary

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(chromium_binary() is None,
                                 reason="chromium is not installed (apt-get install chromium)")]


def test_a_sweep_shows_its_leaderboard_value_chart_and_best_model(embedded, browser):
    http = embedded.http
    ds = http.post("/v1/datasets", files={"file": ("b.csv", to_csv(blobs()))}).json()["id"]
    r = http.post("/v1/sweeps", json={
        "dataset_id": ds, "algorithm": "kmeans", "space": {"n_clusters": {"choices": [2, 3, 4]}},
        "metric": "silhouette", "direction": "maximize", "trials": 3, "parallelism": 2})
    assert r.status_code == 202, r.text
    sweep_id = r.json()["id"]
    deadline = time.monotonic() + 180
    while (sweep := http.get(f"/v1/sweeps/{sweep_id}").json())["status"] == "running":
        assert time.monotonic() < deadline, sweep
        time.sleep(0.5)
    assert sweep["status"] == "succeeded"

    browser.goto(f"{embedded.base}/ui/#sweeps")
    assert browser.wait_for(f"!!document.querySelector('tr[data-id=\"{sweep_id}\"]')")
    browser.evaluate(f"location.hash = 'sweeps/{sweep_id}'")
    assert browser.wait_for("Number(document.querySelector('#sweep-chart')?.dataset.points)") == 3
    rows = browser.evaluate("[...document.querySelectorAll('tbody tr')].map((tr) => "
                         "[...tr.cells].map((c) => c.textContent))")
    assert len(rows) == 3 and {row[3] for row in rows} == {"succeeded", "succeeded ★"}
    starred = next(row for row in rows if row[3].endswith("★"))
    assert starred[1] == sweep["best_job_id"] and '"n_clusters":3' in starred[2]
    assert browser.evaluate("document.querySelector('#sweep-best').getAttribute('href')") == \
        f"#models/{sweep['best_model_id']}"
    assert browser.evaluate("document.querySelector('#sweep-cancel').hidden") is True
