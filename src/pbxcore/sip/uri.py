"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966, RFC 5118 IPv6 references)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, unquote

from pbxcore.sip.errors import SipParseError

__all__ = ["Uri", "escape_user", "unescape"]

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
# hostname or IPv4address; "_" tolerated because real deployments use it in host names
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*)\Z")
# liberal on purpose: RFC 5118 §4.10 asks parsers to tolerate "2001:db8:::192.0.2.1"
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\Z")
# never allowed unescaped anywhere in a URI: whitespace, controls, delimiters of name-addr
_URI_BAD_RE = re.compile(r'[\x00-\x20\x7f<>"]')
_PORT_RE = re.compile(r"[0-9]{1,5}\Z")
# user part characters that stay unescaped in the canonical form (unreserved + user-unreserved)
_USER_SAFE = "-_.!~*'()&=+$,;?/"
_SIP_SCHEMES = frozenset({"sip", "sips"})
# RFC 3261 §19.1.4: these URI parameters must match if present in either URI
_STRICT_PARAMS = ("user", "ttl", "method", "maddr", "transport")


def unescape(text: str) -> str:
    """Percent-decode ``text`` (``%00`` becomes NUL; invalid escapes stay as they are)."""
    if "%" not in text:
        return text
    return unquote(text, encoding="utf-8", errors="surrogateescape")


def escape_user(text: str) -> str:
    """Canonical escaped form of a (decoded) user part: escape only what must be escaped."""
    return quote(text, safe=_USER_SAFE, encoding="utf-8", errors="surrogateescape")


def _parse_port(text: str, where: str) -> int:
    if _PORT_RE.match(text) is None or int(text) > 65535:
        raise SipParseError(f"bad port {text!r} in {where}")
    return int(text)


