"""/v1/models: list, show, delete, and the serving endpoints predict / embed / generate."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.api import payloads
from app.api.deps import (
    SERVING_SECURITY,
    CacheDep,
    Limit,
    Offset,
    ProjectDep,
    SessionDep,
    StoreDep,
    limit_serving,
    serving_project,
    serving_slot,
)
from app.config import Settings
from app.data.features import FeatureError
from app.data.images import ImageError, decode_b64, decode_image, image_size
from app.data.loaders import instances_to_matrix
from app.db.session import get_sessionmaker
from app.errors import Invalid, NotFound, Problem, TooLarge, Unsupported, field_error
from app.ml.artifacts import UnsafeArtifact
from app.ml.base import CapabilityError, InputError
from app.schemas import (
    EmbedOut,
    GenerateIn,
    GenerateOut,
    InstancesIn,
    ModelList,
    ModelOut,
    Page,
    PredictOut,
    TrainingEmbeddingOut,
)
from app.services import models
from app.serving import Loaded, ModelCache, ServingPool

log = logging.getLogger("pretrainer.api")
router = APIRouter(prefix="/v1/models", tags=["models"])


class ServingRoute(APIRoute):
    """A route whose endpoint FastAPI calls as `endpoint(model_id, request)`, nothing to solve.

    predict and embed read their body themselves and check the key first thing
    (deps.serving_project), so FastAPI's per-request dependency solving and response handling
    are pure cost on the hottest routes (a tenth of a cached k-means predict). The OpenAPI
    operation still comes from the signature; an endpoint asking for more is refused here.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint
        if list(inspect.signature(endpoint).parameters) != ["model_id", "request"]:
            raise TypeError(f"{endpoint.__name__}: a serving endpoint takes (model_id, request)")

        async def handler(request: Request) -> Response:
            return await endpoint(request.path_params["model_id"], request)
        return handler


# predict and embed: included without the router-level key dependency (see ServingRoute).
serving = APIRouter(prefix="/v1/models", tags=["models"], route_class=ServingRoute)
NOT_FOUND = {404: {"description": "no such model"}}
SERVE_ERRORS = {**NOT_FOUND,
                410: {"description": "the model's files are missing from the blob store"},
                413: {"description": "more instances than PRETRAINER_MAX_INSTANCES, "
                                     "or past PRETRAINER_MAX_REQUEST_CELLS / "
                                     "PRETRAINER_MAX_REQUEST_PIXELS"},
                422: {"description": "bad instances, or a request the model cannot answer"},
                429: {"description": "more calls than PRETRAINER_PREDICT_RATE for this key, "
                                     "or the project's serving_requests quota in flight"}}
RATE_LIMITED = [Depends(limit_serving), Depends(serving_slot)]


def _json(payload: Any) -> Response:
    # orjson writes numpy arrays directly: no per-float Python objects on the way out.
    return payloads.respond(payload, "", payloads.JSON)


@router.get("", response_model=ModelList)
def list_models(session: SessionDep, project: ProjectDep, limit: Limit = 50,
                offset: Offset = 0) -> ModelList:
    """The project's models, newest first."""
    rows, total = models.list_(session=session, project=project, limit=limit, offset=offset)
    return ModelList(items=[ModelOut.from_row(r) for r in rows], total=total,
                     next=Page.next_offset(offset, len(rows), total))


@router.get("/{model_id}", response_model=ModelOut, responses=NOT_FOUND)
def get_model(model_id: str, session: SessionDep, project: ProjectDep) -> ModelOut:
    """One model: algorithm, input schema, capabilities and training metrics."""
    return ModelOut.from_row(models.get(session=session, project=project, model_id=model_id))


@router.delete("/{model_id}", status_code=204, response_class=Response,
               responses={**NOT_FOUND, 409: {"description": "other models or active jobs use "
                                                            "this model as their backbone"}})
def delete_model(model_id: str, session: SessionDep, store: StoreDep, cache: CacheDep,
                 project: ProjectDep) -> Response:
    """Delete a model and its files."""
    key = models.delete(session=session, project=project, model_id=model_id)
    session.commit()
    cache.evict(model_id)
    store.delete(key)
    return Response(status_code=204)


def _row(url: str, project: str, model_id: str) -> Any:
    with get_sessionmaker(url)() as session:
        return models.get(session=session, project=project, model_id=model_id)


