"""Pure-Python reference of the jitter buffer in :mod:`pbxcore._jitter`.

The same API and the same algorithm, step for step (integer time in microseconds, the same
float operations in the same order), so the test suite runs one test class against both and
checks that they play a trace identically. Slow; meant for checking, not for carrying calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import IntEnum
from typing import Any

import numpy as np

from pbxcore._g711_ref import alaw_expand, ulaw_expand

__all__ = ["JbPutResult", "JbStatus", "JitterBuffer"]

CLOCK_RATE = 8000
FRAME_SAMPLES = 160
FRAME_US = 20000
RING = 128
RING_MASK = RING - 1
MAX_MISORDER = 100
HIST_BUCKETS = 512
HIST_BUCKET_US = 2000
BASE_SLOTS = 16
PLC_HISTORY = 400
PLC_MIN_PITCH = 40
PLC_MAX_PITCH = 120
PLC_XFADE = 32
TARGET_HISTORY = 64

US_PER_SAMPLE = 125
HALF_FRAME = 80
TS_JUMP_US = 1_000_000
RESYNC_GAP_US = 500_000
BASE_WINDOW_S = 10
SHRINK_MARGIN_US = 10_000
SHRINK_INTERVAL = 25
PLC_WINDOW = 160
PLC_FLAT = 80
PLC_FADE = 400
RTP_HEADER = 12
MAX_DELAY_LIMIT_MS = 2000
HIST_RESCALE = 1e150
NO_SECOND = -(1 << 62)

_ULAW = [ulaw_expand(c) for c in range(256)]
_ALAW = [alaw_expand(c) for c in range(256)]


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


_IDLE, _PREFETCH, _PLAYING = 0, 1, 2


def _int16(v: int) -> int:
    v &= 0xFFFF
    return v - 0x10000 if v & 0x8000 else v


def _int32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - 0x1_0000_0000 if v & 0x8000_0000 else v


def _seconds_to_us(t: float) -> int:
    return math.floor(t * 1e6 + 0.5)


def _plc_gain(t: int) -> int:
    if t < PLC_FLAT:
        return 32768
    if t >= PLC_FLAT + PLC_FADE:
        return 0
    return 32768 - ((t - PLC_FLAT) * 32768) // PLC_FADE


def _plc_next(h: list[int], p: int, t: int, pos: int) -> tuple[int, int]:
    span = p * min(3, 1 + t // PLC_FLAT)
    v = h[PLC_HISTORY - span + pos]
    pos += 1
    return v, 0 if pos >= span else pos


def _plc_find_pitch(h: list[int]) -> int:
    arr = np.asarray(h, dtype=np.int64)
    w = arr[PLC_HISTORY - PLC_WINDOW :]
    best, best_score = PLC_MIN_PITCH, 0.0
    for p in range(PLC_MIN_PITCH, PLC_MAX_PITCH + 1):
        lag = arr[PLC_HISTORY - PLC_WINDOW - p : PLC_HISTORY - p]
        corr = int(np.dot(w, lag))
        energy = int(np.dot(lag, lag))
        if energy <= 0:
            continue
        score = float(corr) / math.sqrt(float(energy))
        if score > best_score:
            best_score, best = score, p
    return best


def _parse_rtp(d: bytes) -> tuple[int, int, int, int, bytes] | None:
    n = len(d)
    if n < RTP_HEADER or d[0] >> 6 != 2:
        return None
    pos = RTP_HEADER + 4 * (d[0] & 0x0F)
    if pos > n:
        return None
    if d[0] & 0x10:
        if pos + 4 > n:
            return None
        pos += 4 + 4 * ((d[pos + 2] << 8) | d[pos + 3])
        if pos > n:
            return None
    end = n
    if d[0] & 0x20:
        pad = d[n - 1]
        if pad == 0 or pad > n - pos:
            return None
        end = n - pad
    seq = (d[2] << 8) | d[3]
    ts = int.from_bytes(d[4:8], "big")
    ssrc = int.from_bytes(d[8:12], "big")
    return seq, ts, ssrc, d[1] & 0x7F, d[pos:end]


class _Slot:
    __slots__ = ("arrival_us", "payload", "played", "pt", "seq", "ts")

    def __init__(self) -> None:
        self.seq = -1
        self.ts = 0
        self.arrival_us = 0
        self.pt = 0
        self.played = False
        self.payload = b""


class JitterBuffer:
    """Pure-Python twin of :class:`pbxcore._jitter.JitterBuffer`."""

    def __init__(
        self,
        min_delay_ms: float = 20,
        max_delay_ms: float = 200,
        quantile: float = 0.99,
        forget_factor: float = 0.998,
    ) -> None:
        if not 0 <= min_delay_ms <= max_delay_ms:
            raise ValueError(
                f"need 0 <= min_delay_ms <= max_delay_ms, got {min_delay_ms}, {max_delay_ms}"
            )
        if max_delay_ms > MAX_DELAY_LIMIT_MS:
            raise ValueError(
                f"max_delay_ms must be at most {MAX_DELAY_LIMIT_MS}, got {max_delay_ms}"
            )
        if not 0.5 <= quantile < 1.0:
            raise ValueError(f"quantile must be in [0.5, 1), got {quantile}")
        if not 0.0 < forget_factor < 1.0:
            raise ValueError(f"forget_factor must be in (0, 1), got {forget_factor}")
        self._min_us = math.floor(min_delay_ms * 1000.0 + 0.5)
        self._max_us = math.floor(max_delay_ms * 1000.0 + 0.5)
        self._quantile = quantile
        self._forget = forget_factor
        self._st: dict[str, int] = dict.fromkeys(
            [
                "received",
                "late",
                "duplicates",
                "invalid",
                "bad_seq",
                "resets",
                "ssrc_changes",
                "ts_jumps",
                "overflows",
                "resyncs",
                "frames",
                "concealed",
                "empty",
                "grows",
                "shrinks",
                "discarded",
                "buffer_delay_sum_us",
                "added_delay_sum_us",
                "target_min_us",
                "target_max_us",
                "invariant_violations",
            ],
            0,
        )
        self._target_history: list[int] = []
        self._ticks_since_sample = 0
        self._ring = [_Slot() for _ in range(RING)]
        self._plc_history = [0] * PLC_HISTORY
        self.reset()

    # ---- state ----

    def check_invariants(self) -> list[str]:
        """The internal invariants that do not hold now, as messages (empty when sound)."""
        errors = []
        eps = 1e-9 * self._hist_total + 1e-300
        if not 0 <= self._q_index < HIST_BUCKETS:
            errors.append("quantile index outside the histogram")
        if not -eps <= self._hist_above <= self._hist_total + eps:
            errors.append("histogram tail mass outside [0, total]")
        if self._state != _IDLE and (
            self._play_seq > self._newest_seq + 1 or self._newest_seq - self._play_seq >= RING
        ):
            errors.append("playout position outside [oldest buffered, newest + 1]")
        if not self._min_us <= self._target() <= self._max_us:
            errors.append("target delay outside [min_delay, max_delay]")
        if self._state != _IDLE and any(
            slot.seq >= 0 and not slot.played and slot.seq > self._newest_seq for slot in self._ring
        ):
            errors.append("a buffered, unplayed frame outside the playout window")
        return errors

    def reset(self) -> None:
        self._have_ssrc = False
        self._ssrc = 0
        self._hist = [0.0] * HIST_BUCKETS
        self._hist_weight = 1.0
        self._hist_total = 0.0
        self._hist_above = 0.0
        self._hist_count = 0
        self._q_index = 0
        self._target_us = self._min_us
        self._plc_have_history = False
        self._plc_history = [0] * PLC_HISTORY
        self._restart()

    def _restart(self) -> None:
        self._state = _IDLE
        self._bad_seq = -1
        self._newest_seq = 0
        self._newest_ts = 0
        self._newest_raw_ts = 0
        self._newest_arrival_us = 0
        self._play_seq = 0
        self._play_ts = 0
        self._ticks_since_shrink = 0
        self._last_played_seq = -1
        self._forget_base()
        for slot in self._ring:
            slot.seq = -1
            slot.played = False
        self._plc_pitch = 0
        self._plc_pos = 0
        self._plc_t = 0

    def _forget_base(self) -> None:
        self._base_us = 0
        self._base_at_sec = NO_SECOND
        self._base_sec = [NO_SECOND] * BASE_SLOTS
        self._base_min = [0] * BASE_SLOTS

    def _target(self) -> int:
        return min(max(self._target_us, self._min_us), self._max_us)

    def _observe_delay(self, ext_ts: int, arrival_us: int) -> None:
        transit = arrival_us - ext_ts * US_PER_SAMPLE
        sec = arrival_us // 1_000_000
        i = sec & (BASE_SLOTS - 1)
        if self._base_sec[i] != sec:
            self._base_sec[i] = sec
            self._base_min[i] = transit
        elif transit < self._base_min[i]:
            self._base_min[i] = transit
        if sec != self._base_at_sec:
            base = transit
            for j in range(BASE_SLOTS):
                if sec - BASE_WINDOW_S < self._base_sec[j] <= sec and self._base_min[j] < base:
                    base = self._base_min[j]
            self._base_us = base
            self._base_at_sec = sec
        elif transit < self._base_us:
            self._base_us = transit
        b = min((transit - self._base_us) // HIST_BUCKET_US, HIST_BUCKETS - 1)
        w = self._hist_weight
        hist = self._hist
        hist[b] += w
        self._hist_total += w
        if b > self._q_index:
            self._hist_above += w
        tail = (1.0 - self._quantile) * self._hist_total
        while self._hist_above > tail and self._q_index < HIST_BUCKETS - 1:
            self._q_index += 1
            self._hist_above -= hist[self._q_index]
        while self._q_index > 0 and self._hist_above + hist[self._q_index] <= tail:
            self._hist_above += hist[self._q_index]
            self._q_index -= 1
        self._hist_count += 1
        f = min(1.0 - 1.0 / float(self._hist_count + 1), self._forget)
        self._hist_weight = w / f
        if self._hist_weight > HIST_RESCALE:
            for j in range(HIST_BUCKETS):
                hist[j] /= self._hist_weight
            self._hist_total /= self._hist_weight
            self._hist_above /= self._hist_weight
            self._hist_weight = 1.0
        self._target_us = (self._q_index + 1) * HIST_BUCKET_US
        target = self._target()
        st = self._st
        if st["target_min_us"] == 0 or target < st["target_min_us"]:
            st["target_min_us"] = target
        st["target_max_us"] = max(st["target_max_us"], target)

    def _accept(self, ext_seq: int, ext_ts: int, pt: int, payload: bytes, arrival: int) -> None:
        slot = self._ring[ext_seq & RING_MASK]
        slot.seq = ext_seq
        slot.ts = ext_ts
        slot.arrival_us = arrival
        slot.pt = pt
        slot.played = False
        slot.payload = bytes(payload)
        self._st["received"] += 1

    # ---- put ----

    def _put(  # noqa: PLR0917 - the fields of an RTP header
        self, seq: int, ts: int, ssrc: int, pt: int, payload: bytes, arrival_us: int
    ) -> JbPutResult:
        st = self._st
        result = JbPutResult.JB_PUT_OK
        if pt not in (0, 8):
            st["invalid"] += 1
            return JbPutResult.JB_PUT_BAD_PT
        if len(payload) != FRAME_SAMPLES:
            st["invalid"] += 1
            return JbPutResult.JB_PUT_BAD_SIZE
        if not self._have_ssrc or ssrc != self._ssrc:
            if self._have_ssrc:
                st["ssrc_changes"] += 1
                st["resets"] += 1
                result = JbPutResult.JB_PUT_RESET
                self._restart()
            self._have_ssrc = True
            self._ssrc = ssrc
        d = 0
        if self._state != _IDLE:
            d = _int16(seq - self._newest_seq)
            if d >= RING or d <= -MAX_MISORDER:
                if self._bad_seq != seq:
                    self._bad_seq = (seq + 1) & 0xFFFF
                    st["bad_seq"] += 1
                    return JbPutResult.JB_PUT_BAD_SEQ
                st["resets"] += 1
                result = JbPutResult.JB_PUT_RESET
                self._restart()
        if self._state == _IDLE:
            self._state = _PREFETCH
            self._newest_seq = seq
            self._newest_ts = ts
            self._newest_raw_ts = ts
            self._newest_arrival_us = arrival_us
            self._play_seq = seq
            self._play_ts = ts
            self._observe_delay(ts, arrival_us)
            self._accept(seq, ts, pt, payload, arrival_us)
            return result
        self._bad_seq = -1
        prev_seq, prev_arrival_us = self._newest_seq, self._newest_arrival_us
        ext_seq = self._newest_seq + d
        dts = _int32(ts - self._newest_raw_ts)
        ext_ts = self._newest_ts + dts
        if d > 0:
            if (
                abs(dts * US_PER_SAMPLE - (arrival_us - self._newest_arrival_us)) > TS_JUMP_US
                and abs(dts - d * FRAME_SAMPLES) * US_PER_SAMPLE > TS_JUMP_US
            ):
                ext_ts = self._newest_ts + d * FRAME_SAMPLES
                st["ts_jumps"] += 1
            self._newest_seq = ext_seq
            self._newest_ts = ext_ts
            self._newest_raw_ts = ts
            self._newest_arrival_us = arrival_us
        elif (
            d < 0
            and abs(ext_ts - (self._newest_ts + d * FRAME_SAMPLES)) * US_PER_SAMPLE > TS_JUMP_US
        ):
            st["late"] += 1
            return JbPutResult.JB_PUT_LATE
        slot = self._ring[ext_seq & RING_MASK]
        if slot.seq == ext_seq:
            st["duplicates"] += 1
            return JbPutResult.JB_PUT_DUPLICATE
        if (
            self._state == _PLAYING
            and d > 0
            and prev_seq < self._play_seq
            and arrival_us - prev_arrival_us > RESYNC_GAP_US
        ):
            st["resyncs"] += 1
            self._state = _PREFETCH
            self._play_seq = ext_seq
            self._play_ts = ext_ts
            self._forget_base()
        self._observe_delay(ext_ts, arrival_us)
        if self._state == _PREFETCH:
            if ext_seq < self._play_seq:
                self._play_seq = ext_seq
                self._play_ts = ext_ts
        elif ext_seq < self._play_seq or ext_ts <= self._play_ts - HALF_FRAME:
            st["late"] += 1
            if ext_seq >= self._play_seq:
                self._play_seq = ext_seq + 1
            return JbPutResult.JB_PUT_LATE
        if ext_seq - self._play_seq >= RING:
            st["overflows"] += 1
            self._play_seq = ext_seq - RING + 1
            self._play_ts = ext_ts - (RING - 1) * FRAME_SAMPLES
        self._accept(ext_seq, ext_ts, pt, payload, arrival_us)
        return result

    def put(self, packet: Any, arrival: float) -> JbPutResult:
        """Buffer one RTP packet (the whole datagram) received at ``arrival`` seconds."""
        parsed = _parse_rtp(bytes(memoryview(packet).cast("B")))
        if parsed is None:
            self._st["invalid"] += 1
            return JbPutResult.JB_PUT_INVALID
        seq, ts, ssrc, pt, payload = parsed
        return self._put(seq, ts, ssrc, pt, payload, _seconds_to_us(arrival))

    def put_frame(  # noqa: PLR0917 - mirrors the native signature
        self, seq: int, timestamp: int, ssrc: int, payload_type: int, payload: Any, arrival: float
    ) -> JbPutResult:
        """Buffer one RTP payload given its header fields, received at ``arrival`` seconds."""
        if not 0 <= seq <= 0xFFFF:
            raise ValueError(f"sequence number out of range: {seq}")
        if not 0 <= timestamp <= 0xFFFFFFFF or not 0 <= ssrc <= 0xFFFFFFFF:
            raise OverflowError("timestamp and ssrc are 32-bit unsigned")
        data = bytes(memoryview(payload).cast("B"))
        return self._put(seq, timestamp, ssrc, payload_type, data, _seconds_to_us(arrival))

    # ---- get ----

    def _conceal(self) -> list[int]:
        if not self._plc_have_history:
            self._plc_t += FRAME_SAMPLES
            return [0] * FRAME_SAMPLES
        if self._plc_t == 0:
            self._plc_pitch = _plc_find_pitch(self._plc_history)
            self._plc_pos = 0
        p = self._plc_pitch
        h = self._plc_history
        out = []
        for i in range(FRAME_SAMPLES):
            g = _plc_gain(self._plc_t + i)
            v, self._plc_pos = _plc_next(h, p, self._plc_t + i, self._plc_pos)
            out.append(_int16((v * g) >> 15))
        self._plc_t += FRAME_SAMPLES
        return out

    def _play(self, slot: _Slot, now_us: int) -> list[int]:
        table = _ALAW if slot.pt == 8 else _ULAW
        out = [table[c] for c in slot.payload]
        if self._plc_t > 0 and self._plc_have_history and self._plc_pitch > 0:
            p = self._plc_pitch
            h = self._plc_history
            for i in range(PLC_XFADE):
                g = _plc_gain(self._plc_t + i)
                v, self._plc_pos = _plc_next(h, p, self._plc_t + i, self._plc_pos)
                syn = (v * g) >> 15
                out[i] = _int16((syn * (PLC_XFADE - i) + out[i] * i) >> 5)
        self._plc_t = 0
        self._plc_history = self._plc_history[FRAME_SAMPLES:] + out
        self._plc_have_history = True
        slot.played = True
        self._last_played_seq = slot.seq & 0xFFFF
        self._st["buffer_delay_sum_us"] += now_us - slot.arrival_us
        self._st["added_delay_sum_us"] += now_us - slot.ts * US_PER_SAMPLE - self._base_us
        self._st["frames"] += 1
        return out

    def _get(self, now_us: int) -> tuple[list[int], JbStatus]:
        st = self._st
        self._ticks_since_sample += 1
        if self._ticks_since_sample >= FRAME_US // 400:
            self._ticks_since_sample = 0
            self._target_history = [*self._target_history, self._target()][-TARGET_HISTORY:]
        if self._state == _IDLE:
            st["empty"] += 1
            return [0] * FRAME_SAMPLES, JbStatus.JB_EMPTY
        o_des = self._base_us + self._target()
        err = now_us - self._play_ts * US_PER_SAMPLE - o_des
        if self._state == _PREFETCH:
            if err < 0:
                st["empty"] += 1
                return [0] * FRAME_SAMPLES, JbStatus.JB_EMPTY
            self._state = _PLAYING
            self._ticks_since_shrink = 0
        if err < 0:
            st["grows"] += 1
            st["concealed"] += 1
            return self._conceal(), JbStatus.JB_CONCEALED
        self._ticks_since_shrink += 1
        excess = err + self._target() - self._max_us
        if excess >= FRAME_US:
            skip = excess // FRAME_US
            st["shrinks"] += skip
            self._ticks_since_shrink = 0
            self._play_ts += skip * FRAME_SAMPLES
        elif err >= FRAME_US + SHRINK_MARGIN_US and self._ticks_since_shrink >= SHRINK_INTERVAL:
            st["shrinks"] += 1
            self._ticks_since_shrink = 0
            self._play_ts += FRAME_SAMPLES
        for _ in range(RING):
            slot = self._ring[self._play_seq & RING_MASK]
            if slot.seq == self._play_seq and not slot.played:
                dts = slot.ts - self._play_ts
                if dts <= -HALF_FRAME:
                    slot.played = True
                    st["discarded"] += 1
                    self._play_seq += 1
                    continue
                if dts >= HALF_FRAME:
                    break
                out = self._play(slot, now_us)
                self._play_seq += 1
                self._play_ts = slot.ts + FRAME_SAMPLES
                return out, JbStatus.JB_FRAME
            if self._newest_seq > self._play_seq:
                expected_ts = self._newest_ts - (self._newest_seq - self._play_seq) * FRAME_SAMPLES
                if expected_ts <= self._play_ts - HALF_FRAME:
                    self._play_seq += 1
                    continue
                if expected_ts < self._play_ts + HALF_FRAME:
                    self._play_seq += 1
            break
        out = self._conceal()
        self._play_ts += FRAME_SAMPLES
        st["concealed"] += 1
        return out, JbStatus.JB_CONCEALED

    def get(self, now: float) -> tuple[bytes, JbStatus]:
        """Play one 20 ms tick: ``(pcm, status)``, 160 samples of native-order PCM16."""
        samples, status = self._get(_seconds_to_us(now))
        return np.asarray(samples, dtype=np.int16).tobytes(), status

    def get_into(self, now: float, out: Any) -> JbStatus:
        """Play one tick into the writable buffer ``out`` (at least 320 bytes)."""
        view = memoryview(out).cast("B")
        if len(view) < FRAME_SAMPLES * 2:
            raise ValueError(f"out too small: needs {FRAME_SAMPLES * 2} bytes, has {len(view)}")
        pcm, status = self.get(now)
        view[: FRAME_SAMPLES * 2] = pcm
        return status

    @property
    def target_delay_ms(self) -> float:
        """The current target delay above the fastest recent transit, in ms."""
        return self._target() / 1000.0

    @property
    def last_played_seq(self) -> int:
        """Sequence number of the last frame played, or -1."""
        return self._last_played_seq

    def stats(self) -> dict[str, float]:
        """Counters and delays as a dict (delays in ms)."""
        s = self._st
        out: dict[str, float] = {k: v for k, v in s.items() if not k.endswith("_us")}
        frames = s["frames"]
        out["buffer_delay_ms"] = s["buffer_delay_sum_us"] / 1000.0 / frames if frames else 0.0
        out["added_delay_ms"] = s["added_delay_sum_us"] / 1000.0 / frames if frames else 0.0
        out["target_delay_ms"] = self._target() / 1000.0
        out["target_delay_min_ms"] = s["target_min_us"] / 1000.0
        out["target_delay_max_ms"] = s["target_max_us"] / 1000.0
        return out

    def target_history(self) -> list[float]:
        """The target delay in ms once a second (every 50 ticks), oldest first, up to 64."""
        return [t / 1000.0 for t in self._target_history]

    def run_trace(  # noqa: PLR0917 - mirrors the native signature
        self,
        seq: Sequence[int],
        ts: Sequence[int],
        ssrc: Sequence[int],
        arrival_us: Sequence[int],
        tick_us: Sequence[int],
        payload: Any,
        put_result: Any,
        status: Any,
        played_seq: Any,
        target_us: Any,
    ) -> int:
        """Replay a trace (see the native ``run_trace``)."""
        n, m = len(seq), len(tick_us)
        if len(ts) != n or len(ssrc) != n or len(arrival_us) != n or len(put_result) != n:
            raise ValueError("packet arrays differ in length")
        if len(status) != m or len(played_seq) != m or len(target_us) != m:
            raise ValueError("tick arrays differ in length")
        data = bytes(memoryview(payload).cast("B"))
        i = 0
        for k in range(m):
            tick = int(tick_us[k])
            while i < n and arrival_us[i] <= tick:
                put_result[i] = self._put(
                    int(seq[i]), int(ts[i]), int(ssrc[i]), 0, data, int(arrival_us[i])
                )
                i += 1
            _, rc = self._get(tick)
            status[k] = rc
            played_seq[k] = self._last_played_seq if rc == JbStatus.JB_FRAME else -1
            target_us[k] = self._target()
        return i
