"""SIP requests and responses: parsing, framing, serialization and UAS checks (RFC 3261 §7,
§8.2, §18.3)."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from pbxcore._sipscan import first_value, nth_crlf, parse_cseq, serialize, split_headers
from pbxcore.sip.errors import SipParseError
from pbxcore.sip.headers import (
    LIST_HEADERS,
    TOKEN_RE,
    Address,
    Headers,
    Via,
    header_key,
    split_list,
)
from pbxcore.sip.uri import Uri

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_HEADER_LINES",
    "REASON_PHRASES",
    "Message",
    "ParseLimits",
    "Request",
    "Response",
    "make_response",
    "message_length",
    "parse_message",
    "validate_request",
    "validate_response",
]

SIP_VERSION = "SIP/2.0"
_CSEQ_MAX = 2**31 - 1
_SCHEME_PREFIX_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:")
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+\Z", re.IGNORECASE)
_CSEQ_RE = re.compile(r"[ \t]*([0-9]+)[ \t]+(" + TOKEN_RE.pattern[:-2] + r")[ \t]*\Z")
_DIGITS_RE = re.compile(r"[0-9]+\Z")
_CTL_OR_SPACE_RE = re.compile(r"[\x00-\x20]")

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    429: "Provide Referrer Identity",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

# headers a request must not repeat (RFC 3261 §7.3.1, RFC 4475 §3.3.8)
_SINGLE_VALUED = ("to", "from", "call-id", "cseq", "max-forwards", "content-type", "expires")
_REQUIRED = ("via", "from", "to", "call-id", "cseq")
_DISPLAY_NAMES = {
    "via": "Via",
    "from": "From",
    "to": "To",
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "max-forwards": "Max-Forwards",
    "content-type": "Content-Type",
    "expires": "Expires",
}
# methods whose names need no token check in the request line (RFC 3261, 3262, 3265, 3311,
# 3428, 3515, 3903, 6086)
_KNOWN_METHODS = frozenset(
    {
        "ACK",
        "BYE",
        "CANCEL",
        "INFO",
        "INVITE",
        "MESSAGE",
        "NOTIFY",
        "OPTIONS",
        "PRACK",
        "PUBLISH",
        "REFER",
        "REGISTER",
        "SUBSCRIBE",
        "UPDATE",
    }
)
# copied from request to response (RFC 3261 §8.2.6.2)
_COPIED_HEADERS = frozenset({"via", "from", "call-id", "cseq"})
# methods that create dialogs: their 1xx/2xx responses carry the Record-Route set back
_DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER"})


MAX_HEADER_LINES = 256
"""Default limit on header field lines per message; a message with more is refused with
400 (RFC 3261 §21.4.1: there is no dedicated code, 513 is for the message length) before
its header block is decoded or split."""


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Upper bounds applied while parsing (a message beyond them is refused, not parsed)."""

    max_message_size: int = 65535
    """Octets in one message, start line to end of body (513 Message Too Large)."""
    max_headers: int = MAX_HEADER_LINES
    """Physical header field lines (continuation lines count) (400)."""
    max_line_length: int = 8192
    """Characters in one physical line of the start line and header block (400)."""


DEFAULT_LIMITS = ParseLimits()


