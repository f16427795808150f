"""/v1/models: list, show, delete, and the serving endpoints predict / embed / generate."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute

from app.api import payloads
from app.api.deps import (
    SERVING_SECURITY,
    CacheDep,
    Limit,
    Offset,
    ProjectDep,
    ServingDep,
    SessionDep,
    SettingsDep,
    StoreDep,
    limit_serving,
    serving_project,
    serving_slot,
    slot_held,
)
from app.schemas import (
    EmbedOut,
    GenerateIn,
    GenerateOut,
    InstancesIn,
    JobOut,
    ModelList,
    ModelOut,
    Page,
    PredictOut,
    TrainingEmbeddingOut,
)
from app.services import indexes, models, registry, reproduce
from app.serving.inputs import JSON

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
            response: Response = await endpoint(request.path_params["model_id"], request)
            return response
        return handler


# predict and embed: included without the router-level key dependency (see ServingRoute).
serving = APIRouter(prefix="/v1/models", tags=["models"], route_class=ServingRoute)
Responses = dict[int | str, dict[str, Any]]
NOT_FOUND: Responses = {404: {"description": "no such model"}}
SERVE_ERRORS: Responses = {
    **NOT_FOUND,
    410: {"description": "the model's files are missing from the blob store"},
    413: {"description": "more instances than PRETRAINER_MAX_INSTANCES, or past "
                         "PRETRAINER_MAX_REQUEST_CELLS / PRETRAINER_MAX_REQUEST_PIXELS"},
    422: {"description": "bad instances, or a request the model cannot answer"},
    429: {"description": "more calls than PRETRAINER_PREDICT_RATE for this key, or the "
                         "project's serving_requests quota in flight"}}
RATE_LIMITED = [Depends(limit_serving), Depends(serving_slot)]


def _json(payload: Any) -> Response:
    # orjson writes numpy arrays directly: no per-float Python objects on the way out.
    return payloads.respond(payload, "", JSON)


@router.get("", response_model=ModelList)
def list_models(session: SessionDep, project: ProjectDep, limit: Limit = 50,
                offset: Offset = 0) -> ModelList:
    """The project's models, newest first."""
    rows, total = models.list_(session=session, project=project, limit=limit, offset=offset)
    names = registry.registered_as(session=session, project=project, model_ids=[r.id for r in rows])
    return ModelList(items=[ModelOut.from_row(r, names.get(r.id)) for r in rows], total=total,
                     next=Page.next_offset(offset, len(rows), total))


@router.get("/{model_id}", response_model=ModelOut, responses=NOT_FOUND)
def get_model(model_id: str, session: SessionDep, project: ProjectDep) -> ModelOut:
    """One model: algorithm, input schema, capabilities, training metrics, and the registry
    versions it is. `model_id` may be a reference: `name@version` or `name@alias`."""
    row = models.get(session=session, project=project, model_id=model_id)
    names = registry.registered_as(session=session, project=project, model_ids=[row.id])
    return ModelOut.from_row(row, names.get(row.id))


@router.delete("/{model_id}", status_code=204, response_class=Response,
               responses={**NOT_FOUND, 409: {"description": "other models or active jobs use "
                                                            "this model as their backbone, or "
                                                            "a registry alias points at it"}})
def delete_model(model_id: str, session: SessionDep, store: StoreDep, cache: CacheDep,
                 project: ProjectDep) -> Response:
    """Delete a model and its files."""
    row = models.delete(session=session, project=project, model_id=model_id)
    indexes_key = indexes.forget_model(session=session, project=project, model_id=model_id)
    session.commit()
    cache.evict(row.id)
    store.delete(row.artifact_key)
    store.delete(indexes_key)
    return Response(status_code=204)


