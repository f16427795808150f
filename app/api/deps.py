"""Dependencies shared by the routers, as Annotated aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.session import get_sessionmaker
from app.serving import ModelCache
from app.storage import BlobStore

# The caller's project; API keys and tenants arrive with the access-control release.
DEFAULT_PROJECT = "default"


# Dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies in its thread
# pool, and a hop per dependency per request halves the throughput of a fast predict.


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> BlobStore:
    return request.app.state.store


async def get_cache(request: Request) -> ModelCache:
    return request.app.state.cache


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session per request; routes that write commit explicitly (enqueue after commit).

    Creating one opens no connection; closing one that was used only returns it to the pool.
    """
    session = get_sessionmaker(request.app.state.settings.resolved_database_url)()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


async def get_project() -> str:
    return DEFAULT_PROJECT


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[BlobStore, Depends(get_store)]
CacheDep = Annotated[ModelCache, Depends(get_cache)]
SessionDep = Annotated[Session, Depends(get_session)]
ProjectDep = Annotated[str, Depends(get_project)]
IdempotencyHeader = Annotated[str | None, Header(
    alias="Idempotency-Key", description="a retry with the same key returns the first result")]
Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Offset = Annotated[int, Query(ge=0, le=10**9, description="rows to skip")]
