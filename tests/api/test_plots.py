"""Plots: the PNG renderers, and the 4xx answers of the plot endpoints (in-process, no worker)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from sklearn.decomposition import PCA

from app import plots
from tests.conftest import blobs, upload

PNG = b"\x89PNG\r\n\x1a\n"


def test_to_2d_is_the_first_two_principal_components():
    x = blobs(n=200, d=6)
    ours, ref = plots.to_2d(x), PCA(n_components=2).fit_transform(x)
    for k in range(2):  # a component's sign is arbitrary
        sign = np.sign(ours[:, k] @ ref[:, k])
        np.testing.assert_allclose(ours[:, k] * sign, ref[:, k], atol=1e-8)
    assert plots.to_2d(np.ones((3, 1))).shape == (3, 2)


def test_renderers_draw_pngs():
    loss = plots.loss_png([{"epoch": i, "loss": 1 / i, "val_loss": 1.2 / i} for i in range(1, 6)], "t")
    conf = plots.confusion_png([[5, 1], [0, 7]], ["cat", "dog"], "t")
    scatter = plots.scatter_png(blobs(n=50), ["a", "b"] * 25, "t", "label")
    for png in (loss, conf, scatter):
        assert png.startswith(PNG) and Image.open(io.BytesIO(png)).size[0] >= 400
    assert plots.sample_rows(10).tolist() == list(range(10))
    sample = plots.sample_rows(10_000, 100)
    assert len(sample) == 100 and (np.diff(sample) > 0).all()


def test_plot_endpoints_answer_4xx_saying_why(client, blobs_csv):
    assert client.get("/v1/jobs/job_nope/plots/loss.png").status_code == 404
    assert client.get("/v1/models/mdl_nope/plots/embedding.png").status_code == 404
    bad = client.get("/v1/models/mdl_nope/plots/pie.png")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "kind"
    ds = upload(client, blobs_csv)["body"]
    job = client.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "autoencoder",
                                        "params": {"epochs": 2}}).json()
    queued = client.get(f"/v1/jobs/{job['id']}/plots/loss.png")  # no worker here: still queued
    assert queued.status_code == 409
    assert queued.headers["content-type"] == "application/problem+json"
    assert "queued and no epoch has finished yet" in queued.json()["detail"]


def test_the_api_starts_without_matplotlib_or_torch():
    from tests.ml.test_boundaries import loaded_after_import

    assert loaded_after_import("app.main", forbidden=("matplotlib", "torch")) == []