INSTANCES_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": InstancesIn.model_json_schema()},
    "multipart/form-data": {"schema": {"type": "object", "properties": {"files": {
        "type": "array", "items": {"type": "string", "format": "binary"},
        "description": "image files, for image models"}}}},
    **payloads.request_content(),
}}}
BINARY_ERRORS: Responses = {415: {"description": "a binary body sent to an image model"}}
SERVING_OPENAPI = {**INSTANCES_BODY, **SERVING_SECURITY}


def _responses(main: str) -> Responses:
    return {200: {"content": payloads.response_content(main)}, **SERVE_ERRORS, **BINARY_ERRORS}


@serving.post("/{model_id}/predict", response_model=PredictOut,
              responses=_responses("predictions"), openapi_extra=SERVING_OPENAPI)
async def predict(model_id: str, request: Request) -> Response:
    """Predict for each instance: cluster, component, reconstruction — as the algorithm does.

    JSON, .npy (`application/x-npy`) or Arrow (`application/vnd.apache.arrow.stream`) in, by
    Content-Type; the same three out, by Accept (.npy carries `predictions` only).
    """
    project = await serving_project(request)
    async with slot_held(request, project):
        answer = await request.app.state.serving.answer(project, model_id, "predict",
                                                        payloads.body(request))
    return payloads.respond(answer, "predictions", payloads.accepted(request))


@serving.post("/{model_id}/embed", response_model=EmbedOut,
              responses=_responses("embeddings"), openapi_extra=SERVING_OPENAPI)
async def embed(model_id: str, request: Request) -> Response:
    """One vector per instance (distances to centroids, component scores, learned codes…).

    JSON, .npy or Arrow in (Content-Type) and out (Accept), as for predict.
    """
    project = await serving_project(request)
    async with slot_held(request, project):
        vectors = await request.app.state.serving.answer(project, model_id, "embed",
                                                         payloads.body(request))
    return payloads.respond({"embeddings": np.ascontiguousarray(vectors)}, "embeddings",
                            payloads.accepted(request))


@router.post("/{model_id}/generate", dependencies=RATE_LIMITED, response_model=GenerateOut,
             responses=SERVE_ERRORS)
async def generate(model_id: str, body: GenerateIn, service: ServingDep,
                   project: ProjectDep) -> Response:
    """n new samples from a generative model."""
    samples = await service.generate(project, model_id, body.n, body.seed)
    return _json({"samples": samples})


@router.get("/{model_id}/embedding", response_model=TrainingEmbeddingOut, responses=SERVE_ERRORS)
async def training_embedding(model_id: str, service: ServingDep,
                             project: ProjectDep) -> Response:
    """The embedding of the training rows (t-SNE's result), in the dataset's row order."""
    emb = await service.training_embedding(project, model_id)
    return _json({"n_rows": int(emb.shape[0]), "n_components": int(emb.shape[1]), "embedding": emb})


# ---- reproduce: rerun a model's training from its record and compare the artifacts ----------


@router.post("/{model_id}/reproduce", status_code=202, response_model=JobOut,
             responses={**NOT_FOUND,
                        409: {"description": "the model has no reproducibility record, or its "
                                             "dataset holds other bytes (sha256) than it did"},
                        410: {"description": "the model's dataset was deleted, or its files are "
                                             "missing from the blob store"},
                        429: {"description": "the project is at its queued_jobs or models quota"}})
def reproduce_model(model_id: str, session: SessionDep, settings: SettingsDep, store: StoreDep,
                    project: ProjectDep) -> JobOut:
    """Retrain the model from its reproducibility record (algorithm, resolved params, seed,
    dataset, features, target) as a job of kind `reproduce`.

    When the job ends, its `metrics` hold `identical` (every artifact file's sha256 equals the
    original's: always so on a CPU) and `max_abs_diff` (the largest difference between their
    weights and arrays, 0.0 when identical), with the new model's own metrics.
    """
    return JobOut.from_row(reproduce.submit(session=session, project=project, model_id=model_id,
                                            settings=settings, store=store))
