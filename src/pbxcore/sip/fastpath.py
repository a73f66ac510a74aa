"""A lean path for the common REGISTER over UDP: the bytes in, the 401 or 200 out.

:class:`RegisterFastPath` recognises the plain REGISTER that phones (and SIPp) send:
full header names, one Via (UDP, RFC 3261 branch), ``<sip:user@domain>`` in From and To,
one ``<sip:user@host[:port]>`` Contact, no body, nothing the registrar would have to look
at twice. For such a request it does what :class:`~pbxcore.sip.server.SipServer` and the
:class:`~pbxcore.sip.registrar.Registrar` do, with the same checks and the same response
bytes, without building message, header and URI objects. Anything else, and every answer
other than the challenge and a successful registration (failed or replayed credentials,
banned sources, 423, retransmissions, ...), goes to the general path untouched: the fast
path declines *before* it changes any state, so the general path sees the request as if
the fast path did not exist.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from pbxcore.sip.auth import AuthOutcome, DigestCredentials
from pbxcore.sip.guard import GuardVerdict
from pbxcore.sip.headers import Address
from pbxcore.sip.location import Binding, MemoryLocationService
from pbxcore.sip.registrar import RegistrarError, apply_register, contact_value

if TYPE_CHECKING:
    from pbxcore.sip.server import SipServer
    from pbxcore.sip.transport import Source

__all__ = ["RegisterFastPath"]

log = logging.getLogger("pbxcore.sip.fastpath")

# a conservative subset of the grammar: what does not match goes to the general parser
_TOKEN = r"[A-Za-z0-9.!%*_+`'~-]+"
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,62}[A-Za-z0-9])?"
_USER = r"[A-Za-z0-9._~-]{1,64}"
_PORT = r"[1-9][0-9]{0,4}"
_REQUEST_LINE = re.compile(rf"REGISTER sip:{_HOST} SIP/2\.0")
_VIA = re.compile(rf"SIP/2\.0/UDP ({_HOST})(?::({_PORT}))?;branch=(z9hG4bK{_TOKEN})(;rport)?")
_FROM = re.compile(rf"<sip:{_USER}@{_HOST}>;tag={_TOKEN}")
_TO = re.compile(rf"<sip:({_USER})@({_HOST})>")
_CALL_ID = re.compile(rf"{_TOKEN}(?:@{_TOKEN})?")
_CSEQ = re.compile(r"([0-9]{1,9}) REGISTER")
_CONTACT = re.compile(rf"<(sip:{_USER}@{_HOST}(?::{_PORT})?)>(?:;expires=([0-9]{{1,9}}))?")
_SMALL_INT = re.compile(r"[0-9]{1,9}")
_DIGEST = re.compile(
    r'Digest [a-z]+=(?:"[^"\\\x00-\x1f]*"|[^\s,"]+)(?:, ?[a-z]+=(?:"[^"\\\x00-\x1f]*"|[^\s,"]+))*'
)
_DIGEST_PARAM = re.compile(r'([a-z]+)=(?:"([^"]*)"|([^\s,"]+))')

# header names (lower-cased) the fast path understands; any other header sends the request
# to the general path (Require, Route, Timestamp, compact forms, ...)
_COPIED = ("via", "from", "to", "call-id", "cseq")
_KNOWN = frozenset(
    (
        *_COPIED,
        "contact",
        "max-forwards",
        "expires",
        "content-length",
        "authorization",
        "user-agent",
        "allow",
        "supported",
    )
)
_MAX_SIZE = 4096


class _Register:
    """What the fast path read from one REGISTER."""

    __slots__ = (
        "authorization",
        "branch",
        "call_id",
        "contact",
        "contact_expires",
        "copied",
        "cseq",
        "expires",
        "rport",
        "to_host",
        "to_user",
        "user_agent",
        "via_host",
        "via_port",
    )
    authorization: str | None
    branch: str
    call_id: str
    contact: str
    contact_expires: int | None
    copied: list[tuple[str, str, str]]
    cseq: int
    expires: int | None
    rport: bool
    to_host: str
    to_user: str
    user_agent: str | None
    via_host: str
    via_port: int | None

    def __init__(self) -> None:
        self.authorization: str | None = None
        self.expires: int | None = None
        self.user_agent: str | None = None
        self.contact = ""
        self.contact_expires: int | None = None


def _scan(data: bytes) -> _Register | None:
    """The REGISTER in ``data`` if it is of the plain kind, else None."""
    if len(data) > _MAX_SIZE or not data.endswith(b"\r\n\r\n"):
        return None  # a body, or a message the general parser must judge
    try:
        text = data[:-4].decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.split("\r\n")
    if _REQUEST_LINE.fullmatch(lines[0]) is None:
        return None
    found = _Register()
    copied: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for line in lines[1:]:
        name, sep, value = line.partition(": ")
        key = name.lower()
        if not sep or key not in _KNOWN or key in seen:
            return None
        seen.add(key)
        if key in _COPIED:
            copied.append((name, key, value))
            if key == "via":
                match = _VIA.fullmatch(value)
                if match is None:
                    return None
                found.via_host = match[1]
                found.via_port = int(match[2]) if match[2] else None
                if found.via_port is not None and found.via_port > 65535:
                    return None
                found.branch = match[3]
                found.rport = match[4] is not None
            elif key == "from":
                if _FROM.fullmatch(value) is None:
                    return None
            elif key == "to":
                match = _TO.fullmatch(value)
                if match is None:
                    return None
                found.to_user, found.to_host = match[1], match[2]
            elif key == "call-id":
                if _CALL_ID.fullmatch(value) is None:
                    return None
                found.call_id = value
            else:
                match = _CSEQ.fullmatch(value)
                if match is None:
                    return None
                found.cseq = int(match[1])
        elif key == "contact":
            match = _CONTACT.fullmatch(value)
            if match is None:
                return None
            found.contact = match[1]
            found.contact_expires = int(match[2]) if match[2] else None
            if found.contact_expires is not None and found.contact_expires > 2**31 - 1:
                return None
        elif key == "authorization":
            if _DIGEST.fullmatch(value) is None:
                return None
            found.authorization = value
        elif key == "content-length":
            if value != "0":
                return None
        elif key == "max-forwards":
            if _SMALL_INT.fullmatch(value) is None or int(value) > 255:
                return None
        elif key == "expires":
            if _SMALL_INT.fullmatch(value) is None:
                return None
            found.expires = int(value)
        elif value != value.strip() or not value.isprintable():  # User-Agent, Allow, ...
            return None
        elif key == "user-agent":
            found.user_agent = value
    if len(copied) != len(_COPIED) or "contact" not in seen or found.cseq > 2**31 - 1:
        return None
    found.copied = copied
    return found


def _credentials(value: str) -> DigestCredentials | None:
    params: dict[str, str] = {}
    for name, quoted, bare in _DIGEST_PARAM.findall(value, 7):
        if name in params:
            return None
        params[name] = quoted or bare
    try:
        return DigestCredentials(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"].lower(),
            algorithm=params.get("algorithm", "MD5"),
            qop=params.get("qop"),
            nc=params.get("nc"),
            cnonce=params.get("cnonce"),
            opaque=params.get("opaque"),
        )
    except KeyError:
        return None


class RegisterFastPath:
    """The plain REGISTER over UDP, answered without the general message machinery.

    Used by :class:`~pbxcore.sip.server.SipServer` when its registrar keeps bindings in a
    :class:`~pbxcore.sip.location.MemoryLocationService`; :meth:`handle` returns False
    for anything it leaves to the general path.
    """

    def __init__(self, server: SipServer) -> None:
        registrar = server.registrar
        if registrar is None or type(registrar.location) is not MemoryLocationService:
            raise ValueError("the REGISTER fast path needs a registrar with in-memory bindings")
        self._server = server
        self._registrar = registrar
        self._location = registrar.location
        self._to_tag = f";tag={registrar._tag}"
        server_header = server.server_header
        self._tail = (f"Server: {server_header}\r\n" if server_header else "") + (
            "Content-Length: 0\r\n\r\n"
        )

    def handle(self, data: bytes, source: Source) -> bool:
        """Answer ``data`` (a datagram from ``source``) if it is a plain REGISTER."""
        if ":" in source.host:
            return False  # IPv6 sources: received= formatting is the general path's job
        found = _scan(data)
        if found is None:
            return False
        key = (found.branch, found.via_host.lower(), found.via_port, "REGISTER")
        if key in self._server._server_tx:
            return False  # a retransmission: its transaction answers it
        registrar = self._registrar
        if registrar.guard.check(source.host) is not GuardVerdict.ALLOW:
            return False
        realm = found.to_host.lower()
        if not registrar.credentials.realm_algorithms(realm):
            return False
        if found.authorization is None:
            challenges = registrar.authenticator.challenges(realm)
            extra = "".join(f"WWW-Authenticate: {c}\r\n" for c in challenges)
            host, port = self._destination(found, source)
            text = self._head("SIP/2.0 401 Unauthorized", found, source) + extra + self._tail
            self._server.transport.send(text.encode(), "udp", host, port, channel=source.channel)
            return True
        return self._authenticated(data, found, realm, key, source)

    def _authenticated(
        self,
        data: bytes,
        found: _Register,
        realm: str,
        key: tuple[str, str, int | None, str],
        source: Source,
    ) -> bool:
        registrar = self._registrar
        assert found.authorization is not None
        credentials = _credentials(found.authorization)
        if credentials is None or credentials.realm != realm:
            return False
        if credentials.username != found.to_user:
            return False  # 403 after the digest check: the general path says it
        user_key = f"{credentials.username}@{realm}"
        guard = registrar.guard
        if guard.check(source.host, user_key) is not GuardVerdict.ALLOW:
            return False
        policy = registrar.policy
        expires = found.contact_expires
        if expires is None:
            expires = policy.default_expires if found.expires is None else found.expires
        if expires:
            if expires < policy.min_expires:
                return False  # 423
            expires = min(expires, policy.max_expires)
        # the digest check is the last step that declines: it records the nonce-count
        if registrar.authenticator.verify("REGISTER", credentials, realm) is not AuthOutcome.OK:
            return False
        guard.record_success(source.host, user_key)
        server = self._server
        tx = server._new_register_tx(key, source, self._destination(found, source))
        now = registrar._clock()
        try:
            bindings = self._bind(found, expires, realm, source, now)
        except RegistrarError as exc:
            # 400 Invalid CSeq, 403 Too Many Contacts: built as the general path builds them
            server._answer_in_tx(tx, data, source, exc.status, exc.reason, exc.headers)
            return True
        except Exception:
            log.exception("registrar failed on REGISTER from %s", source)
            server._answer_in_tx(tx, data, source, 500, None, [])
            return True
        contacts = "".join(f"Contact: {contact_value(b, now)}\r\n" for b in bindings)
        text = (
            self._head("SIP/2.0 200 OK", found, source)
            + contacts
            + f"Date: {registrar._date(now)}\r\n"
            + self._tail
        )
        tx.respond(text.encode(), 200)
        return True

    def _bind(
        self, found: _Register, expires: int, realm: str, source: Source, now: float
    ) -> list[Binding]:
        aor = f"sip:{found.to_user}@{realm}"
        address = Address.parse(f"<{found.contact}>")
        call_id, cseq = found.call_id, found.cseq
        max_contacts = self._registrar.policy.max_contacts
        where = repr(source)

        def change(current: list[Binding]) -> list[Binding]:
            return apply_register(
                current,
                aor=aor,
                contacts=[(address, expires)],
                call_id=call_id,
                cseq=cseq,
                now=now,
                source=where,
                user_agent=found.user_agent,
                max_contacts=max_contacts,
            )

        return self._location.modify_now(aor, change)

    def _head(self, status_line: str, found: _Register, source: Source) -> str:
        out = [status_line]
        for name, key, value in found.copied:
            if key == "via":
                if found.rport:
                    port = "" if found.via_port is None else f":{found.via_port}"
                    out.append(
                        f"{name}: SIP/2.0/UDP {found.via_host}{port};branch={found.branch}"
                        f";received={source.host};rport={source.port}"
                    )
                elif found.via_host != source.host:
                    out.append(f"{name}: {value};received={source.host}")
                else:
                    out.append(f"{name}: {value}")
            elif key == "to":
                out.append(f"{name}: {value}{self._to_tag}")
            else:
                out.append(f"{name}: {value}")
        out.append("")
        return "\r\n".join(out)

    @staticmethod
    def _destination(found: _Register, source: Source) -> tuple[str, int]:
        # RFC 3261 §18.2.2 and RFC 3581: rport -> source address and port; else received
        # (which is the source, stamped whenever sent-by differs) and the sent-by port
        if found.rport:
            return source.host, source.port
        return source.host, found.via_port or 5060
