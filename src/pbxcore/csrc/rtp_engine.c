/* RTP relay engine, see rtp_engine.h. Linux only (epoll, eventfd, recvmmsg/sendmmsg). */
#define _GNU_SOURCE
#include "rtp_engine.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#define PBX_BATCH 32

/* The packet path calls the kernel directly: libc's wrappers are pthread cancellation
 * points and, in a multi-threaded process (ours runs inside Python), toggle asynchronous
 * cancellation around every call, which costs more than the rest of our per-packet code. */
#define SYS_RECVFROM(fd, buf, len, fl, a, al) syscall(SYS_recvfrom, (fd), (buf), (len), (fl), (a), (al))
#define SYS_SENDTO(fd, buf, len, fl, a, al) syscall(SYS_sendto, (fd), (buf), (len), (fl), (a), (al))
#define SYS_RECVMMSG(fd, m, n, fl) ((int)syscall(SYS_recvmmsg, (fd), (m), (n), (fl), NULL))
#define SYS_SENDMMSG(fd, m, n, fl) ((int)syscall(SYS_sendmmsg, (fd), (m), (n), (fl)))
#define PBX_MAXPKT 2048
#define PBX_EVENTS_CAP 8192
#define PBX_POOL_CAP 4096   /* pooled legs per kind */
#define PBX_SPIN_NS 50000LL /* how long a caller spins for a command before sleeping */
#define PBX_HOUSEKEEP_NS 100000000LL  /* leg timeout check period */
#define PBX_FRAME_NS 20000000LL
#define PBX_FRAME_SAMPLES 160
#define MAX_DROPOUT 3000
#define MAX_MISORDER 100

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define BUMP(x, v) STORE(x, LOAD(x) + (v))  /* single writer: the owning worker */
#define CBUMP(x, v) __atomic_add_fetch(&(x), (v), __ATOMIC_RELAXED)

typedef struct pbx_worker pbx_worker;
typedef struct pbx_leg pbx_leg;

typedef struct pbx_player {
    int16_t *pcm;
    size_t n, pos;
    uint64_t id;
    int loops;
    int64_t next_ns;
    uint16_t seq;
    uint32_t ts, ssrc;
    uint64_t frames;
    pbx_leg *leg;
    struct pbx_player *next;  /* worker's active list */
} pbx_player;

typedef struct pbx_recorder {
    FILE *f;
    uint64_t samples;
    pbx_rec_backend be;
    int has_be;
    int started;
    int64_t next_ns;
    int have_ts;
    uint32_t next_ts;
    uint32_t ssrc;
    pbx_leg *leg;
    struct pbx_recorder *next;
} pbx_recorder;

typedef struct {
    pbx_leg *leg;
    int fd;
    short rtcp;
    short backlog;       /* read in batches: the socket had more than one packet queued */
    uint64_t last_loop;  /* worker loop of the last read */
} pbx_sock;

/* Field order follows the packet path, so that a packet touches few cache lines: first
 * what every received packet reads and writes, then configuration, then the cold rest. */
struct pbx_leg {
    pbx_sock rtp_tag, rtcp_tag, conn_tag;
    int rtp_fd, rtcp_fd;
    /* A second RTP socket on the same port, connected to the latched peer: the peer's
     * packets arrive on it (the kernel prefers the connected socket) and the relay sends
     * to the peer through it, with the route cached in the socket instead of looked up per
     * packet. Everything else still reaches rtp_fd, so counting and re-latching see it.
     * conn_ok: latched and the peer is conn_fd's address, so sends may use conn_fd. */
    int conn_fd, conn_ok, conn_fresh;
    int idx, latched, have_ssrc;
    uint32_t ssrc;
    pbx_session *sess;
    pbx_player *player;
    pbx_sockaddr peer;
    socklen_t peer_len;
    /* RFC 3550 A.1 sequence state */
    uint16_t max_seq;
    uint32_t cycles, base_seq, bad_seq, received;
    int32_t last_transit;
    int have_transit;
    double jitter;        /* timestamp units */
    int64_t lost_before;  /* loss of earlier SSRCs */
    /* counters, read by other threads */
    uint64_t packets, bytes, sent_packets, sent_bytes;
    int64_t lost, last_packet_ns, jitter_us;
    pbx_leg_conf conf;
    /* colder */
    uint64_t dropped_invalid, dropped_unlatched, dropped_other, rtcp_packets, rtcp_bytes;
    pbx_sockaddr rtcp_peer;
    socklen_t rtcp_peer_len;
    int rtcp_latched, port;
    int timed_out;
    int64_t timeout_ref_ns;
    pbx_recorder *rec;
    /* RFC 4733 end-of-event detection */
    int dtmf_active, dtmf_reported;
    uint32_t dtmf_ts;
    int dtmf_event, dtmf_vol;
    uint32_t dtmf_dur;
};

struct pbx_session {
    uint64_t id;
    pbx_leg leg[2];
    pbx_worker *w;
    pbx_session *prev, *next;
    int rtcp_mux;
};

enum { CMD_ADD = 1, CMD_CONF, CMD_DEL, CMD_PLAY, CMD_STOP_PLAY, CMD_REC, CMD_STOP_REC };

typedef struct pbx_cmd {
    int type, leg, wait, done;
    pbx_session *s;
    pbx_leg_conf conf;
    pbx_player *player;
    pbx_recorder *rec;
    int64_t result;
    struct pbx_cmd *next;
} pbx_cmd;

struct pbx_worker {
    pbx_relay *r;
    pthread_t thread;
    int started;
    int epfd, wakefd;
    int stop, stopped;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pbx_cmd *cmd_head, *cmd_tail;
    pbx_session *sessions;
    pbx_player *players;
    pbx_recorder *recorders;
    int64_t next_housekeep;
    /* receive batch */
    struct mmsghdr rmsg[PBX_BATCH];
    struct iovec riov[PBX_BATCH];
    pbx_sockaddr raddr[PBX_BATCH];
    uint8_t rbuf[PBX_BATCH][PBX_MAXPKT];
    /* send batch (iovecs point into rbuf or pbuf) */
    struct mmsghdr smsg[PBX_BATCH];
    struct iovec siov[PBX_BATCH];
    pbx_sockaddr saddr[PBX_BATCH];
    pbx_leg *sleg[PBX_BATCH];
    int sfd, scount;
    uint64_t loop;
    uint8_t pbuf[12 + PBX_FRAME_SAMPLES];
};

struct pbx_relay {
    int family;
    pbx_sockaddr bind_addr;
    socklen_t bind_len;
    pbx_codec_api codecs;
    int nworkers, running;
    int64_t spin_ns;  /* PBX_SPIN_NS, or 0 when the process may run on one CPU only */
    pbx_worker *workers;
    unsigned next_worker;
    /* port pool: slot i is RTP port lo + 2i, RTCP lo + 2i + 1 */
    pthread_mutex_t port_mu;
    int port_lo, nslots, cursor;
    uint8_t *port_used;
    /* Bound sockets of deleted sessions, kept for the next session (index: rtcp-mux):
     * reusing them saves socket()+bind() on setup and close() on teardown. A slot in the
     * pool stays marked used; stale datagrams are drained when it is handed out. */
    struct { int rtp_fd, rtcp_fd, port; } *pool[2];
    int pool_n[2];
    /* events */
    pthread_mutex_t ev_mu;
    pbx_event *ev;
    size_t ev_head, ev_count;
    int evfd;
    /* counters: live sessions, live ports, created, freed, events dropped, players, recs */
    int64_t live_sessions, live_ports, created, freed, events_dropped, live_players, live_recs;
    int64_t pooled_ports;
};

int64_t pbx_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void set_err(char *err, size_t errlen, const char *what, int e) {
    if (err && errlen) snprintf(err, errlen, "%s: %s", what, strerror(e));
}

int pbx_parse_addr(const char *host, int port, pbx_sockaddr *out, socklen_t *len) {
    memset(out, 0, sizeof(*out));
    if (port < 0 || port > 65535) return -1;
    struct sockaddr_in *a4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *len = sizeof(*a4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a6);
        return 0;
    }
    return -1;
}

int pbx_addr_family(const pbx_sockaddr *a) { return a->sa.sa_family; }

