"""The value rules of the data model, in one place for the API, the CLI and the consoles.

Each function returns the normalized value or raises ``ValueError`` with a precise message.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
import zoneinfo
from functools import cache

from email_validator import EmailNotValidError, validate_email

__all__ = [
    "DIGEST_ALGORITHMS",
    "FEATURES",
    "check_cidr",
    "check_colour",
    "check_digest_algorithms",
    "check_domain",
    "check_e164",
    "check_email",
    "check_extension_number",
    "check_features",
    "check_forward_target",
    "check_password",
    "check_prefix",
    "check_sip_password",
    "check_slug",
    "check_text",
    "check_time_zone",
    "check_username",
]

FEATURES = frozenset({"ivr", "call_recording", "voicemail", "crm", "ring_groups", "schedules"})
DIGEST_ALGORITHMS = ("MD5", "SHA-256")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_slug(value: str) -> str:
    """A DNS label (RFC 1035 §2.3.1, lower case): it becomes ``slug.operator-domain``."""
    slug = value.strip().lower()
    if _LABEL.fullmatch(slug) is None:
        raise ValueError(
            f"{value!r} is not a DNS label: 1-63 of a-z, 0-9 and '-', not starting or ending in '-'"
        )
    return slug


def check_domain(value: str) -> str:
    """A DNS name of at least two labels, lower case, at most 253 characters."""
    domain = value.strip().lower().rstrip(".")
    labels = domain.split(".")
    if len(domain) > 253 or len(labels) < 2:
        raise ValueError(f"{value!r} is not a domain name such as voip.example.net")
    for label in labels:
        if _LABEL.fullmatch(label) is None:
            raise ValueError(f"{value!r} is not a domain name: label {label!r} is not valid")
    if labels[-1].isdigit():
        raise ValueError(f"{value!r} is an address, not a domain name")
    return domain


def check_colour(value: str) -> str:
    if _COLOUR.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not a colour #rrggbb")
    return value.lower()


def check_e164(value: str) -> str:
    """``+`` and 8 to 15 digits, the first not 0 (ITU-T E.164)."""
    digits = value[1:]
    if (
        not value.startswith("+")
        or not digits.isascii()
        or not digits.isdigit()
        or not 8 <= len(digits) <= 15
        or digits[0] == "0"
    ):
        raise ValueError(f"{value!r} is not an E.164 number such as +74951234567")
    return value


def check_prefix(value: str) -> str:
    """A route prefix: E.164 digits without ``+`` (empty is the default route)."""
    if value and not (value.isascii() and value.isdigit() and len(value) <= 15):
        raise ValueError(f"{value!r} is not a prefix: up to 15 digits without '+', or empty")
    return value


def check_extension_number(value: str) -> str:
    if not (value.isascii() and value.isdigit() and 2 <= len(value) <= 8):
        raise ValueError(f"{value!r} is not an extension number: 2 to 8 digits")
    return value


def check_forward_target(value: str) -> str:
    """Where a call is forwarded: an extension number or an E.164 number."""
    if value.startswith("+"):
        return check_e164(value)
    if value.isascii() and value.isdigit() and 2 <= len(value) <= 15:
        return value
    raise ValueError(f"{value!r} is not an extension number or an E.164 number")


def check_sip_password(value: str) -> str:
    if len(value) < 8 or len(value) > 128:
        raise ValueError("a SIP password needs 8 to 128 characters")
    if not value.isprintable():
        raise ValueError("a SIP password must be printable characters")
    return value


def check_text(value: str) -> str:
    """Free text (a name): no control characters, no lone surrogates. PostgreSQL cannot
    store NUL, neither store a surrogate, and both stores must answer alike."""
    for char in value:
        category = unicodedata.category(char)
        if category == "Cc":
            raise ValueError(f"control character U+{ord(char):04X} is not allowed")
        if category == "Cs":
            raise ValueError(f"U+{ord(char):04X} is a lone surrogate, not a character")
    return value


def check_password(value: str) -> str:
    """An admin's password (the API's ``password`` fields hold the same rule)."""
    if not 8 <= len(value) <= 128:
        raise ValueError("a password needs 8 to 128 characters")
    return value


def check_email(value: str) -> str:
    """An e-mail address (syntax only, no DNS lookup), normalized."""
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not an e-mail address: {exc}") from exc


def check_username(value: str) -> str:
    if _USERNAME.fullmatch(value) is None:
        raise ValueError(
            f"{value!r} is not a username: 1-64 of letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return value


def check_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an address or CIDR block") from exc


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_time_zone(value: str) -> str:
    zones = _zones()
    if value not in zones and value != "UTC":
        raise ValueError(f"{value!r} is not an IANA time zone such as Europe/Moscow")
    return value


def check_features(values: list[str]) -> list[str]:
    unknown = sorted(set(values) - FEATURES)
    if unknown:
        raise ValueError(f"unknown features {unknown}; known: {sorted(FEATURES)}")
    return sorted(set(values))


def check_digest_algorithms(values: list[str]) -> list[str]:
    if not values:
        raise ValueError("at least one digest algorithm")
    if len(set(values)) != len(values):
        raise ValueError("digest algorithms must be distinct")
    for value in values:
        if value not in DIGEST_ALGORITHMS:
            raise ValueError(
                f"unknown digest algorithm {value!r}; known: {list(DIGEST_ALGORITHMS)}"
            )
    return list(values)
