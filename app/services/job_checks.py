"""Checking a job spec before it is queued: algorithm, params, devices, dataset and backbone.

Every refusal is a 422 naming the request field at fault; what the job trains on is decided
by app.data.training and only checked here against the algorithm and the backbone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.data import training
from app.data.training import JobData
from app.db.tables import TRAIN, Dataset
from app.errors import did_you_mean, field_error, field_errors
from app.ml import registry
from app.ml.base import Algorithm, Params
from app.services import backbones, datasets


@dataclass(frozen=True)
class JobSpec:
    """What a client asks for in POST /v1/jobs."""

    dataset_id: str
    algorithm: str
    params: dict[str, Any]
    features: list[str] | None = None
    target: str | None = None
    name: str | None = None
    # Set by the service that submits a job of another kind (a reproduce job): the job row's
    # kind and the model it reads.
    kind: str = TRAIN
    source_model_id: str | None = None


def validate_spec(*, session: Session, project: str, spec: JobSpec,
                  weights_dir: Path | None = None,
                  max_devices: int | None = None) -> dict[str, Any]:
    """Check algorithm, params and the dataset's fit; return the resolved job fields or raise 422.

    weights_dir: where transfer backbones' weights files are (for a transfer job).
    max_devices: the most processes any worker trains one job on (params.devices).
    """
    algo = algorithm_named(spec.algorithm)
    params = _params(algo, spec.params)
    _check_devices(params, max_devices)
    ds = _dataset(session, project, spec.dataset_id, algo)
    wanted = algo.backbone_of(params)  # a transfer job's (backbone, pretrained)
    data = training.decide(ds, features=spec.features, target=spec.target,
                           labelled=algo.needs_target)
    if wanted is not None:
        _check_backbone(session, project, data, params, weights_dir or Path("weights"))
    _check_fit(algo, params, ds, data)
    return {
        "dataset_id": ds.id, "algorithm": algo.name, "family": algo.family, "queue": algo.queue,
        "params": params.model_dump(mode="json"), "features": list(data.features),
        "target": data.target, "name": spec.name, "metrics": data.notes(),
        "kind": spec.kind, "source_model_id": spec.source_model_id,
    }


def algorithm_named(name: str) -> Algorithm:
    """The registered algorithm of that name, or a 422 on `algorithm` saying which exist."""
    try:
        return registry.get(name)
    except KeyError as exc:
        hint = did_you_mean(name, registry.ALGORITHMS)
        raise field_error(
            "algorithm", f"unknown; {hint}",
            detail=f"unknown algorithm {name!r}; {hint}") from exc


def _params(algo: Algorithm, given: dict[str, Any]) -> Params:
    try:
        return algo.params_model.model_validate(given)
    except ValidationError as exc:
        errors = _param_errors(exc, algo.params_model.model_fields)
        raise field_errors(errors, lead="invalid params: ") from exc


def _param_errors(exc: ValidationError, valid: Iterable[str]) -> list[tuple[str, str]]:
    errors = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        message = err["msg"]
        if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
            message = f"unknown param; {did_you_mean(str(err['loc'][0]), valid)}"
        errors.append((f"params.{loc}" if loc else "params", message))
    return errors


def _check_devices(params: Params, max_devices: int | None) -> None:
    devices = getattr(params, "devices", 1)
    if max_devices is not None and isinstance(devices, int) and devices > max_devices:
        message = (f"asks for {devices} devices; no worker has more than {max_devices} "
                   "(PRETRAINER_WORKER_GPUS GPUs, PRETRAINER_CPU_PROCESSES processes)")
        raise field_error(
            "params.devices", message,
            detail=f"invalid params: params.devices: {message}")


def _dataset(session: Session, project: str, dataset_id: str, algo: Algorithm) -> Dataset:
    ds = datasets.named(session=session, project=project, dataset_id=dataset_id)
    if ds.kind not in algo.data_kinds:
        raise field_error(
            "dataset_id", f"{ds.kind} data does not fit {algo.name}",
            detail=f"{algo.name} trains on {', '.join(algo.data_kinds)} data; "
                   f"dataset {ds.id} is {ds.kind}")
    return ds


def _check_backbone(session: Session, project: str, data: JobData, params: Any,
                    weights_dir: Path) -> None:
    """422 when the backbone reads another kind of data, or rows of another width."""
    ref = backbones.resolve(session=session, project=project, spec=params.backbone,
                            pretrained=params.pretrained, weights_dir=weights_dir)
    if ref.data_kind != data.kind:
        message = (f"backbone {ref.spec} reads {ref.data_kind} data, but this job's data is "
                   f"{data.kind}; GET /v1/backbones lists backbones by data kind")
        raise field_error(
            "params.backbone", message,
            detail=message)
    if data.kind == "tabular" and ref.source == "model":
        width = len(ref.input_schema.get("features", [])) or data.n_features
        if width != data.n_features:
            message = (f"backbone {ref.spec} takes rows of {width} features; this job has "
                       f"{data.n_features} ({', '.join(data.features)})")
            raise field_error(
                "features", message,
                detail=message)


def _check_fit(algo: Algorithm, params: Params, ds: Dataset, data: JobData) -> None:
    problems = [*algo.check_fit(params, n_rows=ds.n_rows, n_features=data.n_features),
                *algo.check_data(params, kind=data.kind, value_range=data.value_range())]
    if not problems:
        return
    # "dataset" problems are about the rows themselves (too many, too few), not a param.
    raise field_errors([("dataset_id" if f == "dataset" else f"params.{f}", m)
                        for f, m in problems], lead="the params do not fit the dataset: ")
