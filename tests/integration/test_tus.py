"""Resumable uploads against a real API process (`make run`): a 1 GiB file whose connection is
cut three times mid-PATCH completes byte for byte while the API's memory stays flat, and an
outside tus client (tuspy) uploads a dataset unchanged."""

from __future__ import annotations

import hashlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pretrainer_client import Client
from tests.conftest import blobs, to_csv
from tests.integration.conftest import Service, make_run

pytestmark = pytest.mark.integration

GIB = 1024**3
ROWS, WIDTH = GIB // (64 * 8), 64  # float64 rows of 512 bytes: 1 GiB of data after the header
STAMP_EVERY = 64 * 1024  # a unique 8-byte stamp every 64 KiB, so a misplaced byte range shows


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from make_run(tmp_path_factory.mktemp("tus"))


class CuttingProxy:
    """A TCP proxy in front of the API that drops the client's connection (both directions,
    abruptly) the first time the bytes it has forwarded pass each cut point."""

    def __init__(self, upstream: int, cuts: list[int]) -> None:
        self.upstream, self.cuts, self.forwarded, self.made = upstream, sorted(cuts), 0, 0
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._copy, args=(up, conn, False), daemon=True).start()
            threading.Thread(target=self._copy, args=(conn, up, True), daemon=True).start()

    def _copy(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while data := src.recv(1024 * 1024):
                if counted:
                    with self.lock:
                        self.forwarded += len(data)
                        cut = bool(self.cuts) and self.forwarded >= self.cuts[0]
                        if cut:
                            self.cuts.pop(0)
                            self.made += 1
                    if cut:
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.server.close()


def _gib_npy(path: Path) -> str:
    """A 1 GiB float64 .npy written sparsely (zeros) with a stamp every 64 KiB; its sha256."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype="<f8", shape=(ROWS, WIDTH))
    header = arr.offset
    del arr
    fd = os.open(path, os.O_WRONLY)
    try:
        for k in range(GIB // STAMP_EVERY):
            os.pwrite(fd, np.float64(k + 1).tobytes(), header + k * STAMP_EVERY)
    finally:
        os.close(fd)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(8 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _api_pid(service: Service) -> int:
    """The `pretrainer api` child of the started service."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            if os.getsid(int(entry.name)) == service.proc.pid and b"app.cli" in cmd and b"api" in cmd:
                return int(entry.name)
        except (OSError, ProcessLookupError):
            continue
    raise AssertionError("no API process found")


def _rss_anon(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_gib_upload_cut_three_times_completes_with_flat_memory(service: Service, tmp_path,
                                                                 record_property):
    path = tmp_path / "big.npy"
    sha256 = _gib_npy(path)
    pid = _api_pid(service)
    base, peak, sampling = _rss_anon(pid), [0], threading.Event()

    def sample() -> None:
        while not sampling.wait(0.05):
            peak[0] = max(peak[0], _rss_anon(pid))

    proxy = CuttingProxy(int(service.base.rsplit(":", 1)[1]), [GIB // 4, GIB // 2, 3 * GIB // 4])
    reports: list[int] = []
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with Client(f"http://127.0.0.1:{proxy.port}") as client:
            ds = client.upload(path, name="big", progress=lambda sent, total: reports.append(sent))
    finally:
        sampling.set()
        sampler.join()
        proxy.close()
    assert proxy.made == 3
    assert ds.sha256 == sha256 and ds.size_bytes == path.stat().st_size
    assert ds.n_rows == ROWS and ds.name == "big"
    # Each cut rewinds the bar to the server's offset, never to zero: it continues from there.
    rewinds = [(a, b) for a, b in itertools.pairwise(reports) if b < a]
    assert len(rewinds) >= proxy.made and all(b > 0 for _, b in rewinds), rewinds
    assert reports[-1] == path.stat().st_size
    record_property("api_anon_memory_growth_mib", round((peak[0] - base) / 2**20, 1))
    assert peak[0] - base < 100 * 1024**2, f"API anonymous memory grew {(peak[0] - base) >> 20} MiB"
    assert service.http.delete(f"/v1/datasets/{ds.id}").status_code == 204


def test_tuspy_uploads_a_dataset(service: Service, tmp_path):
    from tusclient import client as tus

    data = to_csv(blobs(2000))
    path = tmp_path / "blobs.csv"
    path.write_bytes(data)
    uploader = tus.TusClient(f"{service.base}/v1/uploads").uploader(
        file_path=str(path), chunk_size=16 * 1024, upload_checksum=True,
        metadata={"filename": "blobs.csv", "name": "via tuspy"})
    uploader.upload()
    assert uploader.offset == len(data)
    deadline = time.monotonic() + 60
    while (body := service.http.get(uploader.url).json())["status"] == "inspecting":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert body["status"] == "ready", body
    ds = service.http.get(f"/v1/datasets/{body['dataset_id']}").json()
    assert ds["name"] == "via tuspy" and ds["n_rows"] == 2000 and ds["format"] == "csv"
    assert ds["sha256"] == hashlib.sha256(data).hexdigest()
    # A second tuspy upload resumes one that stopped half-way (its URL kept by the caller).
    half = tus.TusClient(f"{service.base}/v1/uploads").uploader(
        file_path=str(path), chunk_size=len(data) // 2 + 1, metadata={"filename": "blobs.csv"})
    half.upload_chunk()
    assert 0 < half.offset < len(data)
    resumed = tus.TusClient(f"{service.base}/v1/uploads").uploader(
        file_path=str(path), url=half.url, chunk_size=64 * 1024)
    assert resumed.offset == half.offset
    resumed.upload()
    assert service.http.head(half.url, headers={"Tus-Resumable": "1.0.0"}).headers[
        "upload-offset"] == str(len(data))


def test_cli_and_client_upload_resumably_with_the_same_errors(service: Service, tmp_path):
    import json
    import subprocess
    import sys

    from pretrainer_client import PretrainerError

    path = tmp_path / "points.csv"
    path.write_bytes(to_csv(blobs(300)))
    env = {**os.environ, "PRETRAINER_URL": service.base}
    out = subprocess.run([str(Path(sys.executable).parent / "pretrainer"), "datasets", "upload",
                          str(path), "--name", "points", "--resumable", "--json"],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    ds = json.loads(out.stdout)
    assert ds["name"] == "points" and ds["n_rows"] == 300
    ragged = tmp_path / "ragged.csv"
    ragged.write_bytes(b"a,b\n1,2\n3,4,5\n")
    with Client(service.base) as client:
        with pytest.raises(PretrainerError) as over_tus:
            client.upload(ragged, resumable=True, chunk_size=5)
        with pytest.raises(PretrainerError) as multipart:
            client.upload(ragged, resumable=False)
    assert over_tus.value.status == multipart.value.status == 422
    assert over_tus.value.detail == multipart.value.detail
    assert over_tus.value.errors == multipart.value.errors


def test_async_client_uploads_resumably(service: Service, tmp_path):
    import asyncio

    from pretrainer_client import AsyncClient

    path = tmp_path / "points.csv"
    path.write_bytes(to_csv(blobs(120)))
    sent: list[int] = []

    async def upload():
        async with AsyncClient(service.base) as client:
            return await client.upload(path, name="async", resumable=True, chunk_size=1000,
                                       progress=lambda at, total: sent.append(at))

    ds = asyncio.run(upload())
    assert ds.name == "async" and ds.n_rows == 120
    assert ds.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sent[-1] == path.stat().st_size and sent == sorted(sent)
