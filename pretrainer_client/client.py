"""Client and AsyncClient: the whole /v1 contract over httpx, with typed results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import IO, Any, Self, TypeVar

import httpx
import numpy as np

from pretrainer_client import calls
from pretrainer_client.calls import Call, ident
from pretrainer_client.errors import JobFailed, PretrainerError, check
from pretrainer_client.progress import JobBar, ProgressFn, UploadBar
from pretrainer_client.resumable import RESUMABLE_ABOVE, Uploader
from pretrainer_client.sse import EventParser
from pretrainer_client.types import (
    Algorithm,
    Alias,
    Comparison,
    Dataset,
    Delivery,
    Event,
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
)

T = TypeVar("T")
EventFn = Callable[[Event], None]
RECONNECTS = 5  # consecutive failed reconnects of an event stream before giving up


class _Counting:
    """A file whose reads report the bytes sent so far (httpx streams multipart from it)."""

    def __init__(self, file: IO[bytes], total: int, report: ProgressFn) -> None:
        self._file, self._total, self._report, self._sent = file, total, report, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        self._sent += len(chunk)
        self._report(self._sent, self._total)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        if offset == 0 and whence == 0:
            self._sent = 0
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()


def _upload_progress(progress: bool | ProgressFn, label: str) -> tuple[Any, ProgressFn | None]:
    if callable(progress):
        return nullcontext(), progress
    if progress:
        bar = UploadBar(label)
        return bar, bar.update
    return nullcontext(), None


def _resumable(path: Path, resumable: bool | None, idempotency_key: str | None) -> bool:
    if resumable is None:  # an idempotency key is a multipart upload's way to retry safely
        return idempotency_key is None and path.stat().st_size >= RESUMABLE_ABOVE
    return resumable


def _send(http: httpx.Client, path: Path, name: str | None, report: ProgressFn | None,
          chunk_size: int | None) -> str:
    """Upload path over tus and wait for its inspection; the dataset's id."""
    uploader = Uploader(http, report=report, chunk_size=chunk_size)
    upload = uploader.create(path, name)
    with path.open("rb") as f:
        uploader.send(upload, f)
    return str(uploader.result(upload)["dataset_id"])


class _Following:
    """State of following a job: epochs seen (a reconnect replays them), the final job."""

    def __init__(self, on_event: EventFn | None, progress: bool, job_id: str,
                 epochs: int | None = None) -> None:
        self.on_event = on_event
        self.bar: AbstractContextManager[Any] = (JobBar(job_id, epochs) if progress
                                                 else nullcontext())
        self.epochs = 0
        self._in_stream = 0
        self.end: Job | None = None
        self.failures = 0

    def reconnecting(self) -> None:
        self._in_stream = 0

    def take(self, event: Event, bar: Any) -> bool:
        """Handle one event; True at the end of the job."""
        if event.event == "epoch":
            self._in_stream += 1
            if self._in_stream <= self.epochs:
                return False  # already seen before the reconnect
            self.epochs += 1
        for fn in (self.on_event, bar):
            if fn is not None:
                fn(event)
        if event.event == "end":
            self.end = Job.from_json(event.data)
        return self.end is not None

    def failed(self, exc: Exception) -> None:
        self.failures += 1
        if self.failures > RECONNECTS:
            raise exc

    def result(self, raise_on_failure: bool) -> Job:
        assert self.end is not None
        if raise_on_failure and self.end.status != "succeeded":
            raise JobFailed(self.end)
        return self.end


def _epochs(job: Job | str) -> int | None:
    """The job's epochs param (the bar's total), when it trains in epochs."""
    value = job.params.get("epochs") if isinstance(job, Job) else None
    return value if isinstance(value, int) else None


