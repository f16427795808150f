"""The model registry over HTTP: names, numbered versions, aliases and their history, and every
/v1/models route answering for `name@alias` / `name@version` as for the model's id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.cluster import KMeans
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from app.config import Settings
from app.db.migrate import upgrade
from app.main import create_app
from tests.conftest import blobs, run_in_process, to_csv

X = blobs(120)
NEW = (X[:15] + 0.3).tolist()
ALPHA, BETA = "key-alpha-0123456789", "key-beta-0123456789"


def train(client: TestClient, settings: Settings, k: int, headers: dict | None = None) -> str:
    """A k-means model with k clusters on X, trained in-process; its id."""
    ds = client.post("/v1/datasets", files={"file": ("x.csv", to_csv(X))}, headers=headers)
    job = run_in_process(client, settings, {"dataset_id": ds.json()["id"], "algorithm": "kmeans",
                                            "params": {"n_clusters": k, "random_state": 0}},
                         headers)
    return str(job["model_id"])


def reference(k: int) -> list[int]:
    """What scikit-learn predicts for NEW with the job's pipeline (standardize, k-means)."""
    model = make_pipeline(StandardScaler(), KMeans(n_clusters=k, random_state=0, n_init="auto"))
    return model.fit(X).predict(np.asarray(NEW)).tolist()


def predict(client: TestClient, ref: str, headers: dict | None = None) -> list[int]:
    r = client.post(f"/v1/models/{ref}/predict", json={"instances": NEW}, headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json()["predictions"])


@pytest.fixture
def two(client: TestClient, settings: Settings) -> tuple[str, str]:
    """Two models registered as churn versions 1 (k=2) and 2 (k=4)."""
    ids = train(client, settings, 2), train(client, settings, 4)
    for i, model_id in enumerate(ids, 1):
        r = client.post("/v1/registry/churn/versions", json={"model_id": model_id})
        assert r.status_code == 201, r.text
        assert r.json()["version"] == i and r.json()["model_id"] == model_id
    return ids


def test_registering_twice_makes_versions_1_and_2(client, two):
    entry = client.get("/v1/registry/churn").json()
    assert [(v["version"], v["model_id"]) for v in entry["versions"]] == [(1, two[0]), (2, two[1])]
    assert entry["latest_version"] == 2 and entry["aliases"] == {} and entry["history"] == []
    assert {v["created_by"] for v in entry["versions"]} == {"anonymous"}  # the open API
    listed = client.get("/v1/registry").json()
    assert listed["total"] == 1 and [i["name"] for i in listed["items"]] == ["churn"]
    # The same model may be registered again: it is a new version, by design.
    again = client.post("/v1/registry/churn/versions", json={"model_id": "churn@1"})
    assert again.status_code == 201 and again.json()["version"] == 3
    assert again.json()["model_id"] == two[0]


def test_alias_moves_serve_the_new_version_at_once_and_are_recorded(client, two):
    first = client.put("/v1/registry/churn/aliases/production", json={"version": 1})
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 1 and first.json()["updated_by"] == "anonymous"
    by_id, by_alias = predict(client, two[0]), predict(client, "churn@production")
    assert by_alias == by_id == reference(2)
    # The model is cached now; the move still takes effect on the very next call.
    client.put("/v1/registry/churn/aliases/production", json={"version": 2})
    assert predict(client, "churn@production") == predict(client, two[1]) == reference(4)
    client.put("/v1/registry/churn/aliases/production", json={"version": 2})  # no move: no line
    entry = client.get("/v1/registry/churn").json()
    moves = [(m["alias"], m["from_version"], m["to_version"], m["by"]) for m in entry["history"]]
    assert moves == [("production", None, 1, "anonymous"), ("production", 1, 2, "anonymous")]
    assert entry["history"][0]["at"] <= entry["history"][1]["at"]
    assert entry["aliases"] == {"production": 2}
    assert [v["aliases"] for v in entry["versions"]] == [[], ["production"]]
    # A model shows the registry versions it is, and the aliases on them.
    shown = client.get(f"/v1/models/{two[1]}").json()
    assert shown["versions"] == [{"name": "churn", "version": 2, "aliases": ["production"]}]
    listed = {m["id"]: m["versions"] for m in client.get("/v1/models").json()["items"]}
    assert listed == {two[0]: [{"name": "churn", "version": 1, "aliases": []}],
                      two[1]: shown["versions"]}
    # Removing an alias is a move to no version.
    assert client.delete("/v1/registry/churn/aliases/production").status_code == 204
    last = client.get("/v1/registry/churn").json()["history"][-1]
    assert (last["from_version"], last["to_version"]) == (2, None)
    assert client.post("/v1/models/churn@production/predict",
                       json={"instances": NEW}).status_code == 404


