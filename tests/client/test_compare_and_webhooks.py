"""The Python client (sync and async) and the CLI on comparisons and webhooks, against the API
in-process (the client's transport is the test app's)."""

from __future__ import annotations

import asyncio
import functools
import json

import httpx
import numpy as np
import pytest
from sklearn.datasets import make_classification

from app.runner import run_job
from pretrainer_client import AsyncClient, Client, Comparison, PretrainerError, Webhook
from pretrainer_client import cli as client_cli
from tests.conftest import to_csv, upload


class Via(httpx.BaseTransport):
    """The test app as a client transport: each request goes through the TestClient."""

    def __init__(self, test_client) -> None:
        self.test_client = test_client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        r = self.test_client.request(request.method, request.url.raw_path.decode(),
                                     content=request.read(), headers=dict(request.headers))
        return httpx.Response(r.status_code, content=r.content, headers={
            k: v for k, v in r.headers.items() if k.lower() != "content-encoding"})


@pytest.fixture
def ready(client, settings) -> tuple[str, str]:
    """A labelled table and an autoencoder trained on it: (dataset id, backbone spec)."""
    x, y = make_classification(n_samples=80, n_features=4, n_informative=3, n_redundant=0,
                               random_state=0)
    ds = upload(client, to_csv(np.column_stack([x, y]), ["a", "b", "c", "d", "label"]))
    ds_id = ds["body"]["id"]
    job = client.post("/v1/jobs", json={"dataset_id": ds_id, "algorithm": "autoencoder",
                                        "features": list("abcd"),
                                        "params": {"epochs": 2, "latent_dim": 2,
                                                   "hidden_dims": [8]}}).json()
    run_job(job["id"], settings=settings, worker="test")
    model_id = client.get(f"/v1/jobs/{job['id']}").json()["model_id"]
    return ds_id, f"model:{model_id}"


def test_the_sync_client_compares_and_manages_webhooks(client, settings, ready):
    ds, backbone = ready
    with Client("http://testserver", transport=Via(client)) as c:
        made = c.compare(ds, [backbone], seeds=[0, 1], target="label", params={"epochs": 2})
        assert isinstance(made, Comparison) and made.status == "queued" and not made.done
        assert made.seeds == [0, 1] and len(made.job_ids) == 4
        for job_id in made.job_ids:
            run_job(job_id, settings=settings, worker="test")
        done = c.wait_comparison(made, interval=0.01, timeout=10)
        assert done.done and done.status == "succeeded"
        assert done.rows[0].pretrained and done.rows[0].values == [
            c.job(j).metrics["accuracy"] for j in done.rows[0].job_ids]
        assert done.deltas[0].n_pairs == 2 and done.deltas[0].ci_low is not None
        assert [x.id for x in c.comparisons().items] == [made.id]
        with pytest.raises(PretrainerError) as bad:
            c.compare(ds, [backbone, "resnet9000"], target="label")
        assert bad.value.status == 422 and bad.value.errors[0]["field"] == "backbones[1]"
        assert c.cancel_comparison(made).status == "succeeded"  # nothing left to cancel

        with pytest.raises(PretrainerError) as refused:
            c.add_webhook("http://127.0.0.1:9/hook", ["job.*"])
        assert refused.value.errors[0]["field"] == "url"


def test_the_clients_manage_webhooks(tmp_path):
    from tests.api.test_webhooks import make_api

    client, _ = make_api(tmp_path)
    with client, Client("http://testserver", transport=Via(client)) as c:
        hook = c.add_webhook("http://127.0.0.1:9/hook", ["job.*", "comparison.*"],
                             secret="x" * 16)
        assert isinstance(hook, Webhook) and hook.secret == "x" * 16
        assert c.webhook(hook.id).secret is None
        assert [w.id for w in c.webhooks().items] == [hook.id]
        sent = c.test_webhook(hook)
        assert sent.event == "webhook.test" and sent.status == "pending"
        assert [d.id for d in c.deliveries(hook).items] == [sent.id]

        async def run_async() -> None:
            transport = httpx.ASGITransport(app=client.app)
            async with AsyncClient("http://testserver", transport=transport) as a:
                assert [w.id for w in (await a.webhooks()).items] == [hook.id]
                assert (await a.deliveries(hook.id)).items[0].event == "webhook.test"
                assert (await a.comparisons()).total == 0
                await a.delete_webhook(hook.id)

        asyncio.run(run_async())
        assert c.webhooks().total == 0


def test_the_cli_starts_a_comparison_and_registers_a_webhook(client, settings, ready, capsys,
                                                             monkeypatch):
    ds, backbone = ready
    monkeypatch.setattr(client_cli, "Client",
                        functools.partial(Client, transport=Via(client)))
    rc = client_cli.main(["compare", ds, "--backbone", backbone, "--seeds", "2",
                          "--target", "label", "--param", "epochs=2", "--json"])
    assert rc == 0
    made = json.loads(capsys.readouterr().out)
    assert made["seeds"] == [0, 1] and made["backbones"] == [backbone]
    assert client_cli.main(["comparisons", "show", made["id"]]) == 0
    assert "pretrained - scratch" in capsys.readouterr().out
    assert client_cli.main(["comparisons", "cancel", made["id"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"
    rc = client_cli.main(["webhooks", "add", "http://10.0.0.1/", "--event", "job.*"])
    assert rc == 1 and "internal address" in capsys.readouterr().err
    assert client_cli.main(["webhooks", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_seeds_take_a_count_or_a_list():
    assert client_cli.seeds_arg("3") == 3
    assert client_cli.seeds_arg("0,1,7") == [0, 1, 7]
