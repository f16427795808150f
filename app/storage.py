"""Blob store: datasets and model artifacts under keys, written atomically (temp + rename)."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


class BlobStore:
    """A local directory of blobs; readers never see a half-written file or folder."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.tmp = self.root / ".tmp"
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
        """A temp folder that is removed unless it was published."""
        folder = self.tmp / uuid.uuid4().hex
        folder.mkdir()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

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
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            self.publish(staged, key)
        finally:
            staged.unlink(missing_ok=True)

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

    def children(self, prefix: str) -> list[tuple[str, float]]:
        """(key, seconds since last modified) of each entry directly under prefix."""
        folder = self.path(prefix)
        if not folder.is_dir():
            return []
        now = time.time()
        out = []
        for entry in folder.iterdir():
            try:
                out.append((f"{prefix}/{entry.name}", now - entry.lstat().st_mtime))
            except FileNotFoundError:  # removed while listing
                continue
        return out

    def check(self) -> None:
        """Raise unless the store can be written (readiness probe)."""
        probe = self.staging_file()
        probe.write_bytes(b"ok")
        probe.unlink()