int pbx_format_addr(const pbx_sockaddr *a, char *host, size_t hostlen, int *port) {
    if (a->sa.sa_family == AF_INET) {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)a;
        inet_ntop(AF_INET, &a4->sin_addr, host, (socklen_t)hostlen);
        *port = ntohs(a4->sin_port);
        return 0;
    }
    if (a->sa.sa_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)a;
        inet_ntop(AF_INET6, &a6->sin6_addr, host, (socklen_t)hostlen);
        *port = ntohs(a6->sin6_port);
        return 0;
    }
    return -1;
}

static int addr_eq(const pbx_sockaddr *x, const pbx_sockaddr *y, int ports) {
    if (x->sa.sa_family != y->sa.sa_family) return 0;
    if (x->sa.sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)x, *b = (const struct sockaddr_in *)y;
        return a->sin_addr.s_addr == b->sin_addr.s_addr && (!ports || a->sin_port == b->sin_port);
    }
    if (x->sa.sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)x,
                                  *b = (const struct sockaddr_in6 *)y;
        return memcmp(&a->sin6_addr, &b->sin6_addr, 16) == 0 &&
               (!ports || a->sin6_port == b->sin6_port);
    }
    return 0;
}

static void addr_set_port(pbx_sockaddr *a, int port) {
    if (a->sa.sa_family == AF_INET) ((struct sockaddr_in *)a)->sin_port = htons((uint16_t)port);
    else if (a->sa.sa_family == AF_INET6) ((struct sockaddr_in6 *)a)->sin6_port = htons((uint16_t)port);
}

