"""RFC 3261 §17 transaction state machines driven by a fake clock."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

import pytest

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

S = TransactionState


class FakeScheduler:
    """A virtual clock: timers fire only when the test advances time."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, FakeHandle]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_later(
        self, delay: float, callback: Callable[..., object], *args: object
    ) -> FakeHandle:
        handle = FakeHandle(lambda: callback(*args))
        heapq.heappush(self._queue, (self.now + delay, next(self._seq), handle))
        return handle

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self._queue and self._queue[0][0] <= end:
            when, _, handle = heapq.heappop(self._queue)
            self.now = when
            if not handle.cancelled:
                handle.callback()
        self.now = end


class FakeHandle:
    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Wire:
    """Records what a transaction sends, with the virtual time of each send."""

    def __init__(self, clock: FakeScheduler) -> None:
        self.clock = clock
        self.sent: list[tuple[float, str]] = []

    def __call__(self, message: str) -> None:
        self.sent.append((self.clock.now, message))

    def times(self, message: str) -> list[float]:
        return [t for t, m in self.sent if m == message]


SETTINGS = TimerSettings(t1=0.5, t2=4.0, t4=5.0)


@pytest.fixture
def clock() -> FakeScheduler:
    return FakeScheduler()


def test_timer_settings_validation() -> None:
    with pytest.raises(ValueError):
        TimerSettings(t1=5, t2=4)
    assert TimerSettings(t1=0.1).timer_b == pytest.approx(6.4)
    assert TimerSettings(t1=0.1).timer_d == 32.0


# -- non-INVITE client (timers E, F, K) ------------------------------------------------


async def test_non_invite_client_retransmits_with_e_doubling_to_t2_then_times_out(
    clock: FakeScheduler,
) -> None:
    wire = Wire(clock)
    ended: list[object] = []
    tx: NonInviteClientTransaction[str] = NonInviteClientTransaction(
        "k", "REGISTER", reliable=False, send=wire, scheduler=clock, on_terminated=ended.append
    )
    tx.start()
    assert tx.timers == {"E", "F"}
    clock.advance(40)
    times = wire.times("REGISTER")
    # 0, .5, 1.5, 3.5, 7.5, 11.5, ... every T2 once the interval is capped
    assert times[:6] == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5]
    assert all(b - a == 4.0 for a, b in itertools.pairwise(times[4:]))
    assert times[-1] < 32.0
    assert tx.state is S.TERMINATED and ended == [tx]
    with pytest.raises(TransactionTimeoutError):
        tx.final.result()


async def test_non_invite_client_provisional_then_final_then_k(clock: FakeScheduler) -> None:
    wire = Wire(clock)
    provisional: list[tuple[str, int]] = []
    tx: NonInviteClientTransaction[str] = NonInviteClientTransaction(
        "k",
        "OPTIONS",
        reliable=False,
        send=wire,
        scheduler=clock,
        settings=SETTINGS,
        on_provisional=lambda r, s: provisional.append((r, s)),
    )
    tx.start()
    clock.advance(0.6)
    tx.receive_response("100", 100)
    assert tx.state is S.PROCEEDING and provisional == [("100", 100)]
    clock.advance(5)
    # in Proceeding, E fires every T2
    assert wire.times("OPTIONS") == [0.0, 0.5, 1.5, 5.5]
    tx.receive_response("200", 200)
    assert tx.state is S.COMPLETED and tx.final.result() == "200"
    assert tx.timers == {"K"}
    tx.receive_response("200-again", 200)  # absorbed
    assert tx.final.result() == "200"
    clock.advance(4.9)
    assert tx.state is S.COMPLETED
    clock.advance(0.2)
    assert tx.state is S.TERMINATED
    assert len(wire.sent) == 4


