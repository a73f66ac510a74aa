# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Adaptive jitter buffer for G.711 media the PBX terminates (IVR, voicemail, recording).

A ring of 20 ms frames indexed by ``seq & JB_RING_MASK``, played out by timestamp on the
caller's 20 ms clock. The target delay is a high quantile of the packets' relative delay
(transit minus the minimum transit of the last seconds), tracked in a histogram with
exponential forgetting as WebRTC NetEq does. The buffer grows at once (it holds a tick
back and conceals) and shrinks slowly (it skips one frame at a time, rate-limited). Lost
and late frames are concealed by pitch-period repetition with fading, after G.711
Appendix I. The algorithm is mirrored step for step in ``pbxcore._jitter_ref``.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.math cimport floor, sqrt
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memmove, memset

from pbxcore._g711 cimport g711_alaw2lin, g711_ulaw2lin

cdef extern from *:
    """
    #ifndef PBX_DEBUG
    #define PBX_DEBUG 0
    #endif
    """
    const int PBX_DEBUG

# _invariant_errors() bits
cdef enum:
    INV_Q_INDEX = 1
    INV_HIST_MASS = 2
    INV_PLAYOUT = 4
    INV_TARGET = 8
    INV_RING = 16

INVARIANTS = {
    INV_Q_INDEX: "quantile index outside the histogram",
    INV_HIST_MASS: "histogram tail mass outside [0, total]",
    INV_PLAYOUT: "playout position outside [oldest buffered, newest + 1]",
    INV_TARGET: "target delay outside [min_delay, max_delay]",
    INV_RING: "a buffered, unplayed frame outside the playout window",
}

cdef enum:
    US_PER_SAMPLE = 125             # 1e6 / 8000
    HALF_FRAME = 80                 # samples
    TS_JUMP_US = 1000000            # timestamp inconsistent with seq and arrival by this much
    RESYNC_GAP_US = 500000          # a pause after which an empty buffer re-anchors playout
    BASE_WINDOW_S = 10              # sliding minimum transit over the last 10 s
    SHRINK_MARGIN_US = 10000        # shrink only when a whole frame + this is in excess
    SHRINK_INTERVAL = 25            # at most one skipped frame per 0.5 s
    PLC_WINDOW = 160                # correlation window of the pitch search
    PLC_FLAT = 80                   # 10 ms of concealment at full level
    PLC_FADE = 400                  # then fade to silence over 50 ms (silent after 60 ms)
    RTP_HEADER = 12

DEF_MIN_DELAY_MS = 20
DEF_MAX_DELAY_MS = 200
MAX_DELAY_LIMIT_MS = 2000

cdef double HIST_RESCALE = 1e150
cdef int64_t NO_SECOND = -(1 << 62)     # marks an unused slot of the minimum-transit window


cdef inline int64_t ts_us(int64_t ts) noexcept nogil:
    return ts * US_PER_SAMPLE


