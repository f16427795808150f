"""/v1/registry: model names, their numbered versions, and aliases that point at versions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from app.api.deps import CallerDep, Limit, Offset, ProjectDep, SessionDep
from app.schemas import (
    AliasIn,
    AliasOut,
    Page,
    RegisteredModelList,
    RegisteredModelOut,
    RegisterIn,
    VersionOut,
)
from app.services import registry
from app.services.keys import Caller

router = APIRouter(prefix="/v1/registry", tags=["registry"])
Responses = dict[int | str, dict[str, Any]]
NO_NAME: Responses = {404: {"description": "no model is registered under this name"},
                      422: {"description": "the name is not 1-100 letters, digits, '_', '.', "
                                           "'-'"}}


def _by(caller: Caller) -> str:
    """Who the registry records as acting: the API key id, or anonymous on an open API."""
    return caller.key_id or registry.ANONYMOUS


@router.get("", response_model=RegisteredModelList)
def list_names(session: SessionDep, project: ProjectDep, limit: Limit = 50,
               offset: Offset = 0) -> RegisteredModelList:
    """The project's registered names, alphabetical, each with its versions and aliases."""
    entries, total = registry.list_(session=session, project=project, limit=limit,
                                    offset=offset)
    return RegisteredModelList(items=[RegisteredModelOut.from_entry(e) for e in entries],
                               total=total, next=Page.next_offset(offset, len(entries), total))


@router.get("/{name}", response_model=RegisteredModelOut, responses=NO_NAME)
def show_name(name: str, session: SessionDep, project: ProjectDep) -> RegisteredModelOut:
    """A name's versions, its aliases, and the history of alias moves (who, when, from, to)."""
    return RegisteredModelOut.from_entry(registry.show(session=session, project=project,
                                                       name=name))


@router.post("/{name}/versions", status_code=201, response_model=VersionOut, responses={
    422: {"description": "an invalid name, or no such model (model_id)"}})
def register(name: str, body: RegisterIn, session: SessionDep, caller: CallerDep) -> VersionOut:
    """Register a model under a name as its next version (1, 2, …); the name is made on first
    use. `model_id` may itself be a reference (`other@staging`)."""
    row = registry.register(session=session, project=caller.project, name=name,
                            model_ref=body.model_id, by=_by(caller))
    session.commit()
    return VersionOut.from_row(row)


@router.put("/{name}/aliases/{alias}", response_model=AliasOut, responses={
    404: {"description": "no model is registered under this name"},
    409: {"description": "the version's model was deleted"},
    422: {"description": "an invalid name or alias (a word starting with a letter; `latest` "
                         "is reserved), or no such version"}})
def set_alias(name: str, alias: str, body: AliasIn, session: SessionDep,
              caller: CallerDep) -> AliasOut:
    """Point an alias (`production`, `staging`, any word) at a version; the move is recorded.
    `/v1/models/NAME@ALIAS/…` serves the new version from the next request."""
    row = registry.set_alias(session=session, project=caller.project, name=name, alias=alias,
                             version=body.version, by=_by(caller))
    session.commit()
    return AliasOut.from_row(row)


@router.delete("/{name}/aliases/{alias}", status_code=204, response_class=Response,
               responses={404: {"description": "no such name or alias"}})
def delete_alias(name: str, alias: str, session: SessionDep, caller: CallerDep) -> Response:
    """Remove an alias (recorded in the history as a move to no version)."""
    registry.drop_alias(session=session, project=caller.project, name=name, alias=alias,
                        by=_by(caller))
    session.commit()
    return Response(status_code=204)
