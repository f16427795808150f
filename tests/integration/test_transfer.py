"""Pre-train, then transfer, through the real worker: contrastive on unlabelled digit PNGs, then
a head on a labelled ZIP of 10 digits per class."""

from __future__ import annotations

import base64
import io
import zipfile

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.integration.test_end_to_end import wait_job
from tests.integration.test_self_supervised import digits_png

pytestmark = pytest.mark.integration
DONE = {"succeeded", "failed", "cancelled"}


def digits_zip(indices: np.ndarray, *, labelled: bool) -> bytes:
    target = load_digits().target
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in indices:
            name = f"{target[i]}/{i}.png" if labelled else f"{i}.png"
            z.writestr(name, digits_png(int(i)))
    return buf.getvalue()


@pytest.fixture(scope="module")
def pretrained(embedded) -> dict:
    """A contrastive model pretrained here on every digit PNG, without labels (about 15 s)."""
    http = embedded.http
    every = np.arange(len(load_digits().target))
    archive = digits_zip(every, labelled=False)
    r = http.post("/v1/datasets", files={"file": ("unlabelled.zip", archive)})
    assert r.status_code == 201, r.text
    r = http.post("/v1/jobs", json={"dataset_id": r.json()["id"], "algorithm": "contrastive",
                                    "params": {"epochs": 30, "batch_size": 128, "embedding_dim": 64,
                                               "base_channels": 16, "hidden_dims": [128]}})
    pre = wait_job(http, r.json()["id"], DONE, timeout=600)
    assert pre["status"] == "succeeded", pre
    return pre


def accuracy(http, model_id: str, test: np.ndarray) -> float:
    """Share of the test digits the model's predict gets right, over HTTP."""
    target = load_digits().target
    instances = [{"b64": base64.b64encode(digits_png(int(i))).decode()} for i in test]
    r = http.post(f"/v1/models/{model_id}/predict", json={"instances": instances})
    assert r.status_code == 200, r.text
    return float(np.mean(np.array(r.json()["predictions"]).astype(int) == target[test]))


def test_default_transfer_on_ten_labels_per_class_scores_ninety_percent(embedded, pretrained):
    """Only `backbone` given: the data picks the training length, batch, rate and split."""
    http = embedded.http
    target = load_digits().target
    scores = []
    for draw in range(3):
        rng = np.random.default_rng(draw)
        few = np.concatenate([rng.choice(np.where(target == k)[0], 10, replace=False)
                              for k in range(10)])
        r = http.post("/v1/datasets", files={"file": (f"draw{draw}.zip",
                                                      digits_zip(few, labelled=True))})
        r = http.post("/v1/jobs", json={"dataset_id": r.json()["id"], "algorithm": "transfer",
                                        "params": {"backbone": f"model:{pretrained['model_id']}"}})
        assert r.status_code == 202, r.text
        job = wait_job(http, r.json()["id"], DONE, timeout=300)
        assert job["status"] == "succeeded", job
        # 100 labels: every one trains, in batches of 25 for 300 steps, at the probe's rate.
        assert job["metrics"]["resolved_params"] == {
            "epochs": 75, "batch_size": 25, "learning_rate": 0.01, "validation_fraction": 0.0}
        assert len(job["history"]) == 75
        # 600 of the digits no job saw labelled (a seeded sample keeps make test quick)
        rest = rng.choice(np.setdiff1d(np.arange(len(target)), few), 600, replace=False)
        scores.append(accuracy(http, job["model_id"], rest))
    assert min(scores) >= 0.90, scores


def test_pretrain_on_unlabelled_digits_then_transfer_to_ten_per_class(embedded, pretrained):
    http = embedded.http
    target = load_digits().target
    few = np.concatenate([np.where(target == k)[0][:10] for k in range(10)])
    pre = pretrained
    pre_ds = pre["dataset_id"]

    r = http.post("/v1/datasets", files={"file": ("ten_per_class.zip", digits_zip(few, labelled=True))})
    labelled = r.json()
    assert labelled["n_rows"] == 100 and len(labelled["classes"]) == 10
    jobs = {}
    for warm in (True, False):  # the from-scratch baseline shows what pretraining bought
        r = http.post("/v1/jobs", json={"dataset_id": labelled["id"], "algorithm": "transfer",
                                        "params": {"backbone": f"model:{pre['model_id']}",
                                                   "pretrained": warm, "freeze": "none",
                                                   "epochs": 30, "batch_size": 16,
                                                   "learning_rate": 0.003, "backbone_lr_mult": 0.3,
                                                   "validation_fraction": 0.2}})
        assert r.status_code == 202, r.text
        jobs[warm] = wait_job(http, r.json()["id"], DONE, timeout=300)
    for job in jobs.values():
        assert job["status"] == "succeeded", job
        m = job["metrics"]
        assert m["val_rows"] == 20 and m["eval_split"] == "held_out"
        assert np.array(m["confusion_matrix"]).sum() == 20
        assert m["classes"] == [str(k) for k in range(10)]
    assert jobs[True]["metrics"]["pretrained"] is True and jobs[False]["metrics"]["pretrained"] is False

    model = http.get(f"/v1/models/{jobs[True]['model_id']}").json()
    chain = model["lineage"]["chain"]
    assert chain[0] == {"model_id": pre["model_id"], "algorithm": "contrastive",
                        "dataset_id": pre_ds, "job_id": pre["id"]}
    assert chain[-1]["dataset_id"] == labelled["id"] and chain[-1]["model_id"] == model["id"]
    test = np.arange(1000, 1010)
    instances = [{"b64": base64.b64encode(digits_png(int(i))).decode()} for i in test]
    pred = http.post(f"/v1/models/{model['id']}/predict", json={"instances": instances}).json()
    assert all(p in model["input_schema"]["classes"] for p in pred["predictions"])
    assert np.allclose(np.array(pred["probabilities"]).sum(axis=1), 1)
    r = http.delete(f"/v1/models/{pre['model_id']}")
    assert r.status_code == 409 and model["id"] in r.json()["detail"]
