"""fit() of transfer: read the inputs, then labels, split, backbone, loop and scores in turn
(each from its own module), and package the model."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from app.ml.base import BackboneRef, Report
from app.ml.deep.preprocess import IMAGE, TABULAR, Prep, standardize_rows, to_nchw
from app.ml.deep.runtime import Batches, LoopConfig, Runtime, resolve_device, train_loop
from app.ml.transfer.backbone_spec import backbone_spec, starting_backbone
from app.ml.transfer.labels import targets as label_targets
from app.ml.transfer.metrics import scores
from app.ml.transfer.model import TEXT, Tokens, TransferModel
from app.ml.transfer.nets import ImageInput, TransferNet
from app.ml.transfer.objective import TransferObjective
from app.ml.transfer.params import TransferParams, resolve
from app.ml.transfer.split import split

CHUNK = 256
# The params whose null default the data decides (params.resolve), reported in the metrics.
RESOLVED = ("epochs", "batch_size", "learning_rate", "validation_fraction")


def fit_transfer(x: Any, y: np.ndarray, p: TransferParams, report: Report, ref: BackboneRef, *,
                 resume_from: dict[str, Any] | None = None) -> TransferModel:
    """Train a head on ref's backbone with labels y; the model comes back on CPU."""
    kind, data = _inputs(x)
    if kind != ref.data_kind:
        raise ValueError(f"backbone {ref.spec} reads {ref.data_kind} data; this dataset is {kind}")
    task, targets = label_targets(y, p, len(data))
    counts = np.bincount(targets).tolist() if task["head"] == "classification" else None
    p = resolve(p, n_rows=len(data), class_counts=counts)
    train_idx, val_idx = split(targets, task, p)
    device = resolve_device(p.device)
    report.check()
    spec, input_cfg, tokens = backbone_spec(ref, p, kind, data)
    torch.manual_seed(p.seed)  # the head's (and a from-scratch backbone's) initial weights
    backbone = starting_backbone(ref, spec)
    image_input = ImageInput(spec["image"]) if kind == IMAGE else None
    head_spec: dict[str, Any] = {"hidden_dims": list(p.head_hidden_dims), "dropout": p.dropout,
                                 "n_out": len(task.get("classes") or [None])}
    net = TransferNet(backbone, image_input, head_spec)
    moving = net.set_freeze(p.freeze)
    net.to(device)
    stored = _stored(kind, data, input_cfg, tokens)
    rt = Runtime(device, p.seed)
    # A frozen backbone without augmentation gives every row the same features each epoch:
    # compute them once and train the head on them.
    cached = not moving and not (kind == IMAGE and p.augments)
    inputs = features(net, stored, device) if cached else stored
    report.check()
    t = torch.from_numpy(targets)
    min_batch = 2 if moving else 1  # batch norm cannot train on a batch of one
    batch_size = p.batch_size
    assert batch_size is not None  # params.resolve filled in every null (auto) param
    train = Batches(inputs[train_idx], rt, batch_size, shuffle=True, targets=t[train_idx],
                    min_batch=min_batch, shard=True)
    val = (Batches(inputs[val_idx], rt, batch_size, shuffle=False, targets=t[val_idx])
           if len(val_idx) else None)
    objective = TransferObjective(net, rt, p, task, moving, cached=cached,
                                  augment=kind == IMAGE and p.augments,
                                  class_counts=np.bincount(targets[train_idx],
                                                           minlength=head_spec["n_out"])
                                  if task["head"] == "classification" else None)
    result = train_loop(objective, train, val, LoopConfig.from_params(p), report,
                        resume_from=resume_from)
    del train, val
    report.check()
    config = {"algorithm": TransferModel.algorithm, "params": p.model_dump(mode="json"), "task": task,
              "input": input_cfg, "backbone": spec, "head": head_spec, "metrics": {}}
    net.eval()
    model = TransferModel(config=config, net=net, tokens=tokens)
    eval_idx = val_idx if len(val_idx) else train_idx
    out = logits(net, inputs[eval_idx], device, head_only=cached)
    metrics = {
        "final_loss": result.final.get("loss"), "epochs_trained": result.epochs_trained,
        "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
        "stopped_early": result.stopped_early, "train_rows": len(train_idx),
        "val_rows": len(val_idx), "eval_split": "held_out" if len(val_idx) else "train",
        "device": device.type, "backbone": ref.spec, "pretrained": ref.pretrained,
        "freeze": p.freeze, "features_cached": cached,
        "trainable_parameters": sum(q.numel() for q in net.parameters() if q.requires_grad),
        "frozen_parameters": sum(q.numel() for q in net.parameters() if not q.requires_grad),
        # What the auto (null) params became, so a user sees how the job trained.
        "resolved_params": {k: getattr(p, k) for k in RESOLVED},
    }
    metrics.update(scores(task, out, targets, eval_idx, kind, data, train_idx))
    if task["head"] == "classification" and len(val_idx):
        train_out = logits(net, inputs[train_idx], device, head_only=cached)
        metrics["train_accuracy"] = float((train_out.argmax(1) == targets[train_idx]).mean())
    model.metrics = metrics
    model.to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    report.progress(1.0)
    return model


