"""/v1/models/{id}/indexes and /v1/models/{id}/neighbors: nearest neighbours over embeddings."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api import payloads
from app.api.deps import (
    Limit,
    NeighborsDep,
    Offset,
    ProjectDep,
    SessionDep,
    SettingsDep,
    StoreDep,
)
from app.api.models import RATE_LIMITED, SERVE_ERRORS, Responses
from app.schemas import IndexCreate, IndexList, IndexOut, NeighborsIn, NeighborsOut, Page
from app.services import indexes
from app.services.indexes import IndexSpec
from app.serving.inputs import JSON

router = APIRouter(prefix="/v1/models", tags=["indexes"])
NOT_FOUND: Responses = {404: {"description": "no such model or index"}}


@router.post("/{model_id}/indexes", status_code=202, response_model=IndexOut, responses={
    **NOT_FOUND,
    410: {"description": "the dataset's or the model's files are missing from the blob store"},
    422: {"description": "a model that cannot embed, a dataset without the model's columns "
                         "(or with images of another size), an unknown label_column, bad params"},
    429: {"description": "the project is at its queued_jobs quota"}})
def create_index(model_id: str, body: IndexCreate, session: SessionDep, settings: SettingsDep,
                 store: StoreDep, project: ProjectDep) -> IndexOut:
    """Build a nearest-neighbour index of a dataset's embeddings under the model.

    A job (kind "index", see job_id) embeds every row as /embed would and builds an HNSW
    graph; the index answers /neighbors once its status is succeeded.
    """
    spec = IndexSpec(dataset_id=body.dataset_id, metric=body.metric, params=body.params,
                     label_column=body.label_column)
    return IndexOut.from_view(indexes.create(session=session, project=project,
                                             model_id=model_id, spec=spec, settings=settings,
                                             store=store))


@router.get("/{model_id}/indexes", response_model=IndexList, responses=NOT_FOUND)
def list_indexes(model_id: str, session: SessionDep, project: ProjectDep, limit: Limit = 50,
                 offset: Offset = 0) -> IndexList:
    """The model's indexes, newest first, with their build status."""
    views, total = indexes.list_(session=session, project=project, model_id=model_id,
                                 limit=limit, offset=offset)
    return IndexList(items=[IndexOut.from_view(v) for v in views], total=total,
                     next=Page.next_offset(offset, len(views), total))


@router.get("/{model_id}/indexes/{index_id}", response_model=IndexOut, responses=NOT_FOUND)
def get_index(model_id: str, index_id: str, session: SessionDep,
              project: ProjectDep) -> IndexOut:
    """One index: its status (its job's), size, metric and params."""
    return IndexOut.from_view(indexes.get(session=session, project=project, model_id=model_id,
                                          index_id=index_id))


@router.delete("/{model_id}/indexes/{index_id}", status_code=204, response_class=Response,
               responses=NOT_FOUND)
def delete_index(model_id: str, index_id: str, session: SessionDep, store: StoreDep,
                 neighbors: NeighborsDep, project: ProjectDep) -> Response:
    """Delete an index and its files (a build still queued or running is cancelled)."""
    key = indexes.delete(session=session, project=project, model_id=model_id,
                         index_id=index_id)
    session.commit()
    neighbors.cache.evict(index_id)
    store.delete(key)
    return Response(status_code=204)


@router.post("/{model_id}/neighbors", dependencies=RATE_LIMITED, response_model=NeighborsOut,
             responses={**SERVE_ERRORS, 409: {"description": "the index (index_id, or the "
                                                             "model's newest) is not ready"}})
async def neighbors(model_id: str, body: NeighborsIn, service: NeighborsDep,
                    project: ProjectDep) -> Response:
    """The k nearest indexed rows of each instance: {row, distance, id?, label?}.

    Instances are embedded exactly as /embed embeds them; distances are the index's metric
    (cosine: 1 - cosine similarity, l2: Euclidean). k is cut to the index's size.
    """
    answer = await service.answer(project=project, model_id=model_id,
                                  instances=body.instances, k=body.k, index_id=body.index_id)
    return payloads.respond(answer, "", JSON)
