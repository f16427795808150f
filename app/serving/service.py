"""What the serving routes call: find a project's model, check it can answer, build its input
from the request body, answer. The loop itself only routes: what is heavy runs in the pool."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from anyio import to_thread
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from app import logs
from app.db.session import get_sessionmaker
from app.db.tables import Model
from app.errors import NotFound, field_error
from app.services import evaluation, models, registry
from app.services.evaluation import TestSet
from app.serving import arrays, inputs
from app.serving.cache import Loaded, ModelCache
from app.serving.limits import Limits
from app.serving.pool import DecodePool

log = logs.get_logger("pretrainer.serving")


class Serving:
    """The model cache, the limits it serves under, the database its rows are read from, and
    the processes that decode heavy inputs."""

    def __init__(self, cache: ModelCache, limits: Limits, database_url: str,
                 decoders: DecodePool) -> None:
        self.cache, self.limits, self.database_url = cache, limits, database_url
        self.decoders = decoders

    def close(self) -> None:
        """Stop the pools (at shutdown)."""
        self.cache.pool.close()
        self.decoders.close()

    async def loaded(self, project: str, model_id: str) -> Loaded:
        """The cached model, re-checked against its row at most every model_recheck_seconds.

        The hot path touches neither the database nor a thread: a cached model answers from
        memory until its row is due to be looked at again (deleted elsewhere, another project).
        A registry reference (`name@alias`) is resolved on every call, before the cache (which
        stays keyed by model id), so that an alias move serves the new model at once.
        """
        if registry.is_ref(model_id):
            model_id = await self.resolve(project, model_id)
        entry = self.cache.peek(model_id)
        if (entry is not None and entry.project == project
                and time.monotonic() - entry.checked_at < self.limits.model_recheck_seconds):
            return entry
        try:
            row = await to_thread.run_sync(self._row, project, model_id)
        except NotFound:
            self.cache.evict(model_id)
            raise
        if entry is None or entry.project != project:
            entry = await to_thread.run_sync(self._load, row)
        entry.checked_at = time.monotonic()
        return entry

    async def resolve(self, project: str, ref: str) -> str:
        """The model id of a model id or registry reference (NotFound when it names nothing)."""
        if not registry.is_ref(ref):
            return ref
        return await to_thread.run_sync(self._resolve, project, ref)

    def _resolve(self, project: str, ref: str) -> str:
        with get_sessionmaker(self.database_url)() as session:
            return registry.resolve(session=session, project=project, ref=ref)

    def _row(self, project: str, model_id: str) -> Model:
        with get_sessionmaker(self.database_url)() as session:
            return models.get(session=session, project=project, model_id=model_id)

    def _load(self, row: Model) -> Loaded:
        # Tampered or foreign files raise UnsafeArtifact: refused, never executed (a 500 that
        # says so, from the one error map).
        return self.cache.load(row)

    async def answer(self, project: str, model_id: str, op: str, body: inputs.Body) -> Any:
        """predict or embed (op) of a request body: load, check, decode the instances, answer."""
        entry = await self.loaded(project, model_id)
        _can(entry, op)
        x = await self._input(entry, body)
        return await self._compute(entry, op, x)

    async def embed_instances(self, project: str, model_id: str,
                              instances: list[Any]) -> np.ndarray:
        """The embeddings of parsed instances, exactly as /embed answers them (neighbours)."""
        entry = await self.loaded(project, model_id)
        _can(entry, "embed")
        x = await self._rows(entry, instances)
        return np.asarray(await self._compute(entry, "embed", x))

    async def generate(self, project: str, model_id: str, n: int, seed: int | None) -> Any:
        """n new samples of a generative model."""
        entry = await self.loaded(project, model_id)
        _can(entry, "generate")
        return await self._call(lambda: entry.trained.generate(n, seed), n, 0)

    async def evaluate(self, *, session: Session, project: str, model_id: str,
                       dataset_id: str, target: str | None) -> tuple[TestSet, dict[str, Any]]:
        """The test set a dataset makes for the model, and the model's metrics on it."""
        row = models.get(session=session, project=project, model_id=model_id)
        test = await to_thread.run_sync(functools.partial(
            evaluation.load, session=session, project=project, model=row,
            dataset_id=dataset_id, target=target, store=self.cache.store,
            max_rows=self.limits.evaluate_max_rows))
        entry = await self.loaded(project, row.id)
        metrics = await to_thread.run_sync(entry.trained.evaluate, test.x, test.y)
        return test, metrics

    async def training_embedding(self, project: str, model_id: str) -> np.ndarray:
        """The embedding of the model's training rows (t-SNE's result)."""
        entry = await self.loaded(project, model_id)
        return np.ascontiguousarray(_kept(
            entry, "training_embedding",
            f"a {entry.algorithm} model keeps no training embedding; use POST "
            f"/v1/models/{model_id}/embed to embed rows"))

    async def training_labels(self, project: str, model_id: str) -> np.ndarray:
        """A clustering's own labels of its training rows."""
        entry = await self.loaded(project, model_id)
        return np.asarray(_kept(
            entry, "training_labels",
            f"a {entry.algorithm} model keeps no labels of its training rows: only clusterings "
            "(kmeans, minibatch_kmeans, dbscan, agglomerative, gmm) trained by this release do"))

    async def _input(self, entry: Loaded, body: inputs.Body) -> np.ndarray:
        try:
            if body.media in inputs.BINARY:
                return await self._binary(entry, body)
            if body.media == inputs.MULTIPART:
                files = await body.files(self.limits.max_instances)
                return await self._decoded(inputs.matrix, entry.spec, files, self.limits)
            return await self._json(entry, body)
        except inputs.NotInstances as exc:  # the same 422 as a body FastAPI validated itself
            raise RequestValidationError(exc.errors) from exc

    async def _json(self, entry: Loaded, body: inputs.Body) -> np.ndarray:
        """The model's input from a JSON body; the loop itself parses only small tabular ones.

        A body past inline_body_bytes is counted (while it streams when it is big, so that an
        over-limit one is refused before it is held whole) and parsed in a decode process;
        images are always decoded there, and the rows of a small body past inline_instances
        built in the pool.
        """
        limits, spec = self.limits, entry.spec
        raw, counted = await inputs.read_json_body(body.chunks, limits)
        if len(raw) > limits.inline_body_bytes:
            return await self._decoded(inputs.from_json, spec, raw, limits, counted)
        return await self._rows(entry, inputs.parse(raw))

    async def _rows(self, entry: Loaded, instances: list[Any]) -> np.ndarray:
        """The model's input from parsed instances: images decoded in a decode process, the
        rows of many instances built in the pool, a few on the loop."""
        limits, spec = self.limits, entry.spec
        if spec.kind == "image":
            return await self._decoded(inputs.matrix, spec, instances, limits)
        if len(instances) > limits.inline_instances:
            rows: np.ndarray = await self.cache.pool.run(inputs.matrix, spec, instances, limits)
            return rows
        return inputs.matrix(spec, instances, limits)

    async def _decoded(self, fn: Callable[..., np.ndarray], *args: Any) -> np.ndarray:
        x: np.ndarray = await self.decoders.run(fn, *args)
        return x

    async def _binary(self, entry: Loaded, body: inputs.Body) -> np.ndarray:
        """The rows of an .npy or Arrow body; image models take images, not arrays.

        Reading an array is a copy that releases the GIL: threads do, no process is needed.
        """
        if entry.spec.kind == "image":
            raise field_error(
                "body", f"{body.media} is not accepted here", status=415,
                detail=f"{body.media} bodies are for tabular models; send images as JSON "
                       '{"instances": [{"b64": …}]} or multipart files')
        raw = await inputs.read_body(body.chunks, self.limits.max_body_bytes)
        if len(raw) <= self.limits.inline_body_bytes:
            return arrays.from_binary(raw, body.media, entry.spec, self.limits)
        rows: np.ndarray = await self.cache.pool.run(arrays.from_binary, raw, body.media,
                                                     entry.spec, self.limits)
        return rows

    async def _compute(self, entry: Loaded, op: str, x: np.ndarray) -> Any:
        """Run predict/embed: micro-batched for torch models, and for scikit-learn ones whose
        answer a batch does not change (see MicroBatcher: calls that arrive together share one
        estimator call, at the cost of one turn of the loop for a call alone)."""
        limits = self.limits
        if limits.batching and (not entry.quick or (
                limits.sklearn_batching and op in entry.trained.row_exact)):
            return await self.cache.batcher(entry, op).submit(x)
        fn = getattr(entry.trained, op)
        return await self._call(lambda: fn(x), len(x), limits.inline_instances)

    async def _call(self, fn: Callable[[], Any], n: int, inline: int) -> Any:
        # Tiny requests are cheaper inline than a thread hop; big ones must not block the loop.
        return fn() if n <= inline else await self.cache.pool.run(fn)


def _kept(entry: Loaded, attr: str, refusal: str) -> Any:
    """What the model kept of its training rows (attr), or a 422 about the model saying so."""
    kept = getattr(entry.trained, attr, None)
    if kept is None:
        raise field_error("model", f"no {attr.replace('_', ' ')}", detail=refusal)
    return kept


def _can(entry: Loaded, capability: str) -> None:
    """A 422 naming what the model can do, when it cannot do this."""
    if capability not in entry.capabilities:
        can = ", ".join(entry.capabilities) or "nothing over HTTP"
        kept = entry.trained.has_training_embedding
        extra = (f" The embedding of its training rows is at GET /v1/models/{entry.model_id}"
                 "/embedding." if kept else "")
        raise field_error(
            "model", f"{capability} is not supported by {entry.algorithm}",
            detail=f"a {entry.algorithm} model cannot {capability}; it can: {can}.{extra}")
