"""`pretrainer up | api | worker | migrate | keys | quotas | postman`: the service's processes,
its API keys, the projects' quotas and the generated Postman collection."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from app import logs
from app.config import Settings, get_settings
from pretrainer_client import cli as client_cli

log = logs.get_logger("pretrainer.cli")


def _settings_env(args: argparse.Namespace) -> None:
    # Command-line flags win over the environment; children inherit them through it.
    for flag in ("host", "port", "data_dir"):
        value = getattr(args, flag, None)
        if value is not None:
            os.environ[f"PRETRAINER_{flag.upper()}"] = str(value)
    get_settings.cache_clear()


def cmd_migrate(settings: Settings) -> int:
    """Create or upgrade the database schema; a database that cannot be opened is one line."""
    from sqlalchemy.exc import OperationalError

    from app.db.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        upgrade(settings.resolved_database_url)
    except OperationalError as exc:
        print(f"error: {database_problem(settings.resolved_database_url, exc)}", file=sys.stderr)
        return 2
    log.info("db.migrated", url=_redact(settings.resolved_database_url))
    return 0


def database_problem(url: str, exc: Exception) -> str:
    """What is wrong with the database at url, and what to do, in one line."""
    from sqlalchemy.engine import make_url

    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    where = _redact(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return f"cannot open the database {where}: {reason} (PRETRAINER_DATABASE_URL)"
    if "does not exist" in reason and "database" in reason:
        return (f"the database {parsed.database!r} does not exist on {parsed.host}:"
                f"{parsed.port or 5432}; create it once with `createdb -h {parsed.host} "
                f"-p {parsed.port or 5432} -U {parsed.username or 'postgres'} {parsed.database}`")
    return (f"cannot reach PostgreSQL at {where}: {reason} (is it running? "
            "PRETRAINER_DATABASE_URL names it)")


def port_problem(settings: Settings) -> str | None:
    """Why the API cannot listen on its host and port, or None when it can."""
    import socket

    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((settings.host, settings.port))
        except OSError as exc:
            return (f"cannot listen on {settings.host}:{settings.port} ({exc.strerror}); "
                    "another program holds the port: choose a free one with "
                    f"PRETRAINER_PORT={settings.port + 1} (or --port)")
    return None


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def open_refusal(settings: Settings) -> str | None:
    """Why the API must not start: bound beyond loopback with no API key configured."""
    if settings.loopback or settings.seeded_keys:
        return None
    from app.db.session import session_scope
    from app.services import keys

    with session_scope(settings.resolved_database_url) as s:
        if keys.any_active(session=s):
            return None
    return (f"refusing to serve on {settings.host} without API keys: anyone who can reach it "
            "could read and train on every dataset. Create one with `pretrainer keys create "
            "--project NAME` or set PRETRAINER_API_KEYS=project:key, or bind to 127.0.0.1.")


def store_refusal(settings: Settings) -> str | None:
    """Why no process may start on this blob store: another database owns it."""
    from app.reaper import store_refusal
    from app.storage import open_store

    return store_refusal(settings, open_store(settings))


def cmd_api(settings: Settings) -> int:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if reason := open_refusal(settings) or store_refusal(settings):
        log.error("api.refused", reason=reason)
        return 2
    if reason := port_problem(settings):
        print(f"error: {reason}", file=sys.stderr)
        return 2
    uvicorn.run("app.main:create_app", factory=True, host=settings.host, port=settings.port,
                workers=settings.api_workers, loop=settings.api_loop, log_level=settings.log_level,
                access_log=False, log_config=logs.dict_config(settings.log_level))
    return 0


def cmd_worker_ping(settings: Settings) -> int:
    """Exit 0 when a worker on this host answers a Celery ping, else 1 (the healthcheck)."""
    import socket

    from app.queue import ping_workers

    names = ping_workers(settings, host=socket.gethostname())
    log.info("worker.ping", answered=",".join(names) or "none")
    return 0 if names else 1


def cmd_worker(settings: Settings, queues: str | None, concurrency: int | None) -> int:
    """Run a Celery worker on the given queues."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if reason := store_refusal(settings):
        log.error("worker.refused", reason=reason)
        return 2
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
    if code := cmd_migrate(settings):
        return code
    if reason := open_refusal(settings) or store_refusal(settings):
        log.error("up.refused", reason=reason)
        return 2
    if reason := port_problem(settings):  # before the worker starts, so nothing is left running
        print(f"error: {reason}", file=sys.stderr)
        return 2
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    api, worker = _spawn("api"), _spawn("worker")
    log.info("up", api=f"http://{settings.host}:{settings.port}", pid_api=api.pid,
             pid_worker=worker.pid)
    restarts: list[float] = []
    while not stopping:
        time.sleep(0.2)
        if api.poll() is not None:
            log.error("up.api_exited", returncode=api.returncode, then="stopping")
            break
        if worker.poll() is not None:
            restarts = [t for t in restarts if time.monotonic() - t < 60] + [time.monotonic()]
            delay = min(2 ** (len(restarts) - 1), 30)  # back off a worker that keeps dying
            log.warning("up.worker_exited", returncode=worker.returncode, restart_in_s=delay)
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


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    """Create, list or revoke API keys; a new key is printed once and only its hash is kept."""
    from app.db.session import session_scope
    from app.errors import Problem
    from app.services import keys

    if code := cmd_migrate(settings):  # a fresh deployment's first command may be its first key
        return code
    try:
        with session_scope(settings.resolved_database_url) as s:
            if args.action == "create":
                row, key = keys.create(session=s, project=args.project, name=args.name)
                print(key)  # alone on stdout, for scripts: KEY=$(pretrainer keys create …)
                print(f"id {row.id}, project {row.project}: the key is shown once, store it now",
                      file=sys.stderr)
            elif args.action == "list":
                for row in keys.list_(session=s, project=args.project):
                    state = (f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at
                             else "active")
                    print(f"{row.id}  {row.prefix}…  {row.project}  {state}  {row.name or ''}")
            else:
                row = keys.revoke(session=s, key_id=args.key)
                print(f"revoked {row.id} ({row.prefix}…) of project {row.project}")
    except Problem as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    return 0


