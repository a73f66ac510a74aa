"""The value rules of the data model, in one place for the API, the CLI and the consoles.

Each function returns the normalized value or raises ``ValueError`` with a precise message.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
import zoneinfo
from collections.abc import Mapping, Sequence
from datetime import date
from functools import cache
from typing import Any

from email_validator import EmailNotValidError, validate_email

from pbxcore.media.prompt import Prompt
from pbxcore.routing import CallerIdRule, DialPlan, calling_code, is_e164

__all__ = [
    "DESTINATION_TYPES",
    "DIGEST_ALGORITHMS",
    "FEATURES",
    "MAX_NUMBER_RANGE",
    "FieldValueError",
    "check_caller_id",
    "check_cidr",
    "check_colour",
    "check_country",
    "check_destination",
    "check_dial_plan",
    "check_digest_algorithms",
    "check_domain",
    "check_e164",
    "check_email",
    "check_extension_number",
    "check_features",
    "check_forward_target",
    "check_holidays",
    "check_host",
    "check_ivr_options",
    "check_number_range",
    "check_password",
    "check_prefix",
    "check_route_number",
    "check_sip_password",
    "check_slug",
    "check_text",
    "check_time_zone",
    "check_username",
    "check_weekly",
    "prompt_audio",
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
    """``+`` and 7 to 15 digits, the first not 0: the routing layer's rule (ITU-T E.164)."""
    if not value.isascii() or not is_e164(value):
        raise ValueError(f"{value!r} is not an E.164 number such as +74951234567")
    return value


def check_prefix(value: str) -> str:
    """A route prefix: E.164 digits without ``+`` (empty is the default route)."""
    if value and not (value.isascii() and value.isdigit() and len(value) <= 15):
        raise ValueError(f"{value!r} is not a prefix: up to 15 digits without '+', or empty")
    return value


MAX_PROMPT_SECONDS = 600  # a prompt longer than 10 minutes is a recording, not a prompt
MAX_PROMPTS = 200  # per tenant


def prompt_audio(wav: bytes) -> tuple[bytes, int]:
    """An uploaded prompt as stored: (8 kHz μ-law, duration in ms). A ValueError says what
    is wrong: not a WAV, not mono 8 kHz PCM16 / G.711, empty, or longer than allowed."""
    try:
        prompt = Prompt.from_wav_bytes(wav, name="the file")
    except ValueError as exc:
        if "channels" in str(exc) or "sample rate" in str(exc):
            raise ValueError(f"{exc} (convert it: sox in.wav -r 8000 -c 1 -b 16 out.wav)") from None
        raise
    if not prompt.pcm16:
        raise ValueError("the file holds no audio")
    if prompt.duration > MAX_PROMPT_SECONDS:
        raise ValueError(
            f"the prompt lasts {prompt.duration:.0f} s; at most {MAX_PROMPT_SECONDS} s"
        )
    return prompt.ulaw, round(prompt.duration * 1000)


UNIVERSAL_EMERGENCY = ("112", "911")  # dialled out from every phone, whatever the plan


def check_extension_number(value: str) -> str:
    """2 to 8 digits, not a universal emergency number (an extension numbered like a
    national short code, 101-104 in Russia, is dialled as the extension)."""
    if not (value.isascii() and value.isdigit() and 2 <= len(value) <= 8):
        raise ValueError(f"{value!r} is not an extension number: 2 to 8 digits")
    if value in UNIVERSAL_EMERGENCY:
        raise ValueError(f"{value!r} is an emergency number: it cannot be an extension")
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


class FieldValueError(ValueError):
    """A rule over several fields that names the one at fault (``rules``, ``to`` ...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_host(value: str) -> str:
    """A trunk's host: an IPv4 or IPv6 address, or a DNS name (lower case)."""
    host = value.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host.removeprefix("[").removesuffix("]")))
    except ValueError:
        pass
    labels = host.split(".")
    if (
        not host
        or len(host) > 253
        or any(_LABEL.fullmatch(label) is None for label in labels)
        or labels[-1].isdigit()
    ):
        raise ValueError(
            f"{value!r} is not a host: an IP address or a name such as sip.example.net"
        )
    return host


def check_caller_id(data: Mapping[str, Any]) -> dict[str, Any]:
    """A trunk's caller-ID rule as the routing layer reads it (``fixed`` needs its number)."""
    rule = CallerIdRule.from_mapping(data)
    return {
        "mode": rule.mode,
        "fixed_number": rule.fixed_number,
        "format": rule.format,
        "restricted": rule.restricted,
    }


def check_route_number(value: str) -> str:
    """A number to route: E.164, ``+`` optional (``74951234567`` or ``+74951234567``)."""
    number = value.strip()
    return check_e164(number if number.startswith("+") else f"+{number}")


def check_country(value: str) -> str:
    """An ISO 3166 region with a calling code (``RU``, ``DE``), upper case."""
    country = value.strip().upper()
    if len(country) != 2:
        raise ValueError(f"{value!r} is not a country: two letters such as RU")
    calling_code(country)  # ValueError names the unknown region
    return country


