"""GPU checks in one short run: contrastive images/s (bf16 autocast vs fp32), the GPU's busy
share while training, a resnet18 fine-tune with and without cached features, micro-batched vs
unbatched embed from a GPU-served model, and the 2-GPU data-parallel speed-up.

`python -m bench.gpu` measures on CUDA and prints one table; without CUDA it prints
"no CUDA device; skipped" and exits 0, unless --require-cuda (then any failure of the CUDA path
exits non-zero). `--device cpu --tiny` runs every step on a few rows, so the code cannot rot.
Each ratio has its baseline beside it: fp32 for bf16, uncached for cached, unbatched for
micro-batched, one GPU for two.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from torch import nn

from app.ml import registry
from app.ml.base import BackboneRef, FitInput, NullReport
from app.ml.deep.contrastive import ContrastiveObjective
from app.ml.deep.nets import Normalize, images_to_model_space
from app.ml.deep.preprocess import IMAGE, fit_prep, to_nchw
from app.ml.deep.runtime import (
    Batches,
    LoopConfig,
    Runtime,
    distributed,
    init_distributed,
    train_loop,
)

ROOT = Path(__file__).resolve().parents[1]
# Data-centre GPU goal for SimCLR on 32x32 (published ResNet-18 runs: ~1,900-4,200 images/s).
GOAL_IMAGES_PER_S = 4000


@dataclass(frozen=True)
class Size:
    """How much work each check does: full on a GPU, tiny to exercise the code on CPU."""

    images: int
    side: int  # image height and width
    batch: int
    epochs: int
    transfer_rows: int
    transfer_size: int
    embed_width: int
    embed_calls: int


FULL = Size(images=16_384, side=32, batch=512, epochs=3, transfer_rows=4096, transfer_size=64,
            embed_width=4096, embed_calls=4096)
TINY = Size(images=32, side=8, batch=16, epochs=1, transfer_rows=16, transfer_size=32,
            embed_width=64, embed_calls=64)


def images(n: int, seed: int = 0, side: int = 32) -> np.ndarray:
    """n random side x side RGB uint8 images (throughput does not depend on what they show)."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)


