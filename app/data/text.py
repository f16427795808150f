"""Text datasets: a CSV or JSONL with a text column (and maybe a label column).

An upload is a text dataset when it has a string column named `text`; a job can also pick a
string column of any tabular upload with `features: [<column>]`. The dataset row keeps the
facts a user checks before training: length statistics and the label counts.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from app.data.features import FeatureError
from app.data.loaders import load_column

TEXT_COLUMN = "text"
# A label column is found by these names, in this order, when the job does not name a target.
LABEL_COLUMNS = ("label", "labels", "target", "class", "category", "y")
# Label counts are listed up to this many distinct values (a regression target has more).
MAX_LABEL_COUNTS = 200
TEXT_FORMATS = ("csv", "jsonl", "parquet")


def text_column(columns: list[dict[str, Any]]) -> str | None:
    """The name of the text column of an upload, or None when it has none."""
    for c in columns:
        if c["name"] == TEXT_COLUMN and c["dtype"] == "string":
            return TEXT_COLUMN
    return None


def is_text_job(columns: list[dict[str, Any]], features: list[str] | None) -> bool:
    """True when a job's features are one string column: the texts it trains on."""
    dtypes = {c["name"]: c["dtype"] for c in columns}
    return features is not None and len(features) == 1 and dtypes.get(features[0]) == "string"


def label_column(columns: list[dict[str, Any]], text: str) -> str | None:
    """The column that holds the labels by its name, or None."""
    names = {c["name"] for c in columns}
    return next((n for n in LABEL_COLUMNS if n in names and n != text), None)


def details(path: Path, fmt: str, columns: list[dict[str, Any]]) -> dict[str, Any] | None:
    """{"text": {...}} for a text upload (column, lengths, labels), or None if it is not one."""
    if fmt not in TEXT_FORMATS:
        return None
    column = text_column(columns)
    if column is None:
        return None
    texts = load_texts(path, fmt, column)
    chars = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    words = np.fromiter((len(t.split()) for t in texts), dtype=np.int64, count=len(texts))
    facts: dict[str, Any] = {
        "column": column,
        "length": {"min_chars": int(chars.min()), "mean_chars": round(float(chars.mean()), 2),
                   "median_chars": float(np.median(chars)), "max_chars": int(chars.max()),
                   "mean_words": round(float(words.mean()), 2)},
        "empty": int((chars == 0).sum()),
        "label_column": None, "label_counts": None,
    }
    label = label_column(columns, column)
    if label is not None:
        facts["label_column"] = label
        facts["label_counts"] = label_counts(load_column(path, fmt, label))
    return {"text": facts}


def load_texts(path: Path, fmt: str, column: str) -> list[str]:
    """One text column as a list of str (a missing value is the empty string)."""
    values = load_column(path, fmt, column, dtype="string" if fmt == "csv" else None)
    return as_texts(values, column)


def as_texts(values: Any, column: str, first_row: int = 0) -> list[str]:
    """A text column's values as str, a missing one as the empty string; FeatureError on a
    value of another type (first_row: the row number of values[0], for the message)."""
    out = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append("")
        elif isinstance(v, str):
            out.append(v)
        else:
            raise FeatureError(f'column "{column}" holds {type(v).__name__} values '
                               f"(row {first_row + i + 1}); a text column must hold strings",
                               column=column)
    return out


def label_counts(values: np.ndarray) -> dict[str, int] | None:
    """{label: count} (as strings, most common first), or None with too many distinct values."""
    counts = Counter(label_name(v) for v in values if not _missing(v))
    if len(counts) > MAX_LABEL_COUNTS:
        return None
    return dict(counts.most_common())


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def label_name(v: Any) -> str:
    """A label value as its class name: 1 and 1.0 are one class, "1"; strings stay."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)
