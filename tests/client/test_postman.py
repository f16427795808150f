"""The committed Postman collection is the generator's output for this app's OpenAPI document."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pretrainer_client import postman

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "postman"


def _requests(collection: dict) -> dict[tuple[str, str], dict]:
    out = {}
    for folder in collection["item"]:
        for item in folder["item"]:
            path = "/" + "/".join(item["request"]["url"]["path"])
            out[(item["request"]["method"], path)] = item
    return out


def test_the_committed_collection_is_up_to_date(client):
    generated = postman.dump(postman.collection(client.get("/openapi.json").json()))
    committed = (COMMITTED / postman.COLLECTION_FILE).read_text()
    assert committed == generated, ("postman/ is stale: run "
                                    "`.venv/bin/python -m pretrainer_client.postman`")
    environment = (COMMITTED / postman.ENVIRONMENT_FILE).read_text()
    assert environment == postman.dump(postman.environment())


def test_every_operation_is_in_the_collection_with_bearer_auth(client):
    doc = client.get("/openapi.json").json()
    collection = json.loads((COMMITTED / postman.COLLECTION_FILE).read_text())
    assert collection["info"]["schema"] == postman.SCHEMA
    assert collection["auth"]["bearer"][0]["value"] == "{{apiKey}}"
    requests = _requests(collection)
    expected = {(m.upper(), re.sub(r"/\{(\w+)\}(?=/|$)", r"/:\1", p).replace("{", "{{")
                 .replace("}", "}}")) for p, ops in doc["paths"].items() for m in ops}
    assert set(requests) == expected
    job = requests[("POST", "/v1/jobs")]
    assert json.loads(job["request"]["body"]["raw"])["algorithm"] == "kmeans"
    assert "job_id" in job["event"][0]["script"]["exec"][0]
    predict = requests[("POST", "/v1/models/:model_id/predict")]
    assert predict["request"]["url"]["variable"][0]["value"] == "{{model_id}}"
    assert {r["code"] for r in predict["response"]} >= {200, 404, 422}
    assert ("GET", "/v1/models/:model_id/plots/{{kind}}.png") in requests
    env = json.loads((COMMITTED / postman.ENVIRONMENT_FILE).read_text())
    assert {v["key"] for v in env["values"]} == {"baseUrl", "apiKey"}
