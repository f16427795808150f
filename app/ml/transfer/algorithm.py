"""The `transfer` catalogue entry: metadata and checks (torch comes in with fit)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from app.ml.base import EMBED, PREDICT, Algorithm, FitInput, Params, Report
from app.ml.deep.params import validation_rows
from app.ml.transfer.backbones import ARCHITECTURES, Architecture
from app.ml.transfer.model import TransferModel
from app.ml.transfer.params import TransferParams

FAMILY = "transfer"
NO_ARCH = Architecture("", "", "", 0)


class TransferAlgorithm(Algorithm):
    """transfer: a pretrained backbone plus a new head, trained on a labelled set."""

    name: ClassVar[str] = "transfer"
    family: ClassVar[str] = FAMILY
    data_kinds: ClassVar[tuple[str, ...]] = ("image", "text", "tabular")
    capabilities: ClassVar[tuple[str, ...]] = (PREDICT, EMBED)
    needs_target: ClassVar[bool] = True
    description: ClassVar[str] = (
        "Transfer learning (PyTorch): a pretrained backbone (a model trained here, a "
        "torchvision architecture with local weights, or MiniLM for text) and a new head, "
        "trained on a small labelled set. freeze picks what moves (head only, the last N "
        "blocks, or everything), backbone_lr_mult gives the backbone its own learning rate, "
        "l2sp pulls the weights toward the pretrained ones. Left null, epochs, batch_size, "
        "learning_rate and validation_fraction are chosen by the data (metrics.resolved_params "
        "says how). Metrics on a stratified held-out split (the training rows for a small "
        "labelled set, eval_split 'train'): accuracy, macro-F1, per-class precision/recall "
        "and the confusion matrix (classification); RMSE, MAE, R^2 (regression). predict gives the class names and "
        "probabilities (or values); embed gives the backbone's features.")
    params_model: ClassVar[type[TransferParams]] = TransferParams
    sweep_metrics: ClassVar[tuple[str, ...]] = (
        "val_loss", "loss", "best_val_loss", "final_loss", "accuracy", "macro_f1", "log_loss",
        "train_accuracy", "rmse", "mae", "r2", "train_rmse", "train_mae", "train_r2")
    trained_cls: ClassVar[type[TransferModel]] = TransferModel
    queue: ClassVar[str] = "gpu"

    def check_fit(self, params: Params, *, n_rows: int, n_features: int) -> list[tuple[str, str]]:
        """Problems that make params unfit for data of this shape, as (param, reason) pairs."""
        p = self.own(params)
        found = []
        # null (auto) never leaves no rows to train on, and holds rows out for early stopping.
        n_val = validation_rows(n_rows, p.validation_fraction or 0.0)
        if n_rows < 2:
            found.append(("dataset", f"transfer needs at least 2 labelled rows, got {n_rows}"))
        elif n_rows - n_val < 1:
            found.append(("validation_fraction", "leaves no rows to train on; lower it"))
        if p.l2sp and not p.pretrained:
            found.append(("l2sp", ("L2-SP pulls weights toward pretrained ones; with "
                                   "pretrained=false there are none (use weight_decay)")))
        if p.l2sp and p.freeze in ("backbone", 0):
            found.append(("l2sp", ("has no effect while the backbone is frozen; set freeze to "
                                   "'none' or a number of blocks")))
        if p.early_stopping_patience and p.validation_fraction is not None and n_val == 0:
            found.append(("early_stopping_patience", (
                "early stopping needs held-out rows; raise validation_fraction or set the "
                "patience to 0")))
        if p.feature_layer and ARCHITECTURES.get(p.backbone, NO_ARCH).source != "torchvision":
            found.append(("feature_layer", "applies to torchvision backbones only ("
                          + ", ".join(a.name for a in ARCHITECTURES.values()
                                      if a.source == "torchvision") + ")"))
        if isinstance(p.class_weight, dict) and p.head == "regression":
            found.append(("class_weight", "applies to classification heads only"))
        return found

    def backbone_of(self, params: Params) -> tuple[str, bool] | None:
        """The backbone the job asked for: (spec, pretrained)."""
        p = self.own(params)
        return p.backbone, p.pretrained

    def fit(self, data: FitInput, params: Params, report: Report) -> TransferModel:
        """Train a head (and as much of the backbone as freeze allows) on data.x with
        data.labels (class names, or numbers for regression) on the resolved data.backbone."""
        from app.ml.deep.runtime import load_checkpoint
        from app.ml.transfer.training import fit_transfer

        if data.backbone is None:
            raise ValueError("transfer needs a resolved backbone")
        if data.labels is None:
            raise ValueError("transfer needs labels: class folders (images) or a target column")
        state = load_checkpoint(data.resume_from) if data.resume_from is not None else None
        return fit_transfer(data.x, np.asarray(data.labels), self.own(params), report,
                            data.backbone, resume_from=state)
