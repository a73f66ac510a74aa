"""The B2BUA: calls between extensions, out to carriers and in from them, media anchored.

An INVITE from a phone is challenged with 407 (:func:`~pbxcore.sip.authorize.authorize`,
the registrar's digest rules and brute-force guard); a carrier's INVITE is recognised by
its trunk's ``inbound_ips``. The caller and the dialed string go to
:func:`~pbxcore.pbx.decision.decide` over the current snapshot:

- an internal or inbound target rings every registered contact of the extension in
  parallel (first answer wins, the others get CANCEL), following its forwarding on busy,
  no answer and unavailable (:func:`~pbxcore.pbx.decision.decide_forward`, loops stopped);
- an outbound call tries the LCR candidates in order, the next trunk after 408, 5xx or no
  answer, never after an answer of the called party.

Every SDP passes through a :class:`~pbxcore.media.engine.MediaCall` (PCMU and PCMA offered
to the callee, the relay transcodes), so audio flows through the relay and never through
Python. 180/183 (early media) and 200 are relayed, ACK, CANCEL and BYE from either side
work. re-INVITEs and UPDATEs (RFC 3311) move the relay legs (hold, resume, new
address), passed to the other party as an UPDATE when it takes them, else a re-INVITE;
an offerless re-INVITE gets pbxcore's own offer. Session timers (RFC 4028, the rules in
:mod:`pbxcore.sip.session_timer`) run on each leg: pbxcore refreshes the parties it is
refresher for and hangs up both sides when a party stops refreshing or a refresh gets
408/481. An answered call with no RTP (the relay's ``LegTimeout``) or past the tenant's
maximum duration is ended on both sides. :meth:`B2bua.shutdown` drains the node: new
calls get 503, the calls in progress get a grace period, then BYE. Calls-per-second
caps and the node's capacity (:mod:`pbxcore.pbx.limits`), like a relay out of ports,
answer 503 with Retry-After.
Each call gets a CDR.

For metrics, :meth:`B2bua.counters` gives the live numbers (active calls, calls started,
per-trunk attempts and failures); a call that fails (refused, busy, not answered, no trunk)
is reported to :attr:`B2bua.on_failure`, if set, with the SIP status the caller got. Log
records of a call carry the caller's Call-ID (:mod:`pbxcore.sip.logcontext`), also while
the callee's side of it is handled.

The call logic uses the stack's public interface (handlers, :class:`IncomingRequest`,
:meth:`SipStack.invite`, dialogs), never raw transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from pbxcore.media.engine import LegReleasedError, MediaCall, MediaEngine, MediaLeg
from pbxcore.media.prompt import Prompt
from pbxcore.media.relay import LegTimeout, PortRangeExhaustedError
from pbxcore.media.sdp import SessionDescription
from pbxcore.pbx.cdr import CallRecord, CdrWriter
from pbxcore.pbx.decision import (
    DEFAULT_NO_ANSWER_SECONDS,
    MAX_FORWARD_HOPS,
    Caller,
    Decision,
    ExtensionCaller,
    TrunkCaller,
    UsageCounts,
    decide,
    decide_destination,
    decide_forward,
    trunk_for_source,
)
from pbxcore.pbx.ivr import MAX_MENU_DEPTH, run_menu
from pbxcore.pbx.limits import CallRateGuard, Overload
from pbxcore.sip.auth import DigestAuthenticator
from pbxcore.sip.authorize import Refused, authorize
from pbxcore.sip.dialog import Dialog, DialogId
from pbxcore.sip.dtmf_info import DTMF_INFO_TYPES, parse_dtmf_info
from pbxcore.sip.errors import SipParseError
from pbxcore.sip.guard import BruteForceGuard
from pbxcore.sip.location import LocationService
from pbxcore.sip.logcontext import set_call_id
from pbxcore.sip.message import Request, Response
from pbxcore.sip.session_timer import (
    SessionTimer,
    SessionTimerPolicy,
    TooSmall,
    answer_invite,
    from_answer,
)
from pbxcore.sip.stack import ClientInvite, IncomingRequest, SipStack, StaticCredentials
from pbxcore.sip.uri import Uri
from pbxcore.tenancy.snapshot import IvrConfig, Snapshot, TenantConfig

__all__ = ["B2bua", "B2buaCounters", "Call", "CallFailure"]

log = logging.getLogger("pbxcore.b2bua")

SDP = "application/sdp"
_DEFAULT_TIMER = SessionTimerPolicy()  # 1800 s asked, 90 s the least accepted


@dataclass(eq=False)
class Call:
    """One call: the caller's side (A) and the callee's (B), their dialogs and media."""

    id: str
    tenant_id: str
    a: IncomingRequest
    media: MediaCall
    decision: Decision
    record: CallRecord | None = None
    forks: list[tuple[ClientInvite, MediaLeg]] = field(default_factory=list)
    a_dialog: Dialog | None = None
    b_dialog: Dialog | None = None
    answered: bool = False
    ended: bool = False
    watch: asyncio.Task[None] | None = None  # RTP timeout and maximum duration
    trunk_id: str | None = None  # the trunk that answered an outbound call
    cost_per_minute: Decimal | None = None
    # session timers (RFC 4028) by side "a" / "b", and when each side was last refreshed
    timers: dict[str, SessionTimer] = field(default_factory=dict)
    refreshed: dict[str, float] = field(default_factory=dict)
    updates: set[str] = field(default_factory=set)  # the sides whose party takes UPDATE
    pbx_answered: bool = False  # pbxcore answered A itself (a voice menu) before any B
    operator_id: str = ""
    caller_number: str = ""
    dialed: str = ""


@dataclass(frozen=True, slots=True)
class CallFailure:
    """A call that did not connect: what :attr:`B2bua.on_failure` receives. ``status`` is
    the final SIP status the caller got (0: none was sent, the call was dropped)."""

    call_id: str
    operator_id: str
    tenant_id: str | None
    status: int
    reason: str  # a disposition (busy, no_answer, failed) or the refusal's code
    from_number: str
    to_number: str
    trunk_id: str | None = None


@dataclass(frozen=True, slots=True)
class B2buaCounters:
    """Live numbers: ``active_calls`` now; the rest since the B2BUA was created. A trunk's
    failures are its attempts that failed over (no answer, a timeout, 408 or 5xx)."""

    active_calls: int
    calls_started: int
    calls_failed: int
    trunk_attempts: dict[str, int]
    trunk_failures: dict[str, int]


class B2bua:
    """INVITE and BYE handlers on a :class:`SipStack` that connect calls."""

    def __init__(
        self,
        stack: SipStack,
        *,
        snapshot: Callable[[], Snapshot],
        location: LocationService,
        authenticator: DigestAuthenticator,
        guard: BruteForceGuard,
        media: MediaEngine,
        cdr: CdrWriter | None = None,
        ring_timeout: float = 60.0,
        trunk_password: Callable[[bytes], str] | None = None,
        rates: CallRateGuard | None = None,
        session_timer: SessionTimerPolicy | None = _DEFAULT_TIMER,
        registered_trunk: Callable[[Request, str], str | None] | None = None,
        prompts: Callable[[str, str], Awaitable[Prompt | None]] | None = None,
    ) -> None:
        self.stack = stack
        self._snapshot = snapshot
        self.location = location
        self.authenticator = authenticator
        self.guard = guard
        self.media = media
        self.cdr = cdr
        self.ring_timeout = ring_timeout
        self._trunk_password = trunk_password  # decrypts a trunk's stored password
        self.rates = rates  # calls-per-second caps and the node's capacity
        # RFC 4028 on both legs of every call (None: no session timers)
        self.session_timer = session_timer
        self.session_timer_scale = 1.0  # real seconds per timer second (tests shorten it)
        # the trunk id of a carrier's INVITE by its registration (TrunkRegistrations)
        self.registered_trunk = registered_trunk
        # a tenant's prompt by (tenant id, prompt id), for voice menus (None: defaults only)
        self.prompts = prompts
        self.usage = UsageCounts({}, {})
        self.calls: dict[str, Call] = {}
        self._by_dialog: dict[DialogId, tuple[Call, str]] = {}
        self.closing = False  # shutting down: new calls get 503 (see shutdown)
        self._quiet = asyncio.Event()  # set while no call is in progress
        self._quiet.set()
        # on_failure(failure) when a call fails; it must not raise, nor block
        self.on_failure: Callable[[CallFailure], None] | None = None
        self._calls_started = 0
        self._calls_failed = 0
        self._trunk_attempts: dict[str, int] = {}
        self._trunk_failures: dict[str, int] = {}

    def counters(self) -> B2buaCounters:
        return B2buaCounters(
            active_calls=len(self.calls),
            calls_started=self._calls_started,
            calls_failed=self._calls_failed,
            trunk_attempts=dict(self._trunk_attempts),
            trunk_failures=dict(self._trunk_failures),
        )

    def attach(self) -> None:
        self.stack.set_handler("INVITE", self.on_invite)
        self.stack.set_handler("BYE", self.on_bye)
        self.stack.set_handler("UPDATE", self.on_update)
        self.stack.set_handler("INFO", self.on_info)
        self.stack.supported.add("timer")

    # -- a new call ----------------------------------------------------------------------

    async def on_invite(self, incoming: IncomingRequest) -> None:
        if incoming.dialog is not None:
            await self._reinvite(incoming)  # hold, resume, a new address
            return
        if self.closing:
            _unavailable(incoming, _SHUTTING_DOWN)
            return

        request = incoming.request
        snapshot = self._snapshot()
        caller_uri = request.from_.uri
        realm = caller_uri.host.lower()
        tenant = snapshot.tenant_for_realm(realm)
        if tenant is None or not caller_uri.is_sip:
            # not one of our phones (their From names their tenant's domain, and they are
            # challenged): a carrier's call if the source is one of its trunks' addresses
            found = trunk_for_source(snapshot, incoming.source.host) or self._by_registration(
                snapshot, incoming
            )
            if found is None:
                incoming.respond(403, "Forbidden")
                return
            await self._from_trunk(incoming, snapshot, *found)
            return
        result = authorize(
            request,
            realm,
            authenticator=self.authenticator,
            guard=self.guard,
            source_ip=incoming.source.host,
            proxy=True,
        )
        if isinstance(result, Refused):
            if result.drop:
                incoming.drop()
            else:
                incoming.respond(result.status, result.reason, headers=result.headers)
            return
        if result.username != caller_uri.user_unescaped:
            incoming.respond(403, "Forbidden")  # a phone calls as itself only
            return
        dialed = request.uri.user_unescaped if request.uri.is_sip else None
        if not dialed:
            incoming.respond(404, "Not Found")
            return
        if self._over_rate(incoming, tenant.id, result.username):
            return
        caller = ExtensionCaller(tenant.id, result.username)
        decision = decide(snapshot, caller, dialed, usage=self.usage)
        if decision.reject is not None:
            self._reject(incoming, decision)
            return
        if decision.kind == "outbound" and decision.trunks:
            await self._outbound_call(incoming, decision, tenant.domain, result.username, dialed)
            return
        if decision.kind != "internal" or not decision.extensions:
            incoming.respond(501, "Not Implemented")  # inbound and features: later slices
            return
        await self._internal_call(
            incoming, decision, tenant.domain, result.username, dialed, caller=caller
        )

    def _by_registration(
        self, snapshot: Snapshot, incoming: IncomingRequest
    ) -> tuple[str, Any] | None:
        """(operator id, trunk) of a carrier's INVITE to the Contact a trunk registered."""
        if self.registered_trunk is None:
            return None
        trunk_id = self.registered_trunk(incoming.request, incoming.source.host)
        if trunk_id is None:
            return None
        for operator_id, operator in snapshot.operators.items():
            trunk = operator.trunks.get(trunk_id)
            if trunk is not None and trunk.enabled:
                return operator_id, trunk
        return None

    async def _from_trunk(
        self, incoming: IncomingRequest, snapshot: Snapshot, operator_id: str, trunk: Any
    ) -> None:
        """A call from a carrier to one of the operator's DIDs (in the Request-URI, or in
        To when the carrier calls the Contact its trunk registered)."""
        request = incoming.request
        dialed = request.uri.user_unescaped if request.uri.is_sip else None
        to_contact = request.uri.is_sip and request.uri.param("line") is not None
        if to_contact and (not dialed or dialed == self.stack.contact_user):
            dialed = request.to.uri.user_unescaped if request.to.uri.is_sip else None
        if not dialed:
            incoming.respond(404, "Not Found")
            return
        calling = request.from_.uri.user_unescaped
        caller = TrunkCaller(operator_id, trunk.id, number=calling)
        decision = decide(snapshot, caller, dialed, usage=self.usage)
        if decision.reject is not None:
            self._reject(incoming, decision)
            return
        tenant = snapshot.tenants.get(decision.tenant_id or "")
        if tenant is not None and self._over_rate(incoming, tenant.id, None):
            return
        if decision.kind == "ivr" and tenant is not None:
            await self._menu_call(
                incoming, decision, tenant, calling or "anonymous", dialed, caller=caller
            )
            return
        if decision.kind not in ("inbound", "internal") or not decision.extensions or not tenant:
            incoming.respond(501, "Not Implemented")  # voicemail, ring groups ...: later slices
            return
        await self._internal_call(
            incoming,
            decision,
            tenant.domain,
            calling or "anonymous",
            dialed,
            caller=caller,
            direction="inbound",
        )

    def _over_rate(self, incoming: IncomingRequest, tenant_id: str, extension: str | None) -> bool:
        """Answer 503 with Retry-After when the caller is over its calls-per-second cap or
        the node is at capacity (the call is counted otherwise)."""
        if self.rates is None:
            return False
        overload = self.rates.check(tenant_id, extension, active_calls=len(self.calls))
        if overload is None:
            return False
        log.info("call %s refused: %s", incoming.request.call_id, overload.reason)
        _unavailable(incoming, overload)
        self._refused(incoming, tenant_id, 503, overload.code)
        return True

    def _reject(self, incoming: IncomingRequest, decision: Decision) -> None:
        reject = decision.reject
        assert reject is not None
        incoming.respond(
            reject.status,
            reject.phrase,
            headers=[("Reason", f'SIP;cause={reject.status};text="{reject.code}"')],
        )
        self._refused(incoming, decision.tenant_id, reject.status, reject.code)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "call %s refused: %d %s", incoming.request.call_id, reject.status, reject.code
            )

    def _refused(
        self, incoming: IncomingRequest, tenant_id: str | None, status: int, reason: str
    ) -> None:
        """A call refused before it began (limits, routing): a failure of its tenant's."""
        if self.on_failure is None or not tenant_id:
            return
        tenant = self._snapshot().tenants.get(tenant_id)
        if tenant is None:
            return
        request = incoming.request
        self._failed(
            CallFailure(
                call_id=request.call_id,
                operator_id=tenant.operator_id,
                tenant_id=tenant_id,
                status=status,
                reason=reason,
                from_number=request.from_.uri.user_unescaped or "",
                to_number=(request.uri.user_unescaped if request.uri.is_sip else None) or "",
            )
        )

    def _failed(self, failure: CallFailure) -> None:
        self._calls_failed += 1
        hook = self.on_failure
        if hook is not None:
            try:
                hook(failure)
            except Exception:  # an observer's bug must not break the call path
                log.exception("call %s: the failure hook failed", failure.call_id)

    async def _internal_call(
        self,
        incoming: IncomingRequest,
        decision: Decision,
        domain: str,
        caller_number: str,
        dialed: str,
        *,
        caller: Caller,
        direction: str = "internal",
    ) -> None:
        via = caller.trunk_id if isinstance(caller, TrunkCaller) else None
        call = self._begin(incoming, decision, direction, caller_number, dialed, via=via)
        if call is None:
            return
        try:
            await self._connect(call, decision, domain, caller_number, caller)
        except PortRangeExhaustedError as exc:
            log.warning("call %s: %s", call.id, exc)
            if not incoming.final_sent:
                _unavailable(incoming, _NO_PORTS)
            await self._end(call, "failed")
        except Exception:
            log.exception("call %s failed", call.id)
            if not incoming.final_sent:
                incoming.respond(500, "Server Internal Error")
            await self._end(call, "failed")

    async def _connect(
        self, call: Call, decision: Decision, domain: str, caller_number: str, caller: Caller
    ) -> None:
        """Ring the target extension; when it is busy, does not answer or is not
        registered, follow its forward for that (another extension, or out through a trunk),
        as far as :func:`decide_forward` allows."""
        incoming = call.a
        target = decision.extensions[0]
        for _hop in range(MAX_FORWARD_HOPS + 1):
            aor = Uri.parse(f"sip:{target.number}@{domain}").aor
            bindings = await self.location.lookup(aor)
            forwarding = target.forwarding
            statuses: list[int] = []
            if not bindings:
                outcome = "unavailable"
            else:
                timeout = self.ring_timeout
                if forwarding.no_answer:
                    timeout = float(forwarding.no_answer_seconds or DEFAULT_NO_ANSWER_SECONDS)
                outcome, statuses = await self._ring(
                    call, bindings, caller_number, target.number, domain, timeout=timeout
                )
            if outcome == "answered":
                return
            if outcome == "cancelled" or incoming.cancelled:
                await self._end(call, "cancelled")
                return
            if incoming.final_sent and not call.pbx_answered:  # refused while ringing (shutdown)
                await self._end(call, "failed")
                return
            if outcome in ("busy", "no_answer", "unavailable"):
                follow = decide_forward(
                    self._snapshot(),
                    caller,
                    target,
                    outcome,  # type: ignore[arg-type]
                    usage=self.usage,
                )
                call.decision = follow
                if follow.reject is None and follow.kind == "internal" and follow.extensions:
                    target = follow.extensions[0]
                    continue
                if follow.reject is None and follow.kind == "outbound" and follow.trunks:
                    await self._dial_trunks(call, follow)
                    return
            if not incoming.final_sent:
                incoming.respond(_failure_status(outcome, statuses))
            await self._end(call, _OUTCOME_DISPOSITION.get(outcome, "failed"))
            return
        incoming.respond(483, "Too Many Hops")
        await self._end(call, "failed")

    def _begin(
        self,
        incoming: IncomingRequest,
        decision: Decision,
        direction: str,
        caller_number: str,
        dialed: str,
        *,
        via: str | None = None,
    ) -> Call | None:
        """The call's media, counters and CDR; None (answered 488) when A's SDP is unusable,
        or 422/400 when its session timer is too small or malformed. ``via``: the trunk an
        inbound call came in on (its CDR's trunk). The CDR's ``to`` is the number called,
        in E.164 for an outbound call (the digits dialled are in its explain)."""
        request = incoming.request
        a_timer = self._timer_of(incoming)
        if a_timer is False:
            return None
        try:
            # transcode: the callee is offered PCMU and PCMA whatever the caller offered,
            # and the relay converts when the two sides agree on different laws
            media = self.media.create_call(request.body or None, transcode=True)
        except PortRangeExhaustedError as exc:
            log.warning("call %s: %s", request.call_id, exc)
            _unavailable(incoming, _NO_PORTS)
            return None
        except ValueError as exc:
            incoming.respond(
                488, "Not Acceptable Here", headers=[("Warning", f'399 pbxcore "{exc}"')]
            )
            return None
        tenant_id = decision.tenant_id or ""
        call = Call(request.call_id, tenant_id, incoming, media, decision)
        call.caller_number, call.dialed = caller_number, dialed
        self._calls_started += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("call %s: %s %s -> %s", call.id, direction, caller_number, dialed)
        if a_timer is not None:
            call.timers["a"] = a_timer
        if _allows_update(request):
            call.updates.add("a")
        self.calls[call.id] = call
        self._quiet.clear()
        self._count(tenant_id, +1)
        tenant = self._snapshot().tenants.get(tenant_id)
        call.operator_id = tenant.operator_id if tenant else ""
        if self.cdr is not None:
            called = decision.extensions[0].number if decision.extensions else None
            call.record = self.cdr.call_started(
                call_id=call.id,
                operator_id=tenant.operator_id if tenant else "",
                tenant_id=tenant_id,
                direction=direction,  # type: ignore[arg-type]
                from_number=caller_number,
                to_number=decision.number
                if direction == "outbound" and decision.number
                else dialed,
                # the tenant's extension of the call: the caller's, or the one called
                extension=caller_number if direction != "inbound" else called,
                trunk_id=via,
                explain=dict(decision.explain),
            )
        incoming.on_cancel(lambda: self._cancel_forks(call))
        return call

    async def _outbound_call(
        self,
        incoming: IncomingRequest,
        decision: Decision,
        domain: str,
        caller_number: str,
        dialed: str,
    ) -> None:
        call = self._begin(incoming, decision, "outbound", caller_number, dialed)
        if call is not None:
            await self._dial_trunks(call, decision)

    async def _dial_trunks(self, call: Call, decision: Decision) -> None:
        """Out through the candidates in order: the next one after 408, 5xx or no answer,
        never after an answer of the called party (486, 404, 603 ...)."""
        incoming = call.a
        last: Response | None = None
        overload: Overload | None = None
        try:
            for candidate in decision.trunks:
                if incoming.cancelled or (incoming.final_sent and not call.pbx_answered):
                    break
                trunk = candidate.trunk
                uri = (
                    f"sip:{candidate.number}@{trunk.host}:{trunk.port};transport={trunk.transport}"
                )
                try:
                    target = await self.stack.resolve(Uri.parse(uri))
                except (SipParseError, ValueError, OSError) as exc:
                    log.warning("trunk %s: cannot reach %s: %s", trunk.id, trunk.host, exc)
                    continue
                leg = call.media.fork()
                caller_id = candidate.caller_id.number
                out = self.stack.new_request(
                    "INVITE",
                    uri,
                    from_=f"<sip:{caller_id}@{trunk.host}>",
                    to=f"<sip:{candidate.number}@{trunk.host}>",
                    target=target,
                    body=str(leg.local_sdp).encode(),
                    headers=[("Content-Type", SDP), *self._invite_headers()],
                )
                credentials = None
                if trunk.auth_username and trunk.auth_password and self._trunk_password:
                    credentials = StaticCredentials(
                        trunk.auth_username, self._trunk_password(trunk.auth_password)
                    )
                self._channels(trunk.id, +1)
                call.trunk_id, call.cost_per_minute = trunk.id, candidate.cost_per_minute
                attempts = self._trunk_attempts
                attempts[trunk.id] = attempts.get(trunk.id, 0) + 1
                last = None
                try:
                    invite = await self.stack.invite(out, target=target, credentials=credentials)
                    call.forks.append((invite, leg))
                    # in a task of its own: the handler itself may not run as one
                    last = await asyncio.create_task(self._follow(call, invite, leg))
                finally:
                    if not call.answered:
                        self._channels(trunk.id, -1)
                        if not incoming.cancelled and _fails_over(last):
                            failures = self._trunk_failures
                            failures[trunk.id] = failures.get(trunk.id, 0) + 1
                if call.answered:
                    return
                status = None if last is None else last.status
                if status is not None and status != 408 and not 500 <= status < 600:
                    break  # the called party answered: no failover
        except PortRangeExhaustedError as exc:
            log.warning("call %s: %s", call.id, exc)
            last, overload = None, _NO_PORTS
        except Exception:
            log.exception("call %s failed", call.id)
            last = None
        if not incoming.final_sent:
            if last is not None:
                incoming.respond(last.status)
            else:
                _unavailable(incoming, overload or _NO_TRUNK)
        disposition = "cancelled" if incoming.cancelled else _disposition([last])
        await self._end(call, disposition)

    async def _ring(
        self,
        call: Call,
        bindings: list[Any],
        caller: str,
        callee: str,
        domain: str,
        *,
        timeout: float,
    ) -> tuple[str, list[int]]:
        """Ring every contact in parallel: ``answered``, ``cancelled``, ``busy``,
        ``no_answer`` or ``failed``, with the final statuses the forks got."""
        incoming = call.a
        a_from = incoming.request.headers.get("from") or f"<sip:{caller}@{domain}>"
        display = a_from.split(";tag=", 1)[0]
        call.forks = []
        for binding in bindings:
            leg = call.media.fork()
            try:
                uri = Uri.parse(binding.contact)
                target = await self.stack.resolve(uri)
            except (SipParseError, ValueError, OSError):
                _release(call.media, leg)
                continue
            out = self.stack.new_request(
                "INVITE",
                binding.contact,
                from_=display,
                to=f"<sip:{callee}@{domain}>",
                target=target,
                body=str(leg.local_sdp).encode(),
                headers=[("Content-Type", SDP), *self._invite_headers()],
            )
            invite = await self.stack.invite(out, target=target)
            call.forks.append((invite, leg))
        if not call.forks:
            return "unavailable", []
        results = await asyncio.gather(
            *(self._follow(call, invite, leg, timeout) for invite, leg in call.forks),
            return_exceptions=True,
        )
        statuses = [r.status for r in results if isinstance(r, Response)]
        if call.answered:
            return "answered", statuses
        if incoming.cancelled:
            return "cancelled", statuses
        if any(st in (486, 600) for st in statuses):
            return "busy", statuses
        if any(r is None for r in results) or any(st in (408, 480, 487) for st in statuses):
            return "no_answer", statuses
        return "failed", statuses

    async def _follow(
        self, call: Call, invite: ClientInvite, leg: MediaLeg, timeout: float | None = None
    ) -> Response | None:
        """Relay one fork's responses; the first 2xx wins the call. None: no final answer
        within ``timeout`` (the fork is cancelled)."""
        try:
            final = await asyncio.wait_for(
                self._provisionals(call, invite, leg), timeout or self.ring_timeout
            )
        except TimeoutError:
            final = None
        return await self._final(call, invite, leg, final)

    async def _provisionals(
        self, call: Call, invite: ClientInvite, leg: MediaLeg
    ) -> Response | None:
        """Relay a fork's 180/183 to the caller (once the caller has a final, no more);
        returns the fork's final response."""
        incoming = call.a
        final: Response | None = None
        async for response in invite.responses():
            status = response.status
            if status >= 200:
                final = response
                continue
            if call.answered or incoming.final_sent:
                continue
            if response.body and status == 183:
                with contextlib.suppress(ValueError):
                    await call.media.early(leg, response.body)
                    to_a = call.media.answer_for_a
                    if to_a is not None:
                        incoming.respond(183, body=str(to_a).encode(), content_type=SDP)
                        continue
            if status in (180, 183):
                incoming.respond(180)
        return final

    async def _final(
        self, call: Call, invite: ClientInvite, leg: MediaLeg, final: Response | None
    ) -> Response | None:
        incoming = call.a
        if final is None:
            invite.cancel()
            return None
        if 200 <= final.status < 300:
            if call.ended or call.answered or (incoming.final_sent and not call.pbx_answered):
                # another fork won (or the caller gave up): release this one
                if invite.dialog is not None:
                    self.stack.bye(invite.dialog)
                _release(call.media, leg)
                return final
            call.answered = True
            to_a = await call.media.answer(leg, final.body)
            for other, _other_leg in call.forks:
                if other is not invite:
                    other.cancel()
            self._b_timer(call, final)
            if call.pbx_answered:
                await self._bridged(call, invite, to_a)
                return final
            a_timer = call.timers.get("a")
            incoming.respond(
                200,
                body=str(to_a).encode() if to_a is not None else b"",
                content_type=SDP,
                headers=[
                    self._allow(),
                    *(a_timer.response_headers() if a_timer is not None else ()),
                ],
            )
            call.a_dialog = incoming.dialog
            call.b_dialog = invite.dialog
            if call.a_dialog is not None:
                self._by_dialog[call.a_dialog.id] = (call, "a")
            if call.b_dialog is not None:
                self._by_dialog[call.b_dialog.id] = (call, "b")
            if self.cdr is not None and call.record is not None:
                self.cdr.call_answered(call.record, trunk_id=call.trunk_id)
            try:
                ack = await incoming.wait_ack()
            except TimeoutError:
                if call.b_dialog is not None:
                    self.stack.bye(call.b_dialog)
                await self._end(call, "answered")
                return final
            if ack.body and call.media.a.awaiting_answer:
                await call.media.a.answer(ack.body)
            call.watch = asyncio.get_running_loop().create_task(self._supervise(call))
            return final
        _release(call.media, leg)
        return final

    def _cancel_forks(self, call: Call) -> None:
        for invite, _leg in call.forks:
            invite.cancel()

    # -- in the call -----------------------------------------------------------------------

    def _in_call(self, incoming: IncomingRequest) -> tuple[Call, str] | None:
        """The answered call and side ("a" / "b") of an in-dialog request."""
        dialog = incoming.dialog
        found = None if dialog is None else self._by_dialog.get(dialog.id)
        if found is not None:
            set_call_id(found[0].id)  # the callee's side logs as the call (the caller's id)
        return found

    async def _reinvite(self, incoming: IncomingRequest) -> None:
        """A re-INVITE from one party (hold, resume, a new address, a session refresh): its
        SDP goes through the relay to the other party (UPDATE or re-INVITE) and that
        party's answer comes back the same way. Without SDP pbxcore offers the party its
        relay port itself and takes the answer from the ACK."""
        found = self._in_call(incoming)
        if found is None:
            incoming.respond(481, "Call/Transaction Does Not Exist")
            return
        call, side = found
        extra = self._refresh_headers(call, side, incoming)
        if extra is None:
            return
        leg = call.media.a if side == "a" else call.media.b
        if leg is None or leg.released:
            incoming.respond(481, "Call/Transaction Does Not Exist")
            return
        if not incoming.request.body:
            offer = leg.offer(direction=_towards(call, side))
            incoming.respond(200, body=str(offer).encode(), content_type=SDP, headers=extra)
            try:
                ack = await incoming.wait_ack()
                if ack.body:
                    await leg.answer(ack.body)
            except TimeoutError:
                self._hang_up(call, "no ACK to a re-INVITE")
                await self._end(call, "answered")
            except ValueError as exc:
                log.info("call %s: the answer in the ACK is unusable: %s", call.id, exc)
            return
        await self._answer_offer(call, side, incoming, extra)

    async def on_update(self, incoming: IncomingRequest) -> None:
        """UPDATE (RFC 3311): a session refresh (no SDP) is answered here; an offer goes
        through the relay to the other party like a re-INVITE's. Before the answer pbxcore
        does not renegotiate (500 with Retry-After, RFC 3311 §5.2)."""
        found = self._in_call(incoming)
        if found is None:
            dialog = incoming.dialog
            early = None if dialog is None else self.calls.get(dialog.call_id)
            if early is None or early.answered:
                incoming.respond(481, "Call/Transaction Does Not Exist")
            elif incoming.request.body:
                incoming.respond(500, "Server Internal Error", headers=[("Retry-After", "2")])
            else:
                incoming.respond(200)
            return
        call, side = found
        extra = self._refresh_headers(call, side, incoming)
        if extra is None:
            return
        if not incoming.request.body:
            incoming.respond(200, headers=extra)
            return
        await self._answer_offer(call, side, incoming, extra)

    def _refresh_headers(
        self, call: Call, side: str, incoming: IncomingRequest
    ) -> list[tuple[str, str]] | None:
        """The re-INVITE or UPDATE refreshes the side's session timer: the headers of our
        2xx to it (Allow, Session-Expires); None when it was answered already (422/400)."""
        timer = self._refreshed_by(call, side, incoming)
        if timer is False:
            return None
        return [self._allow(), *(timer.response_headers() if timer is not None else ())]

    async def _answer_offer(
        self, call: Call, side: str, incoming: IncomingRequest, extra: list[tuple[str, str]]
    ) -> None:
        """Answer the offer in a re-INVITE or UPDATE with the other party's answer."""
        answer = await self._pass_offer(call, side, incoming.request.body)
        if isinstance(answer, int):
            incoming.respond(answer, headers=[("Retry-After", "1")] if answer == 500 else None)
            return
        incoming.respond(200, body=answer, content_type=SDP, headers=extra)

    async def _pass_offer(self, call: Call, side: str, body: bytes) -> bytes | int:
        """A party's offer through the relay to the other party and back: the SDP answer
        for the offering party, or the status to answer it with."""
        leg = call.media.a if side == "a" else call.media.b
        partner = call.media.b if side == "a" else call.media.a
        other_side = "b" if side == "a" else "a"
        other = call.b_dialog if side == "a" else call.a_dialog
        if leg is None or partner is None or other is None:
            return 481
        try:
            to_other = await leg.update(body)
        except ValueError as exc:
            log.info("call %s: unusable offer from %s: %s", call.id, side, exc)
            return 488
        final = await self._offer_to(call, other_side, other, str(to_other).encode())
        if final is None:
            return 500
        if not 200 <= final.status < 300 or not final.body:
            return final.status if final.status >= 300 else 488
        try:
            to_leg = await partner.update(final.body)
        except ValueError:
            return 488
        return str(to_leg).encode()

    async def _offer_to(
        self, call: Call, side: str, dialog: Dialog, body: bytes | None
    ) -> Response | None:
        """Send the party on ``side`` an UPDATE (when it takes them) or a re-INVITE with
        ``body`` (None: a refresh without SDP, UPDATE only); its final response, None
        when it gave none. A 2xx counts as a refresh of that side's session timer."""
        timer = call.timers.get(side)
        headers = [
            ("Contact", self._contact_toward(call, side)),
            self._allow(),
            *(timer.refresh_headers() if timer is not None else ()),
        ]
        if body is not None:
            headers.append(("Content-Type", SDP))
        method = "UPDATE" if side in call.updates or body is None else "INVITE"
        request = dialog.new_request(method, headers, body=body or b"")
        try:
            if method == "UPDATE":
                final = await asyncio.wait_for(
                    self.stack.request(request, dialog=dialog), self.ring_timeout
                )
            else:
                invite = await self.stack.invite(request, dialog=dialog)
                final = await asyncio.wait_for(asyncio.shield(invite.final), self.ring_timeout)
        except (TimeoutError, ConnectionError, OSError) as exc:
            log.info("%s to side %s of call %s not answered: %s", method, side, call.id, exc)
            return None
        if method == "UPDATE" and final.status in (405, 501):
            call.updates.discard(side)  # it said Allow: UPDATE but does not take them
        if 200 <= final.status < 300:
            self._answered_refresh(call, side, final)
        return final

    def _contact_toward(self, call: Call, side: str) -> str:
        """Our Contact for in-dialog requests to the party on ``side``."""
        if side == "a":
            return self.stack.contact_for(call.a.source)
        invite = next((i for i, _leg in call.forks if i.dialog is call.b_dialog), None)
        if invite is not None:
            contact = invite.request.headers.get("contact")
            if contact:
                return contact
        return self.stack.contact_for(call.a.source)

    # -- session timers (RFC 4028) ---------------------------------------------------------

    def _invite_headers(self) -> list[tuple[str, str]]:
        """What every INVITE pbxcore sends carries: Allow, and its session timer offer."""
        policy = self.session_timer
        return [self._allow(), *(policy.request_headers() if policy is not None else ())]

    def _allow(self) -> tuple[str, str]:
        return ("Allow", ", ".join(self.stack.allowed_methods))

    def _timer_of(self, incoming: IncomingRequest) -> SessionTimer | Literal[False] | None:
        """The caller's session timer for a new call; False when the INVITE was answered
        (422 Session Interval Too Small, or 400 for malformed timer headers)."""
        policy = self.session_timer
        if policy is None:
            return None
        try:
            timer = answer_invite(incoming.request, policy)
        except ValueError as exc:
            incoming.respond(400, str(exc))
            return False
        if isinstance(timer, TooSmall):
            incoming.respond(422, "Session Interval Too Small", headers=timer.headers)
            return False
        return timer

    def _refreshed_by(
        self, call: Call, side: str, incoming: IncomingRequest
    ) -> SessionTimer | Literal[False] | None:
        """A re-INVITE or UPDATE from the party on ``side`` refreshes its session timer
        (renegotiated from the request); False when the request was answered (422/400)."""
        if side not in call.timers or self.session_timer is None:
            return None
        timer = self._timer_of(incoming)
        if timer is False:
            return False
        assert timer is None or isinstance(timer, SessionTimer)
        if timer is None:
            call.timers.pop(side, None)
        else:
            call.timers[side] = timer
            call.refreshed[side] = asyncio.get_running_loop().time()
        return timer

    def _b_timer(self, call: Call, final: Response) -> None:
        """The callee's session timer from its 2xx, and whether it takes UPDATE."""
        if _allows_update(final):
            call.updates.add("b")
        policy = self.session_timer
        if policy is None:
            return
        try:
            timer = from_answer(final, policy)
        except ValueError as exc:
            log.info("call %s: the callee's Session-Expires is unusable: %s", call.id, exc)
            return
        if timer is not None:
            call.timers["b"] = timer

    def _answered_refresh(self, call: Call, side: str, final: Response) -> None:
        """A 2xx to a re-INVITE or UPDATE pbxcore sent: the timer of that side restarts
        with what the 2xx says (none: the party turned its timer off)."""
        if side not in call.timers or self.session_timer is None:
            return
        try:
            timer = from_answer(final, self.session_timer)
        except ValueError:
            timer = call.timers[side]
        if timer is None:
            call.timers.pop(side, None)
            return
        call.timers[side] = timer
        call.refreshed[side] = asyncio.get_running_loop().time()

    async def _refresh(self, call: Call, side: str) -> None:
        """Refresh the session of the party on ``side`` (we are its refresher): UPDATE
        without SDP when it takes them, else a re-INVITE re-offering its relay port. No
        answer, 408 or 481: the call is over on both sides."""
        dialog = call.a_dialog if side == "a" else call.b_dialog
        leg = call.media.a if side == "a" else call.media.b
        if dialog is None or leg is None or leg.released or call.ended:
            return
        body = None
        if side not in call.updates:
            body = str(leg.offer(direction=_towards(call, side))).encode()
        final = await self._offer_to(call, side, dialog, body)
        if self.calls.get(call.id) is not call:
            return  # the call ended meanwhile
        if final is None or final.status in (408, 481):
            status = "no answer" if final is None else str(final.status)
            self._hang_up(call, f"session refresh of side {side}: {status}")
            await self._end(call, "answered")
            return
        if body is not None and 200 <= final.status < 300 and final.body:
            with contextlib.suppress(ValueError):
                await leg.answer(final.body)

    def _hang_up(self, call: Call, reason: str) -> None:
        log.info("call %s ended by pbxcore: %s", call.id, reason)
        for dialog in (call.a_dialog, call.b_dialog):
            if dialog is not None:
                self.stack.bye(dialog)

    async def _supervise(self, call: Call) -> None:
        """End an answered call that carries no RTP any more (the relay's LegTimeout, not
        while a party holds), that reached the tenant's maximum duration, or whose party
        stopped refreshing its session timer; refresh the timers pbxcore keeps."""
        tenant = self._snapshot().tenants.get(call.tenant_id)
        limit = None if tenant is None else tenant.limits.max_call_duration_s
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = None if not limit else start + limit
        for side in call.timers:
            call.refreshed.setdefault(side, start)
        events = call.media.events
        refreshing: set[asyncio.Task[None]] = set()
        reason = ""
        try:
            while not call.ended:
                now = loop.time()
                wake = deadline
                for side, timer in call.timers.items():
                    at = call.refreshed[side] + timer.next_action * self.session_timer_scale
                    wake = at if wake is None else min(wake, at)
                try:
                    event = await asyncio.wait_for(
                        events.get(), None if wake is None else max(0.0, wake - now)
                    )
                except TimeoutError:
                    now = loop.time()
                    if deadline is not None and now >= deadline:
                        reason = "the tenant's maximum call duration"
                        break
                    expired = self._due_timers(call, now, refreshing)
                    if expired:
                        reason = f"side {expired} did not refresh its session"
                        break
                    continue
                if isinstance(event, LegTimeout) and not _held(call):
                    reason = f"no RTP for {event.timeout:g} s"
                    break
            else:
                return
        finally:
            for task in refreshing:
                if task is not asyncio.current_task():
                    task.cancel()
        self._hang_up(call, reason)
        await self._end(call, "answered")

    def _due_timers(self, call: Call, now: float, refreshing: set[asyncio.Task[None]]) -> str:
        """Start the refreshes that are due; the side whose peer let its session expire."""
        for side, timer in list(call.timers.items()):
            if now < call.refreshed[side] + timer.next_action * self.session_timer_scale:
                continue
            if not timer.we_refresh:
                return side
            call.refreshed[side] = now  # the next one in interval / 2 unless answered
            task = asyncio.get_running_loop().create_task(self._refresh(call, side))
            refreshing.add(task)
            task.add_done_callback(refreshing.discard)
        return ""

    async def on_info(self, incoming: IncomingRequest) -> None:
        """INFO in a call: a key (``application/dtmf-relay``, ``application/dtmf``) goes
        to the voice menu the caller is in; anything else, and keys once the call is
        bridged, goes to the other party, whose answer is relayed."""
        found = self._in_call(incoming)
        if found is None:
            incoming.respond(481, "Call/Transaction Does Not Exist")
            return
        call, side = found
        request = incoming.request
        content_type = request.headers.get("content-type") or ""
        in_menu = call.pbx_answered and side == "a" and call.b_dialog is None
        if in_menu:
            if content_type.split(";", 1)[0].strip().lower() not in DTMF_INFO_TYPES:
                incoming.respond(
                    415, "Unsupported Media Type", headers=[("Accept", ", ".join(DTMF_INFO_TYPES))]
                )
                return
            try:
                info = parse_dtmf_info(content_type, request.body)
                call.media.a.signal_digit(info.digit, info.duration_ms)
            except ValueError as exc:
                incoming.respond(400, "Bad Request", headers=[("Warning", f'399 pbxcore "{exc}"')])
                return
            except LegReleasedError:
                incoming.respond(481, "Call/Transaction Does Not Exist")
                return
            incoming.respond(200)
            return
        other = call.b_dialog if side == "a" else call.a_dialog
        if other is None:
            incoming.respond(481, "Call/Transaction Does Not Exist")
            return
        headers = [("Content-Type", content_type)] if content_type else []
        passed = other.new_request("INFO", headers, body=request.body)
        try:
            final = await asyncio.wait_for(self.stack.request(passed, dialog=other), 32)
        except (TimeoutError, ConnectionError, OSError):  # (a transaction timeout too)
            incoming.respond(408, "Request Timeout")
            return
        incoming.respond(final.status, final.reason)

    async def on_bye(self, incoming: IncomingRequest) -> None:
        found = self._in_call(incoming)
        if found is None:
            incoming.respond(481, "Call/Transaction Does Not Exist")
            return
        call, side = found
        incoming.respond(200)
        other = call.b_dialog if side == "a" else call.a_dialog
        if other is not None:
            self.stack.bye(other)
        await self._end(call, "answered")

    async def _end(self, call: Call, disposition: str) -> None:
        if call.ended:
            return
        call.ended = True
        if call.pbx_answered:
            disposition = "answered"  # pbxcore answered it (a voice menu), whatever came next
        if not call.answered:
            self._cancel_forks(call)  # a caller gone while its menu's extension rings
        if log.isEnabledFor(logging.DEBUG):
            log.debug("call %s ended: %s", call.id, disposition)
        if call.watch is not None and call.watch is not asyncio.current_task():
            call.watch.cancel()
        # break the call's reference cycles (its task, its forks' transactions) now, so
        # that it is freed at once rather than at the next full garbage collection
        call.watch = None
        call.forks = []
        self.calls.pop(call.id, None)
        if not self.calls:
            self._quiet.set()
        for d in (call.a_dialog, call.b_dialog):
            if d is not None:
                self._by_dialog.pop(d.id, None)
        self._count(call.tenant_id, -1)
        if call.answered and call.trunk_id is not None:
            self._channels(call.trunk_id, -1)
        with contextlib.suppress(Exception):
            await self.media.delete(call.media)
        if self.cdr is not None and call.record is not None:
            self.cdr.call_ended(
                call.record,
                disposition=disposition,  # type: ignore[arg-type]
                cost_per_minute=call.cost_per_minute if call.answered else None,
            )
        if disposition in ("failed", "busy", "no_answer") and not call.answered:
            self._failed(
                CallFailure(
                    call_id=call.id,
                    operator_id=call.operator_id,
                    tenant_id=call.tenant_id or None,
                    status=call.a.final_status or 0,
                    reason=disposition,
                    from_number=call.caller_number,
                    to_number=call.dialed,
                    trunk_id=call.trunk_id,
                )
            )

    # -- a voice menu --------------------------------------------------------------------

    async def _menu_call(
        self,
        incoming: IncomingRequest,
        decision: Decision,
        tenant: TenantConfig,
        calling: str,
        dialed: str,
        *,
        caller: TrunkCaller,
    ) -> None:
        """A carrier's call to a DID that points at a voice menu: pbxcore answers it,
        runs the menu (:func:`~pbxcore.pbx.ivr.run_menu`) and connects the caller to the
        destination it chose (an extension, with its forwarding; a number out through the
        tenant's routes); hang-up or a destination that fails ends the call with BYE."""
        ivr = tenant.ivrs.get(str((decision.destination or {}).get("id")))
        call = self._begin(incoming, decision, "inbound", calling, dialed, via=caller.trunk_id)
        if call is None:
            return
        if ivr is None:  # (decide checked it: the snapshot cannot lose it in between)
            incoming.respond(480, "Temporarily Unavailable")
            await self._end(call, "failed")
            return
        try:
            answer = await call.media.a.accept()
        except ValueError as exc:  # no offer in the INVITE: a menu needs one
            incoming.respond(
                488, "Not Acceptable Here", headers=[("Warning", f'399 pbxcore "{exc}"')]
            )
            await self._end(call, "failed")
            return
        a_timer = call.timers.get("a")
        incoming.respond(
            200,
            body=str(answer).encode(),
            content_type=SDP,
            headers=[self._allow(), *(a_timer.response_headers() if a_timer is not None else ())],
        )
        call.pbx_answered = True
        call.a_dialog = incoming.dialog
        if call.a_dialog is not None:
            self._by_dialog[call.a_dialog.id] = (call, "a")
        if self.cdr is not None and call.record is not None:
            self.cdr.call_answered(call.record)
        try:
            await incoming.wait_ack()
        except TimeoutError:
            ivr = None  # no ACK: the caller is gone
        follow = await self._through_menus(call, tenant, ivr, caller) if ivr is not None else None
        if call.ended:
            return
        try:
            if follow is not None and follow.reject is None:
                if follow.kind in ("internal", "inbound") and follow.extensions:
                    await self._connect(call, follow, tenant.domain, calling, caller)
                elif follow.kind == "outbound" and follow.trunks:
                    await self._dial_trunks(call, follow)
        except Exception:
            log.exception("call %s: the menu's destination failed", call.id)
        if call.b_dialog is None and not call.ended:  # nobody took it: hang up on the caller
            self._hang_up(call, "the menu's destination did not answer")
            await self._end(call, "answered")

    async def _through_menus(
        self, call: Call, tenant: TenantConfig, ivr: IvrConfig, caller: TrunkCaller
    ) -> Decision | None:
        """Run the caller through ``ivr`` and whatever menus its choice leads to (through a
        schedule, say); the decision for the first destination that is not a menu, None
        for a hang-up (or the caller gone)."""
        for _step in range(MAX_MENU_DEPTH):
            try:
                destination, trace = await run_menu(
                    call.media.a, tenant, ivr, self._prompt_of(tenant.id)
                )
            except (LegReleasedError, ValueError):
                return None  # the caller hung up in the menu
            log.info("call %s: menu %s chose %s (%s)", call.id, ivr.id, destination, trace)
            if call.ended or destination is None or destination.get("type") == "hangup":
                return None
            follow = decide_destination(
                self._snapshot(), caller, tenant.id, destination,
                source=f"IVR {ivr.name}", usage=self.usage,
            )  # fmt: skip
            call.decision = follow
            following = tenant.ivrs.get(str((follow.destination or {}).get("id")))
            if follow.kind != "ivr" or following is None:
                return follow
            ivr = following  # a schedule that leads into another menu
        return None

    def _prompt_of(self, tenant_id: str) -> Callable[[str], Awaitable[Prompt | None]]:
        prompts = self.prompts

        async def prompt(prompt_id: str) -> Prompt | None:
            return None if prompts is None else await prompts(tenant_id, prompt_id)

        return prompt

    async def _bridged(self, call: Call, invite: ClientInvite, to_a: SessionDescription) -> None:
        """A fork answered a caller pbxcore had answered itself (a menu): the two talk
        now; A is re-offered only when its relay port moved."""
        call.b_dialog = invite.dialog
        if call.b_dialog is not None:
            self._by_dialog[call.b_dialog.id] = (call, "b")
        if call.media.a.awaiting_answer and call.a_dialog is not None:
            final = await self._offer_to(call, "a", call.a_dialog, str(to_a).encode())
            if final is not None and 200 <= final.status < 300 and final.body:
                with contextlib.suppress(ValueError):
                    await call.media.a.answer(final.body)
        if call.trunk_id is not None and self.cdr is not None and call.record is not None:
            self.cdr.call_answered(call.record, trunk_id=call.trunk_id)
        call.watch = asyncio.get_running_loop().create_task(self._supervise(call))

    # -- shutting down -------------------------------------------------------------------

    async def shutdown(
        self, grace: float, *, hurry: asyncio.Event | None = None, settle: float = 5.0
    ) -> int:
        """Stop taking calls and end the ones in progress; the number pbxcore ended.

        New calls get 503 with Retry-After at once. The calls in progress may finish by
        themselves for ``grace`` seconds (or until ``hurry`` is set: a second signal);
        then each answered call gets a BYE on both sides, and a ringing one a 503 to its
        caller and CANCEL to its forks. Their BYEs and CANCELs get ``settle`` seconds to
        be answered; a call still not over then is ended without them. Every call gets
        its CDR (``answered`` for the ones that were up, ``failed`` for the ringing ones).
        """
        self.closing = True
        if self.calls and grace > 0:
            log.info("shutting down: %d calls may finish within %g s", len(self.calls), grace)
            waits = [self._quiet.wait()] + ([hurry.wait()] if hurry is not None else [])
            await _first(waits, grace)
        left = list(self.calls.values())
        if not left:
            return 0
        log.info("shutting down: ending %d calls", len(left))
        byes: list[asyncio.Task[None]] = []
        for call in left:
            if call.answered:
                log.info("call %s ended by pbxcore: the node shuts down", call.id)
                for dialog in (call.a_dialog, call.b_dialog):
                    task = None if dialog is None else self.stack.bye(dialog)
                    if task is not None:
                        byes.append(task)
                await self._end(call, "answered")
            else:
                if not call.a.final_sent:
                    _unavailable(call.a, _SHUTTING_DOWN)
                self._cancel_forks(call)
        await _first([self._quiet.wait()], settle)
        for call in list(self.calls.values()):
            await self._end(call, "answered" if call.answered else "failed")
        if byes:
            await asyncio.wait(byes, timeout=settle)
        return len(left)

    def _channels(self, trunk_id: str, delta: int) -> None:
        channels = self.usage.channels
        assert isinstance(channels, dict)
        channels[trunk_id] = max(0, channels.get(trunk_id, 0) + delta)

    def _count(self, tenant_id: str, delta: int) -> None:
        calls = self.usage.calls
        assert isinstance(calls, dict)
        calls[tenant_id] = max(0, calls.get(tenant_id, 0) + delta)


