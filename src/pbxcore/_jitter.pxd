# cython: language_level=3
# C-level jitter buffer interface. The relay's Recorder cimports this and drives one
# JitterBuffer per recorded leg from a relay worker thread, with no Python in between:
#
#     from pbxcore._jitter cimport JitterBuffer, JB_FRAME_SAMPLES, JB_FRAME
#     rc = jb.c_put_packet(data, n, now_us)          # on every received RTP packet
#     status = jb.c_get(now_us, pcm)                 # every 20 ms: 160 samples into pcm
#
# Times are microseconds on one monotonic clock. Call c_get once per 20 ms tick with the
# tick's scheduled time (ticks 20 ms apart; when catching up after a stall, pass each missed
# tick's own time, not the current time), and c_put with each packet's arrival time.
# c_get always writes 160 native-order samples (silence for JB_EMPTY, concealment audio for
# JB_CONCEALED), so a recorder writes every tick's output to keep time.
#
# A JitterBuffer takes no lock and allocates nothing after construction. It is not
# thread-safe: one thread (or the GIL holder) at a time calls its methods.
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t

cdef enum:
    JB_CLOCK_RATE = 8000
    JB_FRAME_SAMPLES = 160          # one 20 ms G.711 frame at 8 kHz
    JB_FRAME_US = 20000
    JB_RING = 128                   # slots, a power of two: 2.56 s of 20 ms frames
    JB_RING_MASK = JB_RING - 1
    JB_MAX_MISORDER = 100           # RFC 3550 A.1: older by more than this = restart probation
    JB_HIST_BUCKETS = 512           # relative-delay histogram, JB_HIST_BUCKET_US each
    JB_HIST_BUCKET_US = 2000
    JB_BASE_SLOTS = 16              # one-second slots of the sliding minimum transit
    JB_PLC_HISTORY = 400            # decoded samples kept for pitch-based concealment
    JB_PLC_MIN_PITCH = 40           # 200 Hz..66 Hz, as G.711 Appendix I
    JB_PLC_MAX_PITCH = 120
    JB_PLC_XFADE = 32               # samples cross-faded from concealment into a real frame
    JB_TARGET_HISTORY = 64          # target delay samples kept, one per second of ticks

# c_get() results
cpdef enum JbStatus:
    JB_FRAME = 0                    # a received frame, decoded
    JB_CONCEALED = 1                # concealment (loss, late packet, delay growth)
    JB_EMPTY = 2                    # no stream yet, or (re)buffering a talkspurt: silence

# c_put() / c_put_packet() results
cpdef enum JbPutResult:
    JB_PUT_OK = 0                   # buffered
    JB_PUT_RESET = 1                # buffered, and the stream was reset (new SSRC, restart)
    JB_PUT_LATE = 2                 # dropped: its playout time has passed
    JB_PUT_DUPLICATE = 3            # dropped: already buffered or played
    JB_PUT_BAD_SEQ = 4              # dropped: sequence jump, on RFC 3550 probation
    JB_PUT_BAD_PT = 5               # dropped: not PCMU (0) or PCMA (8)
    JB_PUT_BAD_SIZE = 6             # dropped: payload is not one 20 ms frame (160 bytes)
    JB_PUT_INVALID = 7              # dropped: not a valid RTP packet (c_put_packet only)

cdef enum JbState:
    JB_STATE_IDLE                   # nothing received since construction or reset
    JB_STATE_PREFETCH               # buffering up to the target delay
    JB_STATE_PLAYING

cdef struct JbSlot:
    int64_t seq                     # extended sequence number, -1 when empty
    int64_t ts                      # extended, rebased RTP timestamp
    int64_t arrival_us
    uint8_t pt
    uint8_t played
    uint8_t payload[JB_FRAME_SAMPLES]

