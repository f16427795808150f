"""GET /v1/algorithms: the catalogue is generated from each algorithm's Params model."""

from __future__ import annotations

EXPECTED = {"kmeans", "minibatch_kmeans", "dbscan", "agglomerative", "gmm", "pca", "tsne"}


def test_catalogue_lists_the_unsupervised_family(client):
    items = {a["name"]: a for a in client.get("/v1/algorithms").json()["items"]}
    assert EXPECTED <= set(items)
    for name in EXPECTED:
        assert items[name]["family"] == "unsupervised"
        assert items[name]["data_kinds"] == ["tabular"]
    assert set(items["kmeans"]["capabilities"]) == {"predict", "embed"}
    assert items["tsne"]["capabilities"] == []
    assert "centroid" in items["agglomerative"]["description"]


def test_params_schema_has_bounds_and_defaults(client):
    km = client.get("/v1/algorithms/kmeans").json()["params_schema"]
    n = km["properties"]["n_clusters"]
    assert n["default"] == 8 and n["minimum"] == 1
    assert km.get("additionalProperties") is False
    link = client.get("/v1/algorithms/agglomerative").json()["params_schema"]["properties"]["linkage"]
    assert set(link["enum"]) == {"ward", "complete", "average", "single"}


def test_unknown_algorithm_is_404(client):
    assert client.get("/v1/algorithms/nope").status_code == 404
