from enum import IntEnum

from typing_extensions import Buffer

class JbStatus(IntEnum):
    JB_FRAME = 0
    JB_CONCEALED = 1
    JB_EMPTY = 2

class JbPutResult(IntEnum):
    JB_PUT_OK = 0
    JB_PUT_RESET = 1
    JB_PUT_LATE = 2
    JB_PUT_DUPLICATE = 3
    JB_PUT_BAD_SEQ = 4
    JB_PUT_BAD_PT = 5
    JB_PUT_BAD_SIZE = 6
    JB_PUT_INVALID = 7

class JitterBuffer:
    def __init__(
        self,
        min_delay_ms: float = 20,
        max_delay_ms: float = 200,
        quantile: float = 0.99,
        forget_factor: float = 0.998,
    ) -> None: ...
    def put(self, packet: Buffer, arrival: float) -> JbPutResult: ...
    def put_frame(
        self,
        seq: int,
        timestamp: int,
        ssrc: int,
        payload_type: int,
        payload: Buffer,
        arrival: float,
    ) -> JbPutResult: ...
    def get(self, now: float) -> tuple[bytes, JbStatus]: ...
    def get_into(self, now: float, out: Buffer) -> JbStatus: ...
    def check_invariants(self) -> list[str]: ...
    def reset(self) -> None: ...
    @property
    def target_delay_ms(self) -> float: ...
    @property
    def last_played_seq(self) -> int: ...
    def stats(self) -> dict[str, float]: ...
    def target_history(self) -> list[float]: ...
    def run_trace(
        self,
        seq: Buffer,
        ts: Buffer,
        ssrc: Buffer,
        arrival_us: Buffer,
        tick_us: Buffer,
        payload: Buffer,
        put_result: Buffer,
        status: Buffer,
        played_seq: Buffer,
        target_us: Buffer,
    ) -> int: ...
