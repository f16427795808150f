"""What a job trains on, decided once from its spec and its dataset, and the arrays it loads.

Submitting a job decides its JobData (`decide`, which says what does not fit); the worker, the
plots and evaluation rebuild it from the stored job (`of_job`) and `load` its arrays. No other
module works out which columns, which labels or which file a job reads.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from app.data.features import FeatureError, check_features, left_out
from app.data.loaders import load_column, load_images, load_matrix
from app.data.text import is_text_job, load_texts

DataKind = Literal["tabular", "text", "image"]


class DatasetRow(Protocol):
    """The facts of a stored dataset that decide what a job on it reads."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def blob_key(self) -> str: ...
    @property
    def columns(self) -> list[dict[str, Any]]: ...
    @property
    def details(self) -> dict[str, Any] | None: ...


class JobDataError(Exception):
    """A job's spec does not fit its dataset: field is the request field at fault.

    detail, when given, is the longer sentence for the whole problem; message the field's own.
    """

    def __init__(self, field: str, message: str, *, detail: str | None = None) -> None:
        super().__init__(detail or f"{field}: {message}")
        self.field = field
        self.message = message
        self.detail = detail or f"{field}: {message}"


@dataclass(frozen=True)
class JobData:
    """What one job trains on: which file, read how, which columns, which labels."""

    kind: DataKind
    dataset_id: str
    blob_key: str
    format: str
    columns: tuple[dict[str, Any], ...]  # the dataset's column list, as the loaders read it
    features: tuple[str, ...]  # the columns a row is made of ([] for images; [text] for text)
    target: str | None  # the label column, if the job has one
    n_features: int  # the width of one row (pixels of an image, 1 for a text)
    left_out: tuple[str, ...] = ()  # label-like columns a job without features did not take

    @property
    def folder_key(self) -> str:
        """The dataset's folder: an image dataset's decoded arrays sit there, beside the ZIP."""
        return posixpath.dirname(self.blob_key)

    @property
    def text_column(self) -> str | None:
        """The column of texts a text job reads."""
        return self.features[0] if self.kind == "text" else None

    def value_range(self) -> tuple[float, float] | None:
        """(min, max) over the values of the job's features, from the ranges recorded at
        ingest; None for images and texts, or when a feature's range is not known."""
        if self.kind != "tabular":
            return None
        by_name = {c["name"]: c for c in self.columns}
        lows: list[float] = []
        highs: list[float] = []
        for name in self.features:
            column = by_name.get(name, {})
            bounds = ((0, 1) if column.get("dtype") == "bool"
                      else (column.get("min"), column.get("max")))
            if bounds[0] is None or bounds[1] is None:
                return None
            lows.append(float(bounds[0]))
            highs.append(float(bounds[1]))
        return (min(lows), max(highs)) if lows else None

    def notes(self) -> dict[str, Any]:
        """What the job says from its creation on: the label-like columns it left out."""
        return {"left_out_columns": list(self.left_out)} if self.left_out else {}


@dataclass(frozen=True)
class Loaded:
    """A job's arrays, and the facts about them the model record keeps.

    y holds class indices; labels the labels themselves (class names, or the target's values).
    """

    x: Any
    y: np.ndarray | None
    classes: list[str]
    input_schema: dict[str, Any]
    labels: np.ndarray | None = None


# ---- deciding: at submit, with the reasons a spec does not fit -------------------------------


def decide(dataset: DatasetRow, *, features: list[str] | None, target: str | None,
           labelled: bool) -> JobData:
    """JobData of a new job, or JobDataError naming the field that does not fit.

    labelled: the algorithm learns from labels (transfer, lda); a job without any is refused.
    """
    if dataset.kind == "image":
        return _images(dataset, features, target, labelled)
    if labelled and (text := _text_of(dataset, features, target)) is not None:
        return text
    names = [c["name"] for c in dataset.columns]
    if target and target not in names:
        message = f'unknown column "{target}"; available: {", ".join(names)}'
        raise JobDataError("target", message, detail=message)
    try:
        chosen = check_features(dataset.columns, features, exclude=[target] if target else [])
    except FeatureError as exc:
        raise JobDataError("features", exc.message, detail=exc.message) from exc
    if labelled:
        _check_labels(names, target, None)
    if is_text_job(dataset.columns, chosen):
        return _data(dataset, "text", chosen, target, 1)
    skipped = left_out(dataset.columns, features, exclude=[target] if target else [])
    return _data(dataset, "tabular", chosen, target, len(chosen), tuple(skipped))


