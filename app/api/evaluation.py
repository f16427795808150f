"""/v1/models/{id}/evaluate and /v1/models/{id}/labels: a model's yardsticks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from app.api.deps import ProjectDep, ServingDep, SessionDep
from app.api.models import NOT_FOUND
from app.schemas import EvaluateIn, EvaluateOut

router = APIRouter(prefix="/v1/models", tags=["models"])
# Lines of the labels stream per chunk.
LABEL_CHUNK = 8192
LABEL_MEDIA = {"csv": "text/csv", "jsonl": "application/x-ndjson"}


@router.post("/{model_id}/evaluate", response_model=EvaluateOut,
             responses={**NOT_FOUND, 413: {"description": "more rows than "
                                                          "PRETRAINER_EVALUATE_MAX_ROWS"},
                        422: {"description": "columns the model needs are missing, an unknown "
                                             "target, or a model with nothing to score"}})
async def evaluate(model_id: str, body: EvaluateIn, session: SessionDep, service: ServingDep,
                   project: ProjectDep) -> EvaluateOut:
    """Score the model on an uploaded test set with the metrics of its kind.

    Classification: accuracy, macro F1, log loss; regression: RMSE, MAE, R²; clustering (with
    a target): ARI, NMI, purity; autoencoder, vae, pca: reconstruction error. The target
    defaults to the training job's label column when the test set has it.
    """
    model_id = await service.resolve(project, model_id)  # the answer names the model's id
    test, metrics = await service.evaluate(session=session, project=project, model_id=model_id,
                                           dataset_id=body.dataset_id, target=body.target)
    return EvaluateOut(model_id=model_id, dataset_id=body.dataset_id, target=test.target,
                       n_rows=test.n_rows, metrics=metrics)


@router.get("/{model_id}/labels", response_class=StreamingResponse, responses={
    **NOT_FOUND, 200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                       "description": "CSV row,label (or JSON lines with format=jsonl)"},
    422: {"description": "not a clustering, or one trained before labels were kept"}})
async def training_labels(model_id: str, service: ServingDep, project: ProjectDep,
                          format: Annotated[Literal["csv", "jsonl"], Query()] = "csv"
                          ) -> StreamingResponse:
    """A clustering's own labels of its training rows, in the dataset's row order.

    What the fit assigned (agglomerative's and DBSCAN's labels_, k-means' labels_), not
    predict's answer for the same rows. CSV `row,label` or JSON lines {"row", "label"};
    DBSCAN's noise is -1.
    """
    labels = await service.training_labels(project, model_id)
    return StreamingResponse(_lines(labels, format), media_type=LABEL_MEDIA[format],
                             headers={"X-Total-Count": str(len(labels))})


def _lines(labels: np.ndarray, fmt: str) -> Iterator[bytes]:
    if fmt == "csv":
        yield b"row,label\n"
    pattern: Any = "{},{}\n" if fmt == "csv" else '{{"row": {}, "label": {}}}\n'
    for start in range(0, len(labels), LABEL_CHUNK):
        part = labels[start:start + LABEL_CHUNK].tolist()
        yield "".join(pattern.format(start + i, v) for i, v in enumerate(part)).encode()
