"""Operator scope: trunks, least-cost route tables and their routes, dial plans.

``explain`` and ``normalize`` compile the stored rows exactly as the call path does
(:mod:`pbxcore.tenancy.compile`), so their answers are what the next call will do.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from starlette.responses import Response

from pbxcore.admin.deps import CurrentPage, CurrentStore, context, json_response, page_response
from pbxcore.admin.schemas import E164, Cidr, Id, In, ListOf, Name, Out, Prefix
from pbxcore.tenancy import models as m
from pbxcore.tenancy import rules
from pbxcore.tenancy.compile import compile_dial_plan, compile_route_table
from pbxcore.tenancy.store import OperatorScope
from pbxcore.tenancy.views import view

router = APIRouter(tags=["routing"])

Transport = Literal["udp", "tcp", "tls"]
NumberFormat = Literal["e164", "e164_digits", "national", "international_00"]
Host = Annotated[str, AfterValidator(rules.check_host)]
Country = Annotated[str, AfterValidator(rules.check_country)]
AreaCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,8}$")]
RouteNumber = Annotated[
    str, StringConstraints(max_length=20), AfterValidator(rules.check_route_number)
]
Money = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=6)]
Port = Annotated[int, Field(ge=1, le=65535)]
Channels = Annotated[int, Field(ge=1, le=100_000)]
Priority = Annotated[int, Field(ge=0, le=1_000_000)]
Weight = Annotated[int, Field(ge=0, le=1_000_000)]
Secret = Annotated[str, StringConstraints(min_length=1, max_length=128)]


# -- trunks ---------------------------------------------------------------------------------


class TrunkAuth(In):
    username: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    password: Secret | None = Field(
        default=None,
        description="Write-only; required on create, kept by a PATCH that leaves it out",
    )


class CallerId(In):
    mode: Literal["pass", "fixed", "from_did"] = "pass"
    fixed_number: E164 | None = None
    format: NumberFormat = "e164"
    restricted: bool = False

    @model_validator(mode="after")
    def _rule(self) -> CallerId:
        rules.check_caller_id(self.model_dump())  # the routing layer's own check
        return self


class TrunkIn(In):
    name: Name
    host: Host
    port: Port = 5060
    transport: Transport = "udp"
    auth: TrunkAuth | None = None
    register_: bool = Field(default=False, alias="register")
    inbound_ips: list[Cidr] = Field(default_factory=list, max_length=100)
    number_format: NumberFormat = "e164"
    caller_id: CallerId = Field(default_factory=CallerId)
    max_channels: Channels | None = None
    rate_per_minute: Money | None = None
    enabled: bool = True


class TrunkPatch(In):
    name: Name | None = None
    host: Host | None = None
    port: Port | None = None
    transport: Transport | None = None
    auth: TrunkAuth | None = None
    register_: bool | None = Field(default=None, alias="register")
    inbound_ips: list[Cidr] | None = Field(default=None, max_length=100)
    number_format: NumberFormat | None = None
    caller_id: CallerId | None = None
    max_channels: Channels | None = None
    rate_per_minute: Money | None = None
    enabled: bool | None = None


class TrunkAuthOut(BaseModel):
    username: str


class CallerIdOut(BaseModel):
    mode: str
    fixed_number: str | None = None
    format: str
    restricted: bool = False


class TrunkOut(Out):
    name: str
    host: str
    port: int
    transport: str
    auth: TrunkAuthOut | None
    register_: bool = Field(alias="register")
    inbound_ips: list[str]
    number_format: str
    caller_id: CallerIdOut
    max_channels: int | None
    rate_per_minute: float | None
    enabled: bool


# null is "no value" for these; for the others (auth, max_channels ...) it clears
_TRUNK_NOT_NULL = frozenset(
    {
        "name",
        "host",
        "port",
        "transport",
        "register",
        "inbound_ips",
        "number_format",
        "caller_id",
        "enabled",
    }
)


def _trunk_values(body: TrunkIn | TrunkPatch, changes: dict[str, Any]) -> dict[str, Any]:
    # "register" is a field name pydantic's BaseModel (an ABC) keeps for itself
    if "register_" in changes:
        changes["register"] = changes.pop("register_")
    data = {k: v for k, v in changes.items() if not (v is None and k in _TRUNK_NOT_NULL)}
    if data.get("auth") is not None:
        assert body.auth is not None
        data["auth"] = {"username": body.auth.username, "password": body.auth.password}
    return data


@router.get("/operators/{op}/trunks", response_model=ListOf[TrunkOut], summary="List trunks")
async def list_trunks(op: str, store: CurrentStore, page: CurrentPage) -> Response:
    scope = await store.operator(op)
    rows, total = await scope.trunks.list(page.limit, page.offset, order_by=(m.Trunk.name,))
    return page_response([view(r) for r in rows], total)


@router.post(
    "/operators/{op}/trunks",
    status_code=201,
    response_model=TrunkOut,
    summary="Create a trunk to a carrier (the password is stored encrypted, never returned)",
)
async def create_trunk(op: str, body: TrunkIn, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    row = await scope.create_trunk(_trunk_values(body, body.model_dump()))
    await store.commit()
    return json_response(view(row), 201)


@router.get("/operators/{op}/trunks/{trunk}", response_model=TrunkOut, summary="One trunk")
async def get_trunk(op: str, trunk: str, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    return json_response(view(await scope.trunks.get(trunk)))


class TrunkStatusOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    trunk_id: str
    register_: bool = Field(alias="register", description="Whether pbxcore registers")
    state: str = Field(
        description="registering | registered | failed | unregistered, or not_registering"
    )
    expires_in: int | None
    last_status: int | None
    last_error: str | None
    active_channels: int


@router.get(
    "/operators/{op}/trunks/{trunk}/status",
    response_model=TrunkStatusOut,
    summary="A trunk's registration state and active channels",
)
async def trunk_status(op: str, trunk: str, request: Request, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    row = await scope.trunks.get(trunk)
    live = context(request).trunk_status
    state: dict[str, Any] = {} if live is None else live(row.id)
    return json_response(
        {
            "trunk_id": row.id,
            "register": row.register,
            "state": state.get("state") or ("registering" if row.register else "not_registering"),
            "expires_in": state.get("expires_in"),
            "last_status": state.get("last_status"),
            "last_error": state.get("last_error"),
            "active_channels": int(state.get("active_channels") or 0),
        }
    )


@router.patch(
    "/operators/{op}/trunks/{trunk}",
    response_model=TrunkOut,
    summary="Change a trunk (auth null: IP trust; auth without password keeps the password)",
)
async def patch_trunk(op: str, trunk: str, body: TrunkPatch, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    row = await scope.trunks.get(trunk)
    await scope.update_trunk(row, _trunk_values(body, body.changes()))
    await store.commit()
    return json_response(view(row))


@router.delete(
    "/operators/{op}/trunks/{trunk}",
    status_code=204,
    summary="Delete a trunk no route and no tenant uses",
)
async def delete_trunk(op: str, trunk: str, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    await scope.delete_trunk(await scope.trunks.get(trunk))
    await store.commit()
    return Response(status_code=204)


# -- route tables ---------------------------------------------------------------------------


class RouteTableIn(In):
    name: Name


class RouteTablePatch(In):
    name: Name | None = None


class RouteTableOut(Out):
    name: str


@router.get(
    "/operators/{op}/route-tables",
    response_model=ListOf[RouteTableOut],
    summary="List route tables",
)
async def list_route_tables(op: str, store: CurrentStore, page: CurrentPage) -> Response:
    scope = await store.operator(op)
    rows, total = await scope.route_tables.list(
        page.limit, page.offset, order_by=(m.RouteTableRow.name,)
    )
    return page_response([view(r) for r in rows], total)


@router.post(
    "/operators/{op}/route-tables",
    status_code=201,
    response_model=RouteTableOut,
    summary="Create a route table",
)
async def create_route_table(op: str, body: RouteTableIn, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    row = await scope.create_route_table(body.model_dump())
    await store.commit()
    return json_response(view(row), 201)


@router.get(
    "/operators/{op}/route-tables/{rt}", response_model=RouteTableOut, summary="One route table"
)
async def get_route_table(op: str, rt: str, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    return json_response(view(await scope.route_tables.get(rt)))


@router.patch(
    "/operators/{op}/route-tables/{rt}",
    response_model=RouteTableOut,
    summary="Rename a route table",
)
async def patch_route_table(
    op: str, rt: str, body: RouteTablePatch, store: CurrentStore
) -> Response:
    scope = await store.operator(op)
    row = await scope.route_tables.get(rt)
    changes = {k: v for k, v in body.changes().items() if v is not None}
    await scope.update_route_table(row, changes)
    await store.commit()
    return json_response(view(row))


@router.delete(
    "/operators/{op}/route-tables/{rt}",
    status_code=204,
    summary="Delete a route table and its routes (not while a tenant uses it)",
)
async def delete_route_table(op: str, rt: str, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    await scope.delete_route_table(await scope.route_tables.get(rt))
    await store.commit()
    return Response(status_code=204)


# -- routes ---------------------------------------------------------------------------------


class RouteIn(In):
    prefix: Prefix = Field(description="E.164 digits without '+'; empty is the default route")
    trunk_id: Id
    priority: Priority = 1
    weight: Weight = 1
    cost_per_minute: Money = Decimal(0)
    enabled: bool = True


class RoutePatch(In):
    prefix: Prefix | None = None
    trunk_id: Id | None = None
    priority: Priority | None = None
    weight: Weight | None = None
    cost_per_minute: Money | None = None
    enabled: bool | None = None


class RouteOut(Out):
    route_table_id: str
    prefix: str
    trunk_id: str
    priority: int
    weight: int
    cost_per_minute: float
    enabled: bool


async def _table(store: CurrentStore, op: str, rt: str) -> tuple[OperatorScope, m.RouteTableRow]:
    scope = await store.operator(op)
    return scope, await scope.route_tables.get(rt)


@router.get(
    "/operators/{op}/route-tables/{rt}/routes",
    response_model=ListOf[RouteOut],
    summary="A route table's routes, by prefix then priority",
)
async def list_routes(op: str, rt: str, store: CurrentStore, page: CurrentPage) -> Response:
    scope, table = await _table(store, op, rt)
    rows, total = await scope.routes(table).list(
        page.limit,
        page.offset,
        order_by=(m.Route.prefix, m.Route.priority, m.Route.created_at, m.Route.id),
    )
    return page_response([view(r) for r in rows], total)


@router.post(
    "/operators/{op}/route-tables/{rt}/routes",
    status_code=201,
    response_model=RouteOut,
    summary="Add a route: calls to prefix may go out through trunk_id",
)
async def create_route(op: str, rt: str, body: RouteIn, store: CurrentStore) -> Response:
    scope, table = await _table(store, op, rt)
    row = await scope.create_route(table, body.model_dump())
    await store.commit()
    return json_response(view(row), 201)


@router.get(
    "/operators/{op}/route-tables/{rt}/routes/{route}", response_model=RouteOut, summary="One route"
)
async def get_route(op: str, rt: str, route: str, store: CurrentStore) -> Response:
    scope, table = await _table(store, op, rt)
    return json_response(view(await scope.routes(table).get(route)))


@router.patch(
    "/operators/{op}/route-tables/{rt}/routes/{route}",
    response_model=RouteOut,
    summary="Change a route",
)
async def patch_route(
    op: str, rt: str, route: str, body: RoutePatch, store: CurrentStore
) -> Response:
    scope, table = await _table(store, op, rt)
    row = await scope.routes(table).get(route)
    changes = {k: v for k, v in body.changes().items() if v is not None}
    await scope.update_route(table, row, changes)
    await store.commit()
    return json_response(view(row))


@router.delete(
    "/operators/{op}/route-tables/{rt}/routes/{route}", status_code=204, summary="Delete a route"
)
async def delete_route(op: str, rt: str, route: str, store: CurrentStore) -> Response:
    scope, table = await _table(store, op, rt)
    await scope.routes(table).delete(await scope.routes(table).get(route))
    await store.commit()
    return Response(status_code=204)


class NumberIn(In):
    number: RouteNumber


class ExplainStep(BaseModel):
    prefix: str
    trunk_id: str
    trunk_name: str | None
    priority: int
    weight: int
    cost_per_minute: str
    enabled: bool
    decision: Literal["candidate", "skipped"]
    position: int | None
    reason: str


class ExplainPrefix(BaseModel):
    prefix: str
    used: bool
    reason: str


class ExplainOut(BaseModel):
    number: str
    route_table_id: str
    fallthrough: bool
    tie_break: str
    prefixes: list[ExplainPrefix]
    steps: list[ExplainStep]
    candidates: list[str] = Field(description="Trunk ids in the order a call tries them")
    down: list[str] = Field(description="Trunks skipped because they are disabled")


@router.post(
    "/operators/{op}/route-tables/{rt}/explain",
    response_model=ExplainOut,
    summary="The trunks a call to number would try, in order, and why",
)
async def explain_route(op: str, rt: str, body: NumberIn, store: CurrentStore) -> Response:
    scope, table = await _table(store, op, rt)
    compiled = compile_route_table(await scope.route_table_rows(table))
    trunks = {t.id: t for t in await scope.trunks.all()}
    # a disabled trunk takes no calls: the call path treats it as down
    down = sorted(t.id for t in trunks.values() if not t.enabled)
    answer = compiled.explain(body.number, down=down)
    for step in answer["steps"]:
        trunk = trunks.get(step["trunk_id"])
        step["trunk_name"] = None if trunk is None else trunk.name
        if step["reason"] == "trunk is down":
            step["reason"] = "trunk is disabled"
    return json_response(answer | {"route_table_id": table.id, "down": down})


# -- dial plans -----------------------------------------------------------------------------


class DialRuleIn(In):
    match: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    replace: Annotated[str, StringConstraints(max_length=200)]
    description: Annotated[str, StringConstraints(max_length=200)] = ""
    kind: (
        Literal["internal", "national", "international", "emergency", "service", "invalid"] | None
    ) = None


ExtensionDigits = Annotated[int, Field(ge=1, le=9)]


class DialPlanIn(In):
    name: Name
    country: Country = "RU"
    default_area_code: AreaCode | None = None
    rules: list[DialRuleIn] = Field(default_factory=list, max_length=200)
    extension_digits: ExtensionDigits | None = None


class DialPlanPatch(In):
    name: Name | None = None
    country: Country | None = None
    default_area_code: AreaCode | None = None
    rules: list[DialRuleIn] | None = Field(default=None, max_length=200)
    extension_digits: ExtensionDigits | None = None


class DialRuleOut(BaseModel):
    match: str
    replace: str
    description: str = ""
    kind: str | None = None


class DialPlanOut(Out):
    name: str
    country: str
    default_area_code: str | None
    rules: list[DialRuleOut]
    extension_digits: int | None


def _dial_plan_values(changes: dict[str, Any]) -> dict[str, Any]:
    data = {k: v for k, v in changes.items() if not (v is None and k in ("name", "country"))}
    if data.get("rules") is None and "rules" in data:
        data["rules"] = []
    if data.get("rules"):
        data["rules"] = [
            {k: v for k, v in r.items() if not (k == "kind" and v is None)} for r in data["rules"]
        ]
    return data


@router.get(
    "/operators/{op}/dial-plans", response_model=ListOf[DialPlanOut], summary="List dial plans"
)
async def list_dial_plans(op: str, store: CurrentStore, page: CurrentPage) -> Response:
    scope = await store.operator(op)
    rows, total = await scope.dial_plans.list(
        page.limit, page.offset, order_by=(m.DialPlanRow.name,)
    )
    return page_response([view(r) for r in rows], total)


@router.post(
    "/operators/{op}/dial-plans",
    status_code=201,
    response_model=DialPlanOut,
    summary="Create a dial plan: its rules first, then the country's built-in rules",
)
async def create_dial_plan(op: str, body: DialPlanIn, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    row = await scope.create_dial_plan(_dial_plan_values(body.model_dump()))
    await store.commit()
    return json_response(view(row), 201)


@router.get("/operators/{op}/dial-plans/{dp}", response_model=DialPlanOut, summary="One dial plan")
async def get_dial_plan(op: str, dp: str, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    return json_response(view(await scope.dial_plans.get(dp)))


@router.patch(
    "/operators/{op}/dial-plans/{dp}", response_model=DialPlanOut, summary="Change a dial plan"
)
async def patch_dial_plan(op: str, dp: str, body: DialPlanPatch, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    row = await scope.dial_plans.get(dp)
    await scope.update_dial_plan(row, _dial_plan_values(body.changes()))
    await store.commit()
    return json_response(view(row))


@router.delete(
    "/operators/{op}/dial-plans/{dp}",
    status_code=204,
    summary="Delete a dial plan no tenant and no extension uses",
)
async def delete_dial_plan(op: str, dp: str, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    await scope.delete_dial_plan(await scope.dial_plans.get(dp))
    await store.commit()
    return Response(status_code=204)


class DialedIn(In):
    number: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class NormalizedOut(BaseModel):
    e164: str | None
    kind: Literal["internal", "national", "international", "emergency", "service", "invalid"]
    rule: str | None
    reason: str | None = None


@router.post(
    "/operators/{op}/dial-plans/{dp}/normalize",
    response_model=NormalizedOut,
    summary="What a dialled string means under this dial plan",
)
async def normalize_number(op: str, dp: str, body: DialedIn, store: CurrentStore) -> Response:
    scope = await store.operator(op)
    plan = compile_dial_plan(await scope.dial_plans.get(dp))
    return json_response(plan.normalize(body.number).to_json())
