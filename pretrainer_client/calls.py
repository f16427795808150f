"""Each /v1 operation once, as a request and the parser of its answer (sync and async share it)."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import httpx
import numpy as np

from pretrainer_client.errors import PretrainerError
from pretrainer_client.types import (
    Algorithm,
    Alias,
    Comparison,
    Dataset,
    Delivery,
    Index,
    Job,
    Model,
    ModelVersion,
    Neighbor,
    Page,
    Prediction,
    Project,
    RegisteredModel,
    Sweep,
    Webhook,
    as_array,
)

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"
PLOTS = ("embedding", "confusion")


@dataclass
class Call(Generic[T]):
    """One HTTP request and how to read its response."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    kwargs: dict[str, Any] = field(default_factory=dict)


def settings(base_url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    """Base URL and headers from the arguments, else PRETRAINER_URL / PRETRAINER_API_KEY."""
    url = (base_url or os.environ.get("PRETRAINER_URL") or DEFAULT_URL).rstrip("/")
    key = api_key if api_key is not None else os.environ.get("PRETRAINER_API_KEY")
    headers = {"Accept": "application/json, application/problem+json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return url, headers


def ident(obj: Any) -> str:
    """An id from an id string or a result object that has one."""
    return obj if isinstance(obj, str) else str(obj.id)


def _page(cls: Any) -> Callable[[httpx.Response], Page[Any]]:
    def parse(r: httpx.Response) -> Page[Any]:
        body = r.json()
        return Page([cls.from_json(i) for i in body["items"]], body["total"], body.get("next"))
    return parse


def _one(cls: Any) -> Callable[[httpx.Response], Any]:
    return lambda r: cls.from_json(r.json())


def _none(_: httpx.Response) -> None:
    return None


def _bytes(r: httpx.Response) -> bytes:
    return r.content


RESOURCES: dict[str, Any] = {"datasets": Dataset, "jobs": Job, "models": Model}


def listing(resource: str, limit: int, offset: int, **filters: Any) -> Call[Page[Any]]:
    """A page of datasets, jobs or models (filters with None values are left out)."""
    params = {"limit": limit, "offset": offset, **{k: v for k, v in filters.items() if v is not None}}
    return Call("GET", f"/v1/{resource}", _page(RESOURCES[resource]), {"params": params})


def one(resource: str, ident_: str) -> Call[Any]:
    """One dataset, job or model by id."""
    return Call("GET", f"/v1/{resource}/{ident_}", _one(RESOURCES[resource]))


def delete(resource: str, ident_: str) -> Call[None]:
    return Call("DELETE", f"/v1/{resource}/{ident_}", _none)


def _idempotent(kwargs: dict[str, Any], key: str | None) -> dict[str, Any]:
    if key:
        kwargs["headers"] = {"Idempotency-Key": key}
    return kwargs


def health() -> Call[dict[str, Any]]:
    return Call("GET", "/readyz", lambda r: r.json())


def project() -> Call[Project]:
    return Call("GET", "/v1/projects/me", _one(Project))


def algorithms() -> Call[list[Algorithm]]:
    return Call("GET", "/v1/algorithms",
                lambda r: [Algorithm.from_json(i) for i in r.json()["items"]])


def algorithm(name: str) -> Call[Algorithm]:
    return Call("GET", f"/v1/algorithms/{name}", _one(Algorithm))


def upload(file: IO[bytes], filename: str, name: str | None,
           idempotency_key: str | None) -> Call[Dataset]:
    kwargs: dict[str, Any] = {"files": {"file": (filename, file)}}
    if name:
        kwargs["data"] = {"name": name}
    return Call("POST", "/v1/datasets", _one(Dataset), _idempotent(kwargs, idempotency_key))


def submit(algorithm: str, dataset: Any, params: dict[str, Any] | None, *,
           features: list[str] | None, target: str | None, name: str | None,
           idempotency_key: str | None) -> Call[Job]:
    body: dict[str, Any] = {"dataset_id": ident(dataset), "algorithm": algorithm,
                            "params": params or {}}
    body.update({k: v for k, v in (("features", features), ("target", target), ("name", name))
                 if v is not None})
    return Call("POST", "/v1/jobs", _one(Job), _idempotent({"json": body}, idempotency_key))


def cancel(job_id: str) -> Call[Job]:
    return Call("POST", f"/v1/jobs/{job_id}/cancel", _one(Job))


def instances_body(instances: Any) -> dict[str, Any]:
    """Request kwargs for instances: NumPy / lists / records as JSON, image bytes as multipart."""
    if hasattr(instances, "to_dict") and not isinstance(instances, dict):  # a pandas DataFrame
        instances = instances.to_dict(orient="records")
    if isinstance(instances, np.ndarray):
        if instances.ndim == 1:
            instances = instances.reshape(1, -1)
        return {"json": {"instances": instances.tolist()}}
    items = list(instances)
    if items and all(isinstance(i, (bytes, Path)) for i in items):
        raw = [i if isinstance(i, bytes) else i.read_bytes() for i in items]
        return {"files": [("files", (f"{n}.img", b)) for n, b in enumerate(raw)]}
    return {"json": {"instances": items}}


# The header of a 413 that names the most instances one predict/embed call takes.
MAX_INSTANCES_HEADER = "X-Max-Instances"


def rows(instances: Any) -> Any:
    """Instances as rows to slice: a 2-D array, or a list (records, lists, image bytes/paths)."""
    if hasattr(instances, "to_dict") and not isinstance(instances, dict):  # a pandas DataFrame
        instances = instances.to_dict(orient="records")
    if isinstance(instances, np.ndarray):
        return instances.reshape(1, -1) if instances.ndim == 1 else instances
    return list(instances)


def split(items: Any, size: int) -> list[Any]:
    """items in consecutive slices of at most size (one slice when it is empty)."""
    return [items[i:i + size] for i in range(0, len(items), max(size, 1))] or [items]


def instance_limit(exc: PretrainerError) -> int | None:
    """The server's instances-per-call limit when exc is its 413 for too many; else None."""
    value = exc.headers.get(MAX_INSTANCES_HEADER) if exc.status == 413 else None
    return int(value) if value and value.isdigit() and int(value) > 0 else None


def _cat(parts: list[Any]) -> Any:
    if all(isinstance(p, np.ndarray) and p.ndim >= 1 for p in parts):
        return np.concatenate(parts)
    if all(isinstance(p, (list, np.ndarray)) for p in parts):
        return [x for p in parts for x in p]
    return parts[0]  # not one value per row: the same in every answer


def join_predictions(parts: list[Prediction]) -> Prediction:
    """The answers of consecutive slices as one, rows in order."""
    if len(parts) == 1:
        return parts[0]
    probs = parts[0].probabilities
    return Prediction(_cat([p.predictions for p in parts]),
                      None if probs is None else np.concatenate([p.probabilities for p in parts]),
                      {k: _cat([p.extras[k] for p in parts]) for k in parts[0].extras})


def join_embeddings(parts: list[np.ndarray]) -> np.ndarray:
    """The embeddings of consecutive slices as one (n, d) array."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def predict(model_id: str, instances: Any) -> Call[Prediction]:
    return Call("POST", f"/v1/models/{model_id}/predict", _one(Prediction),
                instances_body(instances))


def embed(model_id: str, instances: Any) -> Call[np.ndarray]:
    return Call("POST", f"/v1/models/{model_id}/embed",
                lambda r: np.asarray(r.json()["embeddings"], dtype=np.float64),
                instances_body(instances))


def _samples(r: httpx.Response) -> Any:
    samples = r.json()["samples"]
    if samples and isinstance(samples[0], dict) and "b64" in samples[0]:
        return [base64.b64decode(s["b64"]) for s in samples]  # images: PNG bytes
    return as_array(samples)


def generate(model_id: str, n: int, seed: int | None) -> Call[Any]:
    body: dict[str, Any] = {"n": n} if seed is None else {"n": n, "seed": seed}
    return Call("POST", f"/v1/models/{model_id}/generate", _samples, {"json": body})


def training_embedding(model_id: str) -> Call[np.ndarray]:
    return Call("GET", f"/v1/models/{model_id}/embedding",
                lambda r: np.asarray(r.json()["embedding"], dtype=np.float64))


def training_labels(model_id: str) -> Call[np.ndarray]:
    return Call("GET", f"/v1/models/{model_id}/labels", _labels, {"params": {"format": "csv"}})


def _labels(r: httpx.Response) -> np.ndarray:
    lines = r.text.splitlines()[1:]  # "row,label" header, then one line per row in order
    return np.array([int(line.rsplit(",", 1)[1]) for line in lines], dtype=np.int64)


def evaluate(model_id: str, dataset_id: str, target: str | None) -> Call[dict[str, Any]]:
    body: dict[str, Any] = {"dataset_id": dataset_id}
    if target is not None:
        body["target"] = target
    return Call("POST", f"/v1/models/{model_id}/evaluate", lambda r: r.json(), {"json": body})


def loss_plot(job_id: str) -> Call[bytes]:
    return Call("GET", f"/v1/jobs/{job_id}/plots/loss.png", _bytes)


def model_plot(model_id: str, kind: str) -> Call[bytes]:
    if kind not in PLOTS:
        raise ValueError(f"kind is one of {', '.join(PLOTS)}, not {kind!r}")
    return Call("GET", f"/v1/models/{model_id}/plots/{kind}.png", _bytes)


def reproduce(model_id: str) -> Call[Job]:
    return Call("POST", f"/v1/models/{model_id}/reproduce", _one(Job))
# --- sweeps ----------------------------------------------------------------------------

RESOURCES["sweeps"] = Sweep


def sweep(dataset: Any, algorithm: str, space: dict[str, Any], *, metric: str, direction: str,
          trials: int, parallelism: int = 1, params: dict[str, Any] | None = None,
          pruner: dict[str, int] | bool = True, **options: Any) -> Call[Sweep]:
    """POST /v1/sweeps. pruner: True the server's median pruner, False none, or its settings;
    options: sampler, seed, features, target, name (None values left out)."""
    body = {"dataset_id": ident(dataset), "algorithm": algorithm, "space": space,
            "params": params or {}, "metric": metric, "direction": direction, "trials": trials,
            "parallelism": parallelism, **{k: v for k, v in options.items() if v is not None}}
    if pruner is not True:
        body["pruner"] = pruner or None
    return Call("POST", "/v1/sweeps", _one(Sweep), {"json": body})


def cancel_sweep(sweep_id: str) -> Call[Sweep]:
    return Call("POST", f"/v1/sweeps/{sweep_id}/cancel", _one(Sweep))


def registry_names(limit: int, offset: int) -> Call[Page[RegisteredModel]]:
    return Call("GET", "/v1/registry", _page(RegisteredModel),
                {"params": {"limit": limit, "offset": offset}})


def registry(name: str) -> Call[RegisteredModel]:
    return Call("GET", f"/v1/registry/{name}", _one(RegisteredModel))


def register(name: str, model_ref: str) -> Call[ModelVersion]:
    return Call("POST", f"/v1/registry/{name}/versions", _one(ModelVersion),
                {"json": {"model_id": model_ref}})


def set_alias(name: str, alias: str, version: int) -> Call[Alias]:
    return Call("PUT", f"/v1/registry/{name}/aliases/{alias}", _one(Alias),
                {"json": {"version": version}})


def delete_alias(name: str, alias: str) -> Call[None]:
    return Call("DELETE", f"/v1/registry/{name}/aliases/{alias}", _none)


EXPORT_FORMATS = ("onnx", "torchscript")


def export(model_id: str, fmt: str) -> Call[bytes]:
    return Call("GET", f"/v1/models/{model_id}/export", _bytes, {"params": {"format": fmt}})


def export_path(model_id: str, fmt: str, path: str | Path | None) -> Path:
    """Where an export is written: path, or <model>.<format>.zip in the working directory."""
    return Path(path) if path is not None else Path(f"{model_id}.{fmt}.zip")


def write_export(data: bytes, target: Path) -> Path:
    """The archive's bytes at target (written whole, then renamed into place)."""
    staged = target.with_name(target.name + ".part")
    staged.write_bytes(data)
    staged.replace(target)
    return target


# ---- batch prediction --------------------------------------------------------------------

BATCH_OUTPUTS = ("predict", "embed")
BATCH_FORMATS = ("parquet", "csv", "npy")


def batch(model_id: str, dataset: Any, output: str, format: str, name: str | None,
          idempotency_key: str | None) -> Call[Job]:
    body: dict[str, Any] = {"dataset_id": ident(dataset), "output": output, "format": format}
    if name is not None:
        body["name"] = name
    return Call("POST", f"/v1/models/{model_id}/batch", _one(Job),
                _idempotent({"json": body}, idempotency_key))


def result_path(job_id: str) -> str:
    """Where a batch job's result file is downloaded from."""
    return f"/v1/jobs/{job_id}/result"


def format_of(path: str | Path) -> str:
    """The result format a file name asks for by its suffix (parquet when it names none)."""
    suffix = Path(path).suffix.lower().lstrip(".")
    return {"pq": "parquet"}.get(suffix, suffix) if suffix in (*BATCH_FORMATS, "pq") else "parquet"


# ------------------------------------------------------------------ comparisons and webhooks


def compare(dataset: Any, backbones: list[str], seeds: int | list[int],
            params: dict[str, Any] | None, *, features: list[str] | None, target: str | None,
            metric: str | None, name: str | None) -> Call[Comparison]:
    body: dict[str, Any] = {"dataset_id": ident(dataset), "backbones": list(backbones),
                            "seeds": seeds, "params": params or {}}
    body.update({k: v for k, v in (("features", features), ("target", target),
                                   ("metric", metric), ("name", name)) if v is not None})
    return Call("POST", "/v1/comparisons", _one(Comparison), {"json": body})


def comparison(comparison_id: str) -> Call[Comparison]:
    return Call("GET", f"/v1/comparisons/{comparison_id}", _one(Comparison))


def comparisons(limit: int, offset: int) -> Call[Page[Comparison]]:
    return Call("GET", "/v1/comparisons", _page(Comparison),
                {"params": {"limit": limit, "offset": offset}})


def cancel_comparison(comparison_id: str) -> Call[Comparison]:
    return Call("POST", f"/v1/comparisons/{comparison_id}/cancel", _one(Comparison))


def add_webhook(url: str, events: list[str], secret: str | None) -> Call[Webhook]:
    body: dict[str, Any] = {"url": url, "events": list(events)}
    if secret is not None:
        body["secret"] = secret
    return Call("POST", "/v1/webhooks", _one(Webhook), {"json": body})


def webhooks(limit: int, offset: int) -> Call[Page[Webhook]]:
    return Call("GET", "/v1/webhooks", _page(Webhook),
                {"params": {"limit": limit, "offset": offset}})


def webhook(webhook_id: str) -> Call[Webhook]:
    return Call("GET", f"/v1/webhooks/{webhook_id}", _one(Webhook))


def delete_webhook(webhook_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/webhooks/{webhook_id}", _none)


def deliveries(webhook_id: str, limit: int, offset: int) -> Call[Page[Delivery]]:
    return Call("GET", f"/v1/webhooks/{webhook_id}/deliveries", _page(Delivery),
                {"params": {"limit": limit, "offset": offset}})


def test_webhook(webhook_id: str) -> Call[Delivery]:
    return Call("POST", f"/v1/webhooks/{webhook_id}/test", _one(Delivery))


# ---- nearest-neighbour indexes and queries ----


def build_index(model_id: str, dataset_id: str, *, metric: str | None,
                params: dict[str, Any] | None, label_column: str | None) -> Call[Index]:
    body: dict[str, Any] = {"dataset_id": dataset_id}
    body.update({k: v for k, v in (("metric", metric), ("params", params),
                                   ("label_column", label_column)) if v is not None})
    return Call("POST", f"/v1/models/{model_id}/indexes", _one(Index), {"json": body})


def indexes(model_id: str, limit: int, offset: int) -> Call[Page[Index]]:
    return Call("GET", f"/v1/models/{model_id}/indexes", _page(Index),
                {"params": {"limit": limit, "offset": offset}})


def index(model_id: str, index_id: str) -> Call[Index]:
    return Call("GET", f"/v1/models/{model_id}/indexes/{index_id}", _one(Index))


def delete_index(model_id: str, index_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/models/{model_id}/indexes/{index_id}", _none)


def _neighbors(r: httpx.Response) -> list[list[Neighbor]]:
    return [[Neighbor.from_json(n) for n in hits] for hits in r.json()["neighbors"]]


def neighbors(model_id: str, instances: Any, k: int,
              index_id: str | None) -> Call[list[list[Neighbor]]]:
    """Instances as /embed takes them in JSON (image bytes or paths sent as base64)."""
    body = instances_body(instances)
    if "files" in body:
        items = [{"b64": base64.b64encode(raw).decode()} for _, (_, raw) in body["files"]]
        body = {"json": {"instances": items}}
    payload = {**body["json"], "k": k}
    if index_id is not None:
        payload["index_id"] = index_id
    return Call("POST", f"/v1/models/{model_id}/neighbors", _neighbors, {"json": payload})
