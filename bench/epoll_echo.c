/*
 * epoll_echo.c - the practical floor: a minimal raw-epoll echo server.
 *
 *   epoll_echo tcp|udp HOST:PORT [THREADS]   (e.g. 127.0.0.1:0; prints "port=N" once bound)
 *
 * TCP: edge-triggered, non-blocking, one 64 KiB read buffer for the whole server, no allocation
 * per message. Each chunk read is written straight back; only a tail the socket does not take
 * is queued (per connection, allocated then), flushed on EPOLLOUT. A read shorter than the
 * buffer means the socket is drained (a stream socket returns what it has), so no extra read
 * to see EAGAIN, unless the peer's end-of-stream was reported. Reading pauses while more than
 * 4 MiB are queued. Per connection: one 40-byte slot in a table indexed by descriptor.
 *
 * THREADS (TCP only, default 1): that many loops, each a thread with its own epoll and read
 * buffer; the first also accepts, and hands connections to the loops in turn (epoll_ctl on the
 * chosen loop's epoll). Nothing else is shared, so this is what a second thread costs at the
 * least: the reference for netsock's several loops.
 *
 * UDP: edge-triggered; recvfrom until EAGAIN, each datagram sent straight back with sendto.
 *
 * Runs until killed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE (64 * 1024)
#define MAX_QUEUE (4 << 20)
#define MAX_EVENTS 256
#define MAX_THREADS 16

struct conn {
    char *q; /* unsent tail, NULL when empty */
    size_t qoff, qlen, qcap;
    int open;
    int paused;
};

static char g_buf[BUF_SIZE];
static __thread char *t_buf = g_buf; /* the calling loop's read buffer */
static struct conn *g_tab;
static size_t g_tab_len;
static int g_ep;                  /* the first loop's epoll */
static int g_eps[MAX_THREADS];    /* every loop's epoll (THREADS > 1) */
static int g_threads = 1;
static unsigned g_next;           /* the loop that gets the next connection */

static void die(const char *what)
{
    fprintf(stderr, "epoll_echo: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Parses "A.B.C.D:PORT" or "[v6]:PORT". */
static socklen_t parse_addr(const char *text, struct sockaddr_storage *ss)
{
    char host[128];
    const char *colon = strrchr(text, ':');
    size_t hl;
    int port;
    memset(ss, 0, sizeof *ss);
    if (!colon || (hl = (size_t)(colon - text)) >= sizeof host)
        return 0;
    memcpy(host, text, hl);
    host[hl] = '\0';
    port = atoi(colon + 1);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        host[hl - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
            return 0;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        return sizeof *s6;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
            return 0;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        return sizeof *s4;
    }
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        die("getsockname");
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

static void close_conn(int fd)
{
    struct conn *c = &g_tab[fd];
    free(c->q);
    memset(c, 0, sizeof *c);
    close(fd);
}

static size_t pending(const struct conn *c)
{
    return c->qlen - c->qoff;
}

static int enqueue(struct conn *c, const char *data, size_t len)
{
    if (c->qoff > 0 && c->qoff == c->qlen)
        c->qoff = c->qlen = 0;
    if (c->qlen + len > c->qcap) {
        size_t cap = c->qcap ? c->qcap : 4096;
        char *q;
        if (c->qoff > 0) { /* compact first */
            memmove(c->q, c->q + c->qoff, c->qlen - c->qoff);
            c->qlen -= c->qoff;
            c->qoff = 0;
        }
        while (cap < c->qlen + len)
            cap *= 2;
        if (cap != c->qcap) {
            if ((q = realloc(c->q, cap)) == NULL)
                return -1;
            c->q = q;
            c->qcap = cap;
        }
    }
    memcpy(c->q + c->qlen, data, len);
    c->qlen += len;
    return 0;
}

/* Writes the queue; 0 when done or blocked, -1 on error. Frees the queue once empty. */
static int flush(int fd, struct conn *c)
{
    while (pending(c) > 0) {
        ssize_t w = send(fd, c->q + c->qoff, pending(c), MSG_NOSIGNAL);
        if (w > 0)
            c->qoff += (size_t)w;
        else if (w < 0 && errno == EINTR)
            continue;
        else if (w < 0 && errno == EAGAIN)
            return 0;
        else
            return -1;
    }
    free(c->q);
    c->q = NULL;
    c->qoff = c->qlen = c->qcap = 0;
    return 0;
}

/* Echoes one chunk: straight to the socket unless output is already queued. */
static int echo(int fd, struct conn *c, const char *data, size_t len)
{
    size_t done = 0;
    if (pending(c) == 0) {
        while (done < len) {
            ssize_t w = send(fd, data + done, len - done, MSG_NOSIGNAL);
            if (w > 0)
                done += (size_t)w;
            else if (w < 0 && errno == EINTR)
                continue;
            else if (w < 0 && errno == EAGAIN)
                break;
            else
                return -1;
        }
    }
    if (done < len && enqueue(c, data + done, len - done) != 0)
        return -1;
    if (pending(c) > MAX_QUEUE)
        c->paused = 1;
    return 0;
}

/* Reads until the socket is drained (or reading pauses); -1 when the connection ends. */
static int read_conn(int fd, struct conn *c, int hup)
{
    while (!c->paused) {
        ssize_t r = read(fd, t_buf, BUF_SIZE);
        if (r > 0) {
            if (echo(fd, c, t_buf, (size_t)r) != 0)
                return -1;
            if ((size_t)r < BUF_SIZE && !hup)
                return 0;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else if (r < 0 && errno == EAGAIN) {
            return 0;
        } else {
            return -1;
        }
    }
    return 0;
}

static void on_conn(int fd, uint32_t ev)
{
    struct conn *c = &g_tab[fd];
    int hup = (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    if (!c->open)
        return;
    if ((ev & EPOLLOUT) && pending(c) > 0) {
        if (flush(fd, c) != 0)
            goto gone;
        if (c->paused && pending(c) <= MAX_QUEUE / 2) {
            c->paused = 0;
            if (read_conn(fd, c, 1) != 0) /* input that waited raised no new edge */
                goto gone;
        }
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        if (read_conn(fd, c, hup) != 0)
            goto gone;
    }
    return;
gone:
    close_conn(fd);
}

static void on_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1;
        struct epoll_event ev;
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN)
                fprintf(stderr, "epoll_echo: accept: %s\n", strerror(errno));
            return;
        }
        if ((size_t)fd >= g_tab_len && g_threads > 1) { /* the other loops read the table */
            fprintf(stderr, "epoll_echo: descriptor %d beyond the table\n", fd);
            close(fd);
            continue;
        }
        if ((size_t)fd >= g_tab_len) {
            size_t n = g_tab_len ? g_tab_len : 1024;
            struct conn *t;
            while (n <= (size_t)fd)
                n *= 2;
            if ((t = realloc(g_tab, n * sizeof *t)) == NULL) {
                close(fd);
                continue;
            }
            memset(t + g_tab_len, 0, (n - g_tab_len) * sizeof *t);
            g_tab = t;
            g_tab_len = n;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        g_tab[fd].open = 1;
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        ev.data.fd = fd;
        if (epoll_ctl(g_threads > 1 ? g_eps[g_next++ % (unsigned)g_threads] : g_ep, EPOLL_CTL_ADD, fd, &ev) != 0)
            close_conn(fd);
    }
}

/* The loop of every thread but the first: its own connections, its own read buffer. */
static void *loop_thread(void *arg)
{
    struct epoll_event evs[MAX_EVENTS];
    int ep = *(int *)arg;
    if ((t_buf = malloc(BUF_SIZE)) == NULL)
        die("malloc");
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++)
            on_conn(evs[i].data.fd, evs[i].events);
    }
    return NULL;
}

