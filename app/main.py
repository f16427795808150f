"""create_app(settings) -> FastAPI: wiring only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from app import __version__, logs, reaper
from app.api import (
    algorithms,
    backbones,
    datasets,
    docs,
    errors,
    evaluation,
    health,
    jobs,
    metrics,
    models,
    openapi,
    plots,
    projects,
    tus,
    ui,
)
from app.api.access import Access
from app.api.bounds import BodyLimit, RateLimiter, ServingSlots
from app.api.deps import get_caller, serving_for
from app.config import Settings, get_settings
from app.metrics import Metrics
from app.observe import ObserveMiddleware
from app.serving.cache import settle_heap
from app.storage import StoreOwned, open_store

DESCRIPTION = """Upload a dataset, train an unsupervised, self-supervised or transfer model,
and get predictions and embeddings over HTTP. Errors are RFC 9457 problem+json."""

AUTH: dict[int | str, dict[str, object]] = {
    401: {"description": "no API key, a malformed Authorization header, or an unknown or "
                         "revoked key"}}


# The /v1 routers in the order the OpenAPI document (and so the Postman collection) lists them.
V1_ORDER = (datasets, algorithms, backbones, jobs, models, evaluation, plots, projects)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.access.seed()
    if refusal := reaper.store_refusal(app.state.settings, app.state.store):
        raise StoreOwned(refusal)  # `pretrainer api` says this in one line before it gets here
    stop = reaper.start(app.state.settings, app.state.store)
    settle_heap()
    yield
    stop.set()
    app.state.serving.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API application for settings (default: from the environment)."""
    settings = settings or get_settings()
    logs.configure_structlog()
    app = FastAPI(title="Pretrainer", version=__version__, description=DESCRIPTION,
                  lifespan=_lifespan, docs_url=None, redoc_url=None)  # docs.mount serves them
    app.state.settings = settings
    app.state.store = open_store(settings)
    app.state.serving = serving_for(settings, app.state.store)
    app.state.cache = app.state.serving.cache
    app.state.metrics = Metrics(settings, app.state.cache)
    app.state.access = Access(settings)
    app.state.rate = RateLimiter(settings.predict_rate, settings.predict_burst)
    app.state.slots = ServingSlots(settings)
    # Uploads are bounded by PRETRAINER_MAX_UPLOAD_BYTES while they stream, everything else here.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes,
                       exempt=(("POST", "/v1/datasets"),), exempt_prefixes=(("PATCH", "/v1/uploads/"),))
    errors.install(app)
    # Every /v1 route needs the caller's key; predict and embed check it in their bodies (see
    # deps.serving_project), the others through the router's dependency. Routes are matched in
    # order, a regex each, so the hottest two come first; the document keeps V1_ORDER.
    app.include_router(models.serving, responses=AUTH)
    # /healthz, /readyz and /metrics are public, like /ui and the docs.
    app.include_router(health.router)
    app.include_router(metrics.router)
    for module in V1_ORDER:
        app.include_router(module.router, dependencies=[Depends(get_caller)], responses=AUTH)
    # tus clients discover the server with a bare OPTIONS; every other upload route needs the key.
    app.include_router(tus.router, responses=AUTH)
    ui.mount(app)
    docs.mount(app)
    openapi.install(app, tag_order=[tag for m in (health, *V1_ORDER, tus) for tag in m.router.tags])
    app.add_middleware(ObserveMiddleware, metrics=app.state.metrics)
    return app
