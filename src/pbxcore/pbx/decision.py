"""The routing decision: who calls, what they dialled, where the call goes, and why.

:func:`decide` is a pure function of one config :class:`~pbxcore.tenancy.snapshot.Snapshot`,
the caller (identified by the SIP layer), the dialled string and the live call counters
(:class:`CallUsage`, read and never changed). It returns a :class:`Decision` with an
``explain`` trace (JSON-ready) that is logged with the call and stored with its CDR. No SIP,
no I/O: the B2BUA calls it for every INVITE, and :func:`decide_forward` when an extension is
busy, does not answer or is not registered.

The rules, in order:

1. The caller: an extension (tenant, number) or a trunk (operator, trunk id;
   :func:`trunk_for_source` finds it by source address). An unknown or disabled caller and
   a suspended tenant get 403.
2. An extension's dialled string is normalized by its dial plan: the extension's, else the
   tenant's, else the built-in plan of the operator's country (the country of its dial
   plans; Russia when it has none). A string no rule matches that is one of the tenant's
   extension numbers is internal (plans need not know the extension length). ``invalid``
   gives 484; ``service`` (feature codes) a ``feature`` decision for the B2BUA.
3. Internal: an extension of the caller's tenant only, never another tenant's (404 if the
   tenant has no such number; 480 if it is disabled). An unconditional forward is resolved
   here, to an extension of the same tenant or to an external number routed as an outbound
   call of the tenant; the other forwards are returned with the target and resolved by
   :func:`decide_forward`. A chain that revisits an extension is 482 Loop Detected, one
   longer than :data:`MAX_FORWARD_HOPS` forwards is 483 Too Many Hops.
4. From a trunk: the dialled number is a DID (E.164, or ``7...``/``8...``/``810...``/
   ``00...`` in the operator's country formats) of the trunk's operator: not found 404;
   the DID's tenant suspended 403; no destination 480; ``extension`` -> that extension (as
   3.); ``external`` -> an outbound call of the tenant; ``hangup`` -> 603; ``ivr``,
   ``voicemail``, ``ring_group``, ``schedule`` are returned as the ``destination``.
5. Limits: a tenant with ``max_concurrent_calls`` active calls gets 403 (emergency calls
   are exempt; a forward of an admitted call is not counted again). International calls
   (kind ``international``, or an E.164 number outside the plan's country) are 403 unless
   ``international_calls``. Emergency numbers are always allowed out (as their short
   number, unformatted, routed by the route table like any number).
6. Outbound: the tenant's dedicated trunk, else its route table's LCR candidates
   (:meth:`~pbxcore.routing.RouteTable.explain`, with ``down``). Disabled trunks, unknown
   trunks, trunks at ``max_channels`` and trunks whose caller-ID rule gives no number are
   skipped, each with its reason. Each candidate has the number in the trunk's
   ``number_format``, the caller ID by its ``caller_id`` rule (``from_did``: the DID the
   call came in on, else the tenant's first DID by number) and the matched route's
   ``cost_per_minute``. No route (no table, no matching prefix, every entry disabled) is
   404; routes whose every trunk is down, disabled or full is 503 (retry later).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import random
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Generic, Literal, Protocol, TypeVar

from pbxcore.routing import RUSSIA, CallerId, Country, DialPlan, Normalized, format_number
from pbxcore.sip.message import REASON_PHRASES
from pbxcore.tenancy.compile import TrunkConfig
from pbxcore.tenancy.snapshot import (
    DidConfig,
    ExtensionConfig,
    OperatorConfig,
    Snapshot,
    TenantConfig,
)

__all__ = [
    "DEFAULT_NO_ANSWER_SECONDS",
    "MAX_FORWARD_HOPS",
    "CallUsage",
    "Caller",
    "Decision",
    "DecisionKind",
    "Direction",
    "ExtensionCaller",
    "ExtensionTarget",
    "ForwardCondition",
    "Forwarding",
    "Reject",
    "TrunkCaller",
    "TrunkCandidate",
    "UsageCounts",
    "decide",
    "decide_destination",
    "decide_forward",
    "trunk_for_source",
]

log = logging.getLogger("pbxcore.pbx.decision")

MAX_FORWARD_HOPS = 5  # forwards in one chain; one more is 483
DEFAULT_NO_ANSWER_SECONDS = 20  # a no_answer forward without no_answer_seconds

DecisionKind = Literal["internal", "inbound", "outbound", "reject", "feature", "ivr"]
Direction = Literal["internal", "inbound", "outbound"]  # the CDR's direction
ForwardCondition = Literal["busy", "no_answer", "unavailable"]

_STRIP = str.maketrans("", "", " -.()\t")
_DEFAULT_COUNTRY = "7"  # pbxcore's home: the built-in plan when an operator has none


# -- the caller and the live counters ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExtensionCaller:
    """An extension of a tenant, identified by its digest auth. ``restricted``: the caller
    asked to hide its number (CLIR)."""

    tenant_id: str
    number: str
    restricted: bool = False


@dataclass(frozen=True, slots=True)
class TrunkCaller:
    """A trunk of an operator, identified by source address or registration. ``number``:
    the calling number the carrier presented (passed on when the call is forwarded out)."""

    operator_id: str
    trunk_id: str
    number: str | None = None


Caller = ExtensionCaller | TrunkCaller


class CallUsage(Protocol):
    """The live counters the call path keeps (the decision reads them)."""

    def active_calls(self, tenant_id: str) -> int: ...

    def active_channels(self, trunk_id: str) -> int: ...


@dataclass(frozen=True, slots=True)
class UsageCounts:
    """A :class:`CallUsage` over two mappings (the B2BUA may keep live dicts in them)."""

    calls: Mapping[str, int] = field(default_factory=dict)  # by tenant id
    channels: Mapping[str, int] = field(default_factory=dict)  # by trunk id

    def active_calls(self, tenant_id: str) -> int:
        return self.calls.get(tenant_id, 0)

    def active_channels(self, trunk_id: str) -> int:
        return self.channels.get(trunk_id, 0)


# -- the decision -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Forwarding:
    """An extension's forwarding: each target an extension number or an E.164 number."""

    unconditional: str | None = None
    busy: str | None = None
    no_answer: str | None = None
    no_answer_seconds: int | None = None
    unavailable: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Forwarding:
        """The stored ``forwarding`` (anything that is not a target is ignored)."""
        if not isinstance(data, Mapping):
            return cls()

        def target(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) and value else None

        no_answer = target("no_answer")
        seconds = data.get("no_answer_seconds")
        if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds <= 0:
            seconds = None
        if no_answer is not None and seconds is None:
            seconds = DEFAULT_NO_ANSWER_SECONDS
        return cls(
            unconditional=target("unconditional"),
            busy=target("busy"),
            no_answer=no_answer,
            no_answer_seconds=seconds if no_answer is not None else None,
            unavailable=target("unavailable"),
        )

    def target(self, condition: str) -> str | None:
        """The target for ``condition`` (``unconditional``, ``busy``, ...), or None."""
        value = getattr(self, condition, None) if condition in _FORWARD_KEYS else None
        return value if isinstance(value, str) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "unconditional": self.unconditional,
            "busy": self.busy,
            "no_answer": self.no_answer,
            "no_answer_seconds": self.no_answer_seconds,
            "unavailable": self.unavailable,
        }


