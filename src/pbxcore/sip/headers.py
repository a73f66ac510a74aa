"""SIP header fields: the ordered header list, name-addr values and Via (RFC 3261 §7.3, §20)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from pbxcore._sipscan import all_values, parse_name_addr, parse_via
from pbxcore.sip.errors import SipParseError
from pbxcore.sip.uri import FAST_SIP_PATTERN, Uri, _fast_sip_uri, format_host, parse_hostport

__all__ = [
    "BRANCH_MAGIC",
    "Address",
    "Headers",
    "Via",
    "header_key",
    "new_branch",
    "new_tag",
    "split_list",
]

T = TypeVar("T")

BRANCH_MAGIC = "z9hG4bK"

# compact form -> full name (RFC 3261 §7.3.3 and the IANA SIP header registry)
COMPACT_FORMS: dict[str, str] = {
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

# headers whose value is a comma-separated list (element per comma outside quotes and <>);
# Authorization, WWW-Authenticate, Date etc. hold commas that do not separate values
LIST_HEADERS = frozenset(
    {
        "accept",
        "accept-contact",
        "accept-encoding",
        "accept-language",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "error-info",
        "history-info",
        "in-reply-to",
        "p-asserted-identity",
        "p-preferred-identity",
        "path",
        "proxy-require",
        "reason",
        "record-route",
        "reject-contact",
        "require",
        "route",
        "security-client",
        "security-server",
        "security-verify",
        "service-route",
        "supported",
        "unsupported",
        "via",
        "warning",
    }
)

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
TOKEN_RE = re.compile(_TOKEN + r"\Z")
_WS = "[ \t]*"
# ;name[=value] with LWS around ';' and '='; value = token / host (IPv6 with or without
# brackets, RFC 5118 §4.5) / quoted-string
_PVALUE = r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+"
_PARAM_RE = re.compile(
    rf'{_WS};{_WS}({_TOKEN})(?:{_WS}={_WS}("(?:[^"\\]|\\.)*"|{_PVALUE}))?',
    re.DOTALL,
)
# parameters without LWS or quoted values, to the end of the text
_SIMPLE_PARAMS_RE = re.compile(rf"(?:;{_TOKEN}(?:={_PVALUE})?)*\Z")
_QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_UNQUOTE_RE = re.compile(r"\\(.)", re.DOTALL)
_VIA_RE = re.compile(
    rf"{_WS}({_TOKEN}){_WS}/{_WS}({_TOKEN}){_WS}/{_WS}({_TOKEN})[ \t]+"
    rf"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+)(?:{_WS}:{_WS}([0-9]+))?"
)
# the common Via: SIP/2.0/TRANSPORT hostname-or-IPv4[:port] then simple parameters
_FAST_VIA_RE = re.compile(
    rf"SIP/2\.0/([A-Z]+) ([A-Za-z0-9_][A-Za-z0-9_\-.]*)(?::([0-9]{{1,5}}))?"
    rf"((?:;{_TOKEN}(?:={_PVALUE})?)*)\Z"
)
# the common shape: optional quoted display name without escapes, then <uri>
_FAST_ADDR_RE = re.compile(r'[ \t]*(?:"([^"\\]*)"[ \t]*)?<([^>]*)>')
# the commonest of all: ["name"] <sip URI of the URI fast path>;simple params, in one match
_FAST_NAME_ADDR_RE = re.compile(
    rf'[ \t]*(?:"([^"\\]*)"[ \t]*)?<{FAST_SIP_PATTERN}>((?:;{_TOKEN}(?:={_PVALUE})?)*)\Z'
)
_ADDR_SPEC_END_RE = re.compile(r"[; \t]")
_LWS_RE = re.compile(r"[ \t]+")

_KEY_CACHE: dict[str, str] = {}
_new = object.__new__  # the fast paths build their objects field by field
_MISSING = object()


def header_key(name: str) -> str:
    """The canonical lookup key of a header name: lower case, compact form expanded."""
    key = _KEY_CACHE.get(name)
    if key is None:
        lower = name.lower()
        key = COMPACT_FORMS.get(lower, lower)
        if len(_KEY_CACHE) < 4096:  # names come from the network: bound the memo
            _KEY_CACHE[name] = key
    return key


def split_list(value: str) -> list[str]:
    """Split a header value at the commas that separate list elements (not inside a quoted
    string or <...>); elements are stripped of surrounding whitespace."""
    if "," not in value:
        return [value]
    out: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quotes:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            out.append(value[start:i].strip(" \t"))
            start = i + 1
        i += 1
    out.append(value[start:].strip(" \t"))
    return out


def parse_params(text: str, pos: int, where: str) -> dict[str, str | None]:
    """Parse ``*(;name[=value])`` from ``pos`` to the end of ``text`` (header parameters,
    LWS allowed around the separators); quoted values keep their quotes."""
    if pos >= len(text):
        return {}
    # the common shape (no LWS, no quoted values) is checked by one regex and then split:
    # neither a token nor a plain value holds ';' or '=' (same result as the general loop)
    if _SIMPLE_PARAMS_RE.match(text, pos) is not None:
        params: dict[str, str | None] = {}
        for item in text[pos + 1 :].split(";"):
            name, eq, value = item.partition("=")
            params[name] = value if eq else None
        return params
    return parse_params_general(text, pos, where)


def parse_params_general(text: str, pos: int, where: str) -> dict[str, str | None]:
    """:func:`parse_params` without its fast path (the reference it must agree with)."""
    params: dict[str, str | None] = {}
    n = len(text)
    while pos < n:
        m = _PARAM_RE.match(text, pos)
        if m is None:
            if text[pos:].strip(" \t"):
                raise SipParseError(f"malformed parameters in {where}: {text[pos : pos + 40]!r}")
            break
        params[m.group(1)] = m.group(2)
        pos = m.end()
    return params


def format_params(params: dict[str, str | None]) -> str:
    """``;name=value;flag`` serialization of a parameter dict."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def unquote_value(value: str) -> str:
    """The content of a quoted-string (or the value itself when it is not quoted)."""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        return _UNQUOTE_RE.sub(r"\1", inner) if "\\" in inner else inner
    return value


