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
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate

from pbxcore.sip.auth import AuthOutcome, DigestAuthenticator
from pbxcore.sip.credentials import CredentialStore
from pbxcore.sip.errors import SipParseError
from pbxcore.sip.guard import BruteForceGuard, GuardVerdict
from pbxcore.sip.headers import Address, new_tag
from pbxcore.sip.location import Binding, LocationService
from pbxcore.sip.message import Request, Response, make_response
from pbxcore.sip.uri import Uri

__all__ = [
    "DROP",
    "Drop",
    "Registrar",
    "RegistrarError",
    "RegistrarPolicy",
    "apply_register",
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


def apply_register(
    current: list[Binding],
    *,
    aor: str,
    contacts: list[tuple[Address, int]] | None,
    call_id: str,
    cseq: int,
    now: float,
    source: str = "",
    user_agent: str | None = None,
    max_contacts: int = 16,
) -> list[Binding]:
    """RFC 3261 §10.3 steps 6-7: the bindings after a REGISTER.

    ``contacts`` pairs each Contact with its granted expiry (0 removes it);
    ``None`` means ``Contact: *`` (remove everything). Raises
    :class:`RegistrarError` for an out-of-order request or too many contacts.
    """
    if contacts is None:
        for binding in current:
            if binding.call_id == call_id and cseq <= binding.cseq:
                raise RegistrarError(400, "Invalid CSeq number")
        return []
    updated = list(current)
    for address, expires in contacts:
        uri = address.uri
        text = str(uri)
        index = next(
            (
                i
                for i, b in enumerate(updated)
                if b.contact == text or _same_contact(b.contact, uri)
            ),
            None,
        )
        if index is not None:
            existing = updated[index]
            if existing.call_id == call_id and cseq <= existing.cseq:
                raise RegistrarError(400, "Invalid CSeq number")
            if expires == 0:
                del updated[index]
                continue
        elif not expires:
            continue
        binding = Binding(
            aor=aor,
            contact=text,
            expires_at=now + expires,
            q=address.q,
            call_id=call_id,
            cseq=cseq,
            source=source,
            user_agent=user_agent,
        )
        if index is None:
            updated.append(binding)
        else:
            updated[index] = binding
    if len(updated) > max_contacts:
        raise RegistrarError(403, "Too Many Contacts")
    return updated


def _same_contact(stored: str, uri: Uri) -> bool:
    try:
        return Uri.parse(stored) == uri
    except SipParseError:
        return False


class Registrar:
    """Handles REGISTER requests: authenticate, then update the location service."""

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
        self.credentials = credentials
        self.location = location
        self.authenticator = authenticator or DigestAuthenticator(credentials)
        self.guard = guard or BruteForceGuard()
        self.policy = policy or RegistrarPolicy()
        self._clock = clock
        self._tag = new_tag()
        self._date_second = -1
        self._date_text = ""

    def _reply(
        self,
        request: Request,
        status: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        return make_response(request, status, reason, to_tag=self._tag, headers=headers)

    def _challenge(self, request: Request, realm: str, *, stale: bool = False) -> Response:
        challenges = self.authenticator.challenges(realm, stale=stale)
        return self._reply(request, 401, None, [("WWW-Authenticate", c) for c in challenges])

    def _banned(self, request: Request, verdict: GuardVerdict) -> Response | Drop:
        if verdict is GuardVerdict.DROP:
            return DROP
        return self._reply(request, 403, "Forbidden")

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
            return self._reply(request, 404, "Not Found")
        realm = aor_uri.host.lower()
        if not self.credentials.realm_algorithms(realm):
            return self._reply(request, 404, "Domain Not Served")
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
        guard = self.guard
        aor_uri = request.to.uri
        realm = aor_uri.host.lower()
        try:
            credentials = self.authenticator.pick(request.headers.get_all("authorization"), realm)
        except ValueError:
            return self._reply(request, 400, "Malformed Authorization")
        if credentials is None:
            return self._challenge(request, realm)
        user_key = f"{credentials.username}@{realm}"
        verdict = guard.check(source_ip, user_key)
        if verdict is not GuardVerdict.ALLOW:
            banned = self._banned(request, verdict)
            return None if isinstance(banned, Drop) else banned
        outcome = self.authenticator.verify(
            "REGISTER", credentials, realm, request_uri=request.uri_text or request.uri
        )
        if outcome is not AuthOutcome.OK:
            if outcome.is_failure:
                guard.record_failure(source_ip, user_key)
                log.info(
                    "REGISTER auth failed for %s from %s: %s", user_key, source_ip, outcome.value
                )
                return self._reply(request, 403, "Forbidden")
            if outcome is AuthOutcome.MALFORMED:
                return self._reply(request, 400, "Malformed Authorization")
            if outcome is AuthOutcome.URI_MISMATCH:
                return self._reply(request, 400, "Digest URI Is Not The Request-URI")
            return self._challenge(request, realm, stale=outcome is AuthOutcome.STALE)
        guard.record_success(source_ip, user_key)
        if credentials.username != aor_uri.user_unescaped:
            log.info("%s may not register %s", user_key, aor_uri.aor)
            return self._reply(request, 403, "Forbidden")
        try:
            return await self._bind(request, aor_uri.aor, source)
        except RegistrarError as exc:
            return self._reply(request, exc.status, exc.reason, exc.headers)
        except SipParseError as exc:
            return self._reply(request, exc.status or 400, exc.reason[:80])

    async def _bind(self, request: Request, aor: str, source: str) -> Response:
        policy = self.policy
        header_expires = request.expires
        contacts: list[tuple[Address, int]] | None
        if request.contact_is_wildcard:
            if header_expires != 0:
                raise RegistrarError(400, "Wildcard Contact Needs Expires 0")
            contacts = None
        else:
            contacts = []
            too_brief = False
            for address in request.contact:
                if not address.uri.is_sip and address.uri.scheme != "tel":
                    raise RegistrarError(400, "Unsupported Contact URI")
                address.q  # noqa: B018 - a bad q is a 400, before anything changes
                expires = address.expires
                if expires is None:
                    expires = policy.default_expires if header_expires is None else header_expires
                if expires:
                    if expires < policy.min_expires:
                        too_brief = True
                    expires = min(expires, policy.max_expires)
                contacts.append((address, expires))
            if too_brief:
                raise RegistrarError(
                    423, "Interval Too Brief", [("Min-Expires", str(policy.min_expires))]
                )
        now = self._clock()
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
        headers = [("Contact", contact_value(b, now)) for b in bindings]
        headers.append(("Date", self._date(now)))  # §10.3 step 8: lets UAs set their clocks
        return self._reply(request, 200, "OK", headers)

    def _date(self, now: float) -> str:
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
