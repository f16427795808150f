"""No request stalls the API: heavy work off the loop, per-request budgets, bounded uploads.

Each test here failed on the code before these bounds: an image embed decoded on the event
loop, a huge predict body parsed before its count was checked, unbounded form fields, and
datasets whose decoded size or schema had no bound against what was uploaded.
"""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.db.migrate import upgrade
from app.errors import TooLarge
from app.main import create_app
from app.ml import registry
from app.ml.base import FitInput, NullReport, Trained
from app.serving.batcher import MicroBatcher
from app.serving.inputs import InstanceCount
from app.serving.pool import ServingPool
from app.storage import OWNER_KEY
from tests import conftest
from tests.conftest import blobs, small_pngs_zip, to_csv


@contextmanager
def api(tmp_path: Path, **overrides: object) -> Iterator[tuple[TestClient, Settings]]:
    """The API in-process on settings with overrides."""
    s = Settings(data_dir=tmp_path / "data", **overrides)  # type: ignore[arg-type]
    s.data_dir.mkdir(parents=True)
    upgrade(s.resolved_database_url)
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        yield c, s


def trained(client: TestClient, settings: Settings, content: bytes, filename: str,
            algorithm: str, params: dict) -> str:
    """The model id of a job trained in-process on an uploaded file."""
    return conftest.trained(client, settings, content, filename, algorithm, params)[0]


def big_png() -> bytes:
    """A 6000x6000 1-bit PNG: a few KB on the wire, 36M pixels to decode."""
    buf = io.BytesIO()
    im = Image.new("1", (6000, 6000), 1)
    im.paste(0, (0, 0, 3000, 6000))
    im.save(buf, "PNG")
    return buf.getvalue()



def healthz_while(client: TestClient | httpx.Client, heavy: Callable[[], Any]) -> tuple[Any, list[float]]:
    """Run heavy() in a thread; time GET /healthz calls until it ends. (its result, latencies)"""
    out: dict[str, object] = {}
    worker = threading.Thread(target=lambda: out.setdefault("r", heavy()))
    worker.start()
    time.sleep(0.2)  # the heavy request is under way
    latencies = []
    while worker.is_alive():
        t0 = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        latencies.append(time.perf_counter() - t0)
        time.sleep(0.05)
    worker.join()
    return out["r"], latencies


def assert_problem(r, status: int, *words: str) -> dict:
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    for w in words:
        assert w in body["detail"], body
    return body


# --------------------------------------------------------------------------- 1: images


def test_image_decoding_runs_off_the_loop_and_the_pixel_budget_refuses_early(tmp_path):
    with api(tmp_path, max_request_pixels=250_000_000) as (c, s):
        model = trained(c, s, small_pngs_zip(), "imgs.zip", "autoencoder",
                        {"epochs": 1, "batch_size": 16})
        b64 = base64.b64encode(big_png()).decode()
        # Within the budget (6 x 36M pixels): seconds of decoding, and /healthz keeps answering.
        started = time.perf_counter()
        r, latencies = healthz_while(c, lambda: c.post(
            f"/v1/models/{model}/embed", json={"instances": [{"b64": b64}] * 6}))
        took = time.perf_counter() - started
        assert r.status_code == 200, r.text
        assert len(r.json()["embeddings"]) == 6
        assert took > 0.5 and latencies, (took, latencies)  # it really was heavy
        assert max(latencies) < 0.75, (took, latencies)
        # Past the budget: refused from the headers alone, before anything is decoded.
        t0 = time.perf_counter()
        r = c.post(f"/v1/models/{model}/embed", json={"instances": [{"b64": b64}] * 80})
        body = assert_problem(r, 413, "PRETRAINER_MAX_REQUEST_PIXELS", "250000000")
        assert body["errors"][0]["field"] == "instances"
        assert time.perf_counter() - t0 < 2.0


# ----------------------------------------------------------------------- 2: big JSON bodies