_NO_PORTS = Overload(5, "media_capacity", "no free RTP ports in the relay")
_SHUTTING_DOWN = Overload(5, "shutting_down", "this node is shutting down")
_NO_TRUNK = Overload(30, "no_trunk", "no trunk could take the call")


async def _first(waits: list[Coroutine[Any, Any, Any]], timeout: float) -> None:
    """Wait until the first of ``waits`` is done or ``timeout`` seconds have passed."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _unavailable(incoming: IncomingRequest, overload: Overload) -> None:
    incoming.respond(503, "Service Unavailable", headers=overload.headers)


def _fails_over(final: Response | None) -> bool:
    """A trunk's answer after which the next trunk is tried: none, 408 or 5xx."""
    return final is None or final.status == 408 or 500 <= final.status < 600


def _best_failure(statuses: list[int]) -> int:
    """The answer to the caller when no fork answered (RFC 3261 §16.7 step 6, simplified)."""
    if not statuses:
        return 408
    for preferred in (486, 600, 603):
        if preferred in statuses:
            return preferred
    return min(statuses, key=lambda s: (s // 100 == 5, s))


def _disposition(results: list[Any]) -> str:
    statuses = [r.status for r in results if isinstance(r, Response)]
    if any(s in (486, 600) for s in statuses):
        return "busy"
    if not statuses or any(s in (408, 480, 487) for s in statuses):
        return "no_answer"
    return "failed"


def _release(media: MediaCall, leg: MediaLeg) -> None:
    """Stop a fork's media (already gone when another fork's answer released it)."""
    with contextlib.suppress(ValueError):
        media.release(leg)


_OUTCOME_DISPOSITION = {
    "busy": "busy",
    "no_answer": "no_answer",
    "unavailable": "failed",
    "failed": "failed",
    "cancelled": "cancelled",
}


def _failure_status(outcome: str, statuses: list[int]) -> int:
    """What the caller gets when nobody answered and no forward took the call."""
    if outcome == "busy":
        return 486
    if outcome in ("no_answer", "unavailable"):
        return 480
    return _best_failure(statuses)


def _held(call: Call) -> bool:
    """A party is on hold (it sends, or receives, nothing on purpose): silence is expected."""
    return any(
        leg is not None and leg.direction not in (None, "sendrecv")
        for leg in (call.media.a, call.media.b)
    )


def _allows_update(message: Request | Response) -> bool:
    """The message's Allow lists UPDATE."""
    return any(
        method.strip().upper() == "UPDATE"
        for value in message.headers.get_all("allow")
        for method in value.split(",")
    )


def _towards(call: Call, side: str) -> str:
    """The direction pbxcore offers the party on ``side`` when it re-offers itself: what
    the other party's last SDP allows (a party on hold keeps hearing nothing)."""
    partner = call.media.b if side == "a" else call.media.a
    direction = "sendrecv" if partner is None or partner.direction is None else partner.direction
    return {"sendonly": "recvonly", "recvonly": "sendonly"}.get(direction, direction)