class Client:
    """Synchronous client: `Client(base_url=None, api_key=None)`; the env supplies defaults.

    base_url: PRETRAINER_URL (default http://127.0.0.1:8000); api_key: PRETRAINER_API_KEY,
    sent as `Authorization: Bearer <key>`. Every error is a PretrainerError.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 60.0, transport: httpx.BaseTransport | None = None) -> None:
        url, headers = calls.settings(base_url, api_key)
        self.base_url = url
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout,
                                  transport=transport)
        self._max_instances: int | None = None  # the server's, once a 413 has named it

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _do(self, call: Call[T]) -> T:
        return call.parse(check(self._http.request(call.method, call.path, **call.kwargs)))

    def health(self) -> dict[str, Any]:
        """Readiness of the service: database, broker and blob store."""
        return self._do(calls.health())

    def project(self) -> Project:
        """The key's project: each quota's limit and what the project uses of it."""
        return self._do(calls.project())

    def algorithms(self) -> list[Algorithm]:
        return self._do(calls.algorithms())

    def algorithm(self, name: str) -> Algorithm:
        return self._do(calls.algorithm(name))

    def upload(self, path: str | Path, *, name: str | None = None,
               progress: bool | ProgressFn = False, idempotency_key: str | None = None,
               resumable: bool | None = None, chunk_size: int | None = None) -> Dataset:
        """Upload a file as a dataset; progress=True draws a bar, a callable gets (sent, total).

        resumable: over tus (/v1/uploads), resuming from the server's offset after a dropped
        connection; by default for files of RESUMABLE_ABOVE bytes or more (64 MiB) sent
        without an idempotency_key. chunk_size: bytes per PATCH (default: the rest at once).
        """
        path = Path(path)
        bar, report = _upload_progress(progress, path.name)
        if _resumable(path, resumable, idempotency_key):
            with bar:
                return self.dataset(_send(self._http, path, name, report, chunk_size))
        with path.open("rb") as f, bar:
            file: Any = _Counting(f, path.stat().st_size, report) if report else f
            return self._do(calls.upload(file, path.name, name, idempotency_key))

    def datasets(self, *, limit: int = 50, offset: int = 0) -> Page[Dataset]:
        return self._do(calls.listing("datasets", limit, offset))

    def dataset(self, dataset_id: str) -> Dataset:
        found: Dataset = self._do(calls.one("datasets", dataset_id))
        return found

    def delete_dataset(self, dataset: str | Dataset) -> None:
        self._do(calls.delete("datasets", ident(dataset)))

    def submit(self, algorithm: str, dataset: str | Dataset, params: dict[str, Any] | None = None,
               *, features: list[str] | None = None, target: str | None = None,
               name: str | None = None, idempotency_key: str | None = None) -> Job:
        """Queue a training job and return it at once (status `queued`)."""
        return self._do(calls.submit(algorithm, dataset, params, features=features, target=target,
                                     name=name, idempotency_key=idempotency_key))

    def train(self, algorithm: str, dataset: str | Dataset, params: dict[str, Any] | None = None,
              *, features: list[str] | None = None, target: str | None = None,
              name: str | None = None, progress: bool = False, on_event: EventFn | None = None,
              raise_on_failure: bool = True) -> Job:
        """Submit a job and follow its event stream to the end; the finished job."""
        job = self.submit(algorithm, dataset, params, features=features, target=target, name=name)
        return self.follow(job, progress=progress, on_event=on_event,
                           raise_on_failure=raise_on_failure)

    def events(self, job: str | Job) -> Iterator[Event]:
        """The job's server-sent events (status, progress, epoch, end) as they happen."""
        return self._stream(f"/v1/jobs/{ident(job)}/events")

    def _stream(self, path: str) -> Iterator[Event]:
        parser = EventParser()
        with self._http.stream("GET", path) as r:
            if r.status_code >= 400:
                r.read()
                check(r)
            for line in r.iter_lines():
                if (event := parser.feed(line)) is not None:
                    yield event

    def follow(self, job: str | Job, *, progress: bool = False, on_event: EventFn | None = None,
               raise_on_failure: bool = True) -> Job:
        """Follow a job until it ends (reconnecting if the stream drops); the finished job.

        raise_on_failure: a job that ends failed or cancelled raises JobFailed.
        """
        epochs = _epochs(job if isinstance(job, Job) or not progress else self.job(job))
        state = _Following(on_event, progress, ident(job), epochs)
        with state.bar as bar:
            while state.end is None:
                state.reconnecting()
                try:
                    for event in self.events(job):
                        if state.take(event, bar):
                            break
                except httpx.TransportError as exc:
                    state.failed(exc)
                    time.sleep(1)
                if state.end is None and (now := self.job(ident(job))).done:
                    state.end = now
        return state.result(raise_on_failure)

    def jobs(self, *, status: str | None = None, limit: int = 50, offset: int = 0) -> Page[Job]:
        return self._do(calls.listing("jobs", limit, offset, status=status))

    def job(self, job_id: str) -> Job:
        found: Job = self._do(calls.one("jobs", job_id))
        return found

    def cancel(self, job: str | Job) -> Job:
        return self._do(calls.cancel(ident(job)))

    def models(self, *, limit: int = 50, offset: int = 0) -> Page[Model]:
        return self._do(calls.listing("models", limit, offset))

    def model(self, model_id: str) -> Model:
        found: Model = self._do(calls.one("models", model_id))
        return found

    def delete_model(self, model: str | Model) -> None:
        self._do(calls.delete("models", ident(model)))

    def predict(self, model: str | Model, instances: Any, *,
                chunk_size: int | None = None) -> Prediction:
        """Predict for rows (NumPy array, lists, records, DataFrame) or images (bytes / paths).

        More rows than one call takes (the server's limit, or chunk_size) go in several calls,
        their answers joined in order.
        """
        return self._chunked(lambda part: calls.predict(ident(model), part), instances,
                             chunk_size, calls.join_predictions)

    def embed(self, model: str | Model, instances: Any, *,
              chunk_size: int | None = None) -> np.ndarray:
        """One vector per instance, as an (n, d) float array; split into calls as predict is."""
        return self._chunked(lambda part: calls.embed(ident(model), part), instances,
                             chunk_size, calls.join_embeddings)

    def _chunked(self, make: Callable[[Any], Call[Any]], instances: Any, chunk_size: int | None,
                 join: Callable[[list[Any]], T]) -> T:
        rows = calls.rows(instances)
        size = chunk_size or self._max_instances or len(rows)
        while True:
            try:
                return join([self._do(make(part)) for part in calls.split(rows, size)])
            except PretrainerError as exc:
                limit = calls.instance_limit(exc)
                if limit is None or limit >= size:
                    raise
                self._max_instances = size = limit  # learned once, kept for later calls

    def generate(self, model: str | Model, n: int = 1, *, seed: int | None = None) -> Any:
        """n samples: an (n, d) array for rows, a list of PNG bytes for images."""
        return self._do(calls.generate(ident(model), n, seed))

    def training_embedding(self, model: str | Model) -> np.ndarray:
        """t-SNE's embedding of its training rows."""
        return self._do(calls.training_embedding(ident(model)))

    def training_labels(self, model: str | Model) -> np.ndarray:
        """A clustering's own labels of its training rows, in the dataset's row order."""
        return self._do(calls.training_labels(ident(model)))

    def evaluate(self, model: str | Model, dataset: str | Dataset, *,
                 target: str | None = None) -> dict[str, Any]:
        """Score the model on an uploaded test set: {model_id, dataset_id, target, n_rows,
        metrics}."""
        return self._do(calls.evaluate(ident(model), ident(dataset), target))

    def loss_plot(self, job: str | Job) -> bytes:
        """The job's loss curve as PNG bytes."""
        return self._do(calls.loss_plot(ident(job)))

    def model_plot(self, model: str | Model, kind: str) -> bytes:
        """A model picture as PNG bytes: kind `embedding` or `confusion`."""
        return self._do(calls.model_plot(ident(model), kind))

    def reproduce(self, model: str | Model) -> Job:
        """Retrain the model from its reproducibility record (a job of kind `reproduce`);
        follow() it: its metrics then hold `identical` and `max_abs_diff`."""
        return self._do(calls.reproduce(ident(model)))
    # --- sweeps ----------------------------------------------------------------------------

    def sweep(self, dataset: str | Dataset, algorithm: str, space: dict[str, Any], *,
              metric: str, direction: str, trials: int, parallelism: int = 1,
              params: dict[str, Any] | None = None, pruner: dict[str, int] | bool = True,
              sampler: str | None = None, seed: int | None = None, name: str | None = None,
              features: list[str] | None = None, target: str | None = None) -> Sweep:
        """Start a hyperparameter sweep (POST /v1/sweeps); follow it with follow_sweep."""
        return self._do(calls.sweep(dataset, algorithm, space, metric=metric, direction=direction,
                                    trials=trials, parallelism=parallelism, params=params,
                                    pruner=pruner, sampler=sampler, seed=seed, name=name,
                                    features=features, target=target))

    def sweeps(self, *, status: str | None = None, limit: int = 50,
               offset: int = 0) -> Page[Sweep]:
        return self._do(calls.listing("sweeps", limit, offset, status=status))

    def sweep_status(self, sweep: str | Sweep) -> Sweep:
        """The sweep with its leaderboard (trials, best job and model so far)."""
        found: Sweep = self._do(calls.one("sweeps", ident(sweep)))
        return found

    def cancel_sweep(self, sweep: str | Sweep) -> Sweep:
        return self._do(calls.cancel_sweep(ident(sweep)))

    def sweep_events(self, sweep: str | Sweep) -> Iterator[Event]:
        """The sweep's server-sent events (status, trial, progress, end) as they happen."""
        return self._stream(f"/v1/sweeps/{ident(sweep)}/events")

    def follow_sweep(self, sweep: str | Sweep, *, on_event: EventFn | None = None) -> Sweep:
        """Follow a sweep until it ends (reconnecting if the stream drops); the ended sweep."""
        failures = 0
        while True:
            try:
                for event in self.sweep_events(sweep):
                    if on_event is not None:
                        on_event(event)
                    if event.event == "end":
                        return Sweep.from_json(event.data)
            except httpx.TransportError:
                failures += 1
                if failures > RECONNECTS:
                    raise
                time.sleep(1)
            if (now := self.sweep_status(sweep)).done:
                return now

    # The model registry: every `model` argument above also takes NAME@VERSION or NAME@ALIAS.
    def register(self, name: str, model: str | Model) -> ModelVersion:
        """Register a model (an id, a Model, or a reference) under name as its next version."""
        return self._do(calls.register(name, ident(model)))

    def registry(self, name: str) -> RegisteredModel:
        """A registry name: its versions, aliases and the history of alias moves."""
        return self._do(calls.registry(name))

    def registry_names(self, *, limit: int = 50, offset: int = 0) -> Page[RegisteredModel]:
        return self._do(calls.registry_names(limit, offset))

    def set_alias(self, name: str, alias: str, version: int) -> Alias:
        """Point alias (production, staging, …) of name at version."""
        return self._do(calls.set_alias(name, alias, version))

    def delete_alias(self, name: str, alias: str) -> None:
        self._do(calls.delete_alias(name, alias))

    def export(self, model: str | Model, format: str = "onnx",
               path: str | Path | None = None) -> Path:
        """Download the model as a ZIP (ONNX or TorchScript files, preprocess.json, model
        card) to path, else <model>.<format>.zip here; the path written."""
        model_id = ident(model)
        data = self._do(calls.export(model_id, format))
        return calls.write_export(data, calls.export_path(model_id, format, path))

    def batch(self, model: str | Model, dataset: str | Dataset, output: str = "predict",
              format: str = "parquet", *, name: str | None = None,
              idempotency_key: str | None = None) -> Job:
        """Queue a batch job scoring the whole dataset with the model (output predict or embed,
        result format parquet, csv or npy); follow it, then download_result."""
        return self._do(calls.batch(ident(model), dataset, output, format, name, idempotency_key))

    def download_result(self, job: str | Job, path: str | Path) -> Path:
        """Stream a finished batch job's result file to path (written whole or not at all)."""
        path = Path(path)
        with self._http.stream("GET", calls.result_path(ident(job))) as r:
            if r.status_code >= 400:
                r.read()
                check(r)
            _save(r.iter_bytes(), path)
        return path

    # -------------------------------------------------------- comparisons and webhooks

    def compare(self, dataset: str | Dataset, backbones: list[str], *,
                seeds: int | list[int] = 3, params: dict[str, Any] | None = None,
                features: list[str] | None = None, target: str | None = None,
                metric: str | None = None, name: str | None = None) -> Comparison:
        """Does pretraining pay? Start transfer jobs from each backbone, pretrained and from
        scratch, once per seed (a count n: seeds 0..n-1, or a list of seeds)."""
        return self._do(calls.compare(dataset, backbones, seeds, params, features=features,
                                      target=target, metric=metric, name=name))

    def comparison(self, comparison_id: str) -> Comparison:
        """A comparison with its rows (metric per seed, mean, std) and deltas (95% CI)."""
        return self._do(calls.comparison(comparison_id))

    def comparisons(self, *, limit: int = 50, offset: int = 0) -> Page[Comparison]:
        return self._do(calls.comparisons(limit, offset))

    def cancel_comparison(self, comparison: str | Comparison) -> Comparison:
        """Cancel every job of the comparison that has not ended."""
        return self._do(calls.cancel_comparison(ident(comparison)))

    def wait_comparison(self, comparison: str | Comparison, *, interval: float = 2.0,
                        timeout: float | None = None,
                        on_update: Callable[[Comparison], None] | None = None) -> Comparison:
        """Poll a comparison until every job of it has ended; the final comparison."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            found = self.comparison(ident(comparison))
            if on_update is not None:
                on_update(found)
            if found.done:
                return found
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"comparison {found.id} is still {found.status}")
            time.sleep(interval)

    def add_webhook(self, url: str, events: list[str], *,
                    secret: str | None = None) -> Webhook:
        """Register url for events (job.*, batch.failed, ...); the answer's secret (shown
        once) signs each delivery."""
        return self._do(calls.add_webhook(url, events, secret))

    def webhooks(self, *, limit: int = 50, offset: int = 0) -> Page[Webhook]:
        return self._do(calls.webhooks(limit, offset))

    def webhook(self, webhook_id: str) -> Webhook:
        return self._do(calls.webhook(webhook_id))

    def delete_webhook(self, webhook: str | Webhook) -> None:
        self._do(calls.delete_webhook(ident(webhook)))

    def deliveries(self, webhook: str | Webhook, *, limit: int = 50,
                   offset: int = 0) -> Page[Delivery]:
        """A webhook's deliveries, newest first: status, attempts, last response code."""
        return self._do(calls.deliveries(ident(webhook), limit, offset))

    def test_webhook(self, webhook: str | Webhook) -> Delivery:
        """Queue a webhook.test delivery to the webhook."""
        return self._do(calls.test_webhook(ident(webhook)))

    def build_index(self, model: str | Model, dataset: str | Dataset, *,
                    metric: str | None = None, params: dict[str, Any] | None = None,
                    label_column: str | None = None, wait: bool = False,
                    progress: bool = False) -> Index:
        """Build a nearest-neighbour index of a dataset's embeddings under the model (a job).

        Returns the index at once (status queued); wait=True follows its job to the end and
        returns it built (JobFailed if the build failed).
        """
        found = self._do(calls.build_index(ident(model), ident(dataset), metric=metric,
                                           params=params, label_column=label_column))
        if not wait:
            return found
        self.follow(found.job_id, progress=progress)
        return self.index(model, found.id)

    def indexes(self, model: str | Model, *, limit: int = 50,
                offset: int = 0) -> Page[Index]:
        """The model's indexes, newest first."""
        return self._do(calls.indexes(ident(model), limit, offset))

    def index(self, model: str | Model, index_id: str) -> Index:
        return self._do(calls.index(ident(model), index_id))

    def delete_index(self, model: str | Model, index: str | Index) -> None:
        self._do(calls.delete_index(ident(model), ident(index)))

    def neighbors(self, model: str | Model, instances: Any, k: int = 10, *,
                  index_id: str | None = None) -> list[list[Neighbor]]:
        """The k nearest indexed rows of each instance (row, distance, id, label), nearest
        first, from index_id or the model's newest ready index."""
        return self._do(calls.neighbors(ident(model), instances, k, index_id))