cdef inline int64_t floor_div(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef inline int64_t iabs(int64_t v) noexcept nogil:
    return -v if v < 0 else v


cdef inline int plc_gain(int t) noexcept nogil:
    # Q15 gain after t concealed samples
    if t < PLC_FLAT:
        return 32768
    if t >= PLC_FLAT + PLC_FADE:
        return 0
    return 32768 - ((t - PLC_FLAT) * 32768) // PLC_FADE


cdef inline int plc_next(const int16_t* h, int p, int t, int* pos) noexcept nogil:
    # the next repeated sample: one pitch period for the first 10 ms, then two, then three,
    # as G.711 Appendix I does against the buzz of a short loop
    cdef int periods = 1 + t // PLC_FLAT
    if periods > 3:
        periods = 3
    cdef int span = p * periods
    cdef int v = h[JB_PLC_HISTORY - span + pos[0]]
    pos[0] += 1
    if pos[0] >= span:
        pos[0] = 0
    return v


cdef int plc_find_pitch(const int16_t* h) noexcept nogil:
    # h holds JB_PLC_HISTORY samples; the period whose lag best correlates with the last
    # PLC_WINDOW samples (normalised cross-correlation, G.711 Appendix I range)
    cdef int p, i, best = JB_PLC_MIN_PITCH
    cdef int64_t corr, energy
    cdef double score, best_score = 0.0
    cdef const int16_t* w = h + JB_PLC_HISTORY - PLC_WINDOW
    for p in range(JB_PLC_MIN_PITCH, JB_PLC_MAX_PITCH + 1):
        corr = 0
        energy = 0
        for i in range(PLC_WINDOW):
            corr += <int64_t>w[i] * w[i - p]
            energy += <int64_t>w[i - p] * w[i - p]
        if energy <= 0:
            continue
        score = <double>corr / sqrt(<double>energy)
        if score > best_score:
            best_score = score
            best = p
    return best


cdef int parse_rtp(const uint8_t* d, Py_ssize_t n, uint16_t* seq, uint32_t* ts, uint32_t* ssrc,
                   int* pt, Py_ssize_t* off, Py_ssize_t* plen) noexcept nogil:
    # RFC 3550 section 5.1; returns 0 on success, -1 if the packet is malformed
    cdef Py_ssize_t pos, end, pad
    if n < RTP_HEADER or (d[0] >> 6) != 2:
        return -1
    pos = RTP_HEADER + 4 * (d[0] & 0x0F)
    if pos > n:
        return -1
    if d[0] & 0x10:
        if pos + 4 > n:
            return -1
        pos += 4 + 4 * ((<Py_ssize_t>d[pos + 2] << 8) | d[pos + 3])
        if pos > n:
            return -1
    end = n
    if d[0] & 0x20:
        pad = d[n - 1]
        if pad == 0 or pad > n - pos:
            return -1
        end = n - pad
    seq[0] = <uint16_t>((d[2] << 8) | d[3])
    ts[0] = (<uint32_t>d[4] << 24) | (<uint32_t>d[5] << 16) | (<uint32_t>d[6] << 8) | d[7]
    ssrc[0] = (<uint32_t>d[8] << 24) | (<uint32_t>d[9] << 16) | (<uint32_t>d[10] << 8) | d[11]
    pt[0] = d[1] & 0x7F
    off[0] = pos
    plen[0] = end - pos
    return 0


cdef inline int64_t seconds_to_us(double t) noexcept:
    return <int64_t>floor(t * 1e6 + 0.5)


cdef class JitterBuffer:
    """Adaptive jitter buffer for one received G.711 stream (PCMU or PCMA, 20 ms packets).

    ``put()`` every received RTP packet with its arrival time; ``get()`` once per 20 ms tick
    for 160 samples of PCM16 and a :class:`JbStatus`. Times are seconds on any monotonic
    clock shared by both calls. The target delay adapts between ``min_delay_ms`` and
    ``max_delay_ms`` to the ``quantile`` of the observed relative delay.
    """

    def __init__(self, min_delay_ms: float = DEF_MIN_DELAY_MS,
                 max_delay_ms: float = DEF_MAX_DELAY_MS,
                 quantile: float = 0.99, forget_factor: float = 0.998):
        if not 0 <= min_delay_ms <= max_delay_ms:
            raise ValueError(
                f"need 0 <= min_delay_ms <= max_delay_ms, got {min_delay_ms}, {max_delay_ms}")
        if max_delay_ms > MAX_DELAY_LIMIT_MS:
            raise ValueError(
                f"max_delay_ms must be at most {MAX_DELAY_LIMIT_MS}, got {max_delay_ms}")
        if not 0.5 <= quantile < 1.0:
            raise ValueError(f"quantile must be in [0.5, 1), got {quantile}")
        if not 0.0 < forget_factor < 1.0:
            raise ValueError(f"forget_factor must be in (0, 1), got {forget_factor}")
        self.min_delay_us = <int64_t>floor(min_delay_ms * 1000.0 + 0.5)
        self.max_delay_us = <int64_t>floor(max_delay_ms * 1000.0 + 0.5)
        self.quantile = quantile
        self.forget_factor = forget_factor
        memset(&self.st, 0, sizeof(JbStats))
        self.target_samples_len = 0
        self.target_samples_pos = 0
        self.ticks_since_sample = 0
        self.c_reset()

    # ---- C-level API (see _jitter.pxd) ----

    cdef void c_reset(self) noexcept nogil:
        self.have_ssrc = False
        self.ssrc = 0
        memset(self.hist, 0, sizeof(self.hist))
        self.hist_weight = 1.0
        self.hist_total = 0.0
        self.hist_above = 0.0
        self.hist_count = 0
        self.q_index = 0
        self.target_us = self.min_delay_us
        self.plc_have_history = 0
        memset(self.plc_history, 0, sizeof(self.plc_history))
        self._restart()

    cdef void _restart(self) noexcept nogil:
        cdef int i
        self.state = JB_STATE_IDLE
        self.bad_seq = -1
        self.newest_seq = 0
        self.newest_ts = 0
        self.newest_raw_ts = 0
        self.newest_arrival_us = 0
        self.ts_offset = 0
        self.play_seq = 0
        self.play_ts = 0
        self.ticks_since_shrink = 0
        self.last_played_seq = -1
        self._forget_base()
        for i in range(JB_RING):
            self.ring[i].seq = -1
            self.ring[i].played = 0
        self.plc_pitch = 0
        self.plc_pos = 0
        self.plc_t = 0

    cdef void _forget_base(self) noexcept nogil:
        cdef int i
        self.base_us = 0
        self.base_at_sec = NO_SECOND
        for i in range(JB_BASE_SLOTS):
            self.base_sec[i] = NO_SECOND
            self.base_min[i] = 0

    cdef int _invariant_errors(self) noexcept nogil:
        cdef int errors = 0, i
        cdef double eps = 1e-9 * self.hist_total + 1e-300
        cdef int64_t target = self.c_target_delay_us()
        if self.q_index < 0 or self.q_index >= JB_HIST_BUCKETS:
            errors |= INV_Q_INDEX
        if self.hist_above < -eps or self.hist_above > self.hist_total + eps:
            errors |= INV_HIST_MASS
        if target < self.min_delay_us or target > self.max_delay_us:
            errors |= INV_TARGET
        if self.state != JB_STATE_IDLE:
            if self.play_seq > self.newest_seq + 1 or self.newest_seq - self.play_seq >= JB_RING:
                errors |= INV_PLAYOUT
            for i in range(JB_RING):
                if (self.ring[i].seq >= 0 and not self.ring[i].played
                        and self.ring[i].seq > self.newest_seq):
                    errors |= INV_RING
        return errors

    cdef int64_t c_target_delay_us(self) noexcept nogil:
        if self.target_us < self.min_delay_us:
            return self.min_delay_us
        if self.target_us > self.max_delay_us:
            return self.max_delay_us
        return self.target_us

    cdef void _observe_delay(self, int64_t ext_ts, int64_t arrival_us) noexcept nogil:
        cdef int64_t transit = arrival_us - ts_us(ext_ts)
        cdef int64_t sec = floor_div(arrival_us, 1000000)
        cdef int i = <int>(sec & (JB_BASE_SLOTS - 1))
        cdef int64_t base, r, b, target
        cdef double w, tail
        cdef double f
        if self.base_sec[i] != sec:
            self.base_sec[i] = sec
            self.base_min[i] = transit
        elif transit < self.base_min[i]:
            self.base_min[i] = transit
        if sec != self.base_at_sec:
            # a new second: recompute the minimum over the window
            base = transit
            for i in range(JB_BASE_SLOTS):
                if (self.base_sec[i] > sec - BASE_WINDOW_S and self.base_sec[i] <= sec
                        and self.base_min[i] < base):
                    base = self.base_min[i]
            self.base_us = base
            self.base_at_sec = sec
        elif transit < self.base_us:
            self.base_us = transit
        r = transit - self.base_us
        b = r // JB_HIST_BUCKET_US
        if b >= JB_HIST_BUCKETS:
            b = JB_HIST_BUCKETS - 1
        # histogram with forgetting: older samples weigh f^age; done with growing weights
        w = self.hist_weight
        self.hist[b] += w
        self.hist_total += w
        if b > self.q_index:
            self.hist_above += w
        tail = (1.0 - self.quantile) * self.hist_total
        while self.hist_above > tail and self.q_index < JB_HIST_BUCKETS - 1:
            self.q_index += 1
            self.hist_above -= self.hist[self.q_index]
        while self.q_index > 0 and self.hist_above + self.hist[self.q_index] <= tail:
            self.hist_above += self.hist[self.q_index]
            self.q_index -= 1
        self.hist_count += 1
        # start-up: the forgetting factor ramps up so the first packets weigh alike
        f = 1.0 - 1.0 / <double>(self.hist_count + 1)
        if f > self.forget_factor:
            f = self.forget_factor
        self.hist_weight = w / f
        if self.hist_weight > HIST_RESCALE:
            for i in range(JB_HIST_BUCKETS):
                self.hist[i] /= self.hist_weight
            self.hist_total /= self.hist_weight
            self.hist_above /= self.hist_weight
            self.hist_weight = 1.0
        self.target_us = (self.q_index + 1) * JB_HIST_BUCKET_US
        target = self.c_target_delay_us()
        if self.st.target_min_us == 0 or target < self.st.target_min_us:
            self.st.target_min_us = target
        if target > self.st.target_max_us:
            self.st.target_max_us = target

    cdef int _accept(self, int64_t ext_seq, int64_t ext_ts, int pt, const uint8_t* payload,
                     int64_t arrival_us) noexcept nogil:
        cdef JbSlot* slot = &self.ring[ext_seq & JB_RING_MASK]
        slot.seq = ext_seq
        slot.ts = ext_ts
        slot.arrival_us = arrival_us
        slot.pt = <uint8_t>pt
        slot.played = 0
        memcpy(slot.payload, payload, JB_FRAME_SAMPLES)
        self.st.received += 1
        return 0

    cdef int c_put(self, uint16_t seq, uint32_t ts, uint32_t ssrc, int pt,
                   const uint8_t* payload, Py_ssize_t n, int64_t arrival_us) noexcept nogil:
        cdef int rc = self._put(seq, ts, ssrc, pt, payload, n, arrival_us)
        if PBX_DEBUG and self._invariant_errors():
            self.st.invariant_violations += 1
        return rc

    cdef int _put(self, uint16_t seq, uint32_t ts, uint32_t ssrc, int pt,
                  const uint8_t* payload, Py_ssize_t n, int64_t arrival_us) noexcept nogil:
        cdef int result = JB_PUT_OK
        cdef int d
        cdef int64_t ext_seq, ext_ts, dts
        cdef int64_t prev_seq = self.newest_seq, prev_arrival_us = self.newest_arrival_us
        cdef JbSlot* slot
        if pt != 0 and pt != 8:
            self.st.invalid += 1
            return JB_PUT_BAD_PT
        if n != JB_FRAME_SAMPLES:
            self.st.invalid += 1
            return JB_PUT_BAD_SIZE
        if not self.have_ssrc or ssrc != self.ssrc:
            if self.have_ssrc:
                self.st.ssrc_changes += 1
                self.st.resets += 1
                result = JB_PUT_RESET
                self._restart()
            self.have_ssrc = True
            self.ssrc = ssrc
        if self.state != JB_STATE_IDLE:
            d = <int16_t>(<uint16_t>(seq - <uint16_t>self.newest_seq))
            if d >= JB_RING or d <= -JB_MAX_MISORDER:
                if self.bad_seq != seq:
                    self.bad_seq = (seq + 1) & 0xFFFF
                    self.st.bad_seq += 1
                    return JB_PUT_BAD_SEQ
                # two packets in a row on a new numbering: the sender restarted
                self.st.resets += 1
                result = JB_PUT_RESET
                self._restart()
        if self.state == JB_STATE_IDLE:
            self.state = JB_STATE_PREFETCH
            self.newest_seq = seq
            self.newest_ts = ts
            self.newest_raw_ts = ts
            self.newest_arrival_us = arrival_us
            self.play_seq = seq
            self.play_ts = ts
            self._observe_delay(ts, arrival_us)
            self._accept(seq, ts, pt, payload, arrival_us)
            return result
        self.bad_seq = -1
        ext_seq = self.newest_seq + d
        dts = <int32_t>(ts - self.newest_raw_ts)
        ext_ts = self.newest_ts + dts
        if d > 0:
            if (iabs(dts * US_PER_SAMPLE - (arrival_us - self.newest_arrival_us)) > TS_JUMP_US
                    and iabs(dts - d * JB_FRAME_SAMPLES) * US_PER_SAMPLE > TS_JUMP_US):
                # the timestamp jumped with no matching gap in time: rebase it
                ext_ts = self.newest_ts + d * JB_FRAME_SAMPLES
                self.st.ts_jumps += 1
            self.newest_seq = ext_seq
            self.newest_ts = ext_ts
            self.newest_raw_ts = ts
            self.newest_arrival_us = arrival_us
        elif d < 0 and (iabs(ext_ts - (self.newest_ts + d * JB_FRAME_SAMPLES)) * US_PER_SAMPLE
                        > TS_JUMP_US):
            # an older packet from before a timestamp jump
            self.st.late += 1
            return JB_PUT_LATE
        slot = &self.ring[ext_seq & JB_RING_MASK]
        if slot.seq == ext_seq:
            self.st.duplicates += 1
            return JB_PUT_DUPLICATE
        if (self.state == JB_STATE_PLAYING and d > 0 and prev_seq < self.play_seq
                and arrival_us - prev_arrival_us > RESYNC_GAP_US):
            # the first packet after a pause (silence suppression, hold, outage) with nothing
            # left to play: start the talkspurt at the target delay from a fresh minimum
            # transit, as clock drift over the pause may have moved both
            self.st.resyncs += 1
            self.state = JB_STATE_PREFETCH
            self.play_seq = ext_seq
            self.play_ts = ext_ts
            self._forget_base()
        self._observe_delay(ext_ts, arrival_us)
        if self.state == JB_STATE_PREFETCH:
            if ext_seq < self.play_seq:
                self.play_seq = ext_seq
                self.play_ts = ext_ts
        elif ext_seq < self.play_seq or ext_ts <= self.play_ts - HALF_FRAME:
            self.st.late += 1
            if ext_seq >= self.play_seq:
                self.play_seq = ext_seq + 1
            return JB_PUT_LATE
        if ext_seq - self.play_seq >= JB_RING:
            # more than the ring ahead of playout: give up the oldest frames
            self.st.overflows += 1
            self.play_seq = ext_seq - JB_RING + 1
            self.play_ts = ext_ts - (JB_RING - 1) * JB_FRAME_SAMPLES
        self._accept(ext_seq, ext_ts, pt, payload, arrival_us)
        return result

    cdef int c_put_packet(self, const uint8_t* data, Py_ssize_t n,
                          int64_t arrival_us) noexcept nogil:
        cdef uint16_t seq
        cdef uint32_t ts, ssrc
        cdef int pt
        cdef Py_ssize_t off, plen
        if parse_rtp(data, n, &seq, &ts, &ssrc, &pt, &off, &plen) < 0:
            self.st.invalid += 1
            return JB_PUT_INVALID
        return self.c_put(seq, ts, ssrc, pt, data + off, plen, arrival_us)

    cdef void _conceal(self, int16_t* out) noexcept nogil:
        cdef int i, g, p
        if not self.plc_have_history:
            memset(out, 0, JB_FRAME_SAMPLES * sizeof(int16_t))
            self.plc_t += JB_FRAME_SAMPLES
            return
        if self.plc_t == 0:
            self.plc_pitch = plc_find_pitch(self.plc_history)
            self.plc_pos = 0
        p = self.plc_pitch
        for i in range(JB_FRAME_SAMPLES):
            g = plc_gain(self.plc_t + i)
            out[i] = <int16_t>((plc_next(self.plc_history, p, self.plc_t + i, &self.plc_pos)
                                * g) >> 15)
        self.plc_t += JB_FRAME_SAMPLES

    cdef void _play(self, JbSlot* slot, int64_t now_us, int16_t* out) noexcept nogil:
        cdef int i, g, p, syn
        if slot.pt == 8:
            g711_alaw2lin(slot.payload, JB_FRAME_SAMPLES, out)
        else:
            g711_ulaw2lin(slot.payload, JB_FRAME_SAMPLES, out)
        if self.plc_t > 0 and self.plc_have_history and self.plc_pitch > 0:
            # cross-fade from the continued concealment into the real frame
            p = self.plc_pitch
            for i in range(JB_PLC_XFADE):
                g = plc_gain(self.plc_t + i)
                syn = (plc_next(self.plc_history, p, self.plc_t + i, &self.plc_pos) * g) >> 15
                out[i] = <int16_t>((syn * (JB_PLC_XFADE - i) + out[i] * i) >> 5)
        self.plc_t = 0
        memmove(self.plc_history, self.plc_history + JB_FRAME_SAMPLES,
                (JB_PLC_HISTORY - JB_FRAME_SAMPLES) * sizeof(int16_t))
        memcpy(self.plc_history + JB_PLC_HISTORY - JB_FRAME_SAMPLES, out,
               JB_FRAME_SAMPLES * sizeof(int16_t))
        self.plc_have_history = 1
        slot.played = 1
        self.last_played_seq = <int>(slot.seq & 0xFFFF)
        self.st.buffer_delay_sum_us += now_us - slot.arrival_us
        self.st.added_delay_sum_us += now_us - ts_us(slot.ts) - self.base_us
        self.st.frames += 1

    cdef int c_get(self, int64_t now_us, int16_t* pcm_out) noexcept nogil:
        cdef int rc = self._get(now_us, pcm_out)
        if PBX_DEBUG and self._invariant_errors():
            self.st.invariant_violations += 1
        return rc

    cdef int _get(self, int64_t now_us, int16_t* pcm_out) noexcept nogil:
        cdef int64_t o_des, err, dts, expected_ts, excess, skip
        cdef int _guard
        cdef JbSlot* slot
        self.ticks_since_sample += 1
        if self.ticks_since_sample >= JB_FRAME_US // 400:     # every 50 ticks = 1 s
            self.ticks_since_sample = 0
            self.target_samples[self.target_samples_pos] = <int32_t>self.c_target_delay_us()
            self.target_samples_pos = (self.target_samples_pos + 1) % JB_TARGET_HISTORY
            if self.target_samples_len < JB_TARGET_HISTORY:
                self.target_samples_len += 1
        if self.state == JB_STATE_IDLE:
            memset(pcm_out, 0, JB_FRAME_SAMPLES * sizeof(int16_t))
            self.st.empty += 1
            return JB_EMPTY
        o_des = self.base_us + self.c_target_delay_us()
        err = now_us - ts_us(self.play_ts) - o_des
        if self.state == JB_STATE_PREFETCH:
            if err < 0:
                memset(pcm_out, 0, JB_FRAME_SAMPLES * sizeof(int16_t))
                self.st.empty += 1
                return JB_EMPTY
            self.state = JB_STATE_PLAYING
            self.ticks_since_shrink = 0
        if err < 0:
            # grow now: hold playout back one tick
            self.st.grows += 1
            self._conceal(pcm_out)
            self.st.concealed += 1
            return JB_CONCEALED
        self.ticks_since_shrink += 1
        excess = err + self.c_target_delay_us() - self.max_delay_us
        if excess >= JB_FRAME_US:
            # above the maximum delay (after a spike): jump back to it at once
            skip = excess // JB_FRAME_US
            self.st.shrinks += skip
            self.ticks_since_shrink = 0
            self.play_ts += skip * JB_FRAME_SAMPLES
        elif (err >= JB_FRAME_US + SHRINK_MARGIN_US
                and self.ticks_since_shrink >= SHRINK_INTERVAL):
            # shrink slowly: skip one frame
            self.st.shrinks += 1
            self.ticks_since_shrink = 0
            self.play_ts += JB_FRAME_SAMPLES
        for _guard in range(JB_RING):
            slot = &self.ring[self.play_seq & JB_RING_MASK]
            if slot.seq == self.play_seq and not slot.played:
                dts = slot.ts - self.play_ts
                if dts <= -HALF_FRAME:
                    # its time has passed (skipped by a shrink)
                    slot.played = 1
                    self.st.discarded += 1
                    self.play_seq += 1
                    continue
                if dts >= HALF_FRAME:
                    break       # a gap in time before it (silence suppression)
                self._play(slot, now_us, pcm_out)
                self.play_seq += 1
                self.play_ts = slot.ts + JB_FRAME_SAMPLES
                return JB_FRAME
            if self.newest_seq > self.play_seq:
                # missing, with newer packets buffered: lost once its time has come
                expected_ts = self.newest_ts - (self.newest_seq - self.play_seq) * JB_FRAME_SAMPLES
                if expected_ts <= self.play_ts - HALF_FRAME:
                    self.play_seq += 1
                    continue
                if expected_ts < self.play_ts + HALF_FRAME:
                    self.play_seq += 1
            break
        self._conceal(pcm_out)
        self.play_ts += JB_FRAME_SAMPLES
        self.st.concealed += 1
        return JB_CONCEALED

    # ---- Python API ----

    def put(self, packet, double arrival):
        """Buffer one RTP packet (the whole datagram) received at ``arrival`` seconds."""
        cdef Py_buffer view
        cdef int rc
        cdef int64_t at = seconds_to_us(arrival)
        if type(packet) is bytes:
            rc = self.c_put_packet(<const uint8_t*>PyBytes_AS_STRING(packet), len(packet), at)
            return JbPutResult(rc)
        PyObject_GetBuffer(packet, &view, PyBUF_SIMPLE)
        try:
            rc = self.c_put_packet(<const uint8_t*>view.buf, view.len, at)
        finally:
            PyBuffer_Release(&view)
        return JbPutResult(rc)

    def put_frame(self, int seq, unsigned int timestamp, unsigned int ssrc, int payload_type,
                  payload, double arrival):
        """Buffer one RTP payload given its header fields, received at ``arrival`` seconds."""
        cdef Py_buffer view
        cdef int rc
        if not 0 <= seq <= 0xFFFF:
            raise ValueError(f"sequence number out of range: {seq}")
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            rc = self.c_put(<uint16_t>seq, timestamp, ssrc, payload_type,
                            <const uint8_t*>view.buf, view.len, seconds_to_us(arrival))
        finally:
            PyBuffer_Release(&view)
        return JbPutResult(rc)

    def get(self, double now):
        """Play one 20 ms tick: ``(pcm, status)``, 160 samples of native-order PCM16."""
        cdef bytes out = PyBytes_FromStringAndSize(NULL, JB_FRAME_SAMPLES * 2)
        cdef int rc = self.c_get(seconds_to_us(now), <int16_t*>PyBytes_AS_STRING(out))
        return out, JbStatus(rc)

    def get_into(self, double now, out):
        """Play one tick into the writable buffer ``out`` (at least 320 bytes)."""
        cdef Py_buffer view
        cdef int rc
        cdef int16_t pcm[JB_FRAME_SAMPLES]
        PyObject_GetBuffer(out, &view, PyBUF_WRITABLE)
        try:
            if view.len < JB_FRAME_SAMPLES * 2:
                raise ValueError(f"out too small: needs {JB_FRAME_SAMPLES * 2} bytes, "
                                 f"has {view.len}")
            rc = self.c_get(seconds_to_us(now), pcm)
            memcpy(view.buf, pcm, JB_FRAME_SAMPLES * 2)
        finally:
            PyBuffer_Release(&view)
        return JbStatus(rc)

    def check_invariants(self):
        """The internal invariants that do not hold now, as messages (empty when sound).

        PBX_DEBUG builds check them after every put and get and count violations in
        ``stats()["invariant_violations"]``.
        """
        cdef int errors = self._invariant_errors()
        return [msg for bit, msg in INVARIANTS.items() if errors & bit]

    def reset(self):
        """Forget the stream and the delay history (statistics are kept)."""
        self.c_reset()

    @property
    def target_delay_ms(self):
        """The current target delay above the fastest recent transit, in ms."""
        return self.c_target_delay_us() / 1000.0

    @property
    def last_played_seq(self):
        """Sequence number of the last frame played, or -1."""
        return self.last_played_seq

    def stats(self):
        """Counters and delays as a dict (delays in ms)."""
        cdef JbStats s = self.st
        return {
            "received": s.received,
            "late": s.late,
            "duplicates": s.duplicates,
            "invalid": s.invalid,
            "bad_seq": s.bad_seq,
            "resets": s.resets,
            "ssrc_changes": s.ssrc_changes,
            "ts_jumps": s.ts_jumps,
            "overflows": s.overflows,
            "resyncs": s.resyncs,
            "frames": s.frames,
            "concealed": s.concealed,
            "empty": s.empty,
            "grows": s.grows,
            "shrinks": s.shrinks,
            "discarded": s.discarded,
            "buffer_delay_ms": (s.buffer_delay_sum_us / 1000.0 / s.frames) if s.frames else 0.0,
            "added_delay_ms": (s.added_delay_sum_us / 1000.0 / s.frames) if s.frames else 0.0,
            "target_delay_ms": self.c_target_delay_us() / 1000.0,
            "target_delay_min_ms": s.target_min_us / 1000.0,
            "target_delay_max_ms": s.target_max_us / 1000.0,
            "invariant_violations": s.invariant_violations,
        }

    def target_history(self):
        """The target delay in ms once a second (every 50 ticks), oldest first, up to 64."""
        cdef int k
        cdef int start = ((self.target_samples_pos - self.target_samples_len + JB_TARGET_HISTORY)
                          % JB_TARGET_HISTORY)
        return [self.target_samples[(start + k) % JB_TARGET_HISTORY] / 1000.0
                for k in range(self.target_samples_len)]

    def run_trace(self, const uint16_t[:] seq, const uint32_t[:] ts, const uint32_t[:] ssrc,
                  const int64_t[:] arrival_us, const int64_t[:] tick_us, payload,
                  uint8_t[:] put_result, uint8_t[:] status, int32_t[:] played_seq,
                  int32_t[:] target_us):
        """Replay a trace in native code (for the simulator and the benchmark).

        Packets (sorted by ``arrival_us``) are put before each tick they arrived by; at
        each tick the status, the sequence number played (or -1) and the target delay are
        written to the output arrays.
        """
        cdef Py_ssize_t n = seq.shape[0], m = tick_us.shape[0], i = 0, k
        cdef Py_buffer view
        cdef int16_t pcm[JB_FRAME_SAMPLES]
        cdef int rc
        if (ts.shape[0] != n or ssrc.shape[0] != n or arrival_us.shape[0] != n
                or put_result.shape[0] != n):
            raise ValueError("packet arrays differ in length")
        if status.shape[0] != m or played_seq.shape[0] != m or target_us.shape[0] != m:
            raise ValueError("tick arrays differ in length")
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            with nogil:
                for k in range(m):
                    while i < n and arrival_us[i] <= tick_us[k]:
                        put_result[i] = <uint8_t>self.c_put(
                            seq[i], ts[i], ssrc[i], 0, <const uint8_t*>view.buf, view.len,
                            arrival_us[i])
                        i += 1
                    rc = self.c_get(tick_us[k], pcm)
                    status[k] = <uint8_t>rc
                    played_seq[k] = self.last_played_seq if rc == JB_FRAME else -1
                    target_us[k] = <int32_t>self.c_target_delay_us()
        finally:
            PyBuffer_Release(&view)
        return i