def cmd_quotas(settings: Settings, args: argparse.Namespace) -> int:
    """Set or show projects' quotas; a quota a project does not set follows PRETRAINER_QUOTA_*."""
    from app.config import QUOTAS
    from app.db.session import session_scope
    from app.errors import Problem
    from app.services import quotas

    cmd_migrate(settings)
    try:
        with session_scope(settings.resolved_database_url) as s:
            if args.action == "set":
                values = {n: getattr(args, n) for n in QUOTAS if getattr(args, n) is not None}
                if not values:
                    print("error: name at least one quota, e.g. --datasets 100", file=sys.stderr)
                    return 2
                quotas.set_(session=s, project=args.project,
                            values={n: None if v == "default" else int(v)
                                    for n, v in values.items()})
            projects = [args.project] if args.project else list(quotas.own(session=s))
            for project in projects:
                for q in quotas.describe(session=s, project=project,
                                         defaults=settings.quota_defaults, in_flight=0):
                    source = "project" if q.own else "settings"
                    used = "-" if q.name == "serving_requests" else q.used
                    print(f"{project}  {q.name}  limit {q.limit}  used {used}  ({source})")
    except Problem as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    return 0


def cmd_postman(args: argparse.Namespace) -> int:
    """Write the Postman collection and environment generated from the OpenAPI document."""
    from app import postman  # loads the whole server when no --openapi is given

    postman.write(args.out or postman.OUT, args.openapi)
    return 0


def _quota_value(text: str) -> str:
    if text != "default" and not (text.isdigit() and int(text) >= 0):
        raise argparse.ArgumentTypeError("a whole number of 0 or more, or `default`")
    return text


def _quotas_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from app.config import QUOTAS

    quotas = sub.add_parser("quotas", help="set or show projects' quotas")
    actions = quotas.add_subparsers(dest="action", required=True)
    set_ = actions.add_parser("set", help="a project's own quotas (`default`: the setting's)")
    set_.add_argument("project")
    for name in QUOTAS:
        set_.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_quota_value,
                          default=None, metavar="N")
    show = actions.add_parser("show", help="limits and use (every project that sets its own, "
                                           "when none is named)")
    show.add_argument("project", nargs="?", default=None)
    for action in (set_, show):
        action.add_argument("--data-dir", dest="data_dir", default=None)


def _keys_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="create, list or revoke API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new key for a project, printed once")
    create.add_argument("--project", required=True)
    create.add_argument("--name", default=None, help="a note: who or what uses the key")
    listing = actions.add_parser("list", help="keys by prefix (the keys themselves are not kept)")
    listing.add_argument("--project", default=None)
    revoke = actions.add_parser("revoke", help="refuse a key (within PRETRAINER_KEY_CACHE_SECONDS on a running API)")
    revoke.add_argument("key", help="the key's id or its prefix")
    for action in (create, listing, revoke):
        action.add_argument("--data-dir", dest="data_dir", default=None)


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
            cmd.add_argument("--ping", action="store_true",
                             help="exit 0 if a worker on this host answers, else 1; starts none")
    _keys_parser(sub)
    _quotas_parser(sub)
    postman = sub.add_parser("postman", help="write postman/ from the OpenAPI document")
    postman.add_argument("--openapi", default=None, help="a file or URL of the OpenAPI document; "
                                                         "default: the app in this checkout")
    postman.add_argument("--out", type=Path, default=None, help="default: postman/")
    client_cli.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pretrainer` console script."""
    args = parser().parse_args(argv)
    if hasattr(args, "client_run"):
        return client_cli.run(args)
    if args.command == "postman":
        return cmd_postman(args)
    _settings_env(args)
    settings = get_settings()
    logs.configure(settings.log_level)
    if args.command == "migrate":
        return cmd_migrate(settings)
    if args.command == "api":
        return cmd_api(settings)
    if args.command == "worker" and args.ping:
        return cmd_worker_ping(settings)
    if args.command == "worker":
        return cmd_worker(settings, args.queues, args.concurrency)
    if args.command == "keys":
        return cmd_keys(settings, args)
    if args.command == "quotas":
        return cmd_quotas(settings, args)
    return cmd_up(settings)


if __name__ == "__main__":
    sys.exit(main())
