"""Pure-Python reference of :mod:`pbxcore._sipscan` (the REGISTER fast path's scanner and
the general parser's header-count guard, :func:`nth_crlf`).

:func:`scan_register` recognises the plain REGISTER (see :mod:`pbxcore.sip.fastpath`) and
returns its fields, or None for anything else. The native module must accept exactly the
same messages and return exactly the same fields; the tests hold both to that.
"""

from __future__ import annotations

import re

__all__ = [
    "COMPACT",
    "Fields",
    "NameAddr",
    "all_values",
    "first_value",
    "nth_crlf",
    "parse_cseq",
    "parse_name_addr",
    "parse_via",
    "scan_register",
    "serialize",
    "split_headers",
]

# branch, via host, via port, rport, To user, To host, Call-ID, CSeq number, Contact URI,
# Contact expires, Expires, Authorization's digest parameters (unquoted), User-Agent,
# copied (name, value) in order
Fields = tuple[
    str,
    str,
    int | None,
    bool,
    str,
    str,
    str,
    int,
    str,
    int | None,
    int | None,
    dict[str, str] | None,
    str | None,
    list[tuple[str, str]],
]

MAX_SIZE = 4096

# a conservative subset of the grammar: what does not match goes to the general parser
_TOKEN = r"[A-Za-z0-9.!%*_+`'~-]+"
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,62}[A-Za-z0-9])?"
_USER = r"[A-Za-z0-9._~-]{1,64}"
_PORT = r"[1-9][0-9]{0,4}"
_REQUEST_LINE = re.compile(rf"REGISTER sip:{_HOST} SIP/2\.0")
_HEADER_LINE = re.compile(r"([A-Za-z-]+): ([ -~]*)\r\n")
_VIA = re.compile(rf"SIP/2\.0/UDP ({_HOST})(?::({_PORT}))?;branch=(z9hG4bK{_TOKEN})(;rport)?")
_FROM = re.compile(rf"<sip:{_USER}@{_HOST}>;tag={_TOKEN}")
_TO = re.compile(rf"<sip:({_USER})@({_HOST})>")
_CALL_ID = re.compile(rf"{_TOKEN}(?:@{_TOKEN})?")
_CSEQ = re.compile(r"([0-9]{1,9}) REGISTER")
_CONTACT = re.compile(rf"<(sip:{_USER}@{_HOST}(?::({_PORT}))?)>(?:;expires=([0-9]{{1,9}}))?")
_SMALL_INT = re.compile(r"[0-9]{1,9}")
_DIGEST_PARAM = re.compile(r'([a-z]+)=(?:"([^"]*)"|([^ ,"]+))')
_DIGEST = re.compile(r'Digest [a-z]+=(?:"[^"\\]*"|[^ ,"]+)(?:, ?[a-z]+=(?:"[^"\\]*"|[^ ,"]+))*')

# header names the fast path understands, as RFC 3261 spells them; any other header (or
# spelling) sends the request to the general path (Require, Route, compact forms, ...)
COPIED = frozenset(("Via", "From", "To", "Call-ID", "CSeq"))
_MANDATORY = COPIED | {"Contact"}
_KNOWN = _MANDATORY | {
    "Max-Forwards",
    "Expires",
    "Content-Length",
    "Authorization",
    "User-Agent",
    "Allow",
    "Supported",
}


