"""A comparison trained by the real worker process, its webhook deliveries sent by the real API
process to a receiver this test starts, and the dashboard's comparison chart in Chromium."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.datasets import make_classification

from tests.api.test_webhooks import Receiver, verify
from tests.conftest import to_csv
from tests.integration.chromium import chromium_binary
from tests.integration.conftest import Service, make_run
from tests.integration.test_end_to_end import wait_job

pytestmark = pytest.mark.integration
DONE = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`make run` that may call a receiver on 127.0.0.1 and sends deliveries twice a second."""
    yield from make_run(tmp_path_factory.mktemp("compare"), PRETRAINER_WEBHOOK_ALLOW_PRIVATE="true",
                        PRETRAINER_WEBHOOK_POLL_SECONDS="0.5")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def compared(service: Service, receiver: Receiver) -> dict:
    """A webhook for every event, then a comparison (autoencoder vs scratch, 2 seeds) to its end."""
    http = service.http
    hook = http.post("/v1/webhooks", json={"url": receiver.url, "events": ["*"]}).json()
    x, y = make_classification(n_samples=120, n_features=6, n_informative=4, random_state=0)
    csv = to_csv(np.column_stack([x, y]), ["a", "b", "c", "d", "e", "f", "label"])
    ds = http.post("/v1/datasets", files={"file": ("labelled.csv", csv)}).json()["id"]
    pre = http.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "autoencoder",
                                      "features": list("abcdef"),
                                      "params": {"epochs": 3, "latent_dim": 4}}).json()
    pre = wait_job(http, pre["id"], DONE, timeout=300)
    assert pre["status"] == "succeeded", pre
    r = http.post("/v1/comparisons", json={
        "dataset_id": ds, "backbones": [f"model:{pre['model_id']}"], "seeds": 2,
        "target": "label", "params": {"epochs": 3, "freeze": "none"}})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        got = http.get(f"/v1/comparisons/{r.json()['id']}").json()
        if got["status"] in DONE:
            break
        time.sleep(1)
    return {"comparison": got, "hook": hook, "pretrain": pre}


def test_the_worker_trains_every_job_and_the_receiver_gets_each_end_signed(
        service, receiver, compared):
    got = compared["comparison"]
    assert got["status"] == "succeeded", got
    assert got["counts"]["succeeded"] == 4 and got["deltas"][0]["n_pairs"] == 2
    assert got["deltas"][0]["ci_low"] is not None
    wanted = {compared["pretrain"]["id"], *got["job_ids"]}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        events = [(h["Pretrainer-Event"], json.loads(b)) for h, b in receiver.got]
        if len([e for e, _ in events if e.startswith("comparison.")]) >= 1 and \
                {b["data"].get("job", {}).get("id") for _, b in events} >= wanted:
            break
        time.sleep(0.2)
    assert {b["data"]["job"]["id"] for e, b in events if e == "job.succeeded"} == wanted
    assert [b["data"]["comparison"]["id"] for e, b in events if e.startswith("comparison.")] \
        == [got["id"]]
    for headers, body in receiver.got:
        verify(compared["hook"]["secret"], headers, body)
    listed = service.http.get(f"/v1/webhooks/{compared['hook']['id']}/deliveries").json()
    assert listed["total"] == len(wanted) + 1
    assert all(d["status"] == "delivered" and d["attempts"] == 1 for d in listed["items"])


@pytest.mark.skipif(chromium_binary() is None, reason="chromium is not installed")
def test_the_dashboard_draws_the_comparison(service, compared, browser):
    got = compared["comparison"]
    browser.goto(f"{service.base}/ui/#compare/{got['id']}")
    browser.wait_for("!!document.querySelector('#comparison-chart circle.delta')")
    means = browser.evaluate("[...document.querySelectorAll('#comparison-chart circle.mean')]"
                             ".map((c) => [c.dataset.pretrained, Number(c.dataset.mean)])")
    assert means == [[str(r["pretrained"]).lower(), pytest.approx(r["mean"])]
                     for r in got["rows"]]
    ci = browser.evaluate("(() => { const l = document.querySelector('#comparison-chart "
                          "line.ci'); return [Number(l.dataset.ciLow), "
                          "Number(l.dataset.ciHigh)]; })()")
    delta = got["deltas"][0]
    assert ci == [pytest.approx(delta["ci_low"]), pytest.approx(delta["ci_high"])]
    assert browser.evaluate("document.querySelector('#compare-status').textContent") \
        == "succeeded"
    # The form: a backbone that does not exist is refused, and the page says which one.
    browser.goto(f"{service.base}/ui/#compare")
    browser.wait_for("!!document.querySelector('#compare-form')")
    browser.evaluate("document.querySelector('#compare-backbones').value = 'resnet9000';"
                     "document.querySelector('#compare-target').value = 'label';"
                     "document.querySelector('#compare-submit').click()")
    notice = browser.wait_for("document.querySelector('#notice:not([hidden])')?.textContent")
    assert "422" in notice and "backbones[0]" in notice
    browser.goto(f"{service.base}/ui/#webhooks/{compared['hook']['id']}")
    shown = browser.wait_for("[...document.querySelectorAll('h2')].map((h) => h.textContent)"
                             ".find((t) => t.startsWith('Deliveries'))")
    assert shown == f"Deliveries ({len(got['job_ids']) + 2})"
    assert browser.evaluate("document.querySelectorAll('tbody tr').length") \
        == len(got["job_ids"]) + 2
