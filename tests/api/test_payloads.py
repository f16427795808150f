"""Binary predict/embed: .npy and Arrow bodies in and out give the JSON answer, bad ones a 4xx."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from app.config import Settings
from tests.api.test_models import train
from tests.conftest import blobs

NPY, ARROW = "application/x-npy", "application/vnd.apache.arrow.stream"


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def arrow(columns: dict[str, np.ndarray]) -> bytes:
    table = pa.table(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return bytes(sink.getvalue())


def read_arrow(raw: bytes) -> pa.Table:
    return pa.ipc.open_stream(raw).read_all()


@pytest.fixture
def gmm(client, settings) -> str:
    job = train(client, settings, "gmm", {"n_components": 3, "random_state": 0})
    assert job["status"] == "succeeded", job
    return job["model_id"]


def test_npy_round_trip_equals_json_for_embed_and_predict(client, gmm):
    x = blobs()[:50] + 0.05
    as_json = client.post(f"/v1/models/{gmm}/embed", json={"instances": x.tolist()}).json()
    r = client.post(f"/v1/models/{gmm}/embed", content=npy(x),
                    headers={"content-type": NPY, "accept": NPY})
    assert r.status_code == 200 and r.headers["content-type"] == NPY
    got = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert got.shape == (50, 3)
    np.testing.assert_allclose(got, as_json["embeddings"], rtol=1e-12)

    pred_json = client.post(f"/v1/models/{gmm}/predict", json={"instances": x.tolist()}).json()
    r = client.post(f"/v1/models/{gmm}/predict", content=npy(x),
                    headers={"content-type": NPY, "accept": NPY})
    np.testing.assert_array_equal(np.load(io.BytesIO(r.content)), pred_json["predictions"])
    assert r.headers["x-omitted-fields"] == "probabilities"
    # .npy in, JSON out (no Accept): the same JSON answer.
    r = client.post(f"/v1/models/{gmm}/predict", content=npy(x), headers={"content-type": NPY})
    assert r.headers["content-type"] == "application/json"
    assert r.json()["predictions"] == pred_json["predictions"]
    np.testing.assert_allclose(r.json()["probabilities"], pred_json["probabilities"])


def test_npy_matches_scikit_learn_itself(client, gmm, settings: Settings):
    x = blobs()
    ref = make_pipeline(StandardScaler(), GaussianMixture(n_components=3, random_state=0)).fit(x)
    r = client.post(f"/v1/models/{gmm}/embed", content=npy(x[:20].astype(np.float32)),
                    headers={"content-type": NPY, "accept": NPY})
    expected = ref.predict_proba(x[:20].astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(np.load(io.BytesIO(r.content)), expected, atol=1e-9)


def test_arrow_in_and_out_carries_every_field(client, gmm):
    x = blobs()[:30]
    body = arrow({name: x[:, i] for i, name in enumerate("dcba"[::-1])})
    r = client.post(f"/v1/models/{gmm}/predict", content=body,
                    headers={"content-type": ARROW, "accept": ARROW})
    assert r.status_code == 200 and r.headers["content-type"] == ARROW
    table = read_arrow(r.content)
    ref = client.post(f"/v1/models/{gmm}/predict", json={"instances": x.tolist()}).json()
    assert table.column("predictions").to_pylist() == ref["predictions"]
    np.testing.assert_allclose(np.array(table.column("probabilities").to_pylist()),
                               ref["probabilities"])
    # Columns are matched by name, whatever their order in the stream.
    shuffled = arrow({"d": x[:, 3], "b": x[:, 1], "a": x[:, 0], "c": x[:, 2]})
    r = client.post(f"/v1/models/{gmm}/embed", content=shuffled,
                    headers={"content-type": ARROW, "accept": NPY})
    ref_emb = client.post(f"/v1/models/{gmm}/embed", json={"instances": x.tolist()}).json()
    np.testing.assert_allclose(np.load(io.BytesIO(r.content)), ref_emb["embeddings"])


@pytest.mark.parametrize("body, needle", [
    (b"not an npy file at all", "not a NumPy .npy"),
    (npy(np.array([["a", "b", "c", "d"]], dtype=object)), "not a NumPy .npy"),  # pickled object array
    (npy(np.array([["a", "b", "c", "d"]])), "dtype"),
    (npy(np.zeros((2, 2, 4))), "2-D"),
    (npy(np.array([[1.0, np.nan, 2.0, 3.0]])), "not a finite"),
])
def test_bad_npy_is_422_naming_the_body(client, gmm, body, needle):
    r = client.post(f"/v1/models/{gmm}/predict", content=body, headers={"content-type": NPY})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"][0]["field"] == "body"
    assert needle in r.json()["detail"]


def test_wrong_width_is_422_with_both_numbers(client, gmm):
    r = client.post(f"/v1/models/{gmm}/embed", content=npy(np.zeros((3, 2))),
                    headers={"content-type": NPY})
    assert r.status_code == 422
    assert "2 columns" in r.json()["detail"] and "expected 4" in r.json()["detail"]


def test_bad_arrow_is_422(client, gmm):
    url = f"/v1/models/{gmm}/embed"
    r = client.post(url, content=b"\x00garbage", headers={"content-type": ARROW})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body"
    r = client.post(url, content=arrow({"a": np.zeros(2), "b": np.zeros(2)}),
                    headers={"content-type": ARROW})
    assert r.status_code == 422 and '"c"' in r.json()["detail"]
    r = client.post(url, content=arrow({c: np.array(["x", "y"]) for c in "abcd"}),
                    headers={"content-type": ARROW})
    assert r.status_code == 422


def test_body_over_the_limit_is_413_and_too_many_rows_is_413(tmp_path):
    from fastapi.testclient import TestClient

    from app.db.migrate import upgrade
    from app.main import create_app

    s = Settings(data_dir=tmp_path / "d", max_body_bytes=4096, max_instances=100)
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        model = train(c, s, "kmeans", {"n_clusters": 3})["model_id"]
        r = c.post(f"/v1/models/{model}/embed", content=npy(np.zeros((200, 4))),
                   headers={"content-type": NPY})
        assert r.status_code == 413 and "PRETRAINER_MAX_BODY_BYTES" in r.json()["detail"]
        r = c.post(f"/v1/models/{model}/embed", content=npy(np.zeros((101, 4), dtype=np.int8)),
                   headers={"content-type": NPY})
        assert r.status_code == 413 and "PRETRAINER_MAX_INSTANCES" in r.json()["detail"]


def test_openapi_documents_the_binary_media_types(client):
    spec = client.get("/openapi.json").json()
    for op in ("predict", "embed"):
        post = spec["paths"][f"/v1/models/{{model_id}}/{op}"]["post"]
        assert {NPY, ARROW, "application/json"} <= set(post["requestBody"]["content"])
        assert {NPY, ARROW, "application/json"} <= set(post["responses"]["200"]["content"])
