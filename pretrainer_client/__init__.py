"""Python client of the Pretrainer /v1 API: needs httpx and NumPy only (rich for progress bars).

    from pretrainer_client import Client
    with Client("http://127.0.0.1:8000") as c:
        ds = c.upload("blobs.csv", progress=True)
        job = c.train("kmeans", ds, {"n_clusters": 3})
        labels = c.predict(job.model_id, x).predictions
"""

from pretrainer_client.client import AsyncClient, Client
from pretrainer_client.errors import JobFailed, PretrainerError
from pretrainer_client.types import (
    Algorithm,
    Alias,
    AliasMove,
    Column,
    Comparison,
    ComparisonDelta,
    ComparisonRow,
    Dataset,
    Delivery,
    Event,
    Index,
    Job,
    JobError,
    Model,
    ModelVersion,
    Neighbor,
    Page,
    Prediction,
    Project,
    Quota,
    RegisteredModel,
    Sweep,
    Trial,
    Webhook,
)

__all__ = ["Algorithm", "Alias", "AliasMove", "AsyncClient", "Client", "Column", "Comparison",
           "ComparisonDelta", "ComparisonRow", "Dataset", "Delivery", "Event", "Index", "Job",
           "JobError", "JobFailed", "Model", "ModelVersion", "Neighbor", "Page", "Prediction",
           "PretrainerError", "Project", "Quota", "RegisteredModel", "Sweep", "Trial", "Webhook"]
