"""A batch job: stream a dataset through a model, block by block, into a result file.

The model is loaded as serving loads it and reads the rows as its training job did (the
columns of its input schema, the same types); the answers go to a staged file that becomes the
job's result blob only once every row is written, so a partial result is never served. A
retry after a lost worker starts again from the first row.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from app import logs, storage
from app.config import Settings
from app.data import training
from app.data.chunks import iter_blocks
from app.data.training import JobData
from app.db.session import session_scope
from app.db.tables import Dataset, Model
from app.job_report import LeaseLost, set_deadline
from app.ml.base import EMBED, Trained
from app.runs.batch_output import Block, embed_block, open_writer, predict_block
from app.services import leases, models
from app.services.leases import Lease
from app.storage import BlobStore

log = logs.get_logger("pretrainer.runner")

# At most this many input values in one block (a wide image is many values); text rows count
# as TEXT_WIDTH values each.
BLOCK_VALUES = 1 << 22
TEXT_WIDTH = 512


@dataclass(frozen=True)
class BatchFacts:
    """What one try reads from the rows: the model, the data, the output and its format."""

    model: Model
    data: JobData
    n_rows: int
    output: str
    format: str


def run(settings: Settings, lease: Lease, report: Any, store: BlobStore) -> None:
    """Score the job's dataset with its model and publish the result; end the job succeeded."""
    facts = _read_job(settings, lease, report)
    trained = _load_model(facts.model, store)
    key = storage.job_result_key(lease.job_id, facts.format)
    store.delete(key)  # an earlier try that published but could not end the job
    report.progress(0.01)
    t0 = time.perf_counter()
    with store.writer(key) as sink:
        rows, names = _score(settings, facts, trained, report, store, sink)
        size = sink.tell()
        report.check()  # cancelled or lost on the last block: nothing is published
    seconds = time.perf_counter() - t0
    metrics = {"rows": rows, "seconds": round(seconds, 4),
               "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None,
               "output": facts.output, "format": facts.format, "n_columns": len(names),
               "columns": names[:100], "result_bytes": size}
    with session_scope(settings.resolved_database_url) as s:
        if not leases.complete(session=s, lease=lease, metrics=metrics, result_key=key):
            store.delete(key)  # the lease moved on: this try's result must go
            raise LeaseLost(lease.job_id)
    log.info("job.succeeded", job_id=lease.job_id, rows=rows, result_key=key)


def _read_job(settings: Settings, lease: Lease, report: Any) -> BatchFacts:
    with session_scope(settings.resolved_database_url) as s:
        job = leases.load_for_run(session=s, lease=lease)
        model = s.get(Model, job.source_model_id or "")
        if model is None:
            raise FileNotFoundError(f"model {job.source_model_id} was deleted before the job ran")
        dataset = s.get(Dataset, job.dataset_id)
        if dataset is None:
            raise FileNotFoundError(f"dataset {job.dataset_id} was deleted before the job ran")
        set_deadline(report, settings, job.started_at)
        data = training.of_job(dataset, features=list(job.features), target=None)
        s.expunge(model)
        return BatchFacts(model, data, int(dataset.n_rows or 0), str(job.params["output"]),
                          str(job.params["format"]))


def _load_model(model: Model, store: BlobStore) -> Trained:
    """The model as serving loads it; a torch model on the worker's GPU when it has one."""
    trained = models.load_trained(store=store, model_id=model.id, algorithm=model.algorithm,
                                  artifact_key=model.artifact_key)
    move = getattr(trained, "to", None)
    if callable(move):  # only torch models move; the import stays off the scikit-learn path
        from app.ml.deep.runtime import resolve_device

        move(str(resolve_device("auto")))
    return trained


def _score(settings: Settings, facts: BatchFacts, trained: Trained, report: Any,
           store: BlobStore, sink: Any) -> tuple[int, list[str]]:
    """Answer every block into the sink; (rows written, the result's column names)."""
    task = trained.task or {}
    classes = [str(c) for c in task.get("classes") or []]
    writer = open_writer(facts.format, sink, list(task.get("class_values") or classes))
    done, names = 0, []
    blocks = prefetched(iter_blocks(facts.data, store.path, _block_rows(settings, facts.data)))
    try:
        for x in blocks:
            report.check()
            block = _answer(trained, facts.output, x, classes)
            writer.write(block)
            done, names = done + len(block), block.names
            report.progress(min(0.99, 0.01 + 0.98 * done / max(facts.n_rows, 1)))
    finally:  # ended even when the try stops: the staged file is then discarded unpublished
        blocks.close()
        writer.close()
    return done, names


def _answer(trained: Trained, output: str, x: Any, classes: list[str]) -> Block:
    if output == EMBED:
        return embed_block(trained.embed(x))
    return predict_block(trained.predict(x), classes)


def _block_rows(settings: Settings, data: JobData) -> int:
    width = TEXT_WIDTH if data.kind == "text" else max(1, data.n_features)
    return max(1, min(settings.batch_chunk_rows, BLOCK_VALUES // width))


_END = object()


def prefetched(blocks: Iterator[Any]) -> Generator[Any, None, None]:
    """blocks, the next one read by a thread while the caller answers this one: reading and
    parsing (pyarrow, numpy) and the model release the GIL, so the two overlap. One block
    ahead at most; a reading error is raised here, at the block it stopped."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-reader") as reader:
        ahead = reader.submit(next, blocks, _END)
        while (block := ahead.result()) is not _END:
            ahead = reader.submit(next, blocks, _END)
            yield block
