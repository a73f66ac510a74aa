"""Stored rows to the routing layer's immutable objects: one place for each translation.

The snapshot builder, the API's ``explain``/``normalize`` endpoints and validation all go
through these, so a stored route table means the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from pbxcore.routing import CallerIdRule, DialPlan, NumberFormat, RouteEntry, RouteTable
from pbxcore.tenancy import models as m

__all__ = ["RouteRow", "TrunkConfig", "compile_dial_plan", "compile_route_table", "compile_trunk"]


class RouteRow(Protocol):
    """A stored route: an ORM row, or a row of its columns (the snapshot loads those)."""

    prefix: str
    trunk_id: str
    priority: int
    weight: int
    cost_per_minute: Decimal
    enabled: bool


def route_entry(r: RouteRow) -> RouteEntry:
    """One stored route as the routing layer's entry."""
    return RouteEntry(
        r.prefix,
        r.trunk_id,
        priority=r.priority,
        weight=r.weight,
        cost_per_minute=r.cost_per_minute,
        enabled=r.enabled,
    )


def compile_route_table(routes: Iterable[RouteRow]) -> RouteTable:
    """A route table's rows as a :class:`RouteTable` (failover to shorter prefixes on)."""
    return RouteTable((route_entry(r) for r in routes), fallthrough=True)


def compile_dial_plan(row: m.DialPlanRow) -> DialPlan:
    """A stored dial plan: its own rules, then the built-in rules of its country."""
    return DialPlan.from_config(
        country=row.country,
        rules=row.rules,
        default_area_code=row.default_area_code,
        extension_digits=row.extension_digits,
        name=row.name,
    )


@dataclass(frozen=True, slots=True)
class TrunkConfig:
    """What the call path needs of a trunk (the password decrypted only where used)."""

    id: str
    name: str
    host: str
    port: int
    transport: str
    auth_username: str | None
    auth_password: bytes | None  # encrypted; SecretBox.decrypt when dialling or registering
    register: bool
    inbound_ips: tuple[str, ...]
    number_format: NumberFormat
    caller_id: CallerIdRule
    max_channels: int | None
    enabled: bool

    def __repr__(self) -> str:
        where = f"{self.transport}:{self.host}:{self.port}"
        return f"TrunkConfig(id={self.id!r}, name={self.name!r}, {where})"


def compile_trunk(row: m.Trunk) -> TrunkConfig:
    return TrunkConfig(
        id=row.id,
        name=row.name,
        host=row.host,
        port=row.port,
        transport=row.transport,
        auth_username=row.auth_username,
        auth_password=row.auth_password,
        register=row.register,
        inbound_ips=tuple(row.inbound_ips),
        number_format=row.number_format,  # type: ignore[arg-type]
        caller_id=CallerIdRule.from_mapping(row.caller_id),
        max_channels=row.max_channels,
        enabled=row.enabled,
    )
