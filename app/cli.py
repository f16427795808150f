"""`pretrainer up | api | worker | migrate`: the service's processes."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from app import logs
from app.config import Settings, get_settings
from pretrainer_client import cli as client_cli

log = logging.getLogger("pretrainer.cli")


def _settings_env(args: argparse.Namespace) -> None:
    # Command-line flags win over the environment; children inherit them through it.
    for flag in ("host", "port", "data_dir"):
        value = getattr(args, flag, None)
        if value is not None:
            os.environ[f"PRETRAINER_{flag.upper()}"] = str(value)
    get_settings.cache_clear()


def cmd_migrate(settings: Settings) -> int:
    """Create or upgrade the database schema."""
    from app.db.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    log.info("db.migrated url=%s", _redact(settings.resolved_database_url))
    return 0


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def cmd_api(settings: Settings) -> int:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    uvicorn.run("app.main:create_app", factory=True, host=settings.host, port=settings.port,
                workers=settings.api_workers, log_level=settings.log_level, access_log=False,
                log_config=logs.dict_config(settings.log_level))
    return 0


def cmd_worker(settings: Settings, queues: str | None, concurrency: int | None) -> int:
    """Run a Celery worker on the given queues."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    from worker.celery_app import celery

    # --quiet (before the sub-command): no ASCII-art banner on stdout, the log is JSON lines.
    argv = ["--quiet", "worker", "-Q", queues or settings.worker_queues,
            "-c", str(concurrency or settings.worker_concurrency), "--prefetch-multiplier", "1",
            "-n", f"pretrainer-{os.getpid()}@%h", "--loglevel", settings.log_level.upper(),
            "--without-gossip", "--without-mingle", "--without-heartbeat"]
    celery.worker_main(argv=argv)
    return 0


def _spawn(role: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "app.cli", role])


def cmd_up(settings: Settings) -> int:
    """Migrate, then run the API and one worker; restart the worker if it dies."""
    cmd_migrate(settings)
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    api, worker = _spawn("api"), _spawn("worker")
    log.info("up api=http://%s:%s pid_api=%s pid_worker=%s", settings.host, settings.port,
             api.pid, worker.pid)
    restarts: list[float] = []
    while not stopping:
        time.sleep(0.2)
        if api.poll() is not None:
            log.error("api exited with %s; stopping", api.returncode)
            break
        if worker.poll() is not None:
            restarts = [t for t in restarts if time.monotonic() - t < 60] + [time.monotonic()]
            delay = min(2 ** (len(restarts) - 1), 30)  # back off a worker that keeps dying
            log.warning("worker exited with %s; restarting in %ss", worker.returncode, delay)
            time.sleep(delay)
            worker = _spawn("worker")
    for proc in (api, worker):
        if proc.poll() is None:
            proc.terminate()
    for proc in (api, worker):
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0 if stopping else 1


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="pretrainer", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("up", "migrate, then run the API and one worker"),
                       ("api", "run the HTTP API"), ("worker", "run a training worker"),
                       ("migrate", "create or upgrade the database schema")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--data-dir", dest="data_dir", default=None)
        if name in ("up", "api"):
            cmd.add_argument("--host", default=None)
            cmd.add_argument("--port", type=int, default=None)
        if name == "worker":
            cmd.add_argument("--queues", default=None, help="comma-separated, e.g. cpu,gpu")
            cmd.add_argument("--concurrency", type=int, default=None)
    client_cli.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pretrainer` console script."""
    args = parser().parse_args(argv)
    if hasattr(args, "client_run"):
        return client_cli.run(args)
    _settings_env(args)
    settings = get_settings()
    logs.configure(settings.log_level)
    if args.command == "migrate":
        return cmd_migrate(settings)
    if args.command == "api":
        return cmd_api(settings)
    if args.command == "worker":
        return cmd_worker(settings, args.queues, args.concurrency)
    return cmd_up(settings)


if __name__ == "__main__":
    sys.exit(main())
