"""Isolation: no principal reaches another scope's data, on any path of the API.

Two operators with two tenants each; every object kind the API names in a path exists in
every scope. The test walks the OpenAPI document: for every path and method, every
operator admin and tenant admin, and every scope that principal may not see, it fills the
path with that scope's ids (all of them, and also its own parent with a foreign child) and
checks that the answer is exactly what an id that does not exist gets (so nothing leaks
existence: 404, not 403), never a 2xx, and that no body anywhere carries another scope's
ids or names. A new endpoint is covered without editing this file; a new kind of path
parameter needs one line in ``PARAM_KINDS``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from pbxcore.tenancy import models as m
from pbxcore.tenancy.store import Principal, Store
from pbxcore.wavfile import WavAudio, wav_bytes
from tests.api_fixtures import Api
from tests.test_admin_calls import cdr

WAV = wav_bytes(WavAudio("ulaw", 8000, 1, b"\xff" * 800))

# path parameter -> the kind of object it names; (parent parameter, name) when it depends
PARAM_KINDS: dict[str | tuple[str, str], str] = {
    "op": "operator",
    "t": "tenant",
    "e": "extension",
    "call": "call",
    ("op", "admin"): "operator_admin",
    ("t", "admin"): "tenant_admin",
    "trunk": "trunk",
    "rt": "route_table",
    "route": "route",
    "dp": "dial_plan",
    ("op", "n"): "pool_number",
    ("t", "n"): "tenant_number",
    ("op", "number"): "pool_number",
    ("t", "number"): "tenant_number",
    "p": "prompt",
    "ivr": "ivr",
    "s": "schedule",
}
ID_PREFIX = {
    "operator": "op",
    "tenant": "ten",
    "extension": "ext",
    "call": "cdr",
    "operator_admin": "usr",
    "tenant_admin": "usr",
    "trunk": "trk",
    "route_table": "rt",
    "route": "rte",
    "dial_plan": "dp",
    "pool_number": "did",
    "tenant_number": "did",
    "prompt": "prm",
    "ivr": "ivr",
    "schedule": "sch",
}


@dataclass
class Scope:
    key: str  # "O1", "O1.T1" ...
    ids: dict[str, str] = field(default_factory=dict)  # kind -> id (the parent's too)
    secrets: set[str] = field(default_factory=set)  # strings only this scope's viewers may see


@dataclass
class World:
    scopes: dict[str, Scope]
    tokens: dict[str, dict[str, str]]  # principal -> headers
    visible: dict[str, set[str]]  # principal -> scope keys it may see
    own: dict[str, dict[str, str]]  # principal -> ids of its own scope
    # what a tenant's admin knows of its operator anyway (its id, domain and name)
    parent: dict[str, set[str]] = field(default_factory=dict)

    def hidden_strings(self, principal: str) -> set[str]:
        seen = self.visible[principal]
        hidden = {s for k, sc in self.scopes.items() if k not in seen for s in sc.secrets}
        return hidden - self.parent.get(principal, set())


async def _build(api: Api) -> World:
    scopes: dict[str, Scope] = {}
    tokens: dict[str, dict[str, str]] = {}
    visible: dict[str, set[str]] = {}
    own: dict[str, dict[str, str]] = {}
    parent: dict[str, set[str]] = {}
    for i in (1, 2):
        domain = f"op{i}.example.net"
        op = await api.operator(domain=domain, name=f"Operator {i}")
        oscope = Scope(f"O{i}", {"operator": op["id"]}, {op["id"], domain, f"Operator {i}"})
        admin = await api.create(
            f"/operators/{op['id']}/admins",
            {"username": f"opadmin{i}", "password": "op-admin-pw-1"},
        )
        oscope.ids["operator_admin"] = admin["id"]
        oscope.secrets |= {admin["id"], f"opadmin{i}"}
        tokens[f"A{i}"] = await api.login(f"opadmin{i}", "op-admin-pw-1")
        async with api.ctx.db.session() as session:
            store = Store(session, Principal.system("test"), secrets=api.ctx.secrets)
            scope = await store.operator(op["id"])
            trunk = await scope.trunks.add(
                m.Trunk(id=m.new_id("trk"), name=f"trunk-op{i}", host=f"sbc.op{i}.test")
            )
            table = await scope.route_tables.add(
                m.RouteTableRow(id=m.new_id("rt"), name=f"rt-op{i}")
            )
            route = await scope.routes(table).add(
                m.Route(
                    id=m.new_id("rte"), prefix="7", trunk_id=trunk.id, cost_per_minute=Decimal(1)
                )
            )
            plan = await scope.dial_plans.add(m.DialPlanRow(id=m.new_id("dp"), name=f"dp-op{i}"))
            pool = await scope.numbers.add(m.Did(id=m.new_id("did"), number=f"+7495{i}000000"))
            await store.commit()
        for kind, row in (
            ("trunk", trunk),
            ("route_table", table),
            ("route", route),
            ("dial_plan", plan),
            ("pool_number", pool),
        ):
            oscope.ids[kind] = row.id
            oscope.secrets.add(row.id)
        oscope.secrets |= {f"sbc.op{i}.test", f"+7495{i}000000"}
        visible[f"A{i}"] = {oscope.key}
        own[f"A{i}"] = dict(oscope.ids)
        for j in (1, 2):
            slug = f"client{i}{j}"
            t = await api.tenant(op["id"], slug, limits={"max_dids": 5})
            tscope = Scope(f"O{i}.T{j}", {"operator": op["id"], "tenant": t["id"]})
            tscope.secrets |= {t["id"], t["domain"]}
            ext = await api.create(
                f"/tenants/{t['id']}/extensions",
                {"number": f"2{i}{j}", "name": f"Person {i}{j}", "sip_password": "ext-pw-123"},
            )
            boss = await api.create(
                f"/tenants/{t['id']}/admins",
                {
                    "username": f"boss{i}{j}",
                    "email": f"boss{i}{j}@c.example",
                    "password": "boss-pw-123",
                },
            )
            tokens[f"T{i}{j}"] = await api.login(boss["login"], "boss-pw-123")
            async with api.ctx.db.session() as session:
                row = cdr(t, i * 10 + j, from_number=f"2{i}{j}")
                session.add(row)
                did = m.Did(
                    id=m.new_id("did"),
                    operator_id=op["id"],
                    number=f"+7495{i}{j}00000",
                    tenant_id=t["id"],
                )
                session.add(did)
                await session.commit()
            prompt = await api.post(
                f"/tenants/{t['id']}/prompts",
                data={"name": f"Greeting {i}{j}"},
                files={"file": ("g.wav", WAV, "audio/wav")},
            )
            assert prompt.status_code == 201, prompt.text
            prompt_id = prompt.json()["id"]
            features = {"features": ["ivr", "schedules"]}
            await api.patch(f"/operators/{op['id']}/tenants/{t['id']}", json=features)
            hours = await api.create(f"/tenants/{t['id']}/schedules", {"name": f"Hours {i}{j}"})
            menu = await api.create(
                f"/tenants/{t['id']}/ivrs",
                {"name": f"Menu {i}{j}", "greeting_prompt_id": prompt_id},
            )
            tscope.ids |= {
                "extension": ext["id"],
                "tenant_admin": boss["id"],
                "call": row.id,
                "tenant_number": did.id,
                "prompt": prompt_id,
                "ivr": menu["id"],
                "schedule": hours["id"],
            }
            tscope.secrets |= {ext["id"], boss["id"], row.id, did.id, f"Person {i}{j}"}
            tscope.secrets |= {prompt_id, f"Greeting {i}{j}", menu["id"], f"Menu {i}{j}"}
            tscope.secrets |= {hours["id"], f"Hours {i}{j}"}
            tscope.secrets |= {f"boss{i}{j}@", f"+7495{i}{j}00000"}
            scopes[tscope.key] = tscope
            visible[f"A{i}"].add(tscope.key)
            visible[f"T{i}{j}"] = {tscope.key}
            own[f"T{i}{j}"] = dict(tscope.ids)
            parent[f"T{i}{j}"] = {op["id"], domain, f"Operator {i}"}
            if j == 1:  # the operator scope's paths that go on to a tenant use its first
                oscope.ids |= {k: v for k, v in tscope.ids.items() if k not in oscope.ids}
        scopes[oscope.key] = oscope
    return World(scopes, tokens, visible, own, parent)


_PARAM = re.compile(r"\{([^}]+)\}")


def _kinds(path: str) -> list[str]:
    names = _PARAM.findall(path)
    kinds = []
    for index, name in enumerate(names):
        parent = names[index - 1] if index else ""
        kind = PARAM_KINDS.get((parent, name)) or PARAM_KINDS.get(name)
        assert kind is not None, f"{path}: add the path parameter {name!r} to PARAM_KINDS"
        kinds.append(kind)
    return kinds


def _fill(path: str, values: list[str]) -> str:
    it = iter(values)
    return _PARAM.sub(lambda _: next(it), path)


def _example(schema: dict[str, Any], doc: dict[str, Any], name: str = "") -> Any:
    """A plausible value for ``schema`` (valid where simple), so the scope check is reached."""
    if "$ref" in schema:
        target = doc
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return _example(target, doc, name)
    for combo in ("anyOf", "oneOf", "allOf"):
        if combo in schema:
            options = [s for s in schema[combo] if s.get("type") != "null"] or schema[combo]
            return _example(options[0], doc, name)
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: _example(v, doc, k) for k, v in props.items() if k in schema.get("required", [])}
    if kind == "array":
        return []
    if kind == "integer":
        return max(int(schema.get("minimum", 1)), 1)
    if kind == "number":
        return 1
    if kind == "boolean":
        return True
    examples = {
        "number": "199",
        "slug": "isolated",
        "domain": "isolated.example.net",
        "username": "isolated",
        "password": "isolated-pw-1",
        "sip_password": "isolated-pw-1",
        "email": "isolated@example.net",
        "host": "sbc.isolated.test",
        "prefix": "7",
        "from": "+74959990000",
        "to": "+74959990009",
    }
    return examples.get(name, "Isolated")


async def _send(
    client: httpx.AsyncClient, method: str, url: str, headers: dict[str, str], body: Any
) -> httpx.Response:
    if method in ("post", "patch", "put"):
        return await client.request(method.upper(), url, headers=headers, json=body)
    return await client.request(method.upper(), url, headers=headers)


def _answer(r: httpx.Response) -> tuple[int, str | None]:
    try:
        code = r.json().get("error", {}).get("code")
    except ValueError:
        code = None
    return r.status_code, code


async def test_no_principal_reaches_another_scope_on_any_path(api: Api) -> None:
    world = await _build(api)
    doc = (await api.client.get("/api/v1/openapi.json")).json()
    prefix = "/api/v1"
    checked = 0
    order = {"get": 0, "post": 1, "patch": 2, "put": 3, "delete": 4}
    operations = sorted(
        ((p, meth, op) for p, ops in doc["paths"].items() for meth, op in ops.items()),
        key=lambda x: order.get(x[1], 9),
    )
    for path, method, operation in operations:
        rel = path.removeprefix(prefix)
        if rel.startswith("/auth/"):
            continue
        body: Any = None
        if method in ("post", "patch", "put"):
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            body = {} if method == "patch" else _example(content["application/json"]["schema"], doc)
        kinds = _kinds(rel)
        if not kinds and method == "get":
            public = await api.client.get(path)  # no token at all
            if public.is_success:  # a public endpoint (health): it may hold no one's data
                every = {x for sc in world.scopes.values() for x in sc.secrets}
                assert not [x for x in every if x in public.text], (path, public.text)
                continue
        for principal, headers in world.tokens.items():
            hidden = world.hidden_strings(principal)
            if not kinds:  # the platform scope (/operators ...): platform admins only
                r = await _send(api.client, method, path, headers, body)
                assert not r.is_success, (principal, method, path, r.text)
                continue
            missing = [f"{ID_PREFIX[k]}_{'0' * 32}" for k in kinds]
            for key, scope in world.scopes.items():
                tenant_scoped = kinds[0] == "tenant"
                if tenant_scoped != (".T" in key):
                    continue
                if key in world.visible[principal] and not (
                    kinds[0] == "operator" and principal.startswith("T")
                ):
                    continue  # its own scope (a tenant admin never sees operator paths)
                if not all(k in scope.ids for k in kinds):
                    continue
                foreign = [scope.ids[k] for k in kinds]
                attempts = [foreign]
                mine = world.own[principal]
                for split in range(1, len(kinds)):  # its own parent, a foreign child
                    if all(k in mine for k in kinds[:split]):
                        attempts.append([mine[k] for k in kinds[:split]] + foreign[split:])
                for values in attempts:
                    url = _fill(path, values)
                    nowhere = _fill(path, [*values[: len(values) - 1], missing[-1]])
                    if values == foreign:
                        nowhere = _fill(path, missing)
                    r = await _send(api.client, method, url, headers, body)
                    checked += 1
                    assert not r.is_success, (principal, method, url, r.text)
                    assert r.status_code != 403 or values != foreign, (principal, method, url)
                    baseline = await _send(api.client, method, nowhere, headers, body)
                    assert _answer(r) == _answer(baseline), (principal, method, url, r.text)
                    # (an error may repeat the id the caller gave: that is no leak)
                    leaked = [s for s in hidden if s in r.text and s not in url]
                    assert not leaked, (principal, method, url, leaked)
            if method == "get" and kinds:  # its own scope's pages hold nothing foreign
                mine = world.own[principal]
                if all(k in mine for k in kinds) and not (
                    kinds[0] == "operator" and principal.startswith("T")
                ):
                    r = await api.client.get(_fill(path, [mine[k] for k in kinds]), headers=headers)
                    leaked = [s for s in hidden if s in r.text]
                    assert not leaked, (principal, path, leaked)
    assert checked > 100  # the walk covered the API (guards against an empty document)
