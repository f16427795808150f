"""The OpenAPI document: an example on every operation, and errors documented as problem+json.

Examples live here, keyed by "METHOD /path", so the routers stay about routing; the test
tests/api/test_openapi.py checks that every operation has them and that they validate against
the response models.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.errors import PROBLEM, TYPE_BASE
from app.serving.inputs import BINARY

DS, JOB, MDL = ("ds_3f9c2b7e41d04e6c9a1b5d8e2f7a6c10", "job_8d2e4f1a9b3c4d5e8f7a6b1c2d3e4f50",
                "mdl_5a7c9e1b3d4f4a6c8e0b2d4f6a8c0e12")
CREATED, STARTED, FINISHED = ("2026-03-14T09:26:53.589Z", "2026-03-14T09:26:54.102Z",
                              "2026-03-14T09:27:01.877Z")
COLUMNS = [{"name": n, "dtype": "float64", "nulls": 0} for n in "abcd"]

DATASET = {"id": DS, "name": "blobs", "kind": "tabular", "format": "csv", "n_rows": 300,
           "columns": COLUMNS, "size_bytes": 30356,
           "sha256": "af918231b5d64c528b91dfb8dbb3b558118d61cdd2a539b9e4beca4a691f8abc",
           "created_at": CREATED, "image": None, "classes": None, "labelled": None}
KMEANS_PARAMS = {"standardize": False, "n_clusters": 3, "init": "k-means++", "n_init": "auto",
                 "max_iter": 300, "tol": 0.0001, "random_state": 0, "algorithm": "lloyd"}
KMEANS_METRICS = {"inertia": 566.86, "silhouette": 0.8437, "davies_bouldin": 0.2198,
                  "calinski_harabasz": 6207.4, "load_seconds": 0.0093, "fit_seconds": 0.0412}
JOB_OUT = {"id": JOB, "name": None, "dataset_id": DS, "algorithm": "kmeans",
           "family": "unsupervised", "queue": "cpu", "params": KMEANS_PARAMS,
           "features": ["a", "b", "c", "d"], "target": None, "status": "succeeded",
           "progress": 1.0, "metrics": KMEANS_METRICS, "history": [], "error": None,
           "model_id": MDL, "attempts": 1, "created_at": CREATED, "started_at": STARTED,
           "finished_at": FINISHED}
MODEL_OUT = {"id": MDL, "name": None, "algorithm": "kmeans", "family": "unsupervised",
             "job_id": JOB, "dataset_id": DS, "params": KMEANS_PARAMS,
             "input_schema": {"kind": "tabular", "dtype": "float64",
                              "features": [{"name": n, "dtype": "float64"} for n in "abcd"]},
             "capabilities": ["predict", "embed"], "metrics": KMEANS_METRICS,
             "backbone_model_id": None, "lineage": {}, "created_at": FINISHED}
# How the model was made (POST /v1/models/{id}/reproduce reruns it from this).
REPRODUCIBILITY = {
    "params": KMEANS_PARAMS, "seed": 0,
    "dataset": {"id": DS, "sha256": DATASET["sha256"], "n_rows": 300,
                "features": ["a", "b", "c", "d"], "target": None, "n_features": 4},
    "versions": {"python": "3.11.9 (main, Apr  2 2026, 10:12:03) [GCC 12.2.0]",
                 "torch": "2.14.1", "scikit-learn": "1.9.1", "numpy": "2.4.6",
                 "pretrainer": "0.1.0", "git_commit": "8ef31c326955a7b0925003694f59b655435c97c1"},
    "device": "cpu", "device_name": "AMD EPYC 7B13", "threads": 8, "backbone": None,
    "artifact_sha256": {
        "estimator.skops": "36b4a5becdd3eaebe5cdafe364acc84b0ee72799923d03247d668cb8758e9cdf",
        "meta.json": "300c9b808058f80fad7b8ec88083e1ecad3cdd40575a9714cda7a84bbb047474"}}
MODEL_OUT["reproducibility"] = REPRODUCIBILITY
ALGORITHM = {"name": "kmeans", "family": "unsupervised", "data_kinds": ["tabular"],
             "capabilities": ["predict", "embed"],
             "description": "k-means clustering (scikit-learn KMeans): predict gives each row's "
                            "nearest centroid; embed gives its distances to every centroid.",
             "queue": "cpu", "extras": [],
             "params_schema": {"type": "object", "additionalProperties": False, "properties": {
                 "n_clusters": {"type": "integer", "minimum": 1, "default": 8},
                 "random_state": {"anyOf": [{"type": "integer"}, {"type": "null"}],
                                  "default": None}}}}
ROWS = [[1.0, 4.2, -2.0, 3.3], [-6.1, -3.5, 7.2, 0.4]]
EVENTS = ('id: 1\nevent: status\ndata: {"status": "running", "progress": 0.01, "attempts": 1}\n\n'
          'id: 2\nevent: epoch\ndata: {"epoch": 1, "loss": 0.912, "val_loss": 0.884, '
          '"lr": 0.001, "samples_per_s": 51234.0, "seconds": 0.05}\n\n'
          'id: 3\nevent: end\ndata: {"id": "' + JOB + '", "status": "succeeded", "…": "…"}\n\n')

# Success examples: request body (by media type) and response (by status) of each operation.
EXAMPLES: dict[str, dict[str, Any]] = {
    "GET /healthz": {"responses": {"200": {"status": "ok", "checks": {}}}},
    "GET /metrics": {"responses": {"200": (
        "# HELP pretrainer_jobs Jobs by state and queue\n# TYPE pretrainer_jobs gauge\n"
        'pretrainer_jobs{queue="cpu",status="succeeded"} 12.0\n'
        "# HELP pretrainer_queue_depth Messages waiting in the broker\n"
        "# TYPE pretrainer_queue_depth gauge\n"
        'pretrainer_queue_depth{queue="cpu"} 0.0\n')}},
    "GET /readyz": {"responses": {
        "200": {"status": "ok", "checks": {"database": "ok", "broker": "ok", "store": "ok"}},
        "503": {"status": "unavailable", "checks": {
            "database": "ok", "broker": "error", "store": "ok"}}}},
    "POST /v1/datasets": {"request": {"multipart/form-data": {"file": "blobs.csv",
                                                              "name": "blobs"}},
                          "responses": {"201": DATASET}},
    "GET /v1/datasets": {"responses": {"200": {"items": [DATASET], "total": 1, "next": None}}},
    "GET /v1/datasets/{dataset_id}": {"responses": {"200": DATASET}},
    "GET /v1/datasets/{dataset_id}/download": {"responses": {"200": "a,b,c,d\n1.0,4.2,-2.0,3.3\n"}},
    "GET /v1/datasets/{dataset_id}/export.csv": {"responses": {
        "200": "name,x\n'=HYPERLINK(\"http://x\"),-1.5\nplain,2\n"}},
    "DELETE /v1/datasets/{dataset_id}": {},
    "GET /v1/uploads/{upload_id}": {"responses": {"200": {
        "id": "up_7e2c4a9b1d3f4e5a8c6b0d2e4f6a8b1c", "offset": 30356, "length": 30356,
        "status": "ready", "filename": "blobs.csv", "name": "blobs", "dataset_id": DS,
        "problem": None, "expires_at": None, "created_at": CREATED}}},
    "GET /v1/algorithms": {"responses": {"200": {"items": [ALGORITHM]}}},
    "GET /v1/projects/me": {"responses": {"200": {
        "project": "acme", "key_id": "key_0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f", "quotas": {
            name: {"limit": limit, "used": used, "source": source, "description": text}
            for name, limit, used, source, text in (
                ("stored_bytes", 10_000_000_000, 30356, "project", "bytes of uploaded datasets"),
                ("datasets", 50, 1, "project", "datasets"),
                ("models", 10000, 2, "settings", "models, counting one per queued or running job"),
                ("running_jobs", 16, 1, "settings", "jobs training at once"),
                ("queued_jobs", 100, 0, "settings", "jobs waiting for a worker"),
                ("serving_requests", 64, 0, "settings",
                 "predict, embed and generate calls in flight"))}}}},
    "GET /v1/algorithms/{name}": {"responses": {"200": ALGORITHM}},
    "GET /v1/backbones": {"responses": {"200": {
        "architectures": [{"name": "resnet18", "source": "torchvision", "data_kind": "image",
                           "features_dim": 512, "input_size": 224,
                           "description": "ResNet-18, ImageNet weights",
                           "weights_present": False, "weights": None,
                           "expected_at": "./data/weights/resnet18.pth"}],
        "models": [{"id": MDL, "backbone": f"model:{MDL}", "algorithm": "autoencoder",
                    "data_kind": "tabular", "dataset_id": DS, "created_at": FINISHED}]}}},
    "POST /v1/jobs": {"request": {"application/json": {
        "dataset_id": DS, "algorithm": "kmeans", "params": {"n_clusters": 3, "random_state": 0}}},
        "responses": {"202": {**JOB_OUT, "status": "queued", "progress": 0.0, "metrics": {},
                              "model_id": None, "attempts": 0, "started_at": None,
                              "finished_at": None}}},
    "GET /v1/jobs": {"responses": {"200": {"items": [JOB_OUT], "total": 1, "next": None}}},
    "GET /v1/jobs/{job_id}": {"responses": {"200": JOB_OUT}},
    "GET /v1/jobs/{job_id}/events": {"responses": {"200": EVENTS}},
    "POST /v1/jobs/{job_id}/cancel": {"responses": {"202": {
        **JOB_OUT, "status": "cancelled", "progress": 0.4, "metrics": {}, "model_id": None,
        "error": {"type": "Cancelled", "message": "cancelled by request"}}}},
    "GET /v1/models": {"responses": {"200": {"items": [MODEL_OUT], "total": 1, "next": None}}},
    "GET /v1/models/{model_id}": {"responses": {"200": MODEL_OUT}},
    "DELETE /v1/models/{model_id}": {},
    "POST /v1/models/{model_id}/predict": {
        "request": {"application/json": {"instances": ROWS}},
        "responses": {"200": {"predictions": [2, 0]}}},
    "POST /v1/models/{model_id}/embed": {
        "request": {"application/json": {"instances": [dict(zip("abcd", ROWS[0]))]}},
        "responses": {"200": {"embeddings": [[9.81, 11.07, 0.52]]}}},
    "POST /v1/models/{model_id}/generate": {
        "request": {"application/json": {"n": 2, "seed": 0}},
        "responses": {"200": {"samples": [[0.93, 4.11, -1.87, 3.02], [-5.72, -3.31, 6.95, 0.61]]}}},
    "GET /v1/models/{model_id}/embedding": {"responses": {"200": {
        "n_rows": 3, "n_components": 2, "embedding": [[12.1, -3.4], [11.8, -2.9], [-20.3, 7.7]]}}},
    "POST /v1/models/{model_id}/evaluate": {
        "request": {"application/json": {"dataset_id": DS, "target": "label"}},
        "responses": {"200": {"model_id": MDL, "dataset_id": DS, "target": "label",
                              "n_rows": 200, "metrics": {"ari": 0.912, "nmi": 0.887,
                                                         "purity": 0.965}}}},
    "GET /v1/models/{model_id}/labels": {"responses": {"200": "row,label\n0,2\n1,0\n2,2\n"}},
    "GET /v1/jobs/{job_id}/plots/loss.png": {},
    "GET /v1/models/{model_id}/plots/{kind}.png": {},
    "POST /v1/models/{model_id}/reproduce": {"responses": {"202": {
        **JOB_OUT, "id": "job_2b4d6f8a0c1e4a3b5d7f9b1c3e5a7d90", "name": f"reproduce {MDL}",
        "kind": "reproduce", "source_model_id": MDL, "status": "queued", "progress": 0.0,
        "metrics": {}, "model_id": None, "attempts": 0, "started_at": None,
        "finished_at": None}}},
}

# --- sweeps ------------------------------------------------------------------------------
SWEEP = "swp_4d1e7a2c9b3f4e6a8d0c2b4e6f8a0c13"
SWEEP_BODY = {"dataset_id": DS, "algorithm": "kmeans", "params": {"random_state": 0},
              "space": {"n_clusters": {"choices": [2, 3, 4]}}, "metric": "silhouette",
              "direction": "maximize", "trials": 3, "parallelism": 2}
TRIAL_JOB = "job_0a7c9e1b3d4f4a6c8e0b2d4f6a8c0e10"
TRIALS = [{"job_id": f"job_{n}a7c9e1b3d4f4a6c8e0b2d4f6a8c0e1{n}", "number": n,
           "params": {"n_clusters": k}, "state": "succeeded", "value": value, "seconds": 0.41,
           "model_id": f"mdl_{n}c8e0b2d4f6a8c0e12a7c9e1b3d4f4a6{n}", "started_at": STARTED,
           "finished_at": FINISHED}
          for n, k, value in ((0, 3, 0.8437), (1, 2, 0.5521), (2, 4, 0.6893))]
SWEEP_OUT = {"id": SWEEP, "name": None, "dataset_id": DS, "algorithm": "kmeans",
             "space": SWEEP_BODY["space"], "params": {"random_state": 0}, "metric": "silhouette",
             "direction": "maximize", "budget": 3, "parallelism": 2, "sampler": "auto",
             "seed": 0, "pruner": {"n_startup_trials": 3, "n_warmup_steps": 2},
             "status": "succeeded", "progress": 1.0, "trials": TRIALS,
             "best_job_id": TRIALS[0]["job_id"], "best_model_id": TRIALS[0]["model_id"],
             "best_value": 0.8437, "error": None, "created_at": CREATED, "finished_at": FINISHED}
SWEEP_QUEUED = [{**t, "state": "queued", "value": None, "seconds": None, "model_id": None,
                 "started_at": None, "finished_at": None} for t in TRIALS[:2]]
SWEEP_EVENTS = ('id: 1\nevent: status\ndata: {"status": "running", "progress": 0.0}\n\n'
                'id: 2\nevent: trial\ndata: {"job_id": "' + TRIAL_JOB + '", '
                '"number": 0, "params": {"n_clusters": 3}, "state": "succeeded", '
                '"value": 0.8437, "…": "…"}\n\n'
                'id: 3\nevent: end\ndata: {"id": "' + SWEEP + '", "status": "succeeded", '
                '"…": "…"}\n\n')
EXAMPLES.update({
    "POST /v1/sweeps": {"request": {"application/json": SWEEP_BODY}, "responses": {"202": {
        **SWEEP_OUT, "status": "running", "progress": 0.0, "trials": SWEEP_QUEUED,
        "best_job_id": None, "best_model_id": None, "best_value": None, "finished_at": None}}},
    "GET /v1/sweeps": {"responses": {"200": {"items": [SWEEP_OUT], "total": 1, "next": None}}},
    "GET /v1/sweeps/{sweep_id}": {"responses": {"200": SWEEP_OUT}},
    "GET /v1/sweeps/{sweep_id}/events": {"responses": {"200": SWEEP_EVENTS}},
    "POST /v1/sweeps/{sweep_id}/cancel": {"responses": {"202": {
        **SWEEP_OUT, "status": "cancelled", "progress": 1.0,
        "trials": [{**t, "state": "cancelled"} for t in SWEEP_QUEUED], "best_job_id": None,
        "best_model_id": None, "best_value": None}}},
})

# The model registry: a name with two versions, production moved from 1 to 2.
MDL_2 = "mdl_9b1d3f5a7c2e4b6d8f0a1c3e5b7d9f21"
KEY = "key_0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f"
VERSION_2 = {"name": "churn", "version": 2, "model_id": MDL_2, "created_at": FINISHED,
             "created_by": KEY, "model_deleted_at": None, "aliases": []}
REGISTERED = {
    "name": "churn", "created_at": CREATED, "created_by": KEY, "latest_version": 2,
    "versions": [{**VERSION_2, "version": 1, "model_id": MDL, "created_at": CREATED},
                 {**VERSION_2, "aliases": ["production"]}],
    "aliases": {"production": 2},
    "history": [{"alias": "production", "from_version": None, "to_version": 1, "by": KEY,
                 "at": STARTED},
                {"alias": "production", "from_version": 1, "to_version": 2, "by": KEY,
                 "at": FINISHED}]}
EXAMPLES.update({
    "GET /v1/models/{model_id}": {"responses": {"200": {
        **MODEL_OUT, "versions": [{"name": "churn", "version": 1, "aliases": []}]}}},
    "GET /v1/registry": {"responses": {"200": {"items": [REGISTERED], "total": 1, "next": None}}},
    "GET /v1/registry/{name}": {"responses": {"200": REGISTERED}},
    "POST /v1/registry/{name}/versions": {"request": {"application/json": {"model_id": MDL_2}},
                                          "responses": {"201": VERSION_2}},
    "PUT /v1/registry/{name}/aliases/{alias}": {
        "request": {"application/json": {"version": 2}},
        "responses": {"200": {"name": "churn", "alias": "production", "version": 2,
                              "updated_at": FINISHED, "updated_by": KEY}}},
    "DELETE /v1/registry/{name}/aliases/{alias}": {},
})

# Batch prediction (app.api.batch): a job that scores a dataset, and its result file.
BATCH_JOB = {**JOB_OUT, "kind": "batch", "source_model_id": MDL, "model_id": None,
             "params": {"output": "predict", "format": "csv"}, "features": ["a", "b", "c", "d"],
             "metrics": {"rows": 300, "seconds": 0.021, "rows_per_second": 14285.7,
                         "output": "predict", "format": "csv", "n_columns": 1,
                         "columns": ["prediction"], "result_bytes": 611}}
EXAMPLES.update({
    "POST /v1/models/{model_id}/batch": {
        "request": {"application/json": {"dataset_id": DS, "output": "predict",
                                         "format": "csv"}},
        "responses": {"202": {**BATCH_JOB, "status": "queued", "progress": 0.0, "metrics": {},
                              "attempts": 0, "started_at": None, "finished_at": None}}},
    "GET /v1/jobs/{job_id}/result": {"responses": {"200": "prediction\n2\n0\n1\n"}},
})
# Binary answers are described by their schema, never given a (JSON or text) example.
NO_EXAMPLE = (*BINARY, "application/vnd.apache.parquet")

# Comparisons and webhooks.
CMP = "cmp_2b4d6f8a0c1e4a3b5d7f9b1d3f5a7c9e"
WH, DLV = "wh_4c6e8a0b2d4f4e6a8c0e2a4c6e8a0b2d", "dlv_6e8a0c2e4a6c4e8a0c2e4a6c8e0a2c4e"
CMP_SEEDS = [0, 1, 2]
CMP_ROWS = [
    {"backbone": f"model:{MDL}", "pretrained": True, "values": [0.917, 0.903, 0.931],
     "job_ids": [f"job_{i}a" for i in range(3)], "mean": 0.917, "std": 0.014, "n": 3},
    {"backbone": f"model:{MDL}", "pretrained": False, "values": [0.611, 0.653, 0.639],
     "job_ids": [f"job_{i}b" for i in range(3)], "mean": 0.6343, "std": 0.0214, "n": 3}]
CMP_COUNTS = {"queued": 0, "running": 0, "succeeded": 6, "failed": 0, "cancelled": 0}
COMPARISON_OUT: dict[str, Any] = {
    "id": CMP, "name": "digits: contrastive vs scratch", "dataset_id": DS,
    "backbones": [f"model:{MDL}"], "seeds": CMP_SEEDS,
    "params": {"validation_fraction": 0.2, "freeze": "none"}, "metric": "accuracy",
    "status": "succeeded", "counts": CMP_COUNTS,
    "rows": CMP_ROWS,
    "deltas": [{"backbone": f"model:{MDL}", "delta": 0.2827, "ci_low": 0.2204,
                "ci_high": 0.3449, "n_pairs": 3, "differences": [0.306, 0.25, 0.292],
                "note": None}],
    "job_ids": [f"job_{i}{k}" for k in "ab" for i in range(3)], "created_at": CREATED}
QUEUED_COMPARISON: dict[str, Any] = {
    **COMPARISON_OUT, "status": "queued",
    "counts": {**CMP_COUNTS, "queued": 6, "succeeded": 0},
    "rows": [{**r, "values": [None] * 3, "mean": None, "std": None, "n": 0} for r in CMP_ROWS],
    "deltas": [{"backbone": f"model:{MDL}", "delta": None, "ci_low": None, "ci_high": None,
                "n_pairs": 0, "differences": [],
                "note": "no seed where both the pretrained and the scratch job succeeded"}]}
WEBHOOK_OUT = {"id": WH, "url": "https://example.com/pretrainer", "events": ["job.*"],
               "active": True, "created_at": CREATED, "secret": None}
DELIVERY_OUT = {"id": DLV, "webhook_id": WH, "event": "job.succeeded", "status": "delivered",
                "attempts": 2, "last_status_code": 200, "last_error": None,
                "next_attempt_at": None, "created_at": FINISHED, "delivered_at": FINISHED,
                "body": {"id": DLV, "event": "job.succeeded", "created_at": FINISHED,
                         "data": {"job": {"id": JOB, "kind": "train", "status": "succeeded",
                                          "model_id": MDL, "metrics": {"inertia": 566.86}}}}}
EXAMPLES.update({
    "POST /v1/comparisons": {"request": {"application/json": {
        "dataset_id": DS, "backbones": [f"model:{MDL}"], "seeds": 3,
        "params": {"freeze": "none"}, "name": "digits: contrastive vs scratch"}},
        "responses": {"202": QUEUED_COMPARISON}},
    "GET /v1/comparisons": {"responses": {"200": {"items": [COMPARISON_OUT], "total": 1,
                                                  "next": None}}},
    "GET /v1/comparisons/{comparison_id}": {"responses": {"200": COMPARISON_OUT}},
    "POST /v1/comparisons/{comparison_id}/cancel": {"responses": {"202": {
        **QUEUED_COMPARISON, "status": "cancelled",
        "counts": {**CMP_COUNTS, "succeeded": 0, "cancelled": 6}}}},
    "POST /v1/webhooks": {"request": {"application/json": {
        "url": "https://example.com/pretrainer", "events": ["job.*"]}},
        "responses": {"201": {**WEBHOOK_OUT, "secret": "9f2c" * 16}}},
    "GET /v1/webhooks": {"responses": {"200": {"items": [WEBHOOK_OUT], "total": 1,
                                               "next": None}}},
    "GET /v1/webhooks/{webhook_id}": {"responses": {"200": WEBHOOK_OUT}},
    "DELETE /v1/webhooks/{webhook_id}": {},
    "GET /v1/webhooks/{webhook_id}/deliveries": {"responses": {"200": {
        "items": [DELIVERY_OUT], "total": 1, "next": None}}},
    "POST /v1/webhooks/{webhook_id}/test": {"responses": {"202": {
        **DELIVERY_OUT, "event": "webhook.test", "status": "pending", "attempts": 0,
        "last_status_code": None, "next_attempt_at": FINISHED, "delivered_at": None,
        "body": {"id": DLV, "event": "webhook.test", "created_at": FINISHED,
                 "data": {"webhook_id": WH, "url": "https://example.com/pretrainer"}}}}},
})

# Nearest-neighbour indexes (/v1/models/{id}/indexes) and their queries (/neighbors).
IDX, IDX_JOB = "idx_7b1e3c5a9d2f4e6a8c0b1d3f5a7c9e2b", "job_2c4e6a8b0d1f4a3c5e7b9d1f3a5c7e90"
INDEX_OUT = {"id": IDX, "model_id": MDL, "dataset_id": DS, "job_id": IDX_JOB,
             "status": "succeeded", "progress": 1.0, "metric": "l2", "n_rows": 300, "dim": 3,
             "params": {"m": 16, "ef_construction": 100, "ef_search": 32}, "id_column": "id",
             "label_column": "label", "error": None, "created_at": FINISHED}
EXAMPLES.update({
    "POST /v1/models/{model_id}/indexes": {
        "request": {"application/json": {"dataset_id": DS}},
        "responses": {"202": {**INDEX_OUT, "status": "queued", "progress": 0.0, "n_rows": None,
                              "dim": None, "created_at": CREATED}}},
    "GET /v1/models/{model_id}/indexes": {"responses": {"200": {"items": [INDEX_OUT],
                                                                "total": 1, "next": None}}},
    "GET /v1/models/{model_id}/indexes/{index_id}": {"responses": {"200": INDEX_OUT}},
    "DELETE /v1/models/{model_id}/indexes/{index_id}": {},
    "POST /v1/models/{model_id}/neighbors": {
        "request": {"application/json": {"instances": [[1.0, 4.2, -2.0, 3.3]], "k": 2}},
        "responses": {"200": {"neighbors": [[
            {"row": 17, "distance": 0.1432, "id": 1017, "label": 1},
            {"row": 203, "distance": 0.2518, "id": 1203, "label": 1}]], "index_id": IDX}}},
})

PROBLEM_SCHEMA = {
    "type": "object", "title": "Problem", "required": ["type", "title", "status", "detail"],
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {
            "type": "object", "required": ["field", "message"],
            "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}}},
}
_PROBLEMS = {
    "401": ("Unauthorized", "unauthorized", "unknown or revoked API key",
            [{"field": "Authorization", "message": "unknown or revoked API key"}]),
    "429": ("Too many requests", "too-many-requests", ("the project's queued_jobs quota (jobs "
            "waiting for a worker) is 100 and 100 are in use; this request would add 1 "
            "(PRETRAINER_QUOTA_QUEUED_JOBS, or `pretrainer quotas set`)"),
            [{"field": "quota.queued_jobs", "message": "limit 100, in use 100"}]),
    "404": ("Not found", "not-found", "job job_0000 does not exist", None),
    "409": ("Conflict", "conflict", "a queued or running job uses it", None),
    "413": ("Content too large", "too-large", ("the upload is larger than 2147483648 bytes "
            "(PRETRAINER_MAX_UPLOAD_BYTES)"), None),
    "415": ("Unsupported media type", "unsupported-media-type",
            "send the file as multipart/form-data", None),
    "422": ("Unprocessable content", "validation-error",
            "params.n_clusters: Input should be greater than or equal to 1",
            [{"field": "params.n_clusters", "message": "Input should be greater than or equal to 1"}]),
}


def problem_example(status: str) -> dict[str, Any]:
    """An example problem+json body for an error status."""
    title, slug, detail, errors = _PROBLEMS.get(status, ("Bad request", "bad-request",
                                                         "the request is invalid", None))
    body: dict[str, Any] = {"type": TYPE_BASE + slug, "title": title, "status": int(status),
                            "detail": detail}
    if errors:
        body["errors"] = errors
    return body


def decorate(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the examples; document 4xx answers as the problem+json they are."""
    schema = copy.deepcopy(schema)
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            examples = EXAMPLES.get(f"{method.upper()} {path}", {})
            for media, content in op.get("requestBody", {}).get("content", {}).items():
                if media in examples.get("request", {}):
                    content["example"] = examples["request"][media]
            for status, response in op.get("responses", {}).items():
                _response(status, response, examples.get("responses", {}))
    for unused in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(unused, None)
    return schema