def _get_param(params: dict[str, str | None], name: str) -> str | None:
    value = params.get(name)
    if value is not None or name in params:
        return value
    lname = name.lower()
    for key, val in params.items():
        if key.lower() == lname:
            return val
    return None


def _has_param(params: dict[str, str | None], name: str) -> bool:
    if name in params:
        return True
    lname = name.lower()
    return any(key.lower() == lname for key in params)


def new_branch() -> str:
    """A fresh RFC 3261 branch parameter (magic cookie plus 64 random bits)."""
    return BRANCH_MAGIC + secrets.token_hex(8)


def new_tag() -> str:
    """A fresh From/To tag (64 random bits)."""
    return secrets.token_hex(8)


class Address:
    """A name-addr or addr-spec with header parameters (From, To, Contact, Route...).

    ``display_name`` is the decoded display name (``None`` if absent); ``params`` are the
    header parameters (``tag``, ``expires``, ``q``...), quoted values kept with their quotes.
    In ``sip:a@b;x=1`` without angle brackets, ``x`` is a header parameter (RFC 3261 §20).
    """

    __slots__ = ("display_name", "params", "uri")

    def __init__(
        self,
        uri: Uri,
        display_name: str | None = None,
        params: dict[str, str | None] | None = None,
    ) -> None:
        self.uri = uri
        self.display_name = display_name
        self.params: dict[str, str | None] = {} if params is None else params

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse a name-addr or addr-spec with parameters; raise :class:`SipParseError`."""
        parts = parse_name_addr(text)  # the commonest shape, in one native pass
        if parts is not None:
            native_uri = _new(Uri)
            address = _new(cls)
            (
                address.display_name,
                native_uri.scheme,
                native_uri.user,
                native_uri.password,
                native_uri.host,
                native_uri.port,
                native_uri.params,
                address.params,
            ) = parts
            native_uri.headers = {}
            native_uri.opaque = None
            address.uri = native_uri
            return address
        m = _FAST_NAME_ADDR_RE.match(text)
        if m is not None:
            groups = m.groups()
            uri = _fast_sip_uri(groups[1:7])
            if uri is not None:
                address = cls.__new__(cls)
                address.display_name = groups[0]
                params = groups[7]
                address.uri = uri
                address.params = {}
                if params:
                    for item in params[1:].split(";"):
                        name, eq, value = item.partition("=")
                        address.params[name] = value if eq else None
                return address
        m = _FAST_ADDR_RE.match(text)
        if m is not None:
            address = cls.__new__(cls)
            address.display_name, uri_text = m.groups()
            address.uri = Uri.parse(uri_text)
            end = m.end()
            address.params = {} if end == len(text) else parse_params(text, end, "address")
            return address
        return cls.parse_general(text)

    @classmethod
    def parse_general(cls, text: str) -> Address:
        """:meth:`parse` without its fast path for ``["name"] <uri>`` (the reference that
        the fast path must agree with)."""
        n = len(text)
        i = 0
        while i < n and text[i] in " \t":
            i += 1
        if i == n:
            raise SipParseError("empty address")
        display: str | None = None
        if text[i] == '"':
            m = _QUOTED_RE.match(text, i)
            if m is None:
                raise SipParseError("unterminated quoted display name")
            inner = m.group(1)
            display = _UNQUOTE_RE.sub(r"\1", inner) if "\\" in inner else inner
            i = m.end()
            while i < n and text[i] in " \t":
                i += 1
            if i == n or text[i] != "<":
                raise SipParseError("quoted display name not followed by <URI>")
        else:
            lt = text.find("<", i)
            # a display name never holds ':', an addr-spec always does (its scheme)
            if lt >= 0 and ":" not in text[i:lt]:
                words = text[i:lt].split()
                for word in words:
                    if TOKEN_RE.match(word) is None:
                        raise SipParseError(f"display name {text[i:lt]!r} needs quoting")
                display = " ".join(words) if words else None
                i = lt
        if text[i] == "<":
            gt = text.find(">", i)
            if gt < 0:
                raise SipParseError("unterminated <URI> in address")
            uri = Uri.parse(text[i + 1 : gt])
            i = gt + 1
        else:
            m2 = _ADDR_SPEC_END_RE.search(text, i)
            end = n if m2 is None else m2.start()
            spec = text[i:end]
            if "?" in spec or "," in spec:
                raise SipParseError("an addr-spec with '?' or ',' must be enclosed in <>")
            uri = Uri.parse(spec)
            i = end
        return cls(uri, display, parse_params(text, i, "address"))

    def __str__(self) -> str:
        if self.display_name is None:
            head = f"<{self.uri}>"
        else:
            quoted = self.display_name.replace("\\", "\\\\").replace('"', '\\"')
            head = f'"{quoted}" <{self.uri}>'
        return head + format_params(self.params) if self.params else head

    def __repr__(self) -> str:
        return f"Address({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Address):
            return NotImplemented
        return (
            self.uri == other.uri
            and self.display_name == other.display_name
            and {k.lower(): v for k, v in self.params.items()}
            == {k.lower(): v for k, v in other.params.items()}
        )

    def __hash__(self) -> int:
        return hash(self.uri)

    def param(self, name: str) -> str | None:
        """A header parameter by case-insensitive name (None if absent or valueless)."""
        return _get_param(self.params, name)

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (From/To)."""
        return _get_param(self.params, "tag")

    @property
    def expires(self) -> int | None:
        """The ``expires`` parameter (Contact); huge values are capped at 2**32-1."""
        value = _get_param(self.params, "expires")
        if value is None:
            return None
        if not value.isdigit() or not value.isascii():
            raise SipParseError(f"bad expires parameter {value[:40]!r}")
        value = value.lstrip("0") or "0"
        return 2**32 - 1 if len(value) > 10 else min(int(value), 2**32 - 1)

    @property
    def q(self) -> float | None:
        """The ``q`` parameter (Contact), 0 to 1."""
        value = _get_param(self.params, "q")
        if value is None:
            return None
        try:
            q = float(value)
        except ValueError:
            raise SipParseError(f"bad q parameter {value!r}") from None
        if not 0.0 <= q <= 1.0:
            raise SipParseError(f"q parameter out of range: {value!r}")
        return q

    def copy(self) -> Address:
        """An independent copy."""
        return Address(self.uri.copy(), self.display_name, dict(self.params))