def test_every_model_route_takes_a_version_or_alias_and_answers_with_the_real_id(client, two):
    client.put("/v1/registry/churn/aliases/staging", json={"version": 1})
    for ref, model_id in (("churn@2", two[1]), ("churn@staging", two[0]),
                          ("churn@latest", two[1])):
        shown = client.get(f"/v1/models/{ref}")
        assert shown.status_code == 200 and shown.json()["id"] == model_id
        emb = client.post(f"/v1/models/{ref}/embed", json={"instances": NEW}).json()
        assert emb == client.post(f"/v1/models/{model_id}/embed", json={"instances": NEW}).json()
        labels = client.get(f"/v1/models/{ref}/labels")
        assert labels.text == client.get(f"/v1/models/{model_id}/labels").text
    assert client.get("/v1/models/churn@2/plots/embedding.png").headers["content-type"] \
        == "image/png"
    # evaluate names the model it scored by its id, not by the reference it was called with.
    labelled = to_csv(np.column_stack([X, np.arange(len(X)) % 2]), ["a", "b", "c", "d", "y"])
    test_set = client.post("/v1/datasets", files={"file": ("t.csv", labelled)}).json()["id"]
    body = {"dataset_id": test_set, "target": "y"}
    by_ref = client.post("/v1/models/churn@staging/evaluate", json=body)
    assert by_ref.status_code == 200, by_ref.text
    assert by_ref.json() == client.post(f"/v1/models/{two[0]}/evaluate", json=body).json()
    assert by_ref.json()["model_id"] == two[0]


@pytest.mark.parametrize("ref, missing", [
    ("nope@1", "no model is registered as 'nope'"),
    ("churn@9", "churn has no version 9; its versions are 1 to 2"),
    ("churn@canary", "churn has no alias 'canary'; its aliases: staging"),
    ("churn@", "a reference is a model id, NAME@VERSION or NAME@ALIAS"),
])
def test_unknown_names_versions_and_aliases_are_404s_that_say_what_is_missing(
        client, two, ref, missing):
    client.put("/v1/registry/churn/aliases/staging", json={"version": 1})
    for r in (client.get(f"/v1/models/{ref}"),
              client.post(f"/v1/models/{ref}/predict", json={"instances": NEW})):
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert missing in r.json()["detail"]
    assert client.get("/v1/registry/nope").status_code == 404


def test_an_aliased_model_cannot_be_deleted_an_unaliased_one_can(client, two):
    client.put("/v1/registry/churn/aliases/production", json={"version": 1})
    client.put("/v1/registry/churn/aliases/staging", json={"version": 1})
    for ref in (two[0], "churn@production"):
        r = client.delete(f"/v1/models/{ref}")
        assert r.status_code == 409, r.text
        assert "churn@production (version 1)" in r.json()["detail"]
        assert "churn@staging (version 1)" in r.json()["detail"]
    assert client.get(f"/v1/models/{two[0]}").status_code == 200  # nothing changed
    # Version 2 has no alias: deleting its model is allowed, and its number is never reused.
    assert predict(client, "churn@2") == reference(4)  # cached before the delete
    assert client.delete("/v1/models/churn@2").status_code == 204
    gone = client.post("/v1/models/churn@2/predict", json={"instances": NEW})
    assert gone.status_code == 404 and "was deleted" in gone.json()["detail"]
    assert client.get("/v1/models/churn@latest").json()["id"] == two[0]
    entry = client.get("/v1/registry/churn").json()
    assert entry["versions"][1]["model_deleted_at"] is not None and entry["latest_version"] == 1
    refused = client.put("/v1/registry/churn/aliases/staging", json={"version": 2})
    assert refused.status_code == 409 and refused.json()["errors"][0]["field"] == "version"
    nxt = client.post("/v1/registry/churn/versions", json={"model_id": two[0]})
    assert nxt.json()["version"] == 3
    # Once no alias points at it, the first model may go too.
    client.put("/v1/registry/churn/aliases/production", json={"version": 3})
    client.delete("/v1/registry/churn/aliases/production")
    client.delete("/v1/registry/churn/aliases/staging")
    assert client.delete(f"/v1/models/{two[0]}").status_code == 204