def _response(status: str, response: dict[str, Any], examples: dict[str, Any]) -> None:
    if status.startswith("4"):
        response["content"] = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"},
                                         "example": problem_example(status)}}
        response["description"] = response.get("description") or "problem+json"
        if status == "422" and response["description"] == "Validation Error":
            response["description"] = "a request field is invalid (named in errors[].field)"
        return
    for media, content in response.get("content", {}).items():
        # .npy and Arrow answers are described by their schema; the JSON example is not theirs.
        if status in examples and media not in NO_EXAMPLE:
            content["example"] = examples[status]


def install(app: FastAPI, tag_order: list[str]) -> None:
    """Serve the decorated document at /openapi.json (built once, on first request).

    Paths are listed by their tag's place in tag_order, then as registered: the order routes
    are matched in is chosen for speed, the order a reader meets them in is this one.
    """
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = decorate(get_openapi(title=app.title, version=app.version,
                                       description=app.description, routes=app.routes))
            doc["paths"] = dict(sorted(doc["paths"].items(), key=lambda item: _rank(item[1],
                                                                                    tag_order)))
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _rank(operations: dict[str, Any], tag_order: list[str]) -> int:
    tags = [tag for op in operations.values() for tag in op.get("tags", [])]
    return tag_order.index(tags[0]) if tags and tags[0] in tag_order else len(tag_order)
