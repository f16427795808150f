"""Architecture and optimisation knobs: each does what it says, checked against torch, and
models saved before a knob existed still load and answer as they did."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import make_classification

from app.ml import registry
from app.ml.base import FitInput
from app.ml.deep.runtime import lr_scale, make_optimizer
from tests.ml.test_deep import Recorder

AE = registry.get("autoencoder")


def table(n: int = 96) -> np.ndarray:
    x, _ = make_classification(n_samples=n, n_features=6, random_state=0)
    return x


def fit_ae(**params):
    rec = Recorder()
    p = {"epochs": 4, "hidden_dims": [8], "latent_dim": 3, "validation_fraction": 0, **params}
    return AE.fit(FitInput(table()), AE.own(p), rec), rec


# ---- learning-rate schedule and optimizer ------------------------------------------------


def test_cosine_schedule_equals_torch_cosine_annealing():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=12)
    for step in range(12):
        assert 0.1 * lr_scale(step, 12, 0, "cosine") == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()


def test_job_history_follows_warmup_then_cosine():
    # 96 rows in one batch: one step per epoch, so each epoch's lr is that step's.
    _, rec = fit_ae(epochs=6, batch_size=96, learning_rate=0.01, schedule="cosine",
                    warmup_epochs=2)
    lrs = [e["lr"] for e in rec.history]
    expect = [0.005, 0.01] + [0.01 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert lrs == pytest.approx(expect)


def test_constant_schedule_keeps_the_rate():
    _, rec = fit_ae(learning_rate=0.002)
    assert [e["lr"] for e in rec.history] == [0.002] * 4


@pytest.mark.parametrize("name, cls", [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam),
                                       ("sgd", torch.optim.SGD)])
def test_optimizer_param_picks_the_torch_optimizer(name, cls):
    p = AE.own({"optimizer": name, "learning_rate": 0.05, "weight_decay": 0.01, "momentum": 0.8})
    opt = make_optimizer([torch.zeros(2, requires_grad=True)], p)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.05 and group["weight_decay"] == 0.01
    if name == "sgd":
        assert group["momentum"] == 0.8


def test_sgd_job_equals_a_bare_torch_sgd_loop():
    x = table()
    model, _ = fit_ae(optimizer="sgd", momentum=0.9, learning_rate=0.05, batch_size=96,
                      epochs=3, standardize=False)
    torch.manual_seed(0)
    ref = type(model.net)(model.config["architecture"], model.prep)  # the same initial weights
    opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    xt = torch.tensor(x, dtype=torch.float32)
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(ref(xt), xt).backward()
        opt.step()
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(model.net.state_dict()[k], v)


def test_default_optimizer_is_adamw_without_decay():
    p = AE.own({})
    assert (p.optimizer, p.weight_decay, p.schedule, p.warmup_epochs) == ("adamw", 0, "constant", 0)


# ---- MLP layers ------------------------------------------------------------------------


@pytest.mark.parametrize("act, fn", [("relu", F.relu), ("gelu", F.gelu), ("silu", F.silu)])
def test_activation_is_the_one_asked_for(act, fn):
    model, _ = fit_ae(activation=act, epochs=1)
    x = table()[:5]
    enc = model.net.encoder
    lin, out = enc.trunk[0], enc.out
    prep = model.prep
    xs = torch.tensor((x - np.array(prep.mean)) / np.array(prep.std), dtype=torch.float32)
    expect = out(fn(lin(xs))).detach().numpy()
    np.testing.assert_allclose(model.embed(x), expect, rtol=1e-5, atol=1e-6)


def test_dropout_acts_while_training_only():
    model, _ = fit_ae(dropout=0.5, epochs=1)
    drops = [m for m in model.net.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and all(m.p == 0.5 for m in drops)
    x = torch.tensor(table()[:16], dtype=torch.float32)
    enc = model.net.encoder
    enc.train()
    assert not torch.equal(enc(x), enc(x))
    enc.eval()
    assert torch.equal(enc(x), enc(x))


def test_batch_norm_layers_learn_running_statistics():
    model, _ = fit_ae(batch_norm=True, epochs=2)
    norms = [m for m in model.net.encoder.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) == 1 and int(norms[0].num_batches_tracked) > 0
    assert not torch.equal(norms[0].running_mean, torch.zeros(8))


def test_defaults_build_the_same_network_as_before_the_knobs(tmp_path):
    model, _ = fit_ae(epochs=1)
    assert not any(isinstance(m, (torch.nn.Dropout, torch.nn.BatchNorm1d, torch.nn.GELU))
                   for m in model.net.modules())
    model.save(tmp_path)
    # A model saved before the knobs existed: its architecture has none of their keys.
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("activation", "dropout", "batch_norm"):
        config["architecture"].pop(key)
    for key in ("activation", "dropout", "batch_norm", "optimizer", "momentum", "schedule",
                "warmup_epochs"):
        config["params"].pop(key, None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    old = registry.load_trained("autoencoder", Path(tmp_path))
    x = table()[:7]
    np.testing.assert_array_equal(old.embed(x), model.embed(x))


# ---- image augmentation ----------------------------------------------------------------


def augment(monkeypatch, **params) -> torch.Tensor:
    """An 8x8 ramp image through Augment, every random draw at its maximum (uniform 1)."""
    from app.ml.deep.runtime import Runtime
    from app.ml.transfer.nets import Augment

    rt = Runtime(torch.device("cpu"), 0)
    monkeypatch.setattr(rt, "rand", lambda *shape: torch.ones(shape))
    p = registry.get("transfer").own({"backbone": "resnet18", **params})
    return Augment(p, rt)(ramp())


def ramp() -> torch.Tensor:
    return (torch.arange(64, dtype=torch.float32) / 63).view(1, 1, 8, 8)


def test_shear_is_keras_shear_matrix(monkeypatch):
    out = augment(monkeypatch, shear_range=20)
    s = math.radians(20)
    theta = torch.tensor([[[1.0, -math.sin(s), 0.0], [0.0, math.cos(s), 0.0]]])
    grid = F.affine_grid(theta, [1, 1, 8, 8], align_corners=False)
    expect = F.grid_sample(ramp(), grid, padding_mode="border", align_corners=False)
    torch.testing.assert_close(out, expect)
    assert not torch.equal(out, ramp())


def test_brightness_range_scales_and_clips(monkeypatch):
    torch.testing.assert_close(augment(monkeypatch, brightness_range=[0.5, 0.5]), ramp() * 0.5)
    torch.testing.assert_close(augment(monkeypatch, brightness_range=[1.0, 2.0]),
                               (ramp() * 2).clamp(0, 1))
    with pytest.raises(ValueError, match="low must not exceed high"):
        registry.get("transfer").own({"backbone": "resnet18", "brightness_range": [2, 1]})


@pytest.mark.parametrize("mode", ["nearest", "constant", "reflect", "wrap"])
def test_fill_mode_fills_what_a_shift_moves_in(monkeypatch, mode):
    # width_shift_range 0.25 at its maximum: the image moves 2 of 8 pixels left.
    out = augment(monkeypatch, width_shift_range=0.25, fill_mode=mode)[0, 0]
    x = ramp()[0, 0]
    torch.testing.assert_close(out[:, :6], x[:, 2:])
    fill = {"nearest": x[:, 7:].expand(8, 2), "constant": torch.zeros(8, 2),
            "reflect": x[:, [7, 6]], "wrap": x[:, :2]}[mode]
    torch.testing.assert_close(out[:, 6:], fill)


def test_default_augmentation_is_off():
    p = registry.get("transfer").own({"backbone": "resnet18"})
    assert not p.augments and p.fill_mode == "nearest" and p.brightness_range is None


# ---- torchvision feature layers -------------------------------------------------------


def test_vgg_pool_features_are_the_averaged_last_convolution():
    from app.ml.transfer.nets import TorchvisionBackbone

    torch.manual_seed(0)
    backbone = TorchvisionBackbone("vgg16", feature_layer="pool").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = backbone(x)
        expect = F.adaptive_avg_pool2d(backbone.net.features(x), 1).flatten(1)
    assert out.shape == (2, 512) and backbone.features_dim == 512
    torch.testing.assert_close(out, expect)


@pytest.mark.parametrize("layer, dim", [(None, 576), ("pool", 576), ("penultimate", 1024)])
def test_mobilenet_feature_layers_against_torchvision(layer, dim):
    import torchvision.models as tvm

    from app.ml.transfer.nets import named_backbone

    spec = {"source": "torchvision", "name": "mobilenet_v3_small",
            "image": {"size": [64, 64], "channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3}}
    if layer is not None:  # without the key: a model saved before feature_layer existed
        spec["feature_layer"] = layer
    backbone, _ = named_backbone(spec)
    ref = tvm.mobilenet_v3_small(weights=None)
    ref.load_state_dict(backbone.net.state_dict(), strict=False)
    ref.eval(), backbone.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        pooled = ref.avgpool(ref.features(x)).flatten(1)
        expect = pooled if dim == 576 else ref.classifier[:-1](pooled)
        out = backbone(x)
    assert out.shape == (2, dim) and backbone.features_dim == dim
    torch.testing.assert_close(out, expect)


def test_feature_layer_is_refused_for_backbones_without_one():
    algo = registry.get("transfer")
    p = algo.own({"backbone": "model:mdl_x", "feature_layer": "pool"})
    assert [f for f, _ in algo.check_fit(p, n_rows=50, n_features=4)] == ["feature_layer"]
    assert algo.check_fit(algo.own({"backbone": "vgg16", "feature_layer": "pool"}),
                          n_rows=50, n_features=4) == []