# ---------------------------------------------------------------------------------- data


def _inputs(x: Any) -> tuple[str, Any]:
    """('image', uint8 NHWC) | ('text', list of str) | ('tabular', finite float rows)."""
    if isinstance(x, list) or (isinstance(x, np.ndarray) and x.dtype == object):
        texts = [str(v) if v is not None else "" for v in (x.tolist() if isinstance(x, np.ndarray) else x)]
        if not texts:
            raise ValueError("the dataset has no texts")
        return TEXT, texts
    arr = np.asarray(x)
    if arr.dtype == np.uint8 and arr.ndim in (3, 4):
        return IMAGE, arr[..., None] if arr.ndim == 3 else arr
    if arr.ndim != 2 or arr.dtype.kind not in "biuf" or not np.isfinite(arr).all():
        raise ValueError("transfer takes images, texts, or a finite numeric table")
    return TABULAR, arr.astype(np.float64, copy=False)


def _stored(kind: str, data: Any, input_cfg: dict[str, Any], tokens: Tokens | None) -> Tensor:
    """What the batches index: uint8 NCHW images, standardised rows, or token ids + mask."""
    if kind == IMAGE:
        return torch.from_numpy(to_nchw(data))
    if kind == TEXT:
        assert tokens is not None
        return torch.from_numpy(tokens(data))
    prep = Prep(kind=TABULAR, shape=(int(input_cfg["shape"][0]),),
                mean=tuple(input_cfg["mean"]), std=tuple(input_cfg["std"]))
    return torch.from_numpy(standardize_rows(data, prep))


def _in_chunks(net: TransferNet, fn: Any, inputs: Tensor, device: torch.device) -> list[Tensor]:
    """fn over inputs in chunks (eval mode, no grad), each result as float32 on the CPU."""
    net.eval()
    with torch.inference_mode():
        return [fn(inputs[i:i + CHUNK].to(device)).float().cpu()
                for i in range(0, len(inputs), CHUNK)]


def features(net: TransferNet, stored: Tensor, device: torch.device) -> Tensor:
    """Backbone features of every stored row, on the CPU."""
    # clone(): a normal tensor, since inference tensors cannot be trained on.
    return torch.cat(_in_chunks(net, net.features, stored, device)).clone()


def logits(net: TransferNet, inputs: Tensor, device: torch.device, *, head_only: bool
           ) -> np.ndarray:
    """Head outputs for stored inputs (or cached features), as numpy."""
    parts = _in_chunks(net, net.head if head_only else net, inputs, device)
    return torch.cat(parts).numpy() if parts else np.zeros((0, 1), dtype=np.float32)
