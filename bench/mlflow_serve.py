"""`mlflow models serve` of the same scikit-learn k-means, for the predict throughput bench.

mlflow is not a dependency of the project: it is installed at bench time into a throwaway
virtual environment (BENCH_MLFLOW_VENV, reused between runs) with the same scikit-learn
version. When it cannot be installed or started, the bench says so and why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import sklearn

from bench._service import Proc, free_port

VENV = Path(os.environ.get("BENCH_MLFLOW_VENV", Path(tempfile.gettempdir()) / "pretrainer-bench-mlflow"))

FIT = """
import sys, mlflow.sklearn
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
x, _ = make_blobs(n_samples=int(sys.argv[2]), n_features=8, centers=5, random_state=0)
mlflow.sklearn.save_model(KMeans(n_clusters=5, random_state=0, n_init=3).fit(x), sys.argv[1])
"""


def _venv() -> Path:
    """The venv's bin folder with mlflow in it, installing it the first time."""
    bin_dir = VENV / "bin"
    if not (bin_dir / "mlflow").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True)
        subprocess.run([str(bin_dir / "pip"), "install", "--quiet", "mlflow",
                        f"scikit-learn=={sklearn.__version__}"], check=True, capture_output=True,
                       timeout=1200)
    return bin_dir


def start(rows: int) -> Proc | str:
    """A running `mlflow models serve` of k-means on the bench's data, or why there is none."""
    try:
        bin_dir = _venv()
    except (subprocess.SubprocessError, OSError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        return f"mlflow could not be installed: {exc} {err.decode(errors='replace')[-500:]}"
    model_dir = Path(tempfile.mkdtemp(prefix="bench-mlflow-")) / "model"
    try:
        subprocess.run([str(bin_dir / "python"), "-c", FIT, str(model_dir), str(rows)], check=True,
                       capture_output=True, timeout=600)
    except subprocess.SubprocessError as exc:
        return f"mlflow could not save the model: {exc}"
    port = free_port()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    try:
        return Proc([str(bin_dir / "mlflow"), "models", "serve", "-m", str(model_dir),
                     "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                    env, port, "/ping")
    except RuntimeError as exc:
        return f"mlflow models serve did not start: {str(exc)[-500:]}"