async def _loaded(request: Request, model_id: str, project: str) -> Loaded:
    """The cached model, re-checked against its row at most every model_recheck_seconds.

    The hot path touches neither the database nor the thread pool: serving routes take their
    settings and cache from app.state instead of dependencies for the same reason.
    """
    settings, cache = request.app.state.settings, request.app.state.cache
    entry = cache.peek(model_id)
    if (entry is not None and entry.project == project
            and time.monotonic() - entry.checked_at < settings.model_recheck_seconds):
        return entry
    try:
        row = await run_in_threadpool(_row, settings.resolved_database_url, project, model_id)
    except NotFound:
        cache.evict(model_id)
        raise
    if entry is None or entry.project != project:
        try:
            entry = await run_in_threadpool(cache.load, row)
        except UnsafeArtifact as exc:  # tampered or foreign files: refused, never executed
            log.error("model.artifact_refused model_id=%s reason=%s", model_id, exc)
            raise Problem(f"model {model_id}'s stored files failed the safety check and were "
                          "not loaded; it cannot answer until it is trained again", status=500,
                          title="Model artifact refused") from exc
    entry.checked_at = time.monotonic()
    return entry


def _can(entry: Loaded, capability: str) -> None:
    if capability not in entry.capabilities:
        can = ", ".join(entry.capabilities) or "nothing over HTTP"
        extra = (" The embedding of its training rows is at GET /v1/models/{id}/embedding."
                 .replace("{id}", entry.model_id) if entry.trained.has_training_embedding else "")
        raise Invalid(f"a {entry.algorithm} model cannot {capability}; it can: {can}.{extra}",
                      errors=[{"field": "model", "message": f"{capability} is not supported by {entry.algorithm}"}])


def _matrix(entry: Loaded, instances: list[Any], settings: Settings) -> np.ndarray:
    limit = settings.max_instances
    if len(instances) > limit:
        raise TooLarge(f"{len(instances)} instances in one call; the limit is {limit} "
                       "(PRETRAINER_MAX_INSTANCES): split them into calls of at most that many",
                       errors=[{"field": "instances", "message": "too many"}],
                       headers={payloads.MAX_INSTANCES_HEADER: str(limit)})
    if entry.kind == "image":
        return _images(entry, instances, settings)
    if entry.kind == "text":
        return _texts(instances)
    try:
        return instances_to_matrix(instances, entry.features, entry.dtype)
    except FeatureError as exc:
        raise Invalid(exc.message, errors=[{"field": "instances", "message": exc.message}]) from exc


def _images(entry: Loaded, instances: list[Any], settings: Settings) -> np.ndarray:
    """Decode {"b64": …} instances (or raw bytes from a multipart upload) as at training.

    Every header is read first and the request's pixels summed against its budget, so a
    request over it is refused before a single image is decoded. Runs in the serving pool.
    """
    if not instances:
        raise field_error("instances", "is empty; send at least one image")
    s, max_pixels = entry.schema, settings.max_image_pixels
    raws, total = [], 0
    for i, item in enumerate(instances):
        try:
            raw = _image_bytes(item)
            height, width = image_size(raw, max_pixels=max_pixels)
        except ImageError as exc:
            raise field_error(f"instances[{i}]", str(exc)) from exc
        raws.append(raw)
        total += height * width
        if total > settings.max_request_pixels:
            raise TooLarge(f"the images of this call have more than {settings.max_request_pixels}"
                           f" pixels in all (past instances[{i}]); the budget is "
                           f"{settings.max_request_pixels} (PRETRAINER_MAX_REQUEST_PIXELS): send "
                           "fewer or smaller images per call",
                           errors=[{"field": "instances", "message": "too many pixels"}])
    out = np.empty((len(raws), s["height"], s["width"], s["channels"]), dtype=np.uint8)
    for i, raw in enumerate(raws):
        try:
            img = decode_image(raw, height=s["height"], width=s["width"], channels=s["channels"],
                               max_pixels=max_pixels)
        except ImageError as exc:
            raise field_error(f"instances[{i}]", str(exc)) from exc
        out[i] = img.reshape(out.shape[1:])
    return out


def _image_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, dict) and isinstance(item.get("b64"), str):
        return decode_b64(item["b64"])
    raise ImageError('each image instance is {"b64": "<base64 PNG or JPEG>"}')


