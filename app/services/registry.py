"""The model registry: names of a project, their numbered versions, aliases and alias moves.

A model reference (`ref`) is a model id, `name@version` or `name@alias`; `resolve` is the one
place that turns a reference into a model id, and every model lookup asks it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.db.tables import AliasMove, Model, ModelAlias, ModelVersion, RegisteredModel, utcnow
from app.errors import NotFound, field_error

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# A word that starts with a letter, so `name@3` (a version) and `name@prod` never read alike.
ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,49}$")
LATEST = "latest"  # not stored: `name@latest` is the newest version whose model still exists
ANONYMOUS = "anonymous"  # who acts when the API is open (no keys)
SEPARATOR = "@"


@dataclass(frozen=True)
class Entry:
    """Everything the registry knows about one name."""

    name: str
    created_at: datetime
    created_by: str
    versions: list[ModelVersion]
    aliases: list[ModelAlias]
    moves: list[AliasMove]


@dataclass(frozen=True)
class Registered:
    """One registry version a model is, with the aliases that point at it."""

    name: str
    version: int
    aliases: list[str]


@dataclass(frozen=True)
class Held:
    """An alias that points at a version of a model (and so keeps it from being deleted)."""

    name: str
    alias: str
    version: int


def check_name(name: str) -> str:
    """A registry name as given, or a 422 naming the rule."""
    if not NAME.match(name):
        raise field_error("name", "invalid name", detail=f"registry name {name!r} must be 1-100 "
                          "letters, digits, '_', '.' or '-', starting with a letter or digit")
    return name


def check_alias(alias: str) -> str:
    """An alias as given, or a 422: a word that starts with a letter, and not `latest`."""
    if not ALIAS.match(alias):
        raise field_error("alias", "invalid alias", detail=f"alias {alias!r} must be 1-50 "
                          "letters, digits, '_' or '-', starting with a letter")
    if alias == LATEST:
        raise field_error("alias", "reserved", detail=f"alias {LATEST!r} is reserved: "
                          f"name@{LATEST} is always the newest version")
    return alias


def is_ref(ref: str) -> bool:
    """Whether ref names a registry version or alias rather than a model id."""
    return SEPARATOR in ref


def resolve(*, session: Session, project: str, ref: str) -> str:
    """The model id ref stands for: a model id as it is (no query), `name@version` or
    `name@alias` looked up in the project's registry; NotFound naming what is missing."""
    if SEPARATOR not in ref:
        return ref
    name, _, tag = ref.rpartition(SEPARATOR)
    if not NAME.match(name) or not tag:
        raise NotFound(f"model {ref} does not exist: a reference is a model id, NAME@VERSION "
                       "or NAME@ALIAS")
    _registered(session, project, name)
    if tag.isdigit():
        return _live(_version(session, project, name, int(tag))).model_id
    if tag == LATEST:
        return _latest(session, project, name).model_id
    row = session.get(ModelAlias, (project, name, tag))
    if row is None:
        raise NotFound(f"{name} has no alias {tag!r}; its aliases: "
                       f"{_aliases_text(session, project, name)}")
    return _live(_version(session, project, name, row.version)).model_id


def _registered(session: Session, project: str, name: str) -> RegisteredModel:
    row = session.get(RegisteredModel, (project, name))
    if row is None:
        raise NotFound(f"no model is registered as {name!r}")
    return row


def _version(session: Session, project: str, name: str, version: int) -> ModelVersion:
    row = session.get(ModelVersion, (project, name, version))
    if row is None:
        last = _last_number(session, project, name)
        raise NotFound(f"{name} has no version {version}; its versions are 1 to {last}")
    return row


def _live(row: ModelVersion) -> ModelVersion:
    if row.model_deleted_at is not None:
        raise NotFound(f"version {row.version} of {row.name} was model {row.model_id}, which "
                       "was deleted")
    return row


