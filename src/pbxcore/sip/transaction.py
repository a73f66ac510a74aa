"""RFC 3261 §17 transactions: the four state machines with timers A-K.

The machines know nothing of sockets or of the message syntax: a transaction is
given a ``send`` callable, a :class:`Scheduler` (the asyncio loop, or a fake
clock in tests) and the messages to (re)send, and is fed the messages that
match it. Status codes are passed alongside responses so that any message type
works. Matching keys are computed by :func:`server_key` and :func:`client_key`
in :mod:`pbxcore.sip.server`, where the message layer is at hand.

Timers follow the RFC's names (Table 4): A/B/D for INVITE client transactions,
E/F/K for non-INVITE client transactions, G/H/I for INVITE server transactions
and J for non-INVITE server transactions; L and M are RFC 6026's Accepted-state
timers (64*T1). Timers that only retransmit are not started on reliable
transports; "wait" timers (D, I, J, K) are 0 there.

RFC 6026 replaces RFC 3261's "a 2xx ends the INVITE transaction": both INVITE
machines enter Accepted after a 2xx and stay there for 64*T1, so that the server
side can send the TU's 2xx retransmissions and absorb retransmitted INVITEs, and
the client side can hand every retransmitted or forked 2xx to its TU (which ACKs
each), instead of dropping them as strays.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

__all__ = [
    "CompletedResponses",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "Scheduler",
    "TimerHandle",
    "TimerSettings",
    "TransactionState",
    "TransactionTimeoutError",
]

M = TypeVar("M")


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """What transactions need from the event loop (``asyncio.AbstractEventLoop`` fits)."""

    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any
    ) -> TimerHandle: ...

    def time(self) -> float: ...


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """T1 (RTT estimate), T2 (max non-INVITE retransmit interval), T4 (max network lifetime)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2 or self.t4 <= 0:
            raise ValueError(f"need 0 < T1 <= T2 and T4 > 0, got {self}")

    @property
    def timer_b(self) -> float:
        """INVITE client transaction timeout (also F, H, J: 64*T1)."""
        return 64 * self.t1

    timer_f = timer_b
    timer_h = timer_b
    timer_j = timer_b
    timer_l = timer_b  # RFC 6026: Accepted, server side
    timer_m = timer_b  # RFC 6026: Accepted, client side

    @property
    def timer_d(self) -> float:
        """Wait time for response retransmissions (INVITE client, unreliable): >32 s."""
        return max(32.0, 64 * self.t1)


