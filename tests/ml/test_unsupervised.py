"""The unsupervised family against scikit-learn run directly, plus save/load and input checks."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from pydantic import ValidationError
from sklearn.cluster import DBSCAN, AgglomerativeClustering, KMeans, MiniBatchKMeans
from sklearn.datasets import load_digits, make_blobs
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import (
    calinski_harabasz_score,
    davies_bouldin_score,
    pairwise_distances,
    silhouette_score,
)
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from app.ml import artifacts, registry
from app.ml.base import (
    EMBED,
    PREDICT,
    Cancelled,
    CapabilityError,
    FitInput,
    InputError,
    NullReport,
    Trained,
)
from app.ml.unsupervised import _common, agglomerative

NAMES = ["kmeans", "minibatch_kmeans", "dbscan", "agglomerative", "gmm", "pca", "tsne"]
# Small, fast params for each algorithm that still give a meaningful model on the blobs.
QUICK: dict[str, dict[str, Any]] = {
    "kmeans": {"n_clusters": 3},
    "minibatch_kmeans": {"n_clusters": 3, "batch_size": 64},
    "dbscan": {"eps": 1.5, "min_samples": 5},
    "agglomerative": {"n_clusters": 3},
    "gmm": {"n_components": 3},
    "pca": {"n_components": 2},
    "tsne": {"perplexity": 10, "max_iter": 250},
}


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    data, _ = make_blobs(n_samples=300, n_features=4, centers=3, random_state=0)
    return data


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_digits().data[:400]


def fit(name: str, x: np.ndarray, **params: Any) -> Trained:
    algo = registry.get(name)
    return algo.fit(FitInput(x), algo.params_model.model_validate(params), NullReport())


def reload(trained: Trained, name: str, directory: Path) -> Trained:
    directory.mkdir()
    trained.save(directory)
    return registry.load_trained(name, directory)


def clustering_scores(x: np.ndarray, labels: np.ndarray, metric: str = "euclidean") -> dict:
    return {"silhouette": pytest.approx(silhouette_score(x, labels, metric=metric)),
            "davies_bouldin": pytest.approx(davies_bouldin_score(x, labels)),
            "calinski_harabasz": pytest.approx(calinski_harabasz_score(x, labels))}


# ---- equal to scikit-learn ---------------------------------------------------------------


def test_kmeans_equals_sklearn(x):
    model = fit("kmeans", x, n_clusters=3, n_init=2, random_state=7, standardize=False)
    ref = KMeans(n_clusters=3, n_init=2, random_state=7).fit(x)
    new = x[:25] + 0.3
    assert model.predict(new) == {"predictions": ref.predict(new).tolist()}
    np.testing.assert_array_equal(model.embed(new), ref.transform(new))
    m = model.metrics
    assert m["inertia"] == ref.inertia_ and m["n_iter"] == ref.n_iter_ and m["n_clusters"] == 3
    assert {k: m[k] for k in ("silhouette", "davies_bouldin", "calinski_harabasz")} == \
        clustering_scores(x, ref.labels_)


def test_minibatch_kmeans_equals_sklearn(x):
    model = fit("minibatch_kmeans", x, n_clusters=3, batch_size=64, random_state=3,
                standardize=False)
    ref = MiniBatchKMeans(n_clusters=3, batch_size=64, n_init="auto", random_state=3).fit(x)
    assert model.predict(x)["predictions"] == ref.predict(x).tolist()
    np.testing.assert_array_equal(model.embed(x), ref.transform(x))
    assert model.metrics["inertia"] == ref.inertia_
    assert model.metrics["silhouette"] == pytest.approx(silhouette_score(x, ref.labels_))


def test_silhouette_is_sampled_above_the_limit(x, monkeypatch):
    monkeypatch.setattr(_common, "SILHOUETTE_SAMPLE_SIZE", 100)
    model = fit("kmeans", x, n_clusters=3, random_state=5, standardize=False)
    labels = np.array(model.predict(x)["predictions"])
    want = silhouette_score(x, labels, sample_size=100, random_state=5)
    assert model.metrics["silhouette"] == pytest.approx(want)


def test_undefined_cluster_scores_are_none_not_errors(x):
    one = fit("kmeans", x, n_clusters=1).metrics
    assert one["silhouette"] is one["davies_bouldin"] is one["calinski_harabasz"] is None
    every = fit("kmeans", x[:6], n_clusters=6).metrics
    assert every["silhouette"] is None and every["n_clusters"] == 6
    with pytest.raises(ValueError, match="n_clusters=7 must not exceed the number of training"):
        fit("kmeans", x[:6], n_clusters=7)


def test_dbscan_equals_sklearn_and_labels_new_points_by_core_samples(x):
    model = fit("dbscan", x, eps=1.0, min_samples=8, standardize=False)
    ref = DBSCAN(eps=1.0, min_samples=8).fit(x)
    labels = ref.labels_
    kept = labels != -1
    assert 0 < (~kept).sum() < len(x)  # the check below needs noise and clusters
    m = model.metrics
    assert m["n_noise"] == int((~kept).sum()) and m["noise_fraction"] == (~kept).mean()
    assert m["n_clusters"] == len(set(labels[kept]))
    assert {k: m[k] for k in ("silhouette", "davies_bouldin", "calinski_harabasz")} == \
        clustering_scores(x[kept], labels[kept])
    core = ref.core_sample_indices_
    assert model.predict(x[core])["predictions"] == labels[core].tolist()
    far = x.max(axis=0, keepdims=True) + 100
    assert model.predict(far)["predictions"] == [-1]
    with pytest.raises(CapabilityError):
        model.embed(x[:1])


def test_dbscan_all_noise_predicts_noise_and_has_no_scores(x):
    model = fit("dbscan", x, eps=1e-6, min_samples=3, standardize=False)
    assert model.metrics["n_clusters"] == 0 and model.metrics["noise_fraction"] == 1.0
    assert model.metrics["silhouette"] is None
    assert model.predict(x[:3])["predictions"] == [-1, -1, -1]


def test_dbscan_other_metric_follows_it_for_new_points(x):
    model = fit("dbscan", x, eps=0.02, min_samples=5, metric="cosine", standardize=False)
    ref = DBSCAN(eps=0.02, min_samples=5, metric="cosine").fit(x)
    core = ref.core_sample_indices_
    assert model.predict(x[core])["predictions"] == ref.labels_[core].tolist()
    kept = ref.labels_ != -1
    assert model.metrics["silhouette"] == pytest.approx(
        silhouette_score(x[kept], ref.labels_[kept], metric="cosine"))


def test_agglomerative_equals_sklearn_and_answers_through_centroids(x):
    model = fit("agglomerative", x, n_clusters=3, linkage="average", metric="manhattan",
                standardize=False)
    ref = AgglomerativeClustering(n_clusters=3, linkage="average", metric="manhattan").fit(x)
    labels = ref.labels_
    centroids = np.stack([x[labels == c].mean(axis=0) for c in range(3)])
    assert model.predict(centroids)["predictions"] == [0, 1, 2]
    np.testing.assert_allclose(model.embed(x[:5]),
                               pairwise_distances(x[:5], centroids, metric="manhattan"))
    assert model.predict(x)["predictions"] == labels.tolist()  # well-separated blobs
    m = model.metrics
    assert m["n_clusters"] == 3 and "inertia" not in m
    assert {k: m[k] for k in ("silhouette", "davies_bouldin", "calinski_harabasz")} == \
        clustering_scores(x, labels, metric="manhattan")


def test_agglomerative_refuses_too_many_rows(x, monkeypatch):
    monkeypatch.setattr(agglomerative, "MAX_ROWS", 100)
    with pytest.raises(ValueError, match="at most 100 training rows, got 300"):
        fit("agglomerative", x, n_clusters=3)
    algo = registry.get("agglomerative")
    problems = algo.check_fit(algo.params_model(), n_rows=300, n_features=4)
    assert problems and "300" in problems[0][1]


def test_gmm_equals_sklearn(x):
    model = fit("gmm", x, n_components=3, covariance_type="diag", random_state=2, standardize=False)
    ref = GaussianMixture(n_components=3, covariance_type="diag", random_state=2).fit(x)
    new = x[:30] + 0.2
    out = model.predict(new)
    assert out["predictions"] == ref.predict(new).tolist()
    np.testing.assert_allclose(out["probabilities"], ref.predict_proba(new))
    np.testing.assert_allclose(model.embed(new), ref.predict_proba(new))
    m = model.metrics
    assert m["bic"] == pytest.approx(ref.bic(x)) and m["aic"] == pytest.approx(ref.aic(x))
    assert m["log_likelihood"] == pytest.approx(ref.score(x))
    assert m["converged"] is True and m["n_iter"] == ref.n_iter_


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_gmm_singular_covariance_fails_with_sklearns_message():
    with pytest.raises(ValueError, match="covariance"):
        fit("gmm", np.ones((50, 3)), n_components=2, reg_covar=0.0)


def test_pca_equals_sklearn(digits):
    model = fit("pca", digits, n_components=5, standardize=False)
    ref = PCA(n_components=5).fit(digits)
    assert model.metrics["explained_variance_ratio"] == pytest.approx(
        ref.explained_variance_ratio_.tolist())
    assert model.metrics["explained_variance_ratio_sum"] == pytest.approx(
        ref.explained_variance_ratio_.sum())
    assert model.metrics["n_components"] == 5
    rows = digits[:10]
    np.testing.assert_allclose(model.embed(rows), ref.transform(rows))
    out = model.predict(rows)
    recon = ref.inverse_transform(ref.transform(rows))
    np.testing.assert_allclose(out["predictions"], recon)
    np.testing.assert_allclose(out["reconstruction_error"], ((rows - recon) ** 2).mean(axis=1))


def test_pca_fraction_keeps_enough_components(digits):
    model = fit("pca", digits, n_components=0.8, standardize=False)
    ref = PCA(n_components=0.8).fit(digits)
    assert model.metrics["n_components"] == ref.n_components_
    assert model.metrics["explained_variance_ratio_sum"] >= 0.8


def test_tsne_equals_sklearn_and_keeps_only_the_training_embedding(x):
    model = fit("tsne", x, perplexity=10, max_iter=250, random_state=1, standardize=False)
    ref = TSNE(perplexity=10, max_iter=250, random_state=1).fit(x)
    np.testing.assert_allclose(model.training_embedding, ref.embedding_, rtol=1e-5, atol=1e-5)
    assert model.metrics["kl_divergence"] == pytest.approx(ref.kl_divergence_)
    assert model.metrics["n_iter"] == ref.n_iter_
    for answer in (model.predict, model.embed):
        with pytest.raises(CapabilityError, match=r"cannot place new points.*GET /v1/models/"):
            answer(x[:2])
    with pytest.raises(ValueError, match=r"perplexity=30 must be less than .* rows \(20\)"):
        fit("tsne", x[:20])


# ---- standardize ---------------------------------------------------------------------------


def test_default_standardizes_like_a_pipeline_with_standard_scaler(x):
    skewed = x * np.array([1.0, 100.0, 0.01, 10.0])
    model = fit("kmeans", skewed, n_clusters=3)  # standardize and n_init left to their defaults
    ref = make_pipeline(StandardScaler(), KMeans(n_clusters=3, n_init="auto", random_state=0))
    ref.fit(skewed)
    assert model.predict(skewed)["predictions"] == ref.predict(skewed).tolist()
    np.testing.assert_allclose(model.embed(skewed[:5]), ref.transform(skewed[:5]))
    assert model.metrics["inertia"] == pytest.approx(ref[-1].inertia_)


def test_default_kmeans_on_wine_finds_the_cultivars_raw_kmeans_misses():
    from sklearn.datasets import load_wine
    from sklearn.metrics import adjusted_rand_score

    wine, cultivar = load_wine(return_X_y=True)
    default = fit("kmeans", wine, n_clusters=3)
    raw = fit("kmeans", wine, n_clusters=3, standardize=False)
    ref = make_pipeline(StandardScaler(), KMeans(n_clusters=3, random_state=0)).fit(wine)
    assert default.predict(wine)["predictions"] == ref.predict(wine).tolist()
    assert adjusted_rand_score(cultivar, default.predict(wine)["predictions"]) == pytest.approx(
        0.897, abs=1e-3)
    # proline (hundreds to 1,680) rules the raw distances
    assert adjusted_rand_score(cultivar, raw.predict(wine)["predictions"]) == pytest.approx(
        0.371, abs=1e-3)


def test_standardized_pca_reconstructs_in_the_input_units(x):
    skewed = x * np.array([1.0, 100.0, 0.01, 10.0])
    model = fit("pca", skewed, n_components=4, standardize=True)
    out = model.predict(skewed[:5])  # all components: the reconstruction is exact
    np.testing.assert_allclose(out["predictions"], skewed[:5], rtol=1e-9, atol=1e-9)
    assert max(out["reconstruction_error"]) < 1e-12


# ---- save / load -------------------------------------------------------------------------


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_save_load_answers_the_same(name, standardize, x, tmp_path):
    model = fit(name, x, standardize=standardize, **QUICK[name])
    back = reload(model, name, tmp_path / "model")
    assert type(back) is type(model)
    assert back.metrics == model.metrics
    assert (back.n_features_in, back.dtype) == (4, "float64")
    assert not [p for p in (tmp_path / "model").iterdir() if p.suffix not in (".json", ".npy",
                                                                              ".skops")]
    algo = registry.get(name)
    new = x[::7] + 0.05
    if PREDICT in algo.capabilities:
        assert back.predict(new) == model.predict(new)
    if EMBED in algo.capabilities:
        np.testing.assert_array_equal(back.embed(new), model.embed(new))
    if name == "tsne":
        np.testing.assert_array_equal(back.training_embedding, model.training_embedding)


def test_float32_training_keeps_its_dtype_through_save_and_load(x, tmp_path):
    model = fit("kmeans", x.astype(np.float32), n_clusters=3)
    back = reload(model, "kmeans", tmp_path / "m")
    assert back.dtype == "float32"
    assert back.embed(x[:3]).dtype == np.float32  # float64 input is cast to the training dtype
    assert fit("pca", x.astype(np.int64), n_components=2).dtype == "float64"


def test_loading_under_the_wrong_algorithm_is_refused(x, tmp_path):
    model = fit("kmeans", x, n_clusters=3)
    (tmp_path / "m").mkdir()
    model.save(tmp_path / "m")
    with pytest.raises(artifacts.UnsafeArtifact, match="'kmeans' model, not 'gmm'"):
        registry.load_trained("gmm", tmp_path / "m")


# ---- input checks ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["kmeans", "dbscan", "agglomerative", "gmm", "pca"])
def test_wrong_width_or_non_finite_rows_are_input_errors(name, x):
    model = fit(name, x, **QUICK[name])
    answer = model.predict
    with pytest.raises(InputError, match="expected 4 features, got 2"):
        answer(np.zeros((3, 2)))
    with pytest.raises(InputError, match="expected 4 features"):
        answer(np.zeros(4))
    with pytest.raises(InputError, match="finite"):
        answer(np.array([[0.0, np.nan, 0.0, 0.0]]))
    with pytest.raises(InputError, match="finite"):
        answer(np.array([[0.0, np.inf, 0.0, 0.0]]))
    with pytest.raises(InputError, match="at least one row"):
        answer(np.zeros((0, 4)))


def test_non_numeric_or_ragged_rows_are_input_errors(x):
    model = fit("kmeans", x, n_clusters=3)
    with pytest.raises(InputError, match="number"):
        model.embed(np.array([["a", "b", "c", "d"]]))
    with pytest.raises(InputError, match="4 features"):
        model.embed([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]])
    with pytest.raises(InputError, match="complex"):
        model.embed(np.ones((1, 4), dtype=complex))


def test_non_finite_training_data_is_refused(x):
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit("kmeans", bad, n_clusters=3)


# ---- params ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "params", "field"), [
    ("kmeans", {"n_clusterz": 3}, "n_clusterz"),
    ("kmeans", {"n_clusters": 0}, "n_clusters"),
    ("kmeans", {"init": "best"}, "init"),
    ("minibatch_kmeans", {"batch_size": 0}, "batch_size"),
    ("dbscan", {"eps": 0}, "eps"),
    ("gmm", {"covariance_type": "round"}, "covariance_type"),
    ("pca", {"n_components": 1.5}, "n_components"),
    ("tsne", {"n_components": 4}, "n_components"),
    ("tsne", {"max_iter": 100}, "max_iter"),
])
def test_bad_params_are_rejected_naming_the_field(name, params, field):
    with pytest.raises(ValidationError) as info:
        registry.get(name).params_model.model_validate(params)
    assert any(field in map(str, err["loc"]) for err in info.value.errors())


@pytest.mark.parametrize(("name", "params", "message"), [
    ("agglomerative", {"linkage": "ward", "metric": "cosine"}, "ward"),
    ("dbscan", {"metric": "cosine", "algorithm": "kd_tree"}, "cosine"),
    ("pca", {"n_components": 0.9, "svd_solver": "arpack"}, "fractional"),
])
def test_contradictory_params_are_rejected(name, params, message):
    with pytest.raises(ValidationError, match=message):
        registry.get(name).params_model.model_validate(params)


def test_defaults_fill_in_and_dump_as_json():
    params = registry.get("kmeans").params_model.model_validate({})
    assert params.model_dump(mode="json") == {
        "standardize": True, "n_clusters": 8, "init": "k-means++", "n_init": "auto",
        "max_iter": 300, "tol": 1e-4, "random_state": 0, "algorithm": "lloyd"}
    pca = registry.get("pca").params_model
    assert pca.model_validate({"n_components": 2}).n_components == 2
    assert pca.model_validate({"n_components": 0.5}).n_components == 0.5
    assert pca.model_validate({}).n_components is None


@pytest.mark.parametrize(("name", "params", "n_rows", "n_features", "field"), [
    ("kmeans", {"n_clusters": 5}, 3, 2, "n_clusters"),
    ("minibatch_kmeans", {"n_clusters": 5}, 3, 2, "n_clusters"),
    ("gmm", {"n_components": 5}, 3, 2, "n_components"),
    ("agglomerative", {"n_clusters": 5}, 3, 2, "n_clusters"),
    ("tsne", {"perplexity": 30}, 3, 2, "perplexity"),
    ("tsne", {"perplexity": 2, "n_components": 3}, 10, 2, "init"),
    ("pca", {"n_components": 3}, 10, 2, "n_components"),
])
def test_check_fit_names_the_param_that_does_not_fit_the_data(name, params, n_rows,
                                                              n_features, field):
    algo = registry.get(name)
    problems = algo.check_fit(algo.params_model.model_validate(params), n_rows=n_rows,
                              n_features=n_features)
    assert [f for f, _ in problems] == [field]
    ok = algo.check_fit(algo.params_model.model_validate(params), n_rows=1000, n_features=50)
    assert ok == []


# ---- the report ----------------------------------------------------------------------------


class Recorder(NullReport):
    def __init__(self, cancel_after: int | None = None) -> None:
        self.fractions: list[float] = []
        self.checks = 0
        self.cancel_after = cancel_after

    def progress(self, fraction: float) -> None:
        self.fractions.append(fraction)

    def check(self) -> None:
        self.checks += 1
        if self.cancel_after is not None and self.checks > self.cancel_after:
            raise Cancelled()


@pytest.mark.parametrize("name", NAMES)
def test_fit_reports_progress_and_checks_between_phases(name, x):
    algo, report = registry.get(name), Recorder()
    algo.fit(FitInput(x), algo.params_model.model_validate(QUICK[name]), report)
    assert report.checks >= 3
    assert report.fractions == sorted(report.fractions) and report.fractions[-1] == 1.0


@pytest.mark.parametrize("cancel_after", [0, 1, 2])
def test_cancelled_propagates_out_of_fit(cancel_after, x):
    algo, report = registry.get("kmeans"), Recorder(cancel_after=cancel_after)
    with pytest.raises(Cancelled):
        algo.fit(FitInput(x), algo.params_model.model_validate({"n_clusters": 3}), report)
    assert 1.0 not in report.fractions


# ---- catalogue -------------------------------------------------------------------------------


def test_catalogue_describes_every_algorithm():
    entries = {e["name"]: e for e in registry.catalogue()}
    assert set(NAMES) <= set(entries)
    for name in NAMES:
        e = entries[name]
        assert e["family"] == "unsupervised" and e["data_kinds"] == ["tabular"]
        assert e["queue"] == "cpu" and e["description"]
        assert e["params_schema"]["additionalProperties"] is False
        assert e["params_schema"]["properties"]["standardize"]["default"] is True
    assert entries["tsne"]["capabilities"] == [] and entries["tsne"]["extras"] == [
        "training_embedding"]
    assert entries["dbscan"]["capabilities"] == ["predict"]
    n = entries["kmeans"]["params_schema"]["properties"]["n_clusters"]
    assert (n["default"], n["minimum"], n["maximum"]) == (8, 1, 10_000) and n["description"]
    with pytest.raises(KeyError, match="kmeanz"):
        registry.get("kmeanz")


def test_register_refuses_a_second_algorithm_of_the_same_name():
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get("kmeans"))


# ---- artifacts ---------------------------------------------------------------------------


class Gadget:
    """Stands for any class a forged artifact could smuggle in."""

    def __init__(self) -> None:
        self.payload = "anything"


@pytest.mark.parametrize("obj", [Gadget(), {"counts": collections.Counter("abc")}],
                         ids=["custom-class", "collections-counter"])
def test_a_skops_file_with_a_type_off_the_allow_list_is_refused(obj, tmp_path):
    path = tmp_path / "estimator.skops"
    sio.dump(obj, path)
    assert sio.get_untrusted_types(file=path)  # skops itself flags it...
    with pytest.raises(artifacts.UnsafeArtifact, match="not allow-listed"):
        artifacts.load_estimator(path)  # ...and our loader refuses it


def test_a_trusted_file_of_the_wrong_class_is_refused(tmp_path):
    path = tmp_path / "estimator.skops"
    artifacts.save_estimator(StandardScaler().fit([[0.0], [1.0]]), path)
    assert isinstance(artifacts.load_estimator(path), StandardScaler)
    with pytest.raises(artifacts.UnsafeArtifact, match="expected KMeans"):
        artifacts.load_estimator(path, KMeans)


def test_a_forged_model_directory_is_refused(x, tmp_path):
    model = fit("kmeans", x, n_clusters=3)
    (tmp_path / "m").mkdir()
    model.save(tmp_path / "m")
    sio.dump(Gadget(), tmp_path / "m" / "estimator.skops")
    with pytest.raises(artifacts.UnsafeArtifact):
        registry.load_trained("kmeans", tmp_path / "m")


def test_arrays_never_unpickle(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(artifacts.UnsafeArtifact):
        artifacts.load_array(path)
    with pytest.raises(ValueError):
        artifacts.save_array(np.array([None], dtype=object), tmp_path / "b.npy")
    artifacts.save_array(np.arange(3.0), tmp_path / "c.npy")
    np.testing.assert_array_equal(artifacts.load_array(tmp_path / "c.npy"), np.arange(3.0))


def test_meta_json_of_another_format_is_refused(tmp_path):
    (tmp_path / "meta.json").write_text('{"format": 99}')
    with pytest.raises(artifacts.UnsafeArtifact, match="format"):
        artifacts.read_meta(tmp_path)
