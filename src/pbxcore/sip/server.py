"""The SIP server core: transports, transactions and the UAS behaviour of the registrar.

:class:`SipServer` parses what the transports deliver, stamps ``received``/``rport``
on the top Via (RFC 3581), matches requests to server transactions (branch, with
the RFC 2543 fallback), answers bad requests with the status the message layer
names, OPTIONS with 200, REGISTER through the :class:`~pbxcore.sip.registrar.Registrar`,
and other methods with 405/501. Responses are routed back per RFC 3261 §18.2.2:
over the connection the request used, or to ``received``:``rport``.

:meth:`SipServer.send_request` runs a client transaction (used by tests now, by
the B2BUA later).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Coroutine, Hashable, Iterable, Sequence
from typing import Any

from pbxcore.sip.errors import SipParseError
from pbxcore.sip.fastpath import RegisterFastPath
from pbxcore.sip.headers import Via, new_branch, new_tag
from pbxcore.sip.location import MemoryLocationService
from pbxcore.sip.message import (
    REASON_PHRASES,
    Request,
    Response,
    make_response,
    parse_message,
    validate_request,
    validate_response,
)
from pbxcore.sip.registrar import Drop, Registrar
from pbxcore.sip.transaction import (
    CompletedResponses,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    TimerSettings,
)
from pbxcore.sip.transport import (
    ListenAddress,
    RateLimit,
    Source,
    TransportLayer,
    TransportLimits,
    TransportName,
)

__all__ = ["ALLOWED_METHODS", "SipServer", "client_key", "server_key"]

log = logging.getLogger("pbxcore.sip.server")

ALLOWED_METHODS = ("REGISTER", "OPTIONS", "ACK", "CANCEL")
# methods this node knows but does not serve (405); anything else is 501
_KNOWN_METHODS = frozenset(
    {
        "INVITE",
        "BYE",
        "SUBSCRIBE",
        "NOTIFY",
        "REFER",
        "MESSAGE",
        "INFO",
        "UPDATE",
        "PRACK",
        "PUBLISH",
    }
)
_ALLOW = ", ".join(ALLOWED_METHODS)


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


def client_key(response: Response) -> Hashable:
    """The client transaction a response belongs to (§17.1.3): branch and CSeq method."""
    return (response.top_via.branch, response.cseq[1])


class _Destination:
    """Where the responses of one server transaction go (RFC 3261 §18.2.2, RFC 3581)."""

    __slots__ = ("host", "layer", "port", "source", "transport")

    def __init__(self, layer: TransportLayer, source: Source, via: Via | None) -> None:
        self.layer = layer
        self.source = source
        self.transport: TransportName = source.transport
        if via is None:  # the caller sets host and port
            return
        if source.reliable:
            # a new connection, if needed, goes to received (source) and sent-by port
            self.host = source.host
            self.port = via.port or (5061 if source.transport == "tls" else 5060)
        elif via.rport_requested:
            self.host, self.port = source.host, source.port
        else:
            self.host = via.received or via.host
            self.port = via.port or 5060

    def send(self, data: bytes) -> bool:
        return self.layer.send(
            data, self.transport, self.host, self.port, channel=self.source.channel
        )


def stamp_via(request: Request, source: Source) -> None:
    """Add ``received`` (and fill ``rport``) to the top Via, as RFC 3261 §18.2.1 and
    RFC 3581 §4 ask of a server."""
    via = request.top_via
    rport = via.rport_requested
    if not rport and via.host == source.host:
        return
    stamped = via.copy()
    stamped.params["received"] = source.host
    if rport:
        for name in list(stamped.params):
            if name.lower() == "rport":
                del stamped.params[name]
        stamped.params["rport"] = str(source.port)
    request.top_via = stamped
    request.headers.memo("top-via", lambda: stamped)  # no need to parse what we just built


_REQUEST_LINE = re.compile(rb"([!-~]+) [^ \r\n]+ SIP/[^\r\n]*\r\n", re.IGNORECASE)


class SipServer:
    """A SIP node: listening points, transactions and the registrar.

    Use as ``async with SipServer(registrar, listen=[...]) as server:`` or call
    :meth:`start` / :meth:`stop`; :attr:`addresses` lists the bound listening points
    (port 0 picks free ports).
    """

    def __init__(
        self,
        registrar: Registrar | None,
        *,
        listen: Sequence[ListenAddress],
        timers: TimerSettings | None = None,
        rate_limit: RateLimit | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_header: str | None = "pbxcore",
        limits: TransportLimits | None = None,
    ) -> None:
        self.registrar = registrar
        self.timers = timers or TimerSettings()
        self.server_header = server_header
        self._listen = list(listen)
        self.transport = TransportLayer(
            self.on_message, rate_limit=rate_limit, ssl_context=ssl_context, limits=limits
        )
        self.addresses: list[ListenAddress] = []
        self._server_tx: dict[Hashable, Any] = {}
        self._client_tx: dict[Hashable, Any] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tag = new_tag()
        self.stats = {"requests": 0, "responses": 0, "rejected": 0, "dropped": 0}
        # non-INVITE server transactions over UDP that answered at once (the fast path's)
        self.completed: CompletedResponses[bytes] = CompletedResponses(
            self._now, self._send_completed, wait=64 * self.timers.t1
        )
        self._fast: RegisterFastPath | None = None
        # only with the plain in-memory location service (a subclass may suspend in modify)
        if registrar is not None and type(registrar.location) is MemoryLocationService:
            self._fast = RegisterFastPath(self)

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
        for tx in list(self._server_tx.values()) + list(self._client_tx.values()):
            tx._terminate()
        self.completed.clear()
        await self.transport.close()

    async def __aenter__(self) -> SipServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def address(self, transport: TransportName, family: str = "ipv4") -> ListenAddress:
        """The first bound listening point with this transport and address family."""
        for address in self.addresses:
            v6 = ":" in address.host
            if address.transport == transport and v6 == (family == "ipv6"):
                return address
        raise LookupError(f"not listening on {transport} over {family}")

    # -- input -----------------------------------------------------------------------------

    def on_message(self, data: bytes, source: Source) -> None:
        """Transport callback: one datagram or one framed stream message."""
        try:
            self._on_message(data, source)
        except Exception:
            # a bug must cost one message, not the connection it came on
            log.exception("failed on a message from %s", source)

    def _on_message(self, data: bytes, source: Source) -> None:
        fast = self._fast
        if (
            fast is not None
            and source.transport == "udp"
            and data.startswith(b"REGISTER ")
            and fast.handle(data, source)
        ):
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
            self._on_response(message)
            return
        self.stats["requests"] += 1
        request = message
        try:
            # stamp first: changing a header forgets what was parsed, validation parses it
            stamp_via(request, source)
            validate_request(request)
        except SipParseError as exc:
            self.stats["rejected"] += 1
            if request.method != "ACK" and exc.status is not None:
                self._reply_stateless(request, source, exc.status, exc.reason, exc.unsupported)
            return
        key = server_key(request)
        method = request.method
        if method != "ACK" and self.completed.resend(key):
            return  # a retransmission of a request already answered
        tx = self._server_tx.get(key)
        if tx is not None:
            if isinstance(tx, InviteServerTransaction):
                tx.receive_request(request, is_ack=method == "ACK")
            elif method != "ACK":
                tx.receive_request(request)
            return
        if method == "ACK":
            return  # ACK for a 2xx (we send none) or for a transaction already gone
        if method == "REGISTER" and self.registrar is not None:
            early = self.registrar.precheck(request, source.host)
            if early is not None:
                if not isinstance(early, Drop):
                    self._send_stateless(early, request, source)
                return
        destination = _Destination(self.transport, source, request.top_via)
        if method == "INVITE":
            invite_tx: InviteServerTransaction[bytes] = InviteServerTransaction(
                key,
                reliable=source.reliable,
                send=destination.send,
                scheduler=self._scheduler,
                settings=self.timers,
                on_terminated=self._forget_server_tx,
                trying=bytes(make_response(request, 100)),
            )
            self._server_tx[key] = invite_tx
            self._respond(invite_tx, request, 405, headers=[("Allow", _ALLOW)])
            return
        server_tx: NonInviteServerTransaction[bytes] = NonInviteServerTransaction(
            key,
            reliable=source.reliable,
            send=destination.send,
            scheduler=self._scheduler,
            settings=self.timers,
            on_terminated=self._forget_server_tx,
        )
        self._server_tx[key] = server_tx
        if method == "REGISTER" and self.registrar is not None:
            self._start(self._register(server_tx, request, source))
        elif method == "OPTIONS":
            self._respond(
                server_tx,
                request,
                200,
                headers=[
                    ("Allow", _ALLOW),
                    ("Accept", "application/sdp"),
                    ("Supported", ""),
                ],
            )
        elif method == "CANCEL":
            self._cancel(server_tx, request)
        elif method in _KNOWN_METHODS:
            self._respond(server_tx, request, 405, headers=[("Allow", _ALLOW)])
        else:
            self._respond(server_tx, request, 501, headers=[("Allow", _ALLOW)])

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` at once, up to its first suspension, and leave the rest to a task.

        What asyncio.eager_task_factory does on Python 3.12: a REGISTER against the
        in-memory location service completes without suspending, so it costs no task.
        """
        try:
            pending = work.send(None)
        except StopIteration:
            return
        task = self._scheduler.create_task(_resume(work, pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _now(self) -> float:
        return self._scheduler.time()

    @property
    def _scheduler(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "SipServer.start() was not called"
        return self._loop

    async def _register(
        self, tx: NonInviteServerTransaction[bytes], request: Request, source: Source
    ) -> None:
        assert self.registrar is not None
        try:
            response = await self.registrar.handle(
                request, source.host, repr(source), prechecked=True
            )
        except Exception:
            log.exception("registrar failed on REGISTER from %s", source)
            response = make_response(request, 500, to_tag=self._tag)
        if response is None:
            tx._terminate()  # banned source: say nothing
            return
        self._finish(response)
        tx.respond(bytes(response), response.status)

    def _send_completed(self, data: bytes, destination: tuple[str, int, Source]) -> None:
        host, port, source = destination
        self.transport.send(data, source.transport, host, port, channel=source.channel)

    def _answer_register(  # noqa: PLR0917 - the parts of one error answer
        self,
        key: Hashable,
        data: bytes,
        source: Source,
        destination: tuple[str, int],
        status: int,
        reason: str | None,
        headers: list[tuple[str, str]],
    ) -> None:
        """A registrar error for a REGISTER the fast path took, built the general way."""
        assert self.registrar is not None
        request = parse_message(data)
        assert isinstance(request, Request)
        stamp_via(request, source)
        if status == 500:
            response = make_response(request, 500, to_tag=self._tag)
        else:
            response = self.registrar._reply(request, status, reason, headers)
        self._finish(response)
        self.completed.add(key, bytes(response), (*destination, source))

    def _cancel(self, tx: NonInviteServerTransaction[bytes], request: Request) -> None:
        via = request.top_via
        invite_key: Hashable
        if via.has_rfc3261_branch:
            invite_key = (via.branch, via.host.lower(), via.port, "INVITE")
        else:
            k = server_key(request)
            assert isinstance(k, tuple)
            invite_key = (*k[:-1], "INVITE")
        invite_tx = self._server_tx.get(invite_key)
        if invite_tx is None:
            self._respond(tx, request, 481)
            return
        self._respond(tx, request, 200)
        # our INVITE transactions answer at once, so there is nothing left to cancel

    def _finish(self, response: Response) -> None:
        if self.server_header:
            response.headers.add("Server", self.server_header)

    def _respond(
        self,
        tx: NonInviteServerTransaction[bytes] | InviteServerTransaction[bytes],
        request: Request,
        status: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        response = make_response(request, status, reason, to_tag=self._tag, headers=headers)
        self._finish(response)
        tx.respond(bytes(response), status)

    def _send_stateless(self, response: Response, request: Request, source: Source) -> None:
        self._finish(response)
        _Destination(self.transport, source, request.top_via).send(bytes(response))

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
                request, status, _reason(status, reason), to_tag=self._tag, headers=headers
            )
            via = request.top_via
        except (SipParseError, ValueError):
            return  # not even a usable Via/To: nobody to answer
        self._finish(response)
        _Destination(self.transport, source, via).send(bytes(response))

    def _reject_unparsed(self, data: bytes, source: Source, exc: SipParseError) -> None:
        """Answer a request the parser refused, if its Via can be found (else drop it)."""
        match = _REQUEST_LINE.match(data)
        if match is None or match.group(1) == b"ACK":
            return
        # rebuild a request holding only the headers a response copies, if they parse
        lines = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
        keep = []
        for line in lines:
            name, colon, _value = line.partition(b":")
            key = name.strip().lower()
            if colon and key in (
                b"via",
                b"v",
                b"from",
                b"f",
                b"to",
                b"t",
                b"call-id",
                b"i",
                b"cseq",
            ):
                keep.append(line)
        head = b"OPTIONS sip:invalid SIP/2.0\r\n" + b"\r\n".join(keep) + b"\r\n\r\n"
        try:
            skeleton = parse_message(head)
            if not isinstance(skeleton, Request):
                return
            skeleton.top_via  # noqa: B018 - must parse for routing
        except SipParseError:
            return
        self._reply_stateless(skeleton, source, exc.status or 400, exc.reason)

    def _forget_server_tx(self, tx: Any) -> None:
        key = tx.key
        if self._server_tx.get(key) is tx:
            del self._server_tx[key]

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

    # -- output: client transactions ---------------------------------------------------------

    async def send_request(
        self, request: Request, transport: TransportName, host: str, port: int
    ) -> Response:
        """Send ``request`` in a client transaction; returns the final response.

        A Via with a fresh branch is put on top (sent-by is our listening point for the
        transport). Raises :class:`~pbxcore.sip.transaction.TransactionTimeoutError` when
        timer B/F fires and ConnectionError when the transport fails.
        """
        family = "ipv6" if ":" in host else "ipv4"
        local = self.address(transport, family)
        branch = new_branch()
        via = Via(transport.upper(), local.host, local.port, {"branch": branch, "rport": None})
        request.headers.add("Via", str(via), first=True)
        method = request.method
        key = (branch, "INVITE" if method == "ACK" else method)
        reliable = transport != "udp"
        layer = self.transport

        def send(message: Request) -> None:
            if not layer.send(bytes(message), transport, host, port):
                tx.transport_error()

        tx: InviteClientTransaction[Any] | NonInviteClientTransaction[Any]
        if method == "INVITE":
            tx = InviteClientTransaction(
                key,
                request,
                reliable=reliable,
                send=send,
                scheduler=self._scheduler,
                settings=self.timers,
                make_ack=lambda response: _ack_for(request, response),
                on_terminated=self._forget_client_tx,
            )
        else:
            tx = NonInviteClientTransaction(
                key,
                request,
                reliable=reliable,
                send=send,
                scheduler=self._scheduler,
                settings=self.timers,
                on_terminated=self._forget_client_tx,
            )
        self._client_tx[key] = tx
        tx.start()
        result: Response = await tx.final
        return result


async def _resume(work: Coroutine[Any, Any, None], pending: Any) -> None:
    """Drive a coroutine that :meth:`SipServer._start` began, as its task would."""
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
