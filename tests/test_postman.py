"""The committed Postman collection is the generator's output for this app's OpenAPI document."""

from __future__ import annotations

import json
import re
from pathlib import Path

from app import postman

ROOT = Path(__file__).resolve().parents[1]
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
                                    "`.venv/bin/pretrainer postman`")
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
    body = json.loads(job["request"]["body"]["raw"])
    assert body["dataset_id"] == "{{dataset_id}}" and body["algorithm"] == "vae"
    assert "generate" in client.get("/v1/algorithms/vae").json()["capabilities"]
    predict = requests[("POST", "/v1/models/:model_id/predict")]
    assert predict["request"]["url"]["variable"][0]["value"] == "{{model_id}}"
    assert {r["code"] for r in predict["response"]} >= {200, 404, 422}
    assert ("GET", "/v1/models/:model_id/plots/{{kind}}.png") in requests
    env = json.loads((COMMITTED / postman.ENVIRONMENT_FILE).read_text())
    assert {v["key"] for v in env["values"]} == {"baseUrl", "apiKey"}


def test_the_collection_is_a_walk_through_that_asserts_every_response(client):
    collection = json.loads((COMMITTED / postman.COLLECTION_FILE).read_text())
    order = [(folder["name"], item) for folder in collection["item"] for item in folder["item"]]
    # the tus upload's termination, the model, then the dataset it was trained on
    assert [item["name"] for name, item in order if name == "delete"] == [
        "Terminate", "Delete Model", "Delete Dataset", "Delete Webhook"]
    assert all(name == "delete" for name, _ in order[-2:])  # nothing is deleted before it is read
    names = [item["request"]["method"] + " " + "/".join(item["request"]["url"]["path"])
             for _, item in order]
    assert names.index("POST v1/datasets") < names.index("POST v1/jobs") \
        < names.index("GET v1/jobs/:job_id") < names.index("POST v1/models/:model_id/predict")
    for _, item in order:
        script = "\n".join(item["event"][0]["script"]["exec"])
        assert "pm.response.to.have.status(" in script or "to.be.below(500)" in script, item["name"]
    # Ids come from successful responses only; the poll is bounded.
    upload = order[names.index("POST v1/datasets")][1]
    assert "if (pm.response.code === 201) pm.collectionVariables.set('dataset_id'" in "\n".join(
        upload["event"][0]["script"]["exec"])
    poll = "\n".join(order[names.index("GET v1/jobs/:job_id")][1]["event"][0]["script"]["exec"])
    assert "setNextRequest" in poll and f"polls < {postman.MAX_POLLS}" in poll
    # The upload carries its CSV: a multipart body with the file part, no file to pick.
    raw = upload["request"]["body"]["raw"]
    assert 'name="file"; filename="postman.csv"' in raw and postman.CSV in raw
