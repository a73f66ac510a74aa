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
from collections.abc import Callable
from typing import TYPE_CHECKING

from pbxcore._sipscan import scan_register
from pbxcore._sipscan_ref import Fields
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


class RegisterFastPath:
    """The plain REGISTER over UDP, answered without the general message machinery.

    Used by :class:`~pbxcore.sip.server.SipServer` when its registrar keeps bindings in a
    :class:`~pbxcore.sip.location.MemoryLocationService`; :meth:`handle` returns False
    for anything it leaves to the general path.
    """

    def __init__(
        self, server: SipServer, scan: Callable[[bytes], Fields | None] = scan_register
    ) -> None:
        registrar = server.registrar
        if registrar is None or type(registrar.location) is not MemoryLocationService:
            raise ValueError("the REGISTER fast path needs a registrar with in-memory bindings")
        self._server = server
        self._scan = scan
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
        fields = self._scan(data)
        if fields is None:
            return False
        found = _Register(fields)
        key = (found.branch, found.via_host.lower(), found.via_port, "REGISTER")
        server = self._server
        if server.completed.resend(key):
            return True  # a retransmission of a REGISTER answered here
        if key in server._server_tx:
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
        request_uri = data[9 : data.index(b" ", 9)].decode("ascii")  # the scanner checked it
        outcome = registrar.authenticator.verify(
            "REGISTER", credentials, realm, request_uri=request_uri
        )
        if outcome is not AuthOutcome.OK:
            return False
        guard.record_success(source.host, user_key)
        server = self._server
        destination = self._destination(found, source)
        now = registrar._clock()
        try:
            bindings = self._bind(found, expires, realm, source, now)
        except RegistrarError as exc:
            # 400 Invalid CSeq, 403 Too Many Contacts: built as the general path builds them
            server._answer_register(
                key, data, source, destination, exc.status, exc.reason, exc.headers
            )
            return True
        except Exception:
            log.exception("registrar failed on REGISTER from %s", source)
            server._answer_register(key, data, source, destination, 500, None, [])
            return True
        contacts = "".join(f"Contact: {contact_value(b, now)}\r\n" for b in bindings)
        text = (
            self._head("SIP/2.0 200 OK", found, source)
            + contacts
            + f"Date: {registrar._date(now)}\r\n"
            + self._tail
        )
        # the transaction, Completed until timer J: a table entry absorbs retransmissions
        server.completed.add(key, text.encode(), (*destination, source))
        return True

    def _bind(
        self, found: _Register, expires: int, realm: str, source: Source, now: float
    ) -> list[Binding]:
        """RFC 3261 §10.3 steps 6-7 for the one Contact, as apply_register does them."""
        aor = f"sip:{found.to_user}@{realm}"
        call_id, cseq, contact = found.call_id, found.cseq, found.contact
        location = self._location
        stored_now = location._clock()
        current = location._current(aor, stored_now)
        # which binding this Contact refreshes: the first one equal as a URI (RFC 3261
        # §19.1.4). The scanner's Contact grammar has no parameters and no escapes, so
        # against a stored contact of the same grammar, user, host (any case) and port
        # decide; any other stored contact needs the general comparison.
        index = None
        mine = None
        for position, binding in enumerate(current):
            if binding.contact == contact:
                index = position
                break
            other = _PLAIN_CONTACT.fullmatch(binding.contact)
            if other is None:
                return self._bind_general(found, expires, aor, source, now)
            if mine is None:
                parts = _PLAIN_CONTACT.fullmatch(contact)
                assert parts is not None
                mine = (parts[1], parts[2].lower(), parts[3])
            if (other[1], other[2].lower(), other[3]) == mine:
                index = position
                break
        updated = list(current)
        if index is not None:
            existing = current[index]
            if existing.call_id == call_id and cseq <= existing.cseq:
                raise RegistrarError(400, "Invalid CSeq number")
            del updated[index]
        if expires:
            binding = Binding(
                aor, contact, now + expires, None, call_id, cseq, repr(source), found.user_agent
            )
            if index is None:
                updated.append(binding)
            else:
                updated.insert(index, binding)
        if len(updated) > self._registrar.policy.max_contacts:
            raise RegistrarError(403, "Too Many Contacts")
        return location.store(aor, updated, stored_now)

    def _bind_general(
        self, found: _Register, expires: int, aor: str, source: Source, now: float
    ) -> list[Binding]:
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
