"""Predict/embed bodies over HTTP: the media types in and out, the body as serving reads it,
and answers as JSON, NumPy .npy or Arrow IPC streams.

A float matrix as JSON costs a Python object per number on both sides; as .npy it is one
header and a memcpy. What a body holds is decoded, bounded and checked by app.serving.inputs.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from fastapi import Request, Response

from app.serving.inputs import ARROW, BINARY, JSON, NPY, Body


def media_type(header: str | None) -> str:
    """The bare media type of a Content-Type header ('' when absent)."""
    return (header or "").split(";", 1)[0].strip().lower()


def accepted(request: Request) -> str:
    """The response type the client asked for: npy or Arrow when named in Accept, else JSON."""
    accept = request.headers.get("accept", "")
    offered = [media_type(part) for part in accept.split(",")]
    return next((m for m in offered if m in BINARY), JSON)


def body(request: Request) -> Body:
    """The request's body as serving reads it: streamed, or as multipart file parts."""
    return Body(media_type(request.headers.get("content-type")), request.stream(),
                lambda n: _files(request, n))


async def _files(request: Request, max_files: int) -> list[bytes]:
    """The file parts of a multipart body (at most max_files of them), as bytes."""
    form = await request.form(max_files=max_files)
    files = [v for _, v in form.multi_items() if hasattr(v, "read")]
    return [await f.read() for f in files]


def respond(payload: dict[str, Any], main: str, media: str) -> Response:
    """payload as JSON (orjson), as the .npy of its `main` array, or as an Arrow stream."""
    if media == NPY:
        buf = io.BytesIO()
        np.save(buf, np.asarray(payload[main]), allow_pickle=False)
        # Only `main` travels as .npy; name what was left out so clients know to ask for Arrow.
        rest = ",".join(k for k in payload if k != main)
        headers = {"X-Omitted-Fields": rest} if rest else None
        return Response(buf.getvalue(), media_type=NPY, headers=headers)
    if media == ARROW:
        return Response(_arrow_stream(payload), media_type=ARROW)
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type=JSON)


def _arrow_stream(payload: dict[str, Any]) -> bytes:
    """One column per array in payload; rows of 2-D (or more) arrays as fixed-size lists."""
    columns = {}
    for name, value in payload.items():
        arr = np.ascontiguousarray(value)
        if arr.ndim == 1:
            columns[name] = pa.array(arr)
        else:
            flat = arr.reshape(len(arr), -1)
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])
    table = pa.table(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


BINARY_SCHEMA = {"type": "string", "format": "binary"}
NPY_DOC = ("a NumPy .npy 2-D numeric array, rows × the model's features in their order "
           "(no pickles, no object dtype)")
ARROW_DOC = "an Arrow IPC stream with one numeric column per feature, named as in the model"


def request_content() -> dict[str, Any]:
    """OpenAPI requestBody entries for the binary types."""
    return {NPY: {"schema": {**BINARY_SCHEMA, "description": NPY_DOC}},
            ARROW: {"schema": {**BINARY_SCHEMA, "description": ARROW_DOC}}}


def response_content(main: str) -> dict[str, Any]:
    """OpenAPI response entries for the binary types (chosen by the Accept header)."""
    return {NPY: {"schema": {**BINARY_SCHEMA, "description": f"the `{main}` array as .npy; other "
                                                               "fields are named in X-Omitted-Fields"}},
            ARROW: {"schema": {**BINARY_SCHEMA, "description": "an Arrow IPC stream, one column "
                                                                 "per response field"}}}
