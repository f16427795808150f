"""Dependencies shared by the routers, as Annotated aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.session import get_sessionmaker
from app.services.keys import Caller
from app.serving.cache import ModelCache
from app.serving.neighbors import Neighbors
from app.serving.service import Serving
from app.storage import BlobStore

# Dependencies are `async def` on purpose: FastAPI runs plain `def` dependencies in its thread
# pool, and a hop per dependency per request halves the throughput of a fast predict.


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> BlobStore:
    store: BlobStore = request.app.state.store
    return store


async def get_cache(request: Request) -> ModelCache:
    cache: ModelCache = request.app.state.cache
    return cache


async def get_serving(request: Request) -> Serving:
    serving: Serving = request.app.state.serving
    return serving


async def get_neighbors(request: Request) -> Neighbors:
    neighbors: Neighbors = request.app.state.neighbors
    return neighbors


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


# Declares the scheme in OpenAPI (/docs gets an Authorize button); the header is parsed below,
# so that a malformed one is a 401 that says what is wrong rather than "no key".
_bearer = HTTPBearer(auto_error=False, description="an API key of your project "
                     "(`pretrainer keys create --project NAME`)")


async def get_caller(request: Request, _: Annotated[HTTPAuthorizationCredentials | None,
                                                    Security(_bearer)] = None) -> Caller:
    """The project and key of the request's `Authorization: Bearer <key>`, or a 401."""
    caller: Caller = await request.app.state.access.caller(request.headers.get("authorization"))
    return caller


async def get_project(caller: Annotated[Caller, Depends(get_caller)]) -> str:
    """Every dataset, job and model a request sees belongs to this project."""
    return caller.project


async def limit_serving(request: Request, caller: Annotated[Caller, Depends(get_caller)]) -> None:
    """Per-key rate limit of predict, embed and generate (PRETRAINER_PREDICT_RATE)."""
    request.app.state.rate.take(caller.key_id or caller.project)


class slot_held:
    """One of the project's serving_requests slots, held for the block (429 when none is free).

    A class rather than an @asynccontextmanager generator: predict and embed enter one on
    every call, and the generator machinery costs more than the slot itself.
    """

    __slots__ = ("_project", "_slots")

    def __init__(self, request: Request, project: str) -> None:
        self._slots, self._project = request.app.state.slots, project

    async def __aenter__(self) -> None:
        await self._slots.enter(self._project)

    async def __aexit__(self, *exc: object) -> None:
        self._slots.leave(self._project)


async def serving_slot(request: Request,
                       caller: Annotated[Caller, Depends(get_caller)]) -> AsyncIterator[None]:
    """Hold one of the project's serving_requests slots for the request's duration."""
    async with slot_held(request, caller.project):
        yield


async def serving_project(request: Request) -> str:
    """What get_caller, limit_serving and get_project do, as one plain call.

    predict and embed are the hottest routes; FastAPI's dependency solving of those three
    (and the Bearer scheme under them) costs more than a cached k-means answer. Their router
    (models.serving) is included without the key dependency and its endpoints call this first,
    before touching the body; OpenAPI still declares the Bearer requirement (SERVING_SECURITY).
    """
    caller = await get_caller(request)
    await limit_serving(request, caller)
    return caller.project


# The OpenAPI security requirement the Security(_bearer) dependency declares on other routes.
SERVING_SECURITY: dict[str, Any] = {"security": [{"HTTPBearer": []}]}


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[BlobStore, Depends(get_store)]
CacheDep = Annotated[ModelCache, Depends(get_cache)]
ServingDep = Annotated[Serving, Depends(get_serving)]
NeighborsDep = Annotated[Neighbors, Depends(get_neighbors)]
SessionDep = Annotated[Session, Depends(get_session)]
CallerDep = Annotated[Caller, Depends(get_caller)]
ProjectDep = Annotated[str, Depends(get_project)]
IdempotencyHeader = Annotated[str | None, Header(
    alias="Idempotency-Key", description="a retry with the same key returns the first result")]
Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Offset = Annotated[int, Query(ge=0, le=10**9, description="rows to skip")]
