"""A Postman collection (v2.1) and environment generated from the service's OpenAPI document.

    pretrainer postman                  # from the app in this checkout
    pretrainer postman --openapi URL    # from a running service

writes postman/pretrainer.postman_collection.json and postman/pretrainer.postman_environment.json.
The collection is a walk-through that `newman run` plays end to end with no edits: it uploads
the small CSV it carries, trains a `vae` on it, polls the job until it ends, predicts, embeds
and generates, draws the plots, downloads, and deletes what it made last. Every request asserts
its status and the shape of its body; ids are stored only from successful responses.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
NAMESPACE = uuid.UUID("8a5e3c1e-6f0b-4d55-9b7e-2f1c0d4a9e77")
OUT = Path("postman")
COLLECTION_FILE = "pretrainer.postman_collection.json"
ENVIRONMENT_FILE = "pretrainer.postman_environment.json"
DEFAULT_URL = "http://127.0.0.1:8000"
# Path parameters whose values a request before them stores (see STEPS).
VARIABLES = {"dataset_id": "", "job_id": "", "model_id": "", "name": "kmeans",
             "kind": "embedding", "polls": "0", "alias": "production", "version": ""}
# The job's status is read at most this many times, a second apart, before the run fails.
MAX_POLLS = 300
BOUNDARY = "pretrainer-postman"


def _csv() -> str:
    """The dataset the collection uploads: 60 rows of three clusters in columns a, b, c, d
    (the columns the predict and embed examples name)."""
    centres = ((0.0, 0.0, 0.0, 0.0), (6.0, 6.0, -6.0, 6.0), (-6.0, 6.0, 6.0, -6.0))
    rows = ["a,b,c,d"]
    for i in range(60):
        centre = centres[i % 3]
        rows.append(",".join(f"{c + ((i * 7 + j * 3) % 11 - 5) / 10:.1f}"
                             for j, c in enumerate(centre)))
    return "\n".join(rows) + "\n"


CSV = _csv()
TUS = "1.0.0"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()

# The job the walk-through trains: the cheapest model that predicts, embeds and generates.
JOB = {"dataset_id": "{{dataset_id}}", "algorithm": "vae", "name": "postman walk-through",
       "params": {"epochs": 3, "batch_size": 32, "hidden_dims": [16], "latent_dim": 2,
                  "seed": 0}}
# The order of a run: nothing is deleted before everything that reads it has run.
STAGES = ("service", "upload", "train", "use", "plots", "downloads", "delete")


@dataclass(frozen=True)
class Step:
    """What the walk-through expects of one operation: when it runs, its status, and JavaScript
    lines that check the body (bound to `body`: parsed JSON, or the text) and store ids."""

    stage: str
    status: int
    checks: tuple[str, ...] = ()
    after: tuple[str, ...] = ()  # runs after the tests: captures, the poll loop
    body: dict[str, Any] | None = None
    rank: int = 0  # order inside the stage (then the document's)
    headers: tuple[tuple[str, str], ...] = ()  # request headers the step sends
    raw: str | None = None  # a raw request body (a tus PATCH's bytes)


# A 204 answers nothing: a body would be a protocol error that some clients choke on.
NO_BODY = ("pm.expect(pm.response.text()).to.eql('');",)


def _keys(*names: str) -> str:
    return f"pm.expect(body).to.include.all.keys({', '.join(json.dumps(n) for n in names)});"


def _eq(expr: str, variable: str) -> str:
    return f"pm.expect({expr}).to.eql(pm.collectionVariables.get({json.dumps(variable)}));"


def _count(field: str, request_field: str) -> str:
    return (f"pm.expect(body.{field}).to.be.an('array').with.lengthOf("
            f"JSON.parse(pm.request.body.raw).{request_field});")


def _poll(test: str, *then: str) -> tuple[str, ...]:
    """Ask again a second later while the body's status is queued or running (at most
    MAX_POLLS times in all), then test that it succeeded and run `then`."""
    return (
        "const polls = Number(pm.collectionVariables.get('polls')) + 1;",
        "pm.collectionVariables.set('polls', String(polls));",
        "if (['queued', 'running'].includes(body.status) && polls < " + str(MAX_POLLS) + ") {",
        "  setTimeout(() => {}, 1000);  // poll again in a second",
        "  pm.execution.setNextRequest(pm.info.requestId);",
        "} else {",
        (f"  pm.test('{test}', () => pm.expect(body.status, JSON.stringify("
         "body.error)).to.eql('succeeded'));"),
        *then,
        "}")


PAGE = _keys("items", "total", "next") + " pm.expect(body.items).to.be.an('array');"
PNG = "pm.expect(pm.response.headers.get('Content-Type')).to.eql('image/png');"
STEPS: dict[str, Step] = {
    "GET /healthz": Step("service", 200, ("pm.expect(body.status).to.eql('ok');",)),
    "GET /readyz": Step("service", 200, ("pm.expect(body.status).to.eql('ok');",
                                         _keys("database", "broker", "store").replace(
                                             "expect(body)", "expect(body.checks)"))),
    "GET /metrics": Step("service", 200, ("pm.expect(body).to.include('# TYPE pretrainer_');",)),
    "GET /v1/algorithms": Step("service", 200, (
        _keys("items"), "pm.expect(body.items.map(a => a.name)).to.include('vae');")),
    "GET /v1/algorithms/{name}": Step("service", 200, (
        _keys("name", "family", "capabilities", "params_schema"), _eq("body.name", "name"))),
    "GET /v1/backbones": Step("service", 200, (_keys("architectures"),)),
    "POST /v1/datasets": Step("upload", 201, (
        _keys("id", "name", "kind", "format", "n_rows", "columns", "sha256"),
        "pm.expect(body.n_rows).to.eql(60);",
        "pm.expect(body.columns.map(c => c.name)).to.eql(['a', 'b', 'c', 'd']);"),
        after=(("if (pm.response.code === 201) "
               "pm.collectionVariables.set('dataset_id', body.id);"),)),
    "GET /v1/datasets": Step("upload", 200, (PAGE,)),
    # Resumable (tus) uploads: the same CSV in one PATCH; the dataset it becomes is kept.
    "OPTIONS /v1/uploads": Step("upload", 204, (
        "pm.expect(pm.response.headers.get('Tus-Version')).to.include('1.0.0');",
        "pm.expect(pm.response.headers.get('Tus-Extension')).to.include('checksum');"), rank=1),
    "POST /v1/uploads": Step("upload", 201, (
        "pm.expect(pm.response.headers.get('Location')).to.match(/\\/v1\\/uploads\\/\\w+$/);",
        "pm.expect(pm.response.headers.get('Tus-Resumable')).to.eql('1.0.0');"),
        after=(("if (pm.response.code === 201) pm.collectionVariables.set('upload_id', "
               "pm.response.headers.get('Location').split('/').pop());"),),
        headers=(("Tus-Resumable", TUS), ("Upload-Length", str(len(CSV.encode()))),
                 ("Upload-Metadata", "filename " + _b64("postman-tus.csv") + ",name "
                  + _b64("postman tus upload"))), rank=2),
    "HEAD /v1/uploads/{upload_id}": Step("upload", 200, (
        "pm.expect(pm.response.headers.get('Upload-Offset')).to.eql('0');",
        f"pm.expect(pm.response.headers.get('Upload-Length')).to.eql('{len(CSV.encode())}');"),
        headers=(("Tus-Resumable", TUS),), rank=3),
    "PATCH /v1/uploads/{upload_id}": Step("upload", 204, (
        f"pm.expect(pm.response.headers.get('Upload-Offset')).to.eql('{len(CSV.encode())}');",),
        headers=(("Tus-Resumable", TUS), ("Upload-Offset", "0"),
                 ("Content-Type", "application/offset+octet-stream")), raw=CSV, rank=4),
    "GET /v1/uploads/{upload_id}": Step("upload", 200, (
        _keys("id", "offset", "length", "status"), _eq("body.id", "upload_id"),
        "pm.expect(body.offset).to.eql(body.length);",
        "pm.expect(body.status).to.be.oneOf(['inspecting', 'ready']);"), rank=5),
    "DELETE /v1/uploads/{upload_id}": Step("delete", 204, (
        "pm.expect(pm.response.headers.get('Tus-Resumable')).to.eql('1.0.0');",),
        headers=(("Tus-Resumable", TUS),), rank=-2),
    "GET /v1/datasets/{dataset_id}": Step("upload", 200, (_keys("id", "columns"),
                                                          _eq("body.id", "dataset_id"))),
    "POST /v1/jobs": Step("train", 202, (
        _keys("id", "status", "progress", "dataset_id"), _eq("body.dataset_id", "dataset_id"),
        "pm.expect(body.status).to.be.oneOf(['queued', 'running', 'succeeded']);"),
        after=("if (pm.response.code === 202) pm.collectionVariables.set('job_id', body.id);",
               "pm.collectionVariables.set('polls', '0');"),
        body=JOB, rank=-2),
    "GET /v1/jobs/{job_id}": Step("train", 200, (
        _keys("id", "status", "progress", "metrics", "model_id"), _eq("body.id", "job_id")),
        after=_poll("the job succeeded", (
            "  if (body.status === 'succeeded') pm.collectionVariables.set('model_id', "
            "body.model_id);")),
        rank=-1),
    "GET /v1/jobs": Step("train", 200, (PAGE,)),
    "GET /v1/jobs/{job_id}/events": Step("train", 200, (
        "pm.expect(pm.response.headers.get('Content-Type')).to.include('text/event-stream');",
        "pm.expect(body).to.include('succeeded');")),
    # The job has ended: cancelling it changes nothing and says so.
    "POST /v1/jobs/{job_id}/cancel": Step("train", 202, (
        "pm.expect(body.status).to.eql('succeeded');",)),
    "POST /v1/models/{model_id}/predict": Step("use", 200, (
        _count("predictions", "instances.length"),)),
    "POST /v1/models/{model_id}/embed": Step("use", 200, (
        _count("embeddings", "instances.length"),
        "pm.expect(body.embeddings[0]).to.have.lengthOf(2);  // latent_dim")),
    "POST /v1/models/{model_id}/generate": Step("use", 200, (
        _count("samples", "n"), "pm.expect(body.samples[0]).to.have.lengthOf(4);")),
    "GET /v1/models": Step("use", 200, (PAGE,)),
    "GET /v1/models/{model_id}": Step("use", 200, (
        _keys("id", "algorithm", "capabilities", "input_schema"), _eq("body.id", "model_id"),
        "pm.expect(body.capabilities).to.include('generate');")),
    # A vae keeps no training embedding (t-SNE does): the problem says what to call instead.
    "GET /v1/models/{model_id}/embedding": Step("use", 422, (
        "pm.expect(body.detail).to.include('/embed');",)),
    "GET /v1/jobs/{job_id}/plots/loss.png": Step("plots", 200, (PNG,)),
    "GET /v1/models/{model_id}/plots/{kind}.png": Step("plots", 200, (PNG,)),
    "GET /v1/datasets/{dataset_id}/download": Step("downloads", 200, (
        f"pm.expect(body).to.eql({json.dumps(CSV)});",)),
    "GET /v1/datasets/{dataset_id}/export.csv": Step("downloads", 200, (
        "pm.expect(body.split('\\n')[0]).to.eql('a,b,c,d');",
        "pm.expect(body.trim().split('\\n')).to.have.lengthOf(61);")),
    # The registry, after the model has answered: register it under {{name}}, point an alias
    # at that version, read it back, and remove the alias (an aliased model cannot be deleted).
    "POST /v1/registry/{name}/versions": Step("use", 201, (
        _keys("name", "version", "model_id"), _eq("body.model_id", "model_id")),
        after=(("if (pm.response.code === 201) pm.collectionVariables.set('version', "
                "String(body.version));"),),
        body={"model_id": "{{model_id}}"}, rank=1),
    "PUT /v1/registry/{name}/aliases/{alias}": Step("use", 200, (
        _keys("name", "alias", "version"), _eq("String(body.version)", "version")),
        raw='{"version": {{version}}}', rank=2),
    "GET /v1/registry/{name}": Step("use", 200, (
        _keys("versions", "aliases", "history"),
        ("pm.expect(String(body.aliases[pm.collectionVariables.get('alias')])).to.eql("
         "pm.collectionVariables.get('version'));")), rank=3),
    "GET /v1/registry": Step("use", 200, (PAGE,), rank=3),
    "DELETE /v1/registry/{name}/aliases/{alias}": Step("use", 204, NO_BODY, rank=4),
    # A model before the dataset it was trained on.
    "DELETE /v1/models/{model_id}": Step("delete", 204, NO_BODY, rank=-1),
    "DELETE /v1/datasets/{dataset_id}": Step("delete", 204, NO_BODY),
}
# Webhooks: one registered for an event the walk-through never causes (so nothing is sent but
# the test delivery), read, tested, and deleted at the end. A server that cannot resolve the
# URL refuses it (422), and the steps after it answer 404: neither is a server error.
STEPS.update({
    # The lists of what the walk-through has not made: pages of the project's, none of them 5xx.
    **{f"GET /v1/{things}": Step("service", 200, (_keys("items", "total", "next"),
                                                  "pm.expect(body.items).to.be.an('array');"))
       for things in ("sweeps", "comparisons", "webhooks")},
    "POST /v1/webhooks": Step("service", 0, after=(
        "if (pm.response.code === 201) pm.collectionVariables.set('webhook_id', body.id);",),
        body={"url": "https://example.com/pretrainer-postman", "events": ["comparison.failed"]}),
})

# Nearest neighbours, after the model's other answers: index the uploaded dataset with the
# vae, poll the index until it is built, ask it, then delete it (nothing reads it after).
VARIABLES["index_id"] = ""
STEPS.update({
    "POST /v1/models/{model_id}/indexes": Step("use", 202, (
        _keys("id", "job_id", "status"), _eq("body.model_id", "model_id")),
        after=("if (pm.response.code === 202) pm.collectionVariables.set('index_id', body.id);",
               "pm.collectionVariables.set('polls', '0');"),
        body={"dataset_id": "{{dataset_id}}"}, rank=1),
    "GET /v1/models/{model_id}/indexes/{index_id}": Step("use", 200, (
        _keys("id", "status", "n_rows", "metric"), _eq("body.id", "index_id")),
        after=_poll("the index was built"), rank=2),
    "POST /v1/models/{model_id}/neighbors": Step("use", 200, (
        _count("neighbors", "instances.length"),
        "pm.expect(body.neighbors[0]).to.have.lengthOf(JSON.parse(pm.request.body.raw).k);",
        _eq("body.index_id", "index_id")), rank=3),
    "GET /v1/models/{model_id}/indexes": Step("use", 200, (PAGE,), rank=4),
    "DELETE /v1/models/{model_id}/indexes/{index_id}": Step("use", 204, NO_BODY, rank=5),
})


def _default_step(method: str, path: str) -> Step:
    """An operation this generator has no step for: placed by what it does; it must not fail
    with a server error, and an error it answers must be a problem."""
    if path.startswith("/v1/uploads"):  # tus: its own ids, never the walk-through's dataset
        stage = "upload"
    elif method == "DELETE":
        stage = "delete"
    elif "/plots/" in path:
        stage = "plots"
    elif path.startswith("/v1/models"):
        stage = "use"
    elif path.startswith("/v1/jobs"):
        stage = "train"
    elif path.startswith("/v1/datasets"):
        stage = "downloads" if method == "GET" else "upload"
    else:
        stage = "service"
    return Step(stage, 0)


def _tests(step: Step, *, head: bool = False) -> list[str]:
    """The item's test script: status, then body shape (problem+json for any 4xx); a HEAD's
    answer has headers only, so its checks read those."""
    lines = ["const json = (pm.response.headers.get('Content-Type') || '').includes('json');",
             "const body = '';" if head else
             "const body = json ? pm.response.json() : pm.response.text();"]
    if step.status:
        lines.append(f"pm.test('status is {step.status}', () => "
                     f"pm.response.to.have.status({step.status}));")
    else:
        lines.append("pm.test('no server error', () => "
                     "pm.expect(pm.response.code).to.be.below(500));")
    if (step.status >= 400 or not step.status) and not head:
        lines += ["if (pm.response.code >= 400) pm.test('a problem+json body', () => {",
                  ("  pm.expect(pm.response.headers.get('Content-Type')).to.include("
                  "'application/problem+json');"),
                  "  pm.expect(body).to.include.all.keys('type', 'title', 'status', 'detail');",
                  "});"]
    if step.checks:
        lines.append("pm.test('the body has the expected shape', () => {")
        lines += [f"  {check}" for check in step.checks]
        lines.append("});")
    return lines + list(step.after)


def _upload_body() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The dataset as a multipart body the collection carries (no file to pick by hand)."""
    raw = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
           f"filename=\"postman.csv\"\r\nContent-Type: text/csv\r\n\r\n{CSV}\r\n"
           f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n"
           f"postman walk-through\r\n--{BOUNDARY}--\r\n")
    return ({"mode": "raw", "raw": raw},
            [{"key": "Content-Type", "value": f"multipart/form-data; boundary={BOUNDARY}"}])