def parse_hostport(text: str, where: str) -> tuple[str, int | None]:
    """Split ``host[:port]``; IPv6 references come back without their brackets."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise SipParseError(f"unterminated IPv6 reference in {where}")
        host = text[1:close]
        if _IPV6_RE.match(host) is None:
            raise SipParseError(f"bad IPv6 reference {host!r} in {where}")
        rest = text[close + 1 :]
        if not rest:
            return host, None
        if rest[0] != ":":
            raise SipParseError(f"junk after IPv6 reference in {where}")
        return host, _parse_port(rest[1:], where)
    colon = text.find(":")
    host = text if colon < 0 else text[:colon]
    if _HOSTNAME_RE.match(host) is None:
        raise SipParseError(f"bad host {host!r} in {where}")
    if colon < 0:
        return host, None
    return host, _parse_port(text[colon + 1 :], where)


def format_host(host: str) -> str:
    """``host`` as it appears in a URI or Via (IPv6 addresses get brackets)."""
    return f"[{host}]" if ":" in host else host


def _parse_uri_params(text: str, where: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        eq = item.find("=")
        if eq < 0:
            name, value = item, None
        else:
            name, value = item[:eq], item[eq + 1 :]
        if not name:
            raise SipParseError(f"empty parameter name in {where}")
        params[name] = value
    return params


# the common shape of a SIP URI, parsed in one go: lower-case scheme, plain user[:password],
# hostname/IPv4/[IPv6], port, simple parameters, no headers; anything else takes the general path
_PLAIN = r"[A-Za-z0-9\-_.!~*'()&=+$,%]"
_PCHAR = r"[^;?=@\x00-\x20\x7f<>\"]"
# (six groups: scheme, user, password, host, port, ";params"; also embedded in the address
# fast path of pbxcore.sip.headers, which hands the groups to _fast_sip_uri)
FAST_SIP_PATTERN = (
    rf"(sips?):(?:({_PLAIN}+)(?::({_PLAIN}*))?@)?"
    r"([A-Za-z0-9_][A-Za-z0-9_\-.]*|\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\])(?::([0-9]{1,5}))?"
    rf"((?:;{_PCHAR}+(?:={_PCHAR}*)?)*)"
)
_FAST_SIP_RE = re.compile(FAST_SIP_PATTERN + r"\Z")


def _normal_params(params: dict[str, str | None]) -> dict[str, str | None]:
    # RFC 3261 §19.1.4: parameter names and values compare case-insensitively, unescaped
    return {
        unescape(k).lower(): None if v is None else unescape(v).lower() for k, v in params.items()
    }


class Uri:
    """A URI as used in SIP: ``sip``/``sips`` (structured), ``tel`` (number plus
    parameters) or any other scheme (kept opaque).

    Components keep their escaping as written (``user`` of ``sip:%75ser@h`` is ``%75ser``)
    so that what a B2BUA forwards is what it received; use :attr:`user_unescaped` or
    :attr:`aor` to compare. ``host`` of an IPv6 reference has no brackets. ``params`` and
    ``headers`` keep their order and their names as written.
    """

    __slots__ = ("headers", "host", "opaque", "params", "password", "port", "scheme", "user")

    def __init__(
        self,
        scheme: str = "sip",
        *,
        user: str | None = None,
        password: str | None = None,
        host: str = "",
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        headers: dict[str, str] | None = None,
        opaque: str | None = None,
    ) -> None:
        self.scheme = scheme.lower()
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = {} if params is None else params
        self.headers: dict[str, str] = {} if headers is None else headers
        self.opaque = opaque

    @classmethod
    def parse(cls, text: str) -> Uri:
        """Parse a URI; raise :class:`SipParseError` (status 400) if it is malformed."""
        m = _FAST_SIP_RE.match(text)
        if m is not None:
            uri = _fast_sip_uri(m.groups())
            if uri is None:
                raise SipParseError(f"bad port {m.group(5)!r} in SIP URI")
            return uri
        return cls.parse_general(text)

    @classmethod
    def parse_general(cls, text: str) -> Uri:
        """:meth:`parse` without its fast path for common SIP URIs (the reference that the
        fast path must agree with)."""
        colon = text.find(":")
        if colon <= 0 or _SCHEME_RE.match(text, 0, colon) is None:
            raise SipParseError(f"URI has no valid scheme: {text[:80]!r}")
        if _URI_BAD_RE.search(text) is not None:
            raise SipParseError(f"URI contains whitespace or a forbidden character: {text[:80]!r}")
        scheme = text[:colon].lower()
        rest = text[colon + 1 :]
        if scheme in _SIP_SCHEMES:
            return cls._parse_sip(scheme, rest)
        if not rest:
            raise SipParseError(f"empty {scheme} URI")
        if scheme == "tel":
            semi = rest.find(";")
            number = rest if semi < 0 else rest[:semi]
            if not number:
                raise SipParseError("tel URI without a number")
            params = {} if semi < 0 else _parse_uri_params(rest[semi + 1 :], "tel URI")
            return cls("tel", user=number, params=params)
        return cls(scheme, opaque=rest)

    @classmethod
    def _parse_sip(cls, scheme: str, rest: str) -> Uri:
        user: str | None = None
        password: str | None = None
        # '@' cannot appear unescaped after the host, so the first one ends the userinfo
        # (the user part itself may hold ';', '?' and '/': RFC 4475 semiuri, intmeth)
        at = rest.find("@")
        if at >= 0:
            userinfo = rest[:at]
            rest = rest[at + 1 :]
            colon = userinfo.find(":")
            if colon >= 0:
                user, password = userinfo[:colon], userinfo[colon + 1 :]
            else:
                user = userinfo
            if not user:
                raise SipParseError("SIP URI with an empty user part")
        headers: dict[str, str] = {}
        qmark = rest.find("?")
        if qmark >= 0:
            for item in rest[qmark + 1 :].split("&"):
                eq = item.find("=")
                if eq <= 0:
                    raise SipParseError(f"bad URI header {item!r}")
                headers[item[:eq]] = item[eq + 1 :]
            rest = rest[:qmark]
        params: dict[str, str | None] = {}
        semi = rest.find(";")
        if semi >= 0:
            params = _parse_uri_params(rest[semi + 1 :], "SIP URI")
            rest = rest[:semi]
        if not rest:
            raise SipParseError("SIP URI without a host")
        host, port = parse_hostport(rest, "SIP URI")
        return cls(
            scheme,
            user=user,
            password=password,
            host=host,
            port=port,
            params=params,
            headers=headers,
        )

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        parts = [self.scheme, ":"]
        if self.scheme == "tel":
            parts.append(self.user or "")
        else:
            if self.user is not None:
                parts.append(self.user)
                if self.password is not None:
                    parts.append(":")
                    parts.append(self.password)
                parts.append("@")
            parts.append(format_host(self.host))
            if self.port is not None:
                parts.append(f":{self.port}")
        for name, value in self.params.items():
            parts.append(f";{name}" if value is None else f";{name}={value}")
        if self.headers:
            parts.append("?")
            parts.append("&".join(f"{name}={value}" for name, value in self.headers.items()))
        return "".join(parts)

    def __repr__(self) -> str:
        return f"Uri({str(self)!r})"

    def param(self, name: str, default: str | None = None) -> str | None:
        """A URI parameter by case-insensitive name (``default`` if absent or valueless)."""
        value = self.params.get(name)
        if value is not None:
            return value
        lname = name.lower()
        for key, val in self.params.items():
            if key.lower() == lname and val is not None:
                return val
        return default

    def has_param(self, name: str) -> bool:
        """Whether the URI carries parameter ``name`` (case-insensitive)."""
        if name in self.params:
            return True
        lname = name.lower()
        return any(key.lower() == lname for key in self.params)

    @property
    def is_sip(self) -> bool:
        """``sip`` or ``sips`` scheme."""
        return self.scheme in _SIP_SCHEMES

    @property
    def user_unescaped(self) -> str | None:
        """The user part with %HH escapes decoded (``%00`` stays a distinct NUL)."""
        return None if self.user is None else unescape(self.user)

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower-cased."""
        value = self.param("transport")
        return None if value is None else value.lower()

    @property
    def aor(self) -> str:
        """The address-of-record key: ``scheme:user@host`` with the user in canonical escaping
        and the host lower-cased; no port, parameters or headers (RFC 3261 §10.3)."""
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        if self.scheme == "tel":
            return f"tel:{self.user}"
        host = format_host(self.host.lower())
        if self.user is None:
            return f"{self.scheme}:{host}"
        return f"{self.scheme}:{escape_user(unescape(self.user))}@{host}"

    def copy(self) -> Uri:
        """An independent copy (params and headers are copied too)."""
        return Uri(
            self.scheme,
            user=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            params=dict(self.params),
            headers=dict(self.headers),
            opaque=self.opaque,
        )

    def _base_key(self) -> tuple[object, ...]:
        return (
            self.scheme,
            None if self.user is None else unescape(self.user),
            None if self.password is None else unescape(self.password),
            self.host.lower(),
            self.port,
            self.opaque,
            frozenset((k.lower(), unescape(v)) for k, v in self.headers.items()),
        )

    def __eq__(self, other: object) -> bool:
        """URI equivalence after RFC 3261 §19.1.4 (escapes decoded, host case ignored,
        parameters present on one side only ignored unless user/ttl/method/maddr/transport)."""
        if not isinstance(other, Uri):
            return NotImplemented
        if self._base_key() != other._base_key():
            return False
        mine = _normal_params(self.params)
        theirs = _normal_params(other.params)
        if self.scheme == "tel":
            return mine == theirs
        for name in _STRICT_PARAMS:
            if (name in mine or name in theirs) and mine.get(name) != theirs.get(name):
                return False
        return all(mine[name] == theirs[name] for name in mine.keys() & theirs.keys())

    def __hash__(self) -> int:
        return hash((self.scheme, self.user_unescaped, self.host.lower(), self.port))


def _fast_sip_uri(groups: tuple[Any, ...]) -> Uri | None:
    # the Uri of a FAST_SIP_PATTERN match from its six groups (None: port above 65535)
    scheme, user, password, host, port, params = groups
    uri = Uri.__new__(Uri)
    uri.scheme = scheme
    uri.user = user
    uri.password = password
    uri.host = host[1:-1] if host[0] == "[" else host
    if port is None:
        uri.port = None
    else:
        uri.port = int(port)
        if uri.port > 65535:
            return None
    uri.params = _parse_uri_params(params[1:], "SIP URI") if params else {}
    uri.headers = {}
    uri.opaque = None
    return uri
