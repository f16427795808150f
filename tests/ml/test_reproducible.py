"""On a CPU, every algorithm of the catalogue trained twice from the same params, seed and data
writes byte-identical artifact files: the claim a model's reproducibility record rests on."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.preprocessing import StandardScaler

from app.ml import artifacts, registry
from app.ml.base import BackboneRef, FitInput, NullReport
from app.ml.reproduce import (
    compare,
    compare_dirs,
    file_hashes,
    job_seed,
    resolve_seed,
    seed_everything,
)

# Small enough for two CPU cores; an algorithm not listed trains with its defaults.
TINY_NET = {"epochs": 2, "batch_size": 32, "hidden_dims": [16]}
PARAMS = {"kmeans": {"n_clusters": 3}, "minibatch_kmeans": {"n_clusters": 3},
          "agglomerative": {"n_clusters": 3}, "gmm": {"n_components": 2},
          "pca": {"n_components": 2}, "tsne": {"perplexity": 10, "max_iter": 250},
          "autoencoder": {**TINY_NET, "latent_dim": 4}, "vae": {**TINY_NET, "latent_dim": 4},
          "contrastive": {**TINY_NET, "embedding_dim": 4, "projection_dim": 4},
          "gan": {**TINY_NET, "latent_dim": 4}, "transfer": {"epochs": 2, "batch_size": 32}}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """120 digits: non-negative counts (any algorithm takes them, a topic model too)."""
    d = load_digits()
    return d.data[:120].astype(np.float64), d.target[:120]


@pytest.fixture(scope="module")
def backbone(digits, tmp_path_factory: pytest.TempPathFactory) -> BackboneRef:
    """An autoencoder trained on the rows, for the transfer job."""
    algo = registry.get("autoencoder")
    model = algo.fit(FitInput(digits[0]), algo.own(PARAMS["autoencoder"]), NullReport())
    folder = tmp_path_factory.mktemp("backbone")
    model.save(folder)
    return BackboneRef(spec="model:src", source="model", name="src", data_kind="tabular",
                       path=str(folder), model_algorithm="autoencoder")


def train(name: str, digits, backbone: BackboneRef, folder: Path) -> dict[str, str]:
    """Train as the runner does (seed resolved, process generators seeded), save, hash."""
    algo = registry.get(name)
    given = {**PARAMS.get(name, {})}
    if "backbone" in algo.params_model.model_fields:
        given["backbone"] = backbone.spec
    params, seed = resolve_seed(algo.params_model, algo.own(given).model_dump(mode="json"),
                                job_seed("job_test"))
    seed_everything(seed)
    x, y = digits
    trained = algo.fit(FitInput(x, y=y, labels=y, backbone=backbone), algo.own(params),
                       NullReport())
    folder.mkdir()
    trained.save(folder)
    return file_hashes(folder)


@pytest.mark.parametrize("name", sorted(registry.ALGORITHMS))
def test_training_twice_writes_identical_files(name, digits, backbone, tmp_path):
    first = train(name, digits, backbone, tmp_path / "first")
    second = train(name, digits, backbone, tmp_path / "second")
    assert first and first == second
    verdict = compare(first, tmp_path / "second", lambda: tmp_path / "first")
    assert verdict.identical and verdict.max_abs_diff == 0.0


@pytest.mark.parametrize("name", [a.name for a in registry.ALGORITHMS.values()
                                  if "image" in a.data_kinds and "backbone"
                                  not in a.params_model.model_fields])
def test_image_models_train_twice_to_identical_files(name, tmp_path):
    """Images take other paths (augmentations, convolutions): identical files there too."""
    images = (load_digits().images[:64] * 255 / 16).astype(np.uint8)[..., None]
    algo = registry.get(name)
    params = {**PARAMS.get(name, {}), "base_channels": 4}
    hashes = []
    for run in ("first", "second"):
        seed_everything(0)
        trained = algo.fit(FitInput(images), algo.own(params), NullReport())
        (tmp_path / run).mkdir()
        trained.save(tmp_path / run)
        hashes.append(file_hashes(tmp_path / run))
    assert hashes[0] and hashes[0] == hashes[1]


def test_a_skops_file_is_the_same_bytes_whenever_it_is_written(tmp_path, monkeypatch):
    scaler = StandardScaler().fit(np.arange(12.0).reshape(4, 3))
    artifacts.save_estimator(scaler, tmp_path / "a.skops")
    monkeypatch.setattr(zipfile.time, "time", lambda: 2_000_000_000.0)  # another day
    artifacts.save_estimator(StandardScaler().fit(np.arange(12.0).reshape(4, 3)),
                             tmp_path / "b.skops")
    assert (tmp_path / "a.skops").read_bytes() == (tmp_path / "b.skops").read_bytes()
    back = artifacts.load_estimator(tmp_path / "b.skops", StandardScaler)
    np.testing.assert_array_equal(back.mean_, scaler.mean_)
    np.testing.assert_array_equal(back.scale_, scaler.scale_)
    names = zipfile.ZipFile(io.BytesIO((tmp_path / "b.skops").read_bytes())).namelist()
    assert names == sorted(names)


def test_compare_dirs_measures_arrays_and_names_what_it_cannot(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    a = np.array([[1.0, np.nan], [3.0, 4.0]])
    np.save(old / "w.npy", a)
    np.save(new / "w.npy", a + np.array([[0.0, 0.0], [-0.25, 0.5]]))  # NaN stays NaN
    np.save(old / "same.npy", np.ones(3))
    np.save(new / "same.npy", np.ones(3))
    np.save(old / "shape.npy", np.ones(3))
    np.save(new / "shape.npy", np.ones(4))
    (old / "meta.json").write_text("{}")
    (new / "meta.json").write_text('{"x": 1}')
    found = compare_dirs(old, new)
    assert found.differing_files == ["meta.json", "shape.npy", "w.npy"]
    assert found.max_abs_diff == 0.5 and found.incomparable == ["shape.npy"]
    assert not found.identical and found.metrics()["incomparable"] == ["shape.npy"]


def test_a_seed_left_open_is_fixed_by_the_job_and_recorded(monkeypatch):
    from app.ml.base import Params

    class Open(Params):
        random_state: int | None = None

    class Without(Params):
        k: int = 2

    assert resolve_seed(Open, {"random_state": None}, 42) == ({"random_state": 42}, 42)
    assert resolve_seed(Open, {"random_state": 5}, 42) == ({"random_state": 5}, 5)
    assert resolve_seed(Without, {"k": 2}, 42) == ({"k": 2}, 42)
    assert job_seed("job_a") == job_seed("job_a") != job_seed("job_b")
    seed_everything(3)
    first = np.random.rand(3)
    seed_everything(3)
    np.testing.assert_array_equal(first, np.random.rand(3))


def test_versions_name_the_configured_commit_else_the_checkouts_head():
    import subprocess

    from app.ml.reproduce import versions

    assert versions("0123abcd")["git_commit"] == "0123abcd"
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent, check=True).stdout.strip()
    assert versions(None)["git_commit"] == head
