"""The CLI and client paths of a first hour, against `make run` with a small instance limit:
`algorithms show`, predict/embed on more rows than one call takes, `generate -o`, the bar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pretrainer_client import AsyncClient, Client
from tests.conftest import to_csv
from tests.integration.conftest import make_run
from tests.integration.test_cli import cli

pytestmark = pytest.mark.integration
LIMIT = 25  # PRETRAINER_MAX_INSTANCES of this service: the queries below take several calls


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    yield from make_run(tmp_path_factory.mktemp("first-hour"), PRETRAINER_MAX_INSTANCES=str(LIMIT))


@pytest.fixture(scope="module")
def points(tmp_path_factory) -> tuple[Path, np.ndarray]:
    x, _ = make_blobs(n_samples=150, n_features=3, centers=3, random_state=0)
    path = tmp_path_factory.mktemp("first-hour-data") / "points.csv"
    path.write_bytes(to_csv(x))
    return path, x


def _dataset(service, path: Path) -> str:
    return json.loads(cli(service, "datasets", "upload", str(path), "--json").stdout)["id"]


def test_algorithms_show_prints_params_with_defaults_bounds_and_descriptions(service):
    out = cli(service, "algorithms", "show", "kmeans").stdout
    row = next(r for r in out.splitlines() if r.startswith("│ n_clusters"))
    assert "integer" in row and "8" in row and ">= 1" in row and "Number of clusters" in row
    assert 'one of "k-means++", "random"' in out
    shown = json.loads(cli(service, "algorithms", "show", "vae", "--json").stdout)
    assert shown["name"] == "vae" and "latent_dim" in shown["params_schema"]["properties"]
    assert "autoencoder" in cli(service, "algorithms").stdout  # the list is still there
    wrong = cli(service, "algorithms", "show", "kmean", check=False)
    assert wrong.returncode == 1 and "did you mean 'kmeans'" in wrong.stderr


def test_predict_and_embed_split_past_the_limit_and_keep_the_order(service, points, tmp_path):
    path, x = points
    ds = _dataset(service, path)
    job = json.loads(cli(service, "train", "kmeans", "--dataset", ds, "--param", "n_clusters=3",
                         "--follow", "--json").stdout)
    assert job["status"] == "succeeded", job
    queries, _ = make_blobs(n_samples=4 * LIMIT + 7, n_features=3, centers=3, random_state=9)
    qpath = tmp_path / "queries.csv"
    qpath.write_bytes(to_csv(queries))
    # the job's defaults: standardised rows, scikit-learn's n_init
    reference = make_pipeline(StandardScaler(), KMeans(n_clusters=3, n_init="auto", random_state=0)
                              ).fit(x).predict(queries)

    pred = json.loads(cli(service, "predict", job["model_id"], str(qpath), "--json").stdout)
    assert pred["predictions"] == reference.tolist()  # 107 rows in 5 calls, in order

    with Client(service.base) as c:
        one = c.predict(job["model_id"], queries)
        assert c._max_instances == LIMIT  # learned from the first call's 413
        assert one.predictions.tolist() == reference.tolist()
        emb = c.embed(job["model_id"], queries, chunk_size=10)
        assert emb.shape == (len(queries), 3)
        assert np.argmin(emb, axis=1).tolist() == reference.tolist()

    async def embed_async() -> np.ndarray:
        async with AsyncClient(service.base) as ac:
            return await ac.embed(job["model_id"], queries)
    import asyncio

    np.testing.assert_allclose(asyncio.run(embed_async()), emb)


def test_generate_writes_samples_into_a_folder_and_never_overwrites(service, points, tmp_path):
    path, _ = points
    ds = _dataset(service, path)
    job = json.loads(cli(service, "train", "vae", "--dataset", ds, "--param", "epochs=2",
                         "--param", "hidden_dims=[8]", "--param", "latent_dim=2", "--follow",
                         "--json").stdout)
    assert job["status"] == "succeeded", job
    model = job["model_id"]

    out = tmp_path / "samples"
    saved = json.loads(cli(service, "generate", model, "-n", "7", "--seed", "1", "-o", str(out),
                           "--json").stdout)["saved"]
    assert saved == [str(out / "samples.csv")]
    lines = (out / "samples.csv").read_text().splitlines()
    assert lines[0] == "a,b,c" and len(lines) == 8
    with Client(service.base) as c:
        same = c.generate(model, 7, seed=1)
    np.testing.assert_allclose(np.loadtxt(out / "samples.csv", delimiter=",", skiprows=1), same,
                               rtol=1e-6)

    cli(service, "generate", model, "-n", "5", "-o", str(tmp_path / "npy"), "--format", "npy")
    assert np.load(tmp_path / "npy" / "samples.npy", allow_pickle=False).shape == (5, 3)

    before = (out / "samples.csv").read_bytes()
    again = cli(service, "generate", model, "-n", "3", "-o", str(out), check=False)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert (out / "samples.csv").read_bytes() == before


def test_follow_bar_names_the_epoch_of_total_within_80_columns(service, points):
    path, _ = points
    ds = _dataset(service, path)
    out = cli(service, "train", "autoencoder", "--dataset", ds, "--param", "epochs=3",
              "--param", "hidden_dims=[8]", "--follow")
    assert "succeeded" in out.stdout
    assert "epoch 3/3" in out.stderr
    drawn = [row for row in out.stderr.splitlines() if "epoch" in row]
    assert drawn and all(len(row) <= 80 for row in drawn)


def test_train_says_which_label_like_columns_it_left_out(service, points, tmp_path):
    _, x = points
    path = tmp_path / "with_id.csv"
    path.write_bytes(to_csv(np.column_stack([x, np.arange(len(x))]), ["a", "b", "c", "id"]))
    ds = _dataset(service, path)
    out = cli(service, "train", "kmeans", "--dataset", ds, "--param", "n_clusters=3", "--follow")
    assert "note: left out id" in out.stderr and "left_out_columns" in out.stdout
    job = json.loads(cli(service, "train", "kmeans", "--dataset", ds, "--param", "n_clusters=3",
                         "--features", "a,b,c,id", "--json").stdout)
    assert job["features"] == ["a", "b", "c", "id"] and "left_out_columns" not in job["metrics"]


def test_generate_from_an_image_model_writes_png_files(service, tmp_path):
    from tests.integration.test_self_supervised import digits_zip

    archive = tmp_path / "digits.zip"
    archive.write_bytes(digits_zip(120))
    ds = _dataset(service, archive)
    job = json.loads(cli(service, "train", "vae", "--dataset", ds, "--param", "epochs=1",
                         "--param", "base_channels=4", "--param", "latent_dim=2", "--follow",
                         "--json").stdout)
    assert job["status"] == "succeeded", job
    out = tmp_path / "pngs"
    saved = json.loads(cli(service, "generate", job["model_id"], "-n", "3", "-o", str(out),
                           "--json").stdout)["saved"]
    assert [Path(p).name for p in saved] == ["sample_0000.png", "sample_0001.png",
                                             "sample_0002.png"]
    assert all(Path(p).read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in saved)
