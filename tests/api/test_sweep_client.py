"""The Python client (sync and async) and the CLI on sweeps, against the API in-process."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from app.runner import run_job
from pretrainer_client import AsyncClient, Client, Sweep, cli
from tests.conftest import blobs, to_csv, upload

SPACE = {"n_clusters": {"choices": [2, 3]}}


class Via(httpx.BaseTransport):
    """The in-process API as a client transport (whole bodies: the sweeps have ended before
    they are followed)."""

    def __init__(self, http) -> None:
        self.http = http

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        r = self.http.request(request.method, str(request.url), headers=request.headers,
                              content=request.read())
        return httpx.Response(r.status_code, headers=r.headers, content=r.content)


@pytest.fixture
def sdk(client) -> Client:
    return Client("http://testserver", transport=Via(client))


def _run_trials(settings, sweep: Sweep) -> None:
    for trial in sweep.trials:
        run_job(trial.job_id, settings=settings, worker="test")


def test_client_starts_follows_lists_and_cancels_sweeps(client, settings, sdk):
    ds = upload(client, to_csv(blobs()))["body"]["id"]
    sweep = sdk.sweep(ds, "kmeans", SPACE, metric="silhouette", direction="maximize", trials=2,
                      parallelism=2, params={"random_state": 0}, name="k")
    assert sweep.status == "running" and len(sweep.trials) == 2 and not sweep.done
    _run_trials(settings, sweep)
    seen = []
    ended = sdk.follow_sweep(sweep, on_event=seen.append)
    assert ended.done and ended.status == "succeeded" and seen[-1].event == "end"
    best = max(ended.trials, key=lambda t: t.value)
    assert ended.best_job_id == best.job_id and best.params == {"n_clusters": 3}
    assert sdk.sweep_status(sweep.id).best_model_id == best.model_id
    other = sdk.sweep(ds, "kmeans", SPACE, metric="inertia", direction="minimize", trials=2,
                      pruner=False)
    assert other.raw["pruner"] is None
    assert sdk.cancel_sweep(other).status == "cancelled"
    assert [s.id for s in sdk.sweeps().items] == [other.id, sweep.id]
    assert sdk.sweeps(status="cancelled").total == 1


def test_async_client_does_the_same(client, settings):
    ds = upload(client, to_csv(blobs()))["body"]["id"]

    async def scenario() -> Sweep:
        async with AsyncClient("http://testserver",
                               transport=httpx.ASGITransport(app=client.app)) as c:
            sweep = await c.sweep(ds, "kmeans", SPACE, metric="silhouette",
                                  direction="maximize", trials=2, parallelism=2)
            await asyncio.to_thread(_run_trials, settings, sweep)
            assert (await c.sweeps()).total == 1
            return await c.follow_sweep(sweep.id)

    ended = asyncio.run(scenario())
    assert ended.status == "succeeded" and len(ended.trials) == 2


def test_cli_starts_shows_and_cancels_a_sweep(client, settings, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli, "Client", lambda url, key: Client(
        "http://testserver", transport=Via(client)))
    ds = upload(client, to_csv(blobs()))["body"]["id"]
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    assert cli.main(["sweeps", "start", "kmeans", "--dataset", ds, "--space", str(space),
                     "--metric", "silhouette", "--direction", "maximize", "--trials", "2",
                     "--param", "random_state=1", "--json"]) == 0
    started = json.loads(capsys.readouterr().out)
    assert started["space"] == SPACE and started["params"] == {"random_state": 1}
    assert cli.main(["sweeps", "show", started["id"]]) == 0
    assert "trials" in capsys.readouterr().out
    assert cli.main(["sweeps", "cancel", started["id"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"
    inline = '{"n_clusters": {"low": 2, "high": 4}}'
    assert cli.main(["sweeps", "start", "kmeans", "--dataset", ds, "--space", inline,
                     "--metric", "inertia", "--direction", "minimize", "--trials", "1",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["space"]["n_clusters"]["int"] is True
    assert cli.main(["sweeps", "list"]) == 0
    assert "sweeps (2)" in capsys.readouterr().out
    assert cli.main(["sweeps", "start", "kmeans", "--dataset", ds, "--space", "{oops",
                     "--metric", "inertia", "--direction", "minimize", "--trials", "1"]) == 1
