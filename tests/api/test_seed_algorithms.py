"""Through HTTP: lda (a target, predictions and probabilities, embed, evaluate), the seed's
single-layer bce autoencoder and its 422s, and gmm's generate."""

from __future__ import annotations

import io

import numpy as np
import pytest
from sklearn.datasets import load_digits, load_wine
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from tests.conftest import finished, to_csv, upload


def wine_csv() -> tuple[bytes, np.ndarray, np.ndarray]:
    x, y = load_wine(return_X_y=True)
    kinds = np.array(["barolo", "grignolino", "barbera"])[y]
    buf = io.StringIO()
    buf.write(",".join(f"f{i}" for i in range(x.shape[1])) + ",kind\n")
    for row, kind in zip(x, kinds, strict=True):
        buf.write(",".join(f"{v:.17g}" for v in row) + f",{kind}\n")
    return buf.getvalue().encode(), x, kinds


def submit(client, ds: str, algorithm: str, params: dict, **more):
    return client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": algorithm,
                                         "params": params, **more})


def finish(client, settings, response) -> dict:
    job = finished(client, settings, response)
    assert job["status"] == "succeeded", job
    return job


def test_lda_answers_equal_sklearn_on_the_same_split(client, settings):
    content, x, kinds = wine_csv()
    ds = upload(client, content, "wine.csv")["body"]["id"]
    job = finish(client, settings, submit(client, ds, "lda", {"test_size": 0.25},
                                          target="kind"))
    n_held = round(len(x) * 0.25)
    train, held = train_test_split(np.arange(len(x)), test_size=n_held, random_state=0,
                                   stratify=kinds)
    train, held = np.sort(train), np.sort(held)
    scaler = StandardScaler().fit(x[train])
    ref = LinearDiscriminantAnalysis().fit(scaler.transform(x[train]), kinds[train])
    xs = scaler.transform(x)
    assert job["metrics"]["accuracy"] == float((ref.predict(xs[held]) == kinds[held]).mean())
    np.testing.assert_allclose(job["metrics"]["explained_variance_ratio"],
                               ref.explained_variance_ratio_)
    model = client.get(f"/v1/models/{job['model_id']}").json()
    assert model["input_schema"]["classes"] == ["barbera", "barolo", "grignolino"]
    assert "kind" not in [f["name"] for f in model["input_schema"]["features"]]
    url = f"/v1/models/{job['model_id']}"
    pred = client.post(f"{url}/predict", json={"instances": x[:30].tolist()}).json()
    assert pred["predictions"] == ref.predict(xs[:30]).tolist()
    np.testing.assert_allclose(pred["probabilities"], ref.predict_proba(xs[:30]), rtol=1e-9)
    emb = client.post(f"{url}/embed", json={"instances": x[:30].tolist()}).json()
    np.testing.assert_allclose(emb["embeddings"], ref.transform(xs[:30]), rtol=1e-6,
                               atol=1e-9)
    scored = client.post(f"{url}/evaluate", json={"dataset_id": ds})
    assert scored.status_code == 200, scored.json()
    assert scored.json()["metrics"]["accuracy"] == float((ref.predict(xs) == kinds).mean())
    r = client.post(f"{url}/generate", json={"n": 2})
    assert r.status_code == 422 and "cannot generate" in r.json()["detail"]


def test_lda_without_target_is_422_naming_target(client):
    content, _, _ = wine_csv()
    ds = upload(client, content, "wine.csv")["body"]["id"]
    r = submit(client, ds, "lda", {}, features=[f"f{i}" for i in range(13)])
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "target"
    r = submit(client, ds, "lda", {"shrinkage": "auto"}, target="kind")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "params.shrinkage"


def digits01_csv(scale: float = 1 / 16) -> bytes:
    return to_csv(load_digits().data[:200] * scale, [f"p{i}" for i in range(64)])


SEED_AE = {"latent_dim": 16, "hidden_dims": [], "output_activation": "sigmoid", "loss": "bce",
           "standardize": False, "epochs": 2, "batch_size": 32}


def test_seed_autoencoder_trains_and_reconstructs(client, settings):
    ds = upload(client, digits01_csv())["body"]
    assert ds["columns"][5]["min"] == 0 and ds["columns"][5]["max"] <= 1
    job = finish(client, settings, submit(client, ds["id"], "autoencoder", SEED_AE))
    url = f"/v1/models/{job['model_id']}/predict"
    rows = (load_digits().data[:3] / 16).tolist()
    answer = client.post(url, json={"instances": rows}).json()
    recon = np.asarray(answer["predictions"])
    assert recon.shape == (3, 64) and (recon >= 0).all() and (recon <= 1).all()
    assert len(answer["reconstruction_error"]) == 3


@pytest.mark.parametrize(("params", "message"), [
    ({}, "range from 0 to 16"),
    ({"standardize": True}, "standardize false"),
    ({"output_activation": "linear"}, "output_activation 'sigmoid'"),
])
def test_bce_on_rows_outside_unit_interval_is_422_naming_loss(client, params, message):
    ds = upload(client, digits01_csv(scale=1.0 if not params else 1 / 16))["body"]["id"]
    r = submit(client, ds, "autoencoder", {**SEED_AE, **params})
    assert r.status_code == 422, r.json()
    assert [e["field"] for e in r.json()["errors"]] == ["params.loss"]
    assert message in r.json()["detail"]
    assert client.get("/v1/jobs").json()["items"] == []  # nothing queued


def test_gmm_generate_is_seeded_and_in_data_units(client, settings):
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(100, 2, size=(200, 2)), rng.normal(110, 1, size=(100, 2))])
    ds = upload(client, to_csv(x))["body"]["id"]
    job = finish(client, settings, submit(client, ds, "gmm", {"n_components": 2}))
    model = client.get(f"/v1/models/{job['model_id']}").json()
    assert "generate" in model["capabilities"]
    url = f"/v1/models/{job['model_id']}/generate"
    first = client.post(url, json={"n": 2000, "seed": 5}).json()["samples"]
    assert client.post(url, json={"n": 2000, "seed": 5}).json()["samples"] == first
    assert np.asarray(first).shape == (2000, 2)
    np.testing.assert_allclose(np.mean(first, axis=0), x.mean(axis=0), atol=0.5)


def test_seed_autoencoder_is_a_transfer_backbone(client, settings):
    x = load_digits().data[:200] / 16
    labels = load_digits().target[:200]
    content = to_csv(np.column_stack([x, labels]), [*(f"p{i}" for i in range(64)), "label"])
    ds = upload(client, content)["body"]["id"]
    pre = finish(client, settings, submit(client, ds, "autoencoder", SEED_AE))
    model = client.get(f"/v1/models/{pre['model_id']}").json()
    assert len(model["input_schema"]["features"]) == 64  # the label column left out
    job = finish(client, settings, submit(client, ds, "transfer", {
        "backbone": f"model:{pre['model_id']}", "epochs": 2}, target="label"))
    url = f"/v1/models/{job['model_id']}/embed"
    emb = client.post(url, json={"instances": x[:2].tolist()}).json()["embeddings"]
    code = client.post(f"/v1/models/{pre['model_id']}/embed",
                       json={"instances": x[:2].tolist()}).json()["embeddings"]
    # A frozen backbone (the default): the transfer model's features are the ReLU code.
    np.testing.assert_allclose(emb, code, rtol=1e-5, atol=1e-6)
    assert len(emb[0]) == 16 and min(min(row) for row in emb) >= 0
