"""A lean path for the common REGISTER over UDP: the bytes in, the 401 or 200 out.

:class:`RegisterFastPath` recognises the plain REGISTER that phones (and SIPp) send:
full header names, one Via (UDP, RFC 3261 branch), ``<sip:user@domain>`` in From and To,
one ``<sip:user@host[:port]>`` Contact, no body, nothing the registrar would have to look
at twice. For such a request it does what :class:`~pbxcore.sip.stack.SipStack` and the
:class:`~pbxcore.sip.registrar.Registrar` do, with the same checks, the same rules
(:meth:`RegistrarPolicy.grant`, :func:`apply_register`) and the same response bytes,
without building message, header and URI objects. It works through public APIs only:
the stack's, the registrar's, and those of any
:class:`~pbxcore.sip.location.ImmediateLocationService`. Anything else, and every answer
other than the challenge and a successful registration (failed or replayed credentials,
banned sources, 423, retransmissions, ...), goes to the general path untouched: the fast
path declines *before* it changes any state, so the general path sees the request as if
the fast path did not exist.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from pbxcore._sipscan import scan_register
from pbxcore._sipscan_ref import Fields
from pbxcore.sip.auth import AuthOutcome, DigestCredentials
from pbxcore.sip.guard import GuardVerdict
from pbxcore.sip.location import Binding, ImmediateLocationService
from pbxcore.sip.message import Request, make_response, parse_message
from pbxcore.sip.registrar import (
    ContactUpdate,
    Registrar,
    RegistrarError,
    apply_register,
    contact_value,
)
from pbxcore.sip.stack import stamp_via
from pbxcore.sip.uri import Uri

if TYPE_CHECKING:
    from pbxcore.sip.stack import SipStack
    from pbxcore.sip.transport import Source

__all__ = ["RegisterFastPath"]

log = logging.getLogger("pbxcore.sip.fastpath")


# a stored contact in the scanner's Contact grammar: user, host, port
_PLAIN_CONTACT = re.compile(
    r"sip:([A-Za-z0-9._~-]{1,64})@([A-Za-z0-9](?:[A-Za-z0-9.-]{0,62}[A-Za-z0-9])?)"
    r"(?::([1-9][0-9]{0,4}))?"
)


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
    authorization: dict[str, str] | None
    branch: str
    call_id: str
    contact: str
    contact_expires: int | None
    copied: list[tuple[str, str]]
    cseq: int
    expires: int | None
    rport: bool
    to_host: str
    to_user: str
    user_agent: str | None
    via_host: str
    via_port: int | None

    def __init__(self, fields: Fields) -> None:
        (
            self.branch,
            self.via_host,
            self.via_port,
            self.rport,
            self.to_user,
            self.to_host,
            self.call_id,
            self.cseq,
            self.contact,
            self.contact_expires,
            self.expires,
            self.authorization,
            self.user_agent,
            self.copied,
        ) = fields


def _credentials(params: dict[str, str]) -> DigestCredentials | None:
    try:
        return DigestCredentials(
            params["username"],
            params["realm"],
            params["nonce"],
            params["uri"],
            params["response"].lower(),
            params.get("algorithm", "MD5"),
            params.get("qop"),
            params.get("nc"),
            params.get("cnonce"),
            params.get("opaque"),
        )
    except KeyError:
        return None


class _NotPlainError(Exception):
    """A stored contact outside the scanner's grammar: the general comparison decides."""


def _plain_key(contact: str) -> Hashable:
    """The RFC 3261 §19.1.4 identity of a contact in the scanner's grammar (no
    parameters, no escapes): user, host in any case, port."""
    parts = _PLAIN_CONTACT.fullmatch(contact)
    if parts is None:
        raise _NotPlainError(contact)
    return (parts[1], parts[2].lower(), parts[3])


