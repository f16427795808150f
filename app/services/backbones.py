"""Backbones of `transfer` jobs: what can be used now, and resolving a job's `backbone` param."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.tables import Model
from app.errors import field_error
from app.ml.base import BackboneRef
from app.ml.transfer.backbones import ARCHITECTURES, MODEL_PREFIX, architectures, resolve_named
from app.ml.transfer.model import ENCODER_ALGORITHMS


def usable_models(*, session: Session, project: str) -> list[Model]:
    """The project's models that a transfer job can start from, newest first."""
    return list(session.scalars(
        select(Model).where(Model.project == project, Model.algorithm.in_(ENCODER_ALGORITHMS))
        .order_by(Model.created_at.desc(), Model.id)).all())


def catalogue(*, session: Session, project: str, weights_dir: Path) -> dict[str, Any]:
    """GET /v1/backbones: named architectures (weights present or not) and usable models."""
    return {"architectures": architectures(weights_dir),
            "models": [{"id": m.id, "backbone": MODEL_PREFIX + m.id, "algorithm": m.algorithm,
                        "data_kind": m.input_schema.get("kind", "tabular"),
                        "dataset_id": m.dataset_id, "created_at": m.created_at}
                       for m in usable_models(session=session, project=project)]}


def _available(session: Session, project: str, weights_dir: Path) -> str:
    names = [a["name"] + ("" if a["weights_present"] else " (no weights: pretrained=false only)")
             for a in architectures(weights_dir)]
    models = [MODEL_PREFIX + m.id for m in usable_models(session=session, project=project)[:20]]
    return "; available: " + ", ".join(names + models)


def resolve(*, session: Session, project: str, spec: str, pretrained: bool, weights_dir: Path,
            blob_path: Any = None) -> BackboneRef:
    """The backbone a job asked for, or a 422 on params.backbone that lists what is available.

    blob_path(key) gives a model artifact's folder; the worker passes it, and then the weights
    file is hashed for the lineage too. The API, checking a new job, needs neither.
    """
    try:
        if spec.startswith(MODEL_PREFIX):
            return _model_ref(session, project, spec, pretrained, blob_path)
        return resolve_named(spec, weights_dir=weights_dir, pretrained=pretrained,
                             with_sha=blob_path is not None)
    except LookupError as exc:
        message = str(exc) + _available(session, project, weights_dir)
        raise field_error("params.backbone", message, detail=message) from exc


def _model_ref(session: Session, project: str, spec: str, pretrained: bool,
               blob_path: Any) -> BackboneRef:
    model_id = spec[len(MODEL_PREFIX):]
    row = session.get(Model, model_id)
    if row is None or row.project != project:
        raise LookupError(f"no model {model_id!r}")
    if row.algorithm not in ENCODER_ALGORITHMS:
        raise LookupError(f"model {model_id} is a {row.algorithm} model, which has no encoder "
                          f"to transfer from (usable: {', '.join(ENCODER_ALGORITHMS)})")
    step = {"model_id": row.id, "algorithm": row.algorithm, "dataset_id": row.dataset_id,
            "job_id": row.job_id}
    chain = list((row.lineage or {}).get("chain") or [step])
    return BackboneRef(
        spec=spec, source="model", name=row.id, data_kind=row.input_schema.get("kind", "tabular"),
        pretrained=pretrained, path=str(blob_path(row.artifact_key)) if blob_path else None,
        model_algorithm=row.algorithm, input_schema=dict(row.input_schema),
        lineage={"chain": chain})


def lineage(ref: BackboneRef, *, model_id: str, algorithm: str, job_id: str,
            dataset_id: str) -> dict[str, Any]:
    """What a transfer model's record keeps: its backbone and the chain that led to it."""
    backbone: dict[str, Any] = {"spec": ref.spec, "source": ref.source, "name": ref.name,
                                "pretrained": ref.pretrained}
    if ref.source == "model":
        backbone.update(model_id=ref.name, algorithm=ref.model_algorithm)
        chain = list(ref.lineage.get("chain", []))
    else:
        arch = ARCHITECTURES[ref.spec]
        backbone.update(architecture=arch.name, sha256=ref.sha256,
                        weights_file=Path(ref.path).name if ref.path and ref.pretrained else None)
        chain = [{"architecture": arch.name, "source": arch.source, "pretrained": ref.pretrained,
                  "sha256": ref.sha256 if ref.pretrained else None}]
    chain.append({"model_id": model_id, "algorithm": algorithm, "dataset_id": dataset_id,
                  "job_id": job_id, "backbone": ref.spec})
    return {"backbone": backbone, "chain": chain}
