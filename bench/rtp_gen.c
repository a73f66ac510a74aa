/* RTP load generator for bench_relay.py: sends 200-byte RTP packets to relay ports from one
 * UDP socket and counts what comes back (every relay under test forwards to this socket).
 *
 *   rtp_gen BIND_PORT PORTS_FILE paced SECONDS [PPS_PER_STREAM]
 *   rtp_gen BIND_PORT PORTS_FILE burst SECONDS [BURST]
 *
 * paced: every 1/PPS s one packet to each port (PORTS_FILE: one destination port per line).
 * burst: BURST packets round-robin over the ports, then wait until they have come back (or
 *        50 ms pass), again and again; this is the mode rtpengine 10.5 handles.
 * Prints: sent=N received=M seconds=S
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PKT 200
#define BATCH 64

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long received;

static void drain(int fd) {
    static struct mmsghdr msgs[BATCH];
    static struct iovec iov[BATCH];
    static uint8_t buf[BATCH][2048];
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = buf[i];
            iov[i].iov_len = sizeof(buf[i]);
            memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) return;
        received += n;
    }
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: rtp_gen BIND_PORT PORTS_FILE paced|burst SECONDS [N]\n");
        return 2;
    }
    int bind_port = atoi(argv[1]);
    int burst = strcmp(argv[3], "burst") == 0;
    double seconds = atof(argv[4]);
    int param = argc > 5 ? atoi(argv[5]) : (burst ? 32 : 50);
    FILE *f = fopen(argv[2], "r");
    if (!f) { perror("ports file"); return 1; }
    int cap = 1024, n = 0;
    int *ports = malloc(cap * sizeof(int));
    while (fscanf(f, "%d", &ports[n]) == 1) {
        if (++n == cap) ports = realloc(ports, (cap *= 2) * sizeof(int));
    }
    fclose(f);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int big = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big));
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(bind_port)};
    inet_pton(AF_INET, "127.0.0.1", &me.sin_addr);
    if (bind(fd, (struct sockaddr *)&me, sizeof(me)) < 0) { perror("bind"); return 1; }

    struct sockaddr_in *dst = calloc(n, sizeof(*dst));
    uint8_t (*pkts)[PKT] = calloc(n, PKT);
    uint16_t *seq = calloc(n, sizeof(uint16_t));
    for (int i = 0; i < n; i++) {
        dst[i].sin_family = AF_INET;
        dst[i].sin_port = htons(ports[i]);
        inet_pton(AF_INET, "127.0.0.1", &dst[i].sin_addr);
        pkts[i][0] = 0x80;
        pkts[i][1] = 0;  /* PCMU */
        uint32_t ssrc = 0x10000 + i;
        pkts[i][8] = ssrc >> 24; pkts[i][9] = ssrc >> 16; pkts[i][10] = ssrc >> 8; pkts[i][11] = ssrc;
        memset(pkts[i] + 12, 0xFF, PKT - 12);
    }
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    long sent = 0;
    double t0 = now(), end = t0 + seconds;
    double period = burst ? 0 : 1.0 / param;
    double next = t0;
    int cursor = 0;
    while (now() < end) {
        int todo = burst ? param : n;
        while (todo > 0) {
            int k = 0;
            while (k < BATCH && k < todo) {
                int i = cursor;
                cursor = (cursor + 1) % n;
                uint8_t *p = pkts[i];
                p[2] = seq[i] >> 8; p[3] = seq[i];
                uint32_t ts = (uint32_t)seq[i] * 160;
                p[4] = ts >> 24; p[5] = ts >> 16; p[6] = ts >> 8; p[7] = ts;
                seq[i]++;
                iov[k].iov_base = p;
                iov[k].iov_len = PKT;
                memset(&msgs[k].msg_hdr, 0, sizeof(msgs[k].msg_hdr));
                msgs[k].msg_hdr.msg_name = &dst[i];
                msgs[k].msg_hdr.msg_namelen = sizeof(dst[i]);
                msgs[k].msg_hdr.msg_iov = &iov[k];
                msgs[k].msg_hdr.msg_iovlen = 1;
                k++;
            }
            int off = 0;
            while (off < k) {
                int r = sendmmsg(fd, msgs + off, k - off, 0);
                if (r < 0) { if (errno == EINTR) continue; off++; continue; }
                off += r;
                sent += r;
            }
            todo -= k;
            drain(fd);
        }
        if (burst) {
            double deadline = now() + 0.05;
            while (received < sent && now() < deadline) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                poll(&p, 1, 5);
                drain(fd);
            }
        } else {
            next += period;
            for (;;) {
                double left = next - now();
                if (left <= 0) break;
                struct pollfd p = {.fd = fd, .events = POLLIN};
                poll(&p, 1, (int)(left * 1000) + 0);
                drain(fd);
            }
        }
    }
    /* collect the stragglers */
    double deadline = now() + 0.3;
    while (now() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, 20);
        drain(fd);
    }
    printf("sent=%ld received=%ld seconds=%.3f\n", sent, received, now() - t0);
    return 0;
}
