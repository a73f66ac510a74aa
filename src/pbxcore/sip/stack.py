"""The SIP stack: transports, transactions, dialogs and dispatch to per-method handlers.

:class:`SipStack` parses what the transports deliver, stamps ``received``/``rport`` on
the top Via (RFC 3261 §18.2.1, RFC 3581), matches requests to server transactions and
responses to client transactions, keeps the dialog table (RFC 3261 §12), and hands
each new request to the :data:`Handler` registered for its method as an
:class:`IncomingRequest`: the request, where it came from, its dialog, and the means
to answer it. The registrar is the REGISTER handler; the B2BUA registers INVITE,
BYE and the rest. Methods without a handler get 405 (or 501 when unknown); OPTIONS
without one gets 200 with the Allow list.

The UAS core duties live here too: an INVITE answered with a 2xx creates the dialog
and the 2xx is retransmitted until its ACK arrives (RFC 3261 §13.3.1.4, RFC 6026);
a CANCEL is answered with 200, the INVITE with 487, and the handler learns of it
through :attr:`IncomingRequest.cancelled`.

The UAC side: :meth:`SipStack.request` sends a request (out of dialog or in one) and
returns the final response; :meth:`SipStack.invite` starts an INVITE and returns a
:class:`ClientInvite` that reports every provisional, ACKs each 2xx (retransmitted or
forked), and can be cancelled. Both add Via and Max-Forwards, pick the next hop from
Route or the Request-URI (RFC 3261 §8.1.2) and answer a 401/407 with stored
:class:`ClientCredentials` (RFC 3261 §22.2, RFC 7616).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import ipaddress
import logging
import re
import secrets
import ssl
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Hashable,
    Iterable,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, Protocol

from pbxcore.sip.auth import DigestAlgorithm, compute_ha1, compute_response
from pbxcore.sip.dialog import DIALOG_CREATING, Dialog, DialogError, DialogId, DialogState
from pbxcore.sip.errors import SipParseError
from pbxcore.sip.headers import Address, Via, new_branch, new_tag, split_list
from pbxcore.sip.logcontext import CALL_ID
from pbxcore.sip.message import (
    REASON_PHRASES,
    Request,
    Response,
    make_response,
    parse_message,
    validate_request,
    validate_response,
)
from pbxcore.sip.transaction import (
    CompletedResponses,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    TimerSettings,
    TransactionState,
    TransactionTimeoutError,
)
from pbxcore.sip.transport import (
    ListenAddress,
    RateLimit,
    Source,
    TransportLayer,
    TransportLimits,
    TransportName,
)
from pbxcore.sip.uri import Uri

__all__ = [
    "KNOWN_METHODS",
    "ClientCredentials",
    "ClientInvite",
    "FastPath",
    "Handler",
    "IncomingRequest",
    "SipStack",
    "StatelessCheck",
    "StaticCredentials",
    "Target",
    "client_key",
    "server_key",
    "stamp_via",
]

log = logging.getLogger("pbxcore.sip.stack")

# the methods a handler may be registered for (RFC 3261, 3262, 3311, 3428, 3515, 6086, 6665)
KNOWN_METHODS = frozenset(
    {
        "REGISTER",
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "INFO",
        "REFER",
        "SUBSCRIBE",
        "NOTIFY",
        "MESSAGE",
        "UPDATE",
        "PRACK",
        "PUBLISH",
    }
)
# what an OPTIONS answer says besides Allow (RFC 3261 §11.2)
_OPTIONS_HEADERS = (("Accept", "application/sdp"),)
# never matched to a dialog, whatever their To tag says
_NO_DIALOG_MATCH = frozenset({"REGISTER", "OPTIONS", "CANCEL"})
# in-dialog only: with no dialog to match they get 481 (RFC 3261 §12.2.2)
_IN_DIALOG_ONLY = frozenset({"BYE", "UPDATE", "INFO", "PRACK", "NOTIFY"})


def server_key(request: Request) -> Hashable:
    """The server transaction a request belongs to (RFC 3261 §17.2.3).

    With an RFC 3261 branch: branch, sent-by and method (ACK counts as INVITE).
    Otherwise (RFC 2543 peers): Request-URI, From tag, Call-ID, CSeq number and the top
    Via; the To tag is left out so that the ACK (which carries ours) finds its INVITE.
    """
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    if via.has_rfc3261_branch:
        return (via.branch, via.host.lower(), via.port, method)
    return (
        "2543",
        request.uri_text,
        request.from_.tag,
        request.call_id,
        request.cseq[0],
        str(via),
        method,
    )


def _invite_key_of_cancel(request: Request) -> Hashable:
    key = server_key(request)
    assert isinstance(key, tuple)
    return (*key[:-1], "INVITE")


def client_key(response: Response) -> Hashable:
    """The client transaction a response belongs to (§17.1.3): branch and CSeq method."""
    return (response.top_via.branch, response.cseq[1])


def stamp_via(request: Request, source: Source) -> None:
    """Set ``received`` (and fill ``rport``) on the top Via from the packet's real source,
    as RFC 3261 §18.2.1 and RFC 3581 §4 ask of a server.

    A ``received`` the sender wrote itself is overwritten: responses go where the request
    really came from, never where the sender says.
    """
    via = request.top_via
    rport = via.rport_requested
    if not rport and via.host == source.host and via.received is None:
        return
    stamped = via.copy()
    for name in list(stamped.params):
        lower = name.lower()
        if lower == "received" or (rport and lower == "rport"):
            del stamped.params[name]
    stamped.params["received"] = source.host
    if rport:
        stamped.params["rport"] = str(source.port)
    request.top_via = stamped
    request.headers.memo("top-via", lambda: stamped)  # no need to parse what we just built


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes: transport, host (an IP address) and port."""

    transport: TransportName
    host: str
    port: int


class _Destination:
    """Where the responses of one server transaction go (RFC 3261 §18.2.2, RFC 3581)."""

    __slots__ = ("host", "layer", "port", "source", "transport")

    def __init__(self, layer: TransportLayer, source: Source, via: Via) -> None:
        self.layer = layer
        self.source = source
        self.transport: TransportName = source.transport
        if source.reliable:
            # a new connection, if needed, goes to received (source) and sent-by port
            self.host = source.host
            self.port = via.port or (5061 if source.transport == "tls" else 5060)
        elif via.rport_requested:
            self.host, self.port = source.host, source.port
        else:
            # received is always the real source (stamp_via), else sent-by is the source
            self.host = source.host
            self.port = via.port or 5060

    def send(self, data: bytes) -> bool:
        return self.layer.send(
            data, self.transport, self.host, self.port, channel=self.source.channel
        )


Handler = Callable[["IncomingRequest"], Awaitable[None] | object]
"""A per-method request handler: called once per new request (not for retransmissions).

It answers through :meth:`IncomingRequest.respond`, at once or later; a coroutine
handler runs as a task. An exception before a final response is sent gets a 500.
"""


StatelessCheck = Callable[[Request, Source], bool]
"""A handler's stateless first look at a new request: True when it answered or dropped it."""


class FastPath(Protocol):
    """A pre-parse hook for one kind of datagram (the REGISTER fast path is one).

    ``handle`` returns True when it answered the raw ``data`` itself; False leaves the
    message to the general path, as if the hook did not exist.
    """

    prefix: bytes

    def handle(self, data: bytes, source: Source) -> bool: ...


class ClientCredentials(Protocol):
    """Credentials the stack answers a 401/407 with, per realm (a carrier's, say)."""

    def lookup(self, realm: str) -> tuple[str, str] | None:
        """``(username, password)`` for ``realm``, or None to give up."""
        ...