def test_a_huge_predict_body_is_refused_while_it_streams(tmp_path):
    with api(tmp_path) as (c, s):
        model = trained(c, s, to_csv(blobs()), "b.csv", "kmeans", {"n_clusters": 3})
        row = b"[1.5,2.5,3.5,4.5]"
        body = b'{"instances":[' + b",".join([row] * 2_000_000) + b"]}"  # 36 MB, 2M rows
        t0 = time.perf_counter()
        r, latencies = healthz_while(c, lambda: c.post(
            f"/v1/models/{model}/predict", content=body,
            headers={"content-type": "application/json"}))
        took = time.perf_counter() - t0
        assert_problem(r, 413, "PRETRAINER_MAX_INSTANCES", "10000")
        assert took < 2.5, took  # parsing 2M rows first took seconds
        assert not latencies or max(latencies) < 0.75, latencies
        # The cells budget: fewer rows than the instance limit, but too many numbers.
        wide = b"[" + b",".join([b"1"] * 300) + b"]"
        r = c.post(f"/v1/models/{model}/predict", content=b'{"instances":[' + b",".join(
            [wide] * 9000) + b"]}", headers={"content-type": "application/json"})
        assert_problem(r, 413, "PRETRAINER_MAX_REQUEST_CELLS", "2000000")
        # The same budget for a binary body.
        buf = io.BytesIO()
        np.save(buf, np.ones((9000, 300)))
        r = c.post(f"/v1/models/{model}/predict", content=buf.getvalue(),
                   headers={"content-type": "application/x-npy"})
        assert_problem(r, 413, "PRETRAINER_MAX_REQUEST_CELLS")
        # A big body within the bounds is parsed off the loop and answered like a small one.
        x = blobs(5000) + 0.01
        many = c.post(f"/v1/models/{model}/predict", json={"instances": x.tolist()})
        few = c.post(f"/v1/models/{model}/predict", json={"instances": x[:10].tolist()})
        assert many.status_code == 200 and len(many.json()["predictions"]) == 5000
        assert many.json()["predictions"][:10] == few.json()["predictions"]


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 10**6])
def test_the_instance_count_is_exact_across_chunk_boundaries(step):
    bodies = [
        (b'{"instances": [[1, 2, 3], [4, 5, 6]]}', 2, 6),
        (b'{"instances": [{"a": 1, "b": "x,]\\"\\\\"}, {"a": 2, "b": "[[,,"}]}', 2, 4),
        (b'{"instances": ["a,b", "c\\\\\\"[", "d"]}', 3, 0),
        (b'{"instances": [{"b64": "AAAA"}, {"b64": "BB=="}]}', 2, 2),
    ]
    for raw, n, cells in bodies:
        counter = InstanceCount(10**9, 10**9)
        for i in range(0, len(raw), step):
            counter.feed(raw[i:i + step])
        assert (counter.instances, counter.cells) == (n, cells), raw
    counter = InstanceCount(2, 10**9)
    with pytest.raises(TooLarge, match="PRETRAINER_MAX_INSTANCES"):
        counter.feed(b'{"instances": [[1], [2], [3]]}')


# --------------------------------------------------------------------------- 3: form fields


def test_an_upload_with_too_many_form_fields_is_413_and_stores_nothing(tmp_path):
    with api(tmp_path) as (c, _):
        fields = "".join(f"--B\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nx\r\n"
                         for i in range(5000))
        body = (fields + "--B\r\nContent-Disposition: form-data; name=\"file\"; "
                "filename=\"d.csv\"\r\n\r\n").encode() + to_csv(blobs(20)) + b"\r\n--B--\r\n"
        r = c.post("/v1/datasets", content=body,
                   headers={"content-type": "multipart/form-data; boundary=B"})
        assert_problem(r, 413, "PRETRAINER_MAX_FORM_FIELDS", "16")
        few_but_big = {f"f{i}": "y" * 4096 for i in range(16)}  # each within its own cap
        r = c.post("/v1/datasets", files={"file": ("d.csv", to_csv(blobs(20)))}, data=few_but_big)
        assert_problem(r, 413, "PRETRAINER_MAX_FORM_FIELD_BYTES")
        assert c.get("/v1/datasets").json()["total"] == 0
        # The ordinary upload, with its `name` field, still works.
        ok = c.post("/v1/datasets", files={"file": ("d.csv", to_csv(blobs(20)))},
                    data={"name": "fine"})
        assert ok.status_code == 201 and ok.json()["name"] == "fine"


# ------------------------------------------------------------------ 4: output bounded by input


def test_a_zip_that_decodes_far_past_its_size_is_413_and_leaves_nothing(tmp_path):
    with api(tmp_path) as (c, s):
        buf = io.BytesIO()
        png = big_png()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for i in range(8):
                z.writestr(f"{i}.png", png)
        r = c.post("/v1/datasets", files={"file": ("bomb.zip", buf.getvalue())})
        assert_problem(r, 413, "PRETRAINER_MAX_DATASET_DECODED_RATIO", "288000000")
        assert c.get("/v1/datasets").json()["total"] == 0
        assert not [p for p in (s.data_dir / "blobs").rglob("*")
                    if p.is_file() and p.name != OWNER_KEY]
    with api(tmp_path / "abs", max_dataset_decoded_bytes=1000) as (c, _):
        r = c.post("/v1/datasets", files={"file": ("imgs.zip", small_pngs_zip(40))})
        assert_problem(r, 413, "PRETRAINER_MAX_DATASET_DECODED_BYTES", "2560")


