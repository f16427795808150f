"""lda against scikit-learn's LinearDiscriminantAnalysis on the same standardised rows and the
same held-out split: answers, metrics, save/load and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.datasets import load_wine
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from app.ml import registry
from app.ml.base import FitInput, InputError, NullReport


@pytest.fixture(scope="module")
def wine() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_wine(return_X_y=True)
    names = np.array(["barolo", "grignolino", "barbera"], dtype=object)[y]
    return x, names


def fit(x, labels, **params):
    return registry.get("lda").fit(FitInput(x, labels=labels), params, NullReport())


def reference(x, labels, *, test_size=0.2, seed=0, **kw):
    """scikit-learn on the same split (stratified, test_size rows) and the same scaling."""
    n_held = round(len(x) * test_size)
    train, held = train_test_split(np.arange(len(x)), test_size=n_held, random_state=seed,
                                   stratify=labels)
    train, held = np.sort(train), np.sort(held)
    scaler = StandardScaler().fit(x[train])
    lda = LinearDiscriminantAnalysis(**kw).fit(scaler.transform(x[train]), labels[train])
    return scaler, lda, train, held


def test_answers_and_metrics_equal_sklearn(wine):
    x, labels = wine
    model = fit(x, labels, test_size=0.25, random_state=3)
    scaler, ref, train, held = reference(x, labels, test_size=0.25, seed=3)
    xs = scaler.transform(x)
    answer = model.predict(x)
    # Classes in name order, as scikit-learn sorts them; predictions are the labels themselves.
    assert model.classes == ["barbera", "barolo", "grignolino"] == list(ref.classes_)
    assert answer["predictions"] == ref.predict(xs).tolist()
    np.testing.assert_allclose(answer["probabilities"], ref.predict_proba(xs), rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(model.embed(x), ref.transform(xs), rtol=1e-9, atol=1e-12)
    m = model.metrics
    np.testing.assert_allclose(m["explained_variance_ratio"], ref.explained_variance_ratio_)
    assert m["accuracy"] == accuracy_score(labels[held], ref.predict(xs[held]))
    assert m["train_accuracy"] == accuracy_score(labels[train], ref.predict(xs[train]))
    assert (m["train_rows"], m["test_rows"], m["n_classes"], m["n_components"]) == (
        len(train), len(held), 3, 2)
    assert model.task == {"head": "classification", "classes": model.classes,
                          "class_values": model.classes}


def test_eigen_shrinkage_priors_and_components_equal_sklearn(wine):
    x, labels = wine
    model = fit(x, labels, solver="eigen", shrinkage=0.3, n_components=1,
                priors={"barolo": 2, "grignolino": 1, "barbera": 1})
    scaler, ref, _, _ = reference(x, labels, solver="eigen", shrinkage=0.3, n_components=1,
                                  priors=[0.25, 0.5, 0.25])
    xs = scaler.transform(x)
    np.testing.assert_allclose(model.predict(x)["probabilities"], ref.predict_proba(xs),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.embed(x), ref.transform(xs), rtol=1e-9, atol=1e-12)
    assert model.embed(x).shape == (len(x), 1) and model.metrics["n_components"] == 1


def test_numeric_labels_answer_as_numbers_and_raw_rows_without_standardize(wine):
    x, _ = wine
    y = load_wine().target
    model = fit(x, y, standardize=False, test_size=0)
    ref = LinearDiscriminantAnalysis().fit(x, y)
    assert model.predict(x[:5])["predictions"] == ref.predict(x[:5]).tolist()
    assert all(isinstance(v, int) for v in model.predict(x[:5])["predictions"])
    assert model.metrics["test_rows"] == 0 and "accuracy" not in model.metrics
    assert model.metrics["train_accuracy"] == accuracy_score(y, ref.predict(x))


def test_save_load_and_evaluate(wine, tmp_path):
    x, labels = wine
    model = fit(x, labels)
    model.save(tmp_path)
    back = registry.load_trained("lda", tmp_path)
    assert back.predict(x) == model.predict(x)
    np.testing.assert_array_equal(back.embed(x), model.embed(x))
    scores = back.evaluate(x, labels)
    assert scores["accuracy"] == accuracy_score(labels, model.predict(x)["predictions"])
    with pytest.raises(InputError, match="not trained on"):
        back.evaluate(x[:2], np.array(["barolo", "chianti"], dtype=object))


def test_refusals(wine):
    x, labels = wine
    algo = registry.get("lda")
    with pytest.raises(ValidationError, match="shrinkage needs solver 'eigen'"):
        algo.params_model.model_validate({"shrinkage": 0.5})
    with pytest.raises(ValidationError):
        algo.params_model.model_validate({"solver": "lsqr"})
    with pytest.raises(ValueError, match="needs labels"):
        fit(x, None)
    with pytest.raises(ValueError, match="continuous target"):
        fit(x, x[:, 0])
    with pytest.raises(ValueError, match="priors must name every class"):
        fit(x, labels, priors={"barolo": 1})
    assert algo.check_fit(algo.own({"n_components": 20}), n_rows=100, n_features=13) == [
        ("n_components", ("n_components=20 must not exceed the number of features (13), "
                          "nor classes - 1"))]
