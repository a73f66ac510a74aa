# cython: language_level=3
# C-level interface of the RTP relay engine (csrc/rtp_engine.c). The engine runs its own worker
# threads and never touches Python objects; this module wraps it for Python.
from libc.stdint cimport int16_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "sys/socket.h":
    ctypedef unsigned int socklen_t


cdef extern from "csrc/rtp_engine.h" nogil:
    ctypedef struct pbx_sockaddr:
        pass
    enum:
        PBX_EV_TIMEOUT
        PBX_EV_DTMF
        PBX_EV_SSRC_CHANGED
        PBX_EV_PLAYER_DONE
        PBX_EV_LATCHED
    enum:
        PBX_CODEC_NONE
        PBX_CODEC_PCMU
        PBX_CODEC_PCMA
    enum:
        PBX_CONF_REMOTE
        PBX_CONF_RTCP_REMOTE
        PBX_CONF_CODEC
        PBX_CONF_TE_PT
        PBX_CONF_STRICT
        PBX_CONF_RELATCH
        PBX_CONF_TIMEOUT
        PBX_CONF_LATCH
        PBX_CONF_MUX

    ctypedef struct pbx_event:
        uint32_t type
        uint32_t leg
        uint64_t session_id
        uint64_t a
        uint64_t b
        uint64_t c
        int64_t mono_ns

    ctypedef void (*pbx_xlat_fn)(const uint8_t* src, Py_ssize_t n, uint8_t* dst) noexcept nogil
    ctypedef void (*pbx_enc_fn)(const int16_t* src, Py_ssize_t n, uint8_t* dst) noexcept nogil
    ctypedef void (*pbx_dec_fn)(const uint8_t* src, Py_ssize_t n, int16_t* dst) noexcept nogil

    ctypedef struct pbx_codec_api:
        pbx_xlat_fn ulaw2alaw
        pbx_xlat_fn alaw2ulaw
        pbx_enc_fn lin2ulaw
        pbx_enc_fn lin2alaw
        pbx_dec_fn ulaw2lin
        pbx_dec_fn alaw2lin

    ctypedef struct pbx_rec_backend:
        void* ctx
        void (*put)(void* ctx, const uint8_t* payload, size_t n, int codec, uint16_t seq,
                    uint32_t ts, uint32_t ssrc, int64_t now_ns) noexcept nogil
        int (*get)(void* ctx, int16_t* frame160, int64_t now_ns) noexcept nogil
        void (*release)(void* ctx) noexcept nogil

    ctypedef struct pbx_leg_conf:
        uint32_t mask
        pbx_sockaddr remote
        socklen_t remote_len
        pbx_sockaddr rtcp_remote
        socklen_t rtcp_remote_len
        int codec
        int pt
        int te_pt
        int strict
        int relatch
        int latch
        int rtcp_mux
        uint32_t timeout_ms

    ctypedef struct pbx_leg_stats:
        uint64_t packets
        uint64_t bytes
        uint64_t dropped_invalid
        uint64_t dropped_unlatched
        uint64_t dropped_other
        uint64_t sent_packets
        uint64_t sent_bytes
        uint64_t rtcp_packets
        uint64_t rtcp_bytes
        int64_t lost
        double jitter_ms
        int64_t last_packet_ns
        uint32_t ssrc
        int latched
        pbx_sockaddr peer
        socklen_t peer_len

    ctypedef struct pbx_relay:
        pass
    ctypedef struct pbx_session:
        pass

    pbx_relay* pbx_relay_new(const char* bind_host, int port_lo, int port_hi, int workers,
                             const pbx_codec_api* codecs, char* err, size_t errlen)
    int pbx_relay_start(pbx_relay* r, char* err, size_t errlen)
    void pbx_relay_stop(pbx_relay* r)
    void pbx_relay_free(pbx_relay* r)
    int pbx_relay_family(const pbx_relay* r)
    int pbx_relay_event_fd(const pbx_relay* r)
    size_t pbx_relay_drain(pbx_relay* r, pbx_event* out, size_t max)
    int pbx_relay_wait(pbx_relay* r, int timeout_ms)
    void pbx_relay_counters(pbx_relay* r, int64_t* out)

    pbx_session* pbx_session_new(pbx_relay* r, uint64_t id, int rtcp_mux, char* err,
                                 size_t errlen)
    int pbx_session_port(const pbx_session* s, int leg)
    int pbx_session_configure(pbx_relay* r, pbx_session* s, int leg, const pbx_leg_conf* conf)
    int pbx_session_delete(pbx_relay* r, pbx_session* s)
    void pbx_session_stats(const pbx_session* s, int leg, pbx_leg_stats* out)
    int pbx_session_play(pbx_relay* r, pbx_session* s, int leg, const int16_t* pcm, size_t n,
                         uint64_t player_id, int loops)
    int pbx_session_stop_play(pbx_relay* r, pbx_session* s, int leg)
    int pbx_session_record(pbx_relay* r, pbx_session* s, int leg, const char* path,
                           const pbx_rec_backend* backend, char* err, size_t errlen)
    int64_t pbx_session_stop_record(pbx_relay* r, pbx_session* s, int leg)

    int pbx_parse_addr(const char* host, int port, pbx_sockaddr* out, socklen_t* len)
    int pbx_format_addr(const pbx_sockaddr* a, char* host, size_t hostlen, int* port)
    int64_t pbx_now_ns()
    int pbx_addr_family(const pbx_sockaddr* a)


cdef class Relay:
    cdef pbx_relay* _r
    cdef dict _sessions      # session id -> address of its pbx_session
    cdef dict _recorders     # (session id, leg) -> JitterBuffer kept alive while recording
    cdef dict _inflight      # session id -> calls of other threads waiting on its worker
    cdef dict _doomed        # session id -> address, deleted while a call was in flight
    cdef uint64_t _next_id
    cdef bint _running
    cdef readonly str bind
    cdef readonly int port_lo
    cdef readonly int port_hi
    cdef readonly int workers

    cdef pbx_session* _get(self, uint64_t session_id) except NULL
    cdef pbx_session* _enter(self, uint64_t session_id) except NULL
    cdef int _leave(self, uint64_t session_id) except -1
    cdef int _delete_now(self, uint64_t session_id, pbx_session* s) except -1
