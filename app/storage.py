"""Blob store: datasets and model artifacts under keys, written atomically (temp + rename).

A local directory by default; an S3-compatible bucket when PRETRAINER_STORAGE_URL says s3://.
A store belongs to one database: its owner file names that database's identity, and a service
wired to another database refuses it (see `claim`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

import anyio

from app.errors import field_error

try:
    import fcntl
except ImportError:  # not on Windows: staging is then judged by its files' activity alone
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from app.config import Settings

# At the store's root: the identity of the database whose rows the blobs belong to.
OWNER_KEY = ".owner.json"
# Beside the store's staging: the bytes of resumable (tus) uploads still arriving.
RESUMABLE = ".uploads"


# The blob-key layout: every key the service writes is spelled here and nowhere else.
DATASETS = "datasets"  # datasets/<id>/data.<format> (+ images.npy, labels.npy for a ZIP)
MODELS = "models"  # models/<id>/ (the artifact folder)
JOBS = "jobs"  # jobs/<id>/checkpoint.pt (while a job may still resume)
STAGING = ".tmp"  # half-written files and folders, published by a rename
# results/<job id>/result.<format>: what a batch job made. Not under JOBS: that folder goes
# when its job ends, and a result stays as long as its job's row does.
RESULTS = "results"
# indexes/<model id>/<index id>/ (a model's nearest-neighbour indexes). Beside models/, not
# inside a model's folder: a published model folder never changes (the S3 store caches it
# whole), and a model is loaded without reading its indexes.
INDEXES = "indexes"


def dataset_prefix(dataset_id: str) -> str:
    """The folder holding a dataset's bytes and what was derived from them."""
    return f"{DATASETS}/{dataset_id}"


def dataset_key(dataset_id: str, fmt: str) -> str:
    """Where a dataset's bytes, as uploaded, live."""
    return f"{dataset_prefix(dataset_id)}/data.{fmt}"


def model_key(model_id: str) -> str:
    """Where a model's artifact folder lives."""
    return f"{MODELS}/{model_id}"


def model_indexes_key(model_id: str) -> str:
    """The folder of all of a model's nearest-neighbour indexes (deleted with the model)."""
    return f"{INDEXES}/{model_id}"


def index_key(model_id: str, index_id: str) -> str:
    """Where one nearest-neighbour index (graph, row ids and labels) lives."""
    return f"{model_indexes_key(model_id)}/{index_id}"


def export_key(model_id: str, fmt: str) -> str:
    """Where a model's export archive in one format is cached: inside the model's folder, so
    deleting the model (and the orphan sweep) removes it with the artifact."""
    return f"{model_key(model_id)}/exports/{fmt}.zip"


def checkpoint_key(job_id: str) -> str:
    """Where a running job keeps its resumable checkpoint."""
    return f"{JOBS}/{job_id}/checkpoint.pt"


def entry_id(key: str) -> str:
    """The id a top-level folder's entry is named by: datasets/<id> → <id> (what children()
    lists under DATASETS, MODELS, JOBS, RESULTS or INDEXES)."""
    return key.rsplit("/", 1)[1]


def job_result_key(job_id: str, fmt: str) -> str:
    """Where a batch job's result file lives (fmt: its format, the file's suffix)."""
    return f"{RESULTS}/{job_id}/result.{fmt}"


class StoreOwned(Exception):
    """The store belongs to another database; the message names both."""


