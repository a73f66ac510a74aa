"""RTP relay: the Python face of the native engine in ``pbxcore._rtp``.

Audio never passes through Python: worker threads (epoll, recvmmsg/sendmmsg, no GIL) forward
packets between the two legs of a session. Python creates, updates and deletes sessions,
reads counters, and receives events (leg timeout, DTMF digit, SSRC change, prompt finished)
through an :class:`asyncio.Queue` or a thread-safe blocking :meth:`RtpRelay.poll_events`.

    with RtpRelay(bind="127.0.0.1", ports=(20000, 29999)) as relay:
        session = relay.create_session()
        session.a.update(remote=("127.0.0.1", 4000), law="ulaw")
        session.b.update(remote=("127.0.0.1", 5000), law="alaw")   # transcodes
        ...
        relay.delete_session(session)
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, Self

from pbxcore import _rtp
from pbxcore._jitter import JitterBuffer
from pbxcore._rtp import PortRangeExhaustedError
from pbxcore.media.prompt import Prompt

if TYPE_CHECKING:
    from pbxcore._rtp import LegCounters, RawEvent, RelayCounters

__all__ = [
    "DtmfDigit",
    "Law",
    "LegLatched",
    "LegStats",
    "LegTimeout",
    "MediaEvent",
    "PacketCounters",
    "PlayerDone",
    "PortRangeExhaustedError",
    "RelayCore",
    "RelayLeg",
    "RelaySession",
    "RtpRelay",
    "SsrcChanged",
]

LegName = Literal["a", "b"]
# The G.711 companding law a leg's peer sends and receives (SDP calls the codecs PCMU and
# PCMA: see pbxcore.media.sdp.Codec.law); the same words as pbxcore.wavfile's encodings.
Law = Literal["ulaw", "alaw"]
_LEG_NAMES: tuple[LegName, LegName] = ("a", "b")
_LAWS: dict[str, int] = {"ulaw": _rtp.LAW_ULAW, "alaw": _rtp.LAW_ALAW}


class RelayCore(Protocol):
    """What :class:`RtpRelay` needs of its engine: ``pbxcore._rtp.Relay`` or the reference."""

    @property
    def running(self) -> bool: ...
    def start(self) -> None: ...
    def close(self) -> None: ...
    def create_session(self, rtcp_mux: bool = False) -> int: ...
    def port(self, session_id: int, leg: int) -> int: ...
    def configure(
        self,
        session_id: int,
        leg: int,
        *,
        remote: tuple[str, int] | None = None,
        rtcp_remote: tuple[str, int] | None = None,
        law: int | None = None,
        pt: int | None = None,
        te_pt: int | None = None,
        strict: bool | None = None,
        relatch: bool | None = None,
        latch: bool | None = None,
        timeout_ms: int | None = None,
        clear_remote: bool = False,
    ) -> None: ...
    def delete(self, session_id: int) -> None: ...
    def stats(self, session_id: int, leg: int) -> LegCounters: ...
    def play(
        self, session_id: int, leg: int, pcm16: bytes, player_id: int, loops: int = 1
    ) -> None: ...
    def stop_play(self, session_id: int, leg: int) -> bool: ...
    def record(
        self, session_id: int, leg: int, path: str, jitter_buffer: JitterBuffer | None = None
    ) -> None: ...
    def stop_record(self, session_id: int, leg: int) -> int: ...
    def event_fd(self) -> int: ...
    def drain_events(self) -> list[RawEvent]: ...
    def wait_events(self, timeout: float) -> bool: ...
    def counters(self) -> RelayCounters: ...


# RFC 4733 section 3.2: events 0-9, *, #, A-D
DTMF_DIGITS = "0123456789*#ABCD"


@dataclass(frozen=True, slots=True)
class LegStats:
    """Counters of one leg: what its peer sent us, and what we sent to its peer."""

    packets: int
    bytes: int
    dropped_invalid: int
    dropped_unlatched: int
    dropped_other: int
    sent_packets: int
    sent_bytes: int
    rtcp_packets: int
    rtcp_bytes: int
    lost: int
    jitter_ms: float
    last_packet: float | None  # time.monotonic() of the last RTP packet
    ssrc: int | None
    peer: tuple[str, int] | None  # latched source address


@dataclass(frozen=True, slots=True)
class PacketCounters:
    """RTP packets through the relay since it started, over every leg, live or deleted:
    ``received`` from the peers, ``sent`` to them, ``dropped`` (invalid, from a source the
    leg has not latched, or for another reason)."""

    received: int
    sent: int
    dropped: int


@dataclass(frozen=True, slots=True)
class SessionStats:
    """Counters of both legs of a session (or of a call's two parties)."""

    a: LegStats
    b: LegStats


@dataclass(frozen=True, slots=True)
class MediaEvent:
    """Something the relay reports about one leg of a session; subclasses say what."""

    session_id: int
    leg: LegName
    monotonic: float


@dataclass(frozen=True, slots=True)
class LegTimeout(MediaEvent):
    """No RTP arrived on the leg for ``timeout`` seconds."""

    timeout: float


@dataclass(frozen=True, slots=True)
class DtmfDigit(MediaEvent):
    """An RFC 4733 telephone-event ended; reported once per event."""

    digit: str
    duration_ms: int
    volume: int


@dataclass(frozen=True, slots=True)
class SsrcChanged(MediaEvent):
    """The peer's RTP stream changed SSRC (``relatched``: a new source took the leg)."""

    old_ssrc: int
    new_ssrc: int
    relatched: bool


@dataclass(frozen=True, slots=True)
class PlayerDone(MediaEvent):
    """A prompt ended: played ``frames`` 20 ms frames, ``stopped`` early or not."""

    player_id: int
    frames: int
    stopped: bool


@dataclass(frozen=True, slots=True)
class LegLatched(MediaEvent):
    """The leg learnt its peer's address from the first packet (symmetric RTP)."""


def _event(raw: RawEvent) -> MediaEvent:
    kind, sid, leg_idx, a, b, c, mono_ns = raw
    leg = _LEG_NAMES[leg_idx]
    mono = mono_ns / 1e9
    if kind == _rtp.EV_DTMF:
        digit = DTMF_DIGITS[a] if a < len(DTMF_DIGITS) else f"event-{a}"
        return DtmfDigit(sid, leg, mono, digit, b, c)
    if kind == _rtp.EV_TIMEOUT:
        return LegTimeout(sid, leg, mono, a / 1000)
    if kind == _rtp.EV_SSRC_CHANGED:
        return SsrcChanged(sid, leg, mono, a, b, bool(c))
    if kind == _rtp.EV_PLAYER_DONE:
        return PlayerDone(sid, leg, mono, a, b, bool(c))
    return LegLatched(sid, leg, mono)


class RelayLeg:
    """One side of a session: a local RTP port (and RTCP on port+1) facing one peer."""

    def __init__(self, session: RelaySession, index: int) -> None:
        self._session = session
        self._index = index
        self.name: LegName = _LEG_NAMES[index]
        self.local_port: int = session._relay._core.port(session.id, index)
        self.rtcp_port: int | None = None if session.rtcp_mux else self.local_port + 1
        self.law: Law | None = None

    @property
    def local_address(self) -> str:
        return self._session._relay.bind

    def update(
        self,
        *,
        remote: tuple[str, int] | None = None,
        rtcp_remote: tuple[str, int] | None = None,
        law: Law | None = None,
        payload_type: int | None = None,
        telephone_event: int | None = None,
        strict: bool | None = None,
        relatch: bool | None = None,
        latch: bool | None = None,
        timeout: float | None = None,
        clear_remote: bool = False,
    ) -> None:
        """Change what is given, applied atomically by the leg's worker thread.

        ``remote`` is the SDP address of this leg's peer (RTCP defaults to its port + 1);
        a new one restarts latching. ``law`` is the G.711 law that peer sends and receives
        (``payload_type`` its number for it): when the two legs differ, audio is transcoded
        μ-law<->A-law and its payload type rewritten. ``telephone_event`` is the RFC 4733
        payload type (-1 = none). ``strict`` drops media not from the SDP address;
        ``relatch`` lets a new SSRC from a new address take the leg over; ``latch=False``
        keeps the leg from learning its peer from received packets; ``timeout`` (seconds,
        0 = off) raises :class:`LegTimeout` when no RTP arrives for that long.
        ``clear_remote`` forgets the peer's address (applied before ``remote``): with
        ``latch=False`` nothing is sent to the peer any more (hold).
        """
        core_law: int | None = None
        if law is not None:
            if law not in _LAWS:
                raise ValueError(f"unsupported G.711 law {law!r}: the relay knows ulaw and alaw")
            core_law = _LAWS[law]
        self._session._relay._core.configure(
            self._session.id,
            self._index,
            remote=remote,
            rtcp_remote=rtcp_remote,
            law=core_law,
            pt=payload_type,
            te_pt=telephone_event,
            strict=strict,
            relatch=relatch,
            latch=latch,
            timeout_ms=None if timeout is None else round(timeout * 1000),
            clear_remote=clear_remote,
        )
        if law is not None:
            self.law = law

    def stats(self) -> LegStats:
        return LegStats(**self._session._relay._core.stats(self._session.id, self._index))

    def play(self, prompt: Prompt | bytes, *, loops: int = 1) -> int:
        """Send a prompt (or raw native-order PCM16 8 kHz) into this leg; return its id.

        ``loops`` = 0 repeats until stopped. A :class:`PlayerDone` event reports the end.
        While a prompt plays, audio from the other leg toward this leg's peer is not
        forwarded.
        """
        pcm = prompt if isinstance(prompt, bytes) else prompt.pcm16
        relay = self._session._relay
        player_id = relay._next_player_id()
        relay._core.play(self._session.id, self._index, pcm, player_id, loops)
        return player_id

    def stop_playing(self) -> bool:
        return bool(self._session._relay._core.stop_play(self._session.id, self._index))

    def record(self, path: str | Path, *, jitter_buffer: bool = True) -> None:
        """Write what this leg receives to a PCM16 8 kHz WAV file.

        With ``jitter_buffer`` the audio goes through a native JitterBuffer (reordering,
        concealment) paced by a 20 ms clock; otherwise it is written in arrival order.
        """
        jb = JitterBuffer() if jitter_buffer else None
        self._session._relay._core.record(self._session.id, self._index, str(path), jb)

    def stop_recording(self) -> int:
        """Close the WAV file; return the number of samples written (-1 if none)."""
        return int(self._session._relay._core.stop_record(self._session.id, self._index))


class RelaySession:
    """Two legs bridged by the relay; created by :meth:`RtpRelay.create_session`."""

    def __init__(self, relay: RtpRelay, session_id: int, rtcp_mux: bool) -> None:
        self._relay = relay
        self.id = session_id
        self.rtcp_mux = rtcp_mux
        self.a = RelayLeg(self, 0)
        self.b = RelayLeg(self, 1)

    def leg(self, name: LegName) -> RelayLeg:
        return self.a if name == "a" else self.b

    def stats(self) -> SessionStats:
        return SessionStats(a=self.a.stats(), b=self.b.stats())

    def delete(self) -> None:
        self._relay.delete_session(self)

    def __repr__(self) -> str:
        return f"<RelaySession {self.id} a={self.a.local_port} b={self.b.local_port}>"


class RtpRelay:
    """The media relay behind every bridged call.

    ``bind`` is a numeric IPv4 or IPv6 address; ``ports`` the inclusive range the legs' even
    RTP ports (and odd RTCP ports) come from; ``workers`` the number of native threads
    (``None``: one per core). Sessions are spread over the workers round-robin.
    """

    # the engine; tests swap in the pure-Python reference (pbxcore.media._relay_ref.Relay)
    _core_class: ClassVar[Callable[[str, int, int, int], RelayCore]] = _rtp.Relay

    def __init__(
        self,
        bind: str = "127.0.0.1",
        ports: tuple[int, int] = (20000, 29999),
        workers: int | None = 1,
    ) -> None:
        if workers is None:
            workers = len(os.sched_getaffinity(0)) or 1
        try:
            ipaddress.ip_address(bind.strip("[]"))
        except ValueError:
            raise ValueError(f"bind must be a numeric IPv4 or IPv6 address, got {bind!r}") from None
        lo, hi = ports
        self.bind = bind.strip("[]")
        self.ports = (lo, hi)
        self._core: RelayCore = type(self)._core_class(self.bind, lo, hi, workers)
        self._sessions: dict[int, RelaySession] = {}
        self._lock = threading.Lock()
        self._player_ids = 0
        self._freed = [0, 0, 0]  # received, sent, dropped by the legs of deleted sessions
        self._queue: asyncio.Queue[MediaEvent] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # lifecycle

    def start(self) -> None:
        self._core.start()

    def close(self) -> None:
        """Stop the worker threads and delete every session."""
        self.detach()
        self._core.close()
        with self._lock:
            self._sessions.clear()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        self.start()
        self.attach()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return bool(self._core.running)

    # sessions

    def create_session(self, *, rtcp_mux: bool = False) -> RelaySession:
        """Allocate a session with two legs; raises :class:`PortRangeExhaustedError` when full."""
        session_id = self._core.create_session(rtcp_mux)
        session = RelaySession(self, session_id, rtcp_mux)
        with self._lock:
            self._sessions[session_id] = session
        return session

    def delete_session(self, session: RelaySession) -> None:
        """Delete a session; its ports are free for reuse when this returns."""
        with self._lock:
            gone = self._sessions.pop(session.id, None)
        if gone is not None:
            # its last counters go into the totals, read once per call, not per packet
            totals = _sum_legs(self._core, [session.id])
            with self._lock:
                self._freed = [x + y for x, y in zip(self._freed, totals, strict=True)]
        self._core.delete(session.id)

    def packet_counters(self) -> PacketCounters:
        """Packets of every leg so far (the live ones read now): for metrics."""
        with self._lock:
            live = list(self._sessions)
            freed = list(self._freed)
        received, sent, dropped = (
            x + y for x, y in zip(freed, _sum_legs(self._core, live), strict=True)
        )
        return PacketCounters(received=received, sent=sent, dropped=dropped)

    def session(self, session_id: int) -> RelaySession | None:
        with self._lock:
            return self._sessions.get(session_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def counters(self) -> RelayCounters:
        """Relay-wide: live_sessions, live_ports, sessions_created/freed, events_dropped,
        live_players, live_recorders, workers, pooled_ports."""
        return self._core.counters()

    def _next_player_id(self) -> int:
        with self._lock:
            self._player_ids += 1
            return self._player_ids

    # events

    def poll_events(self, timeout: float | None = 0.0) -> list[MediaEvent]:
        """Pending events; blocks up to ``timeout`` seconds (None = forever) for the first.

        Thread-safe, for embedders without asyncio. Do not mix with :meth:`attach` on the
        same relay: each event is delivered once, to whichever reader drains it first.
        """
        if timeout != 0.0:
            self._core.wait_events(-1.0 if timeout is None else timeout)
        return [_event(raw) for raw in self._core.drain_events()]

    def attach(self, loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Queue[MediaEvent]:
        """Register the relay's eventfd with the loop; events flow into the returned queue."""
        loop = loop or asyncio.get_running_loop()
        if self._queue is not None and self._loop is loop:
            return self._queue
        self.detach()
        self._queue = asyncio.Queue()
        self._loop = loop
        loop.add_reader(self._core.event_fd(), self._on_events)
        return self._queue

    def detach(self) -> None:
        if self._loop is not None:
            if not self._loop.is_closed():
                self._loop.remove_reader(self._core.event_fd())
            self._loop = None
            self._queue = None

    @property
    def events(self) -> asyncio.Queue[MediaEvent]:
        """The asyncio queue of events (attaches to the running loop on first use)."""
        if self._queue is None:
            return self.attach()
        return self._queue

    async def next_event(self, timeout: float | None = None) -> MediaEvent:
        """Await the next event (raises TimeoutError after ``timeout`` seconds)."""
        return await asyncio.wait_for(self.events.get(), timeout)

    def _on_events(self) -> None:
        queue = self._queue
        if queue is None:
            return
        for raw in self._core.drain_events():
            queue.put_nowait(_event(raw))


def _sum_legs(core: RelayCore, session_ids: list[int]) -> list[int]:
    """Received, sent and dropped packets of both legs of these sessions (one gone
    meanwhile counts nothing)."""
    received = sent = dropped = 0
    for session_id in session_ids:
        for leg in (0, 1):
            try:
                c = core.stats(session_id, leg)
            except (KeyError, ValueError, RuntimeError):
                continue
            received += c["packets"]
            sent += c["sent_packets"]
            dropped += c["dropped_invalid"] + c["dropped_unlatched"] + c["dropped_other"]
    return [received, sent, dropped]
