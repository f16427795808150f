"""Input checks and the preprocessing saved with a model (numpy only, no torch).

Tabular rows are z-scored with the training rows' mean and std. Images (uint8, NHWC) are scaled
to [0, 1] and normalised per channel with the training images' mean and std. The same stats,
recorded in the model's config, are applied at serving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.ml.base import InputError

TABULAR = "tabular"
IMAGE = "image"
IMAGE_CHANNELS = (1, 3, 4)
# Stats of big image sets are summed in chunks of this many rows (no full float copy).
STATS_CHUNK = 4096


@dataclass(frozen=True)
class Prep:
    """Data kind, input shape and the normalisation stats of one trained model."""

    kind: str  # TABULAR or IMAGE
    shape: tuple[int, ...]  # (n_features,) or (height, width, channels)
    mean: tuple[float, ...]  # per feature (tabular) or per channel (images)
    std: tuple[float, ...]

    @property
    def n_features(self) -> int:
        """Values per row: the width of a table, h*w*c of an image."""
        return math.prod(self.shape)

    def describe(self) -> str:
        """The expected input in words, for error messages."""
        if self.kind == TABULAR:
            return f"{self.shape[0]} features"
        h, w, c = self.shape
        return f"images of {h}x{w}x{c}"

    def to_json(self) -> dict[str, Any]:
        """What config.json records."""
        return {"kind": self.kind, "shape": list(self.shape), "mean": list(self.mean),
                "std": list(self.std)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prep:
        """Rebuild from to_json()'s output."""
        kind = data["kind"]
        if kind not in (TABULAR, IMAGE):
            raise ValueError(f"unknown data kind {kind!r}")
        shape = tuple(int(v) for v in data["shape"])
        mean = tuple(float(v) for v in data["mean"])
        std = tuple(float(v) for v in data["std"])
        width = shape[0] if kind == TABULAR else shape[-1]
        if len(mean) != width or len(std) != width:
            raise ValueError("preprocessing stats do not match the input shape")
        return cls(kind=kind, shape=shape, mean=mean, std=std)