_FORWARD_KEYS = frozenset({"unconditional", "busy", "no_answer", "unavailable"})


@dataclass(frozen=True, slots=True)
class ExtensionTarget:
    """An extension to ring (all its registered contacts), with the forwards the B2BUA
    applies (busy, no answer, unavailable: see :func:`decide_forward`). ``chain``: the
    extension numbers the call went through to get here, this one last (loop detection);
    ``via_did``: the DID an inbound call came in on."""

    tenant_id: str
    extension_id: str
    number: str
    name: str
    forwarding: Forwarding
    chain: tuple[str, ...]
    via_did: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "extension_id": self.extension_id,
            "number": self.number,
            "forwarding": self.forwarding.to_json(),
            "chain": list(self.chain),
        }


@dataclass(frozen=True, slots=True)
class TrunkCandidate:
    """One trunk to try, in order: the number in the trunk's format, the caller ID to
    present, and the matched route's cost (None for a dedicated trunk without a route)."""

    trunk_id: str
    trunk: TrunkConfig
    number: str
    caller_id: CallerId
    cost_per_minute: Decimal | None
    prefix: str | None  # the route prefix that listed the trunk

    def to_json(self) -> dict[str, Any]:
        return {
            "trunk_id": self.trunk_id,
            "number": self.number,
            "caller_id": self.caller_id.to_json(),
            "cost_per_minute": None if self.cost_per_minute is None else str(self.cost_per_minute),
            "prefix": self.prefix,
        }