static void serve_tcp(const struct sockaddr_storage *ss, socklen_t len)
{
    struct epoll_event ev, evs[MAX_EVENTS];
    int one = 1, lfd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        die("socket");
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (const struct sockaddr *)ss, len) != 0 || listen(lfd, 1024) != 0)
        die("bind/listen");
    ev.events = EPOLLIN;
    ev.data.fd = lfd;
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, lfd, &ev) != 0)
        die("epoll_ctl");
    if (g_threads > 1) {
        /* A fixed table, so that no loop reads it while the first one grows it. */
        g_tab_len = 65536;
        if ((g_tab = calloc(g_tab_len, sizeof *g_tab)) == NULL)
            die("calloc");
        g_eps[0] = g_ep;
        for (int i = 1; i < g_threads; i++) {
            pthread_t t;
            if ((g_eps[i] = epoll_create1(EPOLL_CLOEXEC)) < 0)
                die("epoll_create1");
            if ((errno = pthread_create(&t, NULL, loop_thread, &g_eps[i])) != 0)
                die("pthread_create");
        }
    }
    printf("port=%d\n", bound_port(lfd));
    fflush(stdout);
    for (;;) {
        int n = epoll_wait(g_ep, evs, MAX_EVENTS, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd == lfd)
                on_accept(lfd);
            else
                on_conn(evs[i].data.fd, evs[i].events);
        }
    }
}

static void serve_udp(const struct sockaddr_storage *ss, socklen_t len)
{
    struct epoll_event ev, evs[8];
    int fd = socket(ss->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    if (bind(fd, (const struct sockaddr *)ss, len) != 0)
        die("bind");
    ev.events = EPOLLIN | EPOLLET;
    ev.data.fd = fd;
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        die("epoll_ctl");
    printf("port=%d\n", bound_port(fd));
    fflush(stdout);
    for (;;) {
        int n = epoll_wait(g_ep, evs, 8, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        if (n <= 0)
            continue;
        for (;;) {
            struct sockaddr_storage from;
            socklen_t flen = sizeof from;
            ssize_t r = recvfrom(fd, g_buf, sizeof g_buf, 0, (struct sockaddr *)&from, &flen);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                break; /* EAGAIN: drained */
            }
            /* a full send buffer drops the echo, as UDP may */
            (void)sendto(fd, g_buf, (size_t)r, 0, (struct sockaddr *)&from, flen);
        }
    }
}

int main(int argc, char **argv)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (argc < 3 || argc > 4 || (strcmp(argv[1], "tcp") != 0 && strcmp(argv[1], "udp") != 0)) {
        fprintf(stderr, "usage: epoll_echo tcp|udp HOST:PORT [THREADS]\n");
        return 2;
    }
    if (argc == 4 && ((g_threads = atoi(argv[3])) < 1 || g_threads > MAX_THREADS ||
                      (g_threads > 1 && strcmp(argv[1], "tcp") != 0))) {
        fprintf(stderr, "epoll_echo: THREADS must be 1 to %d, and more than 1 only for tcp\n", MAX_THREADS);
        return 2;
    }
    if ((len = parse_addr(argv[2], &ss)) == 0) {
        fprintf(stderr, "epoll_echo: bad address '%s'\n", argv[2]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if ((g_ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1");
    if (strcmp(argv[1], "tcp") == 0)
        serve_tcp(&ss, len);
    else
        serve_udp(&ss, len);
    return 0;
}
