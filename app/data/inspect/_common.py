"""Checks every format inspector makes: column names, the schema's width, infinities; and the
range of each numeric column, which every inspector records."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc

from app.data.formats import IngestError


def check_width(n_columns: int, limit: int) -> None:
    """A schema entry per column lives on the dataset's row and in every answer about it."""
    if n_columns > limit:
        raise IngestError(f"the data has {n_columns} columns, more than the limit of {limit} "
                          "(PRETRAINER_MAX_DATASET_COLUMNS); a wide array is usually meant "
                          "transposed (rows x columns)", kind="too_large")


def check_names(names: list[str], where: str) -> None:
    """Every column has a name, and no name is used twice."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names, 1):
        if not name.strip():
            raise IngestError(f"column {i} of the {where} has no name; every column needs a "
                              "unique, non-empty name")
        if name in seen:
            raise IngestError(f'the {where} names column "{name}" twice (columns {seen[name]} '
                              f"and {i}); column names must be unique", column=name)
        seen[name] = i


def first_infinite(col: pa.Array) -> int | None:
    """The 0-based index of the first infinite number in a column, text or float; else None."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        try:
            col = pc.utf8_trim_whitespace(col).cast(pa.float64())
        except pa.ArrowInvalid:
            return None  # not all numbers: a text column, where "inf" is a word
    if not pa.types.is_floating(col.type):
        return None
    hits = pc.is_inf(col)
    if not pc.any(hits).as_py():
        return None
    return int(pc.index(hits, True).as_py())


def infinite(column: str, row: int) -> IngestError:
    """The refusal of an infinity in a numeric column, naming its column and row."""
    return IngestError(f'column "{column}" holds an infinite number in row {row} (data rows '
                       "counted from 1, the header not counted); infinities cannot be trained "
                       "on: replace them with a finite value or leave the cell empty",
                       row=row, column=column)


class Ranges:
    """The running (min, max) of each column's numbers, batch by batch (NaN and nulls skipped).

    Recorded on the dataset so that a job can be checked against its values at submit (a loss
    that needs inputs in [0, 1]) without reading the data again.
    """

    def __init__(self, width: int) -> None:
        self.low: list[float | None] = [None] * width
        self.high: list[float | None] = [None] * width

    def add(self, i: int, low: float | None, high: float | None) -> None:
        """Widen column i's range to take in [low, high] (None or NaN: nothing seen)."""
        if low is None or high is None or math.isnan(low) or math.isnan(high):
            return
        current_low, current_high = self.low[i], self.high[i]
        self.low[i] = low if current_low is None else min(current_low, low)
        self.high[i] = high if current_high is None else max(current_high, high)

    def add_array(self, i: int, col: pa.Array) -> None:
        """Widen column i's range by an Arrow column (text read as numbers where it can be)."""
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            try:
                col = pc.utf8_trim_whitespace(col).cast(pa.float64())
            except pa.ArrowInvalid:
                return  # not all numbers: a text column, whose range means nothing
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                or pa.types.is_decimal(col.type)):
            return
        found = pc.min_max(col)  # NaN is skipped unless every value is NaN (then add skips)
        low, high = found["min"].as_py(), found["max"].as_py()
        self.add(i, None if low is None else float(low), None if high is None else float(high))

    def of(self, i: int, dtype: str) -> dict[str, float | None]:
        """Column i's range as Column's min and max: None for text and booleans."""
        if dtype in ("string", "bool"):
            return {"min": None, "max": None}
        return {"min": self.low[i], "max": self.high[i]}
