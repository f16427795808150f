"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app import logs
from app.api.deps import SessionDep, SettingsDep, StoreDep
from app.queue import ping_broker
from app.schemas import Health

router = APIRouter(tags=["health"])
log = logs.get_logger("pretrainer.api.health")


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (answered on the event loop: no thread pool to wait for)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(session: SessionDep, store: StoreDep, settings: SettingsDep) -> JSONResponse:
    """The database, the broker and the blob store all answer.

    A failed check says only `error`: the probe is public, and the reason (hosts, ports,
    exception text) is for the operator's log, not for whoever asks.
    """
    checks: dict[str, str] = {}
    probes = {
        "database": lambda: session.execute(text("SELECT 1")),
        "broker": lambda: ping_broker(settings),
        "store": store.check,
    }
    for name, probe in probes.items():
        try:
            probe()
            checks[name] = "ok"
        except Exception:  # a probe reports, it does not raise
            log.warning("ready.check_failed", check=name, exc_info=True)
            checks[name] = "error"
    ok = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
