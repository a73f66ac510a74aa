"""DTMF in SIP INFO: the ``application/dtmf-relay`` and ``application/dtmf`` bodies.

Phones that do not send RFC 4733 events signal a key press in an INFO request of the
dialog. ``application/dtmf-relay`` (the de-facto format of Cisco and most softphones)
is ``Signal=5`` and ``Duration=160`` (ms) lines; ``application/dtmf`` is the key alone.
:func:`parse_dtmf_info` reads either, or raises ValueError saying what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DTMF_INFO_TYPES", "DtmfInfo", "parse_dtmf_info"]

DTMF_INFO_TYPES = ("application/dtmf-relay", "application/dtmf")
_KEYS = frozenset("0123456789*#ABCD")
_EVENT_CODES = {str(n): str(n) for n in range(10)} | {"10": "*", "11": "#"}
_MAX_BODY = 1024
DEFAULT_DURATION_MS = 100


@dataclass(frozen=True, slots=True)
class DtmfInfo:
    digit: str
    duration_ms: int


def _key(value: str) -> str:
    key = value.strip().upper()
    key = _EVENT_CODES.get(key, key) if len(key) > 1 else key  # "10" is "*", "11" is "#"
    if key not in _KEYS:
        raise ValueError(f"Signal {value.strip()!r} is not a DTMF key (0-9, *, #, A-D)")
    return key


def parse_dtmf_info(content_type: str, body: bytes) -> DtmfInfo:
    """The key of an INFO body of ``content_type`` (parameters allowed)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind not in DTMF_INFO_TYPES:
        raise ValueError(f"content type {kind!r} carries no DTMF")
    if len(body) > _MAX_BODY:
        raise ValueError(f"a DTMF INFO body of {len(body)} bytes is too long")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("a DTMF INFO body is ASCII text") from None
    if kind == "application/dtmf":
        return DtmfInfo(_key(text), DEFAULT_DURATION_MS)
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            fields.setdefault(name.strip().lower(), value.strip())
    if "signal" not in fields:
        raise ValueError("a dtmf-relay body needs a Signal= line")
    duration = DEFAULT_DURATION_MS
    if "duration" in fields:
        raw = fields["duration"]
        if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) < 60_000:
            raise ValueError(f"Duration {raw!r} is not a number of ms (1-59999)")
        duration = int(raw)
    return DtmfInfo(_key(fields["signal"]), duration)
