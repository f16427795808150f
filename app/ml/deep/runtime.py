"""The training loop every PyTorch algorithm shares: batches, device, AMP, validation,
early stopping, cancellation, progress, per-epoch history and checkpoints.

An algorithm plugs in an Objective (its modules, optimizers and one training step); the loop
does the rest. On CPU, batches are index_select()s of one pre-built tensor (no DataLoader) and
losses stay on the device until one sync per epoch, so the loop costs about what a bare
PyTorch loop does. On CUDA the forward runs under bf16 autocast, and the data sits on the GPU
when it fits (else a pinned-memory DataLoader with worker processes feeds it).

Several processes (torchrun, one per GPU or CPU share) train one model data-parallel: every
rank draws the same epoch permutation, takes every world-th row of each global batch (what a
DistributedSampler does), and the gradients are averaged over the ranks before each optimizer
step, so a step sees the same rows and the same mean gradient as one process would.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from app.ml.base import Report
from app.ml.deep.params import TrainParams, validation_rows

CHECKPOINT_FORMAT = 1
# Data up to this size lives on the GPU for the whole fit (and at most this share of free memory).
RESIDENT_BYTES = 2 * 1024**3
RESIDENT_SHARE = 0.25
MAX_LOADER_WORKERS = 4
# Seconds between report.check()/progress() calls inside an epoch (and always at its end).
CHECK_EVERY_S = 0.25
# Validation draws (augmentations, noise) use this offset of the seed, fresh every epoch, so
# val_loss of different epochs is measured on the same views.
VAL_SEED_OFFSET = 1_000_003


def distributed() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> None:
    """Join the process group torchrun describes (its env): NCCL on GPUs, gloo on CPU."""
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda when available, else cpu; 'cuda' without a GPU is a readable error.

    In a process group on GPUs, cuda is this rank's own GPU (LOCAL_RANK)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and torch.cuda.is_available() and distributed()[1] > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for, but this worker has no usable CUDA GPU "
                         "(torch.cuda.is_available() is False); use device='auto' or 'cpu'")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; use 'auto', 'cpu' or 'cuda'")
    return torch.device(name)


def split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded (train, validation) split of range(n); validation may be empty."""
    n_val = validation_rows(n, fraction)
    order = np.random.default_rng([seed, 17]).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class Runtime:
    """Device, mixed precision and the random draws of one training run."""

    def __init__(self, device: torch.device, seed: int) -> None:
        self.device = device
        self.seed = seed
        self.amp = device.type == "cuda"
        self.rank, self.world = distributed()
        # Every rank shuffles alike (numpy: the shared batch order) but draws its own noise and
        # augmentations (torch generator), as independent processes would.
        self.gen = torch.Generator(device=device).manual_seed(self._rank_seed(seed))
        self.np_rng = np.random.default_rng(seed)

    def _rank_seed(self, seed: int) -> int:
        if self.rank == 0:
            return seed
        return int(np.random.default_rng([seed, self.rank]).integers(2**62))

    def average_gradients(self, module: nn.Module) -> None:
        """Make every rank's gradients their mean over the ranks (one all_reduce); no-op alone."""
        if self.world == 1:
            return
        grads = [q.grad for q in module.parameters() if q.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on CUDA; nothing on CPU (where it would only slow the step down)."""
        if self.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def randn(self, *shape: int) -> Tensor:
        """Standard normal draws on the training device, from the run's generator."""
        return torch.randn(shape, generator=self.gen, device=self.device)

    def rand(self, *shape: int) -> Tensor:
        """Uniform [0, 1) draws on the training device."""
        return torch.rand(shape, generator=self.gen, device=self.device)

    def randint(self, high: int, *shape: int) -> Tensor:
        """Integers in [0, high) on the training device."""
        return torch.randint(high, shape, generator=self.gen, device=self.device)

    @contextlib.contextmanager
    def fixed_draws(self, seed: int) -> Iterator[None]:
        """Draws inside come from a fresh generator seeded with seed; the run's one is untouched."""
        kept = self.gen
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        try:
            yield
        finally:
            self.gen = kept

    def rng_state(self) -> dict[str, Any]:
        """Every RNG of the run, as tensors and plain types (loadable with weights_only)."""
        state: dict[str, Any] = {"torch": torch.get_rng_state(), "generator": self.gen.get_state(),
                                 "numpy": self.np_rng.bit_generator.state}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        """Restore what rng_state() returned."""
        torch.set_rng_state(state["torch"])
        self.gen.set_state(state["generator"])  # rank 0's; the others branch off it
        if self.rank:
            self.gen.manual_seed(self._rank_seed(int(state["generator"].long().sum())))
        self.np_rng.bit_generator.state = state["numpy"]
        if self.device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state_all(state["cuda"])


def make_optimizer(params: Any, p: TrainParams, *, betas: tuple[float, float] = (0.9, 0.999)
                   ) -> torch.optim.Optimizer:
    """The optimizer p names, over params (tensors, or groups that may set their own lr)."""
    if p.optimizer == "sgd":
        return torch.optim.SGD(params, lr=p.learning_rate, momentum=p.momentum,
                               weight_decay=p.weight_decay)
    cls = torch.optim.Adam if p.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=p.learning_rate, weight_decay=p.weight_decay, betas=betas)