def scan_register(data: bytes) -> Fields | None:
    """The fields of the plain REGISTER in ``data``, or None if it is not one."""
    if len(data) > MAX_SIZE or not data.endswith(b"\r\n\r\n"):
        return None  # a body, or a message the general parser must judge
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    end = text.find("\r\n")
    if _REQUEST_LINE.fullmatch(text, 0, end) is None:
        return None
    # every line is one header (printable ASCII, no folding), each known and present once
    pairs = _HEADER_LINE.findall(text, end + 2, len(text) - 2)
    fields = dict(pairs)
    if (
        sum(len(name) + len(value) + 4 for name, value in pairs) != len(text) - end - 4
        or len(fields) != len(pairs)
        or not _KNOWN.issuperset(fields)
        or not _MANDATORY.issubset(fields)
    ):
        return None
    via = _VIA.fullmatch(fields["Via"])
    to = _TO.fullmatch(fields["To"])
    cseq = _CSEQ.fullmatch(fields["CSeq"])
    contact = _CONTACT.fullmatch(fields["Contact"])
    if (
        via is None
        or to is None
        or cseq is None
        or contact is None
        or _FROM.fullmatch(fields["From"]) is None
        or _CALL_ID.fullmatch(fields["Call-ID"]) is None
    ):
        return None
    port = int(via[2]) if via[2] else None
    if (port is not None and port > 65535) or (contact[2] and int(contact[2]) > 65535):
        return None
    authorization = fields.get("Authorization")
    params: dict[str, str] | None = None
    if authorization is not None:
        if _DIGEST.fullmatch(authorization) is None:
            return None
        params = {}
        for name, quoted, bare in _DIGEST_PARAM.findall(authorization, 7):
            if name in params:
                return None  # a repeated parameter: the general path answers 400
            params[name] = quoted or bare
    if fields.get("Content-Length", "0") != "0":
        return None
    max_forwards = fields.get("Max-Forwards")
    if max_forwards is not None and (
        _SMALL_INT.fullmatch(max_forwards) is None or int(max_forwards) > 255
    ):
        return None
    expires = fields.get("Expires")
    if expires is not None and _SMALL_INT.fullmatch(expires) is None:
        return None
    for name in ("User-Agent", "Allow", "Supported"):  # free text: no edge spaces
        value = fields.get(name)
        if value is not None and value != value.strip(" "):
            return None
    return (
        via[3],
        via[1],
        port,
        via[4] is not None,
        to[1],
        to[2],
        fields["Call-ID"],
        int(cseq[1]),
        contact[1],
        int(contact[3]) if contact[3] else None,
        None if expires is None else int(expires),
        params,
        fields.get("User-Agent"),
        [pair for pair in pairs if pair[0] in COPIED],
    )


def nth_crlf(data: bytes, start: int, end: int, n: int) -> int:
    """The offset of the ``n``-th CRLF (its CR) in ``data[start:end]``, or -1 if there are
    fewer; the scan stops there."""
    if start < 0 or n < 1:
        raise ValueError("start must not be negative and n must be positive")
    end = min(end, len(data))
    if start >= end:
        return -1
    pos = start - 2
    for _ in range(n):
        pos = data.find(b"\r\n", pos + 2, end)
        if pos < 0:
            return -1
    return pos


# compact form -> key (pbxcore.sip.headers.COMPACT_FORMS; a test holds them equal)
COMPACT = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}
_FIELD_NAME = re.compile(rb"([A-Za-z0-9.!%*_+`'~-]+)[ \t]*:")


