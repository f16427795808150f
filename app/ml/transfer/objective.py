"""What a transfer job minimises: cross-entropy (optionally class-weighted) or MSE, plus the
L2-SP penalty, with the head and the backbone's trainable blocks at their own learning rates."""

from __future__ import annotations

import functools
import operator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from app.ml.deep.runtime import Objective, Runtime, make_optimizer
from app.ml.transfer.nets import Augment, TransferNet
from app.ml.transfer.params import TransferParams


class TransferObjective(Objective):
    """Cross-entropy (optionally class-weighted) or MSE, plus the L2-SP penalty; the head at
    learning_rate, the backbone's trainable blocks at learning_rate * backbone_lr_mult."""

    def __init__(self, net: TransferNet, rt: Runtime, p: TransferParams, task: dict[str, Any],
                 moving: list[nn.Parameter], *, cached: bool, augment: bool,
                 class_counts: np.ndarray | None) -> None:
        self.module, self.net, self.rt, self.p = net, net, rt, p
        self.cached = cached
        self.augment = Augment(p, rt) if augment and not cached else None
        lr = p.learning_rate
        assert lr is not None  # params.resolve filled in every null (auto) param
        groups: list[dict[str, Any]] = [{"params": list(net.head.parameters()),
                                         "lr": lr, "weight_decay": p.weight_decay}]
        if moving:
            groups.append({"params": moving, "lr": lr * p.backbone_lr_mult,
                           "weight_decay": 0.0 if p.l2sp else p.weight_decay})
        self.optimizer = make_optimizer(groups, p)
        self.optimizers = {"model": self.optimizer}
        # theta_0: the pretrained values of every weight that may move.
        self.anchors = [(q, q.detach().clone()) for q in moving] if p.l2sp else []
        self.regression = task["head"] == "regression"
        self.weight = _class_weights(p, task, class_counts, rt.device)

    def _out(self, xb: Tensor, *, training: bool) -> Tensor:
        if self.cached:
            head: Tensor = self.net.head(xb)
            return head
        out: Tensor = self.net(xb, self.augment if training else None)
        return out

    def _loss(self, out: Tensor, yb: Tensor) -> Tensor:
        if self.regression:
            return F.mse_loss(out[:, 0].float(), yb.float())
        return F.cross_entropy(out.float(), yb, weight=self.weight)

    def penalty(self) -> Tensor:
        """lambda * sum ||theta - theta_0||^2 over the trainable backbone weights."""
        # Added in order, as sum() would, without its leading integer 0.
        total = functools.reduce(operator.add, [((q - q0) ** 2).sum() for q, q0 in self.anchors])
        penalty: Tensor = self.p.l2sp * total
        return penalty

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
        total.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is unannotated
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
        w = np.array([float(p.class_weight.get(c, 1.0)) for c in classes])
    return torch.tensor(w, dtype=torch.float32, device=device)
