"""Every metric with its yardstick, each checked against a reference computation on the same
data: clustering agreement, t-SNE trustworthiness, probes on raw inputs and PCA, transfer
baselines and training-row naming, and evaluate() on new rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.cluster import DBSCAN, AgglomerativeClustering, KMeans
from sklearn.datasets import load_digits, load_wine
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE, trustworthiness
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from app.ml import registry
from app.ml.base import CapabilityError, FitInput, InputError, NullReport
from app.ml.deep.evaluate import HELD_OUT, probe_metrics
from app.ml.scores import label_agreement, purity


def wine() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_wine(return_X_y=True)
    return x, np.array([f"cultivar_{v}" for v in y], dtype=object)


def fit(name: str, x, params: dict, y=None):
    algo = registry.get(name)
    # y in both slots: each family reads its own (indices for probes, labels for agreement).
    return algo.fit(FitInput(x, y=y, labels=y), algo.own(params), NullReport())


def test_purity_is_the_majority_label_share_of_each_cluster():
    labels = np.array(["a", "a", "b", "b", "b", "c", "c"])
    clusters = np.array([0, 0, 0, 1, 1, 2, -1])
    # cluster 0: a,a,b -> 2; cluster 1: b,b -> 2; cluster 2: c -> 1; noise -1: c -> 1
    assert purity(labels, clusters) == pytest.approx(6 / 7)


@pytest.mark.parametrize("name, params, reference", [
    ("kmeans", {"n_clusters": 3, "random_state": 0, "n_init": 3, "standardize": True},
     lambda xs: KMeans(n_clusters=3, random_state=0, n_init=3).fit(xs).labels_),
    ("agglomerative", {"n_clusters": 3, "standardize": True},
     lambda xs: AgglomerativeClustering(n_clusters=3).fit(xs).labels_),
    ("dbscan", {"eps": 2.2, "min_samples": 5, "standardize": True},
     lambda xs: DBSCAN(eps=2.2, min_samples=5).fit(xs).labels_),
])
def test_clustering_with_labels_reports_ari_nmi_purity_of_its_own_labels(name, params, reference):
    x, y = wine()
    model = fit(name, x, params, y=y)
    own = reference(StandardScaler().fit_transform(x))
    np.testing.assert_array_equal(model.training_labels, own)
    m = model.metrics
    assert m["ari"] == pytest.approx(skm.adjusted_rand_score(y, own), abs=1e-12)
    assert m["nmi"] == pytest.approx(skm.normalized_mutual_info_score(y, own), abs=1e-12)
    table = skm.cluster.contingency_matrix(y, own)
    assert m["purity"] == pytest.approx(table.max(axis=0).sum() / len(y), abs=1e-12)


def test_clustering_without_labels_reports_no_agreement():
    x, _ = wine()
    assert "ari" not in fit("kmeans", x, {"n_clusters": 3}).metrics


def test_agglomerative_keeps_its_own_labels_through_save_and_load(tmp_path):
    x, y = wine()
    model = fit("agglomerative", x, {"n_clusters": 3, "standardize": False}, y=y)  # raw wine: predict reassigns rows
    model.save(tmp_path)
    loaded = registry.load_trained("agglomerative", tmp_path)
    own = AgglomerativeClustering(n_clusters=3).fit(x).labels_
    np.testing.assert_array_equal(loaded.training_labels, own)
    assert (np.asarray(loaded.predict(x)["predictions"]) != own).any()


def test_tsne_reports_trustworthiness_as_sklearn_computes_it():
    x = load_digits().data[:300]
    model = fit("tsne", x, {"random_state": 0, "max_iter": 250, "standardize": False})
    emb = TSNE(random_state=0, max_iter=250, init="pca").fit_transform(x)
    np.testing.assert_allclose(model.training_embedding, emb, rtol=1e-5, atol=1e-4)
    assert model.metrics["trustworthiness"] == pytest.approx(
        trustworthiness(x, emb, n_neighbors=5), abs=1e-6)


def probe_reference(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    n_test = int(np.ceil(HELD_OUT * len(y)))
    return train_test_split(x, y, test_size=n_test, stratify=y, random_state=seed)


def lr_accuracy(a, b, ya, yb) -> float:
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(a, ya)
    return float(pipe.score(b, yb))


def test_probe_yardsticks_equal_sklearn_on_the_same_split():
    digits = load_digits()
    x, y = digits.data[:600], digits.target[:600]
    noise = 0.01 * np.random.default_rng(0).normal(size=(600, 8))
    emb = PCA(n_components=8, random_state=0).fit_transform(x) + noise
    got = probe_metrics(emb, y, seed=3, raw=x)
    a, b, ya, yb = probe_reference(x, y, 3)
    raw = lr_accuracy(a, b, ya, yb)
    pca = PCA(n_components=8, random_state=3).fit(a)
    pca_acc = lr_accuracy(pca.transform(a), pca.transform(b), ya, yb)
    ea, eb, _, _ = probe_reference(emb, y, 3)
    probe = lr_accuracy(ea, eb, ya, yb)
    assert got["linear_probe_accuracy"] == pytest.approx(probe, abs=1e-12)
    assert got["raw_probe_accuracy"] == pytest.approx(raw, abs=1e-12)
    assert got["pca_probe_accuracy"] == pytest.approx(pca_acc, abs=1e-12)
    assert got["pca_probe_width"] == 8
    assert got["probe_gain_over_raw"] == pytest.approx(probe - raw, abs=1e-12)
    assert got["probe_gain_over_pca"] == pytest.approx(probe - pca_acc, abs=1e-12)


def test_a_self_supervised_job_with_labels_reports_its_yardsticks():
    digits = load_digits()
    x, y = digits.data[:400], digits.target[:400]
    model = fit("autoencoder", x, {"epochs": 2, "hidden_dims": [32], "latent_dim": 8}, y=y)
    m = model.metrics
    for key in ("raw_probe_accuracy", "pca_probe_accuracy", "probe_gain_over_raw"):
        assert key in m, m
    # The raw yardstick reads the rows as the model does: standardised with its own stats.
    xs = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1)
    a, b, ya, yb = probe_reference(xs, y, 0)
    assert m["raw_probe_accuracy"] == pytest.approx(lr_accuracy(a, b, ya, yb), abs=1e-6)
    assert m["probe_gain_over_raw"] == pytest.approx(
        m["linear_probe_accuracy"] - m["raw_probe_accuracy"], abs=1e-12)


def test_evaluate_scores_a_clustering_against_labels_of_new_rows():
    x, y = wine()
    model = fit("kmeans", x[::2], {"n_clusters": 3, "standardize": True, "n_init": 3})
    got = model.evaluate(x[1::2], y[1::2])
    pred = model.predict(x[1::2])["predictions"]
    assert got == label_agreement(y[1::2], pred)
    assert got["ari"] == pytest.approx(skm.adjusted_rand_score(y[1::2], pred))
    with pytest.raises(InputError, match="target"):
        model.evaluate(x[1::2], None)


def test_evaluate_gives_reconstruction_error_where_defined_and_refuses_elsewhere():
    x = load_digits().data[:300]
    pca = fit("pca", x, {"n_components": 5, "standardize": False})
    ref = PCA(n_components=5).fit(x)
    recon = ref.inverse_transform(ref.transform(x))
    assert pca.evaluate(x, None)["reconstruction_error"] == pytest.approx(
        float(((x - recon) ** 2).mean()), rel=1e-9)
    ae = fit("autoencoder", x, {"epochs": 1, "hidden_dims": [16], "latent_dim": 4})
    out = ae.predict(x)
    assert ae.evaluate(x, None)["reconstruction_error"] == pytest.approx(
        float(np.mean(out["reconstruction_error"])), rel=1e-6)
    contrastive = fit("contrastive", x, {"epochs": 1, "hidden_dims": [16], "embedding_dim": 4,
                                         "projection_dim": 4})
    with pytest.raises(CapabilityError):
        contrastive.evaluate(x, None)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """An autoencoder trained on unlabelled rows, saved as the service saves models."""
    from app.ml.base import BackboneRef

    x, _ = wine()
    model = fit("autoencoder", x, {"epochs": 3, "hidden_dims": [16], "latent_dim": 4})
    folder = tmp_path_factory.mktemp("backbone")
    model.save(folder)
    return BackboneRef(spec="model:ae", source="model", name="ae", data_kind="tabular",
                       path=str(folder), model_algorithm="autoencoder")


def fit_transfer(ref, x, y, **params):
    algo = registry.get("transfer")
    p = algo.own({"backbone": ref.spec, "epochs": 5, "batch_size": 32, **params})
    return algo.fit(FitInput(x, labels=y, backbone=ref), p, NullReport()), p


def test_transfer_reports_the_raw_logistic_regression_baseline_on_its_split(backbone):
    from app.ml.transfer.split import split

    x, y = wine()
    model, p = fit_transfer(backbone, x, y, validation_fraction=0.3)
    m = model.metrics
    classes = sorted(set(y.tolist()))
    targets = np.array([classes.index(v) for v in y])
    train, held = split(targets, model.task, p)
    assert m["val_rows"] == len(held) > 0
    ref = lr_accuracy(x[train], x[held], targets[train], targets[held])
    assert m["baseline_accuracy"] == pytest.approx(ref, abs=1e-12)
    assert m["gain_over_baseline"] == pytest.approx(m["accuracy"] - ref, abs=1e-12)


def test_transfer_without_held_out_rows_names_its_metrics_train(backbone):
    x, y = wine()
    model, _ = fit_transfer(backbone, x, y, validation_fraction=0)
    m = model.metrics
    assert m["eval_split"] == "train"
    assert not {"accuracy", "macro_f1", "baseline_accuracy"} & set(m)
    pred = np.array(model.predict(x)["predictions"], dtype=object)
    assert m["train_accuracy"] == pytest.approx(float((pred == y).mean()))
    assert m["train_macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["train_baseline_accuracy"] == pytest.approx(
        lr_accuracy(x, x, y, y), abs=1e-12)


def test_transfer_evaluate_on_new_rows_equals_sklearn(backbone):
    x, y = wine()
    model, _ = fit_transfer(backbone, x[::2], y[::2])
    out = model.predict(x[1::2])
    proba = np.asarray(out["probabilities"])
    classes = model.classes
    truth = np.array([classes.index(v) for v in y[1::2]])
    got = model.evaluate(x[1::2], y[1::2])
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(truth, proba.argmax(1)))
    assert got["macro_f1"] == pytest.approx(skm.f1_score(truth, proba.argmax(1), average="macro"))
    assert got["log_loss"] == pytest.approx(skm.log_loss(truth, proba), rel=1e-6)
    with pytest.raises(InputError, match="not trained on"):
        model.evaluate(x[:3], np.array(["cultivar_0", "cultivar_9", "x"], dtype=object))


def test_reconstruction_error_on_training_rows_is_named_train():
    x = load_digits().data[:200]
    p = {"epochs": 1, "hidden_dims": [16], "latent_dim": 4}
    held = fit("autoencoder", x, p).metrics
    trained = fit("autoencoder", x, {**p, "validation_fraction": 0})
    assert "val_reconstruction_error" in held and "train_reconstruction_error" not in held
    m = trained.metrics
    assert "val_reconstruction_error" not in m
    assert m["train_reconstruction_error"] == pytest.approx(
        float(np.mean(trained.predict(x)["reconstruction_error"])), rel=1e-5)