class TransactionState(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    ACCEPTED = "accepted"  # RFC 6026: after a 2xx to an INVITE
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class TransactionTimeoutError(TimeoutError):
    """Timer B or F fired: no final response arrived (treat as 408 Request Timeout)."""


class _Transaction(Generic[M]):
    """Timers, state and termination shared by the four machines."""

    __slots__ = (
        "_on_terminated",
        "_scheduler",
        "_send",
        "_timers",
        "key",
        "reliable",
        "settings",
        "state",
    )

    def __init__(
        self,
        key: Hashable,
        *,
        reliable: bool,
        send: Callable[[M], object],
        scheduler: Scheduler,
        settings: TimerSettings,
        on_terminated: Callable[[_Transaction[M]], object] | None,
    ) -> None:
        self.key = key
        self.reliable = reliable
        self.settings = settings
        self.state = TransactionState.TRYING
        self._send = send
        self._scheduler = scheduler
        self._on_terminated = on_terminated
        self._timers: dict[str, TimerHandle] = {}

    def _start_timer(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer(name)
        self._timers[name] = self._scheduler.call_later(delay, self._fire, name, callback)

    def _fire(self, name: str, callback: Callable[[], None]) -> None:
        self._timers.pop(name, None)
        callback()

    def _cancel_timer(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _wait_then_terminate(self, name: str, unreliable_delay: float) -> None:
        if self.reliable:
            self._terminate()
        else:
            self._start_timer(name, unreliable_delay, self._terminate)

    @property
    def timers(self) -> frozenset[str]:
        """Names of the running timers ("A", "E", ...), for tests and debugging."""
        return frozenset(self._timers)

    def _terminate(self) -> None:
        if self.state is TransactionState.TERMINATED:
            return
        self.state = TransactionState.TERMINATED
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._on_terminated is not None:
            self._on_terminated(self)

    def transport_error(self) -> None:
        """The transport failed to send: the transaction ends (§17.1.4, §17.2.4)."""
        self._terminate()


class NonInviteServerTransaction(_Transaction[M]):
    """§17.2.2: Trying -> Proceeding -> Completed (timer J) -> Terminated."""

    __slots__ = ("last_response",)

    def __init__(
        self,
        key: Hashable,
        *,
        reliable: bool,
        send: Callable[[M], object],
        scheduler: Scheduler,
        settings: TimerSettings = TimerSettings(),
        on_terminated: Callable[[_Transaction[M]], object] | None = None,
    ) -> None:
        super().__init__(
            key,
            reliable=reliable,
            send=send,
            scheduler=scheduler,
            settings=settings,
            on_terminated=on_terminated,
        )
        self.last_response: M | None = None

    def receive_request(self, request: M) -> None:
        """A retransmission of the request: answer it with the last response, if any."""
        if self.last_response is not None and self.state in (
            TransactionState.PROCEEDING,
            TransactionState.COMPLETED,
        ):
            self._send(self.last_response)

    def respond(self, response: M, status: int) -> bool:
        """Send a response from the TU; False if the transaction is already completed."""
        if self.state not in (TransactionState.TRYING, TransactionState.PROCEEDING):
            return False
        self.last_response = response
        self._send(response)
        if status < 200:
            self.state = TransactionState.PROCEEDING
        else:
            self.state = TransactionState.COMPLETED
            self._wait_then_terminate("J", self.settings.timer_j)
        return True


class InviteServerTransaction(_Transaction[M]):
    """§17.2.1 with RFC 6026: Proceeding -> Completed (G, H) -> Confirmed (I) -> Terminated
    for a non-2xx; Proceeding -> Accepted (L) -> Terminated for a 2xx.

    In Accepted the transaction sends the 2xx retransmissions the TU hands it
    (:meth:`respond` again) and absorbs retransmitted INVITEs; the ACK for a 2xx is a
    new transaction and belongs to the dialog.
    """

    __slots__ = ("_g_interval", "_on_timeout", "last_response")

    def __init__(
        self,
        key: Hashable,
        *,
        reliable: bool,
        send: Callable[[M], object],
        scheduler: Scheduler,
        settings: TimerSettings = TimerSettings(),
        on_terminated: Callable[[_Transaction[M]], object] | None = None,
        on_timeout: Callable[[], object] | None = None,
        trying: M | None = None,
    ) -> None:
        super().__init__(
            key,
            reliable=reliable,
            send=send,
            scheduler=scheduler,
            settings=settings,
            on_terminated=on_terminated,
        )
        self.state = TransactionState.PROCEEDING
        self.last_response: M | None = None
        self._on_timeout = on_timeout
        self._g_interval = settings.t1
        if trying is not None:  # 100 Trying at once: it stops the client's timer A
            self.last_response = trying
            self._send(trying)

    def receive_request(self, request: M, *, is_ack: bool = False) -> None:
        """A retransmitted INVITE or the ACK for a non-2xx final response."""
        if self.state is TransactionState.ACCEPTED:
            return  # RFC 6026 §8.5: retransmissions are not passed up; the TU resends 2xx
        if is_ack:
            if self.state is TransactionState.COMPLETED:
                self.state = TransactionState.CONFIRMED
                self._cancel_timer("G")
                self._cancel_timer("H")
                self._wait_then_terminate("I", self.settings.t4)
            return
        if self.last_response is not None and self.state in (
            TransactionState.PROCEEDING,
            TransactionState.COMPLETED,
        ):
            self._send(self.last_response)

    def respond(self, response: M, status: int) -> bool:
        """Send a response from the TU; False if a final response was already sent.

        In Accepted, a 2xx (the TU's retransmission, §13.3.1.4) is sent and True returned.
        """
        if self.state is TransactionState.ACCEPTED:
            if 200 <= status < 300:
                self._send(response)
                return True
            return False
        if self.state is not TransactionState.PROCEEDING:
            return False
        self.last_response = response
        self._send(response)
        if status < 200:
            return True
        if status < 300:
            # RFC 6026 §7.1: Accepted until timer L; the TU retransmits the 2xx until the ACK
            self.state = TransactionState.ACCEPTED
            self._start_timer("L", self.settings.timer_l, self._terminate)
            return True
        self.state = TransactionState.COMPLETED
        if not self.reliable:
            self._g_interval = self.settings.t1
            self._start_timer("G", self._g_interval, self._timer_g)
        self._start_timer("H", self.settings.timer_h, self._timer_h)
        return True

    def _timer_g(self) -> None:
        if self.state is not TransactionState.COMPLETED or self.last_response is None:
            return
        self._send(self.last_response)
        self._g_interval = min(2 * self._g_interval, self.settings.t2)
        self._start_timer("G", self._g_interval, self._timer_g)

    def _timer_h(self) -> None:
        # no ACK ever came
        self._terminate()
        if self._on_timeout is not None:
            self._on_timeout()


class _ClientTransaction(_Transaction[M]):
    """The future that resolves with the final response (or TransactionTimeoutError)."""

    __slots__ = ("_on_provisional", "final", "request")

    def __init__(
        self,
        key: Hashable,
        request: M,
        *,
        reliable: bool,
        send: Callable[[M], object],
        scheduler: Scheduler,
        settings: TimerSettings,
        on_terminated: Callable[[_Transaction[M]], object] | None,
        on_provisional: Callable[[M, int], object] | None,
    ) -> None:
        super().__init__(
            key,
            reliable=reliable,
            send=send,
            scheduler=scheduler,
            settings=settings,
            on_terminated=on_terminated,
        )
        self.request = request
        self.final: asyncio.Future[M] = asyncio.get_running_loop().create_future()
        self._on_provisional = on_provisional

    def _resolve(self, response: M) -> None:
        if not self.final.done():
            self.final.set_result(response)

    def _fail(self, exc: BaseException) -> None:
        if not self.final.done():
            self.final.set_exception(exc)
        self._terminate()

    def transport_error(self) -> None:
        self._fail(ConnectionError("transport error while sending the request"))


class NonInviteClientTransaction(_ClientTransaction[M]):
    """§17.1.2: Trying (E, F) -> Proceeding -> Completed (K) -> Terminated."""

    __slots__ = ("_e_interval",)

    def __init__(
        self,
        key: Hashable,
        request: M,
        *,
        reliable: bool,
        send: Callable[[M], object],
        scheduler: Scheduler,
        settings: TimerSettings = TimerSettings(),
        on_terminated: Callable[[_Transaction[M]], object] | None = None,
        on_provisional: Callable[[M, int], object] | None = None,
    ) -> None:
        super().__init__(
            key,
            request,
            reliable=reliable,
            send=send,
            scheduler=scheduler,
            settings=settings,
            on_terminated=on_terminated,
            on_provisional=on_provisional,
        )
        self._e_interval = settings.t1

    def start(self) -> None:
        """Send the request and arm timers E (unreliable only) and F."""
        self._send(self.request)
        if not self.reliable:
            self._start_timer("E", self._e_interval, self._timer_e)
        self._start_timer("F", self.settings.timer_f, self._timer_f)

    def _timer_e(self) -> None:
        self._send(self.request)
        if self.state is TransactionState.PROCEEDING:
            self._e_interval = self.settings.t2
        else:
            self._e_interval = min(2 * self._e_interval, self.settings.t2)
        self._start_timer("E", self._e_interval, self._timer_e)

    def _timer_f(self) -> None:
        self._fail(TransactionTimeoutError("timer F fired: no final response"))

    def receive_response(self, response: M, status: int) -> None:
        """A response matching this transaction."""
        if self.state not in (TransactionState.TRYING, TransactionState.PROCEEDING):
            return  # retransmissions of the final response are absorbed in Completed
        if status < 200:
            self.state = TransactionState.PROCEEDING
            if self._on_provisional is not None:
                self._on_provisional(response, status)
            return
        self.state = TransactionState.COMPLETED
        self._cancel_timer("E")
        self._cancel_timer("F")
        self._resolve(response)
        self._wait_then_terminate("K", self.settings.t4)


class InviteClientTransaction(_ClientTransaction[M]):
    """§17.1.1 with RFC 6026: Calling (A, B) -> Proceeding -> Completed (D) -> Terminated
    for a non-2xx; Calling/Proceeding -> Accepted (M) -> Terminated for a 2xx.

    ``make_ack(response)`` builds the ACK for a non-2xx final response (§17.1.1.3);
    the transaction sends it, and again for each retransmission of that response.
    The first 2xx resolves :attr:`final`; it and every later 2xx (retransmitted, or
    from another fork) go to ``on_2xx`` while Accepted lasts: their ACKs belong to the
    dialogs (the TU).
    """

    __slots__ = ("_a_interval", "_ack", "_make_ack", "_on_2xx")

    def __init__(
        self,
        key: Hashable,
        request: M,
        *,
        reliable: bool,
        send: Callable[[M], object],
        scheduler: Scheduler,
        make_ack: Callable[[M], M],
        settings: TimerSettings = TimerSettings(),
        on_terminated: Callable[[_Transaction[M]], object] | None = None,
        on_provisional: Callable[[M, int], object] | None = None,
        on_2xx: Callable[[M, int], object] | None = None,
    ) -> None:
        super().__init__(
            key,
            request,
            reliable=reliable,
            send=send,
            scheduler=scheduler,
            settings=settings,
            on_terminated=on_terminated,
            on_provisional=on_provisional,
        )
        self.state = TransactionState.CALLING
        self._on_2xx = on_2xx
        self._make_ack = make_ack
        self._ack: M | None = None
        self._a_interval = settings.t1

    def start(self) -> None:
        """Send the INVITE and arm timers A (unreliable only) and B."""
        self._send(self.request)
        if not self.reliable:
            self._start_timer("A", self._a_interval, self._timer_a)
        self._start_timer("B", self.settings.timer_b, self._timer_b)

    def _timer_a(self) -> None:
        self._send(self.request)
        self._a_interval *= 2
        self._start_timer("A", self._a_interval, self._timer_a)

    def _timer_b(self) -> None:
        self._fail(TransactionTimeoutError("timer B fired: no response to INVITE"))

    def receive_response(self, response: M, status: int) -> None:
        """A response matching this transaction."""
        state = self.state
        if state is TransactionState.COMPLETED:
            if status >= 300 and self._ack is not None:
                self._send(self._ack)
            return
        if state is TransactionState.ACCEPTED:
            if 200 <= status < 300 and self._on_2xx is not None:
                self._on_2xx(response, status)  # a retransmission or another fork's 2xx
            return
        if state not in (TransactionState.CALLING, TransactionState.PROCEEDING):
            return
        if status < 200:
            self.state = TransactionState.PROCEEDING
            self._cancel_timer("A")
            self._cancel_timer("B")
            if self._on_provisional is not None:
                self._on_provisional(response, status)
            return
        self._cancel_timer("A")
        self._cancel_timer("B")
        self._resolve(response)
        if status < 300:
            self.state = TransactionState.ACCEPTED
            self._start_timer("M", self.settings.timer_m, self._terminate)
            if self._on_2xx is not None:
                self._on_2xx(response, status)
            return
        self.state = TransactionState.COMPLETED
        self._ack = self._make_ack(response)
        self._send(self._ack)
        self._wait_then_terminate("D", self.settings.timer_d)


class CompletedResponses(Generic[M]):
    """Non-INVITE server transactions over UDP that answered at once, as table entries.

    A non-INVITE server transaction that sends its final response straight away spends
    its life in the Completed state (RFC 3261 §17.2.2): it resends that response to each
    retransmission of the request until timer J (64*T1) fires. This table keeps exactly
    that (key -> response and where to send it, until the deadline) without an object and
    a timer per transaction: entries sit in dicts bucketed by time, a bucket is dropped
    whole once everything in it has expired, and a lookup ignores expired entries.

    ``max_entries`` bounds the memory a flood of requests can pin for timer J (to about
    1.25x of it: a bucket also closes when it holds a quarter): past it the oldest bucket
    goes early, and a late retransmission of one of its requests is then
    processed afresh (for REGISTER: a new challenge or a replay rejection, never a crash).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        send: Callable[[M, Any], object],
        *,
        wait: float,
        max_entries: int = 131_072,
    ) -> None:
        if wait <= 0:
            raise ValueError(f"timer J must be positive, got {wait}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.wait = wait
        self.max_entries = max_entries
        self._clock = clock
        self._send = send
        self._slice = wait / 4
        self._bucket_cap = max(1, max_entries // 4)
        self._count = 0
        # (bucket start, key -> (deadline, response, destination)), oldest first
        self._buckets: deque[tuple[float, dict[Hashable, tuple[float, M, Any]]]] = deque()

    def add(self, key: Hashable, response: M, destination: Any) -> None:
        """Send ``response`` to ``destination`` and keep it for timer J."""
        now = self._clock()
        buckets = self._buckets
        if (
            not buckets
            or now >= buckets[-1][0] + self._slice
            or len(buckets[-1][1]) >= self._bucket_cap
        ):
            while buckets and buckets[0][0] + self._slice + self.wait < now:
                self._count -= len(buckets.popleft()[1])
            buckets.append((now, {}))
        while self._count >= self.max_entries and len(buckets) > 1:
            self._count -= len(buckets.popleft()[1])
        newest = buckets[-1][1]
        if key not in newest:
            self._count += 1
        newest[key] = (now + self.wait, response, destination)
        self._send(response, destination)

    def resend(self, key: Hashable) -> bool:
        """Resend the response of ``key`` (a retransmitted request); False if none is kept."""
        for _, bucket in reversed(self._buckets):
            entry = bucket.get(key)
            if entry is not None:
                if entry[0] <= self._clock():
                    return False  # timer J has fired: the transaction is gone
                self._send(entry[1], entry[2])
                return True
        return False

    def __contains__(self, key: object) -> bool:
        now = self._clock()
        for _, bucket in reversed(self._buckets):
            entry = bucket.get(key)
            if entry is not None:
                return bool(entry[0] > now)
        return False

    def __len__(self) -> int:
        """Entries held, including expired ones not yet dropped with their bucket."""
        return self._count

    def clear(self) -> None:
        self._buckets.clear()
        self._count = 0
