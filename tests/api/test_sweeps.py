"""Sweeps through HTTP: refusals that name the field, a k-means sweep over n_clusters whose best
is the trial with the best silhouette (each checked against scikit-learn), and an autoencoder
sweep whose lagging trials are pruned. Trials are run in-process by the worker's run_job,
which advances the sweep after each trial's end as a worker does.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

from app.runner import run_job
from app.services import sweeps
from app.storage import open_store
from tests.conftest import blobs, read_events, to_csv, upload


def start(client, body: dict):
    return client.post("/v1/sweeps", json=body)


def drive(client, settings, sweep_id: str, limit: int = 40) -> dict:
    """Run the sweep's queued trials one at a time until it ends; return it."""
    for _ in range(limit):
        sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
        if sweep["status"] != "running":
            return sweep
        queued = [t for t in sweep["trials"] if t["state"] == "queued"]
        assert queued, sweep
        run_job(queued[0]["job_id"], settings=settings, worker="test")
    raise AssertionError(f"sweep {sweep_id} did not end")


@pytest.fixture
def ds(client) -> str:
    return upload(client, to_csv(blobs()))["body"]["id"]


KMEANS = {"algorithm": "kmeans", "space": {"n_clusters": {"choices": [2, 3, 4, 5, 6]}},
          "params": {"random_state": 0}, "metric": "silhouette", "direction": "maximize",
          "trials": 5, "parallelism": 2}


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"algorithm": "kmean"}, "algorithm", "did you mean 'kmeans'"),
    ({"dataset_id": "ds_nope"}, "dataset_id", "no such dataset"),
    ({"space": {"n_clustres": {"choices": [2, 3]}}}, "space.n_clustres", "did you mean"),
    ({"space": {"n_clusters": {"low": 0, "high": 5}}}, "space.n_clusters", "0 for n_clusters"),
    ({"space": {"n_clusters": {"low": 2, "high": 400}}}, "space.n_clusters", "400"),
    ({"space": {"n_clusters": {"low": 5, "high": 2}}}, "space.n_clusters", "below high"),
    ({"space": {"tol": {"low": 0, "high": 0.1, "log": True}}}, "space.tol", "low > 0"),
    ({"space": {"init": {"choices": ["k-means++", "best"]}}}, "space.init", "'best'"),
    ({"space": {"n_clusters": {"choices": []}}}, "space.n_clusters", "non-empty"),
    ({"space": {}}, "space", "at least one"),
    ({"params": {"random_state": 0, "n_clusters": 3}}, "params.n_clusters", "searched"),
    ({"metric": "accuracy"}, "metric", "silhouette"),
    ({"direction": "up"}, "direction", ""),
    ({"trials": 0}, "trials", ""),
    ({"trials": 10_000}, "trials", "PRETRAINER_MAX_SWEEP_TRIALS"),
    ({"parallelism": 0}, "parallelism", ""),
    ({"sampler": "grid", "space": {"tol": {"low": 0.001, "high": 0.1}}}, "sampler", "choices"),
])
def test_refusals_are_422_naming_the_field_and_create_nothing(client, ds, change, field, words):
    r = start(client, {**KMEANS, "dataset_id": ds, **change})
    assert r.status_code == 422, r.json()
    fields = [e["field"] for e in r.json()["errors"]]
    assert any(f == field or f.endswith(f".{field}") for f in fields), r.json()
    assert words in r.json()["detail"], r.json()
    assert client.get("/v1/jobs").json()["total"] == 0
    assert client.get("/v1/sweeps").json()["total"] == 0


def test_metric_refusal_lists_what_the_algorithm_reports(client, ds):
    r = start(client, {**KMEANS, "dataset_id": ds, "metric": "val_loss"})
    message = r.json()["errors"][0]["message"]
    for name in ("inertia", "silhouette", "davies_bouldin", "calinski_harabasz"):
        assert name in message


