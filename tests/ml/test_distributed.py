"""Data-parallel training on CPU: 2 gloo processes under torchrun against 1 process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.ml.ddp_fit import fit

ROOT = Path(__file__).resolve().parents[2]
# Two ranks sum their halves of each batch's gradient in another order than one process sums
# the whole batch: float32 rounding, nothing else, so the curves agree to this relative error.
RTOL = 1e-4
PARAMS = {"epochs": 4, "batch_size": 64, "latent_dim": 4, "hidden_dims": [32], "seed": 5,
          "device": "cpu", "validation_fraction": 0.25}


def torchrun(tmp: Path, algorithm: str, params: dict, n: int = 2) -> dict:
    out = tmp / f"{algorithm}-{n}.json"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc-per-node={n}", str(ROOT / "tests/ml/ddp_fit.py"), str(out),
                    algorithm, json.dumps(params)], cwd=ROOT, check=True, timeout=300)
    return json.loads(out.read_text())


def test_two_processes_follow_the_one_process_loss_curve(tmp_path):
    # Same seed, same GLOBAL batch (64 rows: 32 per rank): the same steps, the same curve.
    one = fit("autoencoder", PARAMS)
    two = torchrun(tmp_path, "autoencoder", PARAMS)
    assert two["world"] == 2
    assert [e["epoch"] for e in two["history"]] == [1, 2, 3, 4]
    for key in ("loss", "val_loss"):
        a = np.array([e[key] for e in one])
        b = np.array([e[key] for e in two["history"]])
        np.testing.assert_allclose(b, a, rtol=RTOL, err_msg=key)
    assert one[-1]["loss"] < one[0]["loss"]  # it learned something: the match is not trivial



def _ranks_left(tmp: Path, *entries: dict) -> Path:
    for e in entries:
        (tmp / f"rank-{e['rank']}.json").write_text(json.dumps(e))
    return tmp


@pytest.mark.parametrize("entries, expect", [
    ((), "AttemptLost"),  # every rank killed: nothing written
    (({"rank": 0, "type": "DistBackendError", "message": "peer gone", "lost": True},),
     "AttemptLost"),  # rank 1 killed, rank 0 lost its peer
    (({"rank": 1, "type": "ValueError", "message": "training diverged", "lost": False},
      {"rank": 0, "type": "RuntimeError", "message": "gloo: connection closed", "lost": True}),
     "RankFailed"),  # a real error anywhere fails the job with it
    (({"rank": 0, "type": "Cancelled", "message": "", "lost": False},), "Cancelled"),
])
def test_what_the_ranks_left_decides_between_failing_and_resuming(tmp_path, entries, expect):
    from app.ranks import rank_outcome

    with pytest.raises(Exception) as info:
        rank_outcome(_ranks_left(tmp_path, *entries), 1)
    assert type(info.value).__name__ == expect
    if expect == "RankFailed":
        assert info.value.kind == "ValueError" and "diverged" in str(info.value)


def test_a_lost_peer_is_a_comms_error_and_a_value_error_is_not():
    import torch.distributed as dist

    from app.ranks import is_comms_error

    assert is_comms_error(dist.DistBackendError("x"))
    assert is_comms_error(RuntimeError("[../gloo/transport/tcp/pair.cc] Connection closed by peer"))
    assert not is_comms_error(ValueError("training diverged at epoch 3"))