class ResNetSimCLR(nn.Module):
    """A CIFAR-style ResNet-18 (3x3 stem, no max-pool) and a 2-layer projection head."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(num_classes=512)
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        self.encoder = net
        self.head = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def contrastive_rate(device: torch.device, size: Size, *, bf16: bool) -> float:
    """Training images/s of SimCLR (the service's views, NT-Xent and loop) on 32x32 images."""
    params = registry.get("contrastive").params_model.model_validate(
        {"batch_size": size.batch, "epochs": size.epochs + 1, "seed": 0})
    x = images(size.images, side=size.side)
    prep = fit_prep(IMAGE, x, True)
    torch.manual_seed(0)
    net = ResNetSimCLR().to(device).to(memory_format=torch.channels_last)
    rt = Runtime(device, 0)
    rt.amp = bf16
    objective = ContrastiveObjective(net, rt, params, prep)  # type: ignore[arg-type]
    norm = Normalize(prep).to(device)
    train = Batches(torch.from_numpy(to_nchw(x)), rt, size.batch, shuffle=True, shard=True,
                    to_model=lambda b: images_to_model_space(b, norm), min_batch=2)
    # The first epoch warms up (cuDNN autotuning, allocator); the rate is the later ones'.
    result = train_loop(objective, train, None, LoopConfig(epochs=size.epochs + 1), NullReport())
    rates = [e["samples_per_s"] for e in result.history[1:]]
    return float(np.median(rates))


class BusySampler:
    """Samples the GPU's utilisation (pynvml, else nvidia-smi) in a thread while it is on."""

    def __init__(self, every: float = 0.2) -> None:
        self.every, self.samples = every, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._read = self._reader()

    @staticmethod
    def _reader() -> Any:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # noqa: BLE001 - no pynvml (or no NVML): ask nvidia-smi
            if shutil.which("nvidia-smi") is None:
                return None
            index = str(torch.cuda.current_device())

            def smi() -> float:
                out = subprocess.run(["nvidia-smi", "-i", index, "--query-gpu=utilization.gpu",
                                      "--format=csv,noheader,nounits"], capture_output=True,
                                     text=True, timeout=5, check=True).stdout
                return float(out.strip().splitlines()[0])
            return smi

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            with contextlib.suppress(Exception):  # a failed sample is a missing sample
                self.samples.append(self._read())

    def __enter__(self) -> Self:
        if self._read is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def share(self) -> float | None:
        """Mean utilisation in [0, 1] over the samples; None without a reader or samples."""
        return float(np.mean(self.samples)) / 100 if self.samples else None


def transfer_seconds(device: torch.device, size: Size, *, cached: bool) -> float:
    """Seconds of a resnet18 fine-tune with a frozen backbone: features computed once (cached)
    or every epoch (a random flip forces the backbone pass, as any augmentation does)."""
    x = images(size.transfer_rows, seed=1)
    y = np.arange(size.transfer_rows) % 4
    algo = registry.get("transfer")
    params = algo.params_model.model_validate(
        {"backbone": "resnet18", "pretrained": False, "freeze": "backbone",
         "epochs": size.epochs + 1,
         "batch_size": 64, "image_size": size.transfer_size, "validation_fraction": 0.0,
         "device": device.type, "horizontal_flip": not cached})
    ref = BackboneRef(spec="resnet18", source="torchvision", name="resnet18",
                      data_kind="image", pretrained=False)
    t0 = time.perf_counter()
    algo.fit(FitInput(x, labels=y, backbone=ref), params, NullReport())
    return time.perf_counter() - t0


def embed_rates(device: torch.device, size: Size) -> tuple[float, float]:
    """Rows/s of single-row embed calls from 64 concurrent callers: unbatched, micro-batched
    (the API's MicroBatcher), on a wide autoencoder served from the device."""
    from app.serving.batcher import MicroBatcher

    x = np.random.default_rng(2).normal(size=(512, 64)).astype(np.float32)
    algo = registry.get("autoencoder")
    width = size.embed_width
    model = algo.fit(FitInput(x), algo.params_model.model_validate(
        {"epochs": 1, "hidden_dims": [width, width], "latent_dim": 32, "device": device.type}),
        NullReport())
    model.to(device.type)

    async def hammer(call: Any) -> float:
        sem = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            async with sem:
                await call(x[i % len(x)][None])
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(size.embed_calls)))
        return size.embed_calls / (time.perf_counter() - t0)

    async def unbatched(row: np.ndarray) -> Any:
        return await asyncio.to_thread(model.embed, row)

    async def both() -> tuple[float, float]:
        batcher = MicroBatcher(model.embed, max_size=64, max_wait=0.002)
        return await hammer(unbatched), await hammer(batcher.submit)
    return asyncio.run(both())


