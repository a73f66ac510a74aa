"""The registrar (RFC 3261 §10.3) with digest authentication (RFC 8760).

The realm of a REGISTER is the domain of its address-of-record (the To URI): a
tenant's domain. The registrar challenges with every algorithm the realm offers,
checks the answer through the :class:`~pbxcore.sip.auth.DigestAuthenticator`,
lets the :class:`~pbxcore.sip.guard.BruteForceGuard` count failures, and then
adds, refreshes or removes bindings in the
:class:`~pbxcore.sip.location.LocationService`.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING, NamedTuple

from pbxcore.sip.auth import DigestAuthenticator
from pbxcore.sip.authorize import Refused, authorize
from pbxcore.sip.credentials import CredentialStore
from pbxcore.sip.errors import SipParseError
from pbxcore.sip.guard import BruteForceGuard, GuardVerdict
from pbxcore.sip.headers import new_tag
from pbxcore.sip.location import Binding, LocationService
from pbxcore.sip.message import Request, Response, make_response
from pbxcore.sip.uri import Uri

if TYPE_CHECKING:
    from pbxcore.sip.stack import IncomingRequest, SipStack
    from pbxcore.sip.transport import Source

__all__ = [
    "DROP",
    "ContactUpdate",
    "Drop",
    "Registrar",
    "RegistrarError",
    "RegistrarPolicy",
    "apply_register",
    "contact_key",
    "contact_value",
]

log = logging.getLogger("pbxcore.sip.registrar")


@dataclass(frozen=True, slots=True)
class RegistrarPolicy:
    """Expiry bounds (seconds) and the binding limit per address-of-record."""

    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError(f"need 1 <= min_expires <= default_expires <= max_expires: {self}")
        if self.max_contacts < 1:
            raise ValueError("max_contacts must be >= 1")

    def grant(self, contact_expires: int | None, header_expires: int | None) -> int:
        """RFC 3261 §10.3 step 7: the expiry granted to one Contact: its ``expires``
        parameter, else the Expires header, else the default; capped at the maximum; 0
        (remove) stays 0. Raises :class:`RegistrarError` 423 below the minimum."""
        expires = contact_expires
        if expires is None:
            expires = self.default_expires if header_expires is None else header_expires
        if not expires:
            return 0
        if expires < self.min_expires:
            raise RegistrarError(
                423, "Interval Too Brief", [("Min-Expires", str(self.min_expires))]
            )
        return min(expires, self.max_expires)


class Drop(enum.Enum):
    """Marker: send nothing at all (the brute-force guard drops the source)."""

    DROP = "drop"


DROP = Drop.DROP


class RegistrarError(Exception):
    """A REGISTER that must fail with ``status`` (and extra response headers)."""

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers or []


class ContactUpdate(NamedTuple):
    """One Contact of a REGISTER: its URI as sent, the key it compares by (RFC 3261
    §19.1.4 equality), its q and the expiry granted (0 removes it)."""

    contact: str
    key: Hashable
    q: float | None
    expires: int


def contact_key(contact: str) -> Hashable:
    """What a stored contact compares by: its parsed URI (hash and equality follow RFC
    3261 §19.1.4), or the text itself if it no longer parses."""
    try:
        return Uri.parse(contact)
    except SipParseError:
        return contact


def apply_register(
    current: list[Binding],
    *,
    aor: str,
    contacts: list[ContactUpdate] | None,
    call_id: str,
    cseq: int,
    now: float,
    source: str = "",
    user_agent: str | None = None,
    max_contacts: int = 16,
    key: Callable[[str], Hashable] = contact_key,
) -> list[Binding]:
    """RFC 3261 §10.3 steps 6-7: the bindings after a REGISTER (the one place this rule
    is written; the general path and the fast path both call it).

    ``contacts`` lists the request's Contacts; ``None`` means ``Contact: *`` (remove
    everything). ``key`` maps a stored contact to what the updates' keys compare with.
    Raises :class:`RegistrarError` for an out-of-order request or too many contacts.
    Linear in the number of contacts: stored bindings are indexed by key once.
    """
    if contacts is None:
        for binding in current:
            if binding.call_id == call_id and cseq <= binding.cseq:
                raise RegistrarError(400, "Invalid CSeq number")
        return []
    if len(contacts) > max_contacts + len(current):
        raise RegistrarError(403, "Too Many Contacts")  # cannot end within the limit
    # insertion-ordered: a refreshed binding keeps its place, a new one goes last
    updated: dict[Hashable, Binding] = {}
    # a refresh repeats the stored text: equal text is an equal URI, no need to key it
    known = {update.contact: update.key for update in contacts}
    for binding in current:
        stored_key = known.get(binding.contact)
        updated.setdefault(key(binding.contact) if stored_key is None else stored_key, binding)
    for update in contacts:
        existing = updated.get(update.key)
        if existing is not None:
            if existing.call_id == call_id and cseq <= existing.cseq:
                raise RegistrarError(400, "Invalid CSeq number")
            if update.expires == 0:
                del updated[update.key]
                continue
        elif not update.expires:
            continue
        updated[update.key] = Binding(
            aor, update.contact, now + update.expires, update.q, call_id, cseq, source, user_agent
        )
    if len(updated) > max_contacts:
        raise RegistrarError(403, "Too Many Contacts")
    return list(updated.values())


class Registrar:
    """Handles REGISTER requests: authenticate, then update the location service.

    :attr:`credentials` and :attr:`policy` may be replaced while the server runs (the
    tenancy layer swaps in each new configuration snapshot); every REGISTER reads the
    ones in place when it arrives. :meth:`attach` makes the registrar a stack's REGISTER
    handler.
    """

    def __init__(
        self,
        credentials: CredentialStore,
        location: LocationService,
        *,
        authenticator: DigestAuthenticator | None = None,
        guard: BruteForceGuard | None = None,
        policy: RegistrarPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.location = location
        self.authenticator = authenticator or DigestAuthenticator(credentials)
        self.credentials = credentials
        self.guard = guard or BruteForceGuard()
        self.policy = policy or RegistrarPolicy()
        self.clock = clock
        self.tag = new_tag()
        self._date_second = -1
        self._date_text = ""

    @property
    def credentials(self) -> CredentialStore:
        """Realms and HA1 values; assign a new store to change them at run time."""
        return self._credentials

    @credentials.setter
    def credentials(self, store: CredentialStore) -> None:
        # one assignment each: a REGISTER sees the old store or the new one, never a mix
        self._credentials = store
        self.authenticator.credentials = store

    # -- as a stack's REGISTER handler ------------------------------------------------------

    def attach(self, stack: SipStack) -> None:
        """Serve REGISTER on ``stack``: stateless challenges and bans first, then
        :meth:`handle` in a transaction. (The UDP fast path, for a location service with
        immediate operations, is added by :class:`~pbxcore.sip.server.SipServer`.)"""

        def stateless(request: Request, source: Source) -> bool:
            early = self.precheck(request, source.host)
            if early is None:
                return False
            if not isinstance(early, Drop):
                stack.send_stateless(early, request, source)
            return True

        async def handler(incoming: IncomingRequest) -> None:
            try:
                response = await self.handle(
                    incoming.request,
                    incoming.source.host,
                    repr(incoming.source),
                    prechecked=True,
                )
            except Exception:
                log.exception("registrar failed on REGISTER from %s", incoming.source)
                response = make_response(incoming.request, 500, to_tag=self.tag)
            if response is None:
                incoming.drop()  # banned source: say nothing
                return
            incoming.send(response)

        stack.set_handler("REGISTER", handler, stateless=stateless)

    # -- the rules --------------------------------------------------------------------------

    def reply(
        self,
        request: Request,
        status: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        """A response of the registrar's (its To tag) to ``request``."""
        return make_response(request, status, reason, to_tag=self.tag, headers=headers)

    def _challenge(self, request: Request, realm: str, *, stale: bool = False) -> Response:
        challenges = self.authenticator.challenges(realm, stale=stale)
        return self.reply(request, 401, None, [("WWW-Authenticate", c) for c in challenges])

    def _banned(self, request: Request, verdict: GuardVerdict) -> Response | Drop:
        if verdict is GuardVerdict.DROP:
            return DROP
        return self.reply(request, 403, "Forbidden")

    def precheck(self, request: Request, source_ip: str) -> Response | Drop | None:
        """The answer to a REGISTER that needs no state: a 401 challenge when it carries no
        credentials for the realm, 404 for a domain not served, 403 (or :data:`DROP`) while
        the source is banned. None: it carries credentials, go on with :meth:`handle`.

        The server sends these answers statelessly: a retransmission just gets a new
        challenge, and a flood of unauthenticated REGISTERs costs no memory.
        """
        verdict = self.guard.check(source_ip)
        if verdict is not GuardVerdict.ALLOW:
            return self._banned(request, verdict)
        aor_uri = request.to.uri
        if not aor_uri.is_sip or not aor_uri.user:
            return self.reply(request, 404, "Not Found")
        realm = aor_uri.host.lower()
        if not self.credentials.realm_algorithms(realm):
            return self.reply(request, 404, "Domain Not Served")
        if "authorization" in request.headers:
            return None  # handle() parses the credentials and says what is wrong with them
        return self._challenge(request, realm)

    async def handle(
        self, request: Request, source_ip: str, source: str = "", *, prechecked: bool = False
    ) -> Response | None:
        """The response to a REGISTER (None: drop it, the brute-force guard said so).

        ``request`` must have passed :func:`~pbxcore.sip.validate_request`;
        ``prechecked``: :meth:`precheck` already returned None for it.
        """
        if not prechecked:
            early = self.precheck(request, source_ip)
            if early is not None:
                return None if isinstance(early, Drop) else early
        aor_uri = request.to.uri
        realm = aor_uri.host.lower()
        result = authorize(
            request,
            realm,
            authenticator=self.authenticator,
            guard=self.guard,
            source_ip=source_ip,
        )
        if isinstance(result, Refused):
            if result.drop:
                return None
            return self.reply(request, result.status, result.reason, list(result.headers))
        user_key = f"{result.username}@{realm}"
        if result.username != aor_uri.user_unescaped:
            log.info("%s may not register %s", user_key, aor_uri.aor)
            return self.reply(request, 403, "Forbidden")
        try:
            return await self._bind(request, aor_uri.aor, source)
        except RegistrarError as exc:
            return self.reply(request, exc.status, exc.reason, exc.headers)
        except SipParseError as exc:
            return self.reply(request, exc.status or 400, exc.reason[:80])

    async def _bind(self, request: Request, aor: str, source: str) -> Response:
        policy = self.policy
        header_expires = request.expires
        contacts: list[ContactUpdate] | None
        if request.contact_is_wildcard:
            if header_expires != 0:
                raise RegistrarError(400, "Wildcard Contact Needs Expires 0")
            contacts = None
        else:
            # the limit first, before a URI is parsed: a REGISTER that ends within the
            # limit removes at most max_contacts bindings and adds at most as many
            if len(request.headers.get_all("contact")) > 2 * policy.max_contacts:
                raise RegistrarError(403, "Too Many Contacts")
            contacts = []
            too_brief: RegistrarError | None = None
            for address in request.contact:
                uri = address.uri
                if not uri.is_sip and uri.scheme != "tel":
                    raise RegistrarError(400, "Unsupported Contact URI")
                q = address.q  # a bad q is a 400, before anything changes
                try:
                    expires = policy.grant(address.expires, header_expires)
                except RegistrarError as exc:
                    too_brief = exc  # 423, but only after every Contact was checked
                    continue
                contacts.append(ContactUpdate(str(uri), uri, q, expires))
            if too_brief is not None:
                raise too_brief
        now = self.clock()
        if contacts == []:
            bindings = await self.location.lookup(aor)  # a query: nothing changes
        else:
            call_id, cseq = request.call_id, request.cseq[0]
            user_agent = request.headers.get("user-agent")
            max_contacts = policy.max_contacts

            def change(current: list[Binding]) -> list[Binding]:
                return apply_register(
                    current,
                    aor=aor,
                    contacts=contacts,
                    call_id=call_id,
                    cseq=cseq,
                    now=now,
                    source=source,
                    user_agent=user_agent,
                    max_contacts=max_contacts,
                )

            bindings = await self.location.modify(aor, change)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("REGISTER %s from %s: %d binding(s)", aor, source, len(bindings))
        return self.ok(request, bindings, now)

    def ok(self, request: Request, bindings: list[Binding], now: float) -> Response:
        """The 200 to a REGISTER: every binding with its expiry, and Date (§10.3 step 8)."""
        headers = [("Contact", contact_value(b, now)) for b in bindings]
        headers.append(("Date", self.date(now)))  # lets UAs set their clocks
        return self.reply(request, 200, "OK", headers)

    def date(self, now: float) -> str:
        """The Date header value for ``now`` (formatted once a second)."""
        second = int(now)
        if second != self._date_second:
            self._date_second = second
            self._date_text = formatdate(second, usegmt=True)
        return self._date_text


def contact_value(binding: Binding, now: float) -> str:
    """A Contact value of a 200 to REGISTER: the binding with its remaining expiry and q."""
    value = f"<{binding.contact}>;expires={binding.expires_in(now)}"
    if binding.q is not None:
        value += f";q={binding.q:g}"
    return value