def _latest(session: Session, project: str, name: str) -> ModelVersion:
    row = session.scalars(select(ModelVersion).where(
        ModelVersion.project == project, ModelVersion.name == name,
        ModelVersion.model_deleted_at.is_(None)).order_by(ModelVersion.version.desc())).first()
    if row is None:
        raise NotFound(f"every model registered as {name} was deleted")
    return row


def _last_number(session: Session, project: str, name: str) -> int:
    return session.scalar(select(func.max(ModelVersion.version)).where(
        ModelVersion.project == project, ModelVersion.name == name)) or 0


def _aliases_text(session: Session, project: str, name: str) -> str:
    names = session.scalars(select(ModelAlias.alias).where(
        ModelAlias.project == project, ModelAlias.name == name).order_by(ModelAlias.alias)).all()
    return ", ".join(names) or "none"


def _model_of_project(session: Session, project: str, ref: str) -> str:
    """The model id a body's model_id names; like any id in a body, a missing one is a 422."""
    try:
        model_id = resolve(session=session, project=project, ref=ref)
    except NotFound as exc:
        raise field_error("model_id", "no such model", detail=exc.detail) from exc
    row = session.get(Model, model_id)
    if row is None or row.project != project:
        raise field_error("model_id", "no such model", detail=f"model {model_id} does not exist")
    return row.id


def register(*, session: Session, project: str, name: str, model_ref: str,
             by: str) -> ModelVersion:
    """Register a model (an id or a reference) under name as its next version."""
    check_name(name)
    model_id = _model_of_project(session, project, model_ref)
    _make_name(session, project, name, by)
    _lock(session, project, name)
    row = ModelVersion(project=project, name=name, model_id=model_id, created_by=by,
                       version=_last_number(session, project, name) + 1)
    session.add(row)
    session.flush()
    return row


def _make_name(session: Session, project: str, name: str, by: str) -> None:
    """The name's row, made on its first registration (two first ones at once make one)."""
    insert = postgres_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(RegisteredModel).values(project=project, name=name, created_by=by,
                                                   created_at=utcnow())
                    .on_conflict_do_nothing(index_elements=["project", "name"]))


def _lock(session: Session, project: str, name: str) -> None:
    """Hold the name's row until the transaction ends, so that two registrations (or alias
    moves) of one name at once run one after the other: each gets its own number, each move
    starts where the one before ended. NotFound when the name is not registered.

    An update that changes nothing: a row lock on PostgreSQL, and on SQLite the start of the
    write transaction (one writer at a time), taken before anything is read.
    """
    done = session.execute(update(RegisteredModel).where(
        RegisteredModel.project == project, RegisteredModel.name == name)
        .values(created_by=RegisteredModel.created_by)
        .execution_options(synchronize_session=False))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise NotFound(f"no model is registered as {name!r}")


def set_alias(*, session: Session, project: str, name: str, alias: str, version: int,
              by: str) -> ModelAlias:
    """Point alias of name at version (recording the move); the alias row as it is now."""
    check_name(name)
    check_alias(alias)
    _lock(session, project, name)
    _aliasable(session, project, name, version)
    row = session.get(ModelAlias, (project, name, alias), populate_existing=True)
    was = row.version if row is not None else None
    if row is None:
        row = ModelAlias(project=project, name=name, alias=alias)
        session.add(row)
    elif was == version:
        return row
    row.version, row.updated_at, row.updated_by = version, utcnow(), by
    session.add(AliasMove(project=project, name=name, alias=alias, from_version=was,
                          to_version=version, by=by))
    session.flush()
    return row


def _aliasable(session: Session, project: str, name: str, version: int) -> None:
    """A 422 for a version that does not exist, a 409 for one whose model was deleted."""
    target = session.get(ModelVersion, (project, name, version))
    if target is None:
        raise field_error("version", "no such version", detail=f"{name} has no version "
                          f"{version}; its versions are 1 to {_last_number(session, project, name)}")
    if target.model_deleted_at is not None:
        raise field_error("version", "its model was deleted", status=409,
                          detail=f"version {version} of {name} cannot take an alias: its model "
                                 f"{target.model_id} was deleted")