def test_a_very_wide_array_is_413_and_wide_schemas_are_cut_in_lists(tmp_path):
    with api(tmp_path, list_columns=100) as (c, _):
        buf = io.BytesIO()
        np.save(buf, np.zeros((2, 1_000_000), dtype=bool))
        r = c.post("/v1/datasets", files={"file": ("wide.npy", buf.getvalue())})
        assert_problem(r, 413, "PRETRAINER_MAX_DATASET_COLUMNS", "1000000", "10000")
        buf = io.BytesIO()
        np.save(buf, np.random.default_rng(0).normal(size=(5, 300)))
        ds = c.post("/v1/datasets", files={"file": ("w.npy", buf.getvalue())}).json()
        assert ds["n_columns"] == 300 and len(ds["columns"]) == 300
        assert ds["columns_truncated"] is False
        listed = c.get("/v1/datasets").json()["items"][0]
        assert listed["n_columns"] == 300 and listed["columns_truncated"] is True
        assert [col["name"] for col in listed["columns"]] == [f"x{i}" for i in range(100)]
        item = c.get(f"/v1/datasets/{ds['id']}").json()
        assert len(item["columns"]) == 300 and item["columns_truncated"] is False


# ------------------------------------------------------------ 3 (fast path): sklearn batching


def _model(algorithm: str, x: np.ndarray, **params: object) -> Trained:
    algo = registry.get(algorithm)
    return algo.fit(FitInput(x), algo.own(params), NullReport())


@pytest.mark.parametrize(("algorithm", "params"), [
    ("kmeans", {"n_clusters": 4, "n_init": 2, "random_state": 0}),
    ("minibatch_kmeans", {"n_clusters": 4, "random_state": 0}),
    ("dbscan", {"eps": 1.5}),
    ("agglomerative", {"n_clusters": 3}),
])
def test_batched_sklearn_answers_equal_per_call_answers(algorithm, params):
    x = blobs(400, 5)
    model = _model(algorithm, x, **params)
    assert "predict" in model.row_exact
    fn = model.predict
    calls: list[int] = []

    def counted(rows: np.ndarray) -> dict:
        calls.append(len(rows))
        return fn(rows)

    queries = [x[i:i + 1 + i % 3] + 0.01 * i for i in range(48)]

    async def main() -> list[dict]:
        batcher = MicroBatcher(counted, max_size=64, max_wait=0.0, pool=ServingPool(1),
                               inline=64)
        return await asyncio.gather(*(batcher.submit(q) for q in queries))

    got = asyncio.run(main())
    for q, answer in zip(queries, got):
        assert answer == fn(q)  # identical, not merely close
    assert len(calls) < len(queries) // 4  # concurrent callers shared estimator calls