class Via:
    """One Via header value: ``SIP/2.0/UDP host:port;branch=...;received=...;rport``."""

    __slots__ = ("host", "params", "port", "protocol", "transport", "version")

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        *,
        protocol: str = "SIP",
        version: str = "2.0",
    ) -> None:
        self.transport = transport.upper()
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = {} if params is None else params
        self.protocol = protocol
        self.version = version

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse one via-parm (one element of a Via list); raise :class:`SipParseError`."""
        parts = parse_via(text)  # the commonest shape, in one native pass
        if parts is not None:
            via = _new(cls)
            via.transport, via.host, via.port, via.params = parts
            via.protocol = "SIP"
            via.version = "2.0"
            return via
        m = _FAST_VIA_RE.match(text)
        if m is not None:
            transport, host, port, params = m.groups()
            if port is None or int(port) <= 65535:
                via = cls.__new__(cls)
                via.transport = transport
                via.host = host
                via.port = None if port is None else int(port)
                if params:
                    via.params = {}
                    for item in params[1:].split(";"):
                        name, eq, value = item.partition("=")
                        via.params[name] = value if eq else None
                else:
                    via.params = {}
                via.protocol = "SIP"
                via.version = "2.0"
                return via
        return cls.parse_general(text)

    @classmethod
    def parse_general(cls, text: str) -> Via:
        """:meth:`parse` without its fast path for ``SIP/2.0/T host[:port];params`` (the
        reference that the fast path must agree with)."""
        m = _VIA_RE.match(text)
        if m is None:
            raise SipParseError(f"malformed Via: {text[:80]!r}")
        host, port = parse_hostport(m.group(4), "Via")
        if m.group(5) is not None:
            digits = m.group(5)
            if len(digits) > 5 or int(digits) > 65535:
                raise SipParseError(f"bad port {digits!r} in Via")
            port = int(digits)
        return cls(
            m.group(3),
            host,
            port,
            parse_params(text, m.end(), "Via"),
            protocol=m.group(1),
            version=m.group(2),
        )

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        head = f"{self.protocol}/{self.version}/{self.transport} {format_host(self.host)}{port}"
        return head + format_params(self.params) if self.params else head

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Via):
            return NotImplemented
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def param(self, name: str) -> str | None:
        """A parameter by case-insensitive name (None if absent or valueless)."""
        return _get_param(self.params, name)

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter."""
        return _get_param(self.params, "branch")

    @property
    def has_rfc3261_branch(self) -> bool:
        """The branch starts with the magic cookie and has something after it."""
        branch = self.branch
        return branch is not None and branch.startswith(BRANCH_MAGIC) and len(branch) > 7

    @property
    def received(self) -> str | None:
        """The ``received`` address, without IPv6 brackets."""
        value = _get_param(self.params, "received")
        if value is not None and value.startswith("[") and value.endswith("]"):
            return value[1:-1]
        return value

    @property
    def rport_requested(self) -> bool:
        """Whether the ``rport`` parameter is present (RFC 3581)."""
        return _has_param(self.params, "rport")

    @property
    def rport(self) -> int | None:
        """The ``rport`` value filled in by a server (None if absent or empty)."""
        value = _get_param(self.params, "rport")
        if not value:
            return None
        if len(value) > 5 or not value.isdigit() or not value.isascii() or int(value) > 65535:
            raise SipParseError(f"bad rport {value!r} in Via")
        return int(value)

    @property
    def sent_by(self) -> tuple[str, int | None]:
        """(host, port) as the sender wrote them."""
        return self.host, self.port

    def copy(self) -> Via:
        """An independent copy."""
        return Via(
            self.transport,
            self.host,
            self.port,
            dict(self.params),
            protocol=self.protocol,
            version=self.version,
        )


