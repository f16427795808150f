"""create_app(settings) -> FastAPI: wiring only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from app import __version__, logs, reaper, webhook_sender
from app.api import (
    algorithms,
    backbones,
    batch,
    comparisons,
    datasets,
    docs,
    errors,
    evaluation,
    exports,
    health,
    indexes,
    jobs,
    metrics,
    models,
    openapi,
    plots,
    projects,
    registry,
    sweeps,
    tus,
    ui,
    webhooks,
)
from app.api.access import Access
from app.api.bounds import BodyLimit, RateLimiter, RefusedBodyDrain, ServingSlots
from app.api.deps import get_caller
from app.config import Settings, get_settings
from app.metrics import Metrics
from app.observe import ObserveMiddleware
from app.serving.cache import ModelCache, settle_heap
from app.serving.limits import Limits
from app.serving.neighbors import IndexCache, Neighbors
from app.serving.pool import DecodePool, ServingPool
from app.serving.service import Serving
from app.storage import BlobStore, StoreOwned, open_store

DESCRIPTION = """Upload a dataset, train an unsupervised, self-supervised or transfer model,
and get predictions and embeddings over HTTP. Errors are RFC 9457 problem+json."""

AUTH: dict[int | str, dict[str, object]] = {
    401: {"description": "no API key, a malformed Authorization header, or an unknown or "
                         "revoked key"}}


# The /v1 routers in the order the OpenAPI document (and so the Postman collection) lists them.
V1_ORDER = (datasets, algorithms, backbones, jobs, models, batch, exports, indexes, evaluation,
            plots, registry, sweeps, comparisons, webhooks, projects)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.access.seed()
    if refusal := reaper.store_refusal(app.state.settings, app.state.store):
        raise StoreOwned(refusal)  # `pretrainer api` says this in one line before it gets here
    stop = reaper.start(app.state.settings, app.state.store)
    stop_webhooks = webhook_sender.start(app.state.settings)
    settle_heap()
    yield
    stop.set()
    stop_webhooks.set()
    app.state.serving.close()


def serving_for(settings: Settings, store: BlobStore) -> Serving:
    """The model cache and serving calls of an API process, bounded by its settings."""
    cache = ModelCache(store, settings.model_cache_size, batch_max_size=settings.batch_max_size,
                       batch_max_wait=settings.batch_max_wait_ms / 1000,
                       pool=ServingPool(settings.serving_threads),
                       inline=settings.inline_instances)
    limits = Limits(
        max_instances=settings.max_instances, max_request_cells=settings.max_request_cells,
        max_request_pixels=settings.max_request_pixels,
        max_image_pixels=settings.max_image_pixels, max_body_bytes=settings.max_body_bytes,
        evaluate_max_rows=settings.evaluate_max_rows,
        inline_instances=settings.inline_instances,
        inline_body_bytes=settings.inline_body_bytes,
        model_recheck_seconds=settings.model_recheck_seconds, batching=settings.batching,
        sklearn_batching=settings.sklearn_batching)
    return Serving(cache, limits, settings.resolved_database_url,
                   DecodePool(settings.decode_processes))


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
    app.state.neighbors = Neighbors(app.state.serving,
                                    IndexCache(app.state.store, settings.index_cache_size))
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
    # Outermost: a route's time in the metrics ends with its answer, not with the drain.
    app.add_middleware(RefusedBodyDrain, rate=settings.refused_body_rate,
                       linger=settings.refused_body_linger_seconds)
    return app
