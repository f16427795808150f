"""Settings: one object, read from PRETRAINER_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything configurable; the embedded default needs none of it set."""

    model_config = SettingsConfigDict(env_prefix="PRETRAINER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    data_dir: Path = Path("./data")
    # Empty means the embedded default under data_dir (SQLite file / filesystem broker).
    database_url: str = ""
    broker_url: str = ""
    # How many uvicorn worker processes `pretrainer api` starts.
    api_workers: int = Field(1, ge=1, le=64)
    # Queues a worker consumes when none are named on the command line.
    worker_queues: str = "cpu,gpu"
    worker_concurrency: int = Field(1, ge=1, le=64)

    max_upload_bytes: int = Field(2 * 1024**3, ge=1)
    upload_chunk_bytes: int = Field(1024 * 1024, ge=4096)
    max_instances: int = Field(10_000, ge=1)
    model_cache_size: int = Field(16, ge=1)
    # How long a cached model answers before its row is looked up again (deleted elsewhere).
    model_recheck_seconds: float = Field(2.0, ge=0)
    # Requests with at most this many instances are answered inline on the event loop.
    inline_instances: int = Field(64, ge=0)
    # A running job whose heartbeat is older than this is considered lost.
    heartbeat_seconds: float = Field(5.0, gt=0)
    # Redis redelivers unacknowledged messages after this; longer than any checkpoint interval.
    visibility_timeout: int = Field(6 * 3600, ge=60)
    # How often the API looks for running jobs whose heartbeat stopped (0: never).
    reaper_seconds: float = Field(10.0, ge=0)
    # A job is failed, not retried, after this many deliveries (poison-job guard).
    max_attempts: int = Field(3, ge=1)
    # ZIP uploads of images: bounds checked while extracting (zip bombs beat a ratio check alone).
    max_zip_members: int = Field(200_000, ge=1)
    max_zip_uncompressed_bytes: int = Field(8 * 1024**3, ge=1)
    max_zip_ratio: float = Field(200.0, gt=1)
    max_image_pixels: int = Field(40_000_000, ge=1)
    # A running PyTorch job writes a checkpoint at most this often (0: after every epoch).
    checkpoint_seconds: float = Field(0.0, ge=0)
    # Micro-batching of torch predict/embed calls in the API process.
    batching: bool = True
    batch_max_size: int = Field(64, ge=1)
    batch_max_wait_ms: float = Field(2.0, ge=0)
    log_level: str = "info"
    # Pretrained weights of torchvision architectures (`transfer` backbones), read from local
    # files only; empty means data_dir/weights.
    weights_dir: Path | None = None

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
    def resolved_weights_dir(self) -> Path:
        """Where `transfer` looks for <architecture>.safetensors / .pth files."""
        return (self.weights_dir or self.data_dir / "weights").resolve()

    @property
    def blob_dir(self) -> Path:
        """Root of the local blob store."""
        return self.data_dir.resolve() / "blobs"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