def _id(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(parts)))


def _url(path: str, op: dict[str, Any]) -> dict[str, Any]:
    # A whole-segment parameter is a Postman path variable; one inside a segment
    # ({kind}.png) is the collection variable of the same name.
    segments = [re.sub(r"^\{(\w+)\}$", r":\1", s) for s in path.strip("/").split("/")]
    segments = [re.sub(r"\{(\w+)\}", r"{{\1}}", s) for s in segments]
    params = op.get("parameters", [])
    url: dict[str, Any] = {
        "raw": "{{baseUrl}}/" + "/".join(segments), "host": ["{{baseUrl}}"], "path": segments}
    variables = [{"key": p["name"], "value": f"{{{{{p['name']}}}}}",
                  "description": p.get("description", "")} for p in params
                 if p["in"] == "path" and f":{p['name']}" in segments]
    query = [{"key": p["name"], "value": str(p.get("schema", {}).get("default", "")),
              "description": p.get("description", ""), "disabled": True}
             for p in params if p["in"] == "query"]
    if variables:
        url["variable"] = variables
    if query:
        url["query"] = query
    return url


def _body(op: dict[str, Any], step: Step) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        example = step.body if step.body is not None else content["application/json"].get(
            "example", {})
        return ({"mode": "raw", "raw": json.dumps(example, indent=2),
                 "options": {"raw": {"language": "json"}}},
                [{"key": "Content-Type", "value": "application/json"}])
    if "multipart/form-data" in content and "file" in content["multipart/form-data"].get(
            "schema", {}).get("properties", {}):
        return _upload_body()
    if "multipart/form-data" in content:
        media = content["multipart/form-data"]
        example = media.get("example", {})
        fields = []
        for name, prop in media.get("schema", {}).get("properties", {}).items():
            binary = prop.get("format") == "binary" or prop.get("items", {}).get("format") == "binary"
            field = {"key": name, "type": "file" if binary else "text",
                     "description": prop.get("description", "")}
            field["src" if binary else "value"] = example.get(name, "")
            fields.append(field)
        return {"mode": "formdata", "formdata": fields}, []
    return None, []