def ddp_rate(size: Size, n: int, device: str) -> float:
    """Contrastive images/s of one run over n ranks (torchrun: GPUs, or gloo CPU processes)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rate.json"
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        f"--nproc-per-node={n}", "-m", "bench.gpu", "--rank-of-ddp", str(out),
                        "--device", device, *(["--tiny"] if size is TINY else [])],
                       cwd=ROOT, check=True, timeout=600)
        return float(json.loads(out.read_text())["images_per_s"])


def _ddp_rank(out: str, device: str, size: Size) -> None:
    init_distributed()
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if device == "cuda" \
        else torch.device("cpu")
    rate = contrastive_rate(dev, size, bf16=device == "cuda")
    if distributed()[0] == 0:
        Path(out).write_text(json.dumps({"images_per_s": rate}))
    torch.distributed.destroy_process_group()


def measure(device: torch.device, size: Size) -> list[tuple[str, str, str]]:
    """Every check: rows of (what, figure, against what)."""
    rows = []
    fp32 = contrastive_rate(device, size, bf16=False)
    with BusySampler() if device.type == "cuda" else _Null() as busy:
        bf16 = contrastive_rate(device, size, bf16=device.type == "cuda")
    goal = "goal met" if bf16 >= GOAL_IMAGES_PER_S else f"goal {GOAL_IMAGES_PER_S:,}"
    rows.append(("contrastive 32x32 ResNet-18, fp32", f"{fp32:,.0f} img/s", "baseline"))
    rows.append(("contrastive 32x32 ResNet-18, bf16 autocast", f"{bf16:,.0f} img/s",
                 f"{bf16 / fp32:.2f}x fp32; {goal}"))
    share = getattr(busy, "share", None)
    rows.append(("GPU busy share (bf16 training)",
                 "n/a" if share is None else f"{share:.0%}", "nvml/nvidia-smi samples"))
    plain = transfer_seconds(device, size, cached=False)
    cached = transfer_seconds(device, size, cached=True)
    rows.append(("resnet18 fine-tune, features every epoch", f"{plain:.2f} s", "baseline"))
    rows.append(("resnet18 fine-tune, cached features", f"{cached:.2f} s",
                 f"{plain / cached:.2f}x faster"))
    one, batched = embed_rates(device, size)
    rows.append(("embed, unbatched single-row calls", f"{one:,.0f} rows/s", "baseline"))
    rows.append(("embed, micro-batched single-row calls", f"{batched:,.0f} rows/s",
                 f"{batched / one:.2f}x unbatched"))
    ranks = torch.cuda.device_count() if device.type == "cuda" else 2
    if ranks >= 2:
        # Tiny (a CPU exercise): the in-process run stands in for the one-rank run.
        solo = bf16 if size is TINY else ddp_rate(size, 1, device.type)
        pair = ddp_rate(size, 2, device.type)
        what = "GPUs (NCCL)" if device.type == "cuda" else "CPU processes (gloo)"
        rows.append((f"data-parallel contrastive, 2 {what}", f"{pair:,.0f} img/s",
                     f"{pair / solo:.2f}x one ({solo:,.0f} img/s)"))
    else:
        rows.append(("data-parallel contrastive, 2 GPUs", "n/a", "one GPU on this machine"))
    return rows


class _Null:
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def table(rows: list[tuple[str, str, str]], title: str) -> str:
    """The rows as one aligned text table."""
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(("check", "figure", "against"),
                                                          widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def run() -> dict[str, Any]:
    """`make bench`: the GPU checks where CUDA is; elsewhere a skip, never a failure."""
    if not torch.cuda.is_available():
        print("gpu: no CUDA device; skipped", file=sys.stderr)
        return {"skipped": "no CUDA device"}
    rows = measure(torch.device("cuda"), FULL)
    print(table(rows, f"GPU checks on {torch.cuda.get_device_name()}"), file=sys.stderr)
    return {what: {"figure": figure, "against": against} for what, figure, against in rows}


def main(argv: list[str]) -> int:
    """python -m bench.gpu [--device cuda|cpu] [--tiny] [--require-cuda]."""
    parser = argparse.ArgumentParser(prog="python -m bench.gpu")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a few rows: exercise, not measure")
    parser.add_argument("--require-cuda", action="store_true",
                        help="exit non-zero when CUDA is absent or any CUDA check fails")
    parser.add_argument("--rank-of-ddp", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    size = TINY if args.tiny else FULL
    if args.rank_of_ddp:
        _ddp_rank(args.rank_of_ddp, args.device, size)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device; skipped")
        return 2 if args.require_cuda else 0
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    t0 = time.perf_counter()
    try:
        rows = measure(device, size)
    except Exception as exc:
        print(f"GPU check failed: {type(exc).__name__}: {exc}")
        if args.require_cuda or device.type == "cpu":
            raise
        return 0
    print(table(rows, f"GPU checks on {name} ({time.perf_counter() - t0:.0f} s)"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