class RegisterFastPath:
    """The plain REGISTER over UDP, answered without the general message machinery.

    :meth:`Registrar.attach` adds it to a stack when the registrar's location service is
    an :class:`~pbxcore.sip.location.ImmediateLocationService`; :meth:`handle` returns
    False for anything it leaves to the general path.
    """

    prefix = b"REGISTER "

    def __init__(
        self,
        stack: SipStack,
        registrar: Registrar,
        scan: Callable[[bytes], Fields | None] = scan_register,
    ) -> None:
        if not isinstance(registrar.location, ImmediateLocationService):
            raise ValueError(
                "the REGISTER fast path needs a location service with immediate operations"
            )
        self._stack = stack
        self._scan = scan
        self._registrar = registrar
        self._location: ImmediateLocationService = registrar.location
        server_header = stack.server_header
        self._tail = (f"Server: {server_header}\r\n" if server_header else "") + (
            "Content-Length: 0\r\n\r\n"
        )

    def handle(self, data: bytes, source: Source) -> bool:
        """Answer ``data`` (a datagram from ``source``) if it is a plain REGISTER."""
        if ":" in source.host:
            return False  # IPv6 sources: received= formatting is the general path's job
        fields = self._scan(data)
        if fields is None:
            return False
        found = _Register(fields)
        key = (found.branch, found.via_host.lower(), found.via_port, "REGISTER")
        stack = self._stack
        if stack.completed.resend(key):
            return True  # a retransmission of a REGISTER answered here
        if stack.has_server_transaction(key):
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
            stack.transport.send(text.encode(), "udp", host, port, channel=source.channel)
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
        try:
            expires = registrar.policy.grant(found.contact_expires, found.expires)
        except RegistrarError:
            return False  # 423: the general path answers it
        # the digest check is the last step that declines: it records the nonce-count
        request_uri = data[9 : data.index(b" ", 9)].decode("ascii")  # the scanner checked it
        outcome = registrar.authenticator.verify(
            "REGISTER", credentials, realm, request_uri=request_uri
        )
        if outcome is not AuthOutcome.OK:
            return False
        guard.record_success(source.host, user_key)
        stack = self._stack
        now = registrar.clock()
        try:
            bindings = self._bind(found, expires, realm, source, now)
        except RegistrarError as exc:
            # 400 Invalid CSeq, 403 Too Many Contacts: built as the general path builds them
            self._answer_general(key, data, source, exc.status, exc.reason, exc.headers)
            return True
        except Exception:
            log.exception("registrar failed on REGISTER from %s", source)
            self._answer_general(key, data, source, 500, None, [])
            return True
        contacts = "".join(f"Contact: {contact_value(b, now)}\r\n" for b in bindings)
        text = (
            self._head("SIP/2.0 200 OK", found, source)
            + contacts
            + f"Date: {registrar.date(now)}\r\n"
            + self._tail
        )
        # the transaction, Completed until timer J: a table entry absorbs retransmissions
        host, port = self._destination(found, source)
        stack.completed.add(key, text.encode(), (host, port, source))
        return True

    def _answer_general(  # noqa: PLR0917 - the parts of one error answer
        self,
        key: Hashable,
        data: bytes,
        source: Source,
        status: int,
        reason: str | None,
        headers: list[tuple[str, str]],
    ) -> None:
        """A registrar error for a REGISTER the fast path took, built the general way."""
        request = parse_message(data)
        assert isinstance(request, Request)
        stamp_via(request, source)
        registrar = self._registrar
        if status == 500:
            response = make_response(request, 500, to_tag=registrar.tag)
        else:
            response = registrar.reply(request, status, reason, headers)
        self._stack.complete(key, response, request, source)

    def _bind(
        self, found: _Register, expires: int, realm: str, source: Source, now: float
    ) -> list[Binding]:
        """RFC 3261 §10.3 steps 6-7 for the one Contact, through :func:`apply_register`."""
        aor = f"sip:{found.to_user}@{realm}"
        location = self._location
        current, stored_now = location.bindings_now(aor)
        contact = found.contact
        max_contacts = self._registrar.policy.max_contacts
        where = repr(source)
        try:
            updated = apply_register(
                current,
                aor=aor,
                contacts=[ContactUpdate(contact, _plain_key(contact), None, expires)],
                call_id=found.call_id,
                cseq=found.cseq,
                now=now,
                source=where,
                user_agent=found.user_agent,
                max_contacts=max_contacts,
                key=_plain_key,
            )
        except _NotPlainError:
            # a stored contact outside the scanner's grammar: compare parsed URIs
            update = ContactUpdate(contact, Uri.parse(contact), None, expires)

            def change(bindings: list[Binding]) -> list[Binding]:
                return apply_register(
                    bindings,
                    aor=aor,
                    contacts=[update],
                    call_id=found.call_id,
                    cseq=found.cseq,
                    now=now,
                    source=where,
                    user_agent=found.user_agent,
                    max_contacts=max_contacts,
                )

            return location.modify_now(aor, change)
        return location.store(aor, updated, stored_now)

    def _head(self, status_line: str, found: _Register, source: Source) -> str:
        to_tag = f";tag={self._registrar.tag}"
        out = [status_line]
        for name, value in found.copied:
            if name == "Via":
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
            elif name == "To":
                out.append(f"{name}: {value}{to_tag}")
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
