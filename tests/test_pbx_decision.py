"""The routing decision over config snapshots built directly (no database)."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbxcore.pbx import (
    MAX_FORWARD_HOPS,
    Decision,
    ExtensionCaller,
    TrunkCaller,
    UsageCounts,
    decide,
    decide_forward,
    trunk_for_source,
)
from pbxcore.routing import CallerIdRule, DialPlan, DialRule, RouteEntry, RouteTable
from pbxcore.sip.auth import DigestAlgorithm
from pbxcore.tenancy.compile import TrunkConfig
from pbxcore.tenancy.snapshot import (
    DidConfig,
    ExtensionConfig,
    IvrConfig,
    OperatorConfig,
    ScheduleConfig,
    Snapshot,
    TenantConfig,
    TenantLimits,
)

# -- builders ---------------------------------------------------------------------------------


def trunk(trunk_id: str, **kw: Any) -> TrunkConfig:
    values: dict[str, Any] = {
        "id": trunk_id,
        "name": trunk_id,
        "host": f"{trunk_id}.carrier.example",
        "port": 5060,
        "transport": "udp",
        "auth_username": None,
        "auth_password": None,
        "register": False,
        "inbound_ips": (),
        "number_format": "e164",
        "caller_id": CallerIdRule(),
        "max_channels": None,
        "enabled": True,
    }
    values.update(kw)
    return TrunkConfig(**values)


def ext(
    ext_id: str,
    number: str,
    *,
    forwarding: Mapping[str, Any] | None = None,
    dial_plan_id: str | None = None,
    enabled: bool = True,
) -> ExtensionConfig:
    return ExtensionConfig(
        id=ext_id,
        number=number,
        name=f"ext {number}",
        enabled=enabled,
        ha1={DigestAlgorithm.MD5: "0" * 32},
        dial_plan_id=dial_plan_id,
        forwarding=dict(forwarding or {}),
    )


def tenant(
    tenant_id: str,
    operator_id: str,
    extensions: list[ExtensionConfig],
    *,
    status: str = "active",
    max_concurrent_calls: int = 4,
    international_calls: bool = False,
    route_table_id: str | None = "rt",
    dedicated_trunk_id: str | None = None,
    dial_plan_id: str | None = "dp-ru",
) -> TenantConfig:
    return TenantConfig(
        id=tenant_id,
        operator_id=operator_id,
        name=tenant_id,
        slug=tenant_id,
        domain=f"{tenant_id}.voip.example",
        status=status,
        features=frozenset(),
        limits=TenantLimits(
            max_extensions=100,
            max_concurrent_calls=max_concurrent_calls,
            max_dids=10,
            international_calls=international_calls,
            max_call_duration_s=None,
        ),
        route_table_id=route_table_id,
        dedicated_trunk_id=dedicated_trunk_id,
        dial_plan_id=dial_plan_id,
        time_zone="UTC",
        digest_algorithms=(DigestAlgorithm.MD5,),
        extensions={e.number: e for e in extensions},
    )


def snapshot(
    operators: list[OperatorConfig], tenants: list[TenantConfig], dids: list[DidConfig]
) -> Snapshot:
    return Snapshot(
        version=7,
        operators={o.id: o for o in operators},
        tenants={t.id: t for t in tenants},
        tenants_by_domain={t.domain: t for t in tenants},
        dids={d.number: d for d in dids},
    )


def operator(
    op_id: str,
    trunks: list[TrunkConfig],
    tables: Mapping[str, RouteTable],
    plans: Mapping[str, DialPlan] | None = None,
) -> OperatorConfig:
    return OperatorConfig(
        id=op_id,
        name=op_id,
        domain=f"{op_id}.example",
        branding={},
        trunks={t.id: t for t in trunks},
        dial_plans=dict(
            plans
            if plans is not None
            else {
                "dp-ru": DialPlan.from_config(
                    country="RU", default_area_code="495", extension_digits=3, name="RU 495"
                )
            }
        ),
        route_tables=dict(tables),
    )


def R(prefix: str, trunk_id: str, priority: int = 10, cost: str = "0") -> RouteEntry:
    return RouteEntry(prefix, trunk_id, priority=priority, cost_per_minute=cost)


TRUNKS = [
    trunk("t-a", inbound_ips=("192.0.2.0/24", "2001:db8::/32")),
    trunk(
        "t-b",
        number_format="national",
        caller_id=CallerIdRule(mode="from_did", format="national"),
        inbound_ips=("192.0.2.77",),
    ),
    trunk("t-off", enabled=False, inbound_ips=("198.51.100.0/24",)),
    trunk("t-full", max_channels=2),
    trunk("t-fixed", caller_id=CallerIdRule(mode="fixed", fixed_number="+74950000000")),
]
TABLE = RouteTable(
    [
        R("7495", "t-a", 10, "0.010"),
        R("7495", "t-b", 20, "0.020"),
        R("7495", "t-off", 30, "0.001"),
        R("7", "t-b", 10, "0.030"),
        R("49", "t-a", 10, "0.100"),
        R("7812", "t-full", 10, "0.015"),
        R("7812", "t-off", 20, "0.015"),
        R("7383", "t-gone", 10, "0.5"),
    ],
    fallthrough=True,
)
OTHER_TRUNKS = [trunk("u-a", inbound_ips=("203.0.113.0/24",))]


def world(**overrides: Any) -> Snapshot:
    """Operator op1 with tenants A (the main one), B (same numbers as A), C (suspended);
    operator op2 with tenant Z and its own DID."""
    a = overrides.pop("a", None) or tenant(
        "A",
        "op1",
        [
            ext("a200", "200"),
            ext("a201", "201"),
            ext("a210", "210", forwarding={"unconditional": "201"}),
            ext("a211", "211", forwarding={"unconditional": "84951234567"}),
            ext("a212", "212", forwarding={"busy": "201", "no_answer": "+74957654321"}),
            ext("a220", "220", forwarding={"unconditional": "221"}),
            ext("a221", "221", forwarding={"unconditional": "220"}),
            ext("a230", "230", enabled=False),
        ],
    )
    b = tenant("B", "op1", [ext("b200", "200"), ext("b201", "201"), ext("b202", "202")])
    c = tenant("C", "op1", [ext("c200", "200")], status="suspended")
    z = tenant("Z", "op2", [ext("z200", "200")], route_table_id=None, dial_plan_id=None)
    tables = {"rt": TABLE, **overrides.pop("tables", {})}
    op1 = operator("op1", overrides.pop("trunks", TRUNKS), tables)
    op2 = operator("op2", OTHER_TRUNKS, {}, {})
    dids = [
        DidConfig("+74951110001", "op1", "A", {"type": "extension", "id": "a201"}),
        DidConfig("+74951110000", "op1", "A", {"type": "extension", "id": "a200"}),
        DidConfig("+74951110002", "op1", "A", None),
        DidConfig("+74951110003", "op1", "A", {"type": "ivr", "id": "ivr-1"}),
        DidConfig("+74951110004", "op1", "A", {"type": "external", "number": "+74952223344"}),
        DidConfig("+74951110005", "op1", "A", {"type": "hangup"}),
        DidConfig("+74951110006", "op1", "A", {"type": "extension", "id": "b200"}),
        DidConfig("+74951110007", "op1", "A", {"type": "extension", "id": "a210"}),
        DidConfig("+74952220000", "op1", "B", {"type": "extension", "id": "b200"}),
        DidConfig("+74953330000", "op1", "C", {"type": "extension", "id": "c200"}),
        DidConfig("+74954440000", "op2", "Z", {"type": "extension", "id": "z200"}),
    ]
    tenants = [a, b, c, z, *overrides.pop("tenants", [])]
    assert not overrides, overrides
    return snapshot([op1, op2], tenants, dids)


def intl_allowed(t: TenantConfig) -> TenantConfig:
    return replace(t, limits=replace(t.limits, international_calls=True))


IDLE = UsageCounts()
FROM_A200 = ExtensionCaller("A", "200")
FROM_T_A = TrunkCaller("op1", "t-a", "+79161234567")


def assert_json(decision: Decision) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(decision.explain))
    return data


def rejected(decision: Decision, status: int, code: str) -> None:
    assert decision.kind == "reject", decision.explain
    assert decision.reject is not None
    assert (decision.reject.status, decision.reject.code) == (status, code), decision.reject
    assert decision.reject.phrase
    assert decision.explain["result"]["status"] == status
    assert_json(decision)


# -- internal calls ---------------------------------------------------------------------------


class TestInternal:
    def test_an_extension_of_the_same_tenant(self) -> None:
        d = decide(world(), FROM_A200, "201", usage=IDLE)
        assert (d.kind, d.direction, d.tenant_id, d.number) == ("internal", "internal", "A", "201")
        assert [t.extension_id for t in d.extensions] == ["a201"]
        data = assert_json(d)
        assert data["normalized"] == {
            "e164": "201",
            "kind": "internal",
            "rule": "extension (3 digits)",
            "reason": None,
        }
        assert data["dial_plan"]["id"] == "dp-ru" and data["dial_plan"]["source"] == "tenant"

    def test_another_tenants_number_is_never_reached(self) -> None:
        snap = world()
        # B has 202, A does not: 404, not B's phone
        rejected(decide(snap, FROM_A200, "202", usage=IDLE), 404, "extension_not_found")
        # both have 201: A's caller reaches A's, B's caller reaches B's
        assert decide(snap, FROM_A200, "201", usage=IDLE).extensions[0].extension_id == "a201"
        from_b = decide(snap, ExtensionCaller("B", "200"), "201", usage=IDLE)
        assert (from_b.tenant_id, from_b.extensions[0].extension_id) == ("B", "b201")

    def test_disabled_target_and_disabled_or_unknown_caller(self) -> None:
        snap = world()
        rejected(decide(snap, FROM_A200, "230", usage=IDLE), 480, "extension_disabled")
        rejected(
            decide(snap, ExtensionCaller("A", "230"), "201", usage=IDLE), 403, "caller_disabled"
        )
        rejected(
            decide(snap, ExtensionCaller("A", "999"), "201", usage=IDLE), 403, "caller_unknown"
        )
        rejected(
            decide(snap, ExtensionCaller("nope", "200"), "201", usage=IDLE), 403, "caller_unknown"
        )

    def test_the_extensions_dial_plan_wins_over_the_tenants(self) -> None:
        four = DialPlan.from_config(country="RU", extension_digits=4, name="four")
        plans = {
            "dp-ru": DialPlan.from_config(
                country="RU", default_area_code="495", extension_digits=3
            ),
            "dp-4": four,
        }
        a = tenant(
            "A",
            "op1",
            [ext("a200", "200", dial_plan_id="dp-4"), ext("a201", "201"), ext("a2001", "2001")],
        )
        snap = world(a=a)
        snap = replace(
            snap,
            operators={**snap.operators, "op1": replace(snap.operators["op1"], dial_plans=plans)},
        )
        d = decide(snap, FROM_A200, "2001", usage=IDLE)
        assert d.kind == "internal" and d.explain["dial_plan"]["source"] == "extension"
        assert d.explain["normalized"]["rule"] == "extension (4 digits)"
        d = decide(snap, ExtensionCaller("A", "201"), "200", usage=IDLE)
        assert d.explain["dial_plan"]["id"] == "dp-ru"

    def test_without_a_plan_the_builtin_one_and_extension_numbers(self) -> None:
        a = tenant("A", "op1", [ext("a200", "200"), ext("a2001", "2001")], dial_plan_id=None)
        d = decide(world(a=a), FROM_A200, "2001", usage=IDLE)
        assert d.kind == "internal" and d.extensions[0].extension_id == "a2001"
        data = assert_json(d)
        assert data["dial_plan"]["source"] == "built-in"
        assert data["normalized"]["rule"] == "extension of the tenant (no rule matched)"
        # a missing plan id falls back too, and the trace says so
        a = replace(a, dial_plan_id="gone")
        d = decide(world(a=a), FROM_A200, "84951234567", usage=IDLE)
        assert d.kind == "outbound"
        assert d.explain["dial_plan"]["skipped"] == [
            {"id": "gone", "source": "tenant", "reason": "dial plan not found"}
        ]

    @pytest.mark.parametrize("dialed", ["", "12", "8495", "abc", "+0123", "9" * 200, "8 10 4"])
    def test_invalid_or_incomplete_numbers_are_484(self, dialed: str) -> None:
        d = decide(world(), FROM_A200, dialed, usage=IDLE)
        rejected(d, 484, "invalid_number")
        assert d.explain["normalized"]["kind"] == "invalid"

    def test_feature_codes(self) -> None:
        d = decide(world(), FROM_A200, "*72", usage=IDLE)
        assert (d.kind, d.number, d.tenant_id) == ("feature", "*72", "A")
        assert d.reject is None


# -- outbound calls ---------------------------------------------------------------------------


class TestOutbound:
    def test_lcr_candidates_with_format_caller_id_and_cost(self) -> None:
        d = decide(world(), FROM_A200, "8 (495) 123-45-67", usage=IDLE)
        assert (d.kind, d.direction, d.number) == ("outbound", "outbound", "+74951234567")
        assert [c.trunk_id for c in d.trunks] == ["t-a", "t-b"]
        a, b = d.trunks
        assert (a.number, a.cost_per_minute, a.prefix) == ("+74951234567", Decimal("0.010"), "7495")
        assert (b.number, b.cost_per_minute, b.prefix) == ("84951234567", Decimal("0.020"), "7495")
        # pass: an extension has no E.164 of its own, the tenant's first DID stands in;
        # from_did: the same DID, in the trunk's caller-ID format
        assert a.caller_id.number == "+74951110000" and not a.caller_id.restricted
        assert b.caller_id.number == "84951110000"
        data = assert_json(d)
        assert data["route"]["source"] == "route_table" and data["route"]["route_table_id"] == "rt"
        assert data["route"]["lcr"]["prefixes"][0] == {
            "prefix": "7495",
            "used": True,
            "reason": "longest matching prefix",
        }
        skipped = {
            c["trunk_id"]: c["reason"] for c in data["candidates"] if c["decision"] == "skipped"
        }
        assert skipped == {"t-off": "trunk is disabled"}
        assert data["normalized"]["kind"] == "national"

    def test_down_and_full_trunks_are_skipped(self) -> None:
        d = decide(world(), FROM_A200, "84951234567", usage=IDLE, down=frozenset({"t-a"}))
        assert [c.trunk_id for c in d.trunks] == ["t-b"]
        assert any(s["reason"] == "trunk is down" for s in d.explain["route"]["lcr"]["steps"])
        # 7812: t-full (max 2), then t-off, then fallthrough to 7 -> t-b
        busy = UsageCounts(channels={"t-full": 2})
        d = decide(world(), FROM_A200, "88121234567", usage=busy)
        assert [c.trunk_id for c in d.trunks] == ["t-b"]
        reasons = {
            c["trunk_id"]: c["reason"]
            for c in d.explain["candidates"]
            if c["decision"] == "skipped"
        }
        assert reasons == {
            "t-full": "trunk is at max_channels (2 of 2)",
            "t-off": "trunk is disabled",
        }
        d = decide(world(), FROM_A200, "88121234567", usage=UsageCounts(channels={"t-full": 1}))
        assert [c.trunk_id for c in d.trunks] == ["t-full", "t-b"]

    def test_every_trunk_unavailable_is_503_and_no_route_is_404(self) -> None:
        d = decide(world(), FROM_A200, "84951234567", usage=IDLE, down=frozenset({"t-a", "t-b"}))
        rejected(d, 503, "all_trunks_unavailable")
        # 7383: the only route names a trunk that no longer exists
        d = decide(world(), FROM_A200, "83831234567", usage=IDLE, down=frozenset({"t-b"}))
        rejected(d, 503, "all_trunks_unavailable")
        assert d.explain["candidates"][0] == {
            "trunk_id": "t-gone",
            "decision": "skipped",
            "reason": "trunk not found",
        }
        intl = intl_allowed(world().tenants["A"])
        rejected(decide(world(a=intl), FROM_A200, "+12125551234", usage=IDLE), 404, "no_route")
        no_table = replace(world().tenants["A"], route_table_id=None)
        d = decide(world(a=no_table), FROM_A200, "84951234567", usage=IDLE)
        rejected(d, 404, "no_route")
        assert d.explain["route"]["reason"] == "the tenant has no route table"
        gone = replace(world().tenants["A"], route_table_id="rt-gone")
        rejected(decide(world(a=gone), FROM_A200, "84951234567", usage=IDLE), 404, "no_route")

    def test_dedicated_trunk(self) -> None:
        a = replace(world().tenants["A"], dedicated_trunk_id="t-fixed")
        d = decide(world(a=a), FROM_A200, "84951234567", usage=IDLE)
        assert [c.trunk_id for c in d.trunks] == ["t-fixed"]
        only = d.trunks[0]
        assert only.caller_id.number == "+74950000000"
        assert only.cost_per_minute is None  # the route table does not list it
        assert d.explain["route"] == {
            "number": "+74951234567",
            "source": "dedicated_trunk",
            "trunk_id": "t-fixed",
        }
        rejected(
            decide(world(a=a), FROM_A200, "84951234567", usage=IDLE, down=frozenset({"t-fixed"})),
            503,
            "all_trunks_unavailable",
        )
        # a dedicated trunk is rated by the tenant's table when it lists it
        a = replace(a, dedicated_trunk_id="t-b")
        assert decide(world(a=a), FROM_A200, "84951234567", usage=IDLE).trunks[
            0
        ].cost_per_minute == Decimal("0.020")

    def test_caller_id_restricted_and_without_a_did(self) -> None:
        d = decide(world(), ExtensionCaller("A", "200", restricted=True), "84951234567", usage=IDLE)
        assert all(c.caller_id.restricted for c in d.trunks)
        # tenant B has one DID: that one; a tenant without DIDs cannot present a number
        d = decide(world(), ExtensionCaller("B", "200"), "84951234567", usage=IDLE)
        assert d.trunks[0].caller_id.number == "+74952220000"
        lonely = tenant("L", "op1", [ext("l200", "200")])
        d = decide(world(tenants=[lonely]), ExtensionCaller("L", "200"), "84951234567", usage=IDLE)
        rejected(d, 503, "all_trunks_unavailable")
        assert "DID" in d.explain["candidates"][0]["reason"]


# -- limits -----------------------------------------------------------------------------------


class TestLimits:
    def test_suspended_tenant_neither_calls_nor_receives(self) -> None:
        snap = world()
        d = decide(snap, ExtensionCaller("C", "200"), "200", usage=IDLE)
        rejected(d, 403, "tenant_suspended")
        assert d.explain["limits"] == [
            {"check": "tenant_status", "status": "suspended", "ok": False}
        ]
        rejected(decide(snap, FROM_T_A, "+74953330000", usage=IDLE), 403, "tenant_suspended")
        rejected(
            decide(snap, ExtensionCaller("C", "200"), "84951234567", usage=IDLE),
            403,
            "tenant_suspended",
        )

    def test_max_concurrent_calls(self) -> None:
        full = UsageCounts(calls={"A": 4})
        for dialed in ("201", "84951234567", "*72"):
            d = decide(world(), FROM_A200, dialed, usage=full)
            rejected(d, 403, "max_concurrent_calls")
            assert (
                d.reject is not None
                and d.reject.reason == "tenant has 4 active calls, its limit is 4"
            )
        rejected(decide(world(), FROM_T_A, "+74951110000", usage=full), 403, "max_concurrent_calls")
        # another tenant's calls do not count; one below the limit passes
        assert (
            decide(world(), FROM_A200, "201", usage=UsageCounts(calls={"A": 3, "B": 9})).kind
            == "internal"
        )

    def test_international_barred_unless_allowed(self) -> None:
        d = decide(world(), FROM_A200, "8 10 49 30 1234567", usage=IDLE)
        rejected(d, 403, "international_barred")
        assert d.explain["limits"][-1] == {
            "check": "international_calls",
            "international": True,
            "country_code": "7",
            "allowed": False,
            "ok": False,
        }
        rejected(
            decide(world(), FROM_A200, "+49301234567", usage=IDLE), 403, "international_barred"
        )
        allowed = intl_allowed(world().tenants["A"])
        d = decide(world(a=allowed), FROM_A200, "+49301234567", usage=IDLE)
        assert [c.trunk_id for c in d.trunks] == ["t-a"] and d.trunks[0].cost_per_minute == Decimal(
            "0.100"
        )

    def test_a_rule_calling_a_foreign_number_national_is_still_international(self) -> None:
        sneaky = DialPlan(
            [DialRule(r"9(\d+)", r"+\1", "nine and anything", "national")], country_code="7"
        )
        a = replace(world().tenants["A"], dial_plan_id="dp-sneaky")
        snap = world(a=a)
        op1 = snap.operators["op1"]
        snap = replace(
            snap,
            operators={
                **snap.operators,
                "op1": replace(op1, dial_plans={**op1.dial_plans, "dp-sneaky": sneaky}),
            },
        )
        d = decide(snap, FROM_A200, "949301234567", usage=IDLE)
        assert d.explain["normalized"]["kind"] == "national"
        rejected(d, 403, "international_barred")

    def test_emergency_always_goes_out(self) -> None:
        table = RouteTable([R("112", "t-b"), R("", "t-a")], fallthrough=True)
        a = replace(world().tenants["A"], route_table_id="rt-sos")
        snap = world(a=a, tables={"rt-sos": table})
        d = decide(snap, FROM_A200, "112", usage=UsageCounts(calls={"A": 99}))
        assert (d.kind, d.emergency, d.number) == ("outbound", True, "112")
        assert [(c.trunk_id, c.number) for c in d.trunks] == [("t-b", "112"), ("t-a", "112")]
        assert d.explain["normalized"]["kind"] == "emergency"
        assert not any(c["check"] == "max_concurrent_calls" for c in d.explain["limits"])
        # even without a DID to present
        lonely = tenant("L", "op1", [ext("l200", "200")], route_table_id="rt-sos")
        d = decide(
            world(tenants=[lonely], tables={"rt-sos": table}),
            ExtensionCaller("L", "200"),
            "112",
            usage=IDLE,
        )
        assert d.kind == "outbound" and d.trunks[0].caller_id.number == "200"

    def test_an_extension_numbered_like_a_short_emergency_code_is_dialled(self) -> None:
        """Russian 101-104: a tenant with an extension 102 reaches it; one without, and
        every tenant dialling 112, goes out as an emergency call."""
        with_102 = tenant("E", "op1", [ext("e101", "101"), ext("e102", "102")])
        snap = world(tenants=[with_102])
        d = decide(snap, ExtensionCaller("E", "101"), "102", usage=IDLE)
        assert (d.kind, d.number) == ("internal", "102")
        assert (
            d.explain["normalized"]["rule"] == "extension of the tenant (before the short code 102)"
        )
        for short in ("103", "112"):  # (no route table here: refused, but as emergency)
            d = decide(snap, ExtensionCaller("E", "101"), short, usage=IDLE)
            assert d.kind != "internal" and d.explain["normalized"]["kind"] == "emergency"

    def test_a_did_follows_business_hours(self) -> None:
        """A DID to a schedule: the open destination on a weekday at 10:00 Moscow time,
        the closed one at night, at the weekend and on a holiday; a loop of schedules and
        a tenant without the feature are refused."""
        office = ScheduleConfig(
            "sch-1", "Office", "Europe/Moscow",
            ((frozenset({"mon", "tue", "wed", "thu", "fri"}), "09:00", "18:00"),),
            frozenset({"2026-12-31"}),
            {"type": "extension", "id": "a200"}, {"type": "extension", "id": "a201"},
        )  # fmt: skip
        loop = ScheduleConfig(
            "sch-2", "Loop", "UTC", (), frozenset(), None, {"type": "schedule", "id": "sch-2"}
        )
        base = world()
        a = replace(
            base.tenants["A"],
            features=frozenset({"schedules"}),
            schedules={"sch-1": office, "sch-2": loop},
        )
        dids = {
            **base.dids,
            "+74951110002": DidConfig(
                "+74951110002", "op1", "A", {"type": "schedule", "id": "sch-1"}
            ),
            "+74951110005": DidConfig(
                "+74951110005", "op1", "A", {"type": "schedule", "id": "sch-2"}
            ),
        }
        snap = replace(base, tenants={**base.tenants, "A": a}, dids=dids)
        msk = ZoneInfo("Europe/Moscow")
        for at, rings in (
            (datetime(2026, 12, 3, 10, 0, tzinfo=msk), "200"),  # Thursday, open
            (datetime(2026, 12, 3, 7, 0, tzinfo=UTC), "200"),  # 10:00 in Moscow
            (datetime(2026, 12, 3, 18, 0, tzinfo=msk), "201"),  # closes at 18:00
            (datetime(2026, 12, 5, 12, 0, tzinfo=msk), "201"),  # Saturday
            (datetime(2026, 12, 31, 12, 0, tzinfo=msk), "201"),  # a holiday
        ):
            d = decide(snap, FROM_T_A, "+74951110002", usage=IDLE, now=at)
            assert (d.kind, d.number) == ("inbound", rings), (at, d.explain)
            assert d.explain["schedules"][0]["open"] is (rings == "200")
        rejected(decide(snap, FROM_T_A, "+74951110005", usage=IDLE), 482, "schedule_loop")
        plain = replace(snap, tenants={**snap.tenants, "A": replace(a, features=frozenset())})
        rejected(decide(plain, FROM_T_A, "+74951110002", usage=IDLE), 403, "feature_disabled")


# -- inbound calls ----------------------------------------------------------------------------


class TestInbound:
    @pytest.mark.parametrize("dialed", ["+74951110000", "74951110000", "84951110000", "4951110000"])
    def test_a_did_in_any_national_form_reaches_its_extension(self, dialed: str) -> None:
        d = decide(world(), FROM_T_A, dialed, usage=IDLE)
        assert (d.kind, d.direction, d.tenant_id, d.number) == ("inbound", "inbound", "A", "200")
        assert [t.extension_id for t in d.extensions] == ["a200"]
        assert d.extensions[0].via_did == "+74951110000"
        data = assert_json(d)
        assert data["normalized"]["e164"] == "+74951110000"
        assert data["did"]["tenant_id"] == "A"

    def test_unknown_or_foreign_dids_are_404(self) -> None:
        snap = world()
        rejected(decide(snap, FROM_T_A, "+74959999999", usage=IDLE), 404, "did_not_found")
        # op2's DID through op1's trunk, and op1's DID through op2's trunk
        rejected(decide(snap, FROM_T_A, "+74954440000", usage=IDLE), 404, "did_not_found")
        rejected(
            decide(snap, TrunkCaller("op2", "u-a"), "+74951110000", usage=IDLE),
            404,
            "did_not_found",
        )
        assert decide(snap, TrunkCaller("op2", "u-a"), "+74954440000", usage=IDLE).tenant_id == "Z"
        rejected(decide(snap, FROM_T_A, "not-a-number", usage=IDLE), 484, "invalid_number")

    def test_destinations(self) -> None:
        snap = world()
        rejected(decide(snap, FROM_T_A, "+74951110002", usage=IDLE), 480, "did_no_destination")
        # an IVR: only with the ivr feature, only a menu of the tenant
        rejected(decide(snap, FROM_T_A, "+74951110003", usage=IDLE), 403, "feature_disabled")
        menu = IvrConfig("ivr-1", "Main", None, {"1": {"type": "hangup"}}, 5, None, 2, None, False)
        a = snap.tenants["A"]
        with_ivr = world(a=replace(a, features=frozenset({"ivr"}), ivrs={"ivr-1": menu}))
        d = decide(with_ivr, FROM_T_A, "+74951110003", usage=IDLE)
        assert (d.kind, d.destination, d.extensions) == ("ivr", {"type": "ivr", "id": "ivr-1"}, ())
        assert d.explain["target"] == {"type": "ivr", "id": "ivr-1", "name": "Main"}
        no_menu = world(a=replace(a, features=frozenset({"ivr"})))
        rejected(
            decide(no_menu, FROM_T_A, "+74951110003", usage=IDLE), 480, "destination_not_found"
        )
        rejected(decide(snap, FROM_T_A, "+74951110005", usage=IDLE), 603, "did_hangup")
        # A's DID pointing at B's extension id never rings B
        rejected(decide(snap, FROM_T_A, "+74951110006", usage=IDLE), 480, "destination_not_found")

    def test_external_destination_goes_out_as_the_tenants_call(self) -> None:
        d = decide(world(), FROM_T_A, "+74951110004", usage=IDLE)
        assert (d.kind, d.direction, d.tenant_id) == ("outbound", "inbound", "A")
        assert [c.trunk_id for c in d.trunks] == ["t-a", "t-b"]
        a, b = d.trunks
        assert a.caller_id.number == "+79161234567"  # pass: the original caller
        assert b.caller_id.number == "84951110004"  # from_did: the DID it came in on

    def test_unknown_or_disabled_trunk(self) -> None:
        rejected(
            decide(world(), TrunkCaller("op1", "t-off"), "+74951110000", usage=IDLE),
            403,
            "trunk_disabled",
        )
        rejected(
            decide(world(), TrunkCaller("op1", "t-x"), "+74951110000", usage=IDLE),
            403,
            "caller_unknown",
        )


# -- forwarding -------------------------------------------------------------------------------


class TestForwarding:
    def test_unconditional_to_an_extension(self) -> None:
        d = decide(world(), FROM_A200, "210", usage=IDLE)
        assert [t.extension_id for t in d.extensions] == ["a201"]
        assert d.extensions[0].chain == ("210", "201")
        assert d.explain["forwarding"] == [
            {"from": "210", "condition": "unconditional", "to": "201"}
        ]
        # from a DID too
        d = decide(world(), FROM_T_A, "+74951110007", usage=IDLE)
        assert (d.kind, d.extensions[0].extension_id) == ("inbound", "a201")

    def test_unconditional_to_an_external_number(self) -> None:
        d = decide(world(), FROM_A200, "211", usage=IDLE)
        assert (d.kind, d.direction, d.number) == ("outbound", "outbound", "+74951234567")
        assert [c.trunk_id for c in d.trunks] == ["t-a", "t-b"]
        assert d.explain["forward_1_normalized"]["rule"] == "8 and 10 digits"
        # the tenant's limits hold for the forwarded leg
        foreign = tenant(
            "A",
            "op1",
            [ext("a200", "200"), ext("a250", "250", forwarding={"unconditional": "+49301234567"})],
        )
        rejected(
            decide(world(a=foreign), FROM_A200, "250", usage=IDLE), 403, "international_barred"
        )

    def test_loops_are_482_and_long_chains_483(self) -> None:
        d = decide(world(), FROM_A200, "220", usage=IDLE)
        rejected(d, 482, "forward_loop")
        assert d.reject is not None and "220 -> 221 -> 220" in d.reject.reason
        hops = MAX_FORWARD_HOPS + 1
        chain = [
            ext(f"a3{i:02d}", f"3{i:02d}", forwarding={"unconditional": f"3{i + 1:02d}"})
            for i in range(hops)
        ]
        long_a = tenant("A", "op1", [ext("a200", "200"), *chain, ext("a3end", f"3{hops:02d}")])
        rejected(decide(world(a=long_a), FROM_A200, "300", usage=IDLE), 483, "forward_too_deep")
        short_a = tenant("A", "op1", [ext("a200", "200"), *chain[1:], ext("a3end", f"3{hops:02d}")])
        d = decide(world(a=short_a), FROM_A200, "301", usage=IDLE)
        assert d.kind == "internal" and len(d.extensions[0].chain) == MAX_FORWARD_HOPS + 1

    def test_conditional_forwards_are_returned_and_resolved_later(self) -> None:
        snap = world()
        d = decide(snap, FROM_A200, "212", usage=IDLE)
        target = d.extensions[0]
        assert (target.extension_id, target.forwarding.busy, target.forwarding.no_answer) == (
            "a212",
            "201",
            "+74957654321",
        )
        assert target.forwarding.no_answer_seconds == 20 and target.forwarding.unavailable is None
        busy = decide_forward(snap, FROM_A200, target, "busy", usage=IDLE)
        assert busy.kind == "internal" and busy.extensions[0].chain == ("212", "201")
        later = decide_forward(snap, FROM_A200, target, "no_answer", usage=IDLE)
        assert later.kind == "outbound" and later.trunks[0].number == "+74957654321"
        rejected(
            decide_forward(snap, FROM_A200, target, "unavailable", usage=IDLE), 480, "unavailable"
        )
        no_fwd = decide(snap, FROM_A200, "201", usage=IDLE).extensions[0]
        rejected(decide_forward(snap, FROM_A200, no_fwd, "busy", usage=IDLE), 486, "busy")
        # an admitted call is not refused by its own tenant's count
        full = UsageCounts(calls={"A": 4})
        assert decide_forward(snap, FROM_A200, target, "busy", usage=full).kind == "internal"

    def test_conditional_forward_loops_and_tenants(self) -> None:
        a = tenant(
            "A",
            "op1",
            [
                ext("a200", "200"),
                ext("a201", "201", forwarding={"busy": "202"}),
                ext("a202", "202", forwarding={"unconditional": "201"}),
            ],
        )
        snap = world(a=a)
        target = decide(snap, FROM_A200, "201", usage=IDLE).extensions[0]
        rejected(decide_forward(snap, FROM_A200, target, "busy", usage=IDLE), 482, "forward_loop")
        # a caller of another tenant cannot forward into A
        rejected(
            decide_forward(snap, ExtensionCaller("B", "200"), target, "busy", usage=IDLE),
            404,
            "extension_not_found",
        )


# -- trunks by source address -----------------------------------------------------------------


class TestTrunkForSource:
    def test_cidrs_v4_v6_most_specific_first(self) -> None:
        snap = world()
        assert trunk_for_source(snap, "192.0.2.10") == ("op1", snap.operators["op1"].trunks["t-a"])
        found = trunk_for_source(snap, "192.0.2.77")
        assert found is not None and found[1].id == "t-b"
        found = trunk_for_source(snap, "2001:db8::5")
        assert found is not None and found[1].id == "t-a"
        found = trunk_for_source(snap, "[2001:db8::5]")
        assert found is not None and found[1].id == "t-a"
        found = trunk_for_source(snap, "::ffff:192.0.2.10")
        assert found is not None and found[1].id == "t-a"
        found = trunk_for_source(snap, "203.0.113.9")
        assert found is not None and found == ("op2", OTHER_TRUNKS[0])

    def test_unknown_disabled_and_junk(self) -> None:
        snap = world()
        assert trunk_for_source(snap, "198.51.100.1") is None  # t-off is disabled
        assert trunk_for_source(snap, "10.0.0.1") is None
        for junk in ("", "999.1.1.1", "bogus", "192.0.2.0/24"):
            assert trunk_for_source(snap, junk) is None
        bad = [trunk("t-junk", inbound_ips=("not-a-cidr", "10.1.0.0/16"))]
        assert trunk_for_source(world(trunks=bad), "10.1.2.3") is not None


# -- properties -------------------------------------------------------------------------------

NUMBERS = [
    "200",
    "201",
    "202",
    "2000",
    "55",
    "112",
    "*72",
    "84951234567",
    "+74957654321",
    "+4930123456",
    "+12125551234",
    "74951110000",
    "+74951110000",
    "",
    "abc",
]
TRUNK_IDS = ["t1", "t2", "t3", "ghost"]
EXT_IDS = ["e1", "e2", "e3", "e4", "e5"]
# compiled once: a plan compiles its regexes and native matcher
PLANS = [
    DialPlan.from_config(country=c, extension_digits=d, default_area_code=a)
    for c, d, a in [
        ("RU", 3, "495"),
        ("RU", None, None),
        ("RU", 2, None),
        ("DE", 4, None),
        ("DE", None, None),
    ]
]


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    operators = []
    for op_id in ("op1", "op2"):
        trunks = [
            trunk(
                f"{op_id}-{t}",
                enabled=draw(st.sampled_from([True, True, True, False])),
                max_channels=draw(st.sampled_from([None, 0, 1, 2])),
                number_format=draw(
                    st.sampled_from(["e164", "e164_digits", "national", "international_00"])
                ),
                caller_id=draw(
                    st.sampled_from(
                        [
                            CallerIdRule(),
                            CallerIdRule(mode="from_did"),
                            CallerIdRule(mode="fixed", fixed_number="+74950000000"),
                        ]
                    )
                ),
            )
            for t in draw(st.lists(st.sampled_from(TRUNK_IDS[:3]), unique=True, min_size=1))
        ]
        entries = draw(
            st.lists(
                st.builds(
                    RouteEntry,
                    st.sampled_from(["", "7", "7495", "49", "112", "1"]),
                    st.sampled_from([*(t.id for t in trunks), f"{op_id}-ghost", "op1-t1"]),
                    priority=st.integers(0, 3),
                    weight=st.integers(0, 3),
                    cost_per_minute=st.sampled_from(["0", "0.1", "1.5"]),
                    enabled=st.sampled_from([True, True, False]),
                ),
                min_size=1,
                max_size=8,
            )
        )
        table = RouteTable(entries, fallthrough=draw(st.booleans()))
        plans = {"dp": draw(st.sampled_from(PLANS))}
        operators.append(operator(op_id, trunks, {"rt": table}, plans))
    tenants = []
    for t_id in ("A", "B", "C"):
        exts = []
        for number in draw(
            st.lists(st.sampled_from(NUMBERS[:5]), unique=True, min_size=1, max_size=5)
        ):
            forwarding = draw(
                st.dictionaries(
                    st.sampled_from(
                        [
                            "unconditional",
                            "busy",
                            "no_answer",
                            "unavailable",
                            "no_answer_seconds",
                            "junk",
                        ]
                    ),
                    st.one_of(st.sampled_from(NUMBERS), st.integers(-1, 30), st.none()),
                    max_size=3,
                )
            )
            exts.append(
                ext(
                    f"{t_id}-{draw(st.sampled_from(EXT_IDS))}",
                    number,
                    forwarding=forwarding,
                    dial_plan_id=draw(st.sampled_from([None, "dp", "missing"])),
                    enabled=draw(st.sampled_from([True, True, True, False])),
                )
            )
        op_id = draw(st.sampled_from(["op1", "op2"]))
        tenants.append(
            tenant(
                t_id,
                op_id,
                exts,
                status=draw(st.sampled_from(["active", "active", "suspended"])),
                max_concurrent_calls=draw(st.integers(0, 4)),
                international_calls=draw(st.booleans()),
                route_table_id=draw(st.sampled_from([None, "rt", "rt", "rt", "missing"])),
                dedicated_trunk_id=draw(st.sampled_from([None, None, f"{op_id}-t1", "ghost"])),
                dial_plan_id=draw(st.sampled_from([None, "dp", "missing"])),
            )
        )
    destinations = st.one_of(
        st.none(),
        st.builds(
            lambda i: {"type": "extension", "id": i},
            st.sampled_from([f"{t}-{e}" for t in "ABC" for e in EXT_IDS]),
        ),
        st.sampled_from(
            [
                {"type": "ivr", "id": "x"},
                {"type": "hangup"},
                {"type": "external", "number": "+74952223344"},
                {"type": "external", "number": "+4930123456"},
                {"type": "voicemail"},
                {},
            ]
        ),
    )
    dids = []
    for number in draw(
        st.lists(
            st.sampled_from(["+74951110000", "+74951110001", "+4930123456", "+74957654321"]),
            unique=True,
        )
    ):
        owner = draw(st.sampled_from(tenants))
        dids.append(DidConfig(number, owner.operator_id, owner.id, draw(destinations)))
    return snapshot(operators, tenants, dids)


random_callers = st.one_of(
    st.builds(
        ExtensionCaller,
        st.sampled_from(["A", "B", "C", "X"]),
        st.sampled_from(NUMBERS[:5]),
        st.booleans(),
    ),
    st.builds(
        TrunkCaller,
        st.sampled_from(["op1", "op2"]),
        st.sampled_from([f"op{o}-{t}" for o in (1, 2) for t in TRUNK_IDS]),
        st.sampled_from([None, "+79161234567", "anonymous"]),
    ),
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Snapshot, Any]:
    """A snapshot and a caller: mostly one of its extensions or trunks, sometimes none."""
    snap = draw(snapshots())
    known: list[Any] = [
        ExtensionCaller(t.id, number, draw(st.booleans()))
        for t in snap.tenants.values()
        for number in t.extensions
    ]
    known += [
        TrunkCaller(op.id, t, "+79161234567") for op in snap.operators.values() for t in op.trunks
    ]
    if known and draw(st.integers(0, 9)) > 0:
        return snap, draw(st.sampled_from(known))
    return snap, draw(random_callers)


usages = st.builds(
    UsageCounts,
    st.dictionaries(st.sampled_from(["A", "B", "C"]), st.integers(0, 2)),
    st.dictionaries(
        st.sampled_from([f"op{o}-{t}" for o in (1, 2) for t in TRUNK_IDS]), st.integers(0, 3)
    ),
)
downs = st.frozensets(
    st.sampled_from([f"op{o}-{t}" for o in (1, 2) for t in TRUNK_IDS]), max_size=2
)


def check_invariants(
    snap: Snapshot, caller: Any, d: Decision, usage: UsageCounts, down: frozenset[str]
) -> None:
    assert isinstance(d, Decision)
    json.dumps(d.explain)
    assert (d.kind == "reject") == (d.reject is not None)
    if d.reject is not None:
        assert d.reject.code != "internal_error", d.explain
        assert 400 <= d.reject.status < 700
        return
    tenant_cfg = snap.tenants[d.tenant_id or ""]
    assert tenant_cfg.active
    if isinstance(caller, ExtensionCaller):
        assert d.tenant_id == caller.tenant_id
    else:
        assert tenant_cfg.operator_id == caller.operator_id
    own_ids = {e.id for e in tenant_cfg.extensions.values()}
    for target in d.extensions:
        assert target.tenant_id == d.tenant_id
        assert target.extension_id in own_ids
        assert tenant_cfg.extensions[target.number].id == target.extension_id
        assert len(set(target.chain)) == len(target.chain)
    trunks = snap.operators[tenant_cfg.operator_id].trunks
    for c in d.trunks:
        cfg = trunks[c.trunk_id]
        assert cfg.enabled and c.trunk_id not in down
        assert cfg.max_channels is None or usage.active_channels(c.trunk_id) < cfg.max_channels


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scenarios(),
    st.one_of(
        st.sampled_from([*NUMBERS, "+74951110001", "84951110000", "4930123456"]),
        st.text(max_size=30),
    ),
    usages,
    downs,
    st.integers(0, 2**32),
)
def test_decide_is_total_and_safe(
    scenario: tuple[Snapshot, Any],
    dialed: str,
    usage: UsageCounts,
    down: frozenset[str],
    seed: int,
) -> None:
    snap, caller = scenario
    d = decide(snap, caller, dialed, usage=usage, down=down, rng=random.Random(seed))
    check_invariants(snap, caller, d, usage, down)
    for target in d.extensions:
        for condition in ("busy", "no_answer", "unavailable"):
            f = decide_forward(snap, caller, target, condition, usage=usage, down=down)  # type: ignore[arg-type]
            check_invariants(snap, caller, f, usage, down)


WORLD = world()
WORLD_CALLERS = [
    *(ExtensionCaller(t.id, n) for t in WORLD.tenants.values() for n in t.extensions),
    *(TrunkCaller(o.id, t, "+79161234567") for o in WORLD.operators.values() for t in o.trunks),
]
WORLD_TRUNKS = sorted({t for o in WORLD.operators.values() for t in o.trunks})


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(WORLD_CALLERS),
    st.one_of(
        st.sampled_from(
            [
                *("201", "210", "211", "212", "220", "84951234567", "88121234567"),
                *("83831234567", "+49301234567", "112", "*72", "+74951110000"),
                *("84951110004", "+74951110007"),
            ]
        ),
        st.text(alphabet="0123456789+*# -", max_size=16),
    ),
    st.builds(
        UsageCounts,
        st.dictionaries(st.sampled_from(["A", "B"]), st.integers(0, 5)),
        st.dictionaries(st.sampled_from(WORLD_TRUNKS), st.integers(0, 3)),
    ),
    st.frozensets(st.sampled_from(WORLD_TRUNKS)),
)
def test_decide_on_a_rich_world_is_safe(
    caller: Any, dialed: str, usage: UsageCounts, down: frozenset[str]
) -> None:
    d = decide(WORLD, caller, dialed, usage=usage, down=down)
    check_invariants(WORLD, caller, d, usage, down)
    for target in d.extensions:
        for condition in ("busy", "no_answer", "unavailable"):
            f = decide_forward(WORLD, caller, target, condition, usage=usage, down=down)  # type: ignore[arg-type]
            check_invariants(WORLD, caller, f, usage, down)
