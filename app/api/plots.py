"""Pictures: GET /v1/jobs/{id}/plots/loss.png and /v1/models/{id}/plots/{embedding|confusion}.png."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Response

from app.api.deps import CacheDep, ProjectDep, SessionDep, StoreDep
from app.services import pictures

router = APIRouter(tags=["plots"])
PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
             "description": "a PNG image"}}


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-cache"})


@router.get("/v1/jobs/{job_id}/plots/loss.png", response_class=Response, responses={
    **PNG, 404: {"description": "no such job"},
    409: {"description": "the job has no epochs (a scikit-learn job, or none finished yet)"}})
def job_loss_plot(job_id: str, session: SessionDep, project: ProjectDep) -> Response:
    """The job's loss per epoch (val_loss, and the GAN's d_loss / g_loss when present)."""
    return _png(pictures.loss(session=session, project=project, job_id=job_id))


@router.get("/v1/models/{model_id}/plots/{kind}.png", response_class=Response, responses={
    **PNG, 404: {"description": "no such model"},
    410: {"description": "the model's or its training dataset's files are missing from the blob store"},
    409: {"description": "the model has no such picture (a confusion matrix needs a classifier; "
                         "an embedding needs the training dataset)"}})
def model_plot(model_id: str, kind: Literal["embedding", "confusion"], session: SessionDep,
               store: StoreDep, cache: CacheDep, project: ProjectDep) -> Response:
    """`embedding`: a seeded sample of the training rows, embedded by the model, PCA to 2-D,
    coloured by label (or cluster); `confusion`: a classifier's confusion matrix."""
    return _png(pictures.of_model(session=session, project=project, model_id=model_id,
                                  kind=kind, store=store, cache=cache))