class StaticCredentials:
    """One username and password for every realm (or only for ``realms`` when given)."""

    def __init__(self, username: str, password: str, realms: Iterable[str] = ()) -> None:
        self.username = username
        self._password = password
        self._realms = frozenset(realms)

    def lookup(self, realm: str) -> tuple[str, str] | None:
        if self._realms and realm not in self._realms:
            return None
        return self.username, self._password

    def __repr__(self) -> str:  # never print the password
        return f"StaticCredentials({self.username!r})"


class IncomingRequest:
    """A new request as its handler sees it: the request, its source, its dialog (for an
    in-dialog request) and the server transaction behind :meth:`respond`."""

    __slots__ = (
        "_ack",
        "_cancel_callbacks",
        "_local_tag",
        "_retransmit",
        "_stack",
        "_tx",
        "cancelled",
        "dialog",
        "final_status",
        "request",
        "source",
    )

    def __init__(
        self,
        stack: SipStack,
        request: Request,
        source: Source,
        tx: NonInviteServerTransaction[bytes] | InviteServerTransaction[bytes],
        dialog: Dialog | None,
    ) -> None:
        self._stack = stack
        self.request = request
        self.source = source
        self._tx = tx
        self.dialog = dialog
        self.final_status: int | None = None
        self._local_tag: str | None = None
        self.cancelled = False
        self._cancel_callbacks: list[Callable[[], object]] | None = None
        self._ack: asyncio.Future[Request] | None = None
        self._retransmit: asyncio.TimerHandle | None = None

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def local_tag(self) -> str:
        """Our To tag in the responses: the dialog's; a fresh one for a request that may
        create a dialog; the stack's own for the others (OPTIONS, REGISTER, ...)."""
        tag = self._local_tag
        if tag is None:
            request = self.request
            tag = request.to.tag or (
                new_tag() if request.method in DIALOG_CREATING else self._stack.tag
            )
            self._local_tag = tag
        return tag

    @property
    def final_sent(self) -> bool:
        return self.final_status is not None

    def respond(
        self,
        status: int,
        reason: str | None = None,
        *,
        headers: Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        contact: bool | None = None,
    ) -> Response:
        """Build and send a response; returns it.

        ``contact`` adds our Contact (default: for 1xx/2xx to a dialog-creating request
        and 2xx to a target refresh). A 1xx/2xx to a dialog-creating request creates the
        dialog (:attr:`dialog`); a 2xx to an INVITE is retransmitted until the ACK.
        """
        items = [] if headers is None else list(headers)
        if content_type is not None:
            items.append(("Content-Type", content_type))
        if contact is None:
            method = self.request.method
            contact = (method in DIALOG_CREATING and 100 < status < 300) or (
                200 <= status < 300 and method == "UPDATE"
            )
        if contact and not any(name.lower() in ("contact", "m") for name, _ in items):
            items.append(("Contact", self._stack.contact_for(self.source)))
        response = make_response(
            self.request, status, reason, to_tag=self.local_tag, headers=items, body=body
        )
        self.send(response)
        return response

    def drop(self) -> None:
        """Answer nothing at all (a banned source): the transaction ends silently."""
        if self.final_status is None:
            self.final_status = 0
            self._tx._terminate()

    def send(self, response: Response) -> None:
        """Send a response built by the caller (it must answer :attr:`request`)."""
        status = response.status
        if self.final_status is not None:
            raise RuntimeError(f"{self.method} already answered with {self.final_status}")
        stack = self._stack
        stack.finish(response)
        method = self.request.method
        if method in DIALOG_CREATING and 100 < status < 300 and self.dialog is None:
            with contextlib.suppress(ValueError):  # no From tag / no Contact: no dialog
                self.dialog = Dialog.from_uas(self.request, response)
                stack.add_dialog(self.dialog, flow=self.source)
        data = bytes(response)
        if status >= 200:
            self.final_status = status
            # §9.2: a CANCEL after the final has no effect; the transaction outlives the call
            # (timer L), so do not keep what the callbacks hold (the whole call) alive with it
            self._cancel_callbacks = None
            if method == "INVITE":
                stack._invite_answered(self)
        self._tx.respond(data, status)
        if method == "INVITE" and 200 <= status < 300:
            if self.dialog is not None:
                self.dialog.confirm()
            self._start_2xx_retransmission(data)
        elif method == "BYE" and 200 <= status < 300 and self.dialog is not None:
            self.dialog.terminate()
            stack.remove_dialog(self.dialog)
        elif (
            status >= 300
            and method in DIALOG_CREATING
            and self.dialog is not None
            and self.dialog.state is DialogState.EARLY
        ):
            self.dialog.terminate()  # §12.3: a non-2xx final ends the early dialog
            stack.remove_dialog(self.dialog)

    # -- INVITE: 2xx retransmission until the ACK (§13.3.1.4) --------------------------------

    def _start_2xx_retransmission(self, data: bytes) -> None:
        stack = self._stack
        loop = stack.loop
        self._ack = loop.create_future()
        timers = stack.timers
        deadline = loop.time() + timers.timer_h  # 64*T1
        stack._awaiting_ack[(self.request.call_id, self.local_tag, self.request.cseq[0])] = self
        self._retransmit = loop.call_later(timers.t1, self._resend_2xx, data, deadline, timers.t1)

    def _resend_2xx(self, data: bytes, deadline: float, interval: float) -> None:
        # a method, not a closure naming itself: that would be a reference cycle holding
        # the request, its dialog and the call until the cyclic garbage collector runs
        if self._ack is None or self._ack.done():
            return
        stack = self._stack
        loop = stack.loop
        if loop.time() >= deadline:
            self._ack_timeout()
            return
        self._tx.respond(data, 200)  # through the Accepted transaction, or...
        if self._tx.state is TransactionState.TERMINATED:
            stack.send_response_bytes(data, self.request, self.source)
        nxt = min(2 * interval, stack.timers.t2)
        self._retransmit = loop.call_later(nxt, self._resend_2xx, data, deadline, nxt)

    def _ack_timeout(self) -> None:
        self._forget_ack()
        if self._ack is not None and not self._ack.done():
            self._ack.set_exception(TimeoutError("no ACK for the 2xx within 64*T1"))
            self._ack.exception()  # retrieved here: a handler need not wait for it
        dialog = self.dialog
        if dialog is not None and dialog.state is not DialogState.TERMINATED:
            # §13.3.1.4: the session SHOULD be terminated with a BYE
            log.info("no ACK for the 2xx to INVITE %s: sending BYE", self.request.call_id)
            self._stack.bye(dialog)

    def _acked(self, ack: Request) -> None:
        self._forget_ack()
        if self._ack is not None and not self._ack.done():
            self._ack.set_result(ack)

    def _forget_ack(self) -> None:
        if self._retransmit is not None:
            self._retransmit.cancel()
            self._retransmit = None
        key = (self.request.call_id, self.local_tag, self.request.cseq[0])
        if self._stack._awaiting_ack.get(key) is self:
            del self._stack._awaiting_ack[key]

    async def wait_ack(self) -> Request:
        """The ACK for our 2xx (it may carry the SDP answer of a late offer).

        Raises TimeoutError when none came within 64*T1 (the stack has then sent BYE).
        """
        if self._ack is None:
            raise RuntimeError("wait_ack() before a 2xx to an INVITE was sent")
        return await asyncio.shield(self._ack)

    # -- CANCEL ------------------------------------------------------------------------------

    def on_cancel(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` when a CANCEL for this request arrives (before its final)."""
        if self.cancelled:
            callback()
        else:
            if self._cancel_callbacks is None:
                self._cancel_callbacks = []
            self._cancel_callbacks.append(callback)

    def _cancel(self) -> None:
        if self.final_status is not None:
            return  # §9.2: a CANCEL after the final response has no effect
        self.cancelled = True
        callbacks = self._cancel_callbacks or []
        self.respond(487)  # (forgets the callbacks)
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("cancel callback failed")


class _AnsweredInvite:
    """What a CANCEL still needs of an INVITE answered with a final response while its
    transaction lives on (timer L): the To tag for the 200 to the CANCEL, nothing to
    cancel (§9.2). It replaces the :class:`IncomingRequest`, so the request, its dialog
    and the call do not stay in memory for 64*T1 after the call."""

    __slots__ = ("local_tag",)

    def __init__(self, local_tag: str) -> None:
        self.local_tag = local_tag

    def _cancel(self) -> None:
        pass


class _Hop:
    """How an outgoing request reaches its next hop."""

    __slots__ = ("channel", "target")

    def __init__(self, target: Target, channel: Any = None) -> None:
        self.target = target
        self.channel = channel


class ClientInvite:
    """An INVITE we sent: provisionals, the final response, its dialog(s), CANCEL.

    ``async for response in invite.responses()`` yields every provisional (1xx) and then
    the final response; :attr:`final` is a future of the final response. Each 2xx is
    ACKed (with ``auto_ack``; else call :meth:`ack`), a retransmitted 2xx gets the same
    ACK again, and a 2xx from another fork after the first is ACKed and released with a
    BYE (RFC 3261 §13.2.2.4). :meth:`cancel` sends CANCEL once a provisional has come
    (§9.1); if a 2xx crosses the CANCEL, the call is ACKed and ended with BYE and
    :attr:`cancelled` stays True.
    """

    def __init__(
        self,
        stack: SipStack,
        request: Request,
        hop: _Hop,
        credentials: ClientCredentials | None,
        *,
        auto_ack: bool,
    ) -> None:
        self._stack = stack
        self.request = request
        self._hop = hop
        self._credentials = credentials
        self._auto_ack = auto_ack
        self._answered_realms: set[str] = set()
        self._queue: asyncio.Queue[Response] = asyncio.Queue()
        self.final: asyncio.Future[Response] = stack.loop.create_future()
        self.provisionals: list[Response] = []
        self.dialog: Dialog | None = None
        self.early: dict[str, Dialog] = {}  # remote tag -> early dialog
        self.cancelled = False
        self._cancel_sent = False
        self._acks: dict[str, Request] = {}  # remote tag -> the ACK we sent its 2xx
        self._tx: InviteClientTransaction[Any] | None = None
        self._cancel_timer: asyncio.TimerHandle | None = None

    # -- driving -----------------------------------------------------------------------------

    def _start(self) -> None:
        self._tx = self._stack._start_invite_tx(self)

    def _on_provisional(self, response: Response, status: int) -> None:
        if status > 100:
            tag = response.to.tag
            if tag is not None and tag not in self.early:
                with contextlib.suppress(ValueError, SipParseError):
                    self.early[tag] = Dialog.from_uac(self.request, response)
        self.provisionals.append(response)
        self._queue.put_nowait(response)
        if self.cancelled and not self._cancel_sent:
            self._send_cancel()

    def _on_final(self, response: Response) -> None:
        """The transaction's final response (the first 2xx, or a non-2xx)."""
        status = response.status
        if status in (401, 407) and not self.cancelled and self._retry_with_credentials(response):
            return
        if status >= 300:
            self._stop_cancel_timer()
            self.early.clear()
            self._resolve(response)

    def _on_2xx(self, response: Response, status: int) -> None:
        self._stop_cancel_timer()
        tag = response.to.tag or ""
        sent = self._acks.get(tag)
        if sent is not None:
            self._stack._send_on(sent, self._ack_hop(tag))  # a retransmitted 2xx
            return
        if self.dialog is not None and tag == self.dialog.remote_tag:
            return  # a retransmission of the 2xx the caller has yet to ack() (auto_ack=False)
        first = self.dialog is None
        try:
            dialog = Dialog.from_uac(self.request, response)
        except (ValueError, SipParseError):
            log.info("2xx to INVITE %s without a usable To tag", self.request.call_id)
            if first:
                self._resolve(response)
            return
        dialog.confirm()
        self.early.pop(tag, None)
        if first:
            self.dialog = dialog
            self._stack.add_dialog(dialog, flow=None)
            if self._auto_ack or self.cancelled:
                self.ack()
            if self.cancelled:
                # the CANCEL/200 race: the callee answered, we no longer want the call
                self._stack.bye(dialog)
            self._resolve(response)
            return
        # another fork answered too: ACK it, then release it (§13.2.2.4)
        self._stack.add_dialog(dialog, flow=None)
        ack = self._build_ack(dialog)
        self._acks[tag] = ack
        self._stack._send_on(ack, self._dialog_hop(dialog))
        self._stack.bye(dialog)

    def _resolve(self, response: Response) -> None:
        if not self.final.done():
            self.final.set_result(response)
            self._queue.put_nowait(response)

    def _fail(self, exc: BaseException) -> None:
        self._stop_cancel_timer()
        if not self.final.done():
            self.final.set_exception(exc)
            self._queue.put_nowait(_FAILED)

    def _retry_with_credentials(self, response: Response) -> bool:
        new = self._stack._authorized_copy(
            self.request, response, self._credentials, self._answered_realms
        )
        if new is None:
            return False
        self.request = new
        self.early.clear()
        self._start()
        return True

    # -- the caller's side -------------------------------------------------------------------

    async def responses(self) -> AsyncIterator[Response]:
        """Every provisional, then the final response (an async iterator)."""
        while True:
            item = await self._queue.get()
            if item is _FAILED:
                await self.final  # raises the failure
                return
            yield item
            if item.status >= 200:
                return

    def ack(self, body: bytes = b"", content_type: str | None = None) -> Request:
        """Send the ACK for the first 2xx (``auto_ack=False``: with a body, e.g. the SDP
        answer to an offer in the 2xx). Returns the ACK."""
        dialog = self.dialog
        if dialog is None:
            raise RuntimeError("no 2xx to ACK yet")
        tag = dialog.remote_tag
        existing = self._acks.get(tag)
        if existing is not None:
            return existing
        ack = self._build_ack(dialog, body, content_type)
        self._acks[tag] = ack
        self._stack._dialog_ack(dialog, ack)
        self._stack._send_on(ack, self._dialog_hop(dialog))
        return ack

    def _build_ack(
        self, dialog: Dialog, body: bytes = b"", content_type: str | None = None
    ) -> Request:
        # §13.2.2.4: CSeq number of the INVITE, the INVITE's credentials
        headers = [
            (name, value)
            for name, value in self.request.headers
            if name.lower() in ("authorization", "proxy-authorization")
        ]
        if content_type is not None:
            headers.append(("Content-Type", content_type))
        return dialog.new_request("ACK", headers, body, cseq=self.request.cseq[0])

    def _dialog_hop(self, dialog: Dialog) -> _Hop:
        return self._stack._hop_for_dialog(dialog, fallback=self._hop) or self._hop

    def _ack_hop(self, tag: str) -> _Hop:
        dialog = self.dialog if self.dialog is not None and self.dialog.remote_tag == tag else None
        return self._dialog_hop(dialog) if dialog is not None else self._hop

    def cancel(self) -> None:
        """Give up the call: CANCEL now if a provisional came, else as soon as one does
        (RFC 3261 §9.1). No effect once a final response arrived."""
        if self.final.done() or self.cancelled:
            return
        self.cancelled = True
        if self.provisionals:
            self._send_cancel()

    def _send_cancel(self) -> None:
        self._cancel_sent = True
        invite = self.request
        headers = [("Via", invite.headers.get("via") or "")]
        headers += [("Route", value) for value in invite.headers.get_all("route")]
        headers += [
            ("Max-Forwards", "70"),
            ("From", invite.headers.get("from") or ""),
            ("To", invite.headers.get("to") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq[0]} CANCEL"),
        ]
        cancel = Request("CANCEL", invite.uri_text or str(invite.uri), headers)
        self._stack._start_task(self._stack._send_cancel(cancel, self._hop))
        # §9.1: no final response 64*T1 after the CANCEL: the INVITE transaction ends
        timers = self._stack.timers
        self._cancel_timer = self._stack.loop.call_later(
            timers.timer_b,
            self._fail,
            TransactionTimeoutError("no final response 64*T1 after CANCEL"),
        )

    def _stop_cancel_timer(self) -> None:
        if self._cancel_timer is not None:
            self._cancel_timer.cancel()
            self._cancel_timer = None


_FAILED = Response(500, "Failed", [])  # marker in ClientInvite's queue


class SipStack:
    """A SIP node: listening points, transactions, dialogs and the handlers.

    Use as ``async with SipStack(listen=[...]) as stack:`` or call :meth:`start` /
    :meth:`stop`; :attr:`addresses` lists the bound listening points (port 0 picks free
    ports). Register handlers with :meth:`set_handler`.
    """

    def __init__(
        self,
        *,
        listen: Sequence[ListenAddress],
        timers: TimerSettings | None = None,
        rate_limit: RateLimit | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_header: str | None = "pbxcore",
        contact_user: str = "pbx",
        limits: TransportLimits | None = None,
    ) -> None:
        self.timers = timers or TimerSettings()
        self.server_header = server_header
        self.contact_user = contact_user
        # option tags a request may Require (RFC 3261 §8.2.2.3); others get 420
        self.supported: set[str] = set()
        self._listen = list(listen)
        self.transport = TransportLayer(
            self.on_message, rate_limit=rate_limit, ssl_context=ssl_context, limits=limits
        )
        self.addresses: list[ListenAddress] = []
        self._handlers: dict[str, Handler] = {}
        self._stateless: dict[str, StatelessCheck] = {}
        self._allow: list[tuple[str, str]] | None = None  # the Allow header, cached
        self._fast_paths: list[FastPath] = []
        self._server_tx: dict[Hashable, Any] = {}
        self._client_tx: dict[Hashable, Any] = {}
        self._invites: dict[Hashable, IncomingRequest | _AnsweredInvite] = {}
        self._awaiting_ack: dict[tuple[str, str, int], IncomingRequest] = {}
        self._dialogs: dict[DialogId, tuple[Dialog, Source | None]] = {}
        self._dialog_acks: dict[DialogId, Request] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.tag = new_tag()
        self.stats = {"requests": 0, "responses": 0, "rejected": 0, "dropped": 0, "stray": 0}
        # non-INVITE server transactions over UDP that answered at once (fast paths')
        self.completed: CompletedResponses[bytes] = CompletedResponses(
            self.now, self._send_completed, wait=64 * self.timers.t1
        )

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> list[ListenAddress]:
        """Bind every listening point; returns them with their actual ports."""
        self._loop = asyncio.get_running_loop()
        try:
            self.addresses = await self.transport.listen(self._listen)
        except BaseException:
            await self.transport.close()
            raise
        for address in self.addresses:
            log.info("listening on %s", address)
        return self.addresses

    async def stop(self) -> None:
        """Stop listening, cancel pending work and close connections."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for incoming in list(self._awaiting_ack.values()):
            incoming._forget_ack()
        for tx in list(self._server_tx.values()) + list(self._client_tx.values()):
            tx._terminate()
        self.completed.clear()
        self._dialogs.clear()
        await self.transport.close()

    async def __aenter__(self) -> SipStack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "SipStack.start() was not called"
        return self._loop

    def now(self) -> float:
        """The event loop's clock."""
        return self.loop.time()

    def address(self, transport: TransportName, family: str = "ipv4") -> ListenAddress:
        """The first bound listening point with this transport and address family."""
        for address in self.addresses:
            v6 = ":" in address.host
            if address.transport == transport and v6 == (family == "ipv6"):
                return address
        raise LookupError(f"not listening on {transport} over {family}")

    def contact_for(self, source: Source | Target) -> str:
        """Our Contact for a peer reached over ``source``'s transport and address family."""
        family = "ipv6" if ":" in source.host else "ipv4"
        local = self.address(source.transport, family)
        host = f"[{local.host}]" if ":" in local.host else local.host
        scheme = "sips" if source.transport == "tls" else "sip"
        param = ";transport=tcp" if source.transport == "tcp" else ""
        return f"<{scheme}:{self.contact_user}@{host}:{local.port}{param}>"

    # -- handlers ----------------------------------------------------------------------------

    def set_handler(
        self, method: str, handler: Handler | None, *, stateless: StatelessCheck | None = None
    ) -> None:
        """Route new requests of ``method`` to ``handler`` (None removes it).

        ``stateless(request, source)`` runs first, before any transaction exists: True
        means it answered the request itself (with :meth:`send_stateless`) or dropped it.
        """
        method = method.upper()
        if method not in KNOWN_METHODS:
            raise ValueError(f"no handler can be registered for unknown method {method!r}")
        self._allow = None
        if handler is None:
            self._handlers.pop(method, None)
            self._stateless.pop(method, None)
            return
        self._handlers[method] = handler
        if stateless is None:
            self._stateless.pop(method, None)
        else:
            self._stateless[method] = stateless

    def handler(self, method: str) -> Handler | None:
        return self._handlers.get(method.upper())

    def add_fast_path(self, fast_path: FastPath) -> None:
        """A pre-parse hook for UDP datagrams starting with ``fast_path.prefix``."""
        self._fast_paths.append(fast_path)

    @property
    def fast_paths(self) -> tuple[FastPath, ...]:
        """The pre-parse hooks, in the order they are tried."""
        return tuple(self._fast_paths)

    def remove_fast_path(self, fast_path: FastPath) -> None:
        with contextlib.suppress(ValueError):
            self._fast_paths.remove(fast_path)

    @property
    def allowed_methods(self) -> list[str]:
        """What the Allow header lists: the handled methods and what the stack answers."""
        methods = set(self._handlers) | {"OPTIONS"}
        if "INVITE" in methods:
            methods |= {"ACK", "CANCEL", "BYE"}
        order = [
            "INVITE", "ACK", "CANCEL", "BYE", "REGISTER", "OPTIONS", "INFO", "UPDATE",
            "PRACK", "REFER", "SUBSCRIBE", "NOTIFY", "MESSAGE", "PUBLISH",
        ]  # fmt: skip
        return [m for m in order if m in methods]

    # -- dialogs -----------------------------------------------------------------------------

    def add_dialog(self, dialog: Dialog, *, flow: Source | None) -> None:
        """Keep ``dialog`` for in-dialog requests and responses. ``flow``: the connection or
        address its creating request came from; requests in the dialog go back there."""
        self._dialogs[dialog.id] = (dialog, flow)

    def remove_dialog(self, dialog: Dialog) -> None:
        entry = self._dialogs.get(dialog.id)
        if entry is not None and entry[0] is dialog:
            del self._dialogs[dialog.id]
            self._dialog_acks.pop(dialog.id, None)

    def find_dialog(self, dialog_id: DialogId) -> Dialog | None:
        entry = self._dialogs.get(dialog_id)
        return None if entry is None else entry[0]

    @property
    def dialog_count(self) -> int:
        return len(self._dialogs)

    def _dialog_ack(self, dialog: Dialog, ack: Request) -> None:
        self._dialog_acks[dialog.id] = ack

    # -- input -------------------------------------------------------------------------------

    def on_message(self, data: bytes, source: Source) -> None:
        """Transport callback: one datagram or one framed stream message."""
        try:
            self._on_message(data, source)
        except Exception:
            # a bug must cost one message, not the connection it came on
            log.exception("failed on a message from %s", source)

    def _on_message(self, data: bytes, source: Source) -> None:
        if source.transport == "udp":
            for fast in self._fast_paths:
                if data.startswith(fast.prefix) and fast.handle(data, source):
                    self.stats["requests"] += 1
                    return
        try:
            message = parse_message(data, stream=source.reliable)
        except SipParseError as exc:
            self.stats["dropped"] += 1
            if exc.status is not None:
                self._reject_unparsed(data, source, exc)
            return
        if isinstance(message, Response):
            try:
                call_id: str | None = message.call_id
            except SipParseError:
                call_id = None  # validation drops it
            token = CALL_ID.set(call_id)
            try:
                self._on_response(message)
            finally:
                CALL_ID.reset(token)
            return
        self._on_request(message, source)

    def _on_request(self, request: Request, source: Source) -> None:
        self.stats["requests"] += 1
        try:
            # stamp first: changing a header forgets what was parsed, validation parses it
            stamp_via(request, source)
            validate_request(request, supported=self.supported)
        except SipParseError as exc:
            self.stats["rejected"] += 1
            if request.method != "ACK" and exc.status is not None:
                self._reply_stateless(request, source, exc.status, exc.reason, exc.unsupported)
            return
        # every record logged while the request is handled (and in the tasks it starts)
        # carries its Call-ID
        token = CALL_ID.set(request.call_id)
        try:
            self._dispatch(request, source)
        finally:
            CALL_ID.reset(token)

    def _dispatch(self, request: Request, source: Source) -> None:
        key = server_key(request)
        method = request.method
        if method != "ACK" and self.completed.resend(key):
            return  # a retransmission of a request already answered
        tx = self._server_tx.get(key)
        if tx is not None:
            if isinstance(tx, InviteServerTransaction):
                if method == "ACK" and tx.state is TransactionState.ACCEPTED:
                    self._on_ack(request)  # a 2xx ACK reusing the INVITE's branch
                else:
                    tx.receive_request(request, is_ack=method == "ACK")
            elif method != "ACK":
                tx.receive_request(request)
            return
        if method == "ACK":
            self._on_ack(request)
            return
        self._new_request(request, source, key)

    def _on_ack(self, ack: Request) -> None:
        """An ACK outside any transaction: the ACK for one of our 2xx (§13.3.1.4)."""
        dialog_id = DialogId.of_request(ack)
        if dialog_id is None:
            return
        waiting = self._awaiting_ack.get((ack.call_id, dialog_id.local_tag, ack.cseq[0]))
        if waiting is not None:
            waiting._acked(ack)
        handler = self._handlers.get("ACK")
        entry = self._dialogs.get(dialog_id)
        if handler is not None and entry is not None:
            self._run(handler, _AckView(self, ack, entry[0]))

    def _new_request(self, request: Request, source: Source, key: Hashable) -> None:
        method = request.method
        stateless = self._stateless.get(method)
        if stateless is not None and stateless(request, source):
            return  # answered (or dropped) without a transaction: a challenge, a ban...
        destination = _Destination(self.transport, source, request.top_via)
        tx: NonInviteServerTransaction[bytes] | InviteServerTransaction[bytes]
        if method == "INVITE":
            tx = InviteServerTransaction(
                key,
                reliable=source.reliable,
                send=destination.send,
                scheduler=self.loop,
                settings=self.timers,
                on_terminated=self._forget_server_tx,
                trying=self._trying(request),
            )
        else:
            tx = NonInviteServerTransaction(
                key,
                reliable=source.reliable,
                send=destination.send,
                scheduler=self.loop,
                settings=self.timers,
                on_terminated=self._forget_server_tx,
            )
        self._server_tx[key] = tx
        dialog: Dialog | None = None
        if method not in _NO_DIALOG_MATCH and request.to.tag is not None:
            dialog_id = DialogId.of_request(request)
            entry = None if dialog_id is None else self._dialogs.get(dialog_id)
            if entry is None:
                self._respond_tx(tx, request, 481, "Call/Transaction Does Not Exist")
                return
            dialog = entry[0]
            try:
                dialog.receive_request(request)
            except DialogError as exc:
                self._respond_tx(tx, request, exc.status, exc.reason)
                return
        elif method in _IN_DIALOG_ONLY:
            self._respond_tx(tx, request, 481, "Call/Transaction Does Not Exist")
            return
        handler = self._handlers.get(method)
        if handler is None and method != "CANCEL" and (method != "BYE" or dialog is None):
            self._answer_unhandled(tx, request)  # no handler object needed: the hot OPTIONS
            return
        incoming = IncomingRequest(self, request, source, tx, dialog)
        if method == "CANCEL":
            self._on_cancel(incoming)
            return
        if handler is None:
            incoming.respond(200)  # §15.1.2: a BYE in a dialog of ours ends it (a 2xx MUST)
            return
        if method == "INVITE":
            self._invites[key] = incoming
        self._run(handler, incoming)

    def _trying(self, request: Request) -> bytes:
        response = make_response(request, 100)
        self.finish(response)
        return bytes(response)

    def _run(self, handler: Handler, incoming: IncomingRequest | _AckView) -> None:
        try:
            result = handler(incoming)  # type: ignore[arg-type]
        except Exception:
            log.exception("%s handler failed", incoming.request.method)
            self._handler_failed(incoming)
            return
        if inspect.isawaitable(result):
            self._start(_guarded(result, incoming, self._handler_failed))

    def _handler_failed(self, incoming: IncomingRequest | _AckView) -> None:
        if isinstance(incoming, IncomingRequest) and not incoming.final_sent:
            with contextlib.suppress(Exception):
                incoming.respond(500)

    def _answer_unhandled(
        self,
        tx: NonInviteServerTransaction[bytes] | InviteServerTransaction[bytes],
        request: Request,
    ) -> None:
        """What the stack says to a method nobody handles: OPTIONS 200 (RFC 3261 §11.2),
        405 for a method it knows, 501 for one it does not; each with Allow."""
        allow = self._allow
        if allow is None:
            allow = self._allow = [("Allow", ", ".join(self.allowed_methods))]
        method = request.method
        if method == "OPTIONS":
            supported = ("Supported", ", ".join(sorted(self.supported)))
            self._respond_tx(tx, request, 200, headers=[*allow, *_OPTIONS_HEADERS, supported])
        elif method in KNOWN_METHODS:
            self._respond_tx(tx, request, 405, headers=allow)
        else:
            self._respond_tx(tx, request, 501, headers=allow)

    def _on_cancel(self, incoming: IncomingRequest) -> None:
        invite = self._invites.get(_invite_key_of_cancel(incoming.request))
        if invite is None:
            incoming.respond(481, "Call/Transaction Does Not Exist")
            return
        incoming._local_tag = invite.local_tag  # §9.2: the To tag of the INVITE's responses
        incoming.respond(200)
        invite._cancel()
        handler = self._handlers.get("CANCEL")
        if handler is not None:
            self._run(handler, incoming)

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` at once, up to its first suspension, and leave the rest to a task.

        What asyncio.eager_task_factory does on Python 3.12: a REGISTER against the
        in-memory location service completes without suspending, so it costs no task.
        """
        try:
            pending = work.send(None)
        except StopIteration:
            return
        task = self.loop.create_task(_resume(work, pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_task(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = self.loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(_task_done)
        task.add_done_callback(self._tasks.discard)
        return task

    def _invite_answered(self, incoming: IncomingRequest) -> None:
        key = incoming._tx.key
        if self._invites.get(key) is incoming:
            self._invites[key] = _AnsweredInvite(incoming.local_tag)

    def _forget_server_tx(self, tx: Any) -> None:
        key = tx.key
        if self._server_tx.get(key) is tx:
            del self._server_tx[key]
        self._invites.pop(key, None)

    def _forget_client_tx(self, tx: Any) -> None:
        key = tx.key
        if self._client_tx.get(key) is tx:
            del self._client_tx[key]

    def _on_response(self, response: Response) -> None:
        self.stats["responses"] += 1
        try:
            validate_response(response)
            key = client_key(response)
        except SipParseError:
            self.stats["dropped"] += 1
            return
        tx = self._client_tx.get(key)
        if tx is not None:
            tx.receive_response(response, response.status)
            return
        # a 2xx to an INVITE whose transaction is gone: re-send the dialog's ACK (§13.2.2.4)
        if 200 <= response.status < 300 and response.cseq[1] == "INVITE":
            dialog_id = DialogId.of_response(response)
            ack = None if dialog_id is None else self._dialog_acks.get(dialog_id)
            entry = None if dialog_id is None else self._dialogs.get(dialog_id)
            hop = None if entry is None else self._hop_for_dialog(entry[0], fallback=None)
            if ack is not None and hop is not None:
                self._send_on(ack, hop)
                return
        self.stats["stray"] += 1

    # -- output: responses -------------------------------------------------------------------

    def finish(self, response: Response) -> None:
        """Last touches on every response we send (the Server header)."""
        if self.server_header:
            response.headers.add("Server", self.server_header)

    def _respond_tx(
        self,
        tx: NonInviteServerTransaction[bytes] | InviteServerTransaction[bytes],
        request: Request,
        status: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        response = make_response(request, status, reason, to_tag=self.tag, headers=headers)
        self.finish(response)
        tx.respond(bytes(response), status)

    def send_stateless(self, response: Response, request: Request, source: Source) -> None:
        """Send a response outside any transaction, where ``request``'s responses go."""
        self.finish(response)
        self.send_response_bytes(bytes(response), request, source)

    def send_response_bytes(self, data: bytes, request: Request, source: Source) -> None:
        _Destination(self.transport, source, request.top_via).send(data)

    def complete(self, key: Hashable, response: Response, request: Request, source: Source) -> None:
        """Answer a non-INVITE request at once and keep the answer for its retransmissions
        until timer J, without a transaction object (what a fast path uses)."""
        self.finish(response)
        destination = _Destination(self.transport, source, request.top_via)
        self.completed.add(key, bytes(response), (destination.host, destination.port, source))

    def has_server_transaction(self, key: Hashable) -> bool:
        return key in self._server_tx

    def _send_completed(self, data: bytes, destination: tuple[str, int, Source]) -> None:
        host, port, source = destination
        self.transport.send(data, source.transport, host, port, channel=source.channel)

    def _reply_stateless(
        self,
        request: Request,
        source: Source,
        status: int,
        reason: str,
        unsupported: Iterable[str] = (),
    ) -> None:
        headers = [("Unsupported", ", ".join(unsupported))] if status == 420 else []
        try:
            response = make_response(
                request, status, _reason(status, reason), to_tag=self.tag, headers=headers
            )
            via = request.top_via
        except (SipParseError, ValueError):
            return  # not even a usable Via/To: nobody to answer
        self.finish(response)
        _Destination(self.transport, source, via).send(bytes(response))

    def _reject_unparsed(self, data: bytes, source: Source, exc: SipParseError) -> None:
        """Answer a request the parser refused, if its Via can be found (else drop it);
        the answer goes to the packet's real source, whatever its Via says."""
        match = _REQUEST_LINE.match(data)
        if match is None or match.group(1) == b"ACK":
            return
        # rebuild a request holding only the headers a response copies, if they parse
        lines = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
        keep = []
        for line in lines[:_MAX_SKELETON_LINES]:
            name, colon, _value = line.partition(b":")
            if colon and name.strip().lower() in _SKELETON_HEADERS:
                keep.append(line)
        head = b"OPTIONS sip:invalid SIP/2.0\r\n" + b"\r\n".join(keep) + b"\r\n\r\n"
        try:
            skeleton = parse_message(head)
            if not isinstance(skeleton, Request):
                return
            stamp_via(skeleton, source)
        except SipParseError:
            return
        self._reply_stateless(skeleton, source, exc.status or 400, exc.reason)

    # -- output: requests --------------------------------------------------------------------

    async def send_request(
        self, request: Request, transport: TransportName, host: str, port: int
    ) -> Response:
        """Send ``request`` to ``transport:host:port`` in a client transaction; returns the
        final response (the low-level form of :meth:`request`, without authentication).

        Raises :class:`~pbxcore.sip.transaction.TransactionTimeoutError` when timer B/F
        fires and ConnectionError when the transport fails.
        """
        hop = _Hop(Target(transport, host, port))
        if request.method == "INVITE":
            invite = ClientInvite(self, request, hop, None, auto_ack=True)
            self._prepare(request, hop)
            invite._start()
            return await invite.final
        self._prepare(request, hop)
        return await self._non_invite(request, hop)

    async def request(
        self,
        request: Request,
        *,
        target: Target | None = None,
        credentials: ClientCredentials | None = None,
        dialog: Dialog | None = None,
    ) -> Response:
        """Send a non-INVITE ``request`` and return its final response.

        The stack adds Via (ours, fresh branch) and Max-Forwards, sends to ``target`` or
        else to the next hop of the dialog or of Route/Request-URI (§8.1.2), and answers a
        401/407 once per realm with ``credentials``. A final response to a request in
        ``dialog`` updates it (481/408 end it; a 2xx to BYE removes it).
        """
        if request.method in ("INVITE", "ACK", "CANCEL"):
            raise ValueError(f"use invite() for INVITE; {request.method} is sent by the stack")
        hop = await self._hop(request, target, dialog)
        answered: set[str] = set()
        while True:
            self._prepare(request, hop)
            response = await self._non_invite(request, hop)
            if response.status in (401, 407):
                retry = self._authorized_copy(request, response, credentials, answered)
                if retry is not None:
                    if dialog is not None:
                        dialog.local_seq = retry.cseq[0]
                    request = retry
                    continue
            break
        if dialog is not None:
            dialog.receive_response(request, response)
            if dialog.state is DialogState.TERMINATED or (
                request.method == "BYE" and response.status >= 200
            ):
                dialog.terminate()
                self.remove_dialog(dialog)
        return response

    async def invite(
        self,
        request: Request,
        *,
        target: Target | None = None,
        credentials: ClientCredentials | None = None,
        dialog: Dialog | None = None,
        auto_ack: bool = True,
    ) -> ClientInvite:
        """Send an INVITE (a re-INVITE with ``dialog``); returns the :class:`ClientInvite`
        at once, with the transaction running."""
        hop = await self._hop(request, target, dialog)
        invite = ClientInvite(self, request, hop, credentials, auto_ack=auto_ack)
        self._prepare(request, hop)
        invite._start()
        return invite

    def new_request(
        self,
        method: str,
        uri: str,
        *,
        from_: str,
        to: str | None = None,
        target: Target | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        call_id: str | None = None,
        contact: str | None = None,
    ) -> Request:
        """An out-of-dialog request (§8.1.1): From with a fresh tag, To, a new Call-ID,
        CSeq 1, Max-Forwards 70, and our Contact for dialog-creating methods and REGISTER
        (``contact``, else ours for the transport of ``target``, UDP over IPv4 by default)."""
        items = [
            ("Max-Forwards", "70"),
            ("From", f"{from_};tag={new_tag()}"),
            ("To", to or f"<{uri}>"),
            ("Call-ID", call_id or f"{secrets.token_hex(12)}@pbxcore"),
            ("CSeq", f"1 {method}"),
        ]
        if method in DIALOG_CREATING or method == "REGISTER":
            contact_target = target or Target("udp", "127.0.0.1", 0)
            items.append(("Contact", contact or self.contact_for(contact_target)))
        items.extend(headers)
        return Request(method, uri, items, body)

    def bye(self, dialog: Dialog) -> asyncio.Task[None] | None:
        """End ``dialog`` with a BYE in the background (its outcome is logged only); the
        task that sends it (await it to know the BYE is answered), None when the dialog
        had ended already."""
        if dialog.state is DialogState.TERMINATED:
            return None
        request = dialog.new_request("BYE")
        dialog.terminate()

        async def send() -> None:
            try:
                await self.request(request, dialog=dialog)
            except (TransactionTimeoutError, ConnectionError, OSError) as exc:
                log.info("BYE for %s failed: %s", dialog.call_id, exc)
            finally:
                self.remove_dialog(dialog)

        return self._start_task(send())

    # -- output internals --------------------------------------------------------------------

    def _prepare(self, request: Request, hop: _Hop) -> None:
        """Our Via on top (fresh branch) and Max-Forwards."""
        target = hop.target
        family = "ipv6" if ":" in target.host else "ipv4"
        local = self.address(target.transport, family)
        via = Via(
            target.transport.upper(),
            local.host,
            local.port,
            {"branch": new_branch(), "rport": None},
        )
        request.headers.add("Via", str(via), first=True)
        if "max-forwards" not in request.headers:
            request.headers.add("Max-Forwards", "70")

    def _send_on(self, request: Request, hop: _Hop) -> None:
        """Send a request outside any transaction (an ACK for a 2xx)."""
        if "via" not in request.headers:
            self._prepare(request, hop)
        target = hop.target
        self.transport.send(
            bytes(request), target.transport, target.host, target.port, channel=hop.channel
        )

    def _sender(self, hop: _Hop, failed: Callable[[], object]) -> Callable[[Request], None]:
        """What a client transaction sends with: to ``hop``; ``failed`` when it cannot."""
        target = hop.target
        layer = self.transport

        def send(message: Request) -> None:
            if not layer.send(
                bytes(message), target.transport, target.host, target.port, channel=hop.channel
            ):
                failed()

        return send

    async def _non_invite(self, request: Request, hop: _Hop) -> Response:
        target = hop.target
        branch = request.top_via.branch
        key = (branch, request.method)
        send = self._sender(hop, lambda: tx.transport_error())  # noqa: PLW0108 - tx comes next
        tx: NonInviteClientTransaction[Any] = NonInviteClientTransaction(
            key,
            request,
            reliable=target.transport != "udp",
            send=send,
            scheduler=self.loop,
            settings=self.timers,
            on_terminated=self._forget_client_tx,
        )
        self._client_tx[key] = tx
        tx.start()
        response: Response = await tx.final
        return response

    def _start_invite_tx(self, invite: ClientInvite) -> InviteClientTransaction[Any]:
        request = invite.request
        hop = invite._hop
        if "via" not in request.headers:  # a retry with credentials
            self._prepare(request, hop)
        target = hop.target
        key = (request.top_via.branch, "INVITE")
        send = self._sender(hop, lambda: tx.transport_error())  # noqa: PLW0108 - tx comes next
        tx: InviteClientTransaction[Any] = InviteClientTransaction(
            key,
            request,
            reliable=target.transport != "udp",
            send=send,
            scheduler=self.loop,
            settings=self.timers,
            make_ack=lambda response: _ack_for(request, response),
            on_terminated=self._forget_client_tx,
            on_provisional=invite._on_provisional,
            on_2xx=invite._on_2xx,
        )
        self._client_tx[key] = tx

        def final_done(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                return
            exc = future.exception()
            if exc is not None:
                if tx is invite._tx:
                    invite._fail(exc)
                return
            response = future.result()
            if tx is invite._tx and response.status >= 300:
                invite._on_final(response)

        tx.final.add_done_callback(final_done)
        tx.start()
        return tx

    async def _send_cancel(self, cancel: Request, hop: _Hop) -> None:
        # a non-INVITE client transaction of its own: (branch, "CANCEL") never collides
        # with the INVITE's (branch, "INVITE") although the branch is the same (§9.1)
        try:
            await self._non_invite(cancel, hop)
        except (TransactionTimeoutError, ConnectionError) as exc:
            log.info("CANCEL for %s failed: %s", cancel.call_id, exc)

    async def _hop(self, request: Request, target: Target | None, dialog: Dialog | None) -> _Hop:
        if target is not None:
            return _Hop(target)
        if dialog is not None:
            hop = self._hop_for_dialog(dialog, fallback=None)
            if hop is not None:
                return hop
        return _Hop(await self.resolve(next_hop(request)))

    def _hop_for_dialog(self, dialog: Dialog, fallback: _Hop | None) -> _Hop | None:
        entry = self._dialogs.get(dialog.id)
        flow = None if entry is None else entry[1]
        if flow is not None and not dialog.route_set:
            # a phone behind NAT: back over the flow its request came on (RFC 5626 style)
            return _Hop(Target(flow.transport, flow.host, flow.port), flow.channel)
        uri = Address.parse(dialog.route_set[0]).uri if dialog.route_set else dialog.remote_target
        target = _literal_target(uri)
        if target is not None:
            return _Hop(target)
        return fallback

    async def resolve(self, uri: Uri) -> Target:
        """The transport, address and port of a SIP URI (RFC 3263 without NAPTR/SRV: the
        ``transport`` parameter or UDP, the host's A/AAAA record, the port or 5060/5061)."""
        target = _literal_target(uri)
        if target is not None:
            return target
        transport = _uri_transport(uri)
        port = uri.port or (5061 if transport == "tls" else 5060)
        infos = await self.loop.getaddrinfo(uri.host, port, type=0)
        for family in ("ipv4", "ipv6"):
            for info in infos:
                host = str(info[4][0])
                if (":" in host) == (family == "ipv6"):
                    with contextlib.suppress(LookupError):
                        self.address(transport, family)
                        return Target(transport, host, port)
        raise ConnectionError(f"no address of {uri.host} is reachable over {transport}")

    def _authorized_copy(
        self,
        request: Request,
        response: Response,
        credentials: ClientCredentials | None,
        answered: set[str],
    ) -> Request | None:
        """``request`` again with an answer to the 401/407's challenge (new CSeq, no Via),
        or None when there is nothing (more) to answer with."""
        if credentials is None:
            return None
        proxy = response.status == 407
        name = "proxy-authenticate" if proxy else "www-authenticate"
        for value in response.headers.get_all(name):
            try:
                challenge = parse_challenge(value)
            except ValueError:
                continue
            realm = challenge.get("realm", "")
            stale = challenge.get("stale", "").lower() == "true"
            if realm in answered and not stale:
                continue
            try:
                algorithm = DigestAlgorithm.from_token(challenge.get("algorithm", "MD5"))
            except ValueError:
                continue
            qops = [q.strip().lower() for q in challenge.get("qop", "").split(",") if q.strip()]
            if qops and "auth" not in qops:
                continue
            found = credentials.lookup(realm)
            if found is None:
                continue
            username, password = found
            answered.add(realm)
            uri = request.uri_text or str(request.uri)
            header = digest_authorization(
                algorithm,
                username=username,
                password=password,
                realm=realm,
                nonce=challenge.get("nonce", ""),
                method=request.method,
                uri=uri,
                qop="auth" if qops else None,
                opaque=challenge.get("opaque"),
            )
            items = [
                (n, v)
                for n, v in request.headers
                if n.lower() not in ("via", "authorization", "proxy-authorization")
                and n.lower() != "cseq"
            ]
            seq = request.cseq[0] + 1
            items.insert(0, ("CSeq", f"{seq} {request.method}"))
            items.append(("Proxy-Authorization" if proxy else "Authorization", header))
            return Request(request.method, uri, items, request.body)
        return None


class _AckView:
    """What an ACK handler gets: the ACK and its dialog (an ACK is never answered)."""

    __slots__ = ("_stack", "dialog", "request")

    def __init__(self, stack: SipStack, request: Request, dialog: Dialog) -> None:
        self._stack = stack
        self.request = request
        self.dialog = dialog

    @property
    def method(self) -> str:
        return "ACK"

    @property
    def final_sent(self) -> bool:
        return True


def next_hop(request: Request) -> Uri:
    """The URI the request goes to first (§8.1.2): the first Route if any, else the
    Request-URI (a strict first Route is the Request-URI already, §12.2.1.1)."""
    routes = request.headers.get_all("route")
    if routes:
        return Address.parse(routes[0]).uri
    return request.uri


def _uri_transport(uri: Uri) -> TransportName:
    for name, value in uri.params.items():
        if name.lower() == "transport" and value is not None:
            transport = value.lower()
            if transport in ("udp", "tcp", "tls"):
                return transport  # type: ignore[return-value]
            raise ConnectionError(f"transport {value!r} is not supported")
    return "tls" if uri.scheme == "sips" else "udp"


@functools.lru_cache(maxsize=1024)
def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # the same few addresses come in every message: parse each once (ValueError is not cached)
    return ipaddress.ip_address(host)


def _literal_target(uri: Uri) -> Target | None:
    """The target of a URI whose host is an IP address (None for a host name)."""
    try:
        _ip_address(uri.host)
    except ValueError:
        return None
    transport = _uri_transport(uri)
    return Target(transport, uri.host, uri.port or (5061 if transport == "tls" else 5060))


_CHALLENGE_PARAM = re.compile(r'\s*([A-Za-z0-9_.!%*+`\'~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*')


def parse_challenge(value: str) -> dict[str, str]:
    """The parameters of a Digest ``WWW-Authenticate``/``Proxy-Authenticate`` value
    (names lowercased, quotes removed). ValueError for another scheme or bad syntax."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ValueError(f"challenge scheme {scheme!r} is not Digest")
    params: dict[str, str] = {}
    for part in split_list(rest):
        match = _CHALLENGE_PARAM.fullmatch(part)
        if match is None:
            raise ValueError(f"malformed challenge parameter {part[:40]!r}")
        raw = match.group(2)
        if raw[:1] == '"':
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[match.group(1).lower()] = raw
    if "nonce" not in params or "realm" not in params:
        raise ValueError("a digest challenge needs realm and nonce")
    return params


def digest_authorization(
    algorithm: DigestAlgorithm,
    *,
    username: str,
    password: str,
    realm: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    opaque: str | None = None,
    nc: int = 1,
) -> str:
    """An ``Authorization``/``Proxy-Authorization`` value answering a digest challenge
    (RFC 7616 §3.4; without qop, RFC 2069's form that RFC 3261 still allows)."""
    ha1 = compute_ha1(algorithm, username, realm, password)
    parts = [
        f'Digest username="{username}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{uri}"',
    ]
    if qop is not None:
        cnonce = secrets.token_hex(8)
        nc_text = f"{nc:08x}"
        response = compute_response(
            algorithm, ha1, nonce, method, uri, qop=qop, nc=nc_text, cnonce=cnonce
        )
        parts += [f'response="{response}"', f"qop={qop}", f"nc={nc_text}", f'cnonce="{cnonce}"']
    else:
        ha2 = algorithm.hexdigest(f"{method}:{uri}")
        parts.append(f'response="{algorithm.hexdigest(f"{ha1}:{nonce}:{ha2}")}"')
    parts.append(f"algorithm={algorithm.value}")
    if opaque is not None:
        parts.append(f'opaque="{opaque}"')
    return ", ".join(parts)


async def _guarded(
    result: Awaitable[None],
    incoming: IncomingRequest | _AckView,
    failed: Callable[[IncomingRequest | _AckView], None],
) -> None:
    try:
        await result
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s handler failed", incoming.request.method)
        failed(incoming)


def _task_done(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background SIP task failed", exc_info=task.exception())


async def _resume(work: Coroutine[Any, Any, None], pending: Any) -> None:
    """Drive a coroutine that :meth:`SipStack._start` began, as its task would."""
    while True:
        if pending is None:  # a bare yield (asyncio.sleep(0))
            await asyncio.sleep(0)
        else:
            # the coroutine yielded this future as it would to its task: take it the way
            # asyncio.Task does (clear the blocking flag), then wait for it ourselves
            pending._asyncio_future_blocking = False
            try:
                await pending
            except asyncio.CancelledError:
                if not pending.cancelled():  # we were cancelled, not what it awaited
                    work.close()
                    raise
            except Exception:  # the coroutine reads the outcome itself
                pass
        try:
            pending = work.send(None)
        except StopIteration:
            return


def _ack_for(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response (RFC 3261 §17.1.1.3)."""
    headers = [
        ("Via", invite.headers.get("via") or ""),
        ("From", invite.headers.get("from") or ""),
        ("To", response.headers.get("to") or ""),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq[0]} ACK"),
        ("Max-Forwards", "70"),
    ]
    headers.extend(("Route", value) for value in invite.headers.lines("route"))
    return Request("ACK", invite.uri_text or str(invite.uri), headers)


def _reason(status: int, detail: str) -> str | None:
    # a short reason phrase naming the problem helps whoever reads the trace
    base = REASON_PHRASES.get(status)
    if base is None:
        return None
    detail = detail.replace("\r", " ").replace("\n", " ")[:60]
    return f"{base} ({detail})" if detail else base


_REQUEST_LINE = re.compile(rb"([!-~]+) [^ \r\n]+ SIP/[^\r\n]*\r\n", re.IGNORECASE)
_SKELETON_HEADERS = frozenset({b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq"})
_MAX_SKELETON_LINES = 256