def _lease(path: Path) -> int | None:
    """Hold an exclusive flock on path until the returned descriptor is closed (the holder's
    lease: the sweep leaves what is leased alone, and a crashed holder's lease ends with it)."""
    if fcntl is None:
        return None
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _leased(path: Path) -> bool:
    """Whether another open file holds path's lease."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _idle_seconds(path: Path, now: float) -> float:
    """Seconds since anything at or under path was last written (a folder's own timestamp does
    not move while a file in it grows)."""
    newest = path.lstat().st_mtime
    if path.is_dir():
        for folder, _, files in os.walk(path):
            for name in files:
                try:
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
                except FileNotFoundError:
                    continue
    return now - newest


class BlobStore:
    """A local directory of blobs; readers never see a half-written file or folder."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.tmp = self.root / STAGING
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """Local path of key; refuses keys that would escape the store."""
        target = (self.root / key).resolve()
        if self.root not in target.parents:
            raise ValueError(f"blob key escapes the store: {key!r}")
        return target

    def staging_file(self) -> Path:
        """A fresh temp file path on the store's filesystem, so publishing is a rename."""
        return self.tmp / uuid.uuid4().hex

    @contextmanager
    def staging_dir(self) -> Iterator[Path]:
        """A temp folder, leased while in use, that is removed unless it was published."""
        folder = self.tmp / uuid.uuid4().hex
        folder.mkdir()
        lease = _lease(folder)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            if lease is not None:
                os.close(lease)

    @asynccontextmanager
    async def staging_dir_async(self) -> AsyncIterator[Path]:
        """staging_dir for a coroutine: the folder is made, leased and removed off the event
        loop (removing a half-written upload takes milliseconds that every request would wait)."""
        staging = self.staging_dir()
        folder = await anyio.to_thread.run_sync(staging.__enter__)
        try:
            yield folder
        finally:
            await anyio.to_thread.run_sync(staging.__exit__, None, None, None)

    def publish(self, staged: Path, key: str) -> Path:
        """Atomically move a staged file or folder to key; an existing key is never overwritten."""
        target = self.path(key)
        if target.exists():
            raise FileExistsError(f"blob already exists: {key}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        return target

    def replace(self, staged: Path, key: str) -> Path:
        """Atomically move a staged file to key, replacing the previous version.

        Only for blobs this service rewrites itself (a job's latest checkpoint): a reader sees
        the old file or the new one, never half of either.
        """
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        return target

    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        """Write a blob: visible under key only once the block ends without error."""
        staged = self.staging_file()
        try:
            with open(staged, "wb") as fh:
                if fcntl is not None:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # leased until closed
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            self.publish(staged, key)
        finally:
            staged.unlink(missing_ok=True)

    def resumable(self, upload_id: str) -> Path:
        """Where a resumable upload's bytes gather until it completes: on this machine's disk
        for either kind of store (under an S3 store's cache), published like any staged upload."""
        folder = self.root / RESUMABLE
        folder.mkdir(exist_ok=True)
        return folder / upload_id

    def resumable_idle(self) -> list[tuple[str, float]]:
        """(upload id, seconds since its last byte) of each resumable upload no request is
        writing (a PATCH holds its file leased)."""
        folder, now = self.root / RESUMABLE, time.time()
        if not folder.is_dir():
            return []
        out = []
        for entry in folder.iterdir():
            try:
                if not _leased(entry):
                    out.append((entry.name, _idle_seconds(entry, now)))
            except FileNotFoundError:  # removed while listing
                continue
        return out

    def exists(self, key: str) -> bool:
        """Whether key holds a file or folder."""
        return self.path(key).exists()

    def delete(self, key: str) -> None:
        """Remove a file or folder; missing keys are fine."""
        target = self.path(key)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)

    def require(self, key: str, *, what: str, field: str) -> Path:
        """The local path of key, or a 410 naming what is gone (removed by hand, a lost volume)."""
        path = self.path(key)
        if not path.exists():
            raise field_error(
                field, f"{key} is missing from the blob store", status=410,
                detail=f"{what} has no files in the blob store any more ({key} is missing: "
                       "removed outside the service, or its volume was lost); its record is "
                       "kept, but it cannot be used until it is uploaded or trained again")
        return path

    def children(self, prefix: str) -> list[tuple[str, float]]:
        """(key, seconds since anything in it was written) of each entry directly under prefix;
        an entry a writer holds leased is left out (it is in use, whatever its age)."""
        folder = self.path(prefix)
        if not folder.is_dir():
            return []
        now = time.time()
        out = []
        for entry in folder.iterdir():
            try:
                if not _leased(entry):
                    out.append((f"{prefix}/{entry.name}", _idle_seconds(entry, now)))
            except FileNotFoundError:  # removed while listing
                continue
        return out

    def read_owner(self) -> dict[str, Any] | None:
        """The owner file's record, or None when the store has none yet."""
        try:
            return dict(json.loads((self.root / OWNER_KEY).read_text()))
        except FileNotFoundError:
            return None

    def write_owner(self, record: dict[str, Any]) -> bool:
        """Write the owner file unless one exists; whether this call wrote it."""
        staged = self.staging_file()
        staged.write_text(json.dumps(record, indent=2) + "\n")
        try:
            os.link(staged, self.root / OWNER_KEY)  # fails if it exists: two starts race safely
            return True
        except FileExistsError:
            return False
        finally:
            staged.unlink(missing_ok=True)

    def describe(self) -> str:
        """Where the store is, for messages."""
        return str(self.root)

    def claim(self, *, database_id: str, database: str) -> None:
        """Record database_id as the store's owner, or raise StoreOwned if another one is."""
        record = {"database_id": database_id, "database": database,
                  "claimed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if self.read_owner() is None:
            self.write_owner(record)
        owner = self.read_owner() or {}  # read back: another first start may have won
        if owner.get("database_id") != database_id:
            raise StoreOwned(
                f"blob store {self.describe()} belongs to database {owner.get('database_id')} "
                f"({owner.get('database', '?')}), not to this one, {database_id} ({database}): "
                "give each database its own store (PRETRAINER_DATA_DIR or PRETRAINER_STORAGE_URL)")

    def check(self) -> None:
        """Raise unless the store can be written (readiness probe)."""
        probe = self.staging_file()
        probe.write_bytes(b"ok")
        probe.unlink()


class S3BlobStore(BlobStore):
    """Blobs in an S3-compatible bucket (through fsspec/s3fs), with a local read cache.

    The same interface as the local store: writers stage on local disk and `publish` uploads,
    refusing a key that exists; an object becomes visible only when its upload completes
    (a single PUT, or a multipart upload that S3 assembles on completion). Readers that need a
    file on disk (memory-mapped Arrow caches, image arrays, model weights) get `path(key)`: the
    blob downloaded once into the cache (a file is fetched again when its ETag changed, which
    only a job's checkpoint does; a folder is immutable once published).
    """

    def __init__(self, url: str, cache_dir: Path, *, endpoint_url: str | None = None,
                 key: str | None = None, secret: str | None = None,
                 region: str | None = None) -> None:
        import s3fs

        super().__init__(cache_dir)
        self.prefix = url.removeprefix("s3://").strip("/")
        if not self.prefix:
            raise ValueError(f"storage URL {url!r} names no bucket")
        client_kwargs = {"region_name": region} if region else {}
        self.fs = s3fs.S3FileSystem(key=key, secret=secret, endpoint_url=endpoint_url or None,
                                    client_kwargs=client_kwargs, use_listings_cache=False,
                                    skip_instance_cache=True)

    def url(self, key: str) -> str:
        """The bucket/prefix/key of a blob; refuses keys that would escape the prefix."""
        parts = PurePosixPath(key).parts
        if not parts or any(p in ("..", ".", "") for p in parts) or key.startswith("/"):
            raise ValueError(f"blob key escapes the store: {key!r}")
        return f"{self.prefix}/{key}"

    def _local(self, kind: str, key: str) -> Path:
        self.url(key)  # the same key rules as the bucket
        return self.root / kind / key

    def path(self, key: str) -> Path:
        """A local copy of the blob (file or folder), downloaded on first use."""
        try:
            info = self.fs.info(self.url(key))
        except FileNotFoundError:
            return self._local("files", key)  # absent: a path that does not exist
        if info["type"] == "directory":
            return self._fetch_dir(key)
        return self._fetch_file(key, str(info.get("ETag") or info.get("size")))

    def _fetch_file(self, key: str, tag: str) -> Path:
        target = self._local("files", key)
        stamp = target.with_name(target.name + ".~etag")
        if target.is_file() and stamp.is_file() and stamp.read_text() == tag:
            return target
        staged = self.staging_file()
        try:
            self.fs.get_file(self.url(key), str(staged))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
            stamp.write_text(tag)
        finally:
            staged.unlink(missing_ok=True)
        return target

    def _fetch_dir(self, key: str) -> Path:
        target = self._local("dirs", key)
        if target.is_dir():  # folders are published whole and never change
            return target
        with self.staging_dir() as folder:
            base = self.url(key)
            for remote in self.fs.find(base):
                local = folder / PurePosixPath(remote).relative_to(base)
                local.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(remote, str(local))
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(folder, target)
            except OSError:  # another reader finished the same download first
                if not target.is_dir():
                    raise
        return target

    def _upload(self, staged: Path, key: str) -> None:
        if staged.is_dir():
            for local in sorted(p for p in staged.rglob("*") if p.is_file()):
                self.fs.put_file(str(local), f"{self.url(key)}/{local.relative_to(staged).as_posix()}")
        else:
            self.fs.put_file(str(staged), self.url(key))

    def publish(self, staged: Path, key: str) -> Path:
        """Upload a staged file or folder to key; an existing key is never overwritten."""
        if self.exists(key):
            raise FileExistsError(f"blob already exists: {key}")
        kind = "dirs" if staged.is_dir() else "files"
        self._upload(staged, key)
        _remove(staged)
        return self._local(kind, key)

    def replace(self, staged: Path, key: str) -> Path:
        """Upload a staged file over key (a job's checkpoint): one PUT, old or new, never half."""
        self._upload(staged, key)
        _remove(staged)
        return self._local("files", key)

    def exists(self, key: str) -> bool:
        """Whether key holds an object or a folder of them."""
        return bool(self.fs.exists(self.url(key)))

    def delete(self, key: str) -> None:
        """Remove the objects under key and their cached copies; missing keys are fine."""
        try:
            self.fs.rm(self.url(key), recursive=True)
        except FileNotFoundError:
            pass
        for kind in ("files", "dirs"):
            _remove(self._local(kind, key))

    def children(self, prefix: str) -> list[tuple[str, float]]:
        """The keys directly under prefix, listed without downloading them; their age is not
        known here and reads as 0 (fresh): nothing is ever judged old on S3."""
        try:
            names = self.fs.ls(self.url(prefix), detail=False)
        except FileNotFoundError:
            return []
        return [(f"{prefix}/{PurePosixPath(name).name}", 0.0) for name in names]

    def read_owner(self) -> dict[str, Any] | None:
        """The owner object's record, or None when the prefix has none yet."""
        try:
            return dict(json.loads(self.fs.cat_file(self.url(OWNER_KEY))))
        except FileNotFoundError:
            return None

    def write_owner(self, record: dict[str, Any]) -> bool:
        """Write the owner object unless one exists (S3 has no create-if-absent: two first
        starts racing could both write; `claim` reads back what won)."""
        if self.fs.exists(self.url(OWNER_KEY)):
            return False
        self.fs.pipe_file(self.url(OWNER_KEY), (json.dumps(record, indent=2) + "\n").encode())
        return True

    def describe(self) -> str:
        """Where the store is, for messages."""
        return f"s3://{self.prefix}"

    def check(self) -> None:
        """Raise unless the bucket can be written (readiness probe)."""
        probe = self.url(f".probe/{uuid.uuid4().hex}")
        self.fs.pipe_file(probe, b"ok")
        self.fs.rm(probe)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def open_store(settings: Settings) -> BlobStore:
    """The blob store settings name: a local folder (default) or an S3 bucket/prefix."""
    url = settings.storage_url
    if url.startswith("s3://"):
        return S3BlobStore(url, settings.blob_cache_dir, endpoint_url=settings.s3_endpoint_url,
                           key=settings.s3_access_key_id, secret=settings.s3_secret_access_key,
                           region=settings.s3_region)
    if url.startswith("file://"):
        return BlobStore(Path(url.removeprefix("file://")))
    if url:
        raise ValueError(f"PRETRAINER_STORAGE_URL must be s3://bucket/prefix or file:///path, "
                         f"not {url!r}")
    return BlobStore(settings.blob_dir)