class _Message:
    """What requests and responses share: ``headers``, ``body`` (bytes) and the typed
    accessors. The accessors parse on first use and cache until the headers change; the
    objects they return are snapshots, so change a header by assigning the accessor
    (``msg.to = addr``) or through :attr:`headers`, not by mutating a returned object."""

    __slots__ = ("body", "headers", "version")

    headers: Headers
    body: bytes
    version: str

    # -- header accessors (parsed on first access, cached until the headers change) --
    def _single(self, key: str) -> str:
        # Headers.get for a key that is already canonical (this runs for every accessor)
        value = first_value(self.headers._items, key)
        if value is not None:
            if key in LIST_HEADERS and "," in value:
                return split_list(value)[0]
            return value
        raise SipParseError(f"missing {_DISPLAY_NAMES.get(key, key)} header")

    @property
    def call_id(self) -> str:
        """The Call-ID."""
        # the memo is read inline (no closure, no call): these run on every message
        cache = self.headers._cache
        value = cache.get("call-id")
        if value is None:
            text = first_value(self.headers._items, "call-id")  # not a list header
            value = cache["call-id"] = _parse_call_id(
                self._single("call-id") if text is None else text
            )
        return value  # type: ignore[return-value]

    @call_id.setter
    def call_id(self, value: str) -> None:
        self.headers.set("Call-ID", value)

    @property
    def cseq(self) -> tuple[int, str]:
        """(sequence number, method) of the CSeq header."""
        cache = self.headers._cache
        value = cache.get("cseq")
        if value is None:
            text = first_value(self.headers._items, "cseq")  # not a list header
            value = cache["cseq"] = _parse_cseq(self._single("cseq") if text is None else text)
        return value  # type: ignore[return-value]

    @cseq.setter
    def cseq(self, value: tuple[int, str]) -> None:
        self.headers.set("CSeq", f"{value[0]} {value[1]}")

    @property
    def from_(self) -> Address:
        """The From address."""
        cache = self.headers._cache
        value = cache.get("from")
        if value is None:
            text = first_value(self.headers._items, "from")  # not a list header
            value = cache["from"] = Address.parse(self._single("from") if text is None else text)
        return value  # type: ignore[return-value]

    @from_.setter
    def from_(self, value: Address) -> None:
        self.headers.set("From", str(value))

    @property
    def to(self) -> Address:
        """The To address."""
        cache = self.headers._cache
        value = cache.get("to")
        if value is None:
            text = first_value(self.headers._items, "to")  # not a list header
            value = cache["to"] = Address.parse(self._single("to") if text is None else text)
        return value  # type: ignore[return-value]

    @to.setter
    def to(self, value: Address) -> None:
        self.headers.set("To", str(value))

    @property
    def via(self) -> list[Via]:
        """Every Via value, topmost first."""
        cache = self.headers._cache
        value = cache.get("via")
        if value is None:
            value = cache["via"] = [Via.parse(v) for v in self.headers.get_all("via")]
            if value:  # the first one is the top Via: not parsed again by top_via
                cache.setdefault("top-via", value[0])
        return value  # type: ignore[return-value]

    @property
    def top_via(self) -> Via:
        """The topmost Via (parsed alone, without touching the others)."""
        cache = self.headers._cache
        value = cache.get("top-via")
        if value is None:
            text = first_value(self.headers._items, "via")
            if text is None or "," in text:
                text = self._single("via")
            value = cache["top-via"] = Via.parse(text)
        return value  # type: ignore[return-value]

    @top_via.setter
    def top_via(self, value: Via) -> None:
        # replaces the first Via value only (e.g. after adding received/rport)
        self.headers.replace_first("Via", str(value))

    @property
    def contact(self) -> list[Address]:
        """The Contact addresses (empty for ``Contact: *``, see :attr:`contact_is_wildcard`)."""
        cache = self.headers._cache
        value = cache.get("contact")
        if value is None:
            value = cache["contact"] = self._parse_contacts()
        return value  # type: ignore[return-value]

    @contact.setter
    def contact(self, value: list[Address]) -> None:
        self.headers.remove("contact")
        self.headers.extend(("Contact", str(address)) for address in value)

    @property
    def contact_is_wildcard(self) -> bool:
        """``Contact: *`` (a REGISTER removing every binding)."""
        values = self.headers.get_all("contact")
        return len(values) == 1 and values[0].strip(" \t") == "*"

    def _parse_contacts(self) -> list[Address]:
        values = self.headers.get_all("contact")
        if len(values) == 1:  # the common case, without the loops
            value = values[0]
            return [] if value.strip(" \t") == "*" else [Address.parse(value)]
        for v in values:
            if v.strip(" \t") == "*":
                if len(values) != 1:
                    raise SipParseError("Contact: * combined with other contacts")
                return []
        return [Address.parse(v) for v in values]

    @property
    def route(self) -> list[Address]:
        """The Route set, in order."""
        return self.headers.memo(
            "route", lambda: [Address.parse(v) for v in self.headers.get_all("route")]
        )

    @property
    def record_route(self) -> list[Address]:
        """The Record-Route set, in order."""
        return self.headers.memo(
            "record-route",
            lambda: [Address.parse(v) for v in self.headers.get_all("record-route")],
        )

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (None if absent; values above 255 count as 255)."""
        return self.headers.memo("max-forwards", self._parse_max_forwards)

    @max_forwards.setter
    def max_forwards(self, value: int) -> None:
        self.headers.set("Max-Forwards", str(value))

    def _parse_max_forwards(self) -> int | None:
        value = self.headers.get("max-forwards")
        if value is None:
            return None
        if _DIGITS_RE.match(value) is None:
            raise SipParseError(f"bad Max-Forwards {value[:40]!r}")
        value = value.lstrip("0") or "0"
        return 255 if len(value) > 3 else min(int(value), 255)

    @property
    def expires(self) -> int | None:
        """The Expires header in seconds (None if absent; huge values capped at 2**32-1)."""
        return self.headers.memo("expires", self._parse_expires)

    @expires.setter
    def expires(self, value: int) -> None:
        self.headers.set("Expires", str(value))

    def _parse_expires(self) -> int | None:
        value = self.headers.get("expires")
        if value is None:
            return None
        if _DIGITS_RE.match(value) is None:
            raise SipParseError(f"bad Expires {value[:40]!r}")
        return _cap32(value)

    @property
    def content_length(self) -> int | None:
        """The Content-Length header (None if absent)."""
        value = self.headers.get("content-length")
        return None if value is None else _parse_content_length([value])

    @property
    def content_type(self) -> str | None:
        """The Content-Type header as written."""
        return self.headers.get("content-type")

    @property
    def require(self) -> list[str]:
        """Option tags of the Require header."""
        return _option_tags(self.headers.get_all("require"))

    @property
    def proxy_require(self) -> list[str]:
        """Option tags of the Proxy-Require header."""
        return _option_tags(self.headers.get_all("proxy-require"))

    @property
    def supported(self) -> list[str]:
        """Option tags of the Supported header."""
        return _option_tags(self.headers.get_all("supported"))

    def _start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        """The wire form; Content-Length is always written and always matches the body."""
        items = self.headers._items
        if type(self.body) is bytes:  # ASCII text: in one native pass
            wire = serialize(self._start_line(), items, self.body)
            if wire is not None:
                return wire
        out = [self._start_line()]
        out += [f"{name}: {value}" for name, key, value in items if key != "content-length"]
        try:
            first = [item[1] for item in items].index("content-length")
        except ValueError:
            out.append(f"Content-Length: {len(self.body)}")
        else:  # where the first one was (every line before it is in out), the others dropped
            out.insert(first + 1, f"{items[first][0]}: {len(self.body)}")
        out.append("")
        out.append("")
        return "\r\n".join(out).encode("utf-8", "surrogateescape") + self.body

    def _comparable_headers(self) -> list[tuple[str, str]]:
        return [(k, v) for _, k, v in self.headers._items if k != "content-length"]


def _option_tags(values: list[str]) -> list[str]:
    return [v.strip(" \t") for v in values if v.strip(" \t")]


class Request(_Message):
    """A SIP request. ``uri`` is parsed on first access (the wire text is kept until then)."""

    __slots__ = ("_uri", "_uri_parsed_as", "_uri_text", "method")

    def __init__(
        self,
        method: str,
        uri: Uri | str,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
        *,
        version: str = SIP_VERSION,
    ) -> None:
        if TOKEN_RE.match(method) is None:
            raise ValueError(f"method {method!r} is not a token")
        if not isinstance(uri, Uri) and (not uri or _CTL_OR_SPACE_RE.search(uri) is not None):
            raise ValueError(f"Request-URI {uri!r} is empty or holds whitespace or controls")
        self.method = method
        self._uri_parsed_as = ""
        if isinstance(uri, Uri):
            self._uri: Uri | None = uri
            self._uri_text = ""
        else:
            self._uri = None
            self._uri_text = uri
        self.headers = headers if isinstance(headers, Headers) else Headers(headers or ())
        self.body = body
        self.version = version

    @property
    def uri(self) -> Uri:
        """The Request-URI."""
        if self._uri is None:
            self._uri = Uri.parse(self._uri_text)
            self._uri_parsed_as = str(self._uri)
        return self._uri

    @uri.setter
    def uri(self, value: Uri) -> None:
        self._uri = value
        self._uri_text = self._uri_parsed_as = ""

    @property
    def uri_text(self) -> str:
        """The Request-URI as it will be written."""
        if self._uri is None:
            return self._uri_text
        # the wire text survives until the parsed URI is changed (scheme case, escapes...)
        text = str(self._uri)
        return self._uri_text if text == self._uri_parsed_as and self._uri_text else text

    def _start_line(self) -> str:
        return f"{self.method} {self.uri_text} {self.version}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (
            self.method == other.method
            and self.uri_text == other.uri_text
            and self.version.upper() == other.version.upper()
            and self.body == other.body
            and self._comparable_headers() == other._comparable_headers()
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri_text}>"


class Response(_Message):
    """A SIP response."""

    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
        *,
        version: str = SIP_VERSION,
    ) -> None:
        if not 100 <= status <= 699:
            raise ValueError(f"status code {status} out of range")
        if reason is not None and ("\r" in reason or "\n" in reason):
            raise ValueError("reason phrase contains CR or LF")
        self.status = status
        self.reason = REASON_PHRASES.get(status, "") if reason is None else reason
        self.headers = headers if isinstance(headers, Headers) else Headers(headers or ())
        self.body = body
        self.version = version

    def _start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (
            self.status == other.status
            and self.reason == other.reason
            and self.version.upper() == other.version.upper()
            and self.body == other.body
            and self._comparable_headers() == other._comparable_headers()
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


Message = Request | Response
"""Either kind of SIP message (what :func:`parse_message` returns)."""


# -- scalar header values -----------------------------------------------------------------


def _cap32(digits: str) -> int:
    # delta-seconds beyond 2**32-1 mean 2**32-1 (and int() of a huge string is never tried)
    digits = digits.lstrip("0") or "0"
    return 2**32 - 1 if len(digits) > 10 else min(int(digits), 2**32 - 1)


def _parse_call_id(value: str) -> str:
    if not value or " " in value or "\t" in value:
        raise SipParseError(f"bad Call-ID {value!r}")
    return value


def _parse_cseq(value: str) -> tuple[int, str]:
    parsed = parse_cseq(value)  # the common shape, natively
    if parsed is not None:
        return parsed
    number, _, method = value.partition(" ")
    if not (number.isdigit() and number.isascii() and method in _KNOWN_METHODS):
        # anything but "digits SP known-method": the grammar's regex
        m = _CSEQ_RE.match(value)
        if m is None:
            raise SipParseError(f"bad CSeq {value!r}")
        number, method = m.groups()
    digits = number.lstrip("0") or "0"
    # the length check first: int() of thousands of digits is slow and then refused
    if len(digits) > 10 or int(digits) > _CSEQ_MAX:
        raise SipParseError(f"CSeq number {digits[:40]} exceeds 2**31-1")
    return int(digits), method


def _parse_content_length(values: list[str]) -> int:
    if len(values) != 1:
        raise SipParseError("multiple Content-Length headers")
    value = values[0]
    if not (value.isdigit() and value.isascii()):  # [0-9]+
        raise SipParseError(f"bad Content-Length {value!r}")
    if len(value.lstrip("0")) > 10:
        raise SipParseError(f"Content-Length {value[:40]} too large", 513)
    return int(value)


# -- parsing --------------------------------------------------------------------------------


# header names already seen and checked as tokens -> lookup key (bounded: names come from peers)
_NAME_KEYS: dict[str, str] = {}
_new_headers = object.__new__


def _skip_crlf(data: bytes) -> int:
    # RFC 3261 §7.5: CRLFs before the start line are ignored (also keepalives, RFC 5626)
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    return start


def _refuse_excess_lines(data: bytes, start: int, limits: ParseLimits, status: int | None) -> None:
    # Before the header block is searched for its end, decoded or split: find the CRLF that
    # ends header line max_headers (the start line ends at the first one), in C, stopping
    # there. Header line max_headers + 1 exists when that CRLF is not the block's end and
    # something other than the empty line follows it. A flood of lines is thus refused after
    # reading max_headers + 1 of them (a hostile peer's 7,638-line datagrams cost 7.7 ms
    # each in the stream framer's per-line loop before this check).
    last = nth_crlf(data, start, len(data), limits.max_headers + 1)
    if last < 0 or data.find(b"\r\n\r\n", start, last + 4) >= 0:
        return
    following = data[last + 2 : last + 4]
    if following and following != b"\r":  # not (the start of) the empty line
        raise SipParseError(f"more than {limits.max_headers} header field lines", status)


def message_length(
    buffer: bytes | bytearray, *, limits: ParseLimits = DEFAULT_LIMITS
) -> int | None:
    """Stream framing: the number of octets of ``buffer`` taken by the first message
    (including CRLFs before it), or ``None`` while more data is needed.

    Raises :class:`SipParseError` when the stream cannot be framed (no or bad Content-Length,
    message over ``limits.max_message_size``); the connection should then be closed.
    """
    if isinstance(buffer, bytearray):
        buffer = bytes(buffer)  # the native line counter takes bytes
    start = _skip_crlf(buffer)
    _refuse_excess_lines(buffer, start, limits, 400)
    end = buffer.find(b"\r\n\r\n", start)
    if end < 0:
        if len(buffer) - start > limits.max_message_size:
            raise SipParseError("header block exceeds the message size limit", 513)
        return None
    lengths: list[str] = []
    for line in buffer[start:end].split(b"\r\n")[1:]:
        colon = line.find(b":")
        if colon > 0 and line[:1] not in b" \t":
            name = line[:colon].rstrip(b" \t").decode("latin-1")
            if header_key(name) == "content-length":
                lengths.append(line[colon + 1 :].strip(b" \t").decode("latin-1"))
    if not lengths:
        raise SipParseError("Content-Length is required on a stream transport")
    total = end + 4 + _parse_content_length(lengths)
    if total - start > limits.max_message_size:
        raise SipParseError("message exceeds the size limit", 513)
    return total if len(buffer) >= total else None


def _split_general(
    data: bytes, start: int, end: int, limits: ParseLimits, drop_status: int | None
) -> tuple[str, list[tuple[str, str, str]]]:
    # the header block loop that names every error (pbxcore._sipscan.split_headers gives
    # the same triples for the blocks it accepts)
    head = data[start:end].decode("utf-8", "surrogateescape")
    lines = head.split("\r\n")
    n_lines = len(lines)
    if head.count("\n") != n_lines - 1 or head.count("\r") != n_lines - 1:
        raise SipParseError("bare CR or LF in the header block", drop_status)
    # no line is longer than the block: the per-line lengths only when the block is long
    if len(head) > limits.max_line_length and max(map(len, lines)) > limits.max_line_length:
        raise SipParseError(
            f"a header line exceeds {limits.max_line_length} characters", drop_status
        )

    items: list[tuple[str, str, str]] = []
    append = items.append
    name_keys = _NAME_KEYS
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        key = name_keys.get(name)
        if key is None or not colon:
            # rare path: folding, whitespace before ':', a name not seen yet, errors
            if line[:1] in (" ", "\t"):
                if not items or not line.strip(" \t"):
                    raise SipParseError("continuation line without a header field", drop_status)
                name, key, value = items[-1]
                # folding: CRLF+WSP is equivalent to the WSP (RFC 3261 §7.3.1)
                items[-1] = (name, key, (value + line).strip(" \t") if value else line.strip(" \t"))
                continue
            if not colon:
                raise SipParseError(f"malformed header line {line[:60]!r}", drop_status)
            stripped = name.rstrip(" \t")
            if TOKEN_RE.match(stripped) is None:
                raise SipParseError(f"header name {stripped[:60]!r} is not a token", drop_status)
            key = header_key(stripped)
            if stripped == name and len(name_keys) < 4096:
                name_keys[name] = key  # a checked name: skip the regex next time
            name = stripped
        append((name, key, value.strip(" \t")))
    return lines[0], items


def parse_message(
    data: bytes, *, stream: bool = False, limits: ParseLimits = DEFAULT_LIMITS
) -> Request | Response:
    """Parse one SIP message.

    Datagram (``stream=False``): the body is ``Content-Length`` octets, or the rest of the
    datagram without one; octets beyond ``Content-Length`` are ignored (RFC 3261 §18.3).
    Stream (``stream=True``): ``data`` is exactly one framed message (see
    :func:`message_length`); ``Content-Length`` is mandatory.

    Only the start line, the header field lines and Content-Length are checked here; header
    values are parsed when accessed (call :func:`validate_request` /
    :func:`validate_response` for the checks a UAS makes). Raises :class:`SipParseError`
    and nothing else; ``status`` is ``None`` for a response (drop it).
    """
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SipParseError("SIP message must be bytes")
        data = bytes(data)
    start = _skip_crlf(data) if data.startswith(b"\r\n") else 0
    if len(data) - start > limits.max_message_size:
        raise SipParseError(
            f"message of {len(data) - start} octets exceeds the limit of {limits.max_message_size}",
            513,
        )
    is_response = data.startswith(b"SIP/", start) or data.startswith(b"sip/", start)
    drop_status: int | None = None if is_response else 400
    if start == len(data):
        raise SipParseError("empty message (keepalive)", None)
    # max_headers + 1 lines after the start line need 3 octets each at least ("x" CRLF, no
    # empty line before the end of the block) and one octet after them
    if len(data) - start > 3 * (limits.max_headers + 1):
        _refuse_excess_lines(data, start, limits, drop_status)
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        # a start line with no header fields at all still needs the empty line
        if data.endswith(b"\r\n") and data.find(b"\r\n", start) == len(data) - 2:
            raise SipParseError("message has no header fields", drop_status)
        raise SipParseError("header block not terminated by an empty line", drop_status)
    # one native pass splits the block into (name, key, value) triples; anything unusual
    # (bare CR/LF, long lines, malformed lines) is left to the loop below, which explains it
    split = split_headers(data, start, end, limits.max_line_length)
    if split is not None:
        first, items, lengths = split
    else:
        first, items = _split_general(data, start, end, limits, drop_status)
        lengths = [v for _, k, v in items if k == "content-length"]

    body_start = end + 4
    available = len(data) - body_start
    if lengths:
        try:
            length = _parse_content_length(lengths)
        except SipParseError as exc:
            raise SipParseError(exc.reason, None if is_response else exc.status) from None
        if length > available:
            raise SipParseError(
                f"Content-Length {length} exceeds the {available} octets received", drop_status
            )
        if stream and length < available:
            raise SipParseError("octets after the message on a stream transport", drop_status)
        body = data[body_start : body_start + length]
    elif stream:
        raise SipParseError("Content-Length is required on a stream transport", drop_status)
    else:
        body = data[body_start:]

    headers = _new_headers(Headers)  # Headers._trusted, inline
    headers._items = items
    headers._cache = {}
    if is_response:
        return _parse_status_line(first, headers, body)
    return _parse_request_line(first, headers, body)


def _parse_status_line(line: str, headers: Headers, body: bytes) -> Response:
    parts = line.split(" ", 2)
    if len(parts) < 3:
        raise SipParseError(f"malformed status line {line[:80]!r}", None)
    version, code, reason = parts
    if _VERSION_RE.match(version) is None or version.upper() != SIP_VERSION:
        raise SipParseError(f"unsupported version {version[:20]!r}", None)
    if len(code) != 3 or not code.isdigit() or not code.isascii() or not "100" <= code <= "699":
        raise SipParseError(f"bad status code {code[:20]!r}", None)
    response = Response.__new__(Response)
    response.status = int(code)
    response.reason = reason
    response.headers = headers
    response.body = body
    response.version = version
    return response


def _parse_request_line(line: str, headers: Headers, body: bytes) -> Request:
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(f"malformed request line {line[:80]!r}")
    method, uri, version = parts
    # the common case skips the regexes: a known method, a sip: URI, SIP/2.0
    if method not in _KNOWN_METHODS and TOKEN_RE.match(method) is None:
        raise SipParseError(f"method {method[:40]!r} is not a token")
    if "\t" in uri or (
        not uri.startswith(("sip:", "sips:")) and _SCHEME_PREFIX_RE.match(uri) is None
    ):
        raise SipParseError(f"malformed Request-URI {uri[:80]!r}")
    if version != SIP_VERSION:
        if _VERSION_RE.match(version) is None:
            raise SipParseError(f"malformed SIP version {version[:20]!r}")
        if version.upper() != SIP_VERSION:
            raise SipParseError(f"SIP version {version} not supported", 505)
    request = Request.__new__(Request)
    request.method = method
    request._uri = None
    request._uri_text = uri
    request._uri_parsed_as = ""
    request.headers = headers
    request.body = body
    request.version = version
    return request


# -- UAS checks -----------------------------------------------------------------------------


def _check_common(message: Request | Response, status: int | None) -> None:
    keys = [item[1] for item in message.headers._items]
    counts = set(keys)
    for key in _REQUIRED:
        if key not in counts:
            raise SipParseError(f"missing {_DISPLAY_NAMES[key]} header", status)
    if len(counts) != len(keys):  # some header repeats: is it one that must not?
        for key in _SINGLE_VALUED:
            if keys.count(key) > 1:
                raise SipParseError(f"multiple {_DISPLAY_NAMES[key]} headers", status)
    try:
        message.via  # noqa: B018 - parse every Via
        message.from_  # noqa: B018
        message.to  # noqa: B018
        message.call_id  # noqa: B018
        message.cseq  # noqa: B018
        # the optional ones only when present (saves a scan each on the hot path)
        if "max-forwards" in counts:
            message.max_forwards  # noqa: B018
        if "contact" in counts:
            message.contact  # noqa: B018
        if "expires" in counts:
            message.expires  # noqa: B018
        if "route" in counts:
            message.route  # noqa: B018
        if "record-route" in counts:
            message.record_route  # noqa: B018
    except SipParseError as exc:
        if exc.status == status:
            raise
        raise SipParseError(exc.reason, status) from None


def validate_request(
    request: Request,
    *,
    supported: Collection[str] = (),
    schemes: Collection[str] = ("sip", "sips", "tel"),
    proxy: bool = False,
) -> None:
    """The checks a UAS makes before acting on a request (RFC 3261 §8.2.1-§8.2.2).

    Raises :class:`SipParseError` whose ``status`` is the response to send: 400 for missing,
    repeated or malformed mandatory headers, a CSeq method that differs from the request's,
    a CSeq above 2**31-1 or a malformed Request-URI; 416 for a Request-URI scheme outside
    ``schemes``; 420 (``unsupported`` lists the tags) for Require option tags not in
    ``supported`` (Proxy-Require too with ``proxy=True``). Max-Forwards 0 is left to the
    caller (483 is a proxy's answer); a missing Max-Forwards is tolerated (RFC 2543 peers).
    """
    _check_common(request, 400)
    try:
        uri = request.uri
    except SipParseError as exc:
        raise SipParseError(f"bad Request-URI: {exc.reason}") from None
    if uri.scheme not in schemes:
        raise SipParseError(f"URI scheme {uri.scheme!r} not supported", 416)
    if uri.is_sip and uri.headers:
        raise SipParseError("headers are not allowed in a SIP Request-URI")
    if request.cseq[1] != request.method:
        raise SipParseError(
            f"CSeq method {request.cseq[1]!r} does not match request method {request.method!r}"
        )
    if request.method in ("ACK", "CANCEL"):
        return  # RFC 3261 §8.2.2.3: never rejected for Require
    tags = request.require + (request.proxy_require if proxy else [])
    unsupported = [tag for tag in tags if tag not in supported]
    if unsupported:
        raise SipParseError(
            f"unsupported extension(s): {', '.join(unsupported)}", 420, unsupported=unsupported
        )


def validate_response(response: Response) -> None:
    """The checks a UAC makes before accepting a response; a failure means "drop it"
    (:class:`SipParseError` with ``status`` None)."""
    _check_common(response, None)


# -- building responses ---------------------------------------------------------------------


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> Response:
    """A response to ``request`` per RFC 3261 §8.2.6: Via (all of them, in order), From,
    To (with ``to_tag`` added unless the To already has a tag), Call-ID and CSeq copied;
    Record-Route copied into 1xx/2xx answers to dialog-creating requests, Timestamp into
    100 Trying; ``headers`` appended; Content-Length written on serialization."""
    items: list[tuple[str, str, str]] = []
    copy_route = 100 < status < 300 and request.method in _DIALOG_METHODS
    for item in request.headers._items:
        key = item[1]
        if (
            key in _COPIED_HEADERS
            or (key == "record-route" and copy_route)
            or (key == "timestamp" and status == 100)  # RFC 3261 §8.2.6.1
        ):
            items.append(item)
        elif key == "to":
            if to_tag is not None and status != 100:
                try:
                    has_tag = request.to.tag is not None
                except SipParseError:
                    has_tag = "tag=" in item[2]
                if not has_tag:
                    items.append((item[0], key, f"{item[2]};tag={to_tag}"))
                    continue
            items.append(item)
    response_headers = Headers._trusted(items)
    if headers is not None:
        response_headers.extend(headers.items() if isinstance(headers, Mapping) else headers)
    return Response(status, reason, response_headers, body)
