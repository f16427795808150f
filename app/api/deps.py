"""Dependencies shared by the routers, as Annotated aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.session import get_sessionmaker
from app.serving import ModelCache
from app.storage import BlobStore

# The caller's project; API keys and tenants arrive with the access-control release.
DEFAULT_PROJECT = "default"


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> BlobStore:
    return request.app.state.store


def get_cache(request: Request) -> ModelCache:
    return request.app.state.cache


def get_session(request: Request) -> Iterator[Session]:
    """A session per request; routes that write commit explicitly (enqueue after commit)."""
    session = get_sessionmaker(request.app.state.settings.resolved_database_url)()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def get_project() -> str:
    return DEFAULT_PROJECT


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[BlobStore, Depends(get_store)]
CacheDep = Annotated[ModelCache, Depends(get_cache)]
SessionDep = Annotated[Session, Depends(get_session)]
ProjectDep = Annotated[str, Depends(get_project)]
Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Offset = Annotated[int, Query(ge=0, le=10**9, description="rows to skip")]
