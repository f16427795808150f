"""A k-means job on 200,000 x 32 floats end to end vs bare KMeans.fit + loading the same file."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from sklearn.cluster import KMeans

from bench._service import service, wait_job

ROWS, COLS = 200_000, 32
PARAMS = {"n_clusters": 8, "n_init": 1, "random_state": 0}


def run() -> dict:
    """Ratio of the service's submit-to-succeeded time over load + fit in this process."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.csv"
        x = np.random.default_rng(0).normal(size=(ROWS, COLS))
        x[:, 0] += np.repeat(np.arange(8), ROWS // 8) * 5  # some cluster structure
        pacsv.write_csv(pa.table({f"f{i}": x[:, i] for i in range(COLS)}), path)
        t0 = time.perf_counter()
        loaded = pacsv.read_csv(path).to_pandas().to_numpy()
        ref = KMeans(**PARAMS).fit(loaded)
        bare = time.perf_counter() - t0
        svc = service(Path(tmp) / "data")
        try:
            http = httpx.Client(base_url=svc.base, timeout=120)
            with path.open("rb") as fh:
                ds = http.post("/v1/datasets", files={"file": ("big.csv", fh)}).json()
            t0 = time.perf_counter()
            job = http.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "kmeans",
                                              "params": PARAMS}).json()
            done = wait_job(http, job["id"])
            ours = time.perf_counter() - t0
        finally:
            svc.stop()
    assert done["status"] == "succeeded", done
    same = abs(done["metrics"]["inertia"] - ref.inertia_) <= 1e-6 * ref.inertia_
    ratio = ours / bare
    print(f"training overhead: job {ours:.2f} s end to end vs bare load+fit {bare:.2f} s -> "
          f"{ratio:.2f}x (goal <= 1.2x); same inertia: {same}")
    return {"job_s": round(ours, 2), "bare_s": round(bare, 2), "ratio": round(ratio, 3),
            "same_inertia": same, "goal": "<= 1.2"}


if __name__ == "__main__":
    run()
