"""Safe persistence for trained models: skops for estimators, .npy for arrays, JSON for metadata.

Nothing here unpickles: skops rebuilds objects from a schema and refuses types it does not
trust, and we only extend its trust to an explicit allow-list.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

META_FILE = "meta.json"
FORMAT_VERSION = 1

# skops already trusts scikit-learn's estimators, builtins and numpy arrays; whatever else it
# reports as untrusted must be on this list, or the file is refused.
ALLOWED_PREFIXES: tuple[str, ...] = ("sklearn.",)
ALLOWED_TYPES: frozenset[str] = frozenset({
    "numpy.dtype",
    "numpy.ndarray",
    "numpy.bool",
    "numpy.bool_",
    "numpy.float16",
    "numpy.float32",
    "numpy.float64",
    "numpy.int8",
    "numpy.int16",
    "numpy.int32",
    "numpy.int64",
    "numpy.uint8",
    "numpy.uint16",
    "numpy.uint32",
    "numpy.uint64",
    "numpy.dtypes.Float32DType",
    "numpy.dtypes.Float64DType",
    "numpy.dtypes.Int32DType",
    "numpy.dtypes.Int64DType",
    "numpy.dtypes.BoolDType",
})


class UnsafeArtifact(Exception):
    """An artifact holds something this service will not load (an untrusted type, bad format)."""


def is_allowed(type_name: str) -> bool:
    """Whether a type name reported by skops may be loaded."""
    return type_name in ALLOWED_TYPES or type_name.startswith(ALLOWED_PREFIXES)


def _skops() -> Any:
    # skops walks every scikit-learn module on import (seconds, and it pulls in torch through
    # scikit-learn's array-API shims), so only the code that saves or loads pays for it.
    import skops.io

    return skops.io


def warm_up() -> None:
    """Import skops now (a worker at start-up) rather than inside the first job's clock."""
    _skops()


def save_estimator(obj: Any, path: Path) -> None:
    """Write a scikit-learn object with skops, byte for byte the same for the same object."""
    Path(path).write_bytes(canonical_skops(_skops().dumps(obj)))


# A skops file is a ZIP whose entries carry the time they were written, whose arrays are named
# after id() of the saved objects and whose schema records those ids: three things that change
# from one save of the same estimator to the next. The reproducibility record hashes artifact
# files, so they are rewritten: ids numbered in order of appearance, a fixed time, sorted names.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
SCHEMA_ENTRY = "schema.json"


def canonical_skops(data: bytes) -> bytes:
    """The same skops file with its ids, entry names and entry times made deterministic."""
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        schema = json.loads(src.read(SCHEMA_ENTRY))
        renames: dict[str, str] = {}
        schema = _renumber(schema, renames)
        entries = {SCHEMA_ENTRY: json.dumps(schema, indent=2).encode()}
        for info in src.infolist():
            if info.filename != SCHEMA_ENTRY:
                entries[_renamed(info.filename, renames)] = src.read(info)
        compression = src.infolist()[0].compress_type
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as dst:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type, info.external_attr = compression, 0o600 << 16
            dst.writestr(info, entries[name])
    return out.getvalue()


def _renumber(node: Any, renames: dict[str, str]) -> Any:
    """node with every object id (`__id__`, and the stem of a `file` entry, which skops names
    after the same id) replaced by its rank of first appearance."""
    if isinstance(node, list):
        return [_renumber(item, renames) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "__id__" and isinstance(value, int):
            out[key] = int(renames.setdefault(str(value), str(len(renames) + 1)))
        elif key == "file" and isinstance(value, str):
            out[key] = _renamed(value, renames, add=True)
        else:
            out[key] = _renumber(value, renames)
    return out


def _renamed(name: str, renames: dict[str, str], *, add: bool = False) -> str:
    stem, dot, suffix = name.partition(".")
    if add:
        renames.setdefault(stem, str(len(renames) + 1))
    return renames.get(stem, stem) + dot + suffix


def load_estimator(path: Path, expected: type | tuple[type, ...] | None = None) -> Any:
    """Load a skops file whose every untrusted type is allow-listed, and check its class."""
    path = Path(path)
    try:
        untrusted = _skops().get_untrusted_types(file=path)
    except Exception as exc:  # a corrupt or foreign file: refuse it, never guess
        raise UnsafeArtifact(f"{path.name} is not a readable skops file: {exc}") from exc
    refused = [t for t in untrusted if not is_allowed(t)]
    if refused:
        raise UnsafeArtifact(f"{path.name} holds types that are not allow-listed: "
                             f"{', '.join(refused)}; refusing to load it")
    obj = _skops().load(path, trusted=untrusted)
    if expected is not None and not isinstance(obj, expected):
        raise UnsafeArtifact(f"{path.name} holds a {type(obj).__name__}, "
                             f"expected {_names(expected)}")
    return obj


def _names(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(t.__name__ for t in types)


def save_array(array: np.ndarray, path: Path) -> None:
    """Write a numeric array as .npy."""
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise ValueError(f"refusing to save an object array to {Path(path).name}")
    np.save(Path(path), array, allow_pickle=False)


def load_array(path: Path) -> np.ndarray:
    """Read a .npy file without ever unpickling; object arrays are refused."""
    try:
        return np.asarray(np.load(Path(path), allow_pickle=False))
    except ValueError as exc:  # numpy's answer to an object array when pickles are off
        raise UnsafeArtifact(f"{Path(path).name} is not a plain numeric array: {exc}") from exc


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    """Write meta.json (the format version is added here)."""
    payload = {"format": FORMAT_VERSION, **meta}
    text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False)
    (Path(directory) / META_FILE).write_text(text, encoding="utf-8")


def read_meta(directory: Path) -> dict[str, Any]:
    """Read meta.json and check its format version."""
    path = Path(directory) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UnsafeArtifact(f"cannot read {META_FILE} in {directory}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise UnsafeArtifact(f"{META_FILE} in {directory} is not format {FORMAT_VERSION}")
    return meta