def _texts(instances: list[Any]) -> np.ndarray:
    """Text instances: strings, or {"text": "..."} objects."""
    if not instances:
        raise field_error("instances", "is empty; send at least one text")
    out = np.empty(len(instances), dtype=object)
    for i, item in enumerate(instances):
        if isinstance(item, dict) and set(item) == {"text"}:
            item = item["text"]
        if not isinstance(item, str):
            raise field_error(f"instances[{i}]", 'a text model takes strings, or {"text": "..."}')
        out[i] = item
    return out


async def _files(request: Request, settings: Settings) -> list[Any]:
    """Image files from a multipart body (at most max_instances of them)."""
    form = await request.form(max_files=settings.max_instances)
    files = [v for _, v in form.multi_items() if hasattr(v, "read")]
    return [await f.read() for f in files]  # type: ignore[union-attr]


def _parse(raw: bytes) -> list[Any]:
    try:
        return InstancesIn.model_validate_json(raw).instances
    except ValidationError as exc:  # the same 422 as a body FastAPI validated itself
        raise RequestValidationError(exc.errors()) from exc


def _from_json(entry: Loaded, raw: bytes, settings: Settings) -> np.ndarray:
    """Parse a JSON body and build the model's input from it (in the serving pool)."""
    return _matrix(entry, _parse(raw), settings)


async def _json_rows(request: Request, entry: Loaded, settings: Settings,
                     pool: ServingPool) -> np.ndarray:
    """The model's input from a JSON body; the loop itself parses only small tabular ones.

    Past inline_body_bytes the body is counted while it streams (an over-limit one is refused
    before it is held whole) and parsed in the pool; images are always decoded there.
    """
    raw, small = await payloads.read_json_body(request, settings)
    if not small:
        return await pool.run(_from_json, entry, raw, settings)
    instances = _parse(raw)
    if entry.kind == "image" or len(instances) > settings.inline_instances:
        return await pool.run(_matrix, entry, instances, settings)
    return _matrix(entry, instances, settings)


def _refused(exc: InputError | CapabilityError) -> Invalid:
    """What a model refuses (bad rows, a capability it lacks) is the client's 422."""
    field = "instances" if isinstance(exc, InputError) else "model"
    return Invalid(str(exc), errors=[{"field": field, "message": str(exc)}])


async def _compute(cache: ModelCache, entry: Loaded, op: str, x: np.ndarray,
                   settings: Settings) -> Any:
    """Run predict/embed: micro-batched for torch models, and for scikit-learn ones whose answer
    a batch does not change (see MicroBatcher: calls that arrive together share one estimator
    call, at the cost of one turn of the loop for a call alone)."""
    if settings.batching and (entry.trained.batchable or (
            settings.sklearn_batching and op in entry.trained.row_exact)):
        try:
            return await cache.batcher(entry, op).submit(x)
        except (InputError, CapabilityError) as exc:
            raise _refused(exc) from exc
    fn = getattr(entry.trained, op)
    return await _answer(lambda: fn(x), len(x), settings.inline_instances, cache.pool)


async def _answer(fn: Callable[[], Any], n: int, inline: int, pool: ServingPool) -> Any:
    # Tiny requests are cheaper inline than a thread hop; big ones must not block the loop.
    # (A plain try, not a context manager: this is on every predict.)
    try:
        return fn() if n <= inline else await pool.run(fn)
    except (InputError, CapabilityError) as exc:
        raise _refused(exc) from exc


async def _binary(request: Request, entry: Loaded, settings: Settings, ctype: str,
                  pool: ServingPool) -> np.ndarray:
    """The rows of an .npy or Arrow body, checked against the model's features."""
    if entry.kind == "image":
        raise Unsupported(f"{ctype} bodies are for tabular models; send images as JSON "
                          '{"instances": [{"b64": …}]} or multipart files',
                          errors=[{"field": "body", "message": f"{ctype} is not accepted here"}])
    raw = await payloads.read_body(request, settings.max_body_bytes)
    if len(raw) <= settings.inline_body_bytes:
        return _binary_rows(raw, ctype, entry, settings)
    return await pool.run(_binary_rows, raw, ctype, entry, settings)


