"""The reaper: a running job whose heartbeat stopped is requeued (to resume) or failed; the
orphan sweep, which removes blobs that no row refers to; and the blob store's claim, which keeps
the sweep (and every write) to the store of this database."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.engine import make_url

from app import logs
from app.api.errors import problem_body
from app.config import Settings
from app.db.session import session_scope
from app.db.tables import utcnow
from app.errors import Problem
from app.queue import enqueue_train
from app.services import identity, leases, orphans, sweeps, uploads
from app.storage import BlobStore, S3BlobStore, StoreOwned

log = logs.get_logger("pretrainer.reaper")


def reap_once(settings: Settings) -> list[str]:
    """One sweep; returns the ids of the jobs sent (back) to their queue."""
    with session_scope(settings.resolved_database_url) as s:
        requeued = leases.reap(session=s, stale_after=settings.heartbeat_seconds * 3,
                               max_attempts=settings.max_attempts)
        requeued += leases.resend_queued(session=s, older_than=settings.requeue_seconds)
        targets = [(j.id, j.queue) for j in requeued]
    for job_id, queue in targets:  # after commit, as every enqueue
        enqueue_train(settings, job_id, queue)
        log.warning("job.requeued_by_reaper", job_id=job_id)
    return [job_id for job_id, _ in targets]


def claim_store(settings: Settings, store: BlobStore) -> None:
    """Make this database the store's owner, or raise StoreOwned naming both databases.

    A store with no owner yet that holds datasets or models this database knows none of was
    filled by another database before owners were recorded: it is refused too, not claimed.
    """
    url = settings.resolved_database_url
    shown = make_url(url).render_as_string(hide_password=True)
    with session_scope(url) as s:
        database_id = identity.database_id(session=s)
        foreign = orphans.unknown_to_this_database(session=s, store=store) \
            if store.read_owner() is None else []
    if foreign:
        raise StoreOwned(
            f"blob store {store.describe()} has no owner file and holds {len(foreign)} datasets "
            f"or models that this database, {database_id} ({shown}), does not know (e.g. "
            f"{foreign[0]}): another database wrote them; give each database its own store "
            "(PRETRAINER_DATA_DIR or PRETRAINER_STORAGE_URL)")
    store.claim(database_id=database_id, database=shown)


def store_refusal(settings: Settings, store: BlobStore) -> str | None:
    """Why a process must not use the store (another database owns it); None when it may.

    A database that cannot be reached yet is no refusal: the sweep claims before it runs.
    """
    try:
        claim_store(settings, store)
    except StoreOwned as exc:
        return str(exc)
    except Exception:
        log.warning("store.claim_deferred", exc_info=True)
    return None


def sweep_orphans(settings: Settings, store: BlobStore) -> list[str]:
    """One orphan sweep of the blob store; returns the keys removed (none from a store that
    another database owns: its blobs are unknown here, not orphans)."""
    try:
        claim_store(settings, store)
    except StoreOwned as exc:
        log.error("sweep.refused", reason=str(exc))
        return []
    with session_scope(settings.resolved_database_url) as s:
        removed = orphans.sweep(session=s, store=store, grace_seconds=settings.orphan_grace_seconds)
    for key in removed:
        log.warning("blob.orphan_removed", key=key)
    return removed


def sweep_uploads(settings: Settings, store: BlobStore) -> list[str]:
    """Expire resumable uploads idle past PRETRAINER_UPLOAD_EXPIRY_SECONDS and remove their
    bytes, and bytes of uploads no row keeps (ended, terminated) older than the orphan grace;
    return the upload ids whose bytes were removed."""
    with session_scope(settings.resolved_database_url) as s:
        expired = set(uploads.expire(session=s, now=utcnow()))
        # An API process stopped while inspecting one: its staging went with it.
        stale = utcnow() - timedelta(seconds=settings.orphan_grace_seconds)
        for row in uploads.interrupted(session=s, before=stale):
            uploads.finish(session=s, upload=row, problem=problem_body(Problem(
                "the service stopped while it inspected this upload; upload the file again",
                status=503)))
        idle = store.resumable_idle()
        pending = uploads.pending_ids(session=s, ids=[name for name, _ in idle])
    removed = [name for name, age in idle if name in expired
               or (name not in pending and age > settings.orphan_grace_seconds)]
    for name in removed:
        store.resumable(name).unlink(missing_ok=True)
        log.warning("upload.removed", upload_id=name, expired=name in expired)
    return removed


def _every(seconds: float, what: str, fn: Callable[[], object], stop: threading.Event) -> None:
    def loop() -> None:
        while not stop.wait(seconds):
            try:
                fn()
            except Exception:  # a DB blip must not kill the loop; the next round retries
                log.warning(f"{what}.failed", exc_info=True)

    threading.Thread(target=loop, daemon=True, name=what).start()


def start(settings: Settings, store: BlobStore) -> threading.Event:
    """Reap every PRETRAINER_REAPER_SECONDS and sweep the app's blob store of orphans every
    PRETRAINER_ORPHAN_SWEEP_SECONDS in daemon threads; set the event to stop both.

    An S3 store is not swept: listing a prefix there would download it into the local cache.
    """
    stop = threading.Event()
    if settings.reaper_seconds > 0:
        _every(settings.reaper_seconds, "reaper", lambda: reap_once(settings), stop)
        # A sweep whose advance was missed (a crash between a trial's end and it) goes on.
        _every(settings.reaper_seconds, "sweeps", lambda: sweeps.tick(settings, store), stop)
    if isinstance(store, S3BlobStore):
        log.info("sweep.off", reason="the orphan sweep does not list S3 stores")
    elif settings.orphan_sweep_seconds > 0:
        _every(settings.orphan_sweep_seconds, "sweep", lambda: sweep_orphans(settings, store), stop)
    if settings.orphan_sweep_seconds > 0:  # on this machine's disk, whatever the store's kind
        _every(settings.orphan_sweep_seconds, "uploads", lambda: sweep_uploads(settings, store),
               stop)
    return stop
