"""The VAE's likelihoods, KL, warm-up and free bits compute what they say (checked against
torch.distributions), and models saved before the likelihood was a param answer as before."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.distributions import Bernoulli, Normal, kl_divergence

from app.ml import registry
from app.ml.base import FitInput, NullReport
from app.ml.deep import vae
from app.ml.deep.preprocess import fit_prep

QUICK = {"epochs": 2, "batch_size": 64, "hidden_dims": [16], "base_channels": 4,
         "latent_dim": 3}


def images(n: int = 64) -> np.ndarray:
    return (load_digits().images[:n] * 255 / 16).astype(np.uint8)[..., None]


def net(likelihood: str, kind: str = "image") -> tuple[vae.VAENet, object]:
    x = images() if kind == "image" else load_digits().data[:64]
    prep = fit_prep(kind, x, standardize=True)
    torch.manual_seed(0)
    arch = {"latent_dim": 3, "hidden_dims": [16], "base_channels": 4, "likelihood": likelihood}
    return vae.build(arch, prep), prep


def model_space(prep, n: int = 8) -> torch.Tensor:
    from app.ml.deep.nets import Normalize, images_to_model_space
    from app.ml.deep.preprocess import to_nchw

    return images_to_model_space(torch.from_numpy(to_nchw(images(n))), Normalize(prep))


def test_bernoulli_likelihood_is_the_bernoulli_log_prob_of_the_pixels():
    v, prep = net("bernoulli")
    x = model_space(prep)
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        recon, nll = v.reconstruct(x, z)
        logits = v.decoder.logits(z)
    pixels = torch.from_numpy(images(8)).permute(0, 3, 1, 2).float() / 255
    ref = -Bernoulli(logits=logits, validate_args=False).log_prob(pixels).flatten(1).sum(1)
    torch.testing.assert_close(nll, ref, rtol=1e-5, atol=1e-4)
    # The mean it answers with is sigmoid(logits), in model space like the input.
    torch.testing.assert_close(v.decoder.net[-1].inverse(recon), torch.sigmoid(logits),
                               rtol=1e-5, atol=1e-6)


def test_learned_gaussian_is_the_normal_log_prob_with_the_learned_scale():
    v, prep = net("learned_gaussian", kind="tabular")
    with torch.no_grad():
        v.log_sigma.fill_(-0.7)
    x = torch.from_numpy(((load_digits().data[:8] - np.array(prep.mean)) / np.array(prep.std))
                         .astype(np.float32))
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        recon, nll = v.reconstruct(x, z)
        out = v.predict(x)
    ref = -Normal(recon, math.exp(-0.7)).log_prob(x).sum(1)
    # reconstruct() leaves out the constant D/2 log 2π; predict's negative ELBO has it.
    torch.testing.assert_close(nll + 64 * vae.HALF_LOG_2PI, ref, rtol=1e-5, atol=1e-3)
    mu, logvar = v.posterior(x)
    r0, _ = v.reconstruct(x, mu)
    kl = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(1)
    ref_elbo = -Normal(r0, math.exp(-0.7)).log_prob(x).sum(1) + kl
    torch.testing.assert_close(out["negative_elbo"], ref_elbo.detach(), rtol=1e-5, atol=1e-3)


def test_kl_per_dimension_equals_torch_distributions():
    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    ref = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0))
    torch.testing.assert_close(vae.kl_per_dim(mu, logvar), ref, rtol=1e-5, atol=1e-6)


def test_kl_warmup_ramps_to_beta_and_free_bits_floor_each_dimension():
    assert [vae.kl_weight(2.0, e, 4) for e in (1, 2, 4, 9)] == [0.5, 1.0, 2.0, 2.0]
    assert vae.kl_weight(0.5, 1, 0) == 0.5
    kl = torch.tensor([[0.1, 2.0, 0.0], [0.3, 1.0, 0.0]])  # batch means 0.2, 1.5, 0
    assert float(vae.free_bits_kl(kl, 0.5)) == pytest.approx(0.5 + 1.5 + 0.5)
    assert float(vae.free_bits_kl(kl, 0.0)) == pytest.approx(0.2 + 1.5)


def test_warmup_weighs_the_kl_of_each_epoch_and_val_loss_uses_full_beta():
    algo = registry.get("vae")
    p = algo.own({**QUICK, "beta": 2.0, "kl_warmup_epochs": 4, "free_bits": 0.0})
    v, prep = net("bernoulli")
    from app.ml.deep.runtime import Runtime

    obj = vae.objective(v, Runtime(torch.device("cpu"), 0), p, prep)
    x = model_space(prep)
    mu, logvar = v.posterior(x)
    _, nll = v.reconstruct(x, mu)
    kl = vae.kl_per_dim(mu, logvar).sum(1).mean()
    with torch.no_grad():
        obj.begin_epoch(2)
        assert obj.weight == 1.0
        torch.testing.assert_close(obj.loss(x, training=False), nll.mean() + 2.0 * kl)


def test_a_vae_saved_without_the_new_params_loads_and_answers_as_the_unit_gaussian(tmp_path):
    algo = registry.get("vae")
    x = images(128)
    model = algo.fit(FitInput(x), algo.own({**QUICK, "likelihood": "gaussian"}), NullReport())
    model.save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["architecture"]["likelihood"]  # what models saved before the param hold
    for key in ("likelihood", "kl_warmup_epochs", "free_bits"):
        del config["params"][key]
    (tmp_path / "config.json").write_text(json.dumps(config))
    old = registry.load_trained("vae", tmp_path)
    assert old.net.likelihood == "gaussian"
    a, b = model.predict(x[:16]), old.predict(x[:16])
    assert a["predictions"] == b["predictions"]
    np.testing.assert_allclose(a["negative_elbo"], b["negative_elbo"], rtol=1e-6)
    assert model.generate(4, seed=1) == old.generate(4, seed=1)


def test_auto_is_learned_for_images_gaussian_for_rows_and_bernoulli_refuses_rows():
    assert net("auto")[0].likelihood == "learned_gaussian"
    assert net("auto", kind="tabular")[0].likelihood == "gaussian"
    with pytest.raises(ValueError, match="image"):
        net("bernoulli", kind="tabular")
