# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Native RTP relay: worker threads with their own epoll sets, batched recvmmsg/sendmmsg.

The engine is C (``csrc/rtp_engine.c``) and never touches Python objects; :class:`Relay` is the
thin handle Python holds. ``pbxcore.media.relay`` builds the public API on top of it.
Sessions are named by integer ids, so a stale id raises ``KeyError`` instead of touching
freed memory. Every call that waits for a worker releases the GIL.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport int16_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from pbxcore._jitter cimport JB_FRAME, JitterBuffer
from pbxcore._g711 cimport (
    g711_alaw2lin,
    g711_alaw2ulaw,
    g711_lin2alaw,
    g711_lin2ulaw,
    g711_ulaw2alaw,
    g711_ulaw2lin,
)

cdef extern from "<unistd.h>" nogil:
    int usleep(unsigned int usec)

cdef extern from "<errno.h>":
    int errno
    enum:
        ENOSPC

EV_TIMEOUT = PBX_EV_TIMEOUT
EV_DTMF = PBX_EV_DTMF
EV_SSRC_CHANGED = PBX_EV_SSRC_CHANGED
EV_PLAYER_DONE = PBX_EV_PLAYER_DONE
EV_LATCHED = PBX_EV_LATCHED
# G.711 law of a leg's peer (the C engine calls it the leg's codec)
LAW_NONE = PBX_CODEC_NONE
LAW_ULAW = PBX_CODEC_PCMU
LAW_ALAW = PBX_CODEC_PCMA

DEF ERRLEN = 256
DEF MAX_DRAIN = 1024


class PortRangeExhaustedError(RuntimeError):
    """No free even RTP port (with its odd RTCP neighbour) is left in the relay's range."""


cdef pbx_codec_api _codecs
_codecs.ulaw2alaw = <pbx_xlat_fn>g711_ulaw2alaw
_codecs.alaw2ulaw = <pbx_xlat_fn>g711_alaw2ulaw
_codecs.lin2ulaw = <pbx_enc_fn>g711_lin2ulaw
_codecs.lin2alaw = <pbx_enc_fn>g711_lin2alaw
_codecs.ulaw2lin = <pbx_dec_fn>g711_ulaw2lin
_codecs.alaw2lin = <pbx_dec_fn>g711_alaw2lin


cdef int _set_addr(pbx_sockaddr* out, socklen_t* outlen, object addr, int family) except -1:
    cdef bytes host
    cdef int port
    try:
        host_s, port = addr
    except (TypeError, ValueError):
        raise ValueError(f"address must be a (host, port) pair, got {addr!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1-65535")
    host = str(host_s).strip("[]").encode("ascii")
    if pbx_parse_addr(host, port, out, outlen) < 0:
        raise ValueError(f"{host_s!r} is not a numeric IPv4 or IPv6 address")
    if pbx_addr_family(out) != family:
        raise ValueError(f"address {host_s!r} is not of the relay's address family")
    return 0


cdef object _addr_tuple(const pbx_sockaddr* a):
    cdef char host[64]
    cdef int port = 0
    if pbx_format_addr(a, host, sizeof(host), &port) < 0:
        return None
    return (host.decode("ascii"), port)