def _images(dataset: DatasetRow, features: list[str] | None, target: str | None,
            labelled: bool) -> JobData:
    """An image job reads every pixel; its labels are the class folders, if any."""
    for name, given in (("features", features), ("target", target)):
        if given:
            raise JobDataError(name, "not for images", detail=f"{name} does not apply to image "
                               "datasets: labels come from the class folders")
    if labelled and not (dataset.details or {}).get("labelled"):
        raise JobDataError("dataset_id", "transfer needs labelled images: a ZIP with one folder "
                                         "per class")
    image = (dataset.details or {}).get("image", {})
    pixels = int(image.get("height", 1) * image.get("width", 1) * image.get("channels", 1))
    return _data(dataset, "image", [], None, pixels)


def _text_of(dataset: DatasetRow, features: list[str] | None,
             target: str | None) -> JobData | None:
    """A labelled job on texts: the asked column, or the dataset's text column, with the
    dataset's label column unless a target is named; None when the job is not on texts."""
    text = (dataset.details or {}).get("text") or {}
    chosen = features or ([text["column"]] if text.get("column") else None)
    if not chosen or not is_text_job(dataset.columns, chosen):
        return None
    target = target or text.get("label_column")
    _check_labels([c["name"] for c in dataset.columns], target, chosen[0])
    return _data(dataset, "text", list(chosen), target, 1)


def _check_labels(names: Sequence[str], target: str | None, text: str | None) -> None:
    if target is None:
        raise JobDataError("target", "the algorithm learns from labels: name the label "
                                     "column in target")
    if target not in names:
        raise JobDataError("target", f'unknown column "{target}"; available: {", ".join(names)}')
    if target == text:
        raise JobDataError("target", f'column "{target}" is the text; the target must be '
                                     "another column")


def _data(dataset: DatasetRow, kind: DataKind, features: list[str], target: str | None,
          width: int, skipped: tuple[str, ...] = ()) -> JobData:
    return JobData(kind=kind, dataset_id=dataset.id, blob_key=dataset.blob_key,
                   format=dataset.format, columns=tuple(dataset.columns or ()),
                   features=tuple(features), target=target, n_features=width, left_out=skipped)


# ---- after submit: the stored job's decision, and its arrays --------------------------------


def of_job(dataset: DatasetRow, *, features: list[str] | None, target: str | None) -> JobData:
    """JobData of a stored job (or of a test set read as a model's training data was): the
    features were decided at submit, so nothing is checked again."""
    if dataset.kind == "image":
        return _images(dataset, None, None, False)
    chosen = list(features or [])
    if is_text_job(dataset.columns, chosen):
        return _data(dataset, "text", chosen, target, 1)
    return _data(dataset, "tabular", chosen, target, len(chosen))


def load(data: JobData, path: Callable[[str], Path]) -> Loaded:
    """Load a job's rows (tabular matrix, uint8 images or texts) and its labels, if any.

    path: the local file of a blob key (the blob store's `path`).
    """
    if data.kind == "image":  # the images' arrays sit beside the ZIP: the whole folder
        return _load_images(path(data.folder_key))
    file = path(data.blob_key)
    raw = load_column(file, data.format, data.target) if data.target else None
    if data.kind == "text":
        column = data.features[0]
        texts = load_texts(file, data.format, column)
        schema: dict[str, Any] = {"kind": "text", "column": column, "dtype": "string"}
        return Loaded(np.array(texts, dtype=object), None, [], schema, raw)
    columns = list(data.columns)
    x = load_matrix(file, data.format, list(data.features), columns)
    y, classes = None, []
    if raw is not None:
        values, y = np.unique(raw.astype(str), return_inverse=True)
        classes = [str(v) for v in values]
    by_name = {c["name"]: c for c in columns}
    schema = {"kind": "tabular", "dtype": str(x.dtype),
              "features": [{"name": f, "dtype": by_name[f]["dtype"]} for f in data.features]}
    if classes:
        schema["classes"] = classes
    return Loaded(x, y, classes, schema, raw)


def _load_images(folder: Path) -> Loaded:
    x, y, classes = load_images(folder)
    height, width, channels = (int(v) for v in x.shape[1:])
    schema = {"kind": "image", "height": height, "width": width, "channels": channels,
              "dtype": "uint8", "classes": classes}
    labels = np.array(classes, dtype=object)[y] if y is not None else None
    return Loaded(x, y, classes, schema, labels)
