"""The self-supervised family on digits (rows and 8x8 images): training loop, reports,
checkpoints, save/load, answers, determinism, cancellation and input checks."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from sklearn.datasets import load_digits

from app.ml import registry
from app.ml.artifacts import UnsafeArtifact
from app.ml.base import Cancelled, CapabilityError, FitInput, InputError, NullReport, Trained
from app.ml.deep import autoencoder as ae_torch
from app.ml.deep.params import AutoencoderParams
from app.ml.deep.preprocess import fit_prep, standardize_rows
from app.ml.deep.runtime import (
    Batches,
    LoopConfig,
    Runtime,
    load_checkpoint,
    train_loop,
)

NAMES = ["autoencoder", "vae", "contrastive", "gan"]
KINDS = ["rows", "images"]
HISTORY_KEYS = {"epoch", "loss", "val_loss", "lr", "samples_per_s", "seconds"}
N = 400  # digits used by most tests: enough for kNN, quick to train
# Small nets, few epochs: the file must stay fast on two CPU cores.
QUICK: dict[str, Any] = {"epochs": 2, "batch_size": 64, "hidden_dims": [32], "base_channels": 8}
SIZES = {"autoencoder": {"latent_dim": 8}, "vae": {"latent_dim": 4},
         "contrastive": {"embedding_dim": 12, "projection_dim": 8}, "gan": {"latent_dim": 8}}
EMBED_DIM = {"autoencoder": 8, "vae": 4, "contrastive": 12, "gan": 32}


class Recorder(NullReport):
    """A Report that keeps everything it is told and writes every checkpoint offered."""

    def __init__(self, directory: Path | None = None, cancel_after: int | None = None) -> None:
        self.history: list[dict[str, Any]] = []
        self.progress_values: list[float] = []
        self.checkpoints: list[Path] = []
        self.checks = 0
        self.directory, self.cancel_after = directory, cancel_after

    def progress(self, fraction: float) -> None:
        self.progress_values.append(fraction)

    def epoch(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)

    def check(self) -> None:
        self.checks += 1
        if self.cancel_after is not None and self.checks > self.cancel_after:
            raise Cancelled()

    def checkpoint(self, write) -> bool:
        if self.directory is None:
            return False
        path = self.directory / f"checkpoint-{len(self.checkpoints)}.pt"
        write(path)
        self.checkpoints.append(path)
        return True


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    d = load_digits()
    return {"rows": d.data.astype(np.float32), "images": (d.images * 255 / 16).astype(np.uint8)[..., None],
            "y": d.target.astype(np.int64)}


def data(digits: dict[str, np.ndarray], kind: str, n: int = N) -> np.ndarray:
    return digits[kind][:n]


def params(name: str, **extra: Any) -> Any:
    return registry.get(name).params_model.model_validate({**QUICK, **SIZES[name], **extra})


def fit(name: str, x: np.ndarray, report: Any = None, y: np.ndarray | None = None,
        **extra: Any) -> Any:
    return registry.get(name).fit(FitInput(x, y=y), params(name, **extra), report or NullReport())


@pytest.fixture(scope="module")
def fitted(digits, tmp_path_factory) -> dict[tuple[str, str], tuple[Any, Recorder]]:
    """Every algorithm fitted once on rows and once on images, with labels and a recorder."""
    out = {}
    for name in NAMES:
        for kind in KINDS:
            rec = Recorder(tmp_path_factory.mktemp(f"ckpt-{name}-{kind}"))
            model = fit(name, data(digits, kind), rec, y=digits["y"][:N])
            out[name, kind] = (model, rec)
    return out


def reload(model: Trained, name: str, directory: Path) -> Any:
    directory.mkdir()
    model.save(directory)
    return registry.load_trained(name, directory)


# ---- the catalogue and the house rule ----------------------------------------------------


def test_catalogue_lists_the_family_with_schemas():
    items = {a["name"]: a for a in registry.catalogue()}
    caps = {"autoencoder": ["predict", "embed"], "vae": ["predict", "embed", "generate"],
            "contrastive": ["embed"], "gan": ["embed", "generate"]}
    for name in NAMES:
        assert items[name]["family"] == "self_supervised"
        assert items[name]["data_kinds"] == ["tabular", "image"]
        assert items[name]["queue"] == "gpu" and items[name]["capabilities"] == caps[name]
        assert registry.get(name).trained_cls.trains_in_epochs
        schema = items[name]["params_schema"]
        assert schema["additionalProperties"] is False
        props = schema["properties"]
        assert props["epochs"]["default"] == 20 and props["epochs"]["minimum"] == 1
        assert props["batch_size"]["default"] == 128
        assert props["device"]["enum"] == ["auto", "cpu", "cuda"]
        assert props["hidden_dims"]["default"] == [256, 128]
    con = items["contrastive"]["params_schema"]["properties"]
    assert con["temperature"]["default"] == 0.5 and con["flip"]["default"] is False
    assert con["crop_scale_min"]["default"] == 0.6 and con["mask_fraction"]["default"] == 0.3
    assert items["gan"]["params_schema"]["properties"]["latent_dim"]["default"] == 32


def test_the_registry_and_family_import_without_torch():
    code = ("import json, sys\n"
            "from app.ml import registry\n"
            "import app.ml.deep\n"
            "registry.catalogue()\n"
            "a = registry.get('contrastive')\n"
            "a.check_fit(a.params_model(), n_rows=10, n_features=64)\n"
            "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules} & "
            "{'torch', 'torchvision', 'safetensors', 'fastapi', 'celery'})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_params_are_validated():
    with pytest.raises(ValidationError):
        registry.get("contrastive").params_model.model_validate({"temperature": 0})
    with pytest.raises(ValidationError):
        registry.get("autoencoder").params_model.model_validate({"nope": 1})
    with pytest.raises(ValidationError):
        registry.get("vae").params_model.model_validate({"hidden_dims": []})


def test_check_fit_names_the_problem():
    algo = registry.get("autoencoder")
    assert algo.check_fit(algo.params_model(), n_rows=1, n_features=4)[0][0] == "dataset"
    stop = algo.params_model(early_stopping_patience=3, validation_fraction=0.0)
    assert [p for p, _ in algo.check_fit(stop, n_rows=100, n_features=4)] == [
        "early_stopping_patience"]
    con = registry.get("contrastive")
    assert con.check_fit(con.params_model(validation_fraction=0.5), n_rows=4, n_features=4) == []
    assert con.check_fit(con.params_model(validation_fraction=0.5), n_rows=3,
                         n_features=4)[0][0] == "validation_fraction"
    assert algo.check_fit(algo.params_model(batch_size=4096), n_rows=10, n_features=4) == []


# ---- training: history, progress, checkpoints, metrics -----------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_fit_reports_history_progress_and_checkpoints(fitted, name, kind):
    model, rec = fitted[name, kind]
    assert [e["epoch"] for e in rec.history] == [1, 2]
    for entry in rec.history:
        assert HISTORY_KEYS <= set(entry)
        assert entry["loss"] == pytest.approx(entry["loss"]) and entry["seconds"] > 0
        if name == "gan":
            assert entry["val_loss"] is None
            assert entry["loss"] == pytest.approx(entry["d_loss"] + entry["g_loss"], rel=1e-5)
        else:
            assert isinstance(entry["val_loss"], float)
    assert rec.progress_values and rec.progress_values[-1] == 1.0
    assert rec.progress_values == sorted(rec.progress_values)
    assert len(rec.checkpoints) == 2
    ckpt = load_checkpoint(rec.checkpoints[-1])
    assert ckpt["epoch"] == 2 and set(ckpt) >= {"model", "optimizer", "epoch", "rng"}
    assert set(ckpt["model"]) == set(model.net.state_dict())
    assert isinstance(ckpt["rng"]["torch"], torch.Tensor)
    if name == "gan":
        assert set(ckpt["optimizer"]) == {"generator", "discriminator"}
    else:
        assert set(ckpt["optimizer"]) == {"state", "param_groups"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_metrics_with_labels(fitted, name, kind):
    metrics = fitted[name, kind][0].metrics
    json.dumps(metrics, allow_nan=False)
    assert metrics["epochs_trained"] == 2 and metrics["best_epoch"] in (1, 2)
    assert metrics["final_loss"] == fitted[name, kind][1].history[-1]["loss"]
    assert 0 <= metrics["knn_accuracy"] <= 1 and 0 <= metrics["linear_probe_accuracy"] <= 1
    assert metrics["knn_accuracy"] > 0.3  # well above chance (0.1) even after two epochs
    assert ("val_reconstruction_error" in metrics) == (name in ("autoencoder", "vae"))


def test_no_probe_metrics_without_labels_or_with_one_class(digits):
    x = data(digits, "rows", 200)
    assert "knn_accuracy" not in fit("autoencoder", x).metrics
    one_class = fit("autoencoder", x, y=np.zeros(200, dtype=np.int64)).metrics
    assert "knn_accuracy" not in one_class and "linear_probe_accuracy" not in one_class


def test_early_stopping_keeps_the_best_epoch(digits):
    rec = Recorder()
    model = fit("autoencoder", data(digits, "rows", 120), rec, epochs=60, batch_size=16,
                learning_rate=0.01, early_stopping_patience=2, validation_fraction=0.25,
                hidden_dims=[128])
    losses = [e["val_loss"] for e in rec.history]
    m = model.metrics
    assert m["best_epoch"] == int(np.argmin(losses)) + 1
    assert m["best_val_loss"] == pytest.approx(min(losses))
    assert m["stopped_early"] == (m["epochs_trained"] < 60)
    if m["stopped_early"]:
        assert m["epochs_trained"] == m["best_epoch"] + 2
    # The weights are the best epoch's: their held-out error is that epoch's val_loss.
    assert m["val_reconstruction_error"] == pytest.approx(min(losses), rel=1e-4)


# ---- save / load and the answers ----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", NAMES)
def test_save_load_answers_the_same(fitted, digits, name, kind, tmp_path):
    model = fitted[name, kind][0]
    loaded = reload(model, name, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json",
                                                                   "weights.safetensors"]
    assert type(loaded) is type(model) and loaded.metrics == model.metrics
    x = data(digits, kind)[:20]
    np.testing.assert_array_equal(loaded.embed(x), model.embed(x))
    assert model.embed(x).shape == (20, EMBED_DIM[name]) and model.embed(x).dtype == np.float32
    if "predict" in registry.get(name).capabilities:
        assert loaded.predict(x) == model.predict(x)
    if "generate" in registry.get(name).capabilities:
        assert loaded.generate(3, 11) == model.generate(3, 11)
    assert loaded.data_kind == ("tabular" if kind == "rows" else "image")
    assert loaded.input_shape == ([64] if kind == "rows" else [8, 8, 1])
    assert loaded.n_features_in == 64
    assert loaded.dtype == ("float32" if kind == "rows" else "uint8")


def test_load_refuses_another_algorithms_model(fitted, tmp_path):
    fitted["vae", "rows"][0].save(tmp_path)
    with pytest.raises(UnsafeArtifact):
        registry.load_trained("autoencoder", tmp_path)


def test_predict_formats(fitted, digits):
    rows, images = data(digits, "rows")[:3], data(digits, "images")[:3]
    out = fitted["autoencoder", "rows"][0].predict(rows)
    assert set(out) == {"predictions", "reconstruction_error"}
    assert np.asarray(out["predictions"]).shape == (3, 64) and len(out["reconstruction_error"]) == 3
    out = fitted["vae", "images"][0].predict(images)
    assert set(out) == {"predictions", "reconstruction_error", "negative_elbo"}
    pixels = np.asarray(out["predictions"])
    assert pixels.shape == (3, 8, 8, 1) and pixels.min() >= 0 and pixels.max() <= 255
    assert all(isinstance(v, int) for v in np.ravel(out["predictions"][0]).tolist())
    assert all(e > 0 for e in out["negative_elbo"])


@pytest.mark.parametrize("name", ["vae", "gan"])
def test_generate_rows_and_png_images(fitted, name):
    rows = fitted[name, "rows"][0]
    one, two = rows.generate(4, 7), rows.generate(4, 7)
    assert one == two and np.asarray(one).shape == (4, 64)
    assert rows.generate(4, 8) != one
    assert len(rows.generate(2, None)) == 2
    images = fitted[name, "images"][0].generate(3, 7)
    assert images == fitted[name, "images"][0].generate(3, 7) and len(images) == 3
    png = Image.open(io.BytesIO(base64.b64decode(images[0]["b64"])))
    assert png.format == "PNG" and png.size == (8, 8) and png.mode == "L"


def test_unsupported_requests_raise_capability_error(fitted, digits):
    x = data(digits, "rows")[:2]
    with pytest.raises(CapabilityError):
        fitted["contrastive", "rows"][0].predict(x)
    with pytest.raises(CapabilityError):
        fitted["gan", "rows"][0].predict(x)
    with pytest.raises(CapabilityError):
        fitted["autoencoder", "rows"][0].generate(2, 0)
    with pytest.raises(CapabilityError):
        fitted["contrastive", "images"][0].generate(2, 0)


def test_bad_input_is_an_input_error(fitted, digits):
    rows = fitted["autoencoder", "rows"][0]
    with pytest.raises(InputError, match="expected 64 features, got 10"):
        rows.embed(np.zeros((2, 10)))
    with pytest.raises(InputError, match="finite"):
        rows.predict(np.full((1, 64), np.nan))
    images = fitted["contrastive", "images"][0]
    with pytest.raises(InputError, match="expected images of 8x8x1, got 16x16x1"):
        images.embed(np.zeros((2, 16, 16, 1), dtype=np.uint8))
    with pytest.raises(InputError, match="0..255"):
        images.embed(np.full((1, 8, 8, 1), 300.0))
    x = data(digits, "images")[:4]
    np.testing.assert_array_equal(images.embed(x[..., 0]), images.embed(x))  # (n, h, w) is fine
    np.testing.assert_array_equal(images.embed(x.astype(np.float64)), images.embed(x))


def test_inference_is_safe_from_many_threads(fitted, digits):
    model = fitted["vae", "images"][0]
    x = data(digits, "images")[:64]
    expected = model.embed(x)
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(model.embed(x))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and all(np.array_equal(r, expected) for r in results)


@pytest.mark.parametrize("shape", [(13, 9, 3), (5, 7, 1), (33, 33, 4)])
@pytest.mark.parametrize("name", NAMES)
def test_any_image_size_round_trips(name, shape):
    x = np.random.default_rng(0).integers(0, 256, size=(24, *shape), dtype=np.uint8)
    model = fit(name, x, epochs=1, batch_size=1)  # batch_size 1 is raised where pairs are needed
    h, w, c = shape
    assert model.embed(x[:3]).shape == (3, EMBED_DIM[name])
    if name in ("autoencoder", "vae"):
        assert np.asarray(model.predict(x[:2])["predictions"]).shape == (2, h, w, c)
    if name in ("vae", "gan"):
        png = Image.open(io.BytesIO(base64.b64decode(model.generate(1, 0)[0]["b64"])))
        assert png.size == (w, h) and len(png.getbands()) == c


def test_constant_features_keep_unit_std(fitted):
    config = fitted["autoencoder", "rows"][0].config
    std = config["preprocessing"]["std"]
    assert std[0] == 1.0  # pixel 0 of the digits is always blank


# ---- determinism, cancel, device ----------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), [("autoencoder", "rows"), ("contrastive", "images"),
                                            ("gan", "images")])
def test_same_seed_same_model_on_cpu(digits, name, kind):
    x = data(digits, kind, 200)
    a, b = fit(name, x, seed=3), fit(name, x, seed=3)
    np.testing.assert_array_equal(a.embed(x), b.embed(x))
    assert not np.array_equal(fit(name, x, seed=4).embed(x), a.embed(x))


def test_cancel_stops_the_fit(digits):
    rec = Recorder(cancel_after=3)
    with pytest.raises(Cancelled):
        fit("autoencoder", data(digits, "rows", 200), rec, epochs=10_000)
    assert rec.checks == 4 and len(rec.history) < 10_000


def test_cuda_without_a_gpu_is_a_clear_error(digits):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="device='cuda'.*no usable CUDA GPU"):
        fit("autoencoder", data(digits, "rows", 50), device="cuda")


# ---- the runtime itself -------------------------------------------------------------------


def _ae_run(x: np.ndarray, epochs: int, report: Any, resume: dict | None = None,
            resident: bool | None = None, workers: int | None = None) -> tuple[Any, Any]:
    p = AutoencoderParams(epochs=epochs, batch_size=32, hidden_dims=[16], latent_dim=4)
    prep = fit_prep("tabular", x, True)
    torch.manual_seed(0)
    net = ae_torch.build(ae_torch.architecture(p), prep)
    rt = Runtime(torch.device("cpu"), 0)
    objective = ae_torch.objective(net, rt, p, prep)
    batches = Batches(torch.from_numpy(standardize_rows(x, prep)), rt, 32, shuffle=True,
                      resident=resident, workers=workers)
    result = train_loop(objective, batches, None, LoopConfig(epochs=epochs), report,
                        resume_from=resume)
    return net, result


def test_resume_from_a_checkpoint_equals_an_unbroken_run(digits, tmp_path):
    x = data(digits, "rows", 200)
    whole, _ = _ae_run(x, 4, NullReport())
    rec = Recorder(tmp_path)
    _ae_run(x, 2, rec)
    resumed, result = _ae_run(x, 4, NullReport(), resume=load_checkpoint(rec.checkpoints[-1]))
    assert [e["epoch"] for e in result.history] == [3, 4]
    for k, v in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_data_loader_path_trains_like_the_resident_one(digits, workers):
    x = data(digits, "rows", 200)
    resident, _ = _ae_run(x, 2, NullReport(), resident=True)
    loader, _ = _ae_run(x, 2, NullReport(), resident=False, workers=workers)
    for k, v in resident.state_dict().items():
        torch.testing.assert_close(loader.state_dict()[k], v, rtol=0, atol=0)


# ---- does it learn? -----------------------------------------------------------------------


def test_contrastive_embeddings_of_digit_images_separate_the_classes(digits):
    rec = Recorder()
    model = fit("contrastive", digits["images"], rec, y=digits["y"], epochs=4, batch_size=128,
                hidden_dims=[64], base_channels=16, embedding_dim=32)
    assert model.metrics["knn_accuracy"] > 0.5
    # (a random conv net already scores ~0.9 here: the loss going down is the real check)
    assert rec.history[-1]["val_loss"] < rec.history[0]["val_loss"]
