"""Upload a 512 MB CSV: throughput in MB/s and the API process's resident memory growth."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from bench._service import service

TARGET_MB = int(os.environ.get("BENCH_INGEST_MB", "512"))


def _api_pid(up_pid: int) -> int:
    out = subprocess.run(["pgrep", "-f", "app.cli api", "-P", str(up_pid)], capture_output=True, text=True,
                         check=False)
    return int(out.stdout.split()[0])


def _rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _make_csv(path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = 200_000
    with path.open("wb") as fh:
        first = True
        while fh.tell() < TARGET_MB * 1024 * 1024:
            block = rng.normal(size=(rows, 16))
            table = pa.table({f"f{i}": block[:, i] for i in range(16)})
            pacsv.write_csv(table, fh, pacsv.WriteOptions(include_header=first))
            first = False


def run() -> dict:
    """Upload with curl (streaming) and read the API's peak RSS before and after."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.csv"
        _make_csv(path)
        size_mb = path.stat().st_size / 1e6
        svc = service(Path(tmp) / "data")
        try:
            pid = _api_pid(svc.proc.pid)
            before = _rss_kb(pid, "VmRSS")
            t0 = time.perf_counter()
            out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                  "-F", f"file=@{path}", f"{svc.base}/v1/datasets"],
                                 capture_output=True, text=True, check=True)
            took = time.perf_counter() - t0
            peak = _rss_kb(pid, "VmHWM")
        finally:
            svc.stop()
    assert out.stdout == "201", out
    growth = (peak - before) / 1024
    print(f"ingest: {size_mb:.0f} MB CSV in {took:.1f} s = {size_mb / took:.0f} MB/s; API peak RSS "
          f"grew {growth:.0f} MB (goal <= 100 MB)")
    return {"size_mb": round(size_mb), "seconds": round(took, 1), "mb_per_s": round(size_mb / took),
            "rss_growth_mb": round(growth), "goal": "rss growth <= 100 MB"}


if __name__ == "__main__":
    run()
