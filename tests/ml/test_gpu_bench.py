"""bench/gpu.py's code on CPU (--device cpu --tiny), and its skip where there is no CUDA."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import gpu

ROOT = Path(__file__).resolve().parents[2]


def test_every_check_runs_on_cpu_and_prints_one_table():
    rows = gpu.measure(torch.device("cpu"), gpu.TINY)
    names = [r[0] for r in rows]
    assert any("bf16" in n for n in names) and any("cached features" in n for n in names)
    assert any("micro-batched" in n for n in names)
    assert any("data-parallel" in n and "gloo" in n for n in names)
    for what, figure, against in rows:
        if figure != "n/a":
            assert float(figure.split()[0].replace(",", "")) > 0, what
    text = gpu.table(rows, "t")
    assert len(text.splitlines()) == len(rows) + 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check runs")
def test_without_cuda_it_skips_unless_cuda_is_required(capsys):
    assert gpu.main([]) == 0
    assert "no CUDA device; skipped" in capsys.readouterr().out
    strict = subprocess.run([sys.executable, "-m", "bench.gpu", "--require-cuda"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert strict.returncode != 0
    assert gpu.run() == {"skipped": "no CUDA device"}
