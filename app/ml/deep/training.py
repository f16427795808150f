"""fit() of the family: split, normalise, build, train, score, package.

It knows the algorithm only through its trained-model class (the network module, the name
recorded in the config, whether predict reconstructs): the algorithm checks the data and
params first, then hands over.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import numpy as np
import torch

from app.ml.base import Report
from app.ml.deep.evaluate import probe_metrics
from app.ml.deep.model import DeepModel
from app.ml.deep.nets import Normalize, images_to_model_space
from app.ml.deep.params import TrainParams
from app.ml.deep.preprocess import IMAGE, Prep, fit_prep, standardize_rows, to_nchw
from app.ml.deep.runtime import (
    Batches,
    LoopConfig,
    LoopResult,
    Runtime,
    resolve_device,
    split_indices,
    train_loop,
)

# Without validation rows, val_reconstruction_error is measured on at most this many
# (seeded) training rows.
METRIC_SAMPLE = 10_000
RECONSTRUCTION_ERROR = "reconstruction_error"
# kNN and the linear probe are scored on at most this many (seeded) labelled rows.
PROBE_SAMPLE = 20_000


def fit_model(model_cls: type[DeepModel], kind: str, arr: np.ndarray, p: TrainParams,
              report: Report, *, validates: bool = True, y: Any = None,
              resume_from: dict[str, Any] | None = None) -> DeepModel:
    """Train a network of model_cls on arr (checked rows or uint8 images of `kind`, as
    preprocess.training_data gives them) and return the trained model, on CPU.

    validates: False trains with no validation split, val_loss or early stopping (a GAN).
    resume_from: a checkpoint of an earlier run of the same job (same data, params and seed,
    so the same split and preprocessing), as runtime.load_checkpoint returns it.
    """
    labels = _labels(y, len(arr))
    device = resolve_device(p.device)
    report.check()
    fraction = p.validation_fraction if validates else 0.0
    train_idx, val_idx = split_indices(len(arr), fraction, p.seed)
    train_rows = arr[train_idx] if len(val_idx) else arr
    prep = fit_prep(kind, train_rows, p.standardize)
    module = importlib.import_module(model_cls.net_module)
    arch = module.architecture(p)
    torch.manual_seed(p.seed)  # weight init
    net = module.build(arch, prep).to(device)
    rt = Runtime(device, p.seed)
    objective = module.objective(net, rt, p, prep)
    to_model = _to_model(prep, device)
    train = Batches(_stored(train_rows, prep), rt, p.batch_size, shuffle=True,
                    to_model=to_model, min_batch=objective.min_batch, shard=True)
    val = (Batches(_stored(arr[val_idx], prep), rt, p.batch_size, shuffle=False,
                   to_model=to_model, min_batch=objective.min_batch) if len(val_idx) else None)
    config = LoopConfig.from_params(p)
    if not validates:
        config = dataclasses.replace(config, patience=0)
    result = train_loop(objective, train, val, config, report, resume_from=resume_from)
    del train, val, objective
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the optimizer state and batches are gone; give memory back
    report.check()
    model = model_cls(config=_config(model_cls.algorithm, p, prep, arch), net=net)
    model.metrics = _metrics(model, result, arr, val_idx, labels, p, device)
    model.to("cpu")
    report.progress(1.0)
    return model


def _sample(n: int, seed: int, size: int) -> np.ndarray:
    """Seeded row indices: all n, or `size` of them."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 29]).choice(n, size, replace=False))


def _labels(y: Any, n: int) -> np.ndarray | None:
    if y is None:
        return None
    labels = np.asarray(y)
    if labels.shape != (n,):
        raise ValueError(f"labels must be one per row: got shape {labels.shape} for {n} rows")
    return labels


def _raw_inputs(arr: np.ndarray, prep: Prep) -> np.ndarray:
    """The yardstick's view of the rows: as the model reads them (standardised rows when it
    standardises), images as [0, 1] pixels, one flat row each."""
    if prep.kind == IMAGE:
        return arr.reshape(len(arr), -1).astype(np.float32) / 255.0
    return standardize_rows(arr, prep)


def _stored(arr: np.ndarray, prep: Prep) -> torch.Tensor:
    """What Batches indexes: standardized float32 rows, or uint8 NCHW images."""
    if prep.kind == IMAGE:
        return torch.from_numpy(to_nchw(arr))
    return torch.from_numpy(standardize_rows(arr, prep))


def _to_model(prep: Prep, device: torch.device) -> Any:
    if prep.kind != IMAGE:
        return None
    norm = Normalize(prep).to(device)
    return lambda batch: images_to_model_space(batch, norm)


def _config(algorithm: str, p: TrainParams, prep: Prep,
            arch: dict[str, Any]) -> dict[str, Any]:
    return {"algorithm": algorithm, "params": p.model_dump(mode="json"),
            "data": {"kind": prep.kind, "input_shape": list(prep.shape),
                     "n_features_in": prep.n_features,
                     "dtype": "float32" if prep.kind != IMAGE else "uint8"},
            "preprocessing": {**prep.to_json(), "standardize": p.standardize},
            "architecture": arch, "metrics": {}}


def _metrics(model: DeepModel, result: LoopResult, arr: np.ndarray,
             val_idx: np.ndarray, labels: np.ndarray | None, p: TrainParams,
             device: torch.device) -> dict[str, Any]:
    final = result.final
    metrics: dict[str, Any] = {
        "final_loss": final.get("loss"), "epochs_trained": result.epochs_trained,
        "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
        "stopped_early": result.stopped_early, "train_rows": len(arr) - len(val_idx),
        "val_rows": len(val_idx), "device": device.type,
    }
    metrics.update({f"final_{k}": v for k, v in final.items() if k in ("d_loss", "g_loss")})
    if RECONSTRUCTION_ERROR in model.scored:  # a model that predicts reconstructions
        # Held-out rows when there are any; else a seeded sample of the training rows, and the
        # name says so.
        rows = arr[val_idx] if len(val_idx) else arr[_sample(len(arr), p.seed, METRIC_SAMPLE)]
        errors = model.outputs(rows, (RECONSTRUCTION_ERROR,))[RECONSTRUCTION_ERROR]
        split = "val" if len(val_idx) else "train"
        metrics[f"{split}_reconstruction_error"] = float(errors.mean())
    if labels is not None:
        some = _sample(len(arr), p.seed, PROBE_SAMPLE)
        metrics.update(probe_metrics(model.embed(arr[some]), labels[some], p.seed,
                                     raw=_raw_inputs(arr[some], model.prep)))
    return metrics
