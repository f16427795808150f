"""Through a real `make run` whose orphan sweep runs every 0.2 s with a one-second grace: an
upload that streams for longer than the grace completes, byte for byte."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import blobs, to_csv
from tests.integration.conftest import Service, make_run

pytestmark = pytest.mark.integration

GRACE_SECONDS = 1.0
STREAM_SECONDS = 4.0  # four times the grace: the sweep runs ~20 times while the body arrives


@pytest.fixture(scope="module")
def eager_sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from make_run(tmp_path_factory.mktemp("sweep"),
                        PRETRAINER_ORPHAN_GRACE_SECONDS=str(GRACE_SECONDS),
                        PRETRAINER_ORPHAN_SWEEP_SECONDS="0.2")


def _slow_multipart(content: bytes, boundary: str, pieces: int) -> Iterator[bytes]:
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
           f"filename=\"slow.csv\"\r\nContent-Type: text/csv\r\n\r\n").encode()
    step = -(-len(content) // pieces)
    for i in range(0, len(content), step):
        time.sleep(STREAM_SECONDS / pieces)
        yield content[i:i + step]
    yield f"\r\n--{boundary}--\r\n".encode()


def test_an_upload_slower_than_the_grace_period_completes(eager_sweep: Service) -> None:
    content = to_csv(blobs(n=2000))
    boundary = "pretrainer-slow-upload"
    started = time.monotonic()
    r = eager_sweep.http.post(
        "/v1/datasets", content=_slow_multipart(content, boundary, pieces=20),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=httpx.Timeout(60))
    assert time.monotonic() - started > STREAM_SECONDS > GRACE_SECONDS
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["n_rows"] == 2000 and ds["size_bytes"] == len(content)
    back = eager_sweep.http.get(f"/v1/datasets/{ds['id']}/download")
    assert back.status_code == 200 and back.content == content
    # The sweep did run meanwhile (it removes what it should): an abandoned staging file goes.
    stale = Path(eager_sweep.data_dir) / "blobs" / ".tmp" / "abandoned"
    stale.write_bytes(b"left by a crash")
    deadline = time.monotonic() + 30
    while stale.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not stale.exists()