@pytest.mark.parametrize("method, path, body, field", [
    ("POST", "/v1/registry/-churn/versions", {"model_id": "{m}"}, "name"),
    ("POST", "/v1/registry/a%20b/versions", {"model_id": "{m}"}, "name"),
    ("POST", "/v1/registry/" + "n" * 101 + "/versions", {"model_id": "{m}"}, "name"),
    ("POST", "/v1/registry/churn/versions", {"model_id": "mdl_" + "0" * 32}, "model_id"),
    ("POST", "/v1/registry/churn/versions", {"model_id": "other@1"}, "model_id"),
    ("POST", "/v1/registry/churn/versions", {}, "model_id"),
    ("PUT", "/v1/registry/churn/aliases/3", {"version": 1}, "alias"),
    ("PUT", "/v1/registry/churn/aliases/latest", {"version": 1}, "alias"),
    ("PUT", "/v1/registry/churn/aliases/pro.d", {"version": 1}, "alias"),
    ("PUT", "/v1/registry/churn/aliases/production", {"version": 7}, "version"),
    ("PUT", "/v1/registry/churn/aliases/production", {"version": "1"}, "version"),
    ("PUT", "/v1/registry/churn/aliases/production", {"version": 0}, "version"),
])
def test_bad_names_aliases_and_versions_are_422s_that_change_nothing(
        client, two, method, path, body, field):
    body = {k: v.format(m=two[0]) if isinstance(v, str) else v for k, v in body.items()}
    before = client.get("/v1/registry").json()
    r = client.request(method, path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == field
    assert client.get("/v1/registry").json() == before


def _keyed(tmp_path: Path) -> Settings:
    s = Settings(data_dir=tmp_path / "data", api_keys=f"alpha:{ALPHA},beta:{BETA}")
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    return s


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[TestClient, Settings]]:
    settings = _keyed(tmp_path)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c, settings


def test_names_belong_to_a_project_and_record_the_key_that_acted(keyed):
    api, settings = keyed
    alpha, beta = {"Authorization": f"Bearer {ALPHA}"}, {"Authorization": f"Bearer {BETA}"}
    mine = train(api, settings, 3, alpha)
    api.post("/v1/registry/churn/versions", json={"model_id": mine}, headers=alpha)
    api.put("/v1/registry/churn/aliases/production", json={"version": 1}, headers=alpha)
    who = api.get("/v1/projects/me", headers=alpha).json()["key_id"]
    entry = api.get("/v1/registry/churn", headers=alpha).json()
    assert entry["created_by"] == entry["versions"][0]["created_by"] == who
    assert entry["history"][0]["by"] == who and who.startswith("key_")
    # Beta sees nothing of alpha's name, cannot reach alpha's model through it nor register it.
    assert api.get("/v1/registry/churn", headers=beta).status_code == 404
    assert api.get("/v1/registry", headers=beta).json()["total"] == 0
    for path in ("/v1/models/churn@production", "/v1/models/churn@1"):
        assert api.get(path, headers=beta).status_code == 404
    assert api.post("/v1/models/churn@1/predict", json={"instances": NEW},
                    headers=beta).status_code == 404
    stolen = api.post("/v1/registry/churn/versions", json={"model_id": mine}, headers=beta)
    assert stolen.status_code == 422 and stolen.json()["errors"][0]["field"] == "model_id"
    # The same name in beta's project is beta's own, numbered from 1.
    own = train(api, settings, 2, beta)
    assert api.post("/v1/registry/churn/versions", json={"model_id": own},
                    headers=beta).json()["version"] == 1
    assert predict(api, "churn@1", beta) == reference(2)
    assert predict(api, "churn@1", alpha) == reference(3)