cdef struct JbStats:
    int64_t received                # packets buffered
    int64_t late
    int64_t duplicates
    int64_t invalid                 # BAD_PT, BAD_SIZE, INVALID
    int64_t bad_seq
    int64_t resets
    int64_t ssrc_changes
    int64_t ts_jumps
    int64_t overflows
    int64_t resyncs                 # playout re-anchored on a talkspurt after a pause
    int64_t frames                  # JB_FRAME ticks
    int64_t concealed               # JB_CONCEALED ticks
    int64_t empty                   # JB_EMPTY ticks
    int64_t grows                   # ticks held back to raise the delay
    int64_t shrinks                 # frames skipped to lower the delay
    int64_t discarded               # buffered frames never played (skipped, stale)
    int64_t buffer_delay_sum_us     # sum over played frames of (playout - arrival)
    int64_t added_delay_sum_us      # ... of (playout - send time - minimum transit)
    int64_t target_min_us
    int64_t target_max_us
    int64_t invariant_violations    # PBX_DEBUG builds check after every call

cdef class JitterBuffer:
    cdef:
        # configuration
        int64_t min_delay_us
        int64_t max_delay_us
        double quantile
        double forget_factor
        # stream
        JbState state
        bint have_ssrc
        uint32_t ssrc
        int64_t newest_seq          # extended
        int64_t newest_ts           # extended, rebased
        uint32_t newest_raw_ts
        int64_t newest_arrival_us
        int64_t ts_offset
        int32_t bad_seq             # RFC 3550 probation: next seq expected after a jump, or -1
        # playout
        int64_t play_seq            # extended seq of the next frame to play
        int64_t play_ts             # extended timestamp of the next frame to play
        int ticks_since_shrink
        int last_played_seq         # raw seq of the last JB_FRAME, -1 if none
        # sliding minimum of transit (arrival - send time), one-second slots
        int64_t base_us
        int64_t base_at_sec         # second for which base_us is the full window minimum
        int64_t base_min[JB_BASE_SLOTS]
        int64_t base_sec[JB_BASE_SLOTS]
        # relative delay histogram with exponential forgetting (lazy weights)
        double hist[JB_HIST_BUCKETS]
        double hist_weight
        double hist_total
        double hist_above
        int64_t hist_count
        int q_index
        int64_t target_us
        # packet-loss concealment
        int16_t plc_history[JB_PLC_HISTORY]
        int plc_have_history
        int plc_pitch
        int plc_pos
        int plc_t
        # target delay over time
        int32_t target_samples[JB_TARGET_HISTORY]
        int target_samples_len
        int target_samples_pos
        int ticks_since_sample
        # ring
        JbStats st
        JbSlot ring[JB_RING]

    cdef int c_put(self, uint16_t seq, uint32_t ts, uint32_t ssrc, int pt,
                   const uint8_t* payload, Py_ssize_t n, int64_t arrival_us) noexcept nogil
    cdef int c_put_packet(self, const uint8_t* data, Py_ssize_t n,
                          int64_t arrival_us) noexcept nogil
    cdef int c_get(self, int64_t now_us, int16_t* pcm_out) noexcept nogil
    cdef void c_reset(self) noexcept nogil
    cdef int64_t c_target_delay_us(self) noexcept nogil

    cdef int _put(self, uint16_t seq, uint32_t ts, uint32_t ssrc, int pt,
                  const uint8_t* payload, Py_ssize_t n, int64_t arrival_us) noexcept nogil
    cdef int _get(self, int64_t now_us, int16_t* pcm_out) noexcept nogil
    cdef void _restart(self) noexcept nogil
    cdef void _forget_base(self) noexcept nogil
    cdef int _invariant_errors(self) noexcept nogil
    cdef int _accept(self, int64_t ext_seq, int64_t ext_ts, int pt, const uint8_t* payload,
                     int64_t arrival_us) noexcept nogil
    cdef void _observe_delay(self, int64_t ext_ts, int64_t arrival_us) noexcept nogil
    cdef void _conceal(self, int16_t* out) noexcept nogil
    cdef void _play(self, JbSlot* slot, int64_t now_us, int16_t* out) noexcept nogil
