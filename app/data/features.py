"""Features: which columns of a tabular dataset a job may take as numbers, and why not."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NUMERIC_DTYPES = ("float64", "float32", "int64", "int32", "bool")  # bool counts as 0/1


class FeatureError(Exception):
    """Features that do not fit the data: a message, and the column it is about."""

    def __init__(self, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


def numeric_columns(columns: list[dict[str, Any]]) -> list[str]:
    """Names of the columns a model can take as numbers (floats, ints and bools), in order."""
    return [c["name"] for c in columns if c["dtype"] in NUMERIC_DTYPES]


# Column names (compared case-insensitively) that hold a label or a row id, not a measurement:
# a job that names no features leaves them out, since clustering on a label or an id is a
# silent mistake; naming them in features trains on them. (Which column a text dataset takes
# its labels from is another question, answered by app.data.text.LABEL_COLUMNS.)
LABEL_LIKE = ("target", "label", "y", "id")


def left_out(columns: list[dict[str, Any]], features: list[str] | None,
             exclude: Sequence[str] = ()) -> list[str]:
    """Numeric columns named like a label or an id, which a job without features leaves out."""
    if features is not None:
        return []
    return [name for name in numeric_columns(columns)
            if name not in exclude and name.lower() in LABEL_LIKE]


def check_features(columns: list[dict[str, Any]], features: list[str] | None,
                   exclude: Sequence[str] = ()) -> list[str]:
    """Resolve a job's feature list: all numeric columns but `exclude` and the label-like ones
    when None; else check it."""
    by_name = {c["name"]: c for c in columns}
    if features is None:
        skipped = left_out(columns, None, exclude)
        chosen = [name for name in numeric_columns(columns)
                  if name not in exclude and name not in skipped]
        if not chosen and skipped:
            quoted = ", ".join(f'"{n}"' for n in skipped)
            raise FeatureError(f"the dataset's only numeric columns ({', '.join(skipped)}) are "
                               "named like a label or an id, so they are not used unless asked "
                               f"for: name them in features, e.g. features: [{quoted}]")
        if not chosen:
            raise FeatureError("the dataset has no numeric columns to use as features "
                               f"(its columns: {_describe(columns)})")
    else:
        chosen = _checkedlisted(features, by_name, exclude)
    for name in chosen:
        _check_usable(by_name[name], implicit=features is None)
    return chosen


def _checkedlisted(features: list[str], by_name: dict[str, dict[str, Any]],
                   exclude: Sequence[str]) -> list[str]:
    if not features:
        raise FeatureError("features is empty; name at least one column, or leave features out "
                           "to use every numeric column")
    seen: set[str] = set()
    for name in features:
        if name not in by_name:
            raise FeatureError(f'unknown column "{name}"; available: {listed(list(by_name))}',
                               column=name)
        if name in exclude:
            raise FeatureError(f'column "{name}" is the target; it cannot also be a feature',
                               column=name)
        if name in seen:
            raise FeatureError(f'column "{name}" is listed twice in features', column=name)
        seen.add(name)
    return list(features)


def _check_usable(column: dict[str, Any], *, implicit: bool) -> None:
    name, dtype, nulls = column["name"], column["dtype"], column.get("nulls", 0)
    if dtype not in NUMERIC_DTYPES:
        raise FeatureError(f'column "{name}" is {dtype}; features must be numeric '
                           "(float, int or bool)", column=name)
    if nulls:
        fix = "pass features without it" if implicit else "leave it out of features"
        raise FeatureError(f'column "{name}" has {nulls} missing values; fill them in the data '
                           f"or {fix}", column=name)


def _describe(columns: list[dict[str, Any]]) -> str:
    return ", ".join(f"{c['name']} ({c['dtype']})" for c in columns[:20]) + (
        ", …" if len(columns) > 20 else "")


def listed(names: list[str], limit: int = 20) -> str:
    """Names joined for a message, cut after limit."""
    return ", ".join(names[:limit]) + (", …" if len(names) > limit else "")
