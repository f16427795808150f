"""One epoch of `autoencoder` on 100,000 x 64 rows: the service's training path vs a bare loop.

Same process, same network, same optimizer, same batches. "Service" is the whole fit() the
worker calls (input checks, standardization, the shared runtime with its progress, cancel
checks and history, the error metric); the bare loop is plain PyTorch over the same tensor.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from app.ml.base import FitInput
from app.ml.deep import AutoencoderParams
from app.ml.deep import autoencoder as ae
from app.ml.deep.algorithms import AutoencoderAlgorithm
from app.ml.deep.preprocess import fit_prep, standardize_rows

N, D, B = 100_000, 64, 256
REPEATS = 5


class RecordingReport:
    """What the worker's report does, minus the database: keep progress, epochs, checks."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self.checks = 0
        self.fraction = 0.0

    def progress(self, fraction: float) -> None:
        self.fraction = fraction

    def epoch(self, entry: dict[str, Any]) -> None:
        self.epochs.append(entry)

    def check(self) -> None:
        self.checks += 1

    def checkpoint(self, write: Any) -> bool:
        return False


def run() -> dict:
    """Median seconds per epoch of both, and their ratio."""
    x = np.random.default_rng(0).normal(size=(N, D)).astype(np.float32)
    params = AutoencoderParams(epochs=1, batch_size=B, validation_fraction=0.0, device="cpu")
    prep = fit_prep("tabular", x, True)
    arch = ae.architecture(params)
    data = torch.from_numpy(standardize_rows(x, prep))

    def bare() -> float:
        torch.manual_seed(0)
        net = ae.build(arch, prep)
        opt = torch.optim.AdamW(net.parameters(), lr=params.learning_rate, weight_decay=0.0)
        net.train()
        t0 = time.perf_counter()
        perm = torch.from_numpy(np.random.default_rng(0).permutation(N))
        for i in range(0, N, B):
            xb = data.index_select(0, perm[i:i + B])
            opt.zero_grad(set_to_none=True)
            loss = F.mse_loss(net(xb), xb)
            loss.backward()
            opt.step()
        loss.item()
        return time.perf_counter() - t0

    def service() -> float:
        report = RecordingReport()
        t0 = time.perf_counter()
        AutoencoderAlgorithm().fit(FitInput(x), params, report)
        took = time.perf_counter() - t0
        assert len(report.epochs) == 1 and report.fraction == 1.0
        return took

    bare(), service()  # warm-up: allocator, kernels
    b = statistics.median(bare() for _ in range(REPEATS))
    s = statistics.median(service() for _ in range(REPEATS))
    print(f"training-loop overhead: autoencoder epoch on {N:,} x {D} rows: service fit {s:.2f} s vs "
          f"bare PyTorch loop {b:.2f} s (medians of {REPEATS}, {torch.get_num_threads()} threads) -> "
          f"{s / b:.2f}x (goal <= 1.15x)")
    return {"service_s": round(s, 3), "bare_s": round(b, 3), "ratio": round(s / b, 3), "goal": "<= 1.15"}


if __name__ == "__main__":
    run()