def drop_alias(*, session: Session, project: str, name: str, alias: str, by: str) -> None:
    """Remove an alias (recording the move to no version)."""
    check_name(name)
    _lock(session, project, name)
    row = session.get(ModelAlias, (project, name, alias), populate_existing=True)
    if row is None:
        raise NotFound(f"{name} has no alias {alias!r}; its aliases: "
                       f"{_aliases_text(session, project, name)}")
    session.add(AliasMove(project=project, name=name, alias=alias, from_version=row.version,
                          to_version=None, by=by))
    session.delete(row)
    session.flush()


def show(*, session: Session, project: str, name: str) -> Entry:
    """A name's versions (oldest first), aliases and alias moves (oldest first)."""
    check_name(name)
    head = _registered(session, project, name)
    versions = session.scalars(select(ModelVersion).where(
        ModelVersion.project == project, ModelVersion.name == name)
        .order_by(ModelVersion.version)).all()
    aliases = session.scalars(select(ModelAlias).where(
        ModelAlias.project == project, ModelAlias.name == name).order_by(ModelAlias.alias)).all()
    moves = session.scalars(select(AliasMove).where(
        AliasMove.project == project, AliasMove.name == name).order_by(AliasMove.id)).all()
    return Entry(name=name, created_at=head.created_at, created_by=head.created_by,
                 versions=list(versions), aliases=list(aliases), moves=list(moves))


def list_(*, session: Session, project: str, limit: int, offset: int) -> tuple[list[Entry], int]:
    """A page of the project's names, alphabetical, and how many there are."""
    where = [RegisteredModel.project == project]
    total = session.scalar(select(func.count()).select_from(RegisteredModel).where(*where)) or 0
    names = session.scalars(select(RegisteredModel.name).where(*where)
                            .order_by(RegisteredModel.name).limit(limit).offset(offset)).all()
    return [show(session=session, project=project, name=n) for n in names], total


def holding(*, session: Session, project: str, model_id: str) -> list[Held]:
    """The aliases that point at a version of this model."""
    rows = session.execute(select(ModelAlias.name, ModelAlias.alias, ModelAlias.version).join(
        ModelVersion, (ModelVersion.project == ModelAlias.project)
        & (ModelVersion.name == ModelAlias.name) & (ModelVersion.version == ModelAlias.version))
        .where(ModelVersion.project == project, ModelVersion.model_id == model_id)
        .order_by(ModelAlias.name, ModelAlias.alias)).all()
    return [Held(name=n, alias=a, version=v) for n, a, v in rows]


def model_deleted(*, session: Session, project: str, model_id: str) -> None:
    """Mark the versions of a model being deleted: their numbers stay taken, they resolve to a
    404 that says the model was deleted."""
    session.execute(update(ModelVersion).where(
        ModelVersion.project == project, ModelVersion.model_id == model_id,
        ModelVersion.model_deleted_at.is_(None)).values(model_deleted_at=utcnow()))


def registered_as(*, session: Session, project: str,
                  model_ids: list[str]) -> dict[str, list[Registered]]:
    """The registry versions each of these models is (two queries, whatever their number)."""
    versions = session.scalars(select(ModelVersion).where(
        ModelVersion.project == project, ModelVersion.model_id.in_(model_ids),
        ModelVersion.model_deleted_at.is_(None))
        .order_by(ModelVersion.name, ModelVersion.version)).all()
    names = {v.name for v in versions}
    aliases: dict[tuple[str, int], list[str]] = {}
    for a in session.scalars(select(ModelAlias).where(
            ModelAlias.project == project, ModelAlias.name.in_(names))
            .order_by(ModelAlias.alias)) if names else ():
        aliases.setdefault((a.name, a.version), []).append(a.alias)
    out: dict[str, list[Registered]] = {}
    for v in versions:
        out.setdefault(v.model_id, []).append(
            Registered(name=v.name, version=v.version, aliases=aliases.get((v.name, v.version), [])))
    return out
