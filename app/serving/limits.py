"""The bounds serving works under, as plain values (the API fills them from its Settings)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Per-request bounds and fast-path thresholds; each one is a PRETRAINER_ setting."""

    max_instances: int = 10_000
    max_request_cells: int = 2_000_000
    max_request_pixels: int = 64_000_000
    max_image_pixels: int = 40_000_000
    max_body_bytes: int = 64 * 1024**2
    evaluate_max_rows: int = 100_000
    # At most this many instances are decoded and answered on the event loop itself.
    inline_instances: int = 64
    # A JSON body up to this size is parsed on the loop; a bigger one is counted while it
    # streams and parsed in the serving pool.
    inline_body_bytes: int = 64 * 1024
    # How long a cached model answers before its database row is looked at again.
    model_recheck_seconds: float = 2.0
    batching: bool = True
    sklearn_batching: bool = True