def test_concurrent_http_predicts_are_batched_and_each_gets_its_own_answer(tmp_path):
    with api(tmp_path) as (c, s):
        model = trained(c, s, to_csv(blobs()), "b.csv", "kmeans",
                        {"n_clusters": 3, "random_state": 0})
        x = blobs() + 0.05
        answers: dict[int, list] = {}

        def call(i: int) -> None:
            r = c.post(f"/v1/models/{model}/predict", json={"instances": x[i:i + 2].tolist()})
            answers[i] = r.json()["predictions"]

        threads = [threading.Thread(target=call, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        alone = c.post(f"/v1/models/{model}/predict", json={"instances": x[:41].tolist()})
        expected = alone.json()["predictions"]
        assert all(answers[i] == expected[i:i + 2] for i in range(40)), answers


# ------------------------------------------------------------- heavy input work in a process


def test_big_bodies_and_images_are_decoded_outside_the_api_process(tmp_path, monkeypatch):
    """Parsing a big body and decoding images hold the GIL: in a thread of the API process they
    stall its event loop (and every other project's requests) for tens of ms at a time. Here the
    parsers are broken in the API process itself; the answers still come, from elsewhere."""
    with api(tmp_path) as (c, s):
        kmeans = trained(c, s, to_csv(blobs()), "b.csv", "kmeans", {"n_clusters": 3})
        images = trained(c, s, small_pngs_zip(), "imgs.zip", "autoencoder",
                         {"epochs": 1, "batch_size": 16})
        x = blobs(3000) + 0.01
        expected = c.post(f"/v1/models/{kmeans}/predict", json={"instances": x.tolist()}).json()
        png = base64.b64encode(big_png()).decode()
        embedded = c.post(f"/v1/models/{images}/embed", json={"instances": [{"b64": png}]})
        assert embedded.status_code == 200, embedded.text

        def in_the_api_process(*args: object, **kwargs: object) -> None:
            raise AssertionError("heavy input work ran in the API process")

        with monkeypatch.context() as patched:  # a big body is parsed elsewhere
            patched.setattr("app.schemas.InstancesIn.model_validate_json",
                            classmethod(in_the_api_process))
            r = c.post(f"/v1/models/{kmeans}/predict", json={"instances": x.tolist()})
        assert r.status_code == 200, r.text
        assert r.json() == expected
        with monkeypatch.context() as patched:  # a small body's image is decoded elsewhere
            patched.setattr("app.data.images.decode_image", in_the_api_process)
            r = c.post(f"/v1/models/{images}/embed", json={"instances": [{"b64": png}]})
        assert r.status_code == 200, r.text
        assert r.json() == embedded.json()


def test_errors_from_the_decode_process_are_the_api_s_own(tmp_path):
    """A refusal raised while decoding elsewhere reaches the client exactly as one raised here."""
    with api(tmp_path) as (c, s):
        model = trained(c, s, to_csv(blobs()), "b.csv", "kmeans", {"n_clusters": 3})
        rows = (blobs(3000) + 0.01).tolist()
        pad = rows[:-1]  # a big body (parsed elsewhere) ending in the small body's last row
        for tail in ([[1.0, "x"]], [[1.0]]):
            small = c.post(f"/v1/models/{model}/predict", json={"instances": tail})
            big = c.post(f"/v1/models/{model}/predict", json={"instances": pad + tail})
            assert small.status_code == big.status_code == 422, (small.text, big.text)
            assert big.json()["errors"][0]["field"] == small.json()["errors"][0]["field"]
        small = c.post(f"/v1/models/{model}/predict", json={"instances": rows[:2], "extra": 1})
        big = c.post(f"/v1/models/{model}/predict", json={"instances": rows, "extra": 1})
        assert small.status_code == big.status_code == 422
        assert big.json()["errors"] == small.json()["errors"]


@contextmanager
def over_tcp(settings: Settings) -> Iterator[str]:
    """The API on a real uvicorn server in a thread, on a free loopback port: its base URL.

    What happens to a body the app did not read is uvicorn's business, which an in-process
    TestClient does not reach.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_the_rest_of_a_refused_body_is_read_at_a_bounded_rate(tmp_path):
    """A body past PRETRAINER_MAX_BODY_BYTES is answered 413 at once, then the rest of it is
    read at PRETRAINER_REFUSED_BODY_RATE, not as fast as the client sends: uvicorn read such
    bodies at ~1 GB/s through the event loop, so a loop of them slowed every other project."""
    mib = 1024 * 1024
    s = Settings(data_dir=tmp_path / "data", max_body_bytes=mib, refused_body_rate=16 * mib)
    s.data_dir.mkdir(parents=True)
    upgrade(s.resolved_database_url)
    with over_tcp(s) as base, httpx.Client(base_url=base, timeout=60) as http:
        # The client reads the answer once its body is sent, and the kernel takes what fits
        # in the sockets' buffers (up to ~36 MiB here): past those, it waits for the drain.
        body = b"x" * (96 * mib)
        t0 = time.perf_counter()
        r, latencies = healthz_while(http, lambda: http.post(
            "/v1/jobs", content=body, headers={"content-type": "application/json"}))
        took = time.perf_counter() - t0
        assert_problem(r, 413, "PRETRAINER_MAX_BODY_BYTES")
        assert r.headers["connection"] == "close"
        # At least 96 - 36 - 16 (the burst) MiB at 16 MiB/s: ~3 s, where it took ~0.1 s.
        assert took > 2.0, took
        assert latencies and max(latencies) < 0.5, latencies
        # The connection is closed after the drain; the next request gets a fresh one.
        assert http.post("/v1/jobs", json={}).status_code == 422


def test_a_refused_body_past_the_linger_time_gets_its_answer_and_the_connection_closes(tmp_path):
    """A client that keeps sending past PRETRAINER_REFUSED_BODY_LINGER_SECONDS is cut off; the
    answer it was sent first is still what it reads."""
    mib = 1024 * 1024
    s = Settings(data_dir=tmp_path / "data", max_body_bytes=mib, refused_body_rate=mib,
                 refused_body_linger_seconds=0.5)
    s.data_dir.mkdir(parents=True)
    upgrade(s.resolved_database_url)
    with over_tcp(s) as base, httpx.Client(base_url=base, timeout=60) as http:
        t0 = time.perf_counter()
        r = http.post("/v1/jobs", content=b"x" * (64 * mib),
                      headers={"content-type": "application/json"})
        took = time.perf_counter() - t0
        assert_problem(r, 413, "PRETRAINER_MAX_BODY_BYTES")
        assert took < 5, took  # 64 MiB at 1 MiB/s would take a minute
        assert http.get("/healthz").status_code == 200