def split_headers(
    data: bytes, start: int, end: int, max_line: int
) -> tuple[str, list[tuple[str, str, str]], list[str]] | None:
    """The start line, the (name, key, value) triples of the header block ``data[start:end]``
    (``end``: where its CRLFCRLF begins) and the Content-Length values, or None when the
    general loop of :func:`pbxcore.sip.parse_message` must decide.

    A triple is the name as written (without the whitespace before the colon), its key (lower
    case, compact form expanded) and the value without surrounding SP/HT; a continuation line
    (one starting with SP/HT) is joined to the value before it, its leading whitespace kept
    (RFC 3261 §7.3.1). None for: a bare CR or LF, a physical line over ``max_line`` octets
    (the general loop counts characters), a continuation line with nothing to continue or
    nothing in it, a line without a colon, a name that is not a token.
    """
    if start < 0 or end > len(data) - 2 or start > end:
        raise ValueError("the block must lie inside data and end before a CRLF")
    lines = data[start:end].split(b"\r\n")
    if any(b"\r" in line or b"\n" in line or len(line) > max_line for line in lines):
        return None
    items: list[tuple[str, str, str]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            if not items or not line.strip(b" \t"):
                return None
            name, key, value = items[-1]
            text = line.rstrip(b" \t") if value else line.strip(b" \t")
            items[-1] = (name, key, value + text.decode("utf-8", "surrogateescape"))
            continue
        m = _FIELD_NAME.match(line)
        if m is None:
            return None
        name = m[1].decode("ascii")
        key = name.lower()
        key = COMPACT.get(key, key)
        value = line[m.end() :].strip(b" \t").decode("utf-8", "surrogateescape")
        items.append((name, key, value))
    lengths = [value for _, key, value in items if key == "content-length"]
    return lines[0].decode("utf-8", "surrogateescape"), items, lengths


# -- the common Via and name-addr shapes ---------------------------------------------------

# display name, scheme, user, password, host, port, URI parameters, header parameters
NameAddr = tuple[
    str | None,
    str,
    str | None,
    str | None,
    str,
    int | None,
    dict[str, str | None],
    dict[str, str | None],
]

_PARAM_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_PVALUE = r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+"
_HEADER_PARAMS = rf"((?:;{_PARAM_TOKEN}(?:={_PVALUE})?)*)"
_HOSTNAME = r"([A-Za-z0-9_][A-Za-z0-9_\-.]*)(?::([0-9]{1,5}))?"
_PLAIN = r"[A-Za-z0-9\-_.!~*'()&=+$,%]"
_PCHAR = r"[^;?=@\x00-\x20\x7f<>\"]"
_VIA_SHAPE = re.compile(rf"SIP/2\.0/([A-Z]+) {_HOSTNAME}{_HEADER_PARAMS}\Z")
_NAME_ADDR_SHAPE = re.compile(
    rf'[ \t]*(?:"([^"\\]*)"[ \t]*)?<(sips?):(?:({_PLAIN}+)(?::({_PLAIN}*))?@)?{_HOSTNAME}'
    rf"((?:;{_PCHAR}+(?:={_PCHAR}*)?)*)>{_HEADER_PARAMS}\Z"
)


def _params(text: str, separator: str = ";") -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    if text:
        for item in text[1:].split(separator):
            name, eq, value = item.partition("=")
            params[name] = value if eq else None
    return params


def parse_via(value: str) -> tuple[str, str, int | None, dict[str, str | None]] | None:
    """(transport, host, port, params) of ``SIP/2.0/TRANSPORT host[:port];params``: upper-
    case transport, a hostname or IPv4 address, a port of at most 65535, parameters without
    whitespace or quoted values (in order, a repeated name keeping its last value; None for
    a valueless one). None for anything else (ASCII only): the general parser decides."""
    if not value.isascii():
        return None
    m = _VIA_SHAPE.match(value)
    if m is None:
        return None
    transport, host, port, params = m.groups()
    if port is not None and int(port) > 65535:
        return None
    return transport, host, None if port is None else int(port), _params(params)


def parse_name_addr(value: str) -> NameAddr | None:
    """The parts of ``["display"] <sip[s]:[user[:password]@]host[:port];uri-params>;params``:
    a quoted display name without escapes, a hostname or IPv4 address, a port of at most
    65535, URI parameters of printable characters (``name[=value]``), header parameters as
    in :func:`parse_via`. None for anything else (ASCII only): the general parser decides."""
    if not value.isascii():
        return None
    m = _NAME_ADDR_SHAPE.match(value)
    if m is None:
        return None
    display, scheme, user, password, host, port, uri_params, params = m.groups()
    if port is not None and int(port) > 65535:
        return None
    return (
        display,
        scheme,
        user,
        password,
        host,
        None if port is None else int(port),
        _params(uri_params),
        _params(params),
    )


def serialize(start_line: str, items: list[tuple[str, str, str]], body: bytes) -> bytes | None:
    """The wire form of a message: the start line, each (name, key, value) field line as
    ``name: value``, the empty line and the body. Content-Length always matches the body:
    written where the first one was (with its name), the others dropped, or added at the
    end. None when some text is not ASCII (the caller encodes it)."""
    if not start_line.isascii() or not all(n.isascii() and v.isascii() for n, _, v in items):
        return None
    out = [start_line]
    seen = False
    for name, key, value in items:
        if key == "content-length":
            if seen:
                continue
            seen = True
            out.append(f"{name}: {len(body)}")
        else:
            out.append(f"{name}: {value}")
    if not seen:
        out.append(f"Content-Length: {len(body)}")
    out.append("")
    out.append("")
    return "\r\n".join(out).encode("ascii") + body


def first_value(items: list[tuple[str, str, str]], key: str) -> str | None:
    """The value of the first (name, key, value) triple with this key, or None."""
    for _, k, value in items:
        if k == key:
            return value
    return None


def all_values(items: list[tuple[str, str, str]], key: str) -> list[str]:
    """The values of every (name, key, value) triple with this key, in order."""
    return [value for _, k, value in items if k == key]


_CSEQ_SHAPE = re.compile(r"([0-9]{1,10}) ([A-Za-z0-9.!%*_+`'~-]+)\Z")


def parse_cseq(value: str) -> tuple[int, str] | None:
    """(number, method) of ``DIGITS SP TOKEN`` with at most 10 digits and a number up to
    2**31-1, or None for anything else (the general parser decides)."""
    m = _CSEQ_SHAPE.match(value)
    if m is None or int(m[1]) > 2**31 - 1:
        return None
    return int(m[1]), m[2]
