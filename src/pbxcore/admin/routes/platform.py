"""Platform scope: operators and their admins (platform admins only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, HttpUrl
from starlette.responses import Response

from pbxcore.admin.deps import CurrentPage, CurrentStore, context, json_response, page_response
from pbxcore.admin.schemas import Colour, Domain, Email, In, ListOf, Name, Out, Password, Username
from pbxcore.tenancy import models as m
from pbxcore.tenancy.errors import ConflictError
from pbxcore.tenancy.views import view

router = APIRouter(tags=["platform"])


class Branding(In):
    product_name: str | None = Field(default=None, max_length=100)
    logo_url: HttpUrl | None = None
    primary_color: Colour | None = None
    accent_color: Colour | None = None

    def stored(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        return {k: v for k, v in data.items() if v is not None}


class BrandingOut(BaseModel):
    product_name: str | None = None
    logo_url: str | None = None
    primary_color: str | None = None
    accent_color: str | None = None


class OperatorIn(In):
    name: Name
    domain: Domain
    branding: Branding = Field(default_factory=Branding)


class OperatorPatch(In):
    name: Name | None = None
    domain: Domain | None = None
    branding: Branding | None = None


class OperatorOut(Out):
    name: str
    domain: str
    branding: BrandingOut


class AdminIn(In):
    username: Username
    password: Password
    full_name: str = Field(default="", max_length=200)
    email: Email | None = None


class AdminPatch(In):
    password: Password | None = None
    full_name: str | None = Field(default=None, max_length=200)
    email: Email | None = None


class AdminOut(Out):
    username: str
    login: str
    role: str
    operator_id: str | None
    tenant_id: str | None
    full_name: str
    email: str | None
    phone: str | None


@router.get("/operators", response_model=ListOf[OperatorOut], summary="List operators")
async def list_operators(store: CurrentStore, page: CurrentPage) -> Response:
    rows, total = await store.platform().operators.list(page.limit, page.offset)
    return page_response([view(r) for r in rows], total)


@router.post(
    "/operators", status_code=201, response_model=OperatorOut, summary="Create an operator"
)
async def create_operator(body: OperatorIn, store: CurrentStore) -> Response:
    row = await store.platform().create_operator(
        name=body.name, domain=body.domain, branding=body.branding.stored()
    )
    await store.commit()
    return json_response(view(row), 201)


@router.get("/operators/{op}", response_model=OperatorOut, summary="One operator")
async def get_operator(op: str, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    return json_response(view(scope.operator))


@router.patch("/operators/{op}", response_model=OperatorOut, summary="Change an operator")
async def patch_operator(op: str, body: OperatorPatch, store: CurrentStore) -> Response:
    platform = store.platform()
    row = await platform.operators.get(op)
    changes = body.changes()
    if "branding" in changes:
        changes["branding"] = body.branding.stored() if body.branding else {}
    await platform.update_operator(row, changes)
    await store.commit()
    return json_response(view(row))


@router.delete("/operators/{op}", status_code=204, summary="Delete an operator without tenants")
async def delete_operator(op: str, store: CurrentStore) -> Response:
    platform = store.platform()
    await platform.delete_operator(await platform.operators.get(op))
    await store.commit()
    return Response(status_code=204)


@router.get("/operators/{op}/admins", response_model=ListOf[AdminOut], summary="Operator admins")
async def list_operator_admins(op: str, store: CurrentStore, page: CurrentPage) -> Response:
    platform = store.platform()
    repo = platform.operator_admins(await platform.operators.get(op))
    rows, total = await repo.list(page.limit, page.offset)
    return page_response([view(r) for r in rows], total)


@router.post(
    "/operators/{op}/admins",
    status_code=201,
    response_model=AdminOut,
    summary="Create an operator admin",
)
async def create_operator_admin(op: str, body: AdminIn, store: CurrentStore) -> Response:
    platform = store.platform()
    repo = platform.operator_admins(await platform.operators.get(op))
    if await store.find_login(body.username) is not None:
        raise ConflictError(
            f"the username {body.username!r} is taken", {"field": "username"}, code="duplicate"
        )
    row = await store.create_user(
        repo,
        role="operator_admin",
        username=body.username,
        password=body.password,
        login=body.username,
        full_name=body.full_name,
        email=body.email,
    )
    await store.commit()
    return json_response(view(row), 201)


async def _operator_admin(store: CurrentStore, op: str, admin: str) -> tuple[Any, m.User]:
    platform = store.platform()
    repo = platform.operator_admins(await platform.operators.get(op))
    return repo, await repo.get(admin)


@router.get("/operators/{op}/admins/{admin}", response_model=AdminOut, summary="One operator admin")
async def get_operator_admin(op: str, admin: str, store: CurrentStore) -> Response:
    _repo, row = await _operator_admin(store, op, admin)
    return json_response(view(row))


@router.patch(
    "/operators/{op}/admins/{admin}", response_model=AdminOut, summary="Change an operator admin"
)
async def patch_operator_admin(
    request: Request, op: str, admin: str, body: AdminPatch, store: CurrentStore
) -> Response:
    repo, row = await _operator_admin(store, op, admin)
    if await store.update_user(repo, row, body.changes()):
        context(request).sessions.drop_user(row.id)
    await store.commit()
    return json_response(view(row))


@router.delete(
    "/operators/{op}/admins/{admin}", status_code=204, summary="Delete an operator admin"
)
async def delete_operator_admin(op: str, admin: str, store: CurrentStore) -> Response:
    repo, row = await _operator_admin(store, op, admin)
    await repo.delete(row)
    await store.commit()
    return Response(status_code=204)
