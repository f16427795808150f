"""/v1/models/{id}/export: the model as ONNX or TorchScript files, with its preprocessing."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from app.api.deps import ProjectDep, SessionDep, StoreDep
from app.services import exports

router = APIRouter(prefix="/v1/models", tags=["exports"])

FORMAT = Query(alias="format", min_length=1, max_length=40, examples=["onnx"],
               description="onnx (every model that can be exported) or torchscript (PyTorch "
                           "models)")
ZIP: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
          "description": "a ZIP: one file per endpoint (predict/embed/generate .onnx or .pt), "
                         "preprocess.json, README.md (the model card), tokenizer.json for text"},
    404: {"description": "no such model"},
    410: {"description": "the model's files are missing from the blob store"},
    422: {"description": "a format this model cannot be exported in; the detail names those "
                         "it can"}}


# A plain def: FastAPI runs it in its threadpool, so building an export (seconds for a network)
# never blocks the event loop.
@router.get("/{model_id}/export", response_class=FileResponse, responses=ZIP,
            summary="Export a model to ONNX or TorchScript")
def export_model(model_id: str, session: SessionDep, store: StoreDep, project: ProjectDep,
                 fmt: Annotated[str, FORMAT] = "onnx") -> FileResponse:
    """The model as a ZIP an outside runtime (onnxruntime, torch.jit.load) answers with what
    the service answers: the graphs take the same raw rows (standardisation inside), decoded
    images or token ids; preprocess.json says how to make them. Built on the first request,
    then served from the blob store."""
    path = exports.archive(session=session, store=store, project=project, model_id=model_id,
                           fmt=fmt)
    return FileResponse(path, media_type="application/zip",
                        filename=exports.filename(model_id, fmt))