cdef class Relay:
    """The native relay: ports, worker threads, sessions, events."""

    def __cinit__(self, str bind="127.0.0.1", int port_lo=20000, int port_hi=29999,
                  int workers=1):
        cdef char err[ERRLEN]
        cdef bytes b = bind.encode("ascii")
        self._sessions = {}
        self._recorders = {}
        self._inflight = {}
        self._doomed = {}
        self._next_id = 1
        self._running = False
        self.bind = bind
        self.port_lo = port_lo
        self.port_hi = port_hi
        self.workers = workers
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if not (0 < port_lo <= port_hi < 65536):
            raise ValueError(f"invalid port range {port_lo}-{port_hi}")
        err[0] = 0
        self._r = pbx_relay_new(b, port_lo, port_hi, workers, &_codecs, err, ERRLEN)
        if self._r == NULL:
            raise ValueError(err.decode("utf-8", "replace"))

    def __dealloc__(self):
        if self._r != NULL:
            with nogil:
                pbx_relay_free(self._r)
            self._r = NULL

    @property
    def running(self):
        return self._running

    @property
    def family(self):
        return pbx_relay_family(self._r)

    def start(self):
        """Start the worker threads."""
        cdef char err[ERRLEN]
        cdef int rc
        if self._running:
            return
        err[0] = 0
        rc = pbx_relay_start(self._r, err, ERRLEN)
        if rc < 0:
            raise OSError(err.decode("utf-8", "replace"))
        self._running = True

    def close(self):
        """Stop the workers; every session is deleted and its ports are freed."""
        if not self._running:
            return
        self._running = False
        while self._inflight:  # calls of other threads still waiting on a worker
            with nogil:
                usleep(1000)
        with nogil:
            pbx_relay_stop(self._r)
        self._sessions.clear()
        self._recorders.clear()

    cdef pbx_session* _get(self, uint64_t session_id) except NULL:
        cdef object addr = self._sessions.get(session_id)
        if addr is None:
            raise KeyError(f"no RTP session {session_id} (deleted or never created)")
        return <pbx_session*><size_t>addr

    # A call that releases the GIL holds the session "in flight": a delete from another
    # thread meanwhile is deferred to the last such call, so no command can reach the
    # worker after the session's DEL.
    cdef pbx_session* _enter(self, uint64_t session_id) except NULL:
        cdef pbx_session* s = self._get(session_id)
        self._inflight[session_id] = self._inflight.get(session_id, 0) + 1
        return s

    cdef int _leave(self, uint64_t session_id) except -1:
        cdef int n = self._inflight[session_id] - 1
        cdef object doomed
        if n:
            self._inflight[session_id] = n
            return 0
        del self._inflight[session_id]
        doomed = self._doomed.pop(session_id, None)
        if doomed is not None:
            self._delete_now(session_id, <pbx_session*><size_t>doomed)
        return 0

    cdef int _delete_now(self, uint64_t session_id, pbx_session* s) except -1:
        with nogil:
            pbx_session_delete(self._r, s)
        self._recorders.pop((session_id, 0), None)
        self._recorders.pop((session_id, 1), None)
        return 0

    def create_session(self, bint rtcp_mux=False):
        """Allocate two legs (even RTP port, RTCP on port+1 unless rtcp_mux); return the id."""
        cdef char err[ERRLEN]
        cdef pbx_session* s
        cdef uint64_t sid
        if not self._running:
            raise RuntimeError("relay is not running: call start() first")
        sid = self._next_id
        self._next_id += 1
        err[0] = 0
        with nogil:
            s = pbx_session_new(self._r, sid, rtcp_mux, err, ERRLEN)
        if s == NULL:
            msg = err.decode("utf-8", "replace")
            if errno == ENOSPC:
                raise PortRangeExhaustedError(msg)
            raise OSError(msg)
        self._sessions[sid] = <size_t>s
        return sid

    def session_ids(self):
        return list(self._sessions)

    def port(self, uint64_t session_id, int leg):
        """Local RTP port of leg 0 (a) or 1 (b)."""
        return pbx_session_port(self._get(session_id), leg)

    def configure(self, uint64_t session_id, int leg, *, remote=None, rtcp_remote=None,
                  law=None, pt=None, te_pt=None, strict=None, relatch=None, latch=None,
                  timeout_ms=None, clear_remote=False):
        """Change a leg; only the arguments given are applied (atomically, by its worker)."""
        cdef pbx_session* s = self._get(session_id)
        cdef pbx_leg_conf conf
        cdef int family = pbx_relay_family(self._r)
        cdef int rc
        memset(&conf, 0, sizeof(conf))
        if clear_remote:
            conf.mask |= PBX_CONF_REMOTE | PBX_CONF_RTCP_REMOTE
        if remote is not None:
            _set_addr(&conf.remote, &conf.remote_len, remote, family)
            conf.mask |= PBX_CONF_REMOTE
        if rtcp_remote is not None:
            _set_addr(&conf.rtcp_remote, &conf.rtcp_remote_len, rtcp_remote, family)
            conf.mask |= PBX_CONF_RTCP_REMOTE
        if law is not None:
            if law not in (PBX_CODEC_NONE, PBX_CODEC_PCMU, PBX_CODEC_PCMA):
                raise ValueError(f"unknown G.711 law {law!r}")
            if pt is None:
                pt = 8 if law == PBX_CODEC_PCMA else 0
            if not 0 <= pt <= 127:
                raise ValueError(f"payload type {pt} is out of range 0-127")
            conf.codec = law
            conf.pt = pt
            conf.mask |= PBX_CONF_CODEC
        if te_pt is not None:
            if not -1 <= te_pt <= 127:
                raise ValueError(f"telephone-event payload type {te_pt} is out of range")
            conf.te_pt = te_pt
            conf.mask |= PBX_CONF_TE_PT
        if strict is not None:
            conf.strict = bool(strict)
            conf.mask |= PBX_CONF_STRICT
        if relatch is not None:
            conf.relatch = bool(relatch)
            conf.mask |= PBX_CONF_RELATCH
        if latch is not None:
            conf.latch = bool(latch)
            conf.mask |= PBX_CONF_LATCH
        if timeout_ms is not None:
            if timeout_ms < 0:
                raise ValueError("timeout must not be negative")
            conf.timeout_ms = timeout_ms
            conf.mask |= PBX_CONF_TIMEOUT
        self._enter(session_id)
        try:
            with nogil:
                rc = pbx_session_configure(self._r, s, leg & 1, &conf)
        finally:
            self._leave(session_id)
        if rc < 0:
            raise RuntimeError("relay is not running")

    def delete(self, uint64_t session_id):
        """Delete a session; its ports are free when this returns.

        If another thread is inside a call on this session, the deletion completes when
        that call returns.
        """
        cdef pbx_session* s = self._get(session_id)
        del self._sessions[session_id]
        if session_id in self._inflight:
            self._doomed[session_id] = <size_t>s
            return
        self._delete_now(session_id, s)

    def stats(self, uint64_t session_id, int leg):
        """Counters of one leg as a dict."""
        cdef pbx_leg_stats st
        pbx_session_stats(self._get(session_id), leg & 1, &st)
        return {
            "packets": st.packets,
            "bytes": st.bytes,
            "dropped_invalid": st.dropped_invalid,
            "dropped_unlatched": st.dropped_unlatched,
            "dropped_other": st.dropped_other,
            "sent_packets": st.sent_packets,
            "sent_bytes": st.sent_bytes,
            "rtcp_packets": st.rtcp_packets,
            "rtcp_bytes": st.rtcp_bytes,
            "lost": st.lost,
            "jitter_ms": st.jitter_ms,
            "last_packet": st.last_packet_ns / 1e9 if st.last_packet_ns else None,
            "ssrc": st.ssrc if st.packets else None,
            "peer": _addr_tuple(&st.peer) if st.latched else None,
        }

    def play(self, uint64_t session_id, int leg, bytes pcm16, uint64_t player_id,
             int loops=1):
        """Send native-order PCM16 8 kHz samples into a leg as 20 ms RTP in its G.711 law."""
        cdef pbx_session* s = self._get(session_id)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(pcm16)
        cdef const int16_t* p = <const int16_t*>PyBytes_AS_STRING(pcm16)
        cdef int rc
        if n & 1:
            raise ValueError(f"PCM16 prompt has an odd length of {n} bytes")
        if loops < 0:
            raise ValueError("loops must be >= 0 (0 = forever)")
        self._enter(session_id)
        try:
            with nogil:
                rc = pbx_session_play(self._r, s, leg & 1, p, <size_t>(n // 2), player_id,
                                      loops)
        finally:
            self._leave(session_id)
        if rc < 0:
            raise RuntimeError("relay is not running")

    def stop_play(self, uint64_t session_id, int leg):
        """Stop the leg's prompt; True if one was playing."""
        cdef pbx_session* s = self._get(session_id)
        cdef int rc
        self._enter(session_id)
        try:
            with nogil:
                rc = pbx_session_stop_play(self._r, s, leg & 1)
        finally:
            self._leave(session_id)
        return rc == 1

    def record(self, uint64_t session_id, int leg, str path, object jitter_buffer=None):
        """Write what the leg receives to a WAV file (PCM16 8 kHz mono)."""
        cdef pbx_session* s = self._get(session_id)
        cdef char err[ERRLEN]
        cdef bytes bpath = path.encode()
        cdef const char* cpath = bpath
        cdef pbx_rec_backend be
        cdef pbx_rec_backend* bep = NULL
        cdef int rc
        err[0] = 0
        if jitter_buffer is not None:
            _jitter_backend(jitter_buffer, &be)
            bep = &be
        self._enter(session_id)
        try:
            with nogil:
                rc = pbx_session_record(self._r, s, leg & 1, cpath, bep, err, ERRLEN)
            if rc == 0 and jitter_buffer is not None:
                self._recorders[(session_id, leg & 1)] = jitter_buffer
        finally:
            self._leave(session_id)
        if rc < 0:
            raise OSError(err.decode("utf-8", "replace"))

    def stop_record(self, uint64_t session_id, int leg):
        """Finish the leg's WAV file; return the number of samples written (-1: none)."""
        cdef pbx_session* s = self._get(session_id)
        cdef int64_t n
        self._enter(session_id)
        try:
            with nogil:
                n = pbx_session_stop_record(self._r, s, leg & 1)
            self._recorders.pop((session_id, leg & 1), None)
        finally:
            self._leave(session_id)
        return n

    def event_fd(self):
        """An eventfd that is readable while events are pending."""
        return pbx_relay_event_fd(self._r)

    def drain_events(self):
        """Pending events as tuples (type, session_id, leg, a, b, c, monotonic_ns)."""
        cdef pbx_event* buf = <pbx_event*>malloc(MAX_DRAIN * sizeof(pbx_event))
        cdef size_t n, i
        out = []
        if buf == NULL:
            raise MemoryError()
        try:
            while True:
                with nogil:
                    n = pbx_relay_drain(self._r, buf, MAX_DRAIN)
                for i in range(n):
                    out.append((buf[i].type, buf[i].session_id, buf[i].leg, buf[i].a,
                                buf[i].b, buf[i].c, buf[i].mono_ns))
                if n < MAX_DRAIN:
                    break
        finally:
            free(buf)
        return out

    def wait_events(self, double timeout):
        """Block (GIL released) until events are pending or timeout seconds pass."""
        cdef int ms = -1 if timeout < 0 else <int>(timeout * 1000)
        cdef int rc
        with nogil:
            rc = pbx_relay_wait(self._r, ms)
        return rc == 1

    def counters(self):
        """Relay-wide counters: live sessions and ports, created/freed, dropped events.

        ``pooled_ports``: sockets of deleted sessions kept bound for the next session.
        """
        cdef int64_t c[9]
        pbx_relay_counters(self._r, c)
        return {
            "live_sessions": c[0],
            "live_ports": c[1],
            "sessions_created": c[2],
            "sessions_freed": c[3],
            "events_dropped": c[4],
            "live_players": c[5],
            "live_recorders": c[6],
            "workers": c[7],
            "pooled_ports": c[8],
        }


def monotonic_ns():
    """CLOCK_MONOTONIC in ns, the clock of the relay's timestamps."""
    return pbx_now_ns()


# ---- jitter-buffered recording: the worker drives a JitterBuffer through its C methods ----

cdef void _jb_put(void* ctx, const uint8_t* payload, size_t n, int codec, uint16_t seq,
                  uint32_t ts, uint32_t ssrc, int64_t now_ns) noexcept nogil:
    (<JitterBuffer>ctx).c_put(seq, ts, ssrc, 8 if codec == PBX_CODEC_PCMA else 0,
                              payload, <Py_ssize_t>n, now_ns // 1000)


cdef int _jb_get(void* ctx, int16_t* frame, int64_t now_ns) noexcept nogil:
    return (<JitterBuffer>ctx).c_get(now_ns // 1000, frame) == JB_FRAME


cdef int _jitter_backend(object jb, pbx_rec_backend* be) except -1:
    if not isinstance(jb, JitterBuffer):
        raise TypeError(f"jitter_buffer must be a pbxcore._jitter.JitterBuffer, not {type(jb)}")
    # the Relay keeps a reference in _recorders until the recording ends
    be.ctx = <void*>jb
    be.put = _jb_put
    be.get = _jb_get
    be.release = NULL
    return 0