async def test_non_invite_client_reliable_has_no_e_and_no_k_wait(clock: FakeScheduler) -> None:
    wire = Wire(clock)
    tx: NonInviteClientTransaction[str] = NonInviteClientTransaction(
        "k", "REGISTER", reliable=True, send=wire, scheduler=clock
    )
    tx.start()
    assert tx.timers == {"F"}
    clock.advance(10)
    assert wire.times("REGISTER") == [0.0]
    tx.receive_response("401", 401)
    assert tx.state is S.TERMINATED and tx.final.result() == "401"


async def test_client_transport_error(clock: FakeScheduler) -> None:
    tx: NonInviteClientTransaction[str] = NonInviteClientTransaction(
        "k", "REGISTER", reliable=True, send=Wire(clock), scheduler=clock
    )
    tx.start()
    tx.transport_error()
    assert tx.state is S.TERMINATED
    with pytest.raises(ConnectionError):
        tx.final.result()


# -- INVITE client (timers A, B, D; ACK for non-2xx) ----------------------------------------


async def test_invite_client_timer_a_doubles_and_b_times_out(clock: FakeScheduler) -> None:
    wire = Wire(clock)
    tx: InviteClientTransaction[str] = InviteClientTransaction(
        "k", "INVITE", reliable=False, send=wire, scheduler=clock, make_ack=lambda r: "ACK"
    )
    tx.start()
    clock.advance(40)
    # A doubles without a cap: 0, .5, 1.5, 3.5, 7.5, 15.5, 31.5; B fires at 32
    assert wire.times("INVITE") == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert tx.state is S.TERMINATED
    with pytest.raises(TransactionTimeoutError):
        tx.final.result()


async def test_invite_client_non_2xx_sends_ack_and_absorbs_retransmissions(
    clock: FakeScheduler,
) -> None:
    wire = Wire(clock)
    acks: list[str] = []

    def make_ack(response: str) -> str:
        acks.append(response)
        return "ACK"

    tx: InviteClientTransaction[str] = InviteClientTransaction(
        "k", "INVITE", reliable=False, send=wire, scheduler=clock, make_ack=make_ack
    )
    tx.start()
    tx.receive_response("180", 180)
    assert tx.state is S.PROCEEDING and tx.timers == frozenset()
    clock.advance(100)  # no timer B in Proceeding
    assert wire.times("INVITE") == [0.0]
    tx.receive_response("486", 486)
    assert tx.state is S.COMPLETED and tx.final.result() == "486" and acks == ["486"]
    tx.receive_response("486", 486)
    assert len(wire.times("ACK")) == 2
    clock.advance(31.9)
    assert tx.state is S.COMPLETED
    clock.advance(0.2)  # timer D (32 s)
    assert tx.state is S.TERMINATED


async def test_invite_client_2xx_accepted_hands_every_2xx_up_without_ack(
    clock: FakeScheduler,
) -> None:
    wire = Wire(clock)
    seen: list[str] = []
    tx: InviteClientTransaction[str] = InviteClientTransaction(
        "k",
        "INVITE",
        reliable=True,
        send=wire,
        scheduler=clock,
        make_ack=lambda r: "ACK",
        on_2xx=lambda r, s: seen.append(r),
    )
    tx.start()
    assert tx.timers == {"B"}
    tx.receive_response("200", 200)
    # RFC 6026 §8.4: Accepted, timer M; the 2xx's ACK is the TU's, not the transaction's
    assert tx.state is S.ACCEPTED and tx.timers == {"M"} and tx.final.result() == "200"
    tx.receive_response("200-again", 200)  # retransmission
    tx.receive_response("200-fork", 200)  # another fork
    tx.receive_response("486", 486)  # a non-2xx in Accepted is dropped
    assert seen == ["200", "200-again", "200-fork"]
    assert wire.times("ACK") == []
    clock.advance(32.1)  # timer M = 64*T1
    assert tx.state is S.TERMINATED


