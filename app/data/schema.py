"""What inspection learns about an upload: its kind, format, row count and column schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DTYPES = ("float64", "float32", "int64", "int32", "bool", "string")


@dataclass
class Column:
    """One column of an inferred schema."""

    name: str
    dtype: str  # one of DTYPES
    nulls: int
    # The smallest and largest number of a numeric column (None for text and booleans, and
    # for datasets stored before ranges were recorded).
    min: float | None = None
    max: float | None = None


@dataclass
class DatasetInfo:
    """What inspection learned about an upload."""

    kind: str  # "tabular", "image" or "text"
    format: str  # one of app.data.formats.FORMATS
    n_rows: int
    columns: list[Column]  # empty for images
    # Kind-specific facts for the dataset row (images: see ImageSetInfo.details).
    details: dict[str, Any] = field(default_factory=dict)
