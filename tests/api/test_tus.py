"""Resumable uploads (tus 1.0 at /v1/uploads) through the API in-process: the protocol's
answers, quotas, expiry, project isolation, and a completed upload inspected exactly like
POST /v1/datasets inspects one."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from app.config import Settings
from app.db.migrate import upgrade
from app.db.session import session_scope
from app.main import create_app
from app.services import quotas
from tests.conftest import blobs, to_csv

KEYS = "alpha:key-alpha-0123456789,beta:key-beta-0123456789"
A = {"Authorization": "Bearer key-alpha-0123456789", "Tus-Resumable": "1.0.0"}
B = {"Authorization": "Bearer key-beta-0123456789", "Tus-Resumable": "1.0.0"}
STREAM = "application/offset+octet-stream"


@contextmanager
def api(tmp_path: Path, **settings: object) -> Iterator[tuple[TestClient, Settings]]:
    s = Settings(data_dir=tmp_path / "d", api_keys=KEYS, quota_recheck_seconds=0, **settings)
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        yield c, s


def _meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def _create(c: TestClient, length: int, headers=A, **meta: str):
    return c.post("/v1/uploads", headers={**headers, "Upload-Length": str(length),
                                          "Upload-Metadata": _meta(**meta)})


def _patch(c: TestClient, url: str, body: bytes, offset: int, headers=A, **extra: str):
    return c.patch(url, content=body, headers={**headers, "Content-Type": STREAM,
                                               "Upload-Offset": str(offset), **extra})


def _settled(c: TestClient, url: str, headers=A) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = c.get(url, headers=headers).json()
        if body["status"] not in ("uploading", "inspecting"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"upload still {body['status']}")


def _staged(s: Settings) -> list[Path]:
    folder = s.blob_dir / ".uploads"
    return sorted(p for p in folder.iterdir() if p.stat().st_size) if folder.is_dir() else []


def test_options_announces_the_protocol(tmp_path):
    with api(tmp_path, max_upload_bytes=10**9) as (c, _):
        r = c.options("/v1/uploads")  # discovery needs no key
        assert r.status_code == 204
        assert r.headers["tus-version"] == "1.0.0"
        assert set(r.headers["tus-extension"].split(",")) >= {
            "creation", "termination", "checksum", "expiration"}
        assert r.headers["tus-max-size"] == str(10**9)
        assert set(r.headers["tus-checksum-algorithm"].split(",")) == {"sha1", "sha256", "md5"}
        assert "Upload-Offset" in r.headers["access-control-expose-headers"]


def test_chunks_become_the_dataset_multipart_would_make(tmp_path):
    data = to_csv(blobs(200))
    with api(tmp_path) as (c, s):
        r = _create(c, len(data), filename="blobs.csv", name="my blobs")
        assert r.status_code == 201, r.text
        url = r.headers["location"]
        assert url.startswith("/v1/uploads/up_") and "upload-expires" in r.headers
        assert c.head(url, headers=A).headers["upload-offset"] == "0"
        third = len(data) // 3
        for start in (0, third, 2 * third):
            end = len(data) if start == 2 * third else start + third
            r = _patch(c, url, data[start:end], start)
            assert r.status_code == 204, r.text
            assert r.headers["upload-offset"] == str(end)
        head = c.head(url, headers=A)
        assert (head.headers["upload-offset"], head.headers["upload-length"]) == (
            str(len(data)), str(len(data)))
        done = _settled(c, url)
        assert done["status"] == "ready" and done["offset"] == done["length"] == len(data)
        ds = c.get(f"/v1/datasets/{done['dataset_id']}", headers=A).json()
        multipart = c.post("/v1/datasets", files={"file": ("blobs.csv", data)}, headers=A).json()
        assert ds["name"] == "my blobs" and ds["sha256"] == hashlib.sha256(data).hexdigest()
        for key in ("kind", "format", "n_rows", "columns", "size_bytes", "sha256"):
            assert ds[key] == multipart[key], key
        assert c.get(f"/v1/datasets/{ds['id']}/download", headers=A).content == data
        assert _staged(s) == []  # the staged bytes became the dataset's


def test_a_refused_file_fails_with_the_problem_multipart_gets(tmp_path):
    ragged = b"a,b\n1,2\n3,4,5\n"
    with api(tmp_path) as (c, s):
        url = _create(c, len(ragged), filename="bad.csv").headers["location"]
        assert _patch(c, url, ragged, 0).status_code == 204
        done = _settled(c, url)
        multipart = c.post("/v1/datasets", files={"file": ("bad.csv", ragged)}, headers=A)
        assert done["status"] == "failed" and done["dataset_id"] is None
        assert done["problem"]["status"] == multipart.status_code == 422
        assert done["problem"]["detail"] == multipart.json()["detail"]
        assert done["problem"]["errors"] == multipart.json()["errors"]
        assert c.get("/v1/datasets", headers=A).json()["total"] == 0 and _staged(s) == []


def test_offset_mismatch_is_409_and_changes_nothing(tmp_path):
    with api(tmp_path) as (c, _):
        url = _create(c, 100, filename="x.csv").headers["location"]
        assert _patch(c, url, b"x" * 40, 0).status_code == 204
        for wrong in (0, 39, 41):
            r = _patch(c, url, b"y" * 10, wrong)
            assert r.status_code == 409 and r.json()["errors"][0]["field"] == "Upload-Offset"
            assert "resume from 40" in r.json()["detail"]
        assert c.head(url, headers=A).headers["upload-offset"] == "40"


def test_checksum_mismatch_is_460_and_the_chunk_is_discarded(tmp_path):
    data = to_csv(blobs(50))
    with api(tmp_path) as (c, _):
        url = _create(c, len(data), filename="b.csv").headers["location"]
        head, rest = data[:100], data[100:]
        for algo in ("sha1", "sha256", "md5"):
            wrong = base64.b64encode(hashlib.new(algo, b"other bytes").digest()).decode()
            r = _patch(c, url, head, 0, **{"Upload-Checksum": f"{algo} {wrong}"})
            assert r.status_code == 460, r.text
            assert r.json()["errors"][0]["field"] == "Upload-Checksum"
            assert c.head(url, headers=A).headers["upload-offset"] == "0"
        right = base64.b64encode(hashlib.sha256(head).digest()).decode()
        assert _patch(c, url, head, 0, **{"Upload-Checksum": f"sha256 {right}"}).status_code == 204
        right = base64.b64encode(hashlib.md5(rest).digest()).decode()
        assert _patch(c, url, rest, 100, **{"Upload-Checksum": f"md5 {right}"}).status_code == 204
        done = _settled(c, url)
        assert done["status"] == "ready"
        ds = c.get(f"/v1/datasets/{done['dataset_id']}", headers=A).json()
        assert ds["sha256"] == hashlib.sha256(data).hexdigest()


def test_protocol_errors_name_the_header(tmp_path):
    with api(tmp_path, max_upload_bytes=1000) as (c, _):
        r = c.post("/v1/uploads", headers={**A, "Tus-Resumable": "0.2.2", "Upload-Length": "5"})
        assert r.status_code == 412 and r.headers["tus-version"] == "1.0.0"
        r = c.post("/v1/uploads", headers=A)
        assert r.status_code == 422 and "Upload-Length" in r.text
        r = _create(c, 1001, filename="x.csv")
        assert r.status_code == 413 and "PRETRAINER_MAX_UPLOAD_BYTES" in r.json()["detail"]
        r = c.post("/v1/uploads", headers={**A, "Upload-Length": "5", "Upload-Metadata": "filename !!"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Upload-Metadata.filename"
        url = _create(c, 10, filename="x.csv").headers["location"]
        r = c.patch(url, content=b"abc", headers={**A, "Upload-Offset": "0",
                                                  "Content-Type": "text/plain"})
        assert r.status_code == 415
        r = _patch(c, url, b"x" * 11, 0)
        assert r.status_code == 413 and c.head(url, headers=A).headers["upload-offset"] == "0"
        r = c.post("/v1/uploads", headers={"Tus-Resumable": "1.0.0", "Upload-Length": "5"})
        assert r.status_code == 401


def test_another_projects_upload_is_not_found(tmp_path):
    with api(tmp_path) as (c, _):
        url = _create(c, 10, filename="x.csv").headers["location"]
        assert c.head(url, headers=B).status_code == 404
        assert _patch(c, url, b"x" * 10, 0, headers=B).status_code == 404
        assert c.get(url, headers=B).status_code == 404
        assert c.delete(url, headers=B).status_code == 404
        assert c.head(url, headers=A).headers["upload-offset"] == "0"


def test_termination_removes_the_bytes(tmp_path):
    with api(tmp_path) as (c, s):
        url = _create(c, 100, filename="x.csv").headers["location"]
        assert _patch(c, url, b"x" * 60, 0).status_code == 204
        assert len(_staged(s)) == 1
        assert c.delete(url, headers=A).status_code == 204
        assert _staged(s) == [] and c.head(url, headers=A).status_code == 404


def _set(s: Settings, project: str, **values: int | None) -> None:
    with session_scope(s.resolved_database_url) as session:
        quotas.set_(session=session, project=project, values=values)


def test_stored_bytes_quota_refuses_at_creation_and_at_the_patch_that_crosses_it(tmp_path):
    data = to_csv(blobs(100))
    with api(tmp_path) as (c, s):
        _set(s, "alpha", stored_bytes=len(data) + 10)
        r = _create(c, len(data) + 11, filename="b.csv")
        assert r.status_code == 413 and r.json()["quota"]["name"] == "stored_bytes"
        url = _create(c, len(data), filename="b.csv").headers["location"]
        # An unfinished upload holds its declared bytes: a second one does not fit beside it.
        r = _create(c, 11, filename="c.csv")
        assert r.status_code == 413 and r.json()["quota"]["used"] == len(data)
        assert _patch(c, url, data[:100], 0).status_code == 204
        _set(s, "alpha", stored_bytes=len(data) - 1)  # lowered while it uploads
        r = _patch(c, url, data[100:], 100)
        assert r.status_code == 413 and r.json()["quota"]["name"] == "stored_bytes"
        assert _staged(s) == [] and c.head(url, headers=A).status_code == 410
        body = c.get(url, headers=A).json()
        assert body["status"] == "failed" and body["problem"]["quota"]["name"] == "stored_bytes"
        assert c.get("/v1/datasets", headers=A).json()["total"] == 0
        _set(s, "alpha", datasets=0)
        assert _create(c, 10, filename="b.csv").status_code == 429


def test_an_idle_upload_expires_and_the_sweep_removes_its_bytes(tmp_path):
    with api(tmp_path, upload_expiry_seconds=0.5, orphan_sweep_seconds=0.2) as (c, s):
        url = _create(c, 100, filename="x.csv").headers["location"]
        r = _patch(c, url, b"x" * 60, 0)
        assert r.status_code == 204 and "upload-expires" in r.headers
        assert len(_staged(s)) == 1
        deadline = time.monotonic() + 20
        while (s.blob_dir / ".uploads" / url.rsplit("/", 1)[1]).exists():
            assert time.monotonic() < deadline, "the sweep left the expired upload's bytes"
            time.sleep(0.1)
        assert c.head(url, headers=A).status_code == 410
        assert _patch(c, url, b"x" * 40, 60).status_code == 410
        assert c.get(url, headers=A).json()["status"] == "expired"


def test_an_empty_upload_is_refused_like_an_empty_file(tmp_path):
    with api(tmp_path) as (c, _):
        r = _create(c, 0, filename="empty.csv")
        assert r.status_code == 201, r.text
        done = _settled(c, r.headers["location"])
        multipart = c.post("/v1/datasets", files={"file": ("empty.csv", b"")}, headers=A)
        assert done["status"] == "failed" and multipart.status_code == done["problem"]["status"]
        assert done["problem"]["detail"] == multipart.json()["detail"]
        assert c.get("/v1/datasets", headers=A).json()["total"] == 0