def test_kmeans_sweep_by_silhouette_picks_the_best_trial(client, settings, ds):
    r = start(client, {**KMEANS, "dataset_id": ds})
    assert r.status_code == 202, r.json()
    created = r.json()
    assert created["status"] == "running" and created["budget"] == 5
    assert [t["state"] for t in created["trials"]] == ["queued", "queued"]  # parallelism 2
    sweep = drive(client, settings, created["id"])
    assert sweep["status"] == "succeeded" and sweep["progress"] == 1
    trials = sweep["trials"]
    assert sorted(t["params"]["n_clusters"] for t in trials) == [2, 3, 4, 5, 6]  # the grid
    assert {t["state"] for t in trials} == {"succeeded"}
    x = StandardScaler().fit_transform(blobs())  # kmeans standardises by default
    for trial in trials:
        job = client.get(f"/v1/jobs/{trial['job_id']}").json()
        assert job["parent_id"] == sweep["id"] and job["kind"] == "train"
        assert job["params"]["n_clusters"] == trial["params"]["n_clusters"]
        labels = client.post(f"/v1/models/{job['model_id']}/predict",
                             json={"instances": blobs().tolist()}).json()["predictions"]
        assert trial["value"] == pytest.approx(silhouette_score(x, np.array(labels)), rel=1e-9)
        assert trial["seconds"] is not None and trial["model_id"] == job["model_id"]
    best = max(trials, key=lambda t: t["value"])
    assert best["params"]["n_clusters"] == 3  # three blobs
    assert sweep["best_job_id"] == best["job_id"] and sweep["best_value"] == best["value"]
    assert sweep["best_model_id"] == best["model_id"]
    listed = client.get("/v1/sweeps").json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == sweep["id"]
    assert client.get("/v1/sweeps?status=succeeded").json()["total"] == 1


def test_advance_never_runs_past_parallelism_or_budget(client, settings, ds):
    sweep_id = start(client, {**KMEANS, "dataset_id": ds, "trials": 3}).json()["id"]
    store = open_store(settings)
    # The reaper's tick and the worker's advance both ask: nothing is added while 2 are active.
    assert sweeps.advance(settings=settings, store=store, sweep_id=sweep_id) == []
    sweeps.tick(settings, store)
    assert len(client.get(f"/v1/sweeps/{sweep_id}").json()["trials"]) == 2
    sweep = drive(client, settings, sweep_id)
    assert len(sweep["trials"]) == 3 and sweep["status"] == "succeeded"
    assert sweeps.advance(settings=settings, store=store, sweep_id=sweep_id) == []


def test_cancel_cancels_queued_trials_and_ends_the_sweep(client, settings, ds):
    sweep_id = start(client, {**KMEANS, "dataset_id": ds}).json()["id"]
    r = client.post(f"/v1/sweeps/{sweep_id}/cancel")
    assert r.status_code == 202
    sweep = r.json()
    assert sweep["status"] == "cancelled" and sweep["finished_at"]
    assert [t["state"] for t in sweep["trials"]] == ["cancelled", "cancelled"]
    for trial in sweep["trials"]:
        assert client.get(f"/v1/jobs/{trial['job_id']}").json()["status"] == "cancelled"
    sweeps.tick(settings, open_store(settings))  # no trial is started after the cancel
    assert len(client.get(f"/v1/sweeps/{sweep_id}").json()["trials"]) == 2
    assert client.post("/v1/sweeps/swp_nope/cancel").status_code == 404
    assert client.get("/v1/sweeps/swp_nope").status_code == 404


def test_events_follow_trials_to_the_end(client, settings, ds):
    sweep_id = start(client, {**KMEANS, "dataset_id": ds, "trials": 2}).json()["id"]
    drive(client, settings, sweep_id)
    events = read_events(client, sweep_id, "sweeps")
    names = [e for e, _ in events]
    assert names[0] == "status" and names[-1] == "end"
    assert sum(1 for e, d in events if e == "trial" and d["state"] == "succeeded") == 2
    assert events[-1][1]["status"] == "succeeded"