@dataclass(frozen=True, slots=True)
class Reject:
    """A refusal: SIP ``status`` and ``phrase``, a machine ``code`` and a human ``reason``
    (for a Reason or Warning header)."""

    status: int
    phrase: str
    code: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "phrase": self.phrase,
            "code": self.code,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a call goes. ``kind``:

    - ``internal`` / ``inbound``: ring ``extensions`` (of ``tenant_id``), or for an inbound
      call to an IVR, voicemail, ring group or schedule, the ``destination`` as stored;
    - ``outbound``: try ``trunks`` in order (failover on 408/5xx/timeout);
    - ``feature``: the feature code in ``number`` (``*...``, ``#...``) for the B2BUA;
    - ``reject``: answer ``reject``.

    ``direction`` is the CDR's (a call from a trunk is inbound even when forwarded out),
    ``number`` the called number as decided (extension number, E.164, short number), and
    ``explain`` the JSON-ready trace.
    """

    kind: DecisionKind
    direction: Direction
    tenant_id: str | None
    number: str | None
    explain: Mapping[str, Any]
    extensions: tuple[ExtensionTarget, ...] = ()
    trunks: tuple[TrunkCandidate, ...] = ()
    destination: Mapping[str, Any] | None = None
    reject: Reject | None = None
    emergency: bool = False


# -- per-snapshot indexes ---------------------------------------------------------------------

_K = TypeVar("_K")
_V = TypeVar("_V")


class _LastOf(Generic[_K, _V]):
    """``build(key)`` for the last key seen (by identity): one index per snapshot part,
    built on first use; the next snapshot's part is a new object and gets a new index."""

    __slots__ = ("_build", "_entry")

    def __init__(self, build: Callable[[_K], _V]) -> None:
        self._build = build
        self._entry: tuple[_K, _V] | None = None

    def __call__(self, key: _K) -> _V:
        entry = self._entry
        if entry is not None and entry[0] is key:
            return entry[1]
        value = self._build(key)
        self._entry = (key, value)  # one assignment: a racing reader sees old or new
        return value


def _first_dids(dids: Mapping[str, DidConfig]) -> dict[str, str]:
    first: dict[str, str] = {}
    for number, did in dids.items():
        known = first.get(did.tenant_id)
        if known is None or number < known:
            first[did.tenant_id] = number
    return first


_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _trunk_networks(
    operators: Mapping[str, OperatorConfig],
) -> tuple[tuple[_Network, str, TrunkConfig], ...]:
    found: list[tuple[_Network, str, TrunkConfig]] = []
    for op_id, op in operators.items():
        for trunk in op.trunks.values():
            if not trunk.enabled:
                continue
            for cidr in trunk.inbound_ips:
                try:
                    net = ipaddress.ip_network(str(cidr).strip(), strict=False)
                except ValueError:
                    continue  # old data the API would refuse now
                found.append((net, op_id, trunk))
    # most specific network first; ties in a stable order
    found.sort(key=lambda f: (-f[0].prefixlen, f[1], f[2].id))
    return tuple(found)


_first_did_of = _LastOf(_first_dids)
_networks_of = _LastOf(_trunk_networks)


@functools.lru_cache(maxsize=1024)
def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # the same few addresses come in every message: parse each once (ValueError is not cached)
    return ipaddress.ip_address(host)


def trunk_for_source(snapshot: Snapshot, ip: str) -> tuple[str, TrunkConfig] | None:
    """The (operator id, trunk) whose ``inbound_ips`` hold source address ``ip`` (IPv4 or
    IPv6, ``[...]`` brackets and IPv4-mapped IPv6 accepted), the most specific network
    winning; disabled trunks are not matched. None for an unknown or malformed address."""
    try:
        addr = _ip_address(ip.strip().removeprefix("[").removesuffix("]"))
    except (ValueError, AttributeError):
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    for net, op_id, trunk in _networks_of(snapshot.operators):
        if addr.version == net.version and addr in net:
            return op_id, trunk
    return None


# -- countries and plans ----------------------------------------------------------------------


def _country(code: str) -> Country:
    """The numbering profile of a calling code (trunk and international prefixes)."""
    if code == RUSSIA.code:
        return RUSSIA
    if code == "1":
        return Country("1", "1", "011")  # NANP
    return Country(code, "0", "00")  # most of the world (ITU-T E.164 recommendation)


def _operator_country(op: OperatorConfig) -> str:
    """The calling code of an operator: the most common of its dial plans'."""
    codes = Counter(p.country_code for p in op.dial_plans.values() if p.country_code)
    if not codes:
        return _DEFAULT_COUNTRY
    return min(codes, key=lambda c: (-codes[c], c))


@functools.cache
def _builtin_plan(code: str) -> DialPlan:
    if code == RUSSIA.code:
        return DialPlan.from_config(country="RU", name="built-in RU")
    return DialPlan.generic(country_code=code)


# -- the decision's working state -------------------------------------------------------------


class _RefusedError(Exception):
    """Raised inside the decision to answer with a reject (never escapes :func:`decide`)."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.reject = Reject(status, REASON_PHRASES.get(status, ""), code, reason)


class _Call:
    """One decision in progress: the inputs, the caller's tenant, and the trace."""

    def __init__(
        self,
        snapshot: Snapshot,
        caller: Caller,
        usage: CallUsage,
        down: Collection[str],
        rng: random.Random | None,
    ) -> None:
        self.snapshot = snapshot
        self.caller = caller
        self.usage = usage
        self.down = down
        self.rng = rng
        self.explain: dict[str, Any] = {
            "snapshot_version": snapshot.version,
            "caller": _caller_json(caller),
        }
        self.limits: list[dict[str, Any]] = []
        self.explain["limits"] = self.limits
        self.forwards: list[dict[str, Any]] = []
        self.explain["forwarding"] = self.forwards
        self.direction: Direction = "inbound" if isinstance(caller, TrunkCaller) else "internal"
        self.operator: OperatorConfig | None = None
        self.tenant: TenantConfig | None = None
        self.country_code = _DEFAULT_COUNTRY  # the operator's
        self.plan_code: str | None = None  # the dial plan's, once one is chosen
        self.via_did: str | None = None
        self.now: datetime = datetime.now(UTC)  # the clock of schedules (business hours)
        self.schedules_seen: list[str] = []  # schedules passed through (loops stop)

    # ---- caller and tenant ----

    def extension_caller(self, caller: ExtensionCaller) -> tuple[TenantConfig, ExtensionConfig]:
        tenant = self.snapshot.tenants.get(caller.tenant_id)
        ext = None if tenant is None else tenant.extensions.get(caller.number)
        op = None if tenant is None else self.snapshot.operators.get(tenant.operator_id)
        if tenant is None or ext is None or op is None:
            raise _RefusedError(403, "caller_unknown", "the calling extension is not configured")
        if not ext.enabled:
            raise _RefusedError(403, "caller_disabled", f"extension {ext.number} is disabled")
        self.enter_tenant(op, tenant)
        return tenant, ext

    def trunk_caller(self, caller: TrunkCaller) -> tuple[OperatorConfig, TrunkConfig]:
        op = self.snapshot.operators.get(caller.operator_id)
        trunk = None if op is None else op.trunks.get(caller.trunk_id)
        if op is None or trunk is None:
            raise _RefusedError(403, "caller_unknown", "the calling trunk is not configured")
        if not trunk.enabled:
            raise _RefusedError(
                403, "trunk_disabled", f"trunk {trunk.name or trunk.id} is disabled"
            )
        self.operator = op
        self.country_code = _operator_country(op)
        return op, trunk

    def enter_tenant(self, op: OperatorConfig, tenant: TenantConfig) -> None:
        self.operator = op
        self.tenant = tenant
        self.country_code = _operator_country(op)
        self.explain["tenant_id"] = tenant.id
        ok = tenant.active
        self.limits.append({"check": "tenant_status", "status": tenant.status, "ok": ok})
        if not ok:
            raise _RefusedError(403, "tenant_suspended", f"tenant is {tenant.status}")

    def check_concurrency(self) -> None:
        tenant = self.tenant
        assert tenant is not None
        active = self.usage.active_calls(tenant.id)
        limit = tenant.limits.max_concurrent_calls
        ok = active < limit
        self.limits.append(
            {"check": "max_concurrent_calls", "active": active, "limit": limit, "ok": ok}
        )
        if not ok:
            raise _RefusedError(
                403,
                "max_concurrent_calls",
                f"tenant has {active} active calls, its limit is {limit}",
            )

    def plan_for(self, ext: ExtensionConfig | None, key: str = "dial_plan") -> DialPlan:
        """The dial plan of ``ext`` (else the tenant's, else built-in), traced at ``key``;
        its country tells national from international numbers from now on."""
        op, tenant = self.operator, self.tenant
        assert op is not None and tenant is not None
        tried: list[dict[str, Any]] = []
        for source, plan_id in (
            ("extension", None if ext is None else ext.dial_plan_id),
            ("tenant", tenant.dial_plan_id),
        ):
            if plan_id is None:
                continue
            plan = op.dial_plans.get(plan_id)
            if plan is not None:
                self.plan_code = plan.country_code or self.country_code
                self.explain[key] = {
                    "id": plan_id,
                    "name": plan.name,
                    "source": source,
                    "country_code": plan.country_code,
                    "skipped": tried,
                }
                return plan
            tried.append({"id": plan_id, "source": source, "reason": "dial plan not found"})
        plan = _builtin_plan(self.country_code)
        self.plan_code = plan.country_code or self.country_code
        self.explain[key] = {
            "id": None,
            "name": plan.name or f"built-in (+{self.country_code})",
            "source": "built-in",
            "country_code": plan.country_code,
            "skipped": tried,
        }
        return plan

    def normalize(self, plan: DialPlan, dialed: str, key: str = "normalized") -> Normalized:
        tenant = self.tenant
        assert tenant is not None
        found = plan.normalize(dialed)
        cleaned = dialed.translate(_STRIP)
        if found.kind == "invalid" and found.rule is None and cleaned in tenant.extensions:
            found = Normalized(cleaned, "internal", "extension of the tenant (no rule matched)")
        elif found.kind == "emergency" and cleaned in tenant.extensions:
            # a tenant that numbers an extension 101-104 (Russian short emergency codes)
            # dials it; 112 and 911 cannot be extensions (tenancy rules), so always go out
            found = Normalized(
                cleaned, "internal", f"extension of the tenant (before the short code {cleaned})"
            )
        self.explain[key] = found.to_json()
        return found

    # ---- targets ----

    def to_extension(self, ext: ExtensionConfig, chain: tuple[str, ...]) -> Decision:
        tenant = self.tenant
        assert tenant is not None
        if ext.number in chain:
            path = " -> ".join((*chain, ext.number))
            raise _RefusedError(482, "forward_loop", f"forwarding loop: {path}")
        chain = (*chain, ext.number)
        if len(chain) > MAX_FORWARD_HOPS + 1:
            raise _RefusedError(
                483, "forward_too_deep", f"more than {MAX_FORWARD_HOPS} forwards in a row"
            )
        if not ext.enabled:
            raise _RefusedError(480, "extension_disabled", f"extension {ext.number} is disabled")
        forwarding = Forwarding.from_mapping(ext.forwarding)
        if forwarding.unconditional is not None:
            self.forwards.append(
                {"from": ext.number, "condition": "unconditional", "to": forwarding.unconditional}
            )
            return self.forward_to(ext, forwarding.unconditional, chain)
        target = ExtensionTarget(
            tenant_id=tenant.id,
            extension_id=ext.id,
            number=ext.number,
            name=ext.name,
            forwarding=forwarding,
            chain=chain,
            via_did=self.via_did,
        )
        self.explain["target"] = {"type": "extension", **target.to_json()}
        kind: DecisionKind = "inbound" if isinstance(self.caller, TrunkCaller) else "internal"
        return self.decision(kind, ext.number, extensions=(target,))

    def forward_to(self, ext: ExtensionConfig | None, to: str, chain: tuple[str, ...]) -> Decision:
        """Where a forward of ``ext`` to ``to`` goes: an extension of the same tenant, or
        a number dialled by ``ext``'s plan and routed out for the tenant."""
        tenant = self.tenant
        assert tenant is not None
        hop = len(self.forwards)
        direct = tenant.extensions.get(to)
        if direct is not None:
            return self.to_extension(direct, chain)
        plan = self.plan_for(ext, f"forward_{hop}_dial_plan")
        found = self.normalize(plan, to, f"forward_{hop}_normalized")
        if found.kind == "internal" and found.e164 is not None:
            target = tenant.extensions.get(found.e164)
            if target is None:
                raise _RefusedError(
                    404, "forward_target_not_found", f"forward target {to!r} is no extension"
                )
            return self.to_extension(target, chain)
        if found.kind in ("national", "international", "emergency") and found.e164 is not None:
            return self.outbound(found)
        raise _RefusedError(
            404,
            "forward_target_invalid",
            f"forward target {to!r} cannot be called: {found.reason or found.kind}",
        )

    def outbound(self, number: Normalized) -> Decision:
        op, tenant = self.operator, self.tenant
        assert op is not None and tenant is not None and number.e164 is not None
        if self.direction == "internal":
            self.direction = "outbound"
        emergency = number.kind == "emergency"
        if not emergency:
            code = self.plan_code or self.country_code
            international = number.kind == "international" or not number.e164.startswith("+" + code)
            allowed = tenant.limits.international_calls
            ok = allowed or not international
            self.limits.append(
                {
                    "check": "international_calls",
                    "international": international,
                    "country_code": code,
                    "allowed": allowed,
                    "ok": ok,
                }
            )
            if not ok:
                raise _RefusedError(
                    403,
                    "international_barred",
                    f"international calls are barred for this tenant ({number.e164})",
                )
        lookup = number.e164
        route: dict[str, Any] = {"number": lookup}
        self.explain["route"] = route
        # (trunk id, prefix, cost) in order
        ordered: list[tuple[str, str | None, Decimal | None]] = []
        unavailable = 0  # routed trunks that cannot take the call (503 rather than 404)
        if tenant.dedicated_trunk_id is not None:
            trunk_id = tenant.dedicated_trunk_id
            route.update(source="dedicated_trunk", trunk_id=trunk_id)
            cost = None
            table = op.route_tables.get(tenant.route_table_id or "")
            if table is not None and not emergency:
                cost = table.rate(lookup, trunk_id)
            if trunk_id in self.down:
                route["reason"] = "the dedicated trunk is down"
                unavailable += 1
            else:
                ordered.append((trunk_id, None, cost))
        else:
            table_id = tenant.route_table_id
            table = None if table_id is None else op.route_tables.get(table_id)
            route.update(source="route_table", route_table_id=table_id)
            if table is None:
                route["reason"] = (
                    "the tenant has no route table" if table_id is None else "route table not found"
                )
                raise _RefusedError(404, "no_route", f"no route to {lookup}")
            try:
                lcr = table.explain(lookup, down=self.down, rng=self.rng)
            except ValueError as exc:  # an emergency or custom rule gave no digits
                raise _RefusedError(484, "invalid_number", str(exc)) from None
            route["lcr"] = lcr
            steps = {s["trunk_id"]: s for s in lcr["steps"] if s["decision"] == "candidate"}
            for trunk_id in lcr["candidates"]:
                step = steps.get(trunk_id)
                prefix = None if step is None else step["prefix"]
                cost = None if step is None else Decimal(step["cost_per_minute"])
                ordered.append((trunk_id, prefix, cost))
            unavailable += sum(1 for s in lcr["steps"] if s["reason"] == "trunk is down")
        candidates: list[TrunkCandidate] = []
        trace: list[dict[str, Any]] = []
        self.explain["candidates"] = trace
        for trunk_id, prefix, cost in ordered:
            why = self.unusable(trunk_id)
            trunk = op.trunks.get(trunk_id)
            if why is None and trunk is not None:
                try:
                    candidate = self.candidate(trunk, number, prefix, cost)
                except ValueError as exc:
                    why = f"caller ID or number format: {exc}"
                else:
                    candidates.append(candidate)
                    trace.append({"decision": "candidate", **candidate.to_json()})
                    continue
            unavailable += 1
            trace.append({"trunk_id": trunk_id, "decision": "skipped", "reason": why})
        if not candidates:
            if unavailable:
                raise _RefusedError(
                    503,
                    "all_trunks_unavailable",
                    f"every trunk routed for {lookup} is down, disabled or full",
                )
            raise _RefusedError(404, "no_route", f"no route to {lookup}")
        return self.decision("outbound", number.e164, trunks=tuple(candidates), emergency=emergency)

    def unusable(self, trunk_id: str) -> str | None:
        """Why a routed trunk cannot take the call now, or None."""
        op = self.operator
        assert op is not None
        trunk = op.trunks.get(trunk_id)
        if trunk is None:
            return "trunk not found"
        if not trunk.enabled:
            return "trunk is disabled"
        if trunk_id in self.down:
            return "trunk is down"
        if trunk.max_channels is not None:
            active = self.usage.active_channels(trunk_id)
            if active >= trunk.max_channels:
                return f"trunk is at max_channels ({active} of {trunk.max_channels})"
        return None

    def candidate(
        self, trunk: TrunkConfig, number: Normalized, prefix: str | None, cost: Decimal | None
    ) -> TrunkCandidate:
        """A trunk as a candidate (ValueError if its caller ID or format gives no number)."""
        tenant = self.tenant
        assert tenant is not None and number.e164 is not None
        country = _country(self.country_code)
        if number.kind == "emergency":
            dialed = number.e164  # a short number: sent as dialled
        else:
            dialed = format_number(number.e164, trunk.number_format, country=country)
        did = self.via_did or _first_did_of(self.snapshot.dids).get(tenant.id)
        caller = self.caller
        if isinstance(caller, ExtensionCaller):
            presented, restricted = caller.number, caller.restricted
        else:
            presented, restricted = caller.number or "", False
        try:
            caller_id = trunk.caller_id.apply(
                presented, did=did, restricted=restricted, country=country
            )
        except ValueError:
            if number.kind != "emergency":
                raise
            # an emergency call goes out even when the rule has no number to present
            caller_id = CallerId(presented or "anonymous", restricted)
        return TrunkCandidate(trunk.id, trunk, dialed, caller_id, cost, prefix)

    def decision(
        self,
        kind: DecisionKind,
        number: str | None,
        *,
        extensions: tuple[ExtensionTarget, ...] = (),
        trunks: tuple[TrunkCandidate, ...] = (),
        destination: Mapping[str, Any] | None = None,
        emergency: bool = False,
    ) -> Decision:
        self.explain["result"] = {"kind": kind, "number": number, "direction": self.direction}
        return Decision(
            kind=kind,
            direction=self.direction,
            tenant_id=None if self.tenant is None else self.tenant.id,
            number=number,
            explain=self.explain,
            extensions=extensions,
            trunks=trunks,
            destination=destination,
            emergency=emergency,
        )

    def refused(self, refusal: _RefusedError) -> Decision:
        reject = refusal.reject
        self.explain["result"] = {"kind": "reject", **reject.to_json()}
        return Decision(
            kind="reject",
            direction=self.direction,
            tenant_id=None if self.tenant is None else self.tenant.id,
            number=None,
            explain=self.explain,
            reject=reject,
        )


def _caller_json(caller: Caller) -> dict[str, Any]:
    if isinstance(caller, ExtensionCaller):
        return {"type": "extension", "tenant_id": caller.tenant_id, "number": caller.number}
    return {
        "type": "trunk",
        "operator_id": caller.operator_id,
        "trunk_id": caller.trunk_id,
        "number": caller.number,
    }


def _did_forms(dialed: str, country: Country) -> list[tuple[str, str]]:
    """The E.164 numbers a carrier's called number may mean, most likely first."""
    cleaned = dialed.translate(_STRIP)
    if cleaned.startswith("+"):
        return [("E.164", cleaned)]
    if not (cleaned.isascii() and cleaned.isdigit()):
        return []
    forms: list[tuple[str, str]] = []
    intl = country.international_prefix
    if cleaned.startswith(intl):
        forms.append((f"international prefix {intl}", "+" + cleaned[len(intl) :]))
    if cleaned.startswith("00"):
        forms.append(("international prefix 00", "+" + cleaned[2:]))
    trunk_prefix = country.trunk_prefix
    if cleaned.startswith(trunk_prefix):
        rest = cleaned[len(trunk_prefix) :]
        forms.append((f"trunk prefix {trunk_prefix}", f"+{country.code}{rest}"))
    forms.append(("E.164 without +", "+" + cleaned))
    forms.append((f"national number of +{country.code}", f"+{country.code}{cleaned}"))
    return forms


def _inbound(call: _Call, caller: TrunkCaller, dialed: str) -> Decision:
    op, _trunk = call.trunk_caller(caller)
    country = _country(call.country_code)
    forms = _did_forms(dialed, country)
    if not forms:
        call.explain["normalized"] = {
            "e164": None,
            "kind": "invalid",
            "rule": None,
            "reason": f"{dialed!r} is not a number",
        }
        raise _RefusedError(484, "invalid_number", f"{dialed!r} is not a number")
    found: tuple[str, TenantConfig, DidConfig] | None = None
    for rule, number in forms:
        hit = call.snapshot.did(number)
        if hit is not None and hit[1].operator_id == op.id and hit[0].operator_id == op.id:
            found = (rule, *hit)
            break
    if found is None:
        call.explain["normalized"] = {
            "e164": forms[0][1],
            "kind": "invalid",
            "rule": None,
            "reason": "no DID of the operator matches",
            "tried": [n for _, n in forms],
        }
        raise _RefusedError(404, "did_not_found", f"{dialed!r} is no DID of this operator")
    rule, tenant, did = found
    kind = "national" if did.number.startswith("+" + call.country_code) else "international"
    call.explain["normalized"] = {"e164": did.number, "kind": kind, "rule": rule, "reason": None}
    destination = did.destination
    call.explain["did"] = {
        "number": did.number,
        "tenant_id": tenant.id,
        "destination": None if destination is None else dict(destination),
    }
    tenant_op = call.snapshot.operators.get(tenant.operator_id)
    if tenant_op is None:
        raise _RefusedError(404, "did_not_found", f"{dialed!r} is no DID of this operator")
    call.enter_tenant(tenant_op, tenant)
    call.via_did = did.number
    call.check_concurrency()
    if not isinstance(destination, Mapping) or not destination.get("type"):
        raise _RefusedError(480, "did_no_destination", f"DID {did.number} has no destination")
    return _to_destination(call, tenant, destination, f"DID {did.number}", did.number)


def _to_destination(
    call: _Call, tenant: TenantConfig, destination: Mapping[str, Any], source: str, number: str
) -> Decision:
    """Where a destination (of a DID, of an IVR's digit) sends the call. ``source`` names
    what pointed there, for the refusals; ``number`` is the decision's number."""
    kind_of = destination.get("type")
    if kind_of == "extension":
        ext_id = destination.get("id")
        ext = next((e for e in tenant.extensions.values() if e.id == ext_id), None)
        if ext is None:
            raise _RefusedError(
                480, "destination_not_found", f"{source} points at a missing extension"
            )
        return call.to_extension(ext, ())
    if kind_of == "external":
        to = destination.get("number")
        if not isinstance(to, str):
            raise _RefusedError(480, "destination_not_found", f"{source}: no external number")
        call.forwards.append({"from": number, "condition": "did", "to": to})
        return call.forward_to(None, to, ())
    if kind_of == "hangup":
        raise _RefusedError(603, "did_hangup", f"{source} hangs up")
    if kind_of == "ivr":
        return _to_ivr(call, tenant, destination, number)
    if kind_of == "schedule":
        return _by_schedule(call, tenant, destination, number)
    call.explain["target"] = {"type": str(kind_of), "destination": dict(destination)}
    return call.decision("inbound", number, destination=dict(destination))


MAX_SCHEDULE_HOPS = 4


def _by_schedule(
    call: _Call, tenant: TenantConfig, destination: Mapping[str, Any], number: str
) -> Decision:
    """A schedule's open or closed destination by the time of the call in its zone (only
    with the schedules feature; a schedule leading to schedules stops after a few)."""
    if "schedules" not in tenant.features:
        raise _RefusedError(403, "feature_disabled", f"{tenant.slug} has no schedules feature")
    schedule = tenant.schedules.get(str(destination.get("id")))
    if schedule is None:
        raise _RefusedError(480, "destination_not_found", f"{number} points at a missing schedule")
    if schedule.id in call.schedules_seen or len(call.schedules_seen) >= MAX_SCHEDULE_HOPS:
        raise _RefusedError(
            482, "schedule_loop", f"schedules lead to each other at {schedule.name}"
        )
    call.schedules_seen.append(schedule.id)
    is_open = schedule.is_open(call.now)
    call.explain.setdefault("schedules", []).append(
        {"id": schedule.id, "name": schedule.name, "open": is_open, "at": call.now.isoformat()}
    )
    chosen = schedule.open_destination if is_open else schedule.closed_destination
    if not chosen:
        state = "open" if is_open else "closed"
        raise _RefusedError(480, "destination_not_found", f"{schedule.name}: nothing when {state}")
    return _to_destination(call, tenant, chosen, f"schedule {schedule.name}", number)


def _to_ivr(
    call: _Call, tenant: TenantConfig, destination: Mapping[str, Any], number: str
) -> Decision:
    """A call into one of the tenant's voice menus: only with the ivr feature, and only to
    a menu that exists (a call never enters a menu the tenant may not have)."""
    if "ivr" not in tenant.features:
        raise _RefusedError(403, "feature_disabled", f"{tenant.slug} has no ivr feature")
    ivr = tenant.ivrs.get(str(destination.get("id")))
    if ivr is None:
        raise _RefusedError(480, "destination_not_found", f"{number} points at a missing IVR")
    call.explain["target"] = {"type": "ivr", "id": ivr.id, "name": ivr.name}
    return call.decision("ivr", number, destination={"type": "ivr", "id": ivr.id})


def _from_extension(call: _Call, caller: ExtensionCaller, dialed: str) -> Decision:
    tenant, ext = call.extension_caller(caller)
    plan = call.plan_for(ext)
    number = call.normalize(plan, dialed)
    if number.kind == "invalid" or number.e164 is None:
        raise _RefusedError(484, "invalid_number", number.reason or f"{dialed!r} cannot be dialled")
    if number.kind == "emergency":
        return call.outbound(number)  # no limit holds an emergency call
    call.check_concurrency()
    if number.kind == "service":
        return call.decision("feature", number.e164)
    if number.kind == "internal":
        target = tenant.extensions.get(number.e164)
        if target is None:
            raise _RefusedError(404, "extension_not_found", f"no extension {number.e164}")
        return call.to_extension(target, ())
    return call.outbound(number)


def decide(
    snapshot: Snapshot,
    caller: Caller,
    dialed: str,
    *,
    usage: CallUsage,
    down: Collection[str] = frozenset(),
    rng: random.Random | None = None,
    now: datetime | None = None,
) -> Decision:
    """The routing decision for a call from ``caller`` to ``dialed`` (see the module
    docstring for the rules). ``usage``: the live counters; ``down``: trunk ids that cannot
    take calls now; ``rng``: for a reproducible weighted LCR draw; ``now``: the clock of
    business hours (aware; default the current time). Never raises: a bad number or
    configuration is a ``reject`` decision."""
    call = _Call(snapshot, caller, usage, down, rng)
    if now is not None:
        call.now = now
    call.explain["dialed"] = dialed
    try:
        if isinstance(caller, TrunkCaller):
            return _inbound(call, caller, dialed)
        return _from_extension(call, caller, dialed)
    except _RefusedError as refusal:
        return call.refused(refusal)
    except Exception as exc:  # a bug must cost one call, not the call path
        log.exception("routing decision failed for %r", dialed)
        return call.refused(_RefusedError(500, "internal_error", f"{type(exc).__name__}"))


def decide_destination(
    snapshot: Snapshot,
    caller: Caller,
    tenant_id: str,
    destination: Mapping[str, Any],
    *,
    source: str,
    usage: CallUsage,
    down: Collection[str] = frozenset(),
    now: datetime | None = None,
) -> Decision:
    """Where a call already admitted to ``tenant_id`` goes next: a destination chosen in a
    voice menu (``source`` names it, e.g. ``IVR Main, digit 1``). Like a DID's destination,
    without the concurrency check (the call is counted already). Never raises."""
    call = _Call(snapshot, caller, usage, down, None)
    if now is not None:
        call.now = now
    call.explain["destination_of"] = source
    try:
        tenant = snapshot.tenants.get(tenant_id)
        op = None if tenant is None else snapshot.operators.get(tenant.operator_id)
        if tenant is None or op is None:
            raise _RefusedError(480, "destination_not_found", "the tenant is gone")
        call.enter_tenant(op, tenant)
        return _to_destination(
            call, tenant, destination, source, str(destination.get("number") or "")
        )
    except _RefusedError as refusal:
        return call.refused(refusal)
    except Exception as exc:
        log.exception("destination decision failed for %s", source)
        return call.refused(_RefusedError(500, "internal_error", f"{type(exc).__name__}"))


_NO_FORWARD: Mapping[str, tuple[int, str]] = {
    "busy": (486, "extension is busy"),
    "no_answer": (480, "extension did not answer"),
    "unavailable": (480, "extension is not registered"),
}


def decide_forward(
    snapshot: Snapshot,
    caller: Caller,
    target: ExtensionTarget,
    condition: ForwardCondition,
    *,
    usage: CallUsage,
    down: Collection[str] = frozenset(),
    rng: random.Random | None = None,
) -> Decision:
    """Where a call to ``target`` goes when the extension is busy, does not answer or is
    not registered: its forward for ``condition`` resolved like an unconditional one (same
    tenant, loop detection over ``target.chain``, external targets routed as outbound calls
    with the tenant's limits; the call is already admitted, so ``max_concurrent_calls`` is
    not checked again). Without a forward: 486 for busy, 480 otherwise."""
    call = _Call(snapshot, caller, usage, down, rng)
    call.explain["forward_of"] = target.to_json()
    call.explain["condition"] = condition
    try:
        if condition not in _NO_FORWARD:
            raise _RefusedError(500, "internal_error", f"unknown forward condition {condition!r}")
        tenant = snapshot.tenants.get(target.tenant_id)
        op = None if tenant is None else snapshot.operators.get(tenant.operator_id)
        if tenant is None or op is None:
            raise _RefusedError(480, "extension_not_found", "the forwarding tenant is gone")
        own = caller.tenant_id if isinstance(caller, ExtensionCaller) else None
        if own is not None and own != tenant.id:
            raise _RefusedError(
                404, "extension_not_found", "the target is no extension of the caller"
            )
        if isinstance(caller, TrunkCaller):
            call.country_code = _operator_country(op)
        call.enter_tenant(op, tenant)
        call.via_did = target.via_did
        to = target.forwarding.target(condition)
        if to is None:
            status, reason = _NO_FORWARD[condition]
            raise _RefusedError(status, condition, reason)
        call.forwards.append({"from": target.number, "condition": condition, "to": to})
        ext = tenant.extensions.get(target.number)
        return call.forward_to(ext, to, target.chain)
    except _RefusedError as refusal:
        return call.refused(refusal)
    except Exception as exc:
        log.exception("forward decision failed for %r", target.number)
        return call.refused(_RefusedError(500, "internal_error", f"{type(exc).__name__}"))