static int addr_port(const pbx_sockaddr *a) {
    if (a->sa.sa_family == AF_INET) return ntohs(((const struct sockaddr_in *)a)->sin_port);
    if (a->sa.sa_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
    return 0;
}

/* ---------------------------------------------------------------- events */

static void emit(pbx_relay *r, uint32_t type, pbx_leg *l, uint64_t a, uint64_t b, uint64_t c) {
    pbx_event e;
    e.type = type;
    e.leg = (uint32_t)l->idx;
    e.session_id = l->sess->id;
    e.a = a;
    e.b = b;
    e.c = c;
    e.mono_ns = pbx_now_ns();
    pthread_mutex_lock(&r->ev_mu);
    if (r->ev_count == PBX_EVENTS_CAP) {
        r->events_dropped++;
    } else {
        r->ev[(r->ev_head + r->ev_count) % PBX_EVENTS_CAP] = e;
        r->ev_count++;
    }
    pthread_mutex_unlock(&r->ev_mu);
    uint64_t one = 1;
    ssize_t rc = write(r->evfd, &one, sizeof(one));
    (void)rc;
}

size_t pbx_relay_drain(pbx_relay *r, pbx_event *out, size_t max) {
    uint64_t v;
    /* clear the eventfd first: an event pushed after the copy signals again */
    ssize_t rc = read(r->evfd, &v, sizeof(v));
    (void)rc;
    size_t n = 0;
    pthread_mutex_lock(&r->ev_mu);
    while (n < max && r->ev_count) {
        out[n++] = r->ev[r->ev_head];
        r->ev_head = (r->ev_head + 1) % PBX_EVENTS_CAP;
        r->ev_count--;
    }
    int more = r->ev_count > 0;
    pthread_mutex_unlock(&r->ev_mu);
    if (more) {
        uint64_t one = 1;
        rc = write(r->evfd, &one, sizeof(one));
    }
    return n;
}

int pbx_relay_wait(pbx_relay *r, int timeout_ms) {
    struct pollfd p = {.fd = r->evfd, .events = POLLIN};
    int rc = poll(&p, 1, timeout_ms);
    return rc > 0;
}

int pbx_relay_event_fd(const pbx_relay *r) { return r->evfd; }
int pbx_relay_family(const pbx_relay *r) { return r->family; }

void pbx_relay_counters(pbx_relay *r, int64_t out[9]) {
    out[0] = LOAD(r->live_sessions);
    out[1] = LOAD(r->live_ports);
    out[2] = LOAD(r->created);
    out[3] = LOAD(r->freed);
    pthread_mutex_lock(&r->ev_mu);
    out[4] = r->events_dropped;
    pthread_mutex_unlock(&r->ev_mu);
    out[5] = LOAD(r->live_players);
    out[6] = LOAD(r->live_recs);
    out[7] = r->nworkers;
    out[8] = LOAD(r->pooled_ports);
}

/* ---------------------------------------------------------------- ports */

static int open_sock(pbx_relay *r, int port) {
    int fd = socket(r->family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (r->family == AF_INET6) {
        int on = 1;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
    }
    pbx_sockaddr a = r->bind_addr;
    addr_set_port(&a, port);
    if (bind(fd, (struct sockaddr *)&a, r->bind_len) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* bind a leg's sockets on the next free even port; errno ENOSPC when the range is exhausted */
static void drain_stale(int fd) {
    uint8_t junk[16];
    while (SYS_RECVFROM(fd, junk, sizeof(junk), MSG_DONTWAIT, NULL, NULL) >= 0) {
    }
}

static int alloc_ports(pbx_relay *r, pbx_leg *l, int mux) {
    mux = mux ? 1 : 0;
    pthread_mutex_lock(&r->port_mu);
    if (r->pool_n[mux] > 0) {
        int k = --r->pool_n[mux];
        l->rtp_fd = r->pool[mux][k].rtp_fd;
        l->rtcp_fd = r->pool[mux][k].rtcp_fd;
        l->port = r->pool[mux][k].port;
        pthread_mutex_unlock(&r->port_mu);
        drain_stale(l->rtp_fd);
        if (l->rtcp_fd >= 0) drain_stale(l->rtcp_fd);
        CBUMP(r->pooled_ports, mux ? -1 : -2);
        CBUMP(r->live_ports, mux ? 1 : 2);
        return 0;
    }
    for (int tries = 0; tries < r->nslots; tries++) {
        int i = r->cursor;
        r->cursor = (r->cursor + 1) % r->nslots;
        if (r->port_used[i]) continue;
        int port = r->port_lo + 2 * i;
        int fd = open_sock(r, port);
        if (fd < 0) {
            if (errno == EADDRINUSE || errno == EACCES) continue;  /* someone else's port */
            int e = errno;
            pthread_mutex_unlock(&r->port_mu);
            errno = e;
            return -1;
        }
        int fd2 = -1;
        if (!mux) {
            fd2 = open_sock(r, port + 1);
            if (fd2 < 0) {
                close(fd);
                if (errno == EADDRINUSE || errno == EACCES) continue;
                int e = errno;
                pthread_mutex_unlock(&r->port_mu);
                errno = e;
                return -1;
            }
        }
        r->port_used[i] = 1;
        pthread_mutex_unlock(&r->port_mu);
        l->rtp_fd = fd;
        l->rtcp_fd = fd2;
        l->port = port;
        CBUMP(r->live_ports, mux ? 1 : 2);
        return 0;
    }
    if (r->pool_n[1 - mux] > 0) {
        /* the free ports sit in the other kind's pool: close those and look again */
        int n = 0;
        while (r->pool_n[1 - mux] > 0) {
            int k = --r->pool_n[1 - mux];
            close(r->pool[1 - mux][k].rtp_fd);
            n++;
            if (r->pool[1 - mux][k].rtcp_fd >= 0) { close(r->pool[1 - mux][k].rtcp_fd); n++; }
            r->port_used[(r->pool[1 - mux][k].port - r->port_lo) / 2] = 0;
        }
        CBUMP(r->pooled_ports, -n);
        pthread_mutex_unlock(&r->port_mu);
        return alloc_ports(r, l, mux);
    }
    pthread_mutex_unlock(&r->port_mu);
    errno = ENOSPC;
    return -1;
}

static void free_ports(pbx_relay *r, pbx_leg *l) {
    int n = 0;
    if (l->port && l->rtp_fd >= 0) {
        int mux = l->rtcp_fd < 0;
        pthread_mutex_lock(&r->port_mu);
        if (r->pool_n[mux] < PBX_POOL_CAP) {
            int k = r->pool_n[mux]++;
            r->pool[mux][k].rtp_fd = l->rtp_fd;
            r->pool[mux][k].rtcp_fd = l->rtcp_fd;
            r->pool[mux][k].port = l->port;
            pthread_mutex_unlock(&r->port_mu);
            n = mux ? 1 : 2;
            l->rtp_fd = l->rtcp_fd = -1;
            l->port = 0;
            CBUMP(r->live_ports, -n);
            CBUMP(r->pooled_ports, n);
            return;
        }
        pthread_mutex_unlock(&r->port_mu);
    }
    if (l->rtp_fd >= 0) { close(l->rtp_fd); l->rtp_fd = -1; n++; }
    if (l->rtcp_fd >= 0) { close(l->rtcp_fd); l->rtcp_fd = -1; n++; }
    if (l->port) {
        pthread_mutex_lock(&r->port_mu);
        r->port_used[(l->port - r->port_lo) / 2] = 0;
        pthread_mutex_unlock(&r->port_mu);
        l->port = 0;
    }
    CBUMP(r->live_ports, -n);
}

/* ---------------------------------------------------------------- relay */

pbx_relay *pbx_relay_new(const char *bind_host, int port_lo, int port_hi, int workers,
                         const pbx_codec_api *codecs, char *err, size_t errlen) {
    pbx_relay *r = calloc(1, sizeof(*r));
    if (!r) { set_err(err, errlen, "out of memory", ENOMEM); return NULL; }
    if (pbx_parse_addr(bind_host, 0, &r->bind_addr, &r->bind_len) < 0) {
        snprintf(err, errlen, "bind address %s is not a numeric IPv4/IPv6 address", bind_host);
        free(r);
        return NULL;
    }
    r->family = r->bind_addr.sa.sa_family;
    if (port_lo & 1) port_lo++;
    r->port_lo = port_lo;
    r->nslots = (port_hi - port_lo + 1) / 2;  /* RTP even, RTCP odd: both inside the range */
    if (port_lo < 1 || port_hi > 65535 || r->nslots < 1) {
        snprintf(err, errlen, "port range %d-%d holds no even/odd port pair", port_lo, port_hi);
        free(r);
        return NULL;
    }
    r->port_used = calloc((size_t)r->nslots, 1);
    r->pool[0] = calloc(PBX_POOL_CAP, sizeof(*r->pool[0]));
    r->pool[1] = calloc(PBX_POOL_CAP, sizeof(*r->pool[1]));
    r->ev = calloc(PBX_EVENTS_CAP, sizeof(pbx_event));
    r->nworkers = workers < 1 ? 1 : workers;
    r->workers = calloc((size_t)r->nworkers, sizeof(pbx_worker));
    r->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!r->port_used || !r->ev || !r->workers || r->evfd < 0 || !r->pool[0] || !r->pool[1]) {
        set_err(err, errlen, "relay allocation", errno ? errno : ENOMEM);
        if (r->evfd >= 0) close(r->evfd);
        free(r->port_used); free(r->ev); free(r->workers); free(r->pool[0]); free(r->pool[1]);
        free(r);
        return NULL;
    }
    r->codecs = *codecs;
    pthread_mutex_init(&r->port_mu, NULL);
    pthread_mutex_init(&r->ev_mu, NULL);
    for (int i = 0; i < r->nworkers; i++) {
        pbx_worker *w = &r->workers[i];
        w->r = r;
        w->epfd = w->wakefd = -1;
        pthread_mutex_init(&w->mu, NULL);
        pthread_cond_init(&w->cond, NULL);
    }
    return r;
}

/* ---------------------------------------------------------------- packet path */

/* Sent counters are bumped before the send and taken back if it fails: whoever receives
 * the packet must never read a counter that does not include it yet. */
static void count_sent(pbx_leg *l, size_t len, int sign) {
    BUMP(l->sent_packets, (uint64_t)(int64_t)sign);
    BUMP(l->sent_bytes, (uint64_t)((int64_t)sign * (int64_t)len));
    if (sign < 0) BUMP(l->dropped_other, 1);  /* e.g. ECONNREFUSED, EAGAIN: lose it */
}

static void flush_sends(pbx_worker *w) {
    for (int i = 0; i < w->scount; i++) count_sent(w->sleg[i], w->siov[i].iov_len, 1);
    /* A connected socket reports an ICMP error of an earlier packet on the next send,
     * which then did not go out; retrying once keeps the unconnected socket's behaviour
     * (errors from the network are not ours to count). */
    int retried = 0;
    if (w->scount == 1) {  /* sendto is cheaper than sendmmsg for one packet */
        struct msghdr *h = &w->smsg[0].msg_hdr;
        for (;;) {
            if (SYS_SENDTO(w->sfd, w->siov[0].iov_base, w->siov[0].iov_len, MSG_DONTWAIT,
                           (struct sockaddr *)h->msg_name, h->msg_namelen) >= 0)
                break;
            if (errno == ECONNREFUSED && !retried++) continue;
            count_sent(w->sleg[0], w->siov[0].iov_len, -1);
            break;
        }
        w->scount = 0;
        return;
    }
    int off = 0;
    while (off < w->scount) {
        int rc = SYS_SENDMMSG(w->sfd, w->smsg + off, (unsigned)(w->scount - off), MSG_DONTWAIT);
        if (rc < 0) {
            if (errno == EINTR) continue;
            if (errno == ECONNREFUSED && !retried++) continue;
            count_sent(w->sleg[off], w->siov[off].iov_len, -1);
            off++;
            continue;
        }
        off += rc;
    }
    w->scount = 0;
}

static void queue_send(pbx_worker *w, pbx_leg *out, int fd, void *buf, size_t len,
                       const pbx_sockaddr *to, socklen_t tolen) {
    if (w->scount && (fd != w->sfd || w->scount == PBX_BATCH)) flush_sends(w);
    int i = w->scount++;
    w->sfd = fd;
    w->siov[i].iov_base = buf;
    w->siov[i].iov_len = len;
    if (tolen) memcpy(&w->saddr[i], to, tolen);
    w->smsg[i].msg_hdr.msg_name = tolen ? &w->saddr[i] : NULL;
    w->smsg[i].msg_hdr.msg_namelen = tolen;
    w->smsg[i].msg_hdr.msg_iov = &w->siov[i];
    w->smsg[i].msg_hdr.msg_iovlen = 1;
    w->smsg[i].msg_hdr.msg_control = NULL;
    w->smsg[i].msg_hdr.msg_controllen = 0;
    w->smsg[i].msg_hdr.msg_flags = 0;
    w->sleg[i] = out;
}

/* where a leg sends RTP: the latched peer, else the SDP address; 0 = nowhere yet */
static int rtp_dest(pbx_leg *l, const pbx_sockaddr **to, socklen_t *len) {
    if (l->latched) { *to = &l->peer; *len = l->peer_len; return 1; }
    if (l->conf.remote.sa.sa_family != AF_UNSPEC) {
        *to = &l->conf.remote; *len = l->conf.remote_len; return 1;
    }
    return 0;
}

static int rtcp_dest(pbx_leg *l, const pbx_sockaddr **to, socklen_t *len) {
    if (l->conf.rtcp_mux) return rtp_dest(l, to, len);
    if (l->rtcp_latched) { *to = &l->rtcp_peer; *len = l->rtcp_peer_len; return 1; }
    if (l->conf.rtcp_remote.sa.sa_family != AF_UNSPEC) {
        *to = &l->conf.rtcp_remote; *len = l->conf.rtcp_remote_len; return 1;
    }
    return 0;
}

static void seq_init(pbx_leg *l, uint16_t seq) {
    l->lost_before = LOAD(l->lost);
    l->base_seq = seq;
    l->max_seq = seq;
    l->bad_seq = 65536 + 1;
    l->cycles = 0;
    l->received = 0;
    l->have_transit = 0;
}

static void seq_update(pbx_leg *l, uint16_t seq) {
    uint16_t udelta = (uint16_t)(seq - l->max_seq);
    if (udelta < MAX_DROPOUT) {
        if (seq < l->max_seq) l->cycles += 65536;
        l->max_seq = seq;
    } else if (udelta <= 65536 - MAX_MISORDER) {
        if (seq == l->bad_seq) {
            seq_init(l, seq);  /* the source restarted its sequence */
        } else {
            l->bad_seq = (uint32_t)((seq + 1) & 0xFFFF);
            return;
        }
    }
    /* else: duplicate or reordered, counted as received */
    l->received++;
    int64_t expected = (int64_t)l->cycles + l->max_seq - l->base_seq + 1;
    int64_t lost = expected - (int64_t)l->received;
    if (lost < 0) lost = 0;
    STORE(l->lost, l->lost_before + lost);
}

static void jitter_update(pbx_leg *l, uint32_t ts, int64_t now) {
    int32_t arrival = (int32_t)(uint32_t)(uint64_t)((double)now * 8e-9);  /* 8 kHz units */
    int32_t transit = (int32_t)((uint32_t)arrival - ts);
    if (l->have_transit) {
        int32_t d = transit - l->last_transit;
        if (d < 0) d = -d;
        l->jitter += ((double)d - l->jitter) / 16.0;
        STORE(l->jitter_us, (int64_t)(l->jitter * 125.0));  /* 8 kHz units -> us */
    }
    l->last_transit = transit;
    l->have_transit = 1;
}

static void dtmf_packet(pbx_relay *r, pbx_leg *l, const uint8_t *p, size_t n, uint32_t ts) {
    if (n < 4) return;
    int event = p[0], end = p[1] & 0x80, vol = p[1] & 0x3F;
    uint32_t dur = ((uint32_t)p[2] << 8) | p[3];
    if (!l->dtmf_active || ts != l->dtmf_ts) {
        /* a new event; if the previous one lost all its end packets report it now */
        if (l->dtmf_active && !l->dtmf_reported)
            emit(r, PBX_EV_DTMF, l, (uint64_t)l->dtmf_event, l->dtmf_dur / 8, (uint64_t)l->dtmf_vol);
        l->dtmf_active = 1;
        l->dtmf_reported = 0;
        l->dtmf_ts = ts;
        l->dtmf_dur = 0;
    }
    l->dtmf_event = event;
    l->dtmf_vol = vol;
    if (dur > l->dtmf_dur) l->dtmf_dur = dur;
    if (end && !l->dtmf_reported) {
        l->dtmf_reported = 1;  /* the two redundant end packets are ignored */
        emit(r, PBX_EV_DTMF, l, (uint64_t)event, l->dtmf_dur / 8, (uint64_t)vol);
    }
}

static void rec_packet(pbx_recorder *rc, pbx_relay *r, int codec, const uint8_t *p, size_t n,
                       uint16_t seq, uint32_t ts, uint32_t ssrc, int64_t now);

/* The leg latched (or re-latched) to l->peer: (re)connect its second socket there. Binding
 * the same port takes SO_REUSEPORT on both sockets, switched off again right after so that
 * nobody else can join the port; rtp_fd itself was bound without it, so port allocation
 * still sees every port in use. On any failure the leg keeps sending through rtp_fd. */
static void leg_connect(pbx_worker *w, pbx_leg *l) {
    pbx_relay *r = w->r;
    l->conn_ok = 0;
    if (l->conn_fd < 0) {
        int fd = socket(r->family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) return;
        int on = 1, off = 0;
        if (r->family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
        pbx_sockaddr a = r->bind_addr;
        addr_set_port(&a, l->port);
        setsockopt(l->rtp_fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
        int rc = bind(fd, (struct sockaddr *)&a, r->bind_len);
        setsockopt(l->rtp_fd, SOL_SOCKET, SO_REUSEPORT, &off, sizeof(off));
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &off, sizeof(off));
        struct epoll_event ev = {.events = EPOLLIN};
        ev.data.ptr = &l->conn_tag;
        if (rc < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            return;
        }
        l->conn_fd = fd;
        l->conn_tag.fd = fd;
    }
    if (connect(l->conn_fd, &l->peer.sa, l->peer_len) < 0) return;
    l->conn_ok = 1;
    l->conn_fresh = 1;  /* see handle_readable */
}

static void leg_disconnect(pbx_worker *w, pbx_leg *l) {
    l->conn_ok = 0;
    if (l->conn_fd < 0) return;
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, l->conn_fd, NULL);
    close(l->conn_fd);
    l->conn_fd = -1;
}

static void handle_rtcp(pbx_worker *w, pbx_leg *l, uint8_t *buf, size_t len,
                        const pbx_sockaddr *src, socklen_t srclen) {
    pbx_leg *o = &l->sess->leg[1 - l->idx];
    if (len < 8 || (buf[0] >> 6) != 2 || buf[1] < 192 || buf[1] > 223) {
        BUMP(l->dropped_invalid, 1);
        return;
    }
    if (l->conf.rtcp_mux) {
        if (!l->latched || !addr_eq(src, &l->peer, 1)) { BUMP(l->dropped_unlatched, 1); return; }
    } else if (!l->rtcp_latched) {
        if (l->conf.strict && l->conf.remote.sa.sa_family != AF_UNSPEC &&
            !addr_eq(src, &l->conf.remote, 0)) {
            BUMP(l->dropped_unlatched, 1);
            return;
        }
        memcpy(&l->rtcp_peer, src, srclen);
        l->rtcp_peer_len = srclen;
        l->rtcp_latched = 1;
    } else if (!addr_eq(src, &l->rtcp_peer, 1)) {
        BUMP(l->dropped_unlatched, 1);
        return;
    }
    BUMP(l->rtcp_packets, 1);
    BUMP(l->rtcp_bytes, len);
    const pbx_sockaddr *to;
    socklen_t tolen;
    int fd = o->conf.rtcp_mux ? o->rtp_fd : o->rtcp_fd;
    if (fd < 0 || !rtcp_dest(o, &to, &tolen)) { BUMP(l->dropped_other, 1); return; }
    queue_send(w, o, fd, buf, len, to, tolen);
}

static void handle_rtp(pbx_worker *w, pbx_leg *l, uint8_t *buf, size_t len,
                       const pbx_sockaddr *src, socklen_t srclen, int64_t now) {
    pbx_relay *r = w->r;
    if (l->conf.rtcp_mux && len >= 2 && buf[1] >= 192 && buf[1] <= 223) {  /* RFC 5761 demux */
        handle_rtcp(w, l, buf, len, src, srclen);
        return;
    }
    if (len < 12 || (buf[0] >> 6) != 2) { BUMP(l->dropped_invalid, 1); return; }
    size_t hlen = 12 + 4 * (size_t)(buf[0] & 0x0F);
    if (hlen > len) { BUMP(l->dropped_invalid, 1); return; }
    if (buf[0] & 0x10) {
        if (hlen + 4 > len) { BUMP(l->dropped_invalid, 1); return; }
        hlen += 4 + 4 * (size_t)((buf[hlen + 2] << 8) | buf[hlen + 3]);
        if (hlen > len) { BUMP(l->dropped_invalid, 1); return; }
    }
    size_t end = len;
    if (buf[0] & 0x20) {
        size_t pad = buf[len - 1];
        if (pad == 0 || hlen + pad > len) { BUMP(l->dropped_invalid, 1); return; }
        end = len - pad;
    }
    int pt = buf[1] & 0x7F;
    uint16_t seq = (uint16_t)((buf[2] << 8) | buf[3]);
    uint32_t ts = ((uint32_t)buf[4] << 24) | ((uint32_t)buf[5] << 16) | ((uint32_t)buf[6] << 8) | buf[7];
    uint32_t ssrc = ((uint32_t)buf[8] << 24) | ((uint32_t)buf[9] << 16) | ((uint32_t)buf[10] << 8) | buf[11];

    /* source check and symmetric latching */
    if (l->conf.strict && l->conf.remote.sa.sa_family != AF_UNSPEC && !addr_eq(src, &l->conf.remote, 0)) {
        BUMP(l->dropped_unlatched, 1);
        return;
    }
    if (!l->latched) {
        if (l->conf.latch) {
            memcpy(&l->peer, src, srclen);
            l->peer_len = srclen;
            STORE(l->latched, 1);
            leg_connect(w, l);
            emit(r, PBX_EV_LATCHED, l, 0, 0, 0);
        }
        if (!l->have_ssrc) {
            l->ssrc = ssrc;
            l->have_ssrc = 1;
            seq_init(l, seq);
        }
    } else if (!addr_eq(src, &l->peer, 1)) {
        if (l->conf.relatch && l->have_ssrc && ssrc != l->ssrc) {
            memcpy(&l->peer, src, srclen);
            l->peer_len = srclen;
            l->rtcp_latched = 0;
            leg_connect(w, l);
            emit(r, PBX_EV_SSRC_CHANGED, l, l->ssrc, ssrc, 1);
            l->ssrc = ssrc;
            seq_init(l, seq);
        } else {
            BUMP(l->dropped_unlatched, 1);
            return;
        }
    }
    if (!l->have_ssrc) {
        l->ssrc = ssrc;
        l->have_ssrc = 1;
        seq_init(l, seq);
    } else if (ssrc != l->ssrc) {
        emit(r, PBX_EV_SSRC_CHANGED, l, l->ssrc, ssrc, 0);
        l->ssrc = ssrc;
        seq_init(l, seq);
    }
    BUMP(l->packets, 1);
    BUMP(l->bytes, len);
    STORE(l->last_packet_ns, now);
    l->timed_out = 0;
    seq_update(l, seq);
    if (pt == l->conf.te_pt) {
        dtmf_packet(r, l, buf + hlen, end - hlen, ts);
    } else {
        jitter_update(l, ts, now);
        if (l->rec && pt == l->conf.pt)
            rec_packet(l->rec, r, l->conf.codec, buf + hlen, end - hlen, seq, ts, ssrc, now);
    }

    pbx_leg *o = &l->sess->leg[1 - l->idx];
    const pbx_sockaddr *to;
    socklen_t tolen;
    if (o->player) { BUMP(l->dropped_other, 1); return; }  /* the prompt owns that leg */
    if (!rtp_dest(o, &to, &tolen)) { BUMP(l->dropped_other, 1); return; }
    if (pt == l->conf.pt && l->conf.codec && o->conf.codec && l->conf.codec != o->conf.codec) {
        uint8_t *p = buf + hlen;
        ssize_t n = (ssize_t)(end - hlen);
        if (l->conf.codec == PBX_CODEC_PCMU) r->codecs.ulaw2alaw(p, n, p);
        else r->codecs.alaw2ulaw(p, n, p);
        buf[1] = (uint8_t)((buf[1] & 0x80) | (o->conf.pt & 0x7F));
    } else if (pt == l->conf.te_pt && o->conf.te_pt >= 0 && o->conf.te_pt != pt) {
        buf[1] = (uint8_t)((buf[1] & 0x80) | (o->conf.te_pt & 0x7F));  /* payload untouched */
    }
    if (o->conn_ok) queue_send(w, o, o->conn_fd, buf, len, NULL, 0);  /* to == o->peer */
    else queue_send(w, o, o->rtp_fd, buf, len, to, tolen);
}

static void init_batches(pbx_worker *w) {
    for (int i = 0; i < PBX_BATCH; i++) {
        w->riov[i].iov_base = w->rbuf[i];
        w->riov[i].iov_len = PBX_MAXPKT;
        memset(&w->rmsg[i].msg_hdr, 0, sizeof(w->rmsg[i].msg_hdr));
        w->rmsg[i].msg_hdr.msg_name = &w->raddr[i];
        w->rmsg[i].msg_hdr.msg_namelen = sizeof(w->raddr[i]);
        w->rmsg[i].msg_hdr.msg_iov = &w->riov[i];
        w->rmsg[i].msg_hdr.msg_iovlen = 1;
    }
}

static void handle_readable(pbx_worker *w, pbx_sock *sk, int64_t now) {
    pbx_leg *l = sk->leg;
    int fd = sk->fd;
    int n, drain = 0;
again:
    /* Level-triggered. At 50 pps per stream a wake-up finds one packet on a socket, and a
     * plain recvmsg costs less than recvmmsg (which also probes for a second datagram).
     * A socket that filled its last read, or is readable again on the very next loop,
     * has a backlog: it is read in batches of PBX_BATCH until that stops. */
    if (sk->backlog) {
        n = SYS_RECVMMSG(fd, w->rmsg, PBX_BATCH, MSG_DONTWAIT);
    } else {
        /* recvfrom, not recvmsg: no msghdr/iovec to copy in; MSG_TRUNC returns the real
         * length, so an oversized datagram is still recognised */
        struct msghdr *h = &w->rmsg[0].msg_hdr;
        ssize_t len = SYS_RECVFROM(fd, w->rbuf[0], PBX_MAXPKT, MSG_DONTWAIT | MSG_TRUNC,
                               (struct sockaddr *)&w->raddr[0], &h->msg_namelen);
        n = len < 0 ? -1 : 1;
        if (n == 1) {
            if (len > PBX_MAXPKT) h->msg_flags |= MSG_TRUNC;
            w->rmsg[0].msg_len = (unsigned)len;
        }
    }
    sk->backlog = (n > 1) || (n == 1 && sk->last_loop + 1 == w->loop);
    sk->last_loop = w->loop;
    if (n <= 0) return;
    for (int i = 0; i < n; i++) {
        struct msghdr *h = &w->rmsg[i].msg_hdr;
        size_t len = w->rmsg[i].msg_len;
        socklen_t alen = h->msg_namelen;
        int trunc = h->msg_flags & MSG_TRUNC;
        h->msg_namelen = sizeof(w->raddr[i]);  /* reset for the next read */
        h->msg_flags = 0;
        if (trunc) { BUMP(l->dropped_invalid, 1); continue; }
        if (sk->rtcp) handle_rtcp(w, l, w->rbuf[i], len, &w->raddr[i], alen);
        else handle_rtp(w, l, w->rbuf[i], len, &w->raddr[i], alen, now);
    }
    flush_sends(w);  /* the buffers are reused by the next read */
    if (l->conn_fresh) {
        /* The leg just connected: from now on its peer's packets arrive on conn_fd. Read
         * what is still queued here first, so that the peer's packets keep their order. */
        l->conn_fresh = 0;
        if (sk == &l->rtp_tag) drain = 64;  /* batches at most: a flood cannot hold us */
    }
    if (drain-- > 0) {
        sk->backlog = 1;
        goto again;
    }
}

/* ---------------------------------------------------------------- player */

static void player_unlink(pbx_worker *w, pbx_player *p) {
    pbx_player **pp = &w->players;
    while (*pp && *pp != p) pp = &(*pp)->next;
    if (*pp) *pp = p->next;
}

static void player_end(pbx_worker *w, pbx_leg *l, int stopped) {
    pbx_player *p = l->player;
    if (!p) return;
    player_unlink(w, p);
    l->player = NULL;
    emit(w->r, PBX_EV_PLAYER_DONE, l, p->id, p->frames, (uint64_t)stopped);
    free(p->pcm);
    free(p);
    CBUMP(w->r->live_players, -1);
}

static void players_tick(pbx_worker *w, int64_t now) {
    pbx_player *p = w->players;
    while (p) {
        pbx_player *next = p->next;
        pbx_leg *l = p->leg;
        int done = 0;
        while (now >= p->next_ns) {
            if (p->pos >= p->n) {
                if (p->loops > 1 || p->loops == 0) {
                    if (p->loops > 1) p->loops--;
                    p->pos = 0;
                } else {
                    done = 1;
                    break;
                }
            }
            int16_t frame[PBX_FRAME_SAMPLES];
            size_t take = p->n - p->pos;
            if (take > PBX_FRAME_SAMPLES) take = PBX_FRAME_SAMPLES;
            memcpy(frame, p->pcm + p->pos, take * 2);
            if (take < PBX_FRAME_SAMPLES) memset(frame + take, 0, (PBX_FRAME_SAMPLES - take) * 2);
            p->pos += take;
            uint8_t *b = w->pbuf;
            int pt = l->conf.codec ? l->conf.pt : 0;
            b[0] = 0x80;
            b[1] = (uint8_t)((p->frames == 0 ? 0x80 : 0) | (pt & 0x7F));
            b[2] = (uint8_t)(p->seq >> 8); b[3] = (uint8_t)p->seq;
            b[4] = (uint8_t)(p->ts >> 24); b[5] = (uint8_t)(p->ts >> 16);
            b[6] = (uint8_t)(p->ts >> 8); b[7] = (uint8_t)p->ts;
            b[8] = (uint8_t)(p->ssrc >> 24); b[9] = (uint8_t)(p->ssrc >> 16);
            b[10] = (uint8_t)(p->ssrc >> 8); b[11] = (uint8_t)p->ssrc;
            if (l->conf.codec == PBX_CODEC_PCMA) w->r->codecs.lin2alaw(frame, PBX_FRAME_SAMPLES, b + 12);
            else w->r->codecs.lin2ulaw(frame, PBX_FRAME_SAMPLES, b + 12);
            const pbx_sockaddr *to;
            socklen_t tolen;
            if (rtp_dest(l, &to, &tolen)) {
                count_sent(l, 12 + PBX_FRAME_SAMPLES, 1);
                if (sendto(l->rtp_fd, b, 12 + PBX_FRAME_SAMPLES, MSG_DONTWAIT,
                           (const struct sockaddr *)to, tolen) < 0)
                    count_sent(l, 12 + PBX_FRAME_SAMPLES, -1);
            }
            p->seq++;
            p->ts += PBX_FRAME_SAMPLES;
            p->frames++;
            p->next_ns += PBX_FRAME_NS;
        }
        if (done) player_end(w, l, 0);
        p = next;
    }
}

/* ---------------------------------------------------------------- recorder */

static void wav_header(FILE *f, uint32_t data_bytes) {
    uint8_t h[44];
    uint32_t riff = 36 + data_bytes;
    memcpy(h, "RIFF", 4);
    h[4] = riff & 0xFF; h[5] = (riff >> 8) & 0xFF; h[6] = (riff >> 16) & 0xFF; h[7] = riff >> 24;
    memcpy(h + 8, "WAVEfmt ", 8);
    static const uint8_t fmt[20] = {16, 0, 0, 0, 1, 0, 1, 0, 0x40, 0x1F, 0, 0,
                                    0x80, 0x3E, 0, 0, 2, 0, 16, 0};  /* PCM mono 8 kHz 16-bit */
    memcpy(h + 16, fmt, 20);
    memcpy(h + 36, "data", 4);
    h[40] = data_bytes & 0xFF; h[41] = (data_bytes >> 8) & 0xFF;
    h[42] = (data_bytes >> 16) & 0xFF; h[43] = data_bytes >> 24;
    fseek(f, 0, SEEK_SET);
    fwrite(h, 1, 44, f);
}

static void rec_write(pbx_recorder *rc, const int16_t *pcm, size_t n) {
    int16_t le[PBX_MAXPKT];
    while (n) {
        size_t k = n > PBX_MAXPKT ? PBX_MAXPKT : n;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        for (size_t i = 0; i < k; i++) le[i] = (int16_t)__builtin_bswap16((uint16_t)pcm[i]);
#else
        memcpy(le, pcm, k * 2);
#endif
        fwrite(le, 2, k, rc->f);
        rc->samples += k;
        pcm += k;
        n -= k;
    }
}

static void rec_packet(pbx_recorder *rc, pbx_relay *r, int codec, const uint8_t *p, size_t n,
                       uint16_t seq, uint32_t ts, uint32_t ssrc, int64_t now) {
    if (n == 0 || n > PBX_MAXPKT) return;
    if (rc->has_be) {
        rc->be.put(rc->be.ctx, p, n, codec, seq, ts, ssrc, now);
        if (!rc->started) { rc->started = 1; rc->next_ns = now; }
        return;
    }
    /* built-in arrival-order path: gaps become silence, late packets are dropped */
    if (!rc->have_ts || ssrc != rc->ssrc) {
        rc->have_ts = 1;
        rc->ssrc = ssrc;
        rc->next_ts = ts;
    }
    int32_t d = (int32_t)(ts - rc->next_ts);
    if (d < 0) return;
    if (d > 0 && d <= 16000) {
        int16_t zero[PBX_FRAME_SAMPLES] = {0};
        while (d > 0) {
            int k = d > PBX_FRAME_SAMPLES ? PBX_FRAME_SAMPLES : d;
            rec_write(rc, zero, (size_t)k);
            d -= k;
        }
    }
    int16_t pcm[PBX_MAXPKT];
    if (codec == PBX_CODEC_PCMA) r->codecs.alaw2lin(p, (ssize_t)n, pcm);
    else r->codecs.ulaw2lin(p, (ssize_t)n, pcm);
    rec_write(rc, pcm, n);
    rc->next_ts = ts + (uint32_t)n;
}

static void recorders_tick(pbx_worker *w, int64_t now) {
    for (pbx_recorder *rc = w->recorders; rc; rc = rc->next) {
        if (!rc->has_be || !rc->started) continue;
        while (now >= rc->next_ns) {
            int16_t frame[PBX_FRAME_SAMPLES];
            /* each tick at its scheduled time: after a stall, catching up with `now` for
               every missed tick would look like too little delay and make the jitter
               buffer conceal and grow */
            rc->be.get(rc->be.ctx, frame, rc->next_ns);
            rec_write(rc, frame, PBX_FRAME_SAMPLES);
            rc->next_ns += PBX_FRAME_NS;
        }
    }
}

static int64_t rec_end(pbx_worker *w, pbx_leg *l) {
    pbx_recorder *rc = l->rec;
    if (!rc) return -1;
    pbx_recorder **pp = &w->recorders;
    while (*pp && *pp != rc) pp = &(*pp)->next;
    if (*pp) *pp = rc->next;
    l->rec = NULL;
    int64_t samples = (int64_t)rc->samples;
    wav_header(rc->f, (uint32_t)(rc->samples * 2));
    fclose(rc->f);
    if (rc->has_be && rc->be.release) rc->be.release(rc->be.ctx);
    free(rc);
    CBUMP(w->r->live_recs, -1);
    return samples;
}

/* ---------------------------------------------------------------- commands */

static void apply_conf(pbx_leg *l, const pbx_leg_conf *c, int64_t now) {
    uint32_t m = c->mask;
    if (m & PBX_CONF_REMOTE) {
        if (!(l->conf.remote.sa.sa_family == c->remote.sa.sa_family && addr_eq(&l->conf.remote, &c->remote, 1))) {
            /* a new SDP address (re-INVITE): learn the peer again */
            STORE(l->latched, 0);
            l->conn_ok = 0;  /* conn_fd stays connected until the next latch: harmless */
            l->rtcp_latched = 0;
        }
        l->conf.remote = c->remote;
        l->conf.remote_len = c->remote_len;
        if (!(m & PBX_CONF_RTCP_REMOTE) && c->remote.sa.sa_family != AF_UNSPEC) {
            l->conf.rtcp_remote = c->remote;
            l->conf.rtcp_remote_len = c->remote_len;
            addr_set_port(&l->conf.rtcp_remote, addr_port(&c->remote) + 1);
        }
    }
    if (m & PBX_CONF_RTCP_REMOTE) {
        l->conf.rtcp_remote = c->rtcp_remote;
        l->conf.rtcp_remote_len = c->rtcp_remote_len;
    }
    if (m & PBX_CONF_CODEC) { l->conf.codec = c->codec; l->conf.pt = c->pt; }
    if (m & PBX_CONF_TE_PT) l->conf.te_pt = c->te_pt;
    if (m & PBX_CONF_STRICT) l->conf.strict = c->strict;
    if (m & PBX_CONF_RELATCH) l->conf.relatch = c->relatch;
    if (m & PBX_CONF_LATCH) l->conf.latch = c->latch;
    if (m & PBX_CONF_TIMEOUT) {
        l->conf.timeout_ms = c->timeout_ms;
        l->timeout_ref_ns = now;
        l->timed_out = 0;
    }
}

static void session_free(pbx_worker *w, pbx_session *s) {
    for (int i = 0; i < 2; i++) {
        pbx_leg *l = &s->leg[i];
        if (l->player) player_end(w, l, 1);
        if (l->rec) rec_end(w, l);
        leg_disconnect(w, l);
        if (l->rtp_fd >= 0) epoll_ctl(w->epfd, EPOLL_CTL_DEL, l->rtp_fd, NULL);
        if (l->rtcp_fd >= 0) epoll_ctl(w->epfd, EPOLL_CTL_DEL, l->rtcp_fd, NULL);
        free_ports(w->r, l);
    }
    if (s->prev) s->prev->next = s->next;
    else if (w->sessions == s) w->sessions = s->next;
    if (s->next) s->next->prev = s->prev;
#ifdef PBX_DEBUG
    memset(s, 0xA5, sizeof(*s));  /* poison: a use after free shows up in tests */
#endif
    free(s);
    CBUMP(w->r->live_sessions, -1);
    CBUMP(w->r->freed, 1);
}

static void apply_cmd(pbx_worker *w, pbx_cmd *c) {
    pbx_session *s = c->s;
    int64_t now = pbx_now_ns();
    c->result = 0;
    switch (c->type) {
    case CMD_ADD:
        s->next = w->sessions;
        s->prev = NULL;
        if (w->sessions) w->sessions->prev = s;
        w->sessions = s;
        for (int i = 0; i < 2; i++) {
            pbx_leg *l = &s->leg[i];
            struct epoll_event ev = {.events = EPOLLIN};
            l->rtp_tag.fd = l->rtp_fd;
            l->rtcp_tag.fd = l->rtcp_fd;
            ev.data.ptr = &l->rtp_tag;
            epoll_ctl(w->epfd, EPOLL_CTL_ADD, l->rtp_fd, &ev);
            if (l->rtcp_fd >= 0) {
                ev.data.ptr = &l->rtcp_tag;
                epoll_ctl(w->epfd, EPOLL_CTL_ADD, l->rtcp_fd, &ev);
            }
            l->timeout_ref_ns = now;
        }
        break;
    case CMD_CONF:
        apply_conf(&s->leg[c->leg], &c->conf, now);
        break;
    case CMD_DEL:
        session_free(w, s);
        break;
    case CMD_PLAY: {
        pbx_leg *l = &s->leg[c->leg];
        if (l->player) player_end(w, l, 1);
        pbx_player *p = c->player;
        p->leg = l;
        p->next_ns = now;
        p->next = w->players;
        w->players = p;
        l->player = p;
        break;
    }
    case CMD_STOP_PLAY: {
        pbx_leg *l = &s->leg[c->leg];
        c->result = l->player ? 1 : 0;
        player_end(w, l, 1);
        break;
    }
    case CMD_REC: {
        pbx_leg *l = &s->leg[c->leg];
        if (l->rec) rec_end(w, l);
        pbx_recorder *rc = c->rec;
        rc->leg = l;
        rc->next = w->recorders;
        w->recorders = rc;
        l->rec = rc;
        break;
    }
    case CMD_STOP_REC:
        c->result = rec_end(w, &s->leg[c->leg]);
        break;
    }
}

/* run the queued commands; returns after all are applied */
static void run_cmds(pbx_worker *w) {
    pthread_mutex_lock(&w->mu);
    pbx_cmd *c = w->cmd_head;
    w->cmd_head = w->cmd_tail = NULL;
    pthread_mutex_unlock(&w->mu);
    while (c) {
        pbx_cmd *next = c->next;
        apply_cmd(w, c);
        if (c->wait) {
            pthread_mutex_lock(&w->mu);
            __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);  /* c is not touched after */
            pthread_cond_broadcast(&w->cond);
            pthread_mutex_unlock(&w->mu);
        } else {
            free(c);
        }
        c = next;
    }
}

static int submit(pbx_worker *w, pbx_cmd *c) {
    c->next = NULL;
    c->done = 0;
    pthread_mutex_lock(&w->mu);
    if (w->stopped || !w->started) {
        pthread_mutex_unlock(&w->mu);
        errno = ESHUTDOWN;
        return -1;
    }
    if (w->cmd_tail) w->cmd_tail->next = c;
    else w->cmd_head = c;
    w->cmd_tail = c;
    pthread_mutex_unlock(&w->mu);
    uint64_t one = 1;
    ssize_t rc = write(w->wakefd, &one, sizeof(one));
    (void)rc;
    if (c->wait) {
        /* A command takes the worker a few microseconds; spinning that long first saves
         * the caller a sleep and a wake-up, which cost more than the command itself. On a
         * single CPU the worker cannot run while we spin: then sleep at once. */
        int64_t spin = w->r->spin_ns;
        int64_t until = spin ? pbx_now_ns() + spin : 0;
        while (spin && !__atomic_load_n(&c->done, __ATOMIC_ACQUIRE) && pbx_now_ns() < until) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
        if (!__atomic_load_n(&c->done, __ATOMIC_ACQUIRE)) {
            pthread_mutex_lock(&w->mu);
            while (!__atomic_load_n(&c->done, __ATOMIC_ACQUIRE)) pthread_cond_wait(&w->cond, &w->mu);
            pthread_mutex_unlock(&w->mu);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- worker */

static void housekeep(pbx_worker *w, int64_t now) {
    for (pbx_session *s = w->sessions; s; s = s->next) {
        for (int i = 0; i < 2; i++) {
            pbx_leg *l = &s->leg[i];
            if (!l->conf.timeout_ms || l->timed_out) continue;
            int64_t last = LOAD(l->last_packet_ns);
            int64_t ref = last > l->timeout_ref_ns ? last : l->timeout_ref_ns;
            if (now - ref >= (int64_t)l->conf.timeout_ms * 1000000LL) {
                l->timed_out = 1;
                emit(w->r, PBX_EV_TIMEOUT, l, l->conf.timeout_ms, 0, 0);
            }
        }
    }
}

static void *worker_main(void *arg) {
    pbx_worker *w = arg;
    struct epoll_event evs[256];
    static int wake_tag;
    struct epoll_event wev = {.events = EPOLLIN};
    wev.data.ptr = &wake_tag;
    epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wakefd, &wev);
    w->next_housekeep = pbx_now_ns() + PBX_HOUSEKEEP_NS;
    init_batches(w);
    for (;;) {
        w->loop++;
        int64_t now = pbx_now_ns();
        int64_t deadline = w->next_housekeep;
        for (pbx_player *p = w->players; p; p = p->next)
            if (p->next_ns < deadline) deadline = p->next_ns;
        for (pbx_recorder *rc = w->recorders; rc; rc = rc->next)
            if (rc->has_be && rc->started && rc->next_ns < deadline) deadline = rc->next_ns;
        int timeout = deadline <= now ? 0 : (int)((deadline - now + 999999) / 1000000);
        int n = epoll_wait(w->epfd, evs, 256, timeout);
        now = pbx_now_ns();
        int wake = 0;
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &wake_tag) wake = 1;
            else handle_readable(w, evs[i].data.ptr, now);
        }
        if (w->players) players_tick(w, now);
        if (w->recorders) recorders_tick(w, now);
        if (now >= w->next_housekeep) {
            housekeep(w, now);
            w->next_housekeep = now + PBX_HOUSEKEEP_NS;
        }
        /* commands only between batches: no event of this batch can name a freed session */
        if (wake) {
            uint64_t v;
            ssize_t rc = read(w->wakefd, &v, sizeof(v));
            (void)rc;
            run_cmds(w);
        }
        if (__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) break;
    }
    pthread_mutex_lock(&w->mu);
    w->stopped = 1;  /* submit() refuses from now on */
    pthread_mutex_unlock(&w->mu);
    run_cmds(w);
    while (w->sessions) session_free(w, w->sessions);
    return NULL;
}

int pbx_relay_start(pbx_relay *r, char *err, size_t errlen) {
    if (r->running) return 0;
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    int ncpu = sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? CPU_COUNT(&cpus) : 2;
    r->spin_ns = ncpu > 1 ? PBX_SPIN_NS : 0;
    for (int i = 0; i < r->nworkers; i++) {
        pbx_worker *w = &r->workers[i];
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (w->epfd < 0 || w->wakefd < 0) {
            set_err(err, errlen, "worker setup", errno);
            pbx_relay_stop(r);
            return -1;
        }
        w->stop = 0;
        w->stopped = 0;
        w->started = 1;
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc) {
            w->started = 0;
            set_err(err, errlen, "pthread_create", rc);
            pbx_relay_stop(r);
            return -1;
        }
    }
    r->running = 1;
    return 0;
}

void pbx_relay_stop(pbx_relay *r) {
    for (int i = 0; i < r->nworkers; i++) {
        pbx_worker *w = &r->workers[i];
        if (w->started) {
            __atomic_store_n(&w->stop, 1, __ATOMIC_RELEASE);
            uint64_t one = 1;
            ssize_t rc = write(w->wakefd, &one, sizeof(one));
            (void)rc;
            pthread_join(w->thread, NULL);
            w->started = 0;
        }
        if (w->epfd >= 0) close(w->epfd);
        if (w->wakefd >= 0) close(w->wakefd);
        w->epfd = w->wakefd = -1;
    }
    r->running = 0;
}

void pbx_relay_free(pbx_relay *r) {
    if (!r) return;
    pbx_relay_stop(r);
#ifdef PBX_DEBUG
    /* leak check of the debug build: stopping the relay must have released everything */
    if (LOAD(r->live_sessions) || LOAD(r->live_ports) || LOAD(r->live_players) ||
        LOAD(r->live_recs) || LOAD(r->created) != LOAD(r->freed)) {
        fprintf(stderr, "pbxcore PBX_DEBUG: relay leak: sessions=%lld ports=%lld players=%lld "
                "recorders=%lld created=%lld freed=%lld\n", (long long)r->live_sessions,
                (long long)r->live_ports, (long long)r->live_players, (long long)r->live_recs,
                (long long)r->created, (long long)r->freed);
        abort();
    }
#endif
    for (int i = 0; i < r->nworkers; i++) {
        pthread_mutex_destroy(&r->workers[i].mu);
        pthread_cond_destroy(&r->workers[i].cond);
    }
    close(r->evfd);
    pthread_mutex_destroy(&r->port_mu);
    pthread_mutex_destroy(&r->ev_mu);
    for (int m = 0; m < 2; m++) {
        for (int k = 0; k < r->pool_n[m]; k++) {
            close(r->pool[m][k].rtp_fd);
            if (r->pool[m][k].rtcp_fd >= 0) close(r->pool[m][k].rtcp_fd);
        }
        free(r->pool[m]);
    }
    free(r->port_used);
    free(r->ev);
    free(r->workers);
    free(r);
}

/* ---------------------------------------------------------------- session API */

pbx_session *pbx_session_new(pbx_relay *r, uint64_t id, int rtcp_mux, char *err, size_t errlen) {
    if (!r->running) {
        snprintf(err, errlen, "relay is not running");
        errno = ESHUTDOWN;
        return NULL;
    }
    pbx_session *s = calloc(1, sizeof(*s));
    if (!s) { set_err(err, errlen, "session allocation", ENOMEM); return NULL; }
    s->id = id;
    s->rtcp_mux = rtcp_mux;
    for (int i = 0; i < 2; i++) {
        pbx_leg *l = &s->leg[i];
        l->idx = i;
        l->sess = s;
        l->rtp_fd = l->rtcp_fd = l->conn_fd = -1;
        l->rtp_tag.leg = l;
        l->rtp_tag.rtcp = 0;
        l->rtcp_tag.leg = l;
        l->rtcp_tag.rtcp = 1;
        l->conn_tag.leg = l;
        l->conn_tag.rtcp = 0;
        l->conf.latch = 1;
        l->conf.te_pt = -1;
        l->conf.rtcp_mux = rtcp_mux;
        l->conf.remote.sa.sa_family = AF_UNSPEC;
        l->conf.rtcp_remote.sa.sa_family = AF_UNSPEC;
        if (alloc_ports(r, l, rtcp_mux) < 0) {
            int e = errno;
            if (e == ENOSPC)
                snprintf(err, errlen, "RTP port range %d-%d is exhausted", r->port_lo,
                         r->port_lo + 2 * r->nslots - 1);
            else
                set_err(err, errlen, "RTP socket", e);
            if (i == 1) free_ports(r, &s->leg[0]);
            free(s);
            errno = e;
            return NULL;
        }
    }
    pbx_worker *w = &r->workers[__atomic_fetch_add(&r->next_worker, 1, __ATOMIC_RELAXED) % r->nworkers];
    s->w = w;
    CBUMP(r->live_sessions, 1);
    CBUMP(r->created, 1);
    pbx_cmd *c = calloc(1, sizeof(*c));
    if (!c) {
        free_ports(r, &s->leg[0]);
        free_ports(r, &s->leg[1]);
        free(s);
        CBUMP(r->live_sessions, -1);
        CBUMP(r->freed, 1);
        set_err(err, errlen, "command allocation", ENOMEM);
        return NULL;
    }
    c->type = CMD_ADD;
    c->s = s;
    c->wait = 0;  /* later commands queue behind it, so no need to wait */
    if (submit(w, c) < 0) {
        free(c);
        free_ports(r, &s->leg[0]);
        free_ports(r, &s->leg[1]);
        free(s);
        CBUMP(r->live_sessions, -1);
        CBUMP(r->freed, 1);
        snprintf(err, errlen, "relay is not running");
        errno = ESHUTDOWN;
        return NULL;
    }
    return s;
}

int pbx_session_port(const pbx_session *s, int leg) { return s->leg[leg & 1].port; }

static int run_sync(pbx_session *s, pbx_cmd *c) {
    c->wait = 1;
    c->s = s;
    return submit(s->w, c);
}

int pbx_session_configure(pbx_relay *r, pbx_session *s, int leg, const pbx_leg_conf *conf) {
    (void)r;
    pbx_cmd c = {0};
    c.type = CMD_CONF;
    c.leg = leg & 1;
    c.conf = *conf;
    return run_sync(s, &c);
}

int pbx_session_delete(pbx_relay *r, pbx_session *s) {
    (void)r;
    pbx_cmd c = {0};
    c.type = CMD_DEL;
    return run_sync(s, &c);
}

void pbx_session_stats(const pbx_session *s, int leg, pbx_leg_stats *o) {
    pbx_leg *l = (pbx_leg *)&s->leg[leg & 1];
    memset(o, 0, sizeof(*o));
    o->packets = LOAD(l->packets);
    o->bytes = LOAD(l->bytes);
    o->dropped_invalid = LOAD(l->dropped_invalid);
    o->dropped_unlatched = LOAD(l->dropped_unlatched);
    o->dropped_other = LOAD(l->dropped_other);
    o->sent_packets = LOAD(l->sent_packets);
    o->sent_bytes = LOAD(l->sent_bytes);
    o->rtcp_packets = LOAD(l->rtcp_packets);
    o->rtcp_bytes = LOAD(l->rtcp_bytes);
    o->lost = LOAD(l->lost);
    o->jitter_ms = (double)LOAD(l->jitter_us) / 1000.0;
    o->last_packet_ns = LOAD(l->last_packet_ns);
    o->ssrc = LOAD(l->ssrc);
    o->latched = LOAD(l->latched);
    if (o->latched) {
        o->peer = l->peer;  /* may race with a re-latch: informational only */
        o->peer_len = l->peer_len;
    }
}

int pbx_session_play(pbx_relay *r, pbx_session *s, int leg, const int16_t *pcm, size_t n,
                     uint64_t player_id, int loops) {
    pbx_player *p = calloc(1, sizeof(*p));
    if (!p) return -1;
    p->pcm = malloc(n ? n * 2 : 2);
    if (!p->pcm) { free(p); return -1; }
    if (n) memcpy(p->pcm, pcm, n * 2);
    p->n = n;
    p->id = player_id;
    p->loops = loops;
    uint32_t seed = (uint32_t)(pbx_now_ns() ^ (int64_t)(uintptr_t)p ^ (int64_t)player_id);
    seed ^= seed << 13; seed ^= seed >> 17; seed ^= seed << 5;
    p->ssrc = seed;
    p->seq = (uint16_t)(seed >> 7);
    p->ts = seed * 2654435761u;
    CBUMP(r->live_players, 1);
    pbx_cmd c = {0};
    c.type = CMD_PLAY;
    c.leg = leg & 1;
    c.player = p;
    if (run_sync(s, &c) < 0) {
        free(p->pcm);
        free(p);
        CBUMP(r->live_players, -1);
        return -1;
    }
    return 0;
}

int pbx_session_stop_play(pbx_relay *r, pbx_session *s, int leg) {
    (void)r;
    pbx_cmd c = {0};
    c.type = CMD_STOP_PLAY;
    c.leg = leg & 1;
    if (run_sync(s, &c) < 0) return -1;
    return (int)c.result;
}

int pbx_session_record(pbx_relay *r, pbx_session *s, int leg, const char *path,
                       const pbx_rec_backend *backend, char *err, size_t errlen) {
    pbx_recorder *rc = calloc(1, sizeof(*rc));
    if (!rc) { set_err(err, errlen, "recorder allocation", ENOMEM); return -1; }
    rc->f = fopen(path, "w+b");
    if (!rc->f) {
        set_err(err, errlen, path, errno);
        free(rc);
        return -1;
    }
    wav_header(rc->f, 0);
    if (backend) {
        rc->be = *backend;
        rc->has_be = 1;
    }
    CBUMP(r->live_recs, 1);
    pbx_cmd c = {0};
    c.type = CMD_REC;
    c.leg = leg & 1;
    c.rec = rc;
    if (run_sync(s, &c) < 0) {
        fclose(rc->f);
        free(rc);
        CBUMP(r->live_recs, -1);
        snprintf(err, errlen, "relay is not running");
        return -1;
    }
    return 0;
}

int64_t pbx_session_stop_record(pbx_relay *r, pbx_session *s, int leg) {
    (void)r;
    pbx_cmd c = {0};
    c.type = CMD_STOP_REC;
    c.leg = leg & 1;
    if (run_sync(s, &c) < 0) return -1;
    return c.result;
}
