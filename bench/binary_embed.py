"""Embedding 10,000 × 384 floats end to end: .npy bodies vs JSON, through the real API.

The model is a PCA with 384 components on 384 features, so the request and the answer are both
10,000 × 384 float64. "End to end" is what a client pays: encode the request, send it, the
service decodes, validates, embeds and encodes the answer, the client decodes it into an array.
The JSON client uses orjson both ways (the fastest JSON there is), so the ratio is the format's,
not a slow client's. Requests run one after another on one connection.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import orjson

from bench._service import service, train

ROWS, WIDTH = 10_000, 384
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def _json_call(http: httpx.Client, url: str, x: np.ndarray) -> np.ndarray:
    body = orjson.dumps({"instances": x}, option=orjson.OPT_SERIALIZE_NUMPY)
    r = http.post(url, content=body, headers={"content-type": "application/json"})
    r.raise_for_status()
    return np.asarray(orjson.loads(r.content)["embeddings"], dtype=np.float64)


def _npy_call(http: httpx.Client, url: str, x: np.ndarray) -> np.ndarray:
    r = http.post(url, content=_npy(x), headers={"content-type": "application/x-npy",
                                                  "accept": "application/x-npy"})
    r.raise_for_status()
    return np.load(io.BytesIO(r.content), allow_pickle=False)


def _timed(call, http: httpx.Client, url: str, x: np.ndarray) -> tuple[float, np.ndarray]:
    out = call(http, url, x)  # warm-up: model load, first-call costs
    took = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        out = call(http, url, x)
        took.append(time.perf_counter() - t0)
    return float(np.median(took)), out


def run() -> dict:
    """Median seconds per 10,000-row call each way, rows/s, and the npy/JSON throughput ratio."""
    rng = np.random.default_rng(0)
    fit_rows = rng.normal(size=(1000, WIDTH))
    x = rng.normal(size=(ROWS, WIDTH))
    with tempfile.TemporaryDirectory() as tmp:
        # The JSON request of 10,000 × 384 floats is about 75 MB: above the default body bound.
        # and 3.84M values, above the default per-call budget of values.
        svc = service(Path(tmp) / "data", PRETRAINER_MAX_BODY_BYTES=str(512 * 1024**2),
                      PRETRAINER_MAX_REQUEST_CELLS=str(ROWS * WIDTH))
        try:
            http = httpx.Client(base_url=svc.base, timeout=600)
            done = train(http, "train.npy", _npy(fit_rows), "pca", {"n_components": WIDTH})
            url = f"/v1/models/{done['model_id']}/embed"
            json_s, json_out = _timed(_json_call, http, url, x)
            npy_s, npy_out = _timed(_npy_call, http, url, x)
        finally:
            svc.stop()
    np.testing.assert_allclose(npy_out, json_out, rtol=1e-9, atol=1e-9)  # same answer both ways
    ratio = json_s / npy_s
    result = {"rows": ROWS, "width": WIDTH, "json_seconds": round(json_s, 3),
              "npy_seconds": round(npy_s, 3), "json_rows_per_s": round(ROWS / json_s),
              "npy_rows_per_s": round(ROWS / npy_s), "ratio": round(ratio, 2), "goal": ">= 5"}
    print(f"embed {ROWS} x {WIDTH} end to end: .npy {npy_s * 1e3:.0f} ms ({ROWS / npy_s:,.0f} rows/s) "
          f"vs JSON {json_s * 1e3:.0f} ms ({ROWS / json_s:,.0f} rows/s) -> {ratio:.1f}x (goal >= 5x)")
    return result


if __name__ == "__main__":
    run()
