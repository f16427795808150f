"""A Postman collection (v2.1) and environment generated from the service's OpenAPI document.

    python -m pretrainer_client.postman                  # from the app in this checkout
    python -m pretrainer_client.postman --openapi URL    # from a running service

writes postman/pretrainer.postman_collection.json and postman/pretrainer.postman_environment.json.
The requests carry the document's examples; uploading a dataset, submitting a job and reading a
finished job store dataset_id, job_id and model_id for the requests after them.
"""

from __future__ import annotations

import argparse
import json
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
NAMESPACE = uuid.UUID("8a5e3c1e-6f0b-4d55-9b7e-2f1c0d4a9e77")
OUT = Path("postman")
COLLECTION_FILE = "pretrainer.postman_collection.json"
ENVIRONMENT_FILE = "pretrainer.postman_environment.json"
DEFAULT_URL = "http://127.0.0.1:8000"
# Path parameters whose values a request before them stores (see CAPTURE).
VARIABLES = {"dataset_id": "", "job_id": "", "model_id": "", "name": "kmeans",
             "kind": "embedding"}
CAPTURE = {
    "POST /v1/datasets": ["pm.collectionVariables.set('dataset_id', pm.response.json().id);"],
    "POST /v1/jobs": ["pm.collectionVariables.set('job_id', pm.response.json().id);"],
    "GET /v1/jobs/{job_id}": ["const job = pm.response.json();",
                              "if (job.model_id) pm.collectionVariables.set('model_id', job.model_id);"],
}


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


def _body(op: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        example = content["application/json"].get("example", {})
        return ({"mode": "raw", "raw": json.dumps(example, indent=2),
                 "options": {"raw": {"language": "json"}}},
                [{"key": "Content-Type", "value": "application/json"}])
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


def _item(method: str, path: str, op: dict[str, Any]) -> dict[str, Any]:
    name = f"{method} {path}"
    body, headers = _body(op)
    headers += [{"key": p["name"], "value": "", "description": p.get("description", ""),
                 "disabled": True} for p in op.get("parameters", []) if p["in"] == "header"]
    request: dict[str, Any] = {"method": method, "header": headers, "url": _url(path, op),
                               "description": op.get("description") or op.get("summary", "")}
    if body:
        request["body"] = body
    item: dict[str, Any] = {"id": _id(name), "name": op.get("summary") or name,
                            "request": request, "response": _responses(name, request, op)}
    if name in CAPTURE:
        item["event"] = [{"listen": "test", "script": {"type": "text/javascript",
                                                       "exec": CAPTURE[name]}}]
    return item


def collection(openapi: dict[str, Any]) -> dict[str, Any]:
    """The Postman collection of every operation, one folder per tag, in document order."""
    folders: dict[str, list[dict[str, Any]]] = {}
    for path, ops in openapi["paths"].items():
        for method, op in ops.items():
            tag = (op.get("tags") or ["other"])[0]
            folders.setdefault(tag, []).append(_item(method.upper(), path, op))
    info = openapi.get("info", {})
    return {
        "info": {"_postman_id": _id("collection"), "name": info.get("title", "Pretrainer"),
                 "description": info.get("description", ""), "schema": SCHEMA},
        "auth": {"type": "bearer", "bearer": [{"key": "token", "value": "{{apiKey}}",
                                               "type": "string"}]},
        "variable": [{"key": k, "value": v} for k, v in VARIABLES.items()],
        "item": [{"name": tag, "item": items} for tag, items in folders.items()],
    }


def environment(base_url: str = DEFAULT_URL) -> dict[str, Any]:
    """The environment: baseUrl and apiKey (empty until access control is on)."""
    return {"id": _id("environment"), "name": "Pretrainer (local)",
            "values": [{"key": "baseUrl", "value": base_url, "type": "default", "enabled": True},
                       {"key": "apiKey", "value": "", "type": "secret", "enabled": True}],
            "_postman_variable_scope": "environment"}


def _openapi(source: str | None) -> dict[str, Any]:
    if source and source.startswith(("http://", "https://")):
        return httpx.get(source, timeout=30).raise_for_status().json()
    if source:
        return json.loads(Path(source).read_text())
    import tempfile

    from app.config import Settings  # the server in this checkout (not needed with --openapi)
    from app.main import create_app

    with tempfile.TemporaryDirectory() as tmp:
        return create_app(Settings(data_dir=Path(tmp))).openapi()


def dump(data: dict[str, Any]) -> str:
    """The committed form: stable key order, two-space indent, a final newline."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pretrainer_client.postman", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--openapi", default=None, help="a file or URL of the OpenAPI document; "
                                                   "default: the app in this checkout")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / COLLECTION_FILE).write_text(dump(collection(_openapi(args.openapi))))
    (args.out / ENVIRONMENT_FILE).write_text(dump(environment()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