def _check_field(name: str, value: str) -> None:
    if TOKEN_RE.match(name) is None:
        raise ValueError(f"header name {name!r} is not a token")
    if "\r" in value or "\n" in value:
        raise ValueError(f"header value for {name} contains CR or LF")


class Headers:
    """The ordered header fields of a message.

    Names are matched case-insensitively with compact forms expanded (``v`` is ``Via``).
    Each field line keeps its name and value as received (folding joined), so unknown headers
    pass through untouched. :meth:`get_all` splits comma-separated lists for the headers
    whose grammar is a list (Via, Contact, Route...), never inside quotes or <...>.
    """

    __slots__ = ("_cache", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []
        self._cache: dict[str, object] = {}
        self.extend(items)

    @classmethod
    def _trusted(cls, items: list[tuple[str, str, str]]) -> Headers:
        # (name, key, value) triples from the parser, already checked
        headers = cls.__new__(cls)
        headers._items = items
        headers._cache = {}
        return headers

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((name, value) for name, _, value in self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = header_key(name)
        return any(k == key for _, k, _ in self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for _, k, v in self._items] == [(k, v) for _, k, v in other._items]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def keys(self) -> list[str]:
        """The lookup key (see :func:`header_key`) of every field line, in order."""
        return [k for _, k, _ in self._items]

    def extend(self, items: Iterable[tuple[str, str]]) -> None:
        """Append field lines at the end, in order."""
        new = []
        for name, value in items:
            _check_field(name, value)
            new.append((name, header_key(name), value))
        self._cache.clear()
        self._items.extend(new)

    def items(self) -> list[tuple[str, str]]:
        """All field lines as (name as written, value)."""
        return [(name, value) for name, _, value in self._items]

    def count(self, name: str) -> int:
        """Number of field lines with this name (not list elements)."""
        key = header_key(name)
        return sum(1 for _, k, _ in self._items if k == key)

    def lines(self, name: str) -> list[str]:
        """The values of every field line with this name, unsplit."""
        key = header_key(name)
        return [v for _, k, v in self._items if k == key]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value (first list element for list headers), or ``default``."""
        key = _KEY_CACHE.get(name) or header_key(name)
        for _, k, v in self._items:
            if k == key:
                if key in LIST_HEADERS and "," in v:
                    return split_list(v)[0]
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value in order: one per field line, list headers split at their commas."""
        key = _KEY_CACHE.get(name) or header_key(name)
        values = all_values(self._items, key)
        if key not in LIST_HEADERS:
            return values
        out: list[str] = []
        for v in values:
            if "," in v:
                out.extend(split_list(v))
            else:
                out.append(v)
        return out

    def set(self, name: str, value: str) -> None:
        """Replace every field line of this header by one (at the first one's position)."""
        _check_field(name, value)
        key = header_key(name)
        self._cache.clear()
        for idx, (_, k, _) in enumerate(self._items):
            if k == key:
                self._items[idx] = (name, key, value)
                self._items[idx + 1 :] = [t for t in self._items[idx + 1 :] if t[1] != key]
                return
        self._items.append((name, key, value))

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Add a field line: after the last line of the same header (or at the end), or
        before the first one with ``first=True`` (a proxy's Via, Record-Route)."""
        _check_field(name, value)
        key = header_key(name)
        self._cache.clear()
        item = (name, key, value)
        positions = [idx for idx, t in enumerate(self._items) if t[1] == key]
        if not positions:
            if first:
                self._items.insert(0, item)
            else:
                self._items.append(item)
        elif first:
            self._items.insert(positions[0], item)
        else:
            self._items.insert(positions[-1] + 1, item)

    def remove(self, name: str) -> int:
        """Remove every field line of this header; return how many were removed."""
        key = header_key(name)
        before = len(self._items)
        self._items = [t for t in self._items if t[1] != key]
        self._cache.clear()
        return before - len(self._items)

    def remove_first(self, name: str) -> str | None:
        """Remove the first list element of this header (a proxy popping its Via or a
        Route), dropping the field line when it held only that element."""
        key = header_key(name)
        for idx, (n, k, v) in enumerate(self._items):
            if k == key:
                self._cache.clear()
                parts = split_list(v) if key in LIST_HEADERS and "," in v else [v]
                if len(parts) == 1:
                    del self._items[idx]
                else:
                    self._items[idx] = (n, k, ", ".join(parts[1:]))
                return parts[0]
        return None

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first list element of this header (e.g. the top Via after adding
        ``received``/``rport``), keeping the rest of its field line; add it if absent."""
        _check_field(name, value)
        key = header_key(name)
        for idx, (n, k, v) in enumerate(self._items):
            if k == key:
                self._cache.clear()
                if key in LIST_HEADERS and "," in v:
                    parts = split_list(v)
                    parts[0] = value
                    value = ", ".join(parts)
                self._items[idx] = (n, k, value)
                return
        self.add(name, value)

    def copy(self) -> Headers:
        """An independent copy."""
        return Headers._trusted(list(self._items))

    def memo(self, slot: str, compute: Callable[[], T]) -> T:
        """A value derived from the headers, computed once and forgotten on any change."""
        # a miss is the common case (each slot is computed once per message): no KeyError
        value = self._cache.get(slot, _MISSING)
        if value is _MISSING:
            value = self._cache[slot] = compute()
        return value  # type: ignore[return-value]
