"""/v1/datasets: upload (streamed), list, show, delete."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from app.api import uploads
from app.api.deps import (
    IdempotencyHeader,
    Limit,
    Offset,
    ProjectDep,
    SessionDep,
    SettingsDep,
    StoreDep,
)
from app.schemas import DatasetList, DatasetOut, Page
from app.services import datasets

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary",
                         "description": "CSV with a header, Parquet, NPY, JSONL, or a ZIP "
                                        "of PNG/JPEG images (a folder per class if labelled)"},
                "name": {"type": "string", "description": "defaults to the file name"},
            },
        }}},
    }
}


@router.post("", status_code=201, response_model=DatasetOut, openapi_extra=UPLOAD_BODY,
             responses={413: {"description": "larger than PRETRAINER_MAX_UPLOAD_BYTES, a ZIP "
                                              "over a PRETRAINER_MAX_ZIP_* limit, or past the "
                                              "project's stored_bytes quota"},
                        429: {"description": "the project is at its datasets quota"},
                        415: {"description": "not multipart, or a format it does not read"},
                        422: {"description": "empty, ragged, undecodable, unsafe ZIP member: "
                                             "says which row/column/member"}})
async def upload(request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep,
                 project: ProjectDep, idempotency_key: IdempotencyHeader = None) -> DatasetOut:
    """Upload a dataset: the body is streamed to the blob store, then its schema is inferred.

    With an Idempotency-Key header, a retry returns the first upload's dataset.
    """
    form = uploads.FormLimits(max_fields=settings.max_form_fields,
                              max_bytes=settings.max_form_field_bytes)
    row = await datasets.upload(
        session=session, store=store, settings=settings, project=project, key=idempotency_key,
        receive=lambda staged, quota: uploads.receive(request, staged, settings.max_upload_bytes,
                                                      form, quota=quota))
    return DatasetOut.from_row(row)


@router.get("", response_model=DatasetList)
def list_datasets(session: SessionDep, project: ProjectDep, settings: SettingsDep,
                  limit: Limit = 50, offset: Offset = 0) -> DatasetList:
    """The project's datasets, newest first (wide schemas cut to their first columns)."""
    rows, total = datasets.list_(session=session, project=project, limit=limit, offset=offset)
    return DatasetList(items=[DatasetOut.from_row(r, max_columns=settings.list_columns)
                              for r in rows], total=total,
                       next=Page.next_offset(offset, len(rows), total))


@router.get("/{dataset_id}", response_model=DatasetOut, responses={404: {"description": "no such dataset"}})
def get_dataset(dataset_id: str, session: SessionDep, project: ProjectDep) -> DatasetOut:
    """One dataset with its inferred schema."""
    return DatasetOut.from_row(datasets.get(session=session, project=project, dataset_id=dataset_id))


@router.delete("/{dataset_id}", status_code=204, response_class=Response,
               responses={404: {"description": "no such dataset"},
                          409: {"description": "a queued or running job uses it"}})
def delete_dataset(dataset_id: str, session: SessionDep, store: StoreDep, project: ProjectDep) -> Response:
    """Delete a dataset and its bytes (refused while a job still needs it)."""
    prefix = datasets.delete(session=session, project=project, dataset_id=dataset_id)
    session.commit()
    store.delete(prefix)
    return Response(status_code=204)


@router.get("/{dataset_id}/download", response_class=FileResponse, responses={
    404: {"description": "no such dataset"},
    410: {"description": "the dataset's file is missing from the blob store"},
    200: {"description": "the file as uploaded, byte for byte (its sha256 is the dataset's)",
          "content": {"application/octet-stream": {"schema": {"type": "string",
                                                               "format": "binary"}}}}})
def download_dataset(dataset_id: str, session: SessionDep, store: StoreDep,
                     project: ProjectDep) -> FileResponse:
    """The dataset's original file, streamed."""
    row, path = datasets.stored_file(session=session, store=store, project=project,
                                     dataset_id=dataset_id)
    return FileResponse(path, media_type="application/octet-stream",
                        filename=f"{row.id}.{row.format}")


@router.get("/{dataset_id}/export.csv", response_class=StreamingResponse, responses={
    404: {"description": "no such dataset"},
    410: {"description": "the dataset's file is missing from the blob store"},
    422: {"description": "an image dataset: download its ZIP instead"},
    200: {"description": "the rows as CSV with a header; text cells that a spreadsheet would "
                         "run as a formula (= + - @) are prefixed with '",
          "content": {"text/csv": {"schema": {"type": "string"}}}}})
def export_dataset(dataset_id: str, session: SessionDep, store: StoreDep,
                   project: ProjectDep) -> StreamingResponse:
    """A tabular dataset's rows as CSV, safe to open in a spreadsheet."""
    chunks = datasets.export_csv(session=session, store=store, project=project,
                                 dataset_id=dataset_id)
    return StreamingResponse(chunks, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{dataset_id}.csv"'})