def check_dial_plan(
    *,
    country: str,
    rules: Sequence[Mapping[str, Any]],
    default_area_code: str | None,
    extension_digits: int | None,
) -> None:
    """A dial plan compiles as the call path will compile it; FieldValueError names the
    field at fault (``default_area_code``, ``extension_digits`` or ``rules``)."""
    try:
        DialPlan.from_config(country=country, extension_digits=extension_digits)
    except ValueError as exc:
        raise FieldValueError("extension_digits", str(exc)) from None
    try:
        DialPlan.from_config(
            country=country, default_area_code=default_area_code, extension_digits=extension_digits
        )
    except ValueError as exc:
        raise FieldValueError("default_area_code", str(exc)) from None
    for i, rule in enumerate(rules):
        try:
            DialPlan([rule])
        except (ValueError, TypeError) as exc:
            raise FieldValueError("rules", f"rule {i}: {exc}") from None
    try:
        DialPlan.from_config(
            country=country,
            rules=rules,
            default_area_code=default_area_code,
            extension_digits=extension_digits,
        )
    except (ValueError, TypeError) as exc:
        raise FieldValueError("rules", str(exc)) from None


MAX_NUMBER_RANGE = 10_000


def check_number_range(first: str, last: str, limit: int = MAX_NUMBER_RANGE) -> list[str]:
    """The E.164 numbers ``first`` to ``last`` inclusive (same length, at most ``limit``)."""
    check_e164(first)
    check_e164(last)
    if len(first) != len(last):
        raise FieldValueError(
            "to", f"{last!r} and {first!r} differ in length: a range is of numbers of one length"
        )
    low, high = int(first[1:]), int(last[1:])
    if high < low:
        raise FieldValueError("to", f"{last!r} is below {first!r}")
    if high - low + 1 > limit:
        raise FieldValueError(
            "to", f"the range has {high - low + 1} numbers; at most {limit} in one call"
        )
    width = len(first) - 1
    return [f"+{n:0{width}d}" for n in range(low, high + 1)]


DESTINATION_TYPES = frozenset(
    {"extension", "ivr", "ring_group", "voicemail", "schedule", "external", "hangup"}
)
# the destinations that name an object of the tenant by id
_BY_ID = frozenset({"extension", "ivr", "ring_group", "voicemail", "schedule"})


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_HOLIDAYS = 400


def _clock(value: Any, what: str) -> str:
    text = str(value)
    hours, sep, minutes = text.partition(":")
    ok = sep and len(hours) == 2 and len(minutes) == 2 and hours.isdigit() and minutes.isdigit()
    if not ok or int(hours) > 24 or int(minutes) > 59 or (int(hours) == 24 and int(minutes)):
        raise ValueError(f"{what} {value!r} is not a time HH:MM (00:00-24:00)")
    return text


def check_weekly(periods: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Weekly open hours: ``{"days": ["mon", ...], "open": "09:00", "close": "18:00"}``
    each, ``close`` after ``open`` on the same day (a night shift is two periods)."""
    checked = []
    for n, period in enumerate(periods):
        days = period.get("days")
        if not isinstance(days, list) or not days:
            raise ValueError(f"period {n}: days is a list of {', '.join(WEEKDAYS)}")
        for day in days:
            if day not in WEEKDAYS:
                raise ValueError(f"period {n}: {day!r} is not a day ({', '.join(WEEKDAYS)})")
        opens = _clock(period.get("open"), f"period {n}: open")
        closes = _clock(period.get("close"), f"period {n}: close")
        if closes <= opens:
            raise ValueError(
                f"period {n}: close {closes} is not after open {opens} "
                "(a period that runs past midnight is two periods)"
            )
        extra = set(period) - {"days", "open", "close"}
        if extra:
            raise ValueError(f"period {n}: unknown fields {sorted(extra)}")
        checked.append({"days": list(dict.fromkeys(days)), "open": opens, "close": closes})
    return checked


def check_holidays(days: Sequence[str]) -> list[str]:
    """Closed dates, ISO ``YYYY-MM-DD`` (at most ``MAX_HOLIDAYS``)."""
    if len(days) > MAX_HOLIDAYS:
        raise ValueError(f"{len(days)} holidays; at most {MAX_HOLIDAYS}")
    for day in days:
        try:
            date.fromisoformat(day)
        except (TypeError, ValueError):
            raise ValueError(f"{day!r} is not a date YYYY-MM-DD") from None
        if len(day) != 10:
            raise ValueError(f"{day!r} is not a date YYYY-MM-DD")
    return sorted(set(days))


IVR_DIGITS = frozenset("0123456789*#")


def check_ivr_options(options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """An IVR's digit map: keys 0-9, * and #, each a destination (:func:`check_destination`);
    a ValueError names the digit."""
    checked: dict[str, dict[str, Any]] = {}
    for digit, destination in options.items():
        if digit not in IVR_DIGITS:
            raise ValueError(f"option {digit!r}: a key is one digit 0-9, * or #")
        if not isinstance(destination, Mapping):
            raise ValueError(f"option {digit}: a destination is an object with a type")
        try:
            checked[digit] = check_destination(destination)
        except ValueError as exc:
            raise ValueError(f"option {digit}: {exc}") from None
    return checked


def check_destination(data: Mapping[str, Any]) -> dict[str, Any]:
    """Where a call goes: ``{"type", "id"?, "number"?}``; ``id`` for the tenant's objects,
    ``number`` (E.164) for ``external``, neither for ``hangup``."""
    kind = data.get("type")
    ident = data.get("id")
    number = data.get("number")
    if kind not in DESTINATION_TYPES:
        raise ValueError(f"type must be one of {sorted(DESTINATION_TYPES)}, got {kind!r}")
    if kind in _BY_ID:
        if not ident or number is not None:
            raise ValueError(f"a {kind} destination takes the {kind}'s id, and no number")
        return {"type": kind, "id": ident}
    if kind == "external":
        if number is None or ident is not None:
            raise ValueError("an external destination takes a number (E.164), and no id")
        return {"type": kind, "number": check_e164(number)}
    if ident is not None or number is not None:
        raise ValueError("a hangup destination takes neither id nor number")
    return {"type": kind}
