"""Reproducibility: the seed a job runs under, the facts a model's record keeps about where it
was made, and how the artifact of a rerun compares with the original's.

A model's record (app.services.models.publish) holds its resolved params and seed, the data it
read, the package versions, the device and the sha256 of every artifact file. A rerun from the
record on a CPU gives byte-identical files (skops files are written canonically, see
app.ml.artifacts); on a GPU the files may differ, and compare() says by how much.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import platform
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.ml import artifacts
from app.ml.base import Params, Trained

# The params that seed an algorithm, by the names its Params model may use for them.
SEED_PARAMS = ("seed", "random_state")
# Seeds stay below 2**31: every seeded library (numpy's legacy generator, sklearn) takes them.
SEED_SPACE = 2**31
CHUNK = 1024 * 1024


def job_seed(job_id: str) -> int:
    """The seed of a job whose algorithm leaves it open: fixed by the job id, so every try of
    the job (and every rank of a multi-process one) draws the same."""
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big") % SEED_SPACE


def resolve_seed(params_model: type[Params], params: dict[str, Any],
                 fallback: int) -> tuple[dict[str, Any], int]:
    """(params with a None seed param set to fallback, the seed the job runs under).

    An algorithm without a seed param runs under fallback too (seed_everything), so its record
    still names the seed a rerun must use.
    """
    for name in SEED_PARAMS:
        if name in params_model.model_fields:
            if params.get(name) is None:
                return {**params, name: fallback}, fallback
            return dict(params), int(params[name])
    return dict(params), fallback


def seed_everything(seed: int) -> None:
    """Seed the process-wide generators an algorithm may draw from without a seed of its own:
    Python's, numpy's legacy one (scikit-learn's random_state=None) and torch's."""
    import torch  # the worker has it loaded for every torch job; a CPU job pays once

    random.seed(seed)
    np.random.seed(seed % SEED_SPACE)
    torch.manual_seed(seed)


# ---- the record's facts ----------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """The sha256 of one file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file under directory, by its path relative to it, sorted."""
    root = Path(directory)
    return {p.relative_to(root).as_posix(): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file()}


def versions(git_commit: str | None = None) -> dict[str, str | None]:
    """The versions a model was trained with; git_commit: the configured one, else git's
    answer when the source is a checkout, else None."""
    return {
        "python": sys.version,
        "torch": _version("torch"),
        "scikit-learn": _version("scikit-learn"),
        "numpy": np.__version__,
        "pretrainer": _version("pretrainer"),
        "git_commit": git_commit or _git_head(),
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def _git_head() -> str | None:
    """HEAD of the checkout this source runs from; None when it is not one or git is absent."""
    source = Path(__file__).resolve().parents[2]
    if not (source / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], check=True,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def device_of(trained: Trained) -> dict[str, Any]:
    """Where the model was trained: {"device": "cpu" | "cuda:0", "device_name", "threads"}."""
    import torch

    name = str(getattr(trained, "device", "cpu"))  # torch models know theirs; the rest are CPU
    if name.startswith("cuda"):
        index = int(name.partition(":")[2] or torch.cuda.current_device())
        return {"device": f"cuda:{index}", "device_name": torch.cuda.get_device_name(index),
                "threads": torch.get_num_threads()}
    # Float sums on CPU may depend on how many threads split them: part of the record.
    return {"device": "cpu", "device_name": cpu_name(), "threads": torch.get_num_threads()}


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU model (Linux: /proc/cpuinfo), else what platform knows of it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# ---- comparing a rerun's artifact with the original ----------------------------------------


@dataclass(frozen=True)
class Comparison:
    """How a rerun's artifact compares with the original's.

    identical: every file's sha256 is the same. max_abs_diff: the largest absolute difference
    between corresponding numbers of the arrays the two hold (weights, centroids, embeddings);
    0.0 when identical. differing_files: the files whose hashes differ; incomparable: arrays
    only one side has, or of another shape, which max_abs_diff cannot cover.
    """

    identical: bool
    max_abs_diff: float
    differing_files: list[str] = field(default_factory=list)
    incomparable: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        """What a reproduce job's metrics show."""
        out: dict[str, Any] = {"identical": self.identical, "max_abs_diff": self.max_abs_diff,
                               "differing_files": list(self.differing_files)}
        if self.incomparable:
            out["incomparable"] = list(self.incomparable)
        return out


def compare(old_hashes: dict[str, str], new_dir: Path,
            old_dir: Callable[[], Path]) -> Comparison:
    """Compare a new artifact folder with the original's recorded hashes; old_dir is asked for
    the original's folder only when some file differs (to measure by how much)."""
    new_hashes = file_hashes(new_dir)
    differing = sorted(n for n in set(old_hashes) | set(new_hashes)
                       if old_hashes.get(n) != new_hashes.get(n))
    if not differing:
        return Comparison(identical=True, max_abs_diff=0.0)
    return compare_dirs(old_dir(), new_dir, differing)


def compare_dirs(old_dir: Path, new_dir: Path, names: list[str] | None = None) -> Comparison:
    """Compare two artifact folders file by file (names: only these files)."""
    old_dir, new_dir = Path(old_dir), Path(new_dir)
    if names is None:
        old, new = file_hashes(old_dir), file_hashes(new_dir)
        names = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
    worst, incomparable = 0.0, []
    for name in names:
        a, b = arrays(old_dir / name), arrays(new_dir / name)
        for key in sorted(set(a) | set(b)):
            label = f"{name}:{key}" if key else name
            diff = _max_abs_diff(a.get(key), b.get(key))
            if diff is None:
                incomparable.append(label)
            else:
                worst = max(worst, diff)
    return Comparison(identical=not names, max_abs_diff=worst, differing_files=list(names),
                      incomparable=incomparable)


def _max_abs_diff(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """The largest |a - b|, NaN matching NaN; None when they cannot be compared."""
    if a is None or b is None or a.shape != b.shape:
        return None
    if a.size == 0:
        return 0.0
    x, y = a.astype(np.float64), b.astype(np.float64)
    both_nan = np.isnan(x) & np.isnan(y)
    diff = np.where(both_nan, 0.0, np.abs(x - y))
    worst = float(np.max(diff))
    return worst if np.isfinite(worst) else None


def arrays(path: Path) -> dict[str, np.ndarray]:
    """The numeric arrays one artifact file holds, by name ("" for a lone .npy); {} for a file
    that holds none (JSON metadata: compared by its hash alone) or that is missing."""
    path = Path(path)
    if not path.is_file():
        return {}
    reader = _READERS.get(path.suffix)
    return reader(path) if reader is not None else {}


def _npy(path: Path) -> dict[str, np.ndarray]:
    return {"": artifacts.load_array(path)}


def _safetensors(path: Path) -> dict[str, np.ndarray]:
    import torch
    from safetensors.torch import load_file  # torch tensors: bfloat16 has no numpy dtype

    return {k: v.to(torch.float64).numpy() for k, v in load_file(str(path), device="cpu").items()}


def _skops(path: Path) -> dict[str, np.ndarray]:
    """The fitted numeric arrays of a scikit-learn object (centroids, components, scales)."""
    obj = artifacts.load_estimator(path)
    return {name: value for name, value in sorted(vars(obj).items())
            if isinstance(value, np.ndarray) and value.dtype.kind in "fiub"}


_READERS: dict[str, Callable[[Path], dict[str, np.ndarray]]] = {
    ".npy": _npy, ".safetensors": _safetensors, ".skops": _skops}
