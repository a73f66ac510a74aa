"""The public JSON view of each stored object: what the API returns and the audit log keeps.

One function per entity, plain dicts of JSON types (ISO 8601 UTC times, numbers, lists).
Secrets never appear: a SIP password, an admin password hash or a trunk password has no
field here; ``auth`` of a trunk shows the username only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pbxcore.tenancy import models as m

__all__ = ["VIEWS", "iso", "number", "view"]


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def number(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _stamps(row: Any) -> dict[str, Any]:
    return {"id": row.id, "created_at": iso(row.created_at), "updated_at": iso(row.updated_at)}


def operator(row: m.Operator) -> dict[str, Any]:
    return _stamps(row) | {"name": row.name, "domain": row.domain, "branding": row.branding}


def user(row: m.User) -> dict[str, Any]:
    return _stamps(row) | {
        "username": row.username,
        "login": row.login,
        "role": row.role,
        "operator_id": row.operator_id,
        "tenant_id": row.tenant_id,
        "full_name": row.full_name,
        "email": row.email,
        "phone": row.phone,
    }


def tenant(row: m.Tenant) -> dict[str, Any]:
    return _stamps(row) | {
        "operator_id": row.operator_id,
        "name": row.name,
        "slug": row.slug,
        "domain": row.domain,
        "status": row.status,
        "features": row.features,
        "limits": {
            "max_extensions": row.max_extensions,
            "max_concurrent_calls": row.max_concurrent_calls,
            "max_dids": row.max_dids,
            "international_calls": row.international_calls,
        },
        "route_table_id": row.route_table_id,
        "dedicated_trunk_id": row.dedicated_trunk_id,
        "dial_plan_id": row.dial_plan_id,
        "expected_users": row.expected_users,
        "time_zone": row.time_zone,
        "sip": {"digest_algorithms": row.digest_algorithms},
        "max_call_duration_s": row.max_call_duration_s,
        "usage": {"extensions": row.extension_count, "dids": row.did_count},
    }


def extension(row: m.Extension) -> dict[str, Any]:
    return _stamps(row) | {
        "tenant_id": row.tenant_id,
        "number": row.number,
        "name": row.name,
        "email": row.email,
        "dial_plan_id": row.dial_plan_id,
        "forwarding": row.forwarding,
        "enabled": row.enabled,
        "has_sip_password": row.ha1_md5 is not None or row.ha1_sha256 is not None,
    }


def prompt(row: m.Prompt) -> dict[str, Any]:
    return _stamps(row) | {
        "tenant_id": row.tenant_id,
        "name": row.name,
        "duration_s": row.duration_ms / 1000,
    }


def ivr(row: m.Ivr) -> dict[str, Any]:
    return _stamps(row) | {
        "tenant_id": row.tenant_id,
        "name": row.name,
        "greeting_prompt_id": row.greeting_prompt_id,
        "options": row.options,
        "timeout_s": row.timeout_s,
        "invalid_prompt_id": row.invalid_prompt_id,
        "max_retries": row.max_retries,
        "default_destination": row.default_destination,
        "direct_dial": row.direct_dial,
    }


def schedule(row: m.Schedule) -> dict[str, Any]:
    return _stamps(row) | {
        "tenant_id": row.tenant_id,
        "name": row.name,
        "time_zone": row.time_zone,
        "weekly": row.weekly,
        "holidays": row.holidays,
        "open_destination": row.open_destination,
        "closed_destination": row.closed_destination,
    }


def trunk(row: m.Trunk) -> dict[str, Any]:
    return _stamps(row) | {
        "name": row.name,
        "host": row.host,
        "port": row.port,
        "transport": row.transport,
        "auth": None if row.auth_username is None else {"username": row.auth_username},
        "register": row.register,
        "inbound_ips": row.inbound_ips,
        "number_format": row.number_format,
        "caller_id": row.caller_id,
        "max_channels": row.max_channels,
        "rate_per_minute": number(row.rate_per_minute),
        "enabled": row.enabled,
    }


def route_table(row: m.RouteTableRow) -> dict[str, Any]:
    return _stamps(row) | {"name": row.name}


def route(row: m.Route) -> dict[str, Any]:
    return _stamps(row) | {
        "route_table_id": row.route_table_id,
        "prefix": row.prefix,
        "trunk_id": row.trunk_id,
        "priority": row.priority,
        "weight": row.weight,
        "cost_per_minute": number(row.cost_per_minute),
        "enabled": row.enabled,
    }


def dial_plan(row: m.DialPlanRow) -> dict[str, Any]:
    return _stamps(row) | {
        "name": row.name,
        "country": row.country,
        "default_area_code": row.default_area_code,
        "rules": row.rules,
        "extension_digits": row.extension_digits,
    }


def did(row: m.Did) -> dict[str, Any]:
    return _stamps(row) | {
        "number": row.number,
        "status": "free" if row.tenant_id is None else "assigned",
        "tenant_id": row.tenant_id,
        "destination": row.destination,
    }


def cdr(row: m.Cdr) -> dict[str, Any]:
    return _stamps(row) | {
        "call_id": row.call_id,
        "direction": row.direction,
        "from": row.from_number,
        "to": row.to_number,
        "extension": row.extension,
        "started_at": iso(row.started_at),
        "answered_at": iso(row.answered_at),
        "ended_at": iso(row.ended_at),
        "duration_s": row.duration_s,
        "billsec": row.billsec,
        "disposition": row.disposition,
        "trunk_id": row.trunk_id,
        "cost": number(row.cost),
    }


def cdr_detail(row: m.Cdr) -> dict[str, Any]:
    """One CDR with the routing layer's explain trace (why these trunks, in this order)."""
    return cdr(row) | {"explain": row.explain}


def audit_entry(row: m.AuditEntry) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": iso(row.at),
        "created_at": iso(row.at),
        "updated_at": iso(row.at),
        "operator_id": row.operator_id,
        "tenant_id": row.tenant_id,
        "actor": row.actor,
        "action": row.action,
        "entity": row.entity,
        "entity_id": row.entity_id,
        "before": row.before,
        "after": row.after,
    }


def platform_event(row: m.PlatformEvent) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": iso(row.at),
        "created_at": iso(row.at),
        "updated_at": iso(row.at),
        "type": row.type,
        "operator_id": row.operator_id,
        "tenant_id": row.tenant_id,
        "subject": row.subject,
        "call_id": row.call_id,
        "status": row.status,
        "node_id": row.node_id,
        "detail": row.detail,
    }


VIEWS: dict[type[Any], Callable[[Any], dict[str, Any]]] = {
    m.Operator: operator,
    m.User: user,
    m.Tenant: tenant,
    m.Extension: extension,
    m.Trunk: trunk,
    m.RouteTableRow: route_table,
    m.Route: route,
    m.DialPlanRow: dial_plan,
    m.Did: did,
    m.Cdr: cdr,
    m.AuditEntry: audit_entry,
    m.PlatformEvent: platform_event,
    m.Prompt: prompt,
    m.Ivr: ivr,
    m.Schedule: schedule,
}


def view(row: Any) -> dict[str, Any]:
    """The public view of any stored object."""
    return VIEWS[type(row)](row)
