"""`make demo-data`: every file the README's examples use, written into one folder."""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits, make_blobs

COLUMNS = "a,b,c,d"


def _csv(x: np.ndarray) -> str:
    buf = io.StringIO()
    np.savetxt(buf, x, delimiter=",", header=COLUMNS, comments="", fmt="%.6f")
    return buf.getvalue()


def _digits01(digits: Any) -> str:
    # The seed's MNIST autoencoder reads pixels scaled to [0, 1] (x / 255): digits are 0..16.
    buf = io.StringIO()
    header = ",".join([*(f"p{i}" for i in range(64)), "label"])
    rows = np.column_stack([digits.data / 16.0, digits.target])
    np.savetxt(buf, rows, delimiter=",", header=header, comments="", fmt="%.6g")
    return buf.getvalue()


def _png(pixels: np.ndarray) -> bytes:
    # Digits are 8x8 with values 0..16; stored as 8-bit gray PNGs, as a camera roll would hold them.
    buf = io.BytesIO()
    Image.fromarray((pixels * 255 / 16).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _zip(items: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in items:
            z.writestr(name, data)
    return buf.getvalue()


def files() -> dict[str, bytes]:
    """File name -> content: the README's datasets, queries and images."""
    x, _ = make_blobs(n_samples=300, n_features=4, centers=3, random_state=0)
    queries, _ = make_blobs(n_samples=5, n_features=4, centers=3, random_state=0)
    digits = load_digits()
    pngs = [_png(img) for img in digits.images]
    labels = [int(t) for t in digits.target]
    # Ten labelled images per class: the small set a pre-trained backbone is fine-tuned on.
    ten = [i for c in range(10) for i in [j for j, t in enumerate(labels) if t == c][:10]]
    seven, eight = labels.index(7), labels.index(8)
    return {
        "blobs.csv": _csv(x).encode(),
        "queries.csv": _csv(queries).encode(),
        "digits.zip": _zip([(f"{labels[i]}/{i:04d}.png", p) for i, p in enumerate(pngs)]),
        "digits-unlabelled.zip": _zip([(f"{i:04d}.png", p) for i, p in enumerate(pngs)]),
        "digits-10-per-class.zip": _zip([(f"{labels[i]}/{i:04d}.png", pngs[i]) for i in ten]),
        "digits01.csv": _digits01(digits).encode(),
        "seven.png": pngs[seven],
        "eight.png": pngs[eight],
    }


def write(folder: Path) -> list[Path]:
    """Write every demo file into folder (created if needed); the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in files().items():
        (folder / name).write_bytes(data)
        written.append(folder / name)
    return written


def main(argv: list[str] | None = None) -> int:
    """python -m app.demo [FOLDER]"""
    p = argparse.ArgumentParser(prog="python -m app.demo", description=__doc__)
    p.add_argument("folder", nargs="?", default="demo", help="where to write (default: demo)")
    folder = Path(p.parse_args(argv).folder)
    for path in write(folder):
        print(path)  # the CLI's output: one written file a line
    return 0


if __name__ == "__main__":
    sys.exit(main())
