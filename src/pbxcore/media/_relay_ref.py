"""Pure-Python reference of the native relay core (``pbxcore._rtp.Relay``).

Same interface and the same per-packet rules (validation, latching, RFC 3550 loss and
jitter, RFC 4733 end-of-event, transcoding, RTCP), written plainly on one ``selectors``
thread. The test suite runs its relay tests against both; it is far too slow for real use.
Prompts and recordings are native-only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from pbxcore import g711
from pbxcore._rtp import PortRangeExhaustedError

if TYPE_CHECKING:
    from pbxcore._jitter import JitterBuffer
    from pbxcore._rtp import LegCounters, RawEvent, RelayCounters

EV_TIMEOUT, EV_DTMF, EV_SSRC_CHANGED, EV_PLAYER_DONE, EV_LATCHED = 1, 2, 3, 4, 5
LAW_NONE, LAW_ULAW, LAW_ALAW = 0, 1, 2
MAX_DROPOUT, MAX_MISORDER = 3000, 100
EVENTS_CAP = 8192
MAX_PACKET = 2048


Addr = tuple[str, int]


@dataclass
class _Leg:
    idx: int
    sid: int
    port: int
    rtp: socket.socket
    rtcp: socket.socket | None
    remote: Addr | None = None
    rtcp_remote: Addr | None = None
    law: int = LAW_NONE
    pt: int = 0
    te_pt: int = -1
    strict: bool = False
    relatch: bool = False
    latch: bool = True
    mux: bool = False
    timeout_ms: int = 0
    timeout_ref: int = 0
    timed_out: bool = False
    peer: Addr | None = None
    rtcp_peer: Addr | None = None
    ssrc: int | None = None
    base_seq: int = 0
    max_seq: int = 0
    cycles: int = 0
    bad_seq: int = 65537
    received: int = 0
    lost_before: int = 0
    jitter: float = 0.0
    last_transit: int | None = None
    dtmf_ts: int | None = None
    dtmf_reported: bool = False
    dtmf_event: int = 0
    dtmf_vol: int = 0
    dtmf_dur: int = 0
    c: dict[str, Any] = field(default_factory=dict)


def _counters() -> dict[str, Any]:
    return dict.fromkeys(
        ("packets", "bytes", "dropped_invalid", "dropped_unlatched", "dropped_other",
         "sent_packets", "sent_bytes", "rtcp_packets", "rtcp_bytes", "lost"), 0
    ) | {"jitter_ms": 0.0, "last_packet": None}  # fmt: skip


class Relay:
    """The reference core: same methods as ``pbxcore._rtp.Relay``."""

    def __init__(
        self, bind: str = "127.0.0.1", port_lo: int = 20000, port_hi: int = 29999, workers: int = 1
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if not 0 < port_lo <= port_hi < 65536:
            raise ValueError(f"invalid port range {port_lo}-{port_hi}")
        try:
            self.family = socket.AF_INET6 if ":" in bind else socket.AF_INET
            socket.inet_pton(self.family, bind)
        except OSError:
            raise ValueError(f"bind address {bind} is not a numeric IPv4/IPv6 address") from None
        self.bind, self.workers = bind, workers
        self.port_lo = port_lo + (port_lo & 1)
        self.port_hi = port_hi
        self._slots = (port_hi - self.port_lo + 1) // 2
        if self._slots < 1:
            raise ValueError(f"port range {port_lo}-{port_hi} holds no even/odd port pair")
        self._used = [False] * self._slots
        self._cursor = 0
        self._sessions: dict[int, tuple[_Leg, _Leg]] = {}
        self._next_id = 1
        self._lock = threading.RLock()
        self._events: list[RawEvent] = []
        self._evfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._sel = selectors.DefaultSelector()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._stats = {"created": 0, "freed": 0, "ports": 0, "dropped": 0}

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="relay-ref", daemon=True)
            self._thread.start()

    def close(self) -> None:
        if self._thread is None:
            return
        self._stop = True
        self._thread.join()
        self._thread = None
        with self._lock:
            for sid in list(self._sessions):
                self._free(sid)

    # ---- sessions

    def _open(self, port: int) -> socket.socket:
        s = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            if self.family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((self.bind, port))
        except OSError:
            s.close()
            raise
        s.setblocking(False)
        return s

    def _alloc(self, mux: bool) -> tuple[int, socket.socket, socket.socket | None]:
        for _ in range(self._slots):
            i = self._cursor
            self._cursor = (self._cursor + 1) % self._slots
            if self._used[i]:
                continue
            port = self.port_lo + 2 * i
            try:
                rtp = self._open(port)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            rtcp = None
            if not mux:
                try:
                    rtcp = self._open(port + 1)
                except OSError as exc:
                    rtp.close()
                    if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                        continue
                    raise
            self._used[i] = True
            self._stats["ports"] += 1 if mux else 2
            return port, rtp, rtcp
        hi = self.port_lo + 2 * self._slots - 1
        raise PortRangeExhaustedError(f"RTP port range {self.port_lo}-{hi} is exhausted")

    def create_session(self, rtcp_mux: bool = False) -> int:
        if self._thread is None:
            raise RuntimeError("relay is not running: call start() first")
        with self._lock:
            sid = self._next_id
            self._next_id += 1
            legs = []
            try:
                for idx in (0, 1):
                    port, rtp, rtcp = self._alloc(rtcp_mux)
                    leg = _Leg(idx, sid, port, rtp, rtcp, mux=rtcp_mux, c=_counters())
                    leg.timeout_ref = time.monotonic_ns()
                    legs.append(leg)
            except BaseException:
                for leg in legs:
                    self._release(leg)
                raise
            for leg in legs:
                self._sel.register(leg.rtp, selectors.EVENT_READ, (leg, False))
                if leg.rtcp is not None:
                    self._sel.register(leg.rtcp, selectors.EVENT_READ, (leg, True))
            self._sessions[sid] = (legs[0], legs[1])
            self._stats["created"] += 1
            return sid

    def _release(self, leg: _Leg) -> None:
        for s in (leg.rtp, leg.rtcp):
            if s is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(s)
                s.close()
                self._stats["ports"] -= 1
        self._used[(leg.port - self.port_lo) // 2] = False

    def _free(self, sid: int) -> None:
        for leg in self._sessions.pop(sid):
            self._release(leg)
        self._stats["freed"] += 1

    def _get(self, sid: int) -> tuple[_Leg, _Leg]:
        try:
            return self._sessions[sid]
        except KeyError:
            raise KeyError(f"no RTP session {sid} (deleted or never created)") from None

    def session_ids(self) -> list[int]:
        return list(self._sessions)

    def port(self, session_id: int, leg: int) -> int:
        return self._get(session_id)[leg & 1].port

    def _check_addr(self, addr: Any) -> Addr:
        try:
            host, port = addr
        except (TypeError, ValueError):
            raise ValueError(f"address must be a (host, port) pair, got {addr!r}") from None
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range 1-65535")
        host = str(host).strip("[]")
        family = None
        for fam in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                socket.inet_pton(fam, host)
                family = fam
        if family is None:
            raise ValueError(f"{host!r} is not a numeric IPv4 or IPv6 address")
        if family != self.family:
            raise ValueError(f"address {host!r} is not of the relay's address family")
        return host, port

    def configure(self, session_id: int, leg: int, *, remote: Addr | None = None,
                  rtcp_remote: Addr | None = None, law: int | None = None, pt: int | None = None,
                  te_pt: int | None = None, strict: bool | None = None,
                  relatch: bool | None = None, latch: bool | None = None,
                  timeout_ms: int | None = None, clear_remote: bool = False) -> None:  # fmt: skip
        with self._lock:
            lg = self._get(session_id)[leg & 1]
            r = self._check_addr(remote) if remote is not None else None
            rr = self._check_addr(rtcp_remote) if rtcp_remote is not None else None
            if law is not None:
                if law not in (LAW_NONE, LAW_ULAW, LAW_ALAW):
                    raise ValueError(f"unknown G.711 law {law!r}")
                pt = (8 if law == LAW_ALAW else 0) if pt is None else pt
                if not 0 <= pt <= 127:
                    raise ValueError(f"payload type {pt} is out of range 0-127")
            if te_pt is not None and not -1 <= te_pt <= 127:
                raise ValueError(f"telephone-event payload type {te_pt} is out of range")
            if timeout_ms is not None and timeout_ms < 0:
                raise ValueError("timeout must not be negative")
            if clear_remote:
                lg.remote = lg.rtcp_remote = None
            if r is not None:
                if r != lg.remote:
                    lg.peer, lg.rtcp_peer = None, None  # re-INVITE: learn again
                lg.remote = r
                if rr is None:
                    lg.rtcp_remote = (r[0], r[1] + 1)
            if rr is not None:
                lg.rtcp_remote = rr
            if law is not None and pt is not None:
                lg.law, lg.pt = law, pt
            if te_pt is not None:
                lg.te_pt = te_pt
            if strict is not None:
                lg.strict = bool(strict)
            if relatch is not None:
                lg.relatch = bool(relatch)
            if latch is not None:
                lg.latch = bool(latch)
            if timeout_ms is not None:
                lg.timeout_ms = timeout_ms
                lg.timeout_ref = time.monotonic_ns()
                lg.timed_out = False

    def delete(self, session_id: int) -> None:
        with self._lock:
            self._get(session_id)
            self._free(session_id)

    def stats(self, session_id: int, leg: int) -> LegCounters:
        with self._lock:
            lg = self._get(session_id)[leg & 1]
            out = dict(lg.c)
            out["ssrc"] = lg.ssrc if lg.c["packets"] else None
            out["peer"] = lg.peer
            return cast("LegCounters", out)

    def play(self, session_id: int, leg: int, pcm16: bytes, player_id: int, loops: int = 1) -> None:
        raise NotImplementedError("prompts are played by the native relay only")

    def stop_play(self, session_id: int, leg: int) -> bool:
        raise NotImplementedError("prompts are played by the native relay only")

    def record(
        self, session_id: int, leg: int, path: str, jitter_buffer: JitterBuffer | None = None
    ) -> None:
        raise NotImplementedError("recordings are made by the native relay only")

    def stop_record(self, session_id: int, leg: int) -> int:
        raise NotImplementedError("recordings are made by the native relay only")

    # ---- events

    def _emit(self, kind: int, leg: _Leg, a: int = 0, b: int = 0, c: int = 0) -> None:
        if len(self._events) >= EVENTS_CAP:
            self._stats["dropped"] += 1
        else:
            self._events.append((kind, leg.sid, leg.idx, a, b, c, time.monotonic_ns()))
        os.eventfd_write(self._evfd, 1)

    def event_fd(self) -> int:
        return self._evfd

    def drain_events(self) -> list[RawEvent]:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._evfd)
        with self._lock:
            out, self._events = self._events, []
        return out

    def wait_events(self, timeout: float) -> bool:
        r, _, _ = select.select([self._evfd], [], [], None if timeout < 0 else timeout)
        return bool(r)

    def counters(self) -> RelayCounters:
        return {
            "live_sessions": len(self._sessions),
            "live_ports": self._stats["ports"],
            "sessions_created": self._stats["created"],
            "sessions_freed": self._stats["freed"],
            "events_dropped": self._stats["dropped"],
            "live_players": 0,
            "live_recorders": 0,
            "workers": self.workers,
            "pooled_ports": 0,
        }

    # ---- the packet path

    def _loop(self) -> None:
        next_check = time.monotonic_ns()
        while not self._stop:
            ready = self._sel.select(0.02)
            with self._lock:
                for key, _ in ready:
                    leg, is_rtcp = key.data
                    if leg.sid not in self._sessions:
                        continue
                    sock = leg.rtcp if is_rtcp else leg.rtp
                    assert sock is not None
                    while True:
                        try:
                            data, src = sock.recvfrom(65536)
                        except (BlockingIOError, OSError):
                            break
                        src = (src[0], src[1])
                        if len(data) > MAX_PACKET:  # the native engine's buffer size
                            leg.c["dropped_invalid"] += 1
                            continue
                        if is_rtcp:
                            self._rtcp(leg, data, src)
                        else:
                            self._rtp(leg, data, src)
                now = time.monotonic_ns()
                if now >= next_check:
                    self._timeouts(now)
                    next_check = now + 100_000_000

    def _timeouts(self, now: int) -> None:
        for legs in self._sessions.values():
            for leg in legs:
                if not leg.timeout_ms or leg.timed_out:
                    continue
                last = leg.c["last_packet"]
                ref = max(int(last * 1e9) if last else 0, leg.timeout_ref)
                if now - ref >= leg.timeout_ms * 1_000_000:
                    leg.timed_out = True
                    self._emit(EV_TIMEOUT, leg, leg.timeout_ms)

    def _send(self, out: _Leg, sock: socket.socket | None, data: bytes, to: Addr | None) -> bool:
        if sock is None or to is None:
            return False
        # counted first: whoever receives the packet must find it in the counters
        out.c["sent_packets"] += 1
        out.c["sent_bytes"] += len(data)
        try:
            sock.sendto(data, to)
        except OSError:
            out.c["sent_packets"] -= 1
            out.c["sent_bytes"] -= len(data)
            out.c["dropped_other"] += 1
        return True

    def _other(self, leg: _Leg) -> _Leg:
        return self._sessions[leg.sid][1 - leg.idx]

    def _rtcp(self, leg: _Leg, data: bytes, src: Addr) -> None:
        if len(data) < 8 or data[0] >> 6 != 2 or not 192 <= data[1] <= 223:
            leg.c["dropped_invalid"] += 1
            return
        if leg.mux:
            if leg.peer != src:
                leg.c["dropped_unlatched"] += 1
                return
        elif leg.rtcp_peer is None:
            if leg.strict and leg.remote and src[0] != leg.remote[0]:
                leg.c["dropped_unlatched"] += 1
                return
            leg.rtcp_peer = src
        elif leg.rtcp_peer != src:
            leg.c["dropped_unlatched"] += 1
            return
        leg.c["rtcp_packets"] += 1
        leg.c["rtcp_bytes"] += len(data)
        o = self._other(leg)
        sock: socket.socket | None
        if o.mux:
            to, sock = o.peer or o.remote, o.rtp
        else:
            to, sock = o.rtcp_peer or o.rtcp_remote, o.rtcp
        if not self._send(o, sock, data, to):
            leg.c["dropped_other"] += 1

    def _seq_init(self, leg: _Leg, seq: int) -> None:
        leg.lost_before = leg.c["lost"]
        leg.base_seq = leg.max_seq = seq
        leg.bad_seq, leg.cycles, leg.received = 65537, 0, 0
        leg.last_transit = None

    def _seq_update(self, leg: _Leg, seq: int) -> None:
        udelta = (seq - leg.max_seq) & 0xFFFF
        if udelta < MAX_DROPOUT:
            if seq < leg.max_seq:
                leg.cycles += 65536
            leg.max_seq = seq
        elif udelta <= 65536 - MAX_MISORDER:
            if seq == leg.bad_seq:
                self._seq_init(leg, seq)
            else:
                leg.bad_seq = (seq + 1) & 0xFFFF
                return
        leg.received += 1
        expected = leg.cycles + leg.max_seq - leg.base_seq + 1
        leg.c["lost"] = leg.lost_before + max(0, expected - leg.received)

    def _rtp(self, leg: _Leg, data: bytes, src: Addr) -> None:
        n = len(data)
        if leg.mux and n >= 2 and 192 <= data[1] <= 223:
            self._rtcp(leg, data, src)
            return
        if n < 12 or data[0] >> 6 != 2:
            leg.c["dropped_invalid"] += 1
            return
        hlen = 12 + 4 * (data[0] & 0x0F)
        end = n
        if hlen > n:
            leg.c["dropped_invalid"] += 1
            return
        if data[0] & 0x10:
            if hlen + 4 > n:
                leg.c["dropped_invalid"] += 1
                return
            hlen += 4 + 4 * int.from_bytes(data[hlen + 2 : hlen + 4], "big")
            if hlen > n:
                leg.c["dropped_invalid"] += 1
                return
        if data[0] & 0x20:
            pad = data[-1]
            if pad == 0 or hlen + pad > n:
                leg.c["dropped_invalid"] += 1
                return
            end = n - pad
        pt = data[1] & 0x7F
        seq, ts, ssrc = struct.unpack_from("!HII", data, 2)
        if leg.strict and leg.remote and src[0] != leg.remote[0]:
            leg.c["dropped_unlatched"] += 1
            return
        if leg.peer is None:
            if leg.latch:
                leg.peer = src
                self._emit(EV_LATCHED, leg)
        elif leg.peer != src:
            if leg.relatch and leg.ssrc is not None and ssrc != leg.ssrc:
                leg.peer, leg.rtcp_peer = src, None
                self._emit(EV_SSRC_CHANGED, leg, leg.ssrc, ssrc, 1)
                leg.ssrc = ssrc
                self._seq_init(leg, seq)
            else:
                leg.c["dropped_unlatched"] += 1
                return
        if leg.ssrc is None:
            leg.ssrc = ssrc
            self._seq_init(leg, seq)
        elif ssrc != leg.ssrc:
            self._emit(EV_SSRC_CHANGED, leg, leg.ssrc, ssrc, 0)
            leg.ssrc = ssrc
            self._seq_init(leg, seq)
        now = time.monotonic_ns()
        leg.c["packets"] += 1
        leg.c["bytes"] += n
        leg.c["last_packet"] = now / 1e9
        leg.timed_out = False
        self._seq_update(leg, seq)
        if pt == leg.te_pt:
            self._dtmf(leg, data[hlen:end], ts)
        else:
            transit = ((now // 125000) - ts) & 0xFFFFFFFF
            if leg.last_transit is not None:
                d = (transit - leg.last_transit + 2**31) % 2**32 - 2**31
                leg.jitter += (abs(d) - leg.jitter) / 16
                leg.c["jitter_ms"] = int(leg.jitter * 125) / 1000
            leg.last_transit = transit
        o = self._other(leg)
        to = o.peer or o.remote
        if to is None:
            leg.c["dropped_other"] += 1
            return
        out = data
        if pt == leg.pt and leg.law and o.law and leg.law != o.law:
            convert = g711.ulaw2alaw if leg.law == LAW_ULAW else g711.alaw2ulaw
            first = (data[1] & 0x80) | (o.pt & 0x7F)
            out = data[:1] + bytes([first]) + data[2:hlen] + convert(data[hlen:end]) + data[end:]
        elif pt == leg.te_pt and o.te_pt >= 0 and o.te_pt != pt:
            out = data[:1] + bytes([(data[1] & 0x80) | o.te_pt]) + data[2:]
        self._send(o, o.rtp, out, to)

    def _dtmf(self, leg: _Leg, payload: bytes, ts: int) -> None:
        if len(payload) < 4:
            return
        event, flags, dur = payload[0], payload[1], int.from_bytes(payload[2:4], "big")
        if leg.dtmf_ts != ts:
            if leg.dtmf_ts is not None and not leg.dtmf_reported:
                self._emit(EV_DTMF, leg, leg.dtmf_event, leg.dtmf_dur // 8, leg.dtmf_vol)
            leg.dtmf_ts, leg.dtmf_reported, leg.dtmf_dur = ts, False, 0
        leg.dtmf_event, leg.dtmf_vol = event, flags & 0x3F
        leg.dtmf_dur = max(leg.dtmf_dur, dur)
        if flags & 0x80 and not leg.dtmf_reported:
            leg.dtmf_reported = True
            self._emit(EV_DTMF, leg, event, leg.dtmf_dur // 8, leg.dtmf_vol)


def monotonic_ns() -> int:
    return time.monotonic_ns()


__all__ = ["PortRangeExhaustedError", "Relay", "monotonic_ns"]
