"""Batch prediction: a batch job scoring 1,000,000 x 32 floats with k-means, vs a bare script.

The service path is a whole batch job (claim, model load, read in blocks, predict, Parquet
result, publish, end) run by the worker's own run_job in a fresh process; the bare script, in
another fresh process, loads the same model's scaler and KMeans and the same file in blocks and
calls them. Both report rows/s, and each process its peak RSS growth over what it held before
the work (the peak is reset first through /proc/self/clear_refs).

BENCH_BATCH_ROWS (default 1,000,000) and BENCH_BATCH_FORMAT (parquet or csv) size the data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROWS = int(os.environ.get("BENCH_BATCH_ROWS", "1000000"))
FORMAT = os.environ.get("BENCH_BATCH_FORMAT", "parquet")
WIDTH = 32
BLOCK = 65_536  # the bare script's blocks: the service's default PRETRAINER_BATCH_CHUNK_ROWS


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> int:
    """Forget the process's peak RSS so far; return its RSS now (kB)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _rss_kb("VmRSS")


def _write_data(path: Path, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=5, size=(8, WIDTH))
    writer = None
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        block = centers[rng.integers(0, 8, n)] + rng.normal(size=(n, WIDTH))
        table = pa.table({f"f{i}": block[:, i] for i in range(WIDTH)})
        if FORMAT == "csv":
            writer = writer or pacsv.CSVWriter(str(path), table.schema)
        else:
            writer = writer or pq.ParquetWriter(str(path), table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()


def _setup(data_dir: Path, tmp: Path) -> tuple[str, Path, Path]:
    """(batch job id, the big dataset's file, the model's artifact folder), made over the API:
    k-means trained on 20,000 rows, a batch job queued on the big dataset."""
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.db.migrate import upgrade
    from app.main import create_app
    from app.runner import run_job

    settings = Settings(data_dir=data_dir)
    upgrade(settings.resolved_database_url)
    small, big = tmp / f"train.{FORMAT}", tmp / f"big.{FORMAT}"
    _write_data(small, 20_000, 0)
    _write_data(big, ROWS, 1)
    with TestClient(create_app(settings)) as c:
        def upload(path: Path) -> str:
            with path.open("rb") as fh:
                r = c.post("/v1/datasets", files={"file": (path.name, fh)})
            assert r.status_code == 201, r.text
            return str(r.json()["id"])
        train = c.post("/v1/jobs", json={"dataset_id": upload(small), "algorithm": "kmeans",
                                         "params": {"n_clusters": 8, "random_state": 0}})
        run_job(train.json()["id"], settings=settings, worker="bench")
        model = c.get(f"/v1/jobs/{train.json()['id']}").json()["model_id"]
        job = c.post(f"/v1/models/{model}/batch", json={"dataset_id": upload(big)})
        assert job.status_code == 202, job.text
    return str(job.json()["id"]), big, settings.blob_dir / "models" / model


def _service_child(data_dir: str, job_id: str) -> None:
    # A worker has imported all this before its first job arrives (skops with the first
    # scikit-learn model it loads, and torch with it): not part of the timing or the growth.
    import skops.io  # noqa: F401

    import app.runs.batch  # noqa: F401
    from app.config import Settings
    from app.runner import run_job

    settings = Settings(data_dir=Path(data_dir))
    before = _reset_peak()
    t0 = time.perf_counter()
    run_job(job_id, settings=settings, worker="bench")
    took = time.perf_counter() - t0
    print(json.dumps({"seconds": took, "rss_growth_mb": (_rss_kb("VmHWM") - before) / 1024}))


def _bare_child(path: str, model_dir: str) -> None:
    import skops.io  # noqa: F401  (imports first, as in the service's worker)

    from app.ml import registry

    before = _reset_peak()
    t0 = time.perf_counter()
    model = registry.load_trained("kmeans", Path(model_dir))
    scaler, kmeans = model.scaler, model.estimator  # type: ignore[attr-defined]
    names = [f"f{i}" for i in range(WIDTH)]
    if path.endswith(".csv"):
        batches = pacsv.open_csv(path, convert_options=pacsv.ConvertOptions(
            include_columns=names))
    else:
        batches = pq.ParquetFile(path).iter_batches(batch_size=BLOCK, columns=names)
    labels = []
    for batch in batches:
        x = np.column_stack([batch.column(i).to_numpy() for i in range(WIDTH)])
        labels.append(kmeans.predict(scaler.transform(x)))
    rows = len(np.concatenate(labels))
    took = time.perf_counter() - t0
    print(json.dumps({"seconds": took, "rows": rows,
                      "rss_growth_mb": (_rss_kb("VmHWM") - before) / 1024}))


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.batch_predict", *args],
                         capture_output=True, text=True, check=True, timeout=3600)
    result: dict = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run() -> dict:
    """Set up, then time the service's batch job and the bare script, each in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        job_id, big, model_dir = _setup(data_dir, Path(tmp))
        bare = _child("bare", str(big), str(model_dir))
        service = _child("service", str(data_dir), job_id)
        from app.config import Settings
        from app.db.session import session_scope
        from app.db.tables import Job

        with session_scope(Settings(data_dir=data_dir).resolved_database_url) as s:
            job = s.get(Job, job_id)
            assert job is not None and job.status == "succeeded", job and job.error_message
            rows = int(job.metrics["rows"])
    assert rows == bare["rows"] == ROWS
    ours, theirs = rows / service["seconds"], rows / bare["seconds"]
    ratio = ours / theirs
    print(f"batch_predict: {ROWS:,} x {WIDTH} {FORMAT}, k-means (8 clusters): batch job "
          f"{ours:,.0f} rows/s ({service['seconds']:.2f} s) vs bare {theirs:,.0f} rows/s "
          f"({bare['seconds']:.2f} s) = {ratio:.2f}x (goal >= 0.8x); worker peak RSS growth "
          f"{service['rss_growth_mb']:.0f} MB (goal <= 256 MB; bare "
          f"{bare['rss_growth_mb']:.0f} MB)")
    return {"rows": ROWS, "format": FORMAT, "service_rows_per_s": round(ours),
            "bare_rows_per_s": round(theirs), "ratio": round(ratio, 3),
            "worker_rss_growth_mb": round(service["rss_growth_mb"]),
            "bare_rss_growth_mb": round(bare["rss_growth_mb"]),
            "goal": "ratio >= 0.8, worker rss growth <= 256 MB"}


if __name__ == "__main__":
    if sys.argv[1:2] == ["service"]:
        _service_child(*sys.argv[2:])
    elif sys.argv[1:2] == ["bare"]:
        _bare_child(*sys.argv[2:])
    else:
        run()
