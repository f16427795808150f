"""The baseline: a bare FastAPI endpoint holding a scikit-learn KMeans, nothing else.

Two flavours: `def` (FastAPI runs it in its thread pool, as its docs advise for blocking
calls) and `async def` (on the event loop: no thread hop, the faster of the two for a model
this quick). The benchmark's goal is set against the faster one.
"""

from __future__ import annotations

import os

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

x, _ = make_blobs(n_samples=int(os.environ.get("BENCH_ROWS", "2000")), n_features=8, centers=5,
                  random_state=0)
model = KMeans(n_clusters=5, random_state=0, n_init=3).fit(x)
app = FastAPI()


class Body(BaseModel):
    instances: list[list[float]]


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@app.post("/predict")
def predict(body: Body) -> dict:
    return {"predictions": model.predict(np.asarray(body.instances)).tolist()}


@app.post("/predict_async")
async def predict_async(body: Body) -> dict:
    return {"predictions": model.predict(np.asarray(body.instances)).tolist()}