async def test_invite_client_reliable_non_2xx_terminates_at_once(clock: FakeScheduler) -> None:
    wire = Wire(clock)
    tx: InviteClientTransaction[str] = InviteClientTransaction(
        "k", "INVITE", reliable=True, send=wire, scheduler=clock, make_ack=lambda r: "ACK"
    )
    tx.start()
    tx.receive_response("503", 503)
    assert tx.state is S.TERMINATED and wire.times("ACK") == [0.0]


# -- non-INVITE server (timer J) -----------------------------------------------------------


def test_non_invite_server_absorbs_retransmissions(clock: FakeScheduler) -> None:
    wire = Wire(clock)
    ended: list[object] = []
    tx: NonInviteServerTransaction[str] = NonInviteServerTransaction(
        "k", reliable=False, send=wire, scheduler=clock, on_terminated=ended.append
    )
    assert tx.state is S.TRYING
    tx.receive_request("REGISTER")  # retransmission in Trying: nothing to send
    assert wire.sent == []
    assert tx.respond("100", 100)
    tx.receive_request("REGISTER")
    assert [m for _, m in wire.sent] == ["100", "100"]
    assert tx.respond("200", 200) and tx.state is S.COMPLETED
    assert not tx.respond("500", 500)  # a second final response is discarded
    clock.advance(10)
    tx.receive_request("REGISTER")
    assert [m for _, m in wire.sent] == ["100", "100", "200", "200"]
    clock.advance(22.1)  # timer J = 64*T1 = 32 s
    assert tx.state is S.TERMINATED and ended == [tx]


def test_non_invite_server_reliable_terminates_at_once(clock: FakeScheduler) -> None:
    tx: NonInviteServerTransaction[str] = NonInviteServerTransaction(
        "k", reliable=True, send=Wire(clock), scheduler=clock
    )
    tx.respond("200", 200)
    assert tx.state is S.TERMINATED


# -- INVITE server (100 Trying, timers G, H, I) -------------------------------------------


def test_invite_server_sends_trying_and_retransmits_final_with_g(clock: FakeScheduler) -> None:
    wire = Wire(clock)
    timeouts: list[bool] = []
    tx: InviteServerTransaction[str] = InviteServerTransaction(
        "k",
        reliable=False,
        send=wire,
        scheduler=clock,
        settings=SETTINGS,
        trying="100",
        on_timeout=lambda: timeouts.append(True),
    )
    assert wire.sent == [(0.0, "100")] and tx.state is S.PROCEEDING
    tx.receive_request("INVITE")
    assert wire.times("100") == [0.0, 0.0]
    tx.respond("486", 486)
    assert tx.state is S.COMPLETED and tx.timers == {"G", "H"}
    clock.advance(40)
    # G: .5, 1, 2, 4, 4, ... capped at T2 until H at 32 s
    times = wire.times("486")
    assert times[:5] == [0.0, 0.5, 1.5, 3.5, 7.5]
    assert all(b - a == 4.0 for a, b in itertools.pairwise(times[4:]))
    assert tx.state is S.TERMINATED and timeouts == [True]


def test_invite_server_ack_confirms_then_timer_i(clock: FakeScheduler) -> None:
    wire = Wire(clock)
    tx: InviteServerTransaction[str] = InviteServerTransaction(
        "k", reliable=False, send=wire, scheduler=clock, trying="100"
    )
    tx.respond("404", 404)
    tx.receive_request("INVITE")  # retransmitted INVITE gets the final response again
    assert wire.times("404") == [0.0, 0.0]
    clock.advance(0.7)
    tx.receive_request("ACK", is_ack=True)
    assert tx.state is S.CONFIRMED and tx.timers == {"I"}
    tx.receive_request("ACK", is_ack=True)  # absorbed
    tx.receive_request("INVITE")  # absorbed in Confirmed
    assert len(wire.sent) == 4
    clock.advance(5.1)  # timer I = T4
    assert tx.state is S.TERMINATED