class AsyncClient:
    """The asyncio twin of Client: the same methods, awaited (`events` is an async iterator)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 60.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        url, headers = calls.settings(base_url, api_key)
        self.base_url = url
        self._http = httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout,
                                       transport=transport)
        self._max_instances: int | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _do(self, call: Call[T]) -> T:
        return call.parse(check(await self._http.request(call.method, call.path, **call.kwargs)))

    async def health(self) -> dict[str, Any]:
        return await self._do(calls.health())

    async def project(self) -> Project:
        """The key's project: each quota's limit and what the project uses of it."""
        return await self._do(calls.project())

    async def algorithms(self) -> list[Algorithm]:
        return await self._do(calls.algorithms())

    async def algorithm(self, name: str) -> Algorithm:
        return await self._do(calls.algorithm(name))

    async def upload(self, path: str | Path, *, name: str | None = None,
                     progress: bool | ProgressFn = False, idempotency_key: str | None = None,
                     resumable: bool | None = None, chunk_size: int | None = None) -> Dataset:
        path = Path(path)
        bar, report = _upload_progress(progress, path.name)
        if _resumable(path, resumable, idempotency_key):
            with bar, httpx.Client(base_url=self._http.base_url, headers=self._http.headers,
                                   timeout=self._http.timeout) as http:
                # The tus loop is blocking file and socket work: a thread, not the event loop.
                dataset_id = await asyncio.to_thread(_send, http, path, name, report, chunk_size)
            return await self.dataset(dataset_id)
        f = await asyncio.to_thread(path.open, "rb")  # opening may block (a network mount)
        with f, bar:
            file: Any = _Counting(f, path.stat().st_size, report) if report else f
            return await self._do(calls.upload(file, path.name, name, idempotency_key))

    async def datasets(self, *, limit: int = 50, offset: int = 0) -> Page[Dataset]:
        return await self._do(calls.listing("datasets", limit, offset))

    async def dataset(self, dataset_id: str) -> Dataset:
        return await self._do(calls.one("datasets", dataset_id))

    async def delete_dataset(self, dataset: str | Dataset) -> None:
        await self._do(calls.delete("datasets", ident(dataset)))

    async def submit(self, algorithm: str, dataset: str | Dataset,
                     params: dict[str, Any] | None = None, *, features: list[str] | None = None,
                     target: str | None = None, name: str | None = None,
                     idempotency_key: str | None = None) -> Job:
        return await self._do(calls.submit(algorithm, dataset, params, features=features,
                                           target=target, name=name,
                                           idempotency_key=idempotency_key))

    async def train(self, algorithm: str, dataset: str | Dataset,
                    params: dict[str, Any] | None = None, *, features: list[str] | None = None,
                    target: str | None = None, name: str | None = None, progress: bool = False,
                    on_event: EventFn | None = None, raise_on_failure: bool = True) -> Job:
        job = await self.submit(algorithm, dataset, params, features=features, target=target,
                                name=name)
        return await self.follow(job, progress=progress, on_event=on_event,
                                 raise_on_failure=raise_on_failure)

    def events(self, job: str | Job) -> AsyncIterator[Event]:
        return self._stream(f"/v1/jobs/{ident(job)}/events")

    async def _stream(self, path: str) -> AsyncIterator[Event]:
        parser = EventParser()
        async with self._http.stream("GET", path) as r:
            if r.status_code >= 400:
                await r.aread()
                check(r)
            async for line in r.aiter_lines():
                if (event := parser.feed(line)) is not None:
                    yield event

    async def follow(self, job: str | Job, *, progress: bool = False,
                     on_event: EventFn | None = None, raise_on_failure: bool = True) -> Job:
        epochs = _epochs(job if isinstance(job, Job) or not progress else await self.job(job))
        state = _Following(on_event, progress, ident(job), epochs)
        with state.bar as bar:
            while state.end is None:
                state.reconnecting()
                try:
                    async for event in self.events(job):
                        if state.take(event, bar):
                            break
                except httpx.TransportError as exc:
                    state.failed(exc)
                    await asyncio.sleep(1)
                if state.end is None and (now := await self.job(ident(job))).done:
                    state.end = now
        return state.result(raise_on_failure)

    async def jobs(self, *, status: str | None = None, limit: int = 50,
                   offset: int = 0) -> Page[Job]:
        return await self._do(calls.listing("jobs", limit, offset, status=status))

    async def job(self, job_id: str) -> Job:
        return await self._do(calls.one("jobs", job_id))

    async def cancel(self, job: str | Job) -> Job:
        return await self._do(calls.cancel(ident(job)))

    async def models(self, *, limit: int = 50, offset: int = 0) -> Page[Model]:
        return await self._do(calls.listing("models", limit, offset))

    async def model(self, model_id: str) -> Model:
        return await self._do(calls.one("models", model_id))

    async def delete_model(self, model: str | Model) -> None:
        await self._do(calls.delete("models", ident(model)))

    async def predict(self, model: str | Model, instances: Any, *,
                      chunk_size: int | None = None) -> Prediction:
        return await self._chunked(lambda part: calls.predict(ident(model), part), instances,
                                   chunk_size, calls.join_predictions)

    async def embed(self, model: str | Model, instances: Any, *,
                    chunk_size: int | None = None) -> np.ndarray:
        return await self._chunked(lambda part: calls.embed(ident(model), part), instances,
                                   chunk_size, calls.join_embeddings)

    async def _chunked(self, make: Callable[[Any], Call[Any]], instances: Any,
                       chunk_size: int | None, join: Callable[[list[Any]], T]) -> T:
        rows = calls.rows(instances)
        size = chunk_size or self._max_instances or len(rows)
        while True:
            try:
                return join([await self._do(make(part)) for part in calls.split(rows, size)])
            except PretrainerError as exc:
                limit = calls.instance_limit(exc)
                if limit is None or limit >= size:
                    raise
                self._max_instances = size = limit

    async def generate(self, model: str | Model, n: int = 1, *, seed: int | None = None) -> Any:
        return await self._do(calls.generate(ident(model), n, seed))

    async def training_embedding(self, model: str | Model) -> np.ndarray:
        return await self._do(calls.training_embedding(ident(model)))

    async def training_labels(self, model: str | Model) -> np.ndarray:
        return await self._do(calls.training_labels(ident(model)))

    async def evaluate(self, model: str | Model, dataset: str | Dataset, *,
                       target: str | None = None) -> dict[str, Any]:
        return await self._do(calls.evaluate(ident(model), ident(dataset), target))

    async def loss_plot(self, job: str | Job) -> bytes:
        return await self._do(calls.loss_plot(ident(job)))

    async def model_plot(self, model: str | Model, kind: str) -> bytes:
        return await self._do(calls.model_plot(ident(model), kind))

    async def reproduce(self, model: str | Model) -> Job:
        return await self._do(calls.reproduce(ident(model)))
    # --- sweeps ----------------------------------------------------------------------------

    async def sweep(self, dataset: str | Dataset, algorithm: str, space: dict[str, Any], *,
                    metric: str, direction: str, trials: int, parallelism: int = 1,
                    params: dict[str, Any] | None = None, pruner: dict[str, int] | bool = True,
                    sampler: str | None = None, seed: int | None = None, name: str | None = None,
                    features: list[str] | None = None, target: str | None = None) -> Sweep:
        return await self._do(calls.sweep(
            dataset, algorithm, space, metric=metric, direction=direction, trials=trials,
            parallelism=parallelism, params=params, pruner=pruner, sampler=sampler, seed=seed,
            name=name, features=features, target=target))

    async def sweeps(self, *, status: str | None = None, limit: int = 50,
                     offset: int = 0) -> Page[Sweep]:
        return await self._do(calls.listing("sweeps", limit, offset, status=status))

    async def sweep_status(self, sweep: str | Sweep) -> Sweep:
        return await self._do(calls.one("sweeps", ident(sweep)))

    async def cancel_sweep(self, sweep: str | Sweep) -> Sweep:
        return await self._do(calls.cancel_sweep(ident(sweep)))

    def sweep_events(self, sweep: str | Sweep) -> AsyncIterator[Event]:
        return self._stream(f"/v1/sweeps/{ident(sweep)}/events")

    async def follow_sweep(self, sweep: str | Sweep, *,
                           on_event: EventFn | None = None) -> Sweep:
        failures = 0
        while True:
            try:
                async for event in self.sweep_events(sweep):
                    if on_event is not None:
                        on_event(event)
                    if event.event == "end":
                        return Sweep.from_json(event.data)
            except httpx.TransportError:
                failures += 1
                if failures > RECONNECTS:
                    raise
                await asyncio.sleep(1)
            if (now := await self.sweep_status(sweep)).done:
                return now

    async def register(self, name: str, model: str | Model) -> ModelVersion:
        return await self._do(calls.register(name, ident(model)))

    async def registry(self, name: str) -> RegisteredModel:
        return await self._do(calls.registry(name))

    async def registry_names(self, *, limit: int = 50,
                             offset: int = 0) -> Page[RegisteredModel]:
        return await self._do(calls.registry_names(limit, offset))

    async def set_alias(self, name: str, alias: str, version: int) -> Alias:
        return await self._do(calls.set_alias(name, alias, version))

    async def delete_alias(self, name: str, alias: str) -> None:
        await self._do(calls.delete_alias(name, alias))

    async def export(self, model: str | Model, format: str = "onnx",
                     path: str | Path | None = None) -> Path:
        model_id = ident(model)
        data = await self._do(calls.export(model_id, format))
        return calls.write_export(data, calls.export_path(model_id, format, path))

    async def batch(self, model: str | Model, dataset: str | Dataset, output: str = "predict",
                    format: str = "parquet", *, name: str | None = None,
                    idempotency_key: str | None = None) -> Job:
        return await self._do(calls.batch(ident(model), dataset, output, format, name,
                                          idempotency_key))

    async def download_result(self, job: str | Job, path: str | Path) -> Path:
        path = Path(path)
        partial = path.with_name(f".{path.name}.part")
        try:
            async with self._http.stream("GET", calls.result_path(ident(job))) as r:
                if r.status_code >= 400:
                    await r.aread()
                    check(r)
                with partial.open("wb") as f:  # small blocking writes, as the sync client's
                    async for chunk in r.aiter_bytes():
                        f.write(chunk)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return path


    # -------------------------------------------------------- comparisons and webhooks

    async def compare(self, dataset: str | Dataset, backbones: list[str], *,
                      seeds: int | list[int] = 3, params: dict[str, Any] | None = None,
                      features: list[str] | None = None, target: str | None = None,
                      metric: str | None = None, name: str | None = None) -> Comparison:
        return await self._do(calls.compare(dataset, backbones, seeds, params,
                                            features=features, target=target, metric=metric,
                                            name=name))

    async def comparison(self, comparison_id: str) -> Comparison:
        return await self._do(calls.comparison(comparison_id))

    async def comparisons(self, *, limit: int = 50, offset: int = 0) -> Page[Comparison]:
        return await self._do(calls.comparisons(limit, offset))

    async def cancel_comparison(self, comparison: str | Comparison) -> Comparison:
        return await self._do(calls.cancel_comparison(ident(comparison)))

    async def wait_comparison(self, comparison: str | Comparison, *, interval: float = 2.0,
                              timeout: float | None = None) -> Comparison:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            found = await self.comparison(ident(comparison))
            if found.done:
                return found
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"comparison {found.id} is still {found.status}")
            await asyncio.sleep(interval)

    async def add_webhook(self, url: str, events: list[str], *,
                          secret: str | None = None) -> Webhook:
        return await self._do(calls.add_webhook(url, events, secret))

    async def webhooks(self, *, limit: int = 50, offset: int = 0) -> Page[Webhook]:
        return await self._do(calls.webhooks(limit, offset))

    async def webhook(self, webhook_id: str) -> Webhook:
        return await self._do(calls.webhook(webhook_id))

    async def delete_webhook(self, webhook: str | Webhook) -> None:
        await self._do(calls.delete_webhook(ident(webhook)))

    async def deliveries(self, webhook: str | Webhook, *, limit: int = 50,
                         offset: int = 0) -> Page[Delivery]:
        return await self._do(calls.deliveries(ident(webhook), limit, offset))

    async def test_webhook(self, webhook: str | Webhook) -> Delivery:
        return await self._do(calls.test_webhook(ident(webhook)))


    async def build_index(self, model: str | Model, dataset: str | Dataset, *,
                          metric: str | None = None, params: dict[str, Any] | None = None,
                          label_column: str | None = None, wait: bool = False,
                          progress: bool = False) -> Index:
        found = await self._do(calls.build_index(ident(model), ident(dataset), metric=metric,
                                                 params=params, label_column=label_column))
        if not wait:
            return found
        await self.follow(found.job_id, progress=progress)
        return await self.index(model, found.id)

    async def indexes(self, model: str | Model, *, limit: int = 50,
                      offset: int = 0) -> Page[Index]:
        return await self._do(calls.indexes(ident(model), limit, offset))

    async def index(self, model: str | Model, index_id: str) -> Index:
        return await self._do(calls.index(ident(model), index_id))

    async def delete_index(self, model: str | Model, index: str | Index) -> None:
        await self._do(calls.delete_index(ident(model), ident(index)))

    async def neighbors(self, model: str | Model, instances: Any, k: int = 10, *,
                        index_id: str | None = None) -> list[list[Neighbor]]:
        return await self._do(calls.neighbors(ident(model), instances, k, index_id))


def _save(chunks: Iterator[bytes], path: Path) -> None:
    """Write chunks to a partial file beside path, renamed to path once all arrived."""
    partial = path.with_name(f".{path.name}.part")
    try:
        with partial.open("wb") as f:
            for chunk in chunks:
                f.write(chunk)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