@pytest.mark.slow
def test_a_lagging_torch_trial_is_pruned(client, settings):
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(160, 6)) @ rng.normal(size=(6, 6))
    ds = upload(client, to_csv(rows))["body"]["id"]
    # One trial at a time; with seed 3 the grid's order is 0.02, 0.04, 0.03, 2e-7, 1e-7: two
    # sound rates finish first (the pruner's startup), then the near-frozen ones lag.
    body = {"dataset_id": ds, "algorithm": "autoencoder", "metric": "val_loss",
            "direction": "minimize", "trials": 5, "parallelism": 1, "seed": 3,
            "space": {"learning_rate": {"choices": [0.02, 0.03, 1e-7, 0.04, 2e-7]}},
            "params": {"epochs": 6, "batch_size": 32, "latent_dim": 2, "seed": 0},
            "pruner": {"n_startup_trials": 2, "n_warmup_steps": 2}}
    r = start(client, body)
    assert r.status_code == 202, r.json()
    sweep = drive(client, settings, r.json()["id"])
    assert sweep["status"] == "succeeded"
    trials = sweep["trials"]
    history = {t["job_id"]: client.get(f"/v1/jobs/{t['job_id']}").json()["history"]
               for t in trials}
    frozen = [t for t in trials if t["params"]["learning_rate"] < 1e-6]
    assert [t["state"] for t in frozen] == ["pruned", "pruned"], trials
    for trial in (t for t in trials if t["state"] == "pruned"):
        job = client.get(f"/v1/jobs/{trial['job_id']}").json()
        assert job["status"] == "cancelled" and job["error"]["type"] == "Pruned"
        assert job["model_id"] is None and 2 <= len(job["history"]) < 6  # stopped early
        last = job["history"][-1]
        # Optuna's median rule: worse than the median of the finished trials at that epoch.
        done = [history[t["job_id"]][last["epoch"] - 1]["val_loss"] for t in trials
                if t["number"] < trial["number"] and t["state"] == "succeeded"]
        assert last["val_loss"] > float(np.median(done))
        assert trial["value"] == min(e["val_loss"] for e in job["history"])
    # A trial that ran all its epochs is never pruned at the finish line: its value counts.
    assert all(t["state"] == "succeeded" for t in trials if len(history[t["job_id"]]) == 6)
    best = min((t for t in trials if t["state"] == "succeeded"), key=lambda t: t["value"])
    assert sweep["best_job_id"] == best["job_id"] and best["params"]["learning_rate"] > 0.01
    assert best["value"] == min(e["val_loss"] for e in history[best["job_id"]])


def test_the_reaper_tick_starts_the_trial_a_lost_advance_missed(client, settings, ds,
                                                               monkeypatch):
    sweep_id = start(client, {**KMEANS, "dataset_id": ds, "trials": 2,
                              "parallelism": 1}).json()["id"]
    first = client.get(f"/v1/sweeps/{sweep_id}").json()["trials"][0]["job_id"]
    # The worker dies between the trial's end (committed) and its advance.
    monkeypatch.setattr(sweeps, "after_job", lambda **_: None)
    run_job(first, settings=settings, worker="test")
    sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
    assert [t["state"] for t in sweep["trials"]] == ["succeeded"]
    sweeps.tick(settings, open_store(settings))
    sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
    assert [t["state"] for t in sweep["trials"]] == ["succeeded", "queued"]
    run_job(sweep["trials"][1]["job_id"], settings=settings, worker="test")
    sweeps.tick(settings, open_store(settings))  # the last end, too, is found by the tick
    sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
    assert sweep["status"] == "succeeded" and sweep["best_job_id"] is not None


def test_a_sweeps_end_is_a_sweep_event_for_its_webhooks(client, settings, ds):
    settings.webhook_allow_private = True  # the receiver's URL is on this machine
    hook = client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook",
                                             "events": ["sweep.*"]})
    assert hook.status_code == 201, hook.json()
    r = start(client, {**KMEANS, "dataset_id": ds, "trials": 2,
                       "space": {"n_clusters": {"choices": [2, 3]}}})
    sweep = drive(client, settings, r.json()["id"])
    items = client.get(f"/v1/webhooks/{hook.json()['id']}/deliveries").json()["items"]
    assert [d["event"] for d in items] == ["sweep.succeeded"]  # the trials' jobs are not sweep.*
    sent = items[0]["body"]["data"]["sweep"]
    assert sent["id"] == sweep["id"] and sent["best_job_id"] == sweep["best_job_id"]
    assert sent["best_model_id"] == sweep["best_model_id"]
