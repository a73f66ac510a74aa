/* RTP relay engine: native worker threads (epoll, recvmmsg/sendmmsg), no Python inside.
 *
 * Ownership: a session belongs to one worker. Python-side threads create a session (bind its
 * sockets, then hand it over with a command); every later change (update, player, recorder,
 * delete) is a command the owning worker applies between two epoll batches, so the packet
 * path takes no lock. Counters are single-writer (the worker) and read with relaxed atomics.
 */
#ifndef PBX_RTP_ENGINE_H
#define PBX_RTP_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>

#ifdef __cplusplus
extern "C" {
#endif

/* event types delivered to Python */
enum {
    PBX_EV_TIMEOUT = 1,      /* a = timeout in ms */
    PBX_EV_DTMF = 2,         /* a = event code (0-15), b = duration in ms, c = volume */
    PBX_EV_SSRC_CHANGED = 3, /* a = old SSRC, b = new SSRC, c = 1 if the leg re-latched */
    PBX_EV_PLAYER_DONE = 4,  /* a = player id, b = frames sent, c = 1 if stopped early */
    PBX_EV_LATCHED = 5       /* first packet: the leg learnt its peer */
};

enum { PBX_CODEC_NONE = 0, PBX_CODEC_PCMU = 1, PBX_CODEC_PCMA = 2 };

/* An IPv4 or IPv6 socket address: 28 bytes where sockaddr_storage takes 128, which keeps
 * a leg's hot state in fewer cache lines. sa.sa_family == AF_UNSPEC means "none". */
typedef union {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
} pbx_sockaddr;

typedef struct {
    uint32_t type;
    uint32_t leg;        /* 0 = leg a, 1 = leg b */
    uint64_t session_id;
    uint64_t a, b, c;
    int64_t mono_ns;     /* CLOCK_MONOTONIC when the event happened */
} pbx_event;

/* g711 transcoding kernels, supplied by the Cython layer from _g711's C API */
typedef void (*pbx_xlat_fn)(const uint8_t *src, ssize_t n, uint8_t *dst);
typedef void (*pbx_enc_fn)(const int16_t *src, ssize_t n, uint8_t *dst);
typedef void (*pbx_dec_fn)(const uint8_t *src, ssize_t n, int16_t *dst);

typedef struct {
    pbx_xlat_fn ulaw2alaw, alaw2ulaw;
    pbx_enc_fn lin2ulaw, lin2alaw;
    pbx_dec_fn ulaw2lin, alaw2lin;
} pbx_codec_api;

/* Recorder backend: put a received RTP packet, get one 20 ms frame (160 samples).
 * get returns 1 for a frame, 0 for concealment/no audio (frame filled anyway). */
typedef struct {
    void *ctx;
    void (*put)(void *ctx, const uint8_t *payload, size_t n, int codec, uint16_t seq,
                uint32_t ts, uint32_t ssrc, int64_t now_ns);
    int (*get)(void *ctx, int16_t *frame160, int64_t now_ns);
    void (*release)(void *ctx);  /* called by the worker when the recorder ends */
} pbx_rec_backend;

/* leg configuration; `mask` says which fields an update carries */
enum {
    PBX_CONF_REMOTE = 1 << 0,
    PBX_CONF_RTCP_REMOTE = 1 << 1,
    PBX_CONF_CODEC = 1 << 2,
    PBX_CONF_TE_PT = 1 << 3,
    PBX_CONF_STRICT = 1 << 4,
    PBX_CONF_RELATCH = 1 << 5,
    PBX_CONF_TIMEOUT = 1 << 6,
    PBX_CONF_LATCH = 1 << 7,
    PBX_CONF_MUX = 1 << 8
};

typedef struct {
    uint32_t mask;
    pbx_sockaddr remote;      /* family AF_UNSPEC = none */
    socklen_t remote_len;
    pbx_sockaddr rtcp_remote; /* AF_UNSPEC = remote port + 1 */
    socklen_t rtcp_remote_len;
    int codec;         /* PBX_CODEC_* of the peer on this leg */
    int pt;            /* payload type number this leg's peer uses for the codec */
    int te_pt;         /* telephone-event payload type, -1 = none */
    int strict;        /* accept media only from the SDP address */
    int relatch;       /* re-latch to a new source when the SSRC changes */
    int latch;         /* learn the peer from the first packet */
    int rtcp_mux;      /* RTCP on the RTP port (RFC 5761) */
    uint32_t timeout_ms;
} pbx_leg_conf;

typedef struct {
    uint64_t packets, bytes;
    uint64_t dropped_invalid, dropped_unlatched, dropped_other;
    uint64_t sent_packets, sent_bytes;
    uint64_t rtcp_packets, rtcp_bytes;
    int64_t lost;
    double jitter_ms;
    int64_t last_packet_ns;   /* CLOCK_MONOTONIC, 0 = never */
    uint32_t ssrc;
    int latched;
    pbx_sockaddr peer;
    socklen_t peer_len;
} pbx_leg_stats;

typedef struct pbx_relay pbx_relay;
typedef struct pbx_session pbx_session;

/* relay lifecycle; bind_host is a numeric IPv4/IPv6 address */
pbx_relay *pbx_relay_new(const char *bind_host, int port_lo, int port_hi, int workers,
                         const pbx_codec_api *codecs, char *err, size_t errlen);
int pbx_relay_start(pbx_relay *r, char *err, size_t errlen);
void pbx_relay_stop(pbx_relay *r);   /* joins workers, frees their sessions */
void pbx_relay_free(pbx_relay *r);
int pbx_relay_family(const pbx_relay *r);
int pbx_relay_event_fd(const pbx_relay *r);
/* copy up to max events out; returns the count */
size_t pbx_relay_drain(pbx_relay *r, pbx_event *out, size_t max);
/* block (no GIL) until an event is pending or timeout_ms passes; 1 = ready */
int pbx_relay_wait(pbx_relay *r, int timeout_ms);
/* live sessions, live ports, created, freed, events dropped, players, recorders, workers,
 * pooled ports (bound sockets kept for reuse after a delete) */
void pbx_relay_counters(pbx_relay *r, int64_t out[9]);

/* sessions; on failure return NULL / -1 with errno set and err filled */
pbx_session *pbx_session_new(pbx_relay *r, uint64_t id, int rtcp_mux, char *err, size_t errlen);
int pbx_session_port(const pbx_session *s, int leg);
int pbx_session_configure(pbx_relay *r, pbx_session *s, int leg, const pbx_leg_conf *conf);
int pbx_session_delete(pbx_relay *r, pbx_session *s);
void pbx_session_stats(const pbx_session *s, int leg, pbx_leg_stats *out);

/* player: PCM16 8 kHz samples (copied); 0 = ok */
int pbx_session_play(pbx_relay *r, pbx_session *s, int leg, const int16_t *pcm, size_t n,
                     uint64_t player_id, int loops);
int pbx_session_stop_play(pbx_relay *r, pbx_session *s, int leg);
/* recorder: writes a WAV to path; backend may be NULL for the built-in arrival-order path */
int pbx_session_record(pbx_relay *r, pbx_session *s, int leg, const char *path,
                       const pbx_rec_backend *backend, char *err, size_t errlen);
/* returns the number of samples written, -1 if no recorder */
int64_t pbx_session_stop_record(pbx_relay *r, pbx_session *s, int leg);

int pbx_parse_addr(const char *host, int port, pbx_sockaddr *out, socklen_t *len);
int pbx_format_addr(const pbx_sockaddr *a, char *host, size_t hostlen, int *port);
int64_t pbx_now_ns(void);
int pbx_addr_family(const pbx_sockaddr *a);

#ifdef __cplusplus
}
#endif
#endif
