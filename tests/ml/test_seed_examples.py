"""The seed's own examples: its single-layer dense autoencoder (sigmoid output, binary
cross-entropy) and sampling a Gaussian mixture."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from sklearn.datasets import load_digits
from sklearn.mixture import GaussianMixture

from app.ml import registry
from app.ml.base import CapabilityError, FitInput, InputError, NullReport


class Losses(NullReport):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def epoch(self, entry: dict[str, Any]) -> None:
        self.losses.append(entry["loss"])


@pytest.fixture(scope="module")
def digits01() -> np.ndarray:
    return load_digits().data[:300] / 16.0  # pixels scaled to [0, 1], as the seed's x / 255


SEED_AE = {"latent_dim": 32, "hidden_dims": [], "output_activation": "sigmoid", "loss": "bce",
           "standardize": False, "epochs": 8, "batch_size": 32, "learning_rate": 5e-3,
           "validation_fraction": 0.0}


def test_single_layer_bce_autoencoder_trains_and_answers_as_its_weights_say(digits01, tmp_path):
    report = Losses()
    model = registry.get("autoencoder").fit(FitInput(digits01), SEED_AE, report)
    assert report.losses[-1] < report.losses[0] * 0.8  # it learns
    model.save(tmp_path)
    w = load_file(str(tmp_path / "weights.safetensors"))
    # Exactly two layers, 64 -> 32 -> 64: nothing hidden besides the code.
    assert sorted(w) == ["decoder.net.0.bias", "decoder.net.0.weight",
                         "encoder.out.bias", "encoder.out.weight"]
    x = torch.from_numpy(digits01[:50].astype(np.float32))
    code = torch.relu(x @ w["encoder.out.weight"].T + w["encoder.out.bias"])
    logits = code @ w["decoder.net.0.weight"].T + w["decoder.net.0.bias"]
    recon = torch.sigmoid(logits)
    error = F.binary_cross_entropy(recon, x, reduction="none").mean(dim=1)
    back = registry.load_trained("autoencoder", tmp_path)
    answer = back.predict(digits01[:50])
    np.testing.assert_allclose(answer["predictions"], recon.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(answer["reconstruction_error"], error.numpy(), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(back.embed(digits01[:50]), code.numpy(), rtol=1e-5, atol=1e-6)
    assert model.metrics["train_reconstruction_error"] == pytest.approx(
        float(np.mean(back.predict(digits01)["reconstruction_error"])), rel=1e-5)


def test_bce_refuses_rows_outside_unit_interval_and_standardized_rows(digits01):
    algo = registry.get("autoencoder")
    with pytest.raises(ValueError, match=r"range from 0 to 16"):
        algo.fit(FitInput(digits01 * 16), SEED_AE, NullReport())
    found = algo.check_data(algo.own({**SEED_AE, "standardize": True,
                                      "output_activation": "linear"}),
                            kind="tabular", value_range=(0.0, 1.0))
    assert [f for f, _ in found] == ["loss", "loss"]
    assert "output_activation 'sigmoid'" in found[0][1] and "standardize false" in found[1][1]
    assert algo.check_data(algo.own(SEED_AE), kind="image", value_range=None) == []


def test_default_autoencoder_keeps_its_layers_and_linear_code(digits01):
    params = {"latent_dim": 4, "hidden_dims": [16], "epochs": 1}
    model = registry.get("autoencoder").fit(FitInput(digits01), params, NullReport())
    arch = model.config["architecture"]
    assert (arch["code_activation"], arch["output_activation"], arch["loss"]) == (
        False, "linear", "mse")
    assert (model.embed(digits01) < 0).any()  # a linear code takes negative values


@pytest.fixture(scope="module")
def mixture_rows() -> np.ndarray:
    rng = np.random.default_rng(0)
    a = rng.normal([100.0, -5.0], [3.0, 0.5], size=(600, 2))
    b = rng.normal([120.0, 5.0], [2.0, 1.0], size=(400, 2))
    return np.vstack([a, b])


def test_gmm_generate_is_seeded_and_in_the_data_units(mixture_rows):
    model = registry.get("gmm").fit(FitInput(mixture_rows), {"n_components": 2}, NullReport())
    first = np.asarray(model.generate(4000, 7))
    assert first.shape == (4000, 2)
    np.testing.assert_array_equal(first, model.generate(4000, 7))
    assert not np.array_equal(first, model.generate(4000, 8))
    # The mixture's mean and covariance in the data's units (the scaler undone).
    est, scaler = model.estimator, model.scaler
    means = scaler.inverse_transform(est.means_)
    mean = est.weights_ @ means
    cov = sum(w * (np.diag(scaler.scale_) @ c @ np.diag(scaler.scale_)
                   + np.outer(m - mean, m - mean))
              for w, m, c in zip(est.weights_, means, est.covariances_, strict=True))
    spread = np.sqrt(np.diag(cov))  # 4000 draws: the sample mean is within ~.016 sd
    assert (np.abs(first.mean(axis=0) - mean) < 0.06 * spread).all()
    assert (np.abs(first.mean(axis=0) - mixture_rows.mean(axis=0)) < 0.06 * spread).all()
    assert abs(first[:, 0].mean() - 108) < 1  # the data's units: not standardised values
    np.testing.assert_allclose(np.cov(first.T), cov, rtol=0.1)


def test_gmm_generate_draws_as_sklearn_sample_with_the_seed(mixture_rows):
    model = registry.get("gmm").fit(FitInput(mixture_rows), {"n_components": 2,
                                                             "standardize": False},
                                    NullReport())
    ref = GaussianMixture(n_components=2, random_state=0).fit(mixture_rows)
    ref.random_state = 11
    drawn, _ = ref.sample(50)
    ours = np.asarray(model.generate(50, 11))
    np.testing.assert_allclose(np.sort(ours, axis=0), np.sort(drawn, axis=0), rtol=1e-9)
    with pytest.raises(InputError):
        model.generate(0, 1)


def test_generate_on_a_model_that_cannot(mixture_rows):
    model = registry.get("kmeans").fit(FitInput(mixture_rows), {"n_clusters": 2}, NullReport())
    with pytest.raises(CapabilityError, match="cannot generate"):
        model.generate(2, 0)
