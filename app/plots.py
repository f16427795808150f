"""PNG pictures of jobs and models: loss curves, 2-D embeddings, confusion matrices.

matplotlib is imported inside the functions (Agg canvas, no pyplot state): the API must start
without paying for it, and only the first plot request does.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

CURVES = ("loss", "val_loss", "d_loss", "g_loss")
SAMPLE_ROWS = 2000
MAX_LEGEND = 20


class NoPlot(Exception):
    """This job or model has nothing to draw for the asked picture; the message says why."""


def _figure(width: float = 6.4, height: float = 4.8) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="tight")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def loss_png(history: Sequence[dict[str, Any]], title: str) -> bytes:
    """Loss (and val_loss, d_loss, g_loss when present) per epoch."""
    curves = {k: [(h["epoch"], h[k]) for h in history
                  if isinstance(h.get(k), (int, float)) and "epoch" in h] for k in CURVES}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        raise NoPlot("no epoch with a loss has been recorded")
    fig = _figure()
    ax = fig.add_subplot()
    for name, points in curves.items():
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=name)
    ax.set(xlabel="epoch", ylabel="loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def confusion_png(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> bytes:
    """A confusion matrix (rows = true class, columns = predicted), with the counts written in."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(classes):
        raise NoPlot(f"confusion_matrix is {m.shape}, not square over {len(classes)} classes")
    n = len(classes)
    fig = _figure(max(4.0, 0.5 * n + 2), max(3.5, 0.5 * n + 1.5))
    ax = fig.add_subplot()
    image = ax.imshow(m, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set(xticks=range(n), yticks=range(n), xticklabels=classes, yticklabels=classes,
           xlabel="predicted", ylabel="true", title=title)
    ax.tick_params(axis="x", labelrotation=45)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{m[i, j]:g}", ha="center", va="center", fontsize=8,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    return _png(fig)


def to_2d(points: np.ndarray) -> np.ndarray:
    """The first two principal components of points (as is when already 2-D)."""
    x = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    if x.shape[1] <= 2:
        return np.pad(x, ((0, 0), (0, 2 - x.shape[1])))
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return np.asarray(centred @ vt[:2].T)


def sample_rows(n: int, size: int = SAMPLE_ROWS, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded sample of at most size rows out of n."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def scatter_png(points: np.ndarray, labels: Sequence[Any] | None, title: str,
                legend_title: str) -> bytes:
    """A 2-D scatter of points (PCA'd to 2-D when wider), coloured by labels when given."""
    xy = to_2d(points)
    fig = _figure()
    ax = fig.add_subplot()
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=8, alpha=0.7)
    else:
        values = np.asarray([str(v) for v in labels])
        names = sorted(set(values), key=_natural)
        cmap = _colours(len(names))
        for k, name in enumerate(names):
            mask = values == name
            ax.scatter(xy[mask, 0], xy[mask, 1], s=8, alpha=0.7, color=cmap(k), label=name)
        if len(names) <= MAX_LEGEND:
            ax.legend(title=legend_title, fontsize=7, markerscale=2, loc="best")
    ax.set(xlabel="component 1", ylabel="component 2", title=title)
    return _png(fig)


def _colours(n: int) -> Any:
    from matplotlib import colormaps

    name = "tab10" if n <= 10 else "tab20" if n <= 20 else "viridis"
    cmap = colormaps[name]
    return cmap if name != "viridis" else (lambda k: cmap(k / max(n - 1, 1)))


def _natural(text: str) -> tuple[int, float | str]:
    try:
        return (0, float(text))
    except ValueError:
        return (1, text)