def _binary_rows(raw: bytes, ctype: str, entry: Loaded, settings: Settings) -> np.ndarray:
    arr = payloads.decode(raw, ctype, entry.features)
    if arr.size > settings.max_request_cells:
        raise TooLarge(f"the array has {arr.size} values; the budget is "
                       f"{settings.max_request_cells} per call (PRETRAINER_MAX_REQUEST_CELLS)",
                       errors=[{"field": "body", "message": "too many values"}])
    return payloads.matrix(arr, entry.features, entry.dtype, settings.max_instances)


async def _serve(request: Request, model_id: str, project: str, op: str) -> Any:
    """The shared body of predict and embed: load, check, decode the instances, answer."""
    settings, cache = request.app.state.settings, request.app.state.cache
    entry = await _loaded(request, model_id, project)
    _can(entry, op)
    ctype = payloads.media_type(request.headers.get("content-type"))
    if ctype in payloads.BINARY:
        x = await _binary(request, entry, settings, ctype, cache.pool)
    elif ctype == "multipart/form-data":
        x = await cache.pool.run(_matrix, entry, await _files(request, settings), settings)
    else:
        x = await _json_rows(request, entry, settings, cache.pool)
    return await _compute(cache, entry, op, x, settings)


INSTANCES_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": InstancesIn.model_json_schema()},
    "multipart/form-data": {"schema": {"type": "object", "properties": {"files": {
        "type": "array", "items": {"type": "string", "format": "binary"},
        "description": "image files, for image models"}}}},
    **payloads.request_content(),
}}}
BINARY_ERRORS = {415: {"description": "a binary body sent to an image model"}}
SERVING_OPENAPI = {**INSTANCES_BODY, **SERVING_SECURITY}


def _responses(main: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": payloads.response_content(main)}, **SERVE_ERRORS, **BINARY_ERRORS}


@serving.post("/{model_id}/predict", response_model=PredictOut,
              responses=_responses("predictions"), openapi_extra=SERVING_OPENAPI)
async def predict(model_id: str, request: Request) -> Response:
    """Predict for each instance: cluster, component, reconstruction — as the algorithm does.

    JSON, .npy (`application/x-npy`) or Arrow (`application/vnd.apache.arrow.stream`) in, by
    Content-Type; the same three out, by Accept (.npy carries `predictions` only).
    """
    project, slots = await serving_project(request), request.app.state.slots
    await slots.enter(project)
    try:
        answer = await _serve(request, model_id, project, "predict")
    finally:
        slots.leave(project)
    return payloads.respond(answer, "predictions", payloads.accepted(request))


@serving.post("/{model_id}/embed", response_model=EmbedOut,
              responses=_responses("embeddings"), openapi_extra=SERVING_OPENAPI)
async def embed(model_id: str, request: Request) -> Response:
    """One vector per instance (distances to centroids, component scores, learned codes…).

    JSON, .npy or Arrow in (Content-Type) and out (Accept), as for predict.
    """
    project, slots = await serving_project(request), request.app.state.slots
    await slots.enter(project)
    try:
        vectors = await _serve(request, model_id, project, "embed")
    finally:
        slots.leave(project)
    return payloads.respond({"embeddings": np.ascontiguousarray(vectors)}, "embeddings",
                            payloads.accepted(request))


@router.post("/{model_id}/generate", dependencies=RATE_LIMITED, response_model=GenerateOut,
             responses=SERVE_ERRORS)
async def generate(model_id: str, body: GenerateIn, request: Request,
                   project: ProjectDep) -> Response:
    """n new samples from a generative model."""
    entry = await _loaded(request, model_id, project)
    _can(entry, "generate")
    samples = await _answer(lambda: entry.trained.generate(body.n, body.seed), body.n, 0,
                            request.app.state.cache.pool)
    return _json({"samples": samples})


@router.get("/{model_id}/embedding", response_model=TrainingEmbeddingOut, responses=SERVE_ERRORS)
async def training_embedding(model_id: str, request: Request, project: ProjectDep) -> Response:
    """The embedding of the training rows (t-SNE's result), in the dataset's row order."""
    entry = await _loaded(request, model_id, project)
    emb = getattr(entry.trained, "training_embedding", None)
    if emb is None:
        raise Invalid(f"a {entry.algorithm} model keeps no training embedding; use POST "
                      f"/v1/models/{model_id}/embed to embed rows",
                      errors=[{"field": "model", "message": "no training embedding"}])
    emb = np.ascontiguousarray(emb)
    return _json({"n_rows": int(emb.shape[0]), "n_components": int(emb.shape[1]), "embedding": emb})
