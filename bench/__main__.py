"""`make bench`: run every benchmark and print a summary of the ratios."""

from __future__ import annotations

import json
import sys

from bench import (
    ann,
    batch_predict,
    binary_embed,
    contrastive_digits,
    deep_training_overhead,
    dispatch_latency,
    gpu,
    ingest,
    microbatch,
    noisy_neighbour,
    predict_throughput,
    training_overhead,
    transfer_digits,
    vae_digits,
)

BENCHES = {
    "predict_throughput": predict_throughput.run,
    "dispatch_latency": dispatch_latency.run,
    "training_overhead": training_overhead.run,
    "ingest": ingest.run,
    "deep_training_overhead": deep_training_overhead.run,
    "contrastive_digits": contrastive_digits.run,
    "microbatch": microbatch.run,
    "binary_embed": binary_embed.run,
    "transfer_digits": transfer_digits.run,
    "noisy_neighbour": noisy_neighbour.run,
    "vae_digits": vae_digits.run,
    "gpu": gpu.run,  # skipped (not failed) without CUDA
    "batch_predict": batch_predict.run,
    "ann": ann.run,
}


def main(names: list[str]) -> int:
    """Run the named benchmarks (all by default) and print their figures as JSON."""
    results = {}
    for name in names or list(BENCHES):
        results[name] = BENCHES[name]()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
