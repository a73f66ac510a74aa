"""The audit log: who changed what, when, per operator and per tenant (secrets masked)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import ColumnElement
from starlette.responses import Response

from pbxcore.admin.deps import CurrentPage, CurrentStore, Page, page_response
from pbxcore.admin.schemas import ListOf, Out
from pbxcore.tenancy import models as m
from pbxcore.tenancy.store import Repo
from pbxcore.tenancy.views import view

router = APIRouter(tags=["audit"])

Action = Literal["create", "update", "delete"]
EntityQuery = Annotated[
    str | None,
    Query(max_length=32, description="Only entries about this kind of object (`extension` ...)"),
]
EntityIdQuery = Annotated[
    str | None, Query(max_length=40, description="Only entries about this object")
]
ActionQuery = Annotated[Action | None, Query(description="Only this kind of change")]


class AuditEntryOut(Out):
    at: str
    operator_id: str | None
    tenant_id: str | None
    actor: str
    action: str
    entity: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


async def _page(
    repo: Repo[m.AuditEntry],
    page: Page,
    entity: str | None,
    entity_id: str | None,
    action: str | None,
) -> Response:
    a = m.AuditEntry
    criteria: list[ColumnElement[bool]] = []
    if entity is not None:
        criteria.append(a.entity == entity)
    if entity_id is not None:
        criteria.append(a.entity_id == entity_id)
    if action is not None:
        criteria.append(a.action == action)
    rows, total = await repo.list(
        page.limit, page.offset, *criteria, order_by=(a.at.desc(), a.id.desc())
    )
    return page_response([view(r) for r in rows], total)


@router.get(
    "/operators/{op}/audit",
    response_model=ListOf[AuditEntryOut],
    summary="The operator's audit log (its tenants' entries too), newest first",
)
async def operator_audit(
    op: str,
    store: CurrentStore,
    page: CurrentPage,
    *,
    entity: EntityQuery = None,
    entity_id: EntityIdQuery = None,
    action: ActionQuery = None,
) -> Response:
    scope = await store.operator(op)
    return await _page(scope.audit, page, entity, entity_id, action)


@router.get(
    "/tenants/{t}/audit",
    response_model=ListOf[AuditEntryOut],
    summary="A client PBX's audit log, newest first",
)
async def tenant_audit(
    t: str,
    store: CurrentStore,
    page: CurrentPage,
    *,
    entity: EntityQuery = None,
    entity_id: EntityIdQuery = None,
    action: ActionQuery = None,
) -> Response:
    scope = await store.tenant(t)
    scope.require_admin()
    return await _page(scope.audit, page, entity, entity_id, action)
