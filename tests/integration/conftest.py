"""Real processes: the API and a Celery worker started the way a user starts them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.chromium import Browser

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("PRETRAINER_TEST_REDIS", "redis://127.0.0.1:6379/15")
PG_ADMIN = os.environ.get("PRETRAINER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(http: httpx.Client, proc: subprocess.Popen[bytes], log: Path,
               timeout: float = 120) -> None:
    """Wait for GET /readyz to answer 200; fail with the log's tail if proc exits or time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited early:\n{log.read_text()[-4000:]}")
        try:
            if http.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"service not ready in {timeout}s:\n{log.read_text()[-4000:]}")


class Service:
    """A started `make run` / `pretrainer up`, stopped as a whole process group."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.data_dir = Path(env["PRETRAINER_DATA_DIR"])
        self.database_url = env.get("PRETRAINER_DATABASE_URL", "")
        self.log = log
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.http = httpx.Client(base_url=self.base, timeout=30)

    def wait_ready(self, timeout: float = 120) -> None:
        wait_ready(self.http, self.proc, self.log, timeout)

    def stop(self) -> None:
        self.begin_stop()
        self.finish_stop()

    def begin_stop(self) -> None:
        """Ask the service to stop; it ends in finish_stop."""
        self.http.close()
        terminate(self.proc)

    def finish_stop(self) -> None:
        """Wait for the stop begun by begin_stop; nothing of it is left."""
        reap(self.proc)


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the leader of proc's group alone, as `docker stop` sends it.

    The leader (make, `pretrainer up`, a worker) stops its own children. A SIGTERM to the whole
    group also reaches a worker's pool children, and one that dies holding the pool's queue
    lock leaves the worker hung until a SIGKILL (a billiard deadlock).
    """
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)


def reap(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait up to timeout for proc, then SIGKILL what is left of its group: nothing of ours may
    outlive the test (a stray worker would eat later tests' jobs)."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# Services of make_run still stopping; all of them end before the session does.
_STOPPING: list[Service] = []


@pytest.fixture(scope="session", autouse=True)
def _stopping_services_end_with_the_session() -> Iterator[None]:
    yield
    while _STOPPING:
        _STOPPING.pop().finish_stop()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PRETRAINER_", "MAKE")) and k not in ("MFLAGS",)}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The README's own command, `make run`, on the embedded default (SQLite, fs broker)."""
    yield from make_run(tmp_path_factory.mktemp("embedded"))


def make_run(tmp: Path, **env: str) -> Iterator[Service]:
    """`make run` in tmp with env on top of the embedded default, ready, then stopped."""
    port = free_port()
    svc = Service(["make", "--no-print-directory", "run"],
                  _env(PRETRAINER_PORT=str(port), PRETRAINER_DATA_DIR=str(tmp / "data"), **env),
                  tmp / "service.log", port)
    try:
        svc.wait_ready()
        yield svc
    finally:
        # The service's warm shutdown takes seconds (its worker's loop wakes every 2 s on the
        # filesystem broker, then waits for its pool) and needs no CPU: the next tests run
        # meanwhile. It cannot take their jobs: its broker is a folder of its own data dir.
        svc.begin_stop()
        _STOPPING.append(svc)


def _redis_available() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        return None
    except redis.RedisError as exc:  # refused, timed out, auth: all "not reachable" here
        return f"Redis not reachable at {REDIS_URL}: {exc}"


def _postgres_available() -> str | None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with create_engine(PG_ADMIN).connect() as c:
            c.execute(text("SELECT 1"))
        return None
    except (SQLAlchemyError, ImportError) as exc:  # unreachable, or no PostgreSQL driver
        return f"PostgreSQL not reachable at {PG_ADMIN}: {exc}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty database for this module, dropped afterwards."""
    yield from fresh_postgres("pretrainer_it")


def fresh_postgres(prefix: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards (skips when absent)."""
    reason = _postgres_available()
    if reason:
        pytest.skip(reason)
    from sqlalchemy import create_engine, text

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        from app.db.session import get_engine, get_sessionmaker

        get_engine.cache_clear()
        get_sessionmaker.cache_clear()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    reason = _redis_available()
    if reason:
        pytest.skip(reason)
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.delete("cpu", "gpu")  # leftovers of an earlier, interrupted run
    return REDIS_URL


@pytest.fixture(scope="session")
def production(tmp_path_factory: pytest.TempPathFactory, redis_url: str,
               postgres_url: str) -> Iterator[Service]:
    """`pretrainer up` on Redis and PostgreSQL."""
    tmp = tmp_path_factory.mktemp("production")
    port = free_port()
    env = _env(PRETRAINER_PORT=str(port), PRETRAINER_DATA_DIR=str(tmp / "data"),
               PRETRAINER_BROKER_URL=redis_url, PRETRAINER_DATABASE_URL=postgres_url)
    svc = Service([str(Path(sys.executable).parent / "pretrainer"), "up"], env, tmp / "service.log", port)
    try:
        svc.wait_ready()
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """A headless chromium for a dashboard test (its profile in tmp_path), closed after it."""
    b = Browser(tmp_path)
    try:
        yield b
    finally:
        b.close()
