"""POST /v1/datasets with a ZIP of images: layouts, details in the response, and every refusal."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.data.loaders import load_images
from app.db.migrate import upgrade
from app.main import create_app
from app.storage import OWNER_KEY
from tests.api.test_datasets import assert_problem
from tests.conftest import blobs, to_csv, upload
from tests.data.test_images import (
    bomb_zip,
    class_digits_zip,
    digits,
    flat_digits_zip,
    png,
    symlink_member,
    zip_bytes,
)


def blob_files(settings: Settings) -> list[Path]:
    return [p for p in settings.blob_dir.rglob("*") if p.is_file() and p.name != OWNER_KEY]


def assert_left_nothing(client: TestClient, settings: Settings) -> None:
    assert blob_files(settings) == []
    assert client.get("/v1/datasets").json()["total"] == 0


@contextmanager
def limited_api(tmp_path: Path, **limits: int) -> Iterator[tuple[TestClient, Settings]]:
    """The API on settings with the given limits (as test_datasets' upload-limit test does)."""
    s = Settings(data_dir=tmp_path / "limited", **limits)
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        yield c, s


# ---------------------------------------------------------------------------------- accepted


def test_class_folders_upload_is_labelled(client, settings):
    content = class_digits_zip("digits/")
    res = upload(client, content, filename="digits.zip", name="digits")
    assert res["status"] == 201, res
    ds = res["body"]
    assert (ds["name"], ds["kind"], ds["format"], ds["n_rows"]) == ("digits", "image", "zip", 1797)
    assert ds["columns"] == [] and ds["labelled"] is True
    assert ds["size_bytes"] == len(content) and ds["sha256"] == hashlib.sha256(content).hexdigest()
    assert ds["image"] == {"height": 8, "width": 8, "channels": 1, "sizes": {"8x8": 1797},
                           "modes": {"L": 1797}}
    counts = np.bincount(digits()[1])
    assert ds["classes"] == [{"name": str(k), "count": int(counts[k])} for k in range(10)]
    assert client.get(f"/v1/datasets/{ds['id']}").json() == ds
    # The upload and its arrays are published together, under the dataset's folder.
    folder = settings.blob_dir / "datasets" / ds["id"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "data.zip", "images.npy", "index.json", "labels.npy"]
    assert (folder / "data.zip").read_bytes() == content
    x, y, classes = load_images(folder)
    assert x.shape == (1797, 8, 8, 1) and classes == [str(k) for k in range(10)]
    assert np.bincount(y).tolist() == counts.tolist()


def test_flat_upload_is_unlabelled(client):
    ds = upload(client, flat_digits_zip(), filename="flat.zip")["body"]
    assert ds["kind"] == "image" and ds["n_rows"] == 1797
    assert ds["labelled"] is False and ds["classes"] == []


def test_zip_is_detected_by_magic_bytes(client):
    ds = upload(client, flat_digits_zip(), filename="upload.bin")["body"]
    assert ds["format"] == "zip" and ds["kind"] == "image"


def test_tabular_datasets_have_no_image_fields(client):
    ds = upload(client, to_csv(blobs(20)))["body"]
    assert ds["kind"] == "tabular"
    assert ds["image"] is None and ds["classes"] is None and ds["labelled"] is None


def test_delete_removes_the_arrays_too(client, settings):
    ds = upload(client, flat_digits_zip(), filename="flat.zip")["body"]
    assert client.delete(f"/v1/datasets/{ds['id']}").status_code == 204
    assert blob_files(settings) == []


# ---------------------------------------------------------------------------------- refused


def _img() -> bytes:
    return png(digits()[0][0])


@pytest.mark.parametrize(("members", "words"), [
    ([("ok.png", None), ("../evil.png", None)], ["../evil.png", ".."]),
    ([("ok.png", None), ("/etc/x.png", None)], ["/etc/x.png", "absolute"]),
    ([("ok.png", None), "symlink"], ["link.png", "symbolic link"]),
    ([("ok.png", None), ("broken.png", b"\x89PNG\r\n\x1a\nbroken")], ["broken.png"]),
    ([("a.png", None), ("cats/b.png", None)], ["mixes", "a.png", "cats/b.png"]),
    ([("a.png", None), ("notes.txt", b"hello")], ["notes.txt"]),
], ids=["dotdot", "absolute", "symlink", "undecodable", "mixed", "not-an-image"])
def test_bad_archives_are_422_and_leave_nothing(client, settings, members, words):
    items = [symlink_member() if m == "symlink" else (m[0], _img() if m[1] is None else m[1])
             for m in members]
    res = upload(client, zip_bytes(items), filename="bad.zip")
    assert_problem(res, 422, *words)
    assert res["body"]["errors"][0]["field"] == "file"
    assert_left_nothing(client, settings)


def test_not_a_zip_is_422(client, settings):
    assert_problem(upload(client, b"definitely not a zip", filename="x.zip"), 422, "ZIP")
    assert_left_nothing(client, settings)


def test_zip_bomb_is_413(client, settings):
    assert_problem(upload(client, bomb_zip(), filename="bomb.zip"), 413, "bomb.png",
                   "PRETRAINER_MAX_ZIP_RATIO")
    assert_left_nothing(client, settings)


def test_too_many_members_is_413(tmp_path):
    with limited_api(tmp_path, max_zip_members=5) as (c, s):
        res = upload(c, zip_bytes({f"{i}.png": _img() for i in range(6)}), filename="many.zip")
        assert_problem(res, 413, "5", "PRETRAINER_MAX_ZIP_MEMBERS")
        assert_left_nothing(c, s)


def test_too_many_uncompressed_bytes_is_413(tmp_path):
    with limited_api(tmp_path, max_zip_uncompressed_bytes=1000) as (c, s):
        res = upload(c, zip_bytes({f"{i}.png": _img() for i in range(20)}), filename="big.zip")
        assert_problem(res, 413, "1000", "PRETRAINER_MAX_ZIP_UNCOMPRESSED_BYTES")
        assert_left_nothing(c, s)


def test_image_over_the_pixel_limit_is_422(tmp_path):
    with limited_api(tmp_path, max_image_pixels=50) as (c, s):
        res = upload(c, zip_bytes({"a.png": _img()}), filename="px.zip")
        assert_problem(res, 422, "a.png", "PRETRAINER_MAX_IMAGE_PIXELS")
        assert_left_nothing(c, s)


def test_upload_limit_still_applies_to_zips(tmp_path):
    with limited_api(tmp_path, max_upload_bytes=1000) as (c, s):
        assert_problem(upload(c, flat_digits_zip(), filename="flat.zip"), 413,
                       "PRETRAINER_MAX_UPLOAD_BYTES")
        assert_left_nothing(c, s)