def _responses(name: str, request: dict[str, Any], op: dict[str, Any]) -> list[dict[str, Any]]:
    saved = []
    for status, response in op.get("responses", {}).items():
        for media, content in response.get("content", {}).items():
            if "example" not in content:
                continue
            example = content["example"]
            saved.append({
                "id": _id(name, status), "name": f"{status} {response.get('description', '')}".strip(),
                "originalRequest": {"method": request["method"], "url": request["url"]},
                "code": int(status),
                "status": response.get("description", ""),
                "header": [{"key": "Content-Type", "value": media}],
                "body": example if isinstance(example, str) else json.dumps(example, indent=2),
                "_postman_previewlanguage": "json" if "json" in media else "text"})
    return saved


def _item(method: str, path: str, op: dict[str, Any]) -> tuple[Step, dict[str, Any]]:
    name = f"{method} {path}"
    step = STEPS.get(name) or _default_step(method, path)
    body, headers = _body(op, step)
    if step.raw is not None:
        body = {"mode": "raw", "raw": step.raw}
    sent = dict(step.headers)
    headers += [{"key": p["name"], "value": sent.get(p["name"], ""),
                 "description": p.get("description", ""), "disabled": p["name"] not in sent}
                for p in op.get("parameters", []) if p["in"] == "header"]
    named = {h["key"] for h in headers}
    headers += [{"key": k, "value": v} for k, v in step.headers if k not in named]
    request: dict[str, Any] = {"method": method, "header": headers, "url": _url(path, op),
                               "description": op.get("description") or op.get("summary", "")}
    if body:
        request["body"] = body
    item: dict[str, Any] = {"id": _id(name), "name": op.get("summary") or name,
                            "request": request, "response": _responses(name, request, op)}
    tests = _tests(step, head=method == "HEAD")
    item["event"] = [{"listen": "test", "script": {"type": "text/javascript", "exec": tests}}]
    return step, item


