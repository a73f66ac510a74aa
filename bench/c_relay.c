/* Baseline for bench_relay.py: the plainest C RTP relay. One epoll set, level-triggered,
 * one recvfrom() and one sendto() per readable event, no parsing, no counters.
 *
 *   c_relay PORT_LO SESSIONS PEER_PORT
 *
 * Legs take even ports upward from PORT_LO (skipping ports in use), two per session; a
 * packet on one leg goes out of the other to 127.0.0.1:PEER_PORT. Prints the ports, one a
 * line, then "ready"; runs until killed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: c_relay PORT_LO SESSIONS PEER_PORT\n");
        return 2;
    }
    int lo = atoi(argv[1]), n = atoi(argv[2]), peer_port = atoi(argv[3]);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    int ep = epoll_create1(0);
    int *fds = malloc(sizeof(int) * 2 * n);
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(peer_port)};
    inet_pton(AF_INET, "127.0.0.1", &peer.sin_addr);
    int port = lo;
    for (int i = 0; i < 2 * n; i++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (fd < 0) { perror("socket"); return 1; }
        for (;; port += 2) {
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
            inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
            if (port > 65534) { fprintf(stderr, "out of ports\n"); return 1; }
            if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0) break;
        }
        printf("%d\n", port);
        port += 2;
        fds[i] = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    printf("ready\n");
    fflush(stdout);
    struct epoll_event evs[256];
    uint8_t buf[2048];
    for (;;) {
        int k = epoll_wait(ep, evs, 256, -1);
        for (int j = 0; j < k; j++) {
            int i = (int)evs[j].data.u32;
            struct sockaddr_in from;
            socklen_t fl = sizeof(from);
            ssize_t len = recvfrom(fds[i], buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
            if (len <= 0) continue;
            sendto(fds[i ^ 1], buf, (size_t)len, 0, (struct sockaddr *)&peer, sizeof(peer));
        }
    }
}
