"""Settings: one object, read from PRETRAINER_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The per-project quotas, in the order they are shown (PRETRAINER_QUOTA_<NAME> each).
QUOTAS = ("stored_bytes", "datasets", "models", "running_jobs", "queued_jobs", "serving_requests")


class Settings(BaseSettings):
    """Everything configurable; the embedded default needs none of it set."""

    model_config = SettingsConfigDict(env_prefix="PRETRAINER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    data_dir: Path = Path("./data")
    # Empty means the embedded default under data_dir (SQLite file / filesystem broker).
    database_url: str = ""
    broker_url: str = ""
    # Blob store: empty means data_dir/blobs; s3://bucket/prefix for S3-compatible storage.
    storage_url: str = ""
    # S3 endpoint and credentials (empty: boto's defaults, e.g. AWS_* variables or a role).
    s3_endpoint_url: str = ""
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_region: str | None = None
    # How many uvicorn worker processes `pretrainer api` starts.
    api_workers: int = Field(1, ge=1, le=64)
    # uvicorn's event loop. uvloop serves an idle API a little faster, but once the loop is
    # saturated it starves some connections (p99 over a second where asyncio keeps ~1.2x p50).
    api_loop: Literal["asyncio", "uvloop"] = "asyncio"
    # Queues a worker consumes when none are named on the command line.
    worker_queues: str = "cpu,gpu"
    worker_concurrency: int = Field(1, ge=1, le=64)
    # Celery task events (sent/started/succeeded), for Flower; off by default: a message each.
    task_events: bool = False

    max_upload_bytes: int = Field(2 * 1024**3, ge=1)
    upload_chunk_bytes: int = Field(1024 * 1024, ge=4096)
    # A resumable (tus) upload that receives nothing for this long expires; the sweep (every
    # PRETRAINER_ORPHAN_SWEEP_SECONDS) then removes its bytes. A day outlasts a night offline.
    upload_expiry_seconds: float = Field(86400.0, gt=0)
    max_instances: int = Field(10_000, ge=1)
    # POST /v1/models/{id}/evaluate scores a test set in the request: at most this many rows.
    evaluate_max_rows: int = Field(100_000, ge=1)
    model_cache_size: int = Field(16, ge=1)
    # Nearest-neighbour indexes kept loaded in an API process (LRU), like models: 100,000 ×
    # 384 floats with M=16 links are ~170 MB each.
    index_cache_size: int = Field(4, ge=1)
    # An index job embeds its dataset this many rows at a time, adding each chunk to the graph
    # and checking for cancel between chunks.
    index_chunk_rows: int = Field(4096, ge=1)
    # How long a cached model answers before its row is looked up again (deleted elsewhere).
    model_recheck_seconds: float = Field(2.0, ge=0)
    # Requests with at most this many instances are answered inline on the event loop.
    inline_instances: int = Field(64, ge=0)
    # Heavy serving work (JSON bodies past inline_body_bytes, image decoding, building big
    # matrices, model calls past inline_instances) runs in a pool of this many threads: it is
    # CPU-bound, so more threads than cores only make every heavy request slower, and the rest
    # wait their turn while the event loop keeps answering everyone else.
    serving_threads: int = Field(2, ge=1, le=256)
    # Big JSON bodies are parsed and images decoded in this many processes (not threads: that
    # work holds the GIL the event loop needs). Each is ~100 MB resident while it decodes.
    decode_processes: int = Field(1, ge=1, le=64)
    # A JSON predict/embed body up to this size is parsed inline (the fast path); a larger one
    # is counted while it streams (instances, cells) and parsed in the serving pool.
    inline_body_bytes: int = Field(64 * 1024, ge=0)
    # Per-request budgets of predict/embed: numbers in all instances (JSON or binary), and
    # pixels of all images (summed from their headers, before any is decoded). A JSON number
    # costs ~30 bytes of Python objects while parsed: 2M cells keep one request near 64 MB.
    max_request_cells: int = Field(2_000_000, ge=1)
    max_request_pixels: int = Field(64_000_000, ge=1)
    # A running job whose heartbeat is older than this is considered lost.
    heartbeat_seconds: float = Field(5.0, gt=0)
    # Redis redelivers unacknowledged messages after this; longer than any checkpoint interval.
    visibility_timeout: int = Field(6 * 3600, ge=60)
    # How often the API looks for running jobs whose heartbeat stopped (0: never).
    reaper_seconds: float = Field(10.0, ge=0)
    # A queued job not taken this long after its message was sent is sent again (a lost
    # message, a broker restart without persistence); a duplicate is harmless (the lease).
    requeue_seconds: float = Field(300.0, gt=0)
    # A job is failed, not retried, after this many deliveries (poison-job guard).
    max_attempts: int = Field(3, ge=1)
    # A sweep's trial budget (POST /v1/sweeps `trials`) is at most this: each trial is a job.
    max_sweep_trials: int = Field(200, ge=1)
    # ZIP uploads of images: bounds checked while extracting (zip bombs beat a ratio check alone).
    max_zip_members: int = Field(200_000, ge=1)
    max_zip_uncompressed_bytes: int = Field(8 * 1024**3, ge=1)
    max_zip_ratio: float = Field(200.0, gt=1)
    max_image_pixels: int = Field(40_000_000, ge=1)
    # An image dataset's decoded arrays (images.npy: pixels x channels of every image) are
    # bounded absolutely and against the upload: a few KB of 1-bit PNG decode to tens of MB.
    # The ratio is judged only past max_dataset_decoded_floor, so small datasets of tiny or
    # flat images (which compress far better than photos) are never refused for it.
    max_dataset_decoded_bytes: int = Field(8 * 1024**3, ge=1)
    max_dataset_decoded_ratio: float = Field(200.0, gt=1)
    max_dataset_decoded_floor: int = Field(64 * 1024**2, ge=0)
    # Columns of one tabular dataset (NPY, Parquet, CSV, JSONL): each one is a schema entry
    # kept on the dataset's row and returned by the API.
    max_dataset_columns: int = Field(10_000, ge=1)
    # Dataset lists show at most this many columns of each dataset (the item shows them all).
    list_columns: int = Field(100, ge=1)
    # Multipart uploads: the non-file fields (`name`, ...) are bounded in number and in total
    # bytes; the upload route is exempt from max_body_bytes, so nothing else bounds them.
    max_form_fields: int = Field(16, ge=1)
    max_form_field_bytes: int = Field(64 * 1024, ge=1)
    # One torch job over several processes (params.devices): a GPU worker runs one per GPU,
    # up to worker_gpus (unset: every GPU torch sees on the worker); a worker without a GPU
    # runs up to cpu_processes on gloo. The API refuses a job asking for more than
    # max(worker_gpus, cpu_processes), so set worker_gpus on the API too in a GPU deployment.
    worker_gpus: int | None = Field(None, ge=0, le=1024)
    cpu_processes: int = Field(2, ge=1, le=1024)  # 2: the CI path, without oversubscribing
    # A running PyTorch job writes a checkpoint at most this often (0: after every epoch).
    checkpoint_seconds: float = Field(0.0, ge=0)
    # A batch job (POST /v1/models/{id}/batch) reads, answers and writes this many rows at a
    # time (fewer for wide rows: a block holds at most ~4M values), between its cancel checks.
    batch_chunk_rows: int = Field(65_536, ge=1, le=10_000_000)
    # Micro-batching of predict/embed calls in the API process: torch models always; the
    # scikit-learn ones too (sklearn_batching), so concurrent small calls share one estimator
    # call (their answers are the same row by row) instead of paying its fixed cost each.
    batching: bool = True
    sklearn_batching: bool = True
    batch_max_size: int = Field(64, ge=1)
    batch_max_wait_ms: float = Field(2.0, ge=0)
    log_level: str = "info"
    # Pretrained weights of torchvision architectures (`transfer` backbones), read from local
    # files only; empty means data_dir/weights.
    weights_dir: Path | None = None

    # Access: `project:key,...` seeds API keys (stored hashed, like `pretrainer keys create`).
    # With no key at all the API is open (project "default"), and only on a loopback host.
    api_keys: str = ""
    # How long an API process believes a key it has looked up (0: the database is asked on
    # every request). A revoked key is refused once this has passed; an unknown key is never
    # believed, so a new key works at once.
    key_cache_seconds: float = Field(1.0, ge=0, le=3600)
    # Bounds; past one a request is refused with 413/422/429 naming the setting.
    max_body_bytes: int = Field(64 * 1024**2, ge=1024)  # any request body but an upload
    # The rest of a body answered before it was read (a 413, a 401) is read at most this many
    # bytes a second, shared by all such requests of an API process, for at most
    # refused_body_linger_seconds; then the connection closes (see bounds.RefusedBodyDrain).
    refused_body_rate: int = Field(64 * 1024**2, ge=1024)
    refused_body_linger_seconds: float = Field(10.0, ge=0)
    max_job_seconds: float = Field(86400.0, gt=0)  # wall clock of one job, all its tries
    # Serving calls (predict, embed, generate) per second per API key, with bursts (0: off).
    predict_rate: float = Field(0.0, ge=0)
    predict_burst: int = Field(50, ge=1)
    # Per-project quotas, generous by default; `pretrainer quotas set PROJECT` overrides them
    # for one project (stored in the database). Past one, a 429 (413 for bytes) names it.
    quota_stored_bytes: int = Field(1024**4, ge=0)  # uploaded bytes of all its datasets
    quota_datasets: int = Field(10_000, ge=0)
    # Models, counting one for each queued or running job: a job is refused, not its result.
    quota_models: int = Field(10_000, ge=0)
    # Jobs training at once; a worker leaves a job over it queued and offers it again later.
    quota_running_jobs: int = Field(16, ge=0)
    # Jobs waiting for a worker. PRETRAINER_MAX_ACTIVE_JOBS, its former name, still sets it.
    quota_queued_jobs: int = Field(100, ge=0, validation_alias=AliasChoices(
        "quota_queued_jobs", "max_active_jobs", "PRETRAINER_QUOTA_QUEUED_JOBS",
        "PRETRAINER_MAX_ACTIVE_JOBS"))
    # predict/embed/generate calls in flight, counted by each API process on its own.
    quota_serving_requests: int = Field(64, ge=0)
    # How soon a job left queued by the running-jobs quota is offered to the workers again.
    quota_retry_seconds: float = Field(5.0, gt=0)
    # How long an API process believes a project's quotas before reading them again.
    quota_recheck_seconds: float = Field(5.0, ge=0)
    # Blobs no row refers to (a crash between write and commit) are removed after this long.
    orphan_grace_seconds: float = Field(3600.0, ge=0)
    orphan_sweep_seconds: float = Field(600.0, ge=0)  # how often the API sweeps (0: never)
    # The source commit each model's reproducibility record names; unset, a worker asks git
    # when it runs from a checkout (an image built without .git sets it at build time).
    git_commit: str | None = None

    # Webhooks. A URL whose host resolves to a loopback, link-local, private, unspecified or
    # multicast address is refused (at registration and again at each delivery, against DNS
    # rebinding) unless this is true: the API must not become a way into its own network.
    webhook_allow_private: bool = False
    # How often each API process sends the deliveries that are due (0: never, in this process).
    webhook_poll_seconds: float = Field(2.0, ge=0)
    # One POST waits at most this long: a slow receiver costs a sender thread this, no more.
    webhook_timeout_seconds: float = Field(5.0, gt=0, le=60)
    # A delivery is tried this many times; the wait before try n+1 is backoff * 2**(n-1).
    webhook_max_attempts: int = Field(8, ge=1, le=50)
    webhook_backoff_seconds: float = Field(10.0, ge=0)
    # Deliveries sent at once by one API process.
    webhook_concurrency: int = Field(4, ge=1, le=64)

    @property
    def max_active_jobs(self) -> int:
        """The former name of quota_queued_jobs."""
        return self.quota_queued_jobs

    @property
    def quota_defaults(self) -> dict[str, int]:
        """Every project's quotas unless the database sets its own, by quota name."""
        return {name: getattr(self, f"quota_{name}") for name in QUOTAS}

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data directory."""
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'pretrainer.db'}"

    @property
    def resolved_broker_url(self) -> str:
        """The broker URL, defaulting to kombu's filesystem transport."""
        return self.broker_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        """Folder of the filesystem broker's messages (embedded default only)."""
        return self.data_dir.resolve() / "broker"

    @property
    def seeded_keys(self) -> list[tuple[str, str]]:
        """(project, key) pairs of PRETRAINER_API_KEYS; a malformed entry is an error at start."""
        pairs = []
        for item in filter(None, (part.strip() for part in self.api_keys.split(","))):
            project, sep, key = item.partition(":")
            if not sep or not project.strip() or not key.strip():
                raise ValueError("PRETRAINER_API_KEYS entries are project:key, comma-separated")
            pairs.append((project.strip(), key.strip()))
        return pairs

    @property
    def max_devices(self) -> int:
        """The most processes (GPUs or CPU ranks) any worker trains one job on."""
        return max(self.worker_gpus or 0, self.cpu_processes)

    @property
    def loopback(self) -> bool:
        """Whether the API binds to this machine only."""
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")

    @property
    def resolved_weights_dir(self) -> Path:
        """Where `transfer` looks for <architecture>.safetensors / .pth files."""
        return (self.weights_dir or self.data_dir / "weights").resolve()

    @property
    def blob_dir(self) -> Path:
        """Root of the local blob store."""
        return self.data_dir.resolve() / "blobs"

    @property
    def blob_cache_dir(self) -> Path:
        """Local copies of S3 blobs that readers need on disk."""
        return self.data_dir.resolve() / "blob-cache"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
