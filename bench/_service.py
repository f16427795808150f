"""Start and stop real service processes for a benchmark; generate load on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A process group started for the benchmark, always torn down."""

    def __init__(self, cmd: list[str], env: dict[str, str], port: int, ready_path: str) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        # Kept open for the process's lifetime (its stdout), and kept on disk to be read after.
        self.log = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(Path(self.log.name).read_text()[-3000:])
            try:
                if httpx.get(self.base + ready_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"not ready: {cmd}")

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


def service(data_dir: Path, **env_extra: str) -> Proc:
    """`pretrainer up` with a fresh data dir (embedded default unless env says otherwise)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRETRAINER_")}
    env.update(PRETRAINER_PORT=str(port), PRETRAINER_DATA_DIR=str(data_dir), PRETRAINER_LOG_LEVEL="warning")
    env.update(env_extra)
    return Proc([str(BIN / "pretrainer"), "up"], env, port, "/readyz")


@dataclass
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


async def _hammer(url: str, body: bytes, concurrency: int, seconds: float) -> Load:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        async def one() -> None:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                r = await client.post(url, content=body, headers=headers)
                r.raise_for_status()
                latencies.append(time.perf_counter() - t0)
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        took = time.perf_counter() - start
    latencies.sort()
    return Load(len(latencies), took, statistics.median(latencies) * 1e3,
                latencies[int(0.95 * (len(latencies) - 1))] * 1e3)


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(os.getenv("BENCH_BODY_FILE"), "rb"):read()
done = function(summary, latency, requests)
  io.write(string.format("BENCH %d %f %d %d\\n", summary.requests, summary.duration / 1e6,
                         latency:percentile(50), latency:percentile(95)))
end
"""


def _wrk(url: str, body: bytes, concurrency: int, seconds: float) -> Load:
    with tempfile.TemporaryDirectory() as tmp:
        script, payload = Path(tmp) / "post.lua", Path(tmp) / "body.json"
        script.write_text(WRK_SCRIPT)
        payload.write_bytes(body)
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "-s", str(script), url],
            capture_output=True, text=True, check=True, env={**os.environ, "BENCH_BODY_FILE": str(payload)})
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("BENCH "))
    n, took, p50, p95 = line.split()[1:]
    if "Non-2xx" in out.stdout:
        raise RuntimeError(f"non-2xx answers under load:\n{out.stdout}")
    return Load(int(n), float(took), int(p50) / 1e3, int(p95) / 1e3)


def hammer(url: str, body: bytes, concurrency: int = 8, seconds: float = 10.0) -> Load:
    """POST body to url from `concurrency` keep-alive connections for `seconds`.

    wrk (C, one thread) drives the load when it is installed, so the client's own CPU does not
    eat the 2 cores the server runs on; otherwise an asyncio httpx client does. One call first,
    alone: it loads the model (seconds for the first torch model of a process), which would
    otherwise fall into the measured window as a second-long tail.
    """
    httpx.post(url, content=body, headers={"content-type": "application/json"},
               timeout=300).raise_for_status()
    if shutil.which("wrk"):
        _wrk(url, body, concurrency, 1.0)  # warm-up: connections, caches
        return _wrk(url, body, concurrency, seconds)
    asyncio.run(_hammer(url, body, concurrency, 1.0))
    return asyncio.run(_hammer(url, body, concurrency, seconds))


def load_client() -> str:
    """Which client drives the throughput benchmarks."""
    return "wrk" if shutil.which("wrk") else "python httpx (install wrk for a lighter client)"


def redis_pg_env() -> dict[str, str] | None:
    """Broker and database for the production wiring, when the local servers answer."""
    import uuid

    import redis
    from sqlalchemy import create_engine, text

    admin_url = os.environ.get("PRETRAINER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    redis_url = os.environ.get("PRETRAINER_TEST_REDIS", "redis://127.0.0.1:6379/14")
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()
        name = f"pretrainer_bench_{uuid.uuid4().hex[:8]}"
        with create_engine(admin_url, isolation_level="AUTOCOMMIT").connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception:  # noqa: BLE001 - no Redis or PostgreSQL at hand: the embedded setup
        return None
    return {"PRETRAINER_BROKER_URL": redis_url,
            "PRETRAINER_DATABASE_URL": admin_url.rsplit("/", 1)[0] + f"/{name}"}


def drop_database(url: str) -> None:
    """Remove a database made by redis_pg_env."""
    from sqlalchemy import create_engine, text

    admin_url = os.environ.get("PRETRAINER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    name = url.rsplit("/", 1)[1]
    with create_engine(admin_url, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def wait_job(http: httpx.Client, job_id: str, timeout: float = 600, poll: float = 0.02) -> dict:
    """Poll a job until it ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(poll)
    raise TimeoutError(job_id)


def train(http: httpx.Client, filename: str, content: bytes, algorithm: str, params: dict) -> dict:
    """Upload a dataset, train one job on it, and return the job once it has succeeded."""
    ds = http.post("/v1/datasets", files={"file": (filename, content)}).json()
    job = http.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": algorithm,
                                      "params": params}).json()
    done = wait_job(http, job["id"])
    assert done["status"] == "succeeded", done
    return done
