"""fit() of transfer: labels, a stratified split, the backbone, freezing, L2-SP, the loop, metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from app.data.text import label_name
from app.ml.base import Report
from app.ml.deep.model import read_config
from app.ml.deep.params import validation_rows
from app.ml.deep.preprocess import IMAGE, TABULAR, Prep, standardize_rows, to_nchw
from app.ml.deep.runtime import (
    Batches,
    LoopConfig,
    Objective,
    Runtime,
    make_optimizer,
    resolve_device,
    train_loop,
)
from app.ml.transfer.backbones import ARCHITECTURES, BackboneRef
from app.ml.transfer.model import TEXT, TOKENIZER_FILE, Tokens, TransferModel
from app.ml.transfer.nets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augment,
    ImageInput,
    TransferNet,
    build_backbone,
    pretrained_backbone,
)
from app.ml.scores import on_training_rows
from app.ml.transfer.baseline import baseline_metrics
from app.ml.transfer.params import TransferParams, resolve

CHUNK = 256
# The params whose null default the data decides (params.resolve), reported in the metrics.
RESOLVED = ("epochs", "batch_size", "learning_rate", "validation_fraction")


def fit_transfer(x: Any, y: np.ndarray, p: TransferParams, report: Report, ref: BackboneRef, *,
                 resume_from: dict[str, Any] | None = None) -> TransferModel:
    """Train a head on ref's backbone with labels y; the model comes back on CPU."""
    kind, data = _inputs(x)
    if kind != ref.data_kind:
        raise ValueError(f"backbone {ref.spec} reads {ref.data_kind} data; this dataset is {kind}")
    task, targets = _targets(y, p, len(data))
    counts = np.bincount(targets).tolist() if task["head"] == "classification" else None
    p = resolve(p, n_rows=len(data), class_counts=counts)
    train_idx, val_idx = split(targets, task, p)
    device = resolve_device(p.device)
    report.check()
    spec, input_cfg, tokens = _spec(ref, p, kind, data)
    torch.manual_seed(p.seed)  # the head's (and a from-scratch backbone's) initial weights
    backbone = pretrained_backbone(ref, spec) if ref.pretrained else build_backbone(spec)[0]
    image_input = ImageInput(spec["image"]) if kind == IMAGE else None
    head_spec = {"hidden_dims": list(p.head_hidden_dims), "dropout": p.dropout,
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
    train = Batches(inputs[train_idx], rt, p.batch_size, shuffle=True, targets=t[train_idx],
                    min_batch=min_batch, shard=True)
    val = (Batches(inputs[val_idx], rt, p.batch_size, shuffle=False, targets=t[val_idx])
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
    config = {"algorithm": "transfer", "params": p.model_dump(mode="json"), "task": task,
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
    metrics.update(_scores(task, out, targets, eval_idx, kind, data, train_idx))
    if task["head"] == "classification" and len(val_idx):
        train_out = logits(net, inputs[train_idx], device, head_only=cached)
        metrics["train_accuracy"] = float((train_out.argmax(1) == targets[train_idx]).mean())
    model.metrics = metrics
    model.to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    report.progress(1.0)
    return model


# ---------------------------------------------------------------------------- data, labels


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


def _targets(y: np.ndarray, p: TransferParams, n: int) -> tuple[dict[str, Any], np.ndarray]:
    """The task (head, classes or target scale) and the targets the loss reads."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"labels must be one per row: got shape {y.shape} for {n} rows")
    missing = [i for i, v in enumerate(y.tolist()) if v is None or (isinstance(v, float) and np.isnan(v))]
    if missing:
        raise ValueError(f"{len(missing)} rows have no label (the first is row {missing[0] + 1}); "
                         "fill them in or drop them")
    if p.head == "regression":
        try:
            values = y.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError("a regression head needs a numeric target; the labels are not "
                             "numbers") from exc
        if not np.isfinite(values).all():
            raise ValueError("the regression target holds non-finite values")
        mean, std = float(values.mean()), float(values.std()) or 1.0
        return ({"head": "regression", "target_mean": mean, "target_std": std},
                ((values - mean) / std).astype(np.float32))
    names = np.array([label_name(v) for v in y.tolist()], dtype=object)
    classes = sorted(set(names.tolist()), key=_class_order)
    if len(classes) < 2:
        raise ValueError(f"classification needs at least 2 classes; the labels hold {len(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    # predict answers with the labels as they were (1, not "1"); names key the metrics.
    values = {}
    for name, v in zip(names.tolist(), y.tolist(), strict=True):
        values.setdefault(name, v.item() if isinstance(v, np.generic) else v)
    if isinstance(p.class_weight, dict):
        unknown = sorted(set(p.class_weight) - set(classes))
        if unknown:
            raise ValueError(f"class_weight names classes the labels do not have: "
                             f"{', '.join(unknown)} (classes: {', '.join(classes)})")
    return ({"head": "classification", "classes": classes,
             "class_values": [values[c] for c in classes]},
            np.array([index[c] for c in names], dtype=np.int64))


def _class_order(name: str) -> tuple[int, float, str]:
    # Numeric class names in numeric order (2 before 10), then the rest alphabetically.
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def split(targets: np.ndarray, task: dict[str, Any], p: TransferParams
          ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, held-out) row indices; stratified by class whenever every class can
    give a row to each side."""
    from sklearn.model_selection import train_test_split

    n = len(targets)
    n_val = validation_rows(n, p.validation_fraction or 0.0)
    idx = np.arange(n)
    if n_val == 0:
        return idx, idx[:0]
    stratify = None
    if task["head"] == "classification":
        counts = np.bincount(targets)
        k = int((counts > 0).sum())
        if counts[counts > 0].min() >= 2 and k <= n_val <= n - k:
            stratify = targets
    train, val = train_test_split(idx, test_size=n_val, random_state=p.seed, stratify=stratify)
    return np.sort(train), np.sort(val)


# ------------------------------------------------------------------------------ backbone


def _spec(ref: BackboneRef, p: TransferParams, kind: str, data: Any
          ) -> tuple[dict[str, Any], dict[str, Any], Tokens | None]:
    """The backbone spec (what config.json records to rebuild it), the input config, and the
    tokenizer of text models."""
    if ref.source == "torchvision":
        size = p.image_size or ARCHITECTURES[ref.name].input_size or 224
        image = {"size": [size, size], "channels": 3, "mean": list(IMAGENET_MEAN),
                 "std": list(IMAGENET_STD)}
        return ({"source": "torchvision", "name": ref.name, "image": image,
                 "feature_layer": p.feature_layer or ARCHITECTURES[ref.name].feature_layer},
                {"kind": IMAGE, "shape": list(data.shape[1:])}, None)
    folder = Path(str(ref.path))
    if ref.source == "minilm":
        bert = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        tokens = Tokens(folder / TOKENIZER_FILE, p.max_length)
        return ({"source": "minilm", "name": ref.name, "bert": bert},
                {"kind": TEXT, "max_length": p.max_length}, tokens)
    source = read_config(folder)
    source.pop("metrics", None)  # the spec rebuilds the network; the scores stay with the model
    spec: dict[str, Any] = {"source": "model", "name": ref.name, "model_config": source,
                            "image": None}
    if source["algorithm"] == "transfer":
        inner_input = source["input"]
        if kind == TEXT:
            return spec, {"kind": TEXT, "max_length": p.max_length}, Tokens(
                folder / TOKENIZER_FILE, p.max_length)
        if kind == IMAGE:
            spec["image"] = source["backbone"]["image"]
            return spec, {"kind": IMAGE, "shape": list(data.shape[1:])}, None
        _check_width(inner_input["shape"][0], data.shape[1], ref)
        return spec, {**inner_input}, None
    prep = Prep.from_json(source["preprocessing"])
    if kind == IMAGE:
        h, w, c = prep.shape
        if p.image_size and (p.image_size, p.image_size) != (h, w):
            raise ValueError(f"backbone {ref.spec} was trained on {h}x{w} images; its network "
                             f"takes only that size, not image_size={p.image_size}")
        spec["image"] = {"size": [h, w], "channels": c, "mean": list(prep.mean),
                         "std": list(prep.std)}
        return spec, {"kind": IMAGE, "shape": list(data.shape[1:])}, None
    _check_width(prep.shape[0], data.shape[1], ref)
    return spec, {"kind": TABULAR, "shape": [prep.shape[0]], "mean": list(prep.mean),
                  "std": list(prep.std)}, None


def _check_width(expected: int, got: int, ref: BackboneRef) -> None:
    if int(expected) != int(got):
        raise ValueError(f"backbone {ref.spec} takes rows of {expected} features; the job's "
                         f"features are {got}")


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


# ----------------------------------------------------------------------------- objective


class TransferObjective(Objective):
    """Cross-entropy (optionally class-weighted) or MSE, plus the L2-SP penalty; the head at
    learning_rate, the backbone's trainable blocks at learning_rate * backbone_lr_mult."""

    def __init__(self, net: TransferNet, rt: Runtime, p: TransferParams, task: dict[str, Any],
                 moving: list[nn.Parameter], *, cached: bool, augment: bool,
                 class_counts: np.ndarray | None) -> None:
        self.module, self.net, self.rt, self.p = net, net, rt, p
        self.cached = cached
        self.augment = Augment(p, rt) if augment and not cached else None
        groups: list[dict[str, Any]] = [{"params": list(net.head.parameters()),
                                         "lr": p.learning_rate, "weight_decay": p.weight_decay}]
        if moving:
            groups.append({"params": moving, "lr": p.learning_rate * p.backbone_lr_mult,
                           "weight_decay": 0.0 if p.l2sp else p.weight_decay})
        self.optimizer = make_optimizer(groups, p)
        self.optimizers = {"model": self.optimizer}
        # theta_0: the pretrained values of every weight that may move.
        self.anchors = [(q, q.detach().clone()) for q in moving] if p.l2sp else []
        self.regression = task["head"] == "regression"
        self.weight = _class_weights(p, task, class_counts, rt.device)

    def _out(self, xb: Tensor, *, training: bool) -> Tensor:
        if self.cached:
            return self.net.head(xb)  # type: ignore[no-any-return]
        return self.net(xb, self.augment if training else None)  # type: ignore[no-any-return]

    def _loss(self, out: Tensor, yb: Tensor) -> Tensor:
        if self.regression:
            return F.mse_loss(out[:, 0].float(), yb.float())
        return F.cross_entropy(out.float(), yb, weight=self.weight)

    def penalty(self) -> Tensor:
        """lambda * sum ||theta - theta_0||^2 over the trainable backbone weights."""
        total = sum(((q - q0) ** 2).sum() for q, q0 in self.anchors)
        return self.p.l2sp * total  # type: ignore[return-value]

    def train_step(self, xb: Any) -> dict[str, Tensor]:
        inputs, yb = xb
        self.optimizer.zero_grad(set_to_none=True)
        with self.rt.autocast():
            out = self._out(inputs, training=True)
        loss = self._loss(out, yb)
        total = loss
        losses = {"loss": loss.detach()}
        if self.anchors:
            pen = self.penalty()
            total = loss + pen
            losses["l2sp_penalty"] = pen.detach()
        total.backward()
        self.rt.average_gradients(self.net)
        self.optimizer.step()
        return losses

    def val_loss(self, xb: Any) -> Tensor:
        inputs, yb = xb
        with self.rt.autocast():
            out = self._out(inputs, training=False)
        return self._loss(out, yb)


def _class_weights(p: TransferParams, task: dict[str, Any], counts: np.ndarray | None,
                   device: torch.device) -> Tensor | None:
    if task["head"] != "classification" or p.class_weight == "none" or counts is None:
        return None
    classes = task["classes"]
    if p.class_weight == "balanced":  # sklearn's rule: n / (k * count)
        safe = np.maximum(counts, 1)
        w = counts.sum() / (len(classes) * safe)
    else:
        w = np.array([float(p.class_weight.get(c, 1.0)) for c in classes])  # type: ignore[union-attr]
    return torch.tensor(w, dtype=torch.float32, device=device)


# ------------------------------------------------------------------------------- metrics


def _scores(task: dict[str, Any], out: np.ndarray, targets: np.ndarray, eval_idx: np.ndarray,
            kind: str, data: Any, train_idx: np.ndarray) -> dict[str, Any]:
    """The model's scores and the raw-input baseline's, on the same rows; measured on the
    training rows (no validation split) they are named train_*."""
    scores = evaluate(task, out, targets[eval_idx])
    scores.update(baseline_metrics(kind, data, targets, task, train_idx, eval_idx))
    if "baseline_accuracy" in scores:
        scores["gain_over_baseline"] = scores["accuracy"] - scores["baseline_accuracy"]
    if len(eval_idx) and np.array_equal(eval_idx, train_idx):
        classes = scores.pop("classes", None)
        scores = on_training_rows(scores)
        if classes is not None:
            scores["classes"] = classes
    return scores


def evaluate(task: dict[str, Any], out: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """Classification: accuracy, macro-F1, per-class precision/recall/F1/support and the
    confusion matrix (rows: true class); regression: RMSE, MAE, R^2 in the target's units."""
    from sklearn import metrics as skm

    if task["head"] == "regression":
        scale, shift = task["target_std"], task["target_mean"]
        pred = out[:, 0].astype(np.float64) * scale + shift
        true = targets.astype(np.float64) * scale + shift
        r2 = float(skm.r2_score(true, pred)) if len(true) > 1 else None
        return {"rmse": float(np.sqrt(skm.mean_squared_error(true, pred))),
                "mae": float(skm.mean_absolute_error(true, pred)), "r2": r2}
    classes = task["classes"]
    labels = list(range(len(classes)))
    pred = out.argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        targets, pred, labels=labels, zero_division=0)
    return {
        "accuracy": float(skm.accuracy_score(targets, pred)),
        "macro_f1": float(skm.f1_score(targets, pred, labels=labels, average="macro",
                                       zero_division=0)),
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]),
                          "f1": float(f1[i]), "support": int(support[i])}
                      for i, c in enumerate(classes)},
        "confusion_matrix": skm.confusion_matrix(targets, pred, labels=labels).tolist(),
        "classes": classes,
    }
