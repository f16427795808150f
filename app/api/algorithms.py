"""/v1/algorithms: the catalogue, with each algorithm's params as JSON Schema."""

from __future__ import annotations

from fastapi import APIRouter

from app.errors import did_you_mean, field_error
from app.ml import registry
from app.schemas import AlgorithmList, AlgorithmOut

router = APIRouter(prefix="/v1/algorithms", tags=["algorithms"])


@router.get("", response_model=AlgorithmList)
def list_algorithms() -> AlgorithmList:
    """Every algorithm: family, data kinds, capabilities and params schema."""
    return AlgorithmList(items=[AlgorithmOut(**entry) for entry in registry.catalogue()])


@router.get("/{name}", response_model=AlgorithmOut, responses={404: {"description": "no such algorithm"}})
def get_algorithm(name: str) -> AlgorithmOut:
    """One algorithm of the catalogue."""
    for entry in registry.catalogue():
        if entry["name"] == name:
            return AlgorithmOut(**entry)
    raise field_error("name", "unknown algorithm", status=404, detail=f"no algorithm named "
                      f"{name!r}; {did_you_mean(name, registry.ALGORITHMS)}")