def training_data(x: Any) -> tuple[str, np.ndarray]:
    """The kind of the training data and the array itself, checked.

    Tabular: a finite 2-D numeric array. Images: uint8 (n, h, w, c) with c in 1, 3, 4
    (a 3-D uint8 array is taken as single-channel images).
    """
    arr = np.asarray(x)
    if arr.dtype == np.uint8 and arr.ndim in (3, 4):
        arr = arr[..., None] if arr.ndim == 3 else arr
        if arr.shape[0] == 0 or min(arr.shape[1:3]) < 1:
            raise ValueError(f"training images must be non-empty, got shape {arr.shape}")
        if arr.shape[3] not in IMAGE_CHANNELS:
            raise ValueError(f"images must have 1, 3 or 4 channels, got {arr.shape[3]}")
        return IMAGE, arr
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError("training data must be a non-empty table of rows (n, features) or "
                         f"uint8 images (n, height, width, channels); got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"training rows must be numbers, got dtype {arr.dtype}")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("training data holds NaN or infinite values; clean or drop those rows")
    return TABULAR, arr


def fit_prep(kind: str, x: np.ndarray, standardize: bool) -> Prep:
    """Stats of the training rows (std 0 becomes 1; without standardize: mean 0, std 1)."""
    shape = tuple(int(v) for v in x.shape[1:])
    width = shape[0] if kind == TABULAR else shape[-1]
    if not standardize:
        return Prep(kind=kind, shape=shape, mean=(0.0,) * width, std=(1.0,) * width)
    if kind == TABULAR:
        mean = x.mean(axis=0, dtype=np.float64)
        centred = x - mean.astype(x.dtype)
        std = np.sqrt(np.einsum("ij,ij->j", centred, centred, dtype=np.float64) / len(x))
    else:
        mean, std = _channel_stats(x)
    std = np.where(std > 0, std, 1.0)
    return Prep(kind=kind, shape=shape, mean=tuple(float(v) for v in mean),
                std=tuple(float(v) for v in std))


def _channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Pixel values in [0, 1]; sums in float64 over chunks keep memory at one chunk's worth.
    c = images.shape[-1]
    total, squares, count = np.zeros(c), np.zeros(c), 0
    for start in range(0, images.shape[0], STATS_CHUNK):
        chunk = images[start:start + STATS_CHUNK].reshape(-1, c).astype(np.float64) / 255.0
        total += chunk.sum(axis=0)
        squares += np.square(chunk).sum(axis=0)
        count += chunk.shape[0]
    mean = total / count
    return mean, np.sqrt(np.maximum(squares / count - mean**2, 0.0))


def standardize_rows(rows: np.ndarray, prep: Prep) -> np.ndarray:
    """Tabular rows in model space: (x - mean) / std as float32.

    float32 rows are computed in float32 (they hold no more precision than that); anything
    else in float64, then cast.
    """
    work = np.float32 if rows.dtype == np.float32 else np.float64
    out: np.ndarray[Any, np.dtype[np.floating[Any]]] = rows.astype(work, copy=True)
    out -= np.asarray(prep.mean, dtype=work)
    out /= np.asarray(prep.std, dtype=work)
    return out.astype(np.float32, copy=False)


def unstandardize_rows(values: np.ndarray, prep: Prep) -> np.ndarray:
    """Model-space rows back in the training data's units (float64)."""
    rows: np.ndarray = values.astype(np.float64) * np.asarray(prep.std) + np.asarray(prep.mean)
    return rows


def model_space_to_uint8(values: np.ndarray, prep: Prep) -> np.ndarray:
    """Model-space NCHW float images back to uint8 NHWC pixels."""
    c = prep.shape[-1]
    mean = np.asarray(prep.mean).reshape(1, c, 1, 1)
    std = np.asarray(prep.std).reshape(1, c, 1, 1)
    pixels = (values.astype(np.float64) * std + mean) * 255.0
    images: np.ndarray = np.clip(np.rint(pixels), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return images


def to_nchw(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC images as a fresh NCHW array with plain C strides.

    np.ascontiguousarray() may keep odd strides on a size-1 channel axis, which torch then
    takes for channels-last and convolves by another kernel: the same image would not always
    give bitwise the same answer.
    """
    n, h, w, c = images.shape
    out = np.empty((n, c, h, w), dtype=np.uint8)
    out[...] = images.transpose(0, 3, 1, 2)
    return out


def request_rows(x: Any, prep: Prep) -> np.ndarray:
    """Rows of a predict/embed request, checked against the training width (float32, finite)."""
    try:
        arr = np.asarray(x)
    except ValueError as exc:  # ragged rows: numpy cannot make a table of them
        raise InputError(f"expected rows of {prep.n_features} features each: {exc}") from exc
    width = prep.shape[0]
    if arr.ndim != 2 or arr.shape[1] != width:
        got = arr.shape[1] if arr.ndim == 2 else f"an array of shape {arr.shape}"
        raise InputError(f"expected {width} features, got {got}")
    if arr.shape[0] == 0:
        raise InputError("expected at least one row, got none")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"every value must be a real number, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise InputError("values must be finite numbers (no NaN or infinity)")
    return arr


def request_images(x: Any, prep: Prep) -> np.ndarray:
    """Images of a predict/embed request as uint8 NHWC of the training size.

    Single-channel models also take (n, h, w). Non-uint8 input must hold whole numbers 0..255.
    """
    arr = np.asarray(x)
    h, w, c = prep.shape
    if arr.ndim == 3 and c == 1:
        arr = arr[..., None]
    if arr.ndim != 4 or tuple(arr.shape[1:]) != (h, w, c):
        got = "x".join(str(v) for v in arr.shape[1:]) if arr.ndim == 4 else f"shape {arr.shape}"
        raise InputError(f"expected images of {h}x{w}x{c}, got {got}")
    if arr.shape[0] == 0:
        raise InputError("expected at least one image, got none")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind not in "biuf" or not np.isfinite(arr).all():
        raise InputError(f"image pixels must be integers 0..255, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() > 255 or not np.array_equal(arr, np.rint(arr)):
        raise InputError("image pixels must be integers 0..255")
    return arr.astype(np.uint8)


def request_input(x: Any, prep: Prep) -> np.ndarray:
    """A request's rows or images, checked for this model."""
    return request_rows(x, prep) if prep.kind == TABULAR else request_images(x, prep)