def lr_scale(step: int, total: int, warmup: int, schedule: str) -> float:
    """The multiplier of the base learning rate for optimisation step `step` (0-based) of
    `total`: a linear warmup over `warmup` steps, then constant or cosine down to 0."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":  # torch's CosineAnnealingLR with T_max = the steps after warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    return 1.0


class Objective(ABC):
    """What an algorithm plugs into the loop: its modules, optimizers, a step and a val loss."""

    module: nn.Module  # everything that trains; its state_dict is what checkpoints hold
    optimizers: dict[str, torch.optim.Optimizer]
    rt: Runtime
    validates: bool = True  # False: no val_loss, no early stopping (e.g. a GAN)
    min_batch: int = 1  # a last batch smaller than this is dropped (contrastive needs pairs)

    @abstractmethod
    def train_step(self, xb: Any) -> dict[str, Tensor]:
        """One optimisation step on a batch (a tensor, or an (inputs, targets) pair when the
        Batches carry targets); detached scalar losses, "loss" among them."""

    def val_loss(self, xb: Any) -> Tensor:
        """Mean loss on a validation batch (called under no_grad, module in eval mode)."""
        raise NotImplementedError

    def begin_epoch(self, epoch: int) -> None:
        """Called before each training epoch (1-based, also after a resume): for schedules."""


class SingleLossObjective(Objective):
    """An objective with one loss and one optimizer: subclasses only write loss()."""

    def __init__(self, module: nn.Module, rt: Runtime, params: TrainParams) -> None:
        self.module, self.rt = module, rt
        self.optimizer = make_optimizer(module.parameters(), params)
        self.optimizers = {"model": self.optimizer}

    @abstractmethod
    def loss(self, xb: Tensor, *, training: bool) -> Tensor:
        """Mean loss of the batch (training: with the training-time noise/augmentations)."""

    def train_step(self, xb: Tensor) -> dict[str, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        with self.rt.autocast():
            loss = self.loss(xb, training=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is unannotated
        self.rt.average_gradients(self.module)
        self.optimizer.step()
        return {"loss": loss.detach()}

    def val_loss(self, xb: Tensor) -> Tensor:
        with self.rt.autocast():
            return self.loss(xb, training=False)


class _Rows(Dataset[Any]):
    """A tensor (and its targets) indexed by whole batches of row indices (DataLoader path)."""

    def __init__(self, data: Tensor, targets: Tensor | None = None) -> None:
        self.data, self.targets = data, targets

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: Tensor) -> Any:
        if self.targets is None:
            return self.data.index_select(0, idx)
        return self.data.index_select(0, idx), self.targets.index_select(0, idx)


def batch_rows(batch: Any) -> int:
    """Rows in a batch: a tensor, or an (inputs, targets) pair."""
    return len(batch[0]) if isinstance(batch, tuple) else len(batch)


class _EpochBatches(Sampler[Tensor]):
    """The batches of the current epoch, set before each pass over the loader."""

    def __init__(self) -> None:
        self.batches: list[Tensor] = []

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Batches:
    """Mini-batches of an in-memory tensor, in model space on the training device.

    `to_model` turns a stored batch (e.g. uint8 images) into model-space floats on the device.
    With `targets` (one per row), batches are (inputs, targets) pairs.
    Shuffled batches use the run's numpy generator, so a seed fixes their order. `resident`
    (default: on CPU, or on a GPU the data fits) indexes the tensor on the device directly;
    otherwise a DataLoader with `workers` processes (default: up to 4 on CUDA) gathers batches
    into pinned memory. `shard` (in a process group): batch_size is the global batch and this
    rank yields its every world-th row of it; a last batch too small to give every rank
    min_batch rows is dropped.
    """

    def __init__(self, data: Tensor, rt: Runtime, batch_size: int, *, shuffle: bool,
                 to_model: Callable[[Tensor], Tensor] | None = None, min_batch: int = 1,
                 resident: bool | None = None, workers: int | None = None,
                 targets: Tensor | None = None, shard: bool = False) -> None:
        self.n = len(data)
        self.rank, self.world = (rt.rank, rt.world) if shard else (0, 1)
        self.targets = targets
        self.rt, self.shuffle = rt, shuffle
        self.to_model = to_model or (lambda t: t)
        # Never smaller than min_batch (a GAN's batch norm, contrastive negatives), never > n.
        self.size = max(1, min(max(batch_size, min_batch), self.n))
        if self.world > 1:  # every rank needs min_batch rows of each step
            self.size = max(self.size, min(self.world * min_batch, self.n))
        full, rest = divmod(self.n, self.size)
        self.steps = full + (1 if rest and rest >= min_batch * self.world else 0)
        self.loader: DataLoader[Tensor] | None = None
        if resident is None:
            resident = rt.device.type == "cpu" or _fits_on_device(data, rt.device)
        if resident:
            self.data = data.to(rt.device)
            self.targets = targets.to(rt.device) if targets is not None else None
        else:
            self.data = data
            self._sampler = _EpochBatches()
            if workers is None:
                cuda = rt.device.type == "cuda"
                workers = min(MAX_LOADER_WORKERS, os.cpu_count() or 1) if cuda else 0
            self.loader = DataLoader(_Rows(data, targets), batch_size=None, sampler=self._sampler,
                                     num_workers=workers, pin_memory=rt.device.type == "cuda",
                                     persistent_workers=workers > 0)

    def __len__(self) -> int:
        return self.steps

    @property
    def rows_per_epoch(self) -> int:
        """Rows one pass visits (a too-small last batch is left out)."""
        return min(self.n, self.steps * self.size)

    def _order(self) -> Tensor | None:
        if not self.shuffle:
            return None
        return torch.from_numpy(self.rt.np_rng.permutation(self.n))

    def __iter__(self) -> Iterator[Any]:
        order, b = self._order(), self.size
        if self.loader is not None:
            yield from self._from_loader(order)
            return
        if order is not None and self.data.device != order.device:
            order = order.to(self.data.device)
        for i in range(self.steps):
            if order is None:
                rows: Any = slice(i * b + self.rank, (i + 1) * b, self.world)
                batch = self.data[rows]
            else:
                rows = order[i * b + self.rank:(i + 1) * b:self.world]
                batch = self.data.index_select(0, rows)
            if self.targets is None:
                yield self.to_model(batch)
            else:
                yield self.to_model(batch), self.targets[rows]

    def _from_loader(self, order: Tensor | None) -> Iterator[Any]:
        assert self.loader is not None
        idx = order if order is not None else torch.arange(self.n)
        self._sampler.batches = [idx[i * self.size + self.rank:(i + 1) * self.size:self.world]
                                 for i in range(self.steps)]
        device = self.rt.device
        for batch in self.loader:
            if self.targets is None:
                yield self.to_model(batch.to(device, non_blocking=True))
            else:
                xb, yb = batch
                yield (self.to_model(xb.to(device, non_blocking=True)),
                       yb.to(device, non_blocking=True))


def _fits_on_device(data: Tensor, device: torch.device) -> bool:
    size = data.numel() * data.element_size()
    if size > RESIDENT_BYTES:
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return size <= RESIDENT_SHARE * free


@dataclass(frozen=True)
class LoopConfig:
    """How long to train and when to stop: the loop's share of TrainParams."""

    epochs: int
    patience: int = 0  # epochs without a better val_loss before stopping; 0: never
    check_every_s: float = CHECK_EVERY_S
    schedule: str = "constant"  # see lr_scale
    warmup_epochs: int = 0

    @classmethod
    def from_params(cls, p: TrainParams) -> LoopConfig:
        """The loop settings a job's params ask for."""
        return cls(epochs=p.epochs, patience=p.early_stopping_patience, schedule=p.schedule,
                   warmup_epochs=p.warmup_epochs)