def collection(openapi: dict[str, Any]) -> dict[str, Any]:
    """The Postman collection of every operation, as a walk-through a runner can play end to
    end: one folder per stage (upload, train, use, plots, downloads, delete), each request
    asserting its status and body and storing the ids the ones after it use."""
    items = [_item(method.upper(), path, op) for path, ops in openapi["paths"].items()
             for method, op in ops.items()]
    order = {stage: i for i, stage in enumerate(STAGES)}
    ranked = sorted(enumerate(items), key=lambda x: (order[x[1][0].stage], x[1][0].rank, x[0]))
    folders: dict[str, list[dict[str, Any]]] = {stage: [] for stage in STAGES}
    for _, (step, item) in ranked:
        folders[step.stage].append(item)
    info = openapi.get("info", {})
    return {
        "info": {"_postman_id": _id("collection"), "name": info.get("title", "Pretrainer"),
                 "description": info.get("description", ""), "schema": SCHEMA},
        "auth": {"type": "bearer", "bearer": [{"key": "token", "value": "{{apiKey}}",
                                               "type": "string"}]},
        "variable": [{"key": k, "value": v} for k, v in VARIABLES.items()],
        "item": [{"name": stage, "item": folder} for stage, folder in folders.items() if folder],
    }


def environment(base_url: str = DEFAULT_URL) -> dict[str, Any]:
    """The environment: baseUrl and apiKey (empty until access control is on)."""
    return {"id": _id("environment"), "name": "Pretrainer (local)",
            "values": [{"key": "baseUrl", "value": base_url, "type": "default", "enabled": True},
                       {"key": "apiKey", "value": "", "type": "secret", "enabled": True}],
            "_postman_variable_scope": "environment"}


def openapi_document(source: str | None) -> dict[str, Any]:
    """The OpenAPI document from a file or URL, or, without one, of the app in this checkout."""
    document: dict[str, Any]
    if source and source.startswith(("http://", "https://")):
        document = httpx.get(source, timeout=30).raise_for_status().json()
        return document
    if source:
        document = json.loads(Path(source).read_text())
        return document
    import tempfile

    from app.config import Settings
    from app.main import create_app  # the whole server: only when no document is given

    with tempfile.TemporaryDirectory() as tmp:
        return create_app(Settings(data_dir=Path(tmp))).openapi()


def dump(data: dict[str, Any]) -> str:
    """The committed form: stable key order, two-space indent, a final newline."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write(out: Path = OUT, source: str | None = None) -> None:
    """Write the collection and the environment into out."""
    out.mkdir(parents=True, exist_ok=True)
    (out / COLLECTION_FILE).write_text(dump(collection(openapi_document(source))))
    (out / ENVIRONMENT_FILE).write_text(dump(environment()))