def test_invite_server_2xx_accepted_and_reliable_has_no_g(clock: FakeScheduler) -> None:
    wire = Wire(clock)
    ok: InviteServerTransaction[str] = InviteServerTransaction(
        "k", reliable=False, send=wire, scheduler=clock
    )
    ok.respond("180", 180)
    assert ok.state is S.PROCEEDING
    ok.respond("200", 200)
    # RFC 6026 §7.1: Accepted until timer L; the TU's 2xx retransmissions pass through,
    # retransmitted INVITEs are absorbed, a late non-2xx is refused
    assert ok.state is S.ACCEPTED and ok.timers == {"L"}
    assert ok.respond("200", 200)
    assert not ok.respond("500", 500)
    before = len(wire.sent)
    ok.receive_request("INVITE")
    assert len(wire.sent) == before
    clock.advance(32.1)
    assert ok.state is S.TERMINATED
    assert not ok.respond("200", 200)
    reliable: InviteServerTransaction[str] = InviteServerTransaction(
        "k2", reliable=True, send=wire, scheduler=clock
    )
    reliable.respond("603", 603)
    assert reliable.timers == {"H"}
    reliable.receive_request("ACK", is_ack=True)
    assert reliable.state is S.TERMINATED  # timer I is 0 on reliable transports


class TestCompletedResponses:
    """The table form of a non-INVITE server transaction that answered at once (UDP)."""

    def make(self) -> tuple[FakeScheduler, list[tuple[str, str]], CompletedResponses[str]]:
        clock = FakeScheduler()
        sent: list[tuple[str, str]] = []
        table: CompletedResponses[str] = CompletedResponses(
            clock.time, lambda response, where: sent.append((response, where)), wait=32.0
        )
        return clock, sent, table

    def test_sends_then_absorbs_retransmissions_until_timer_j(self) -> None:
        clock, sent, table = self.make()
        table.add("k1", "200 OK", "peer")
        assert sent == [("200 OK", "peer")] and "k1" in table
        clock.advance(31.9)
        assert table.resend("k1")
        assert sent[-1] == ("200 OK", "peer") and len(sent) == 2
        clock.advance(0.2)  # timer J has fired
        assert not table.resend("k1") and "k1" not in table and len(sent) == 2
        assert not table.resend("unknown")

    def test_expired_buckets_are_dropped_and_newest_entry_wins(self) -> None:
        clock, _, table = self.make()
        for n in range(100):
            table.add(f"k{n}", "200", "peer")
            clock.advance(1.0)
        assert len(table) <= 48  # 32 s of entries plus at most one slice of expired ones
        table.add("k99", "second", "peer")
        assert table.resend("k99")
        assert "k0" not in table
        table.clear()
        assert len(table) == 0 and not table.resend("k99")

    def test_flood_is_bounded_by_max_entries(self) -> None:
        clock = FakeScheduler()
        sent: list[tuple[str, str]] = []
        table: CompletedResponses[str] = CompletedResponses(
            clock.time, lambda r, w: sent.append((r, w)), wait=32.0, max_entries=1000
        )
        for n in range(20_000):  # 2,000 requests a second for 10 s
            table.add(f"k{n}", "200", "peer")
            clock.advance(0.0005)
        assert len(table) <= 1250  # the cap plus at most one filling bucket
        assert table.resend("k19999")  # the newest requests are still absorbed
        assert not table.resend("k0")  # the oldest went early: processed afresh
        assert len(sent) == 20_000 + 1

    def test_same_key_counts_once(self) -> None:
        _, _, table = self.make()
        table.add("k", "first", "peer")
        table.add("k", "second", "peer")
        assert len(table) == 1

    def test_timer_j_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="timer J"):
            CompletedResponses(lambda: 0.0, lambda r, w: None, wait=0)
        with pytest.raises(ValueError, match="max_entries"):
            CompletedResponses(lambda: 0.0, lambda r, w: None, wait=1, max_entries=0)