@dataclass
class LoopResult:
    """What the loop did: history, the epoch whose weights the module holds, and why it ended."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float | None = None
    stopped_early: bool = False

    @property
    def epochs_trained(self) -> int:
        return int(self.history[-1]["epoch"]) if self.history else 0

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


class _Ticker:
    """Calls report.check() and progress() at most every `every` seconds of wall time."""

    def __init__(self, report: Report, every: float) -> None:
        self.report, self.every = report, every
        self.due = time.monotonic() + every

    def tick(self, fraction: float) -> None:
        now = time.monotonic()
        if now >= self.due:
            self.report.check()
            self.report.progress(fraction)
            self.due = now + self.every


def train_loop(objective: Objective, train: Batches, val: Batches | None, config: LoopConfig,
               report: Report, *, resume_from: dict[str, Any] | None = None) -> LoopResult:
    """Train objective.module for config.epochs passes over train, reporting as it goes.

    After each epoch: report.epoch({"epoch", "loss", "val_loss", "lr", "samples_per_s",
    "seconds", **the objective's other losses}) and report.checkpoint(write). With patience
    and validation rows, stops after `patience` epochs without a better val_loss and puts the
    best epoch's weights back. resume_from (what load_checkpoint returns) continues a run from
    its weights, optimizer, RNG and epoch (early-stopping state starts afresh).
    """
    validate = val is not None and val.n > 0 and objective.validates
    patience = config.patience if validate else 0
    total_steps = max(1, config.epochs * len(train))
    schedule = _scheduler(objective, config, len(train), total_steps)
    first = 1 if resume_from is None else restore_checkpoint(objective, resume_from) + 1
    step = (first - 1) * len(train)
    ticker = _Ticker(report, config.check_every_s)
    result, best_state, bad = LoopResult(), None, 0
    report.check()
    for epoch in range(first, config.epochs + 1):
        t0 = time.perf_counter()
        objective.begin_epoch(epoch)
        losses = _train_epoch(objective, train, ticker, step, total_steps, schedule,
                              reduce=train.world > 1)
        step += len(train)
        seconds_train = time.perf_counter() - t0
        val_loss = _validate(objective, val) if validate and val is not None else None
        _refuse_divergence(epoch, losses, val_loss)
        entry: dict[str, Any] = {
            "epoch": epoch, "loss": losses.pop("loss"), "val_loss": val_loss,
            "lr": float(next(iter(objective.optimizers.values())).param_groups[0]["lr"]),
            "samples_per_s": train.rows_per_epoch / max(seconds_train, 1e-9),
            "seconds": time.perf_counter() - t0, **losses}
        result.history.append(entry)
        report.progress(step / total_steps)
        report.epoch(entry)
        report.checkpoint(_writer(objective, epoch))
        score: float = entry["loss"] if val_loss is None else val_loss  # val_loss iff validate
        if result.best_val_loss is None or score < result.best_val_loss:
            result.best_val_loss, result.best_epoch, bad = score, epoch, 0
            if patience:
                best_state = _copy_state(objective.module)
        else:
            bad += 1
        if patience and bad >= patience:
            result.stopped_early = epoch < config.epochs
            break
    if best_state is not None:
        objective.module.load_state_dict(best_state)
    if not validate:
        result.best_val_loss = None
    return result


def _scheduler(objective: Objective, config: LoopConfig, steps_per_epoch: int,
               total: int) -> Callable[[int], None] | None:
    """What sets every optimizer's learning rates before a step; None for a constant rate."""
    warmup = config.warmup_epochs * steps_per_epoch
    if config.schedule == "constant" and not warmup:
        return None
    opts = list(objective.optimizers.values())
    for opt in opts:  # the base rates, kept in the optimizers' state (so in checkpoints)
        for g in opt.param_groups:
            g.setdefault("initial_lr", g["lr"])

    def set_lr(step: int) -> None:
        # The groups are looked up each time: restoring a checkpoint replaces them.
        scale = lr_scale(step, total, warmup, config.schedule)
        for opt in opts:
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"] * scale
    return set_lr


def _train_epoch(objective: Objective, train: Batches, ticker: _Ticker, done: int,
                 total: int, schedule: Callable[[int], None] | None = None, *,
                 reduce: bool = False) -> dict[str, float]:
    objective.module.train()
    steps: dict[str, list[Tensor]] = {}
    sizes: list[int] = []
    for xb in train:
        if schedule is not None:
            schedule(done + len(sizes))
        for name, value in objective.train_step(xb).items():
            steps.setdefault(name, []).append(value)
        sizes.append(batch_rows(xb))
        ticker.tick((done + len(sizes)) / total)
    return _weighted_means(steps, sizes, reduce=reduce)


def _weighted_means(steps: dict[str, list[Tensor]], sizes: list[int], *,
                    reduce: bool = False) -> dict[str, float]:
    """Size-weighted mean of every loss; reduce: over the rows of all ranks (one all_reduce)."""
    # One device sync per epoch: stack every step's losses, weigh by batch size, then .tolist().
    if not steps:
        return {"loss": math.nan}
    names = list(steps)
    stacked = torch.stack([torch.stack(steps[k]).float() for k in names])
    weights = torch.tensor(sizes, dtype=torch.float32, device=stacked.device)
    sums = torch.cat([(stacked * weights).sum(dim=1), weights.sum().reshape(1)])
    if reduce:
        dist.all_reduce(sums)
    means = sums[:-1] / sums[-1]
    return dict(zip(names, means.tolist(), strict=True))


def _validate(objective: Objective, val: Batches) -> float:
    objective.module.eval()
    values: list[Tensor] = []
    sizes: list[int] = []
    with torch.no_grad(), objective.rt.fixed_draws(objective.rt.seed + VAL_SEED_OFFSET):
        for xb in val:
            values.append(objective.val_loss(xb).detach())
            sizes.append(batch_rows(xb))
    return _weighted_means({"loss": values}, sizes)["loss"]


def _refuse_divergence(epoch: int, losses: dict[str, float], val_loss: float | None) -> None:
    bad = [k for k, v in [*losses.items(), ("val_loss", val_loss)]
           if v is not None and not math.isfinite(v)]
    if bad:
        raise ValueError(f"training diverged at epoch {epoch}: {', '.join(bad)} is not finite; "
                         "try a lower learning_rate or keep standardize on")


def _copy_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def checkpoint_state(objective: Objective, epoch: int) -> dict[str, Any]:
    """{"format", "model", "optimizer", "epoch", "rng"}: all tensors and plain types.

    "optimizer" is the optimizer's state_dict, or {name: state_dict} when there are several.
    """
    opts = {name: opt.state_dict() for name, opt in objective.optimizers.items()}
    return {"format": CHECKPOINT_FORMAT, "model": objective.module.state_dict(),
            "optimizer": next(iter(opts.values())) if len(opts) == 1 else opts,
            "epoch": epoch, "rng": objective.rt.rng_state()}


def _writer(objective: Objective, epoch: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        torch.save(checkpoint_state(objective, epoch), Path(path))
    return write


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Read a checkpoint this service wrote (torch.load with weights_only=True)."""
    state = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{Path(path).name} is not a format-{CHECKPOINT_FORMAT} checkpoint")
    return state


def restore_checkpoint(objective: Objective, state: dict[str, Any]) -> int:
    """Put a checkpoint's weights, optimizer and RNG state back; return its epoch."""
    objective.module.load_state_dict(state["model"])
    opts = objective.optimizers
    saved = state["optimizer"]
    for name, opt in opts.items():
        opt.load_state_dict(saved if len(opts) == 1 else saved[name])
    objective.rt.set_rng_state(state["rng"])
    return int(state["epoch"])
