from typing import TypedDict

from pbxcore._jitter import JitterBuffer

EV_TIMEOUT: int
EV_DTMF: int
EV_SSRC_CHANGED: int
EV_PLAYER_DONE: int
EV_LATCHED: int
LAW_NONE: int
LAW_ULAW: int
LAW_ALAW: int

# (type, session_id, leg, a, b, c, monotonic_ns)
RawEvent = tuple[int, int, int, int, int, int, int]

class LegCounters(TypedDict):
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
    last_packet: float | None
    ssrc: int | None
    peer: tuple[str, int] | None

class RelayCounters(TypedDict):
    live_sessions: int
    live_ports: int
    sessions_created: int
    sessions_freed: int
    events_dropped: int
    live_players: int
    live_recorders: int
    workers: int
    pooled_ports: int

class PortRangeExhaustedError(RuntimeError): ...

class Relay:
    bind: str
    port_lo: int
    port_hi: int
    workers: int
    def __init__(
        self, bind: str = "127.0.0.1", port_lo: int = 20000, port_hi: int = 29999, workers: int = 1
    ) -> None: ...
    @property
    def running(self) -> bool: ...
    @property
    def family(self) -> int: ...
    def start(self) -> None: ...
    def close(self) -> None: ...
    def create_session(self, rtcp_mux: bool = False) -> int: ...
    def session_ids(self) -> list[int]: ...
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

def monotonic_ns() -> int: ...
