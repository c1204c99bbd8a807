/*
 * loadgen.c - the benchmark's load generator: epoll, non-blocking, loopback only.
 *
 *   loadgen MODE --port P [--host 127.0.0.1|::1] [--conns N] [--size S]
 *           [--duration SEC] [--warmup SEC] [--pid SERVER_PID] [--settle SEC]
 *
 * Modes:
 *   tcp-pingpong  N connections; each sends S bytes, waits for the S-byte echo, repeats.
 *                 Requests/s and per-request latency (p50, p99).
 *   tcp-stream    N connections each writing 64 KiB chunks continuously and reading the echo.
 *                 MB/s of echo received.
 *   udp-pingpong  N connected UDP sockets; each sends an S-byte datagram (a sequence number in
 *                 its first 8 bytes), waits for the echo, repeats; a reply missing for 200 ms is
 *                 resent (counted as `lost`).
 *   tcp-fetch     N connections; each sends a 1-byte request and reads an S-byte response
 *                 (S up to 1 GiB), repeats. Requests/s, MB/s of responses, latency (p50, p99),
 *                 the server's CPU per GB and its peak VmRSS (VmHWM, with --pid).
 *   tcp-oneshot   N clients, each in a loop: connect, send S bytes, read the reply until the
 *                 server closes (the classic server's "ACK!" then close), close. Requests/s,
 *                 latency of the whole exchange, and with --pid the server's peak RSS (VmHWM)
 *                 and thread count at the end of the window.
 *   tcp-churn     N clients; each connects, sends S bytes, waits for the S-byte echo, and
 *                 closes with a reset (SO_LINGER 0: no TIME_WAIT piles up over a long run), then
 *                 connects again. Connections/s, connect-to-echo latency (p50, p99): the load
 *                 of accepting, not of the bytes.
 *   idle          opens N connections and holds them (--settle seconds), then each sends 16
 *                 bytes and waits for their echo; reports how many succeeded. With --pid, the
 *                 server's VmRSS before, while holding, and after the echoes.
 *
 * Timing: the run takes --warmup seconds (not measured), then a measured window of --duration
 * seconds. For idle, --duration bounds the whole run. With --pid, the server's utime+stime
 * (/proc/PID/stat) is read at the start and the end of the window, and its CPU per request
 * (or per GB) is reported. A hard alarm ends the program if anything hangs.
 *
 * Output: one line on stdout, "RESULT key=value ...", for the runner to parse. Only
 * 127.0.0.1 and ::1 are accepted as host: this program floods whatever it is pointed at.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 512
#define STREAM_CHUNK (64 * 1024)
#define IDLE_MSG 16
#define UDP_RESEND_NS (200 * 1000000LL)

struct cfg {
    const char *mode;
    const char *host;
    int port;
    int conns;
    size_t size;
    double duration;
    double warmup;
    double settle;
    int pid;
};

static struct sockaddr_storage g_addr;
static socklen_t g_addrlen;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* ---- the server's resources, from /proc ---- */

static int read_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;
    if (fd < 0)
        return -1;
    n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return 0;
}

/* utime+stime of the whole process, in clock ticks (utime alone in *user); -1 if unreadable. */
static long long proc_cpu_ticks(int pid, long long *user)
{
    char path[64], buf[4096], *p;
    unsigned long long utime, stime;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if (read_file(path, buf, sizeof buf) != 0 || (p = strrchr(buf, ')')) == NULL)
        return -1;
    /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime(14) stime(15) */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1;
    *user = (long long)utime;
    return (long long)(utime + stime);
}

/* Time on CPU of all the process's threads, in ns (schedstat; finer than ticks); -1 if not
 * available. Only a cross-check of the tick count. */
static long long proc_sched_ns(int pid)
{
    char path[320], buf[256];
    long long total = 0;
    struct dirent *de;
    DIR *d;
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    if ((d = opendir(path)) == NULL)
        return -1;
    while ((de = readdir(d)) != NULL) {
        unsigned long long ns;
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%s/schedstat", pid, de->d_name);
        if (read_file(path, buf, sizeof buf) == 0 && sscanf(buf, "%llu", &ns) == 1)
            total += (long long)ns;
    }
    closedir(d);
    return total;
}

/* Context switches of all the process's threads (voluntary: it slept, in epoll_wait mostly;
 * involuntary: preempted); -1 if not available. */
static long long proc_ctxsw(int pid)
{
    char path[320], buf[4096], *p;
    long long total = 0;
    struct dirent *de;
    DIR *d;
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    if ((d = opendir(path)) == NULL)
        return -1;
    while ((de = readdir(d)) != NULL) {
        long long v;
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%s/status", pid, de->d_name);
        if (read_file(path, buf, sizeof buf) != 0)
            continue;
        if ((p = strstr(buf, "voluntary_ctxt_switches:")) != NULL && sscanf(p + 24, "%lld", &v) == 1)
            total += v; /* the first match is "voluntary", then "nonvoluntary" below */
        if ((p = strstr(buf, "nonvoluntary_ctxt_switches:")) != NULL && sscanf(p + 27, "%lld", &v) == 1)
            total += v;
    }
    closedir(d);
    return total;
}

/* A number of /proc/PID/status ("VmRSS", "VmHWM", "Threads"); -1 if unreadable. */
static long proc_status(int pid, const char *key)
{
    char path[64], buf[8192], *p;
    long v;
    size_t klen = strlen(key);
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    if (read_file(path, buf, sizeof buf) != 0)
        return -1;
    for (p = buf; (p = strstr(p, key)) != NULL; p += klen)
        if ((p == buf || p[-1] == '\n') && p[klen] == ':')
            return sscanf(p + klen + 1, "%ld", &v) == 1 ? v : -1;
    return -1;
}

static long proc_rss_kb(int pid)
{
    return proc_status(pid, "VmRSS");
}

/* Busy time of the whole machine (all cores), in clock ticks, from /proc/stat; -1 if unreadable.
 * Minus the server's and ours, it tells how much else ran during the window. */
static long long machine_busy_ticks(void)
{
    char buf[512];
    unsigned long long v[8];
    if (read_file("/proc/stat", buf, sizeof buf) != 0 ||
        sscanf(buf, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
               &v[6], &v[7]) != 8)
        return -1;
    /* user nice system [idle iowait] irq softirq [steal]: what processes get charged for (their
     * stime includes the interrupts that hit them; steal is the host's) */
    return (long long)(v[0] + v[1] + v[2] + v[5] + v[6]);
}

struct snap {
    int64_t t;
    long long busy;
    long long ticks, user_ticks;
    long long sched_ns;
    long long ctxsw;
    struct rusage self;
};

static void take_snap(const struct cfg *c, struct snap *s)
{
    s->t = now_ns();
    s->busy = machine_busy_ticks();
    s->ticks = c->pid > 0 ? proc_cpu_ticks(c->pid, &s->user_ticks) : -1;
    s->sched_ns = c->pid > 0 ? proc_sched_ns(c->pid) : -1;
    s->ctxsw = c->pid > 0 ? proc_ctxsw(c->pid) : -1;
    getrusage(RUSAGE_SELF, &s->self);
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* Prints the window's common fields: its length, the server's CPU time, ours. */
static double print_window(const struct cfg *c, const struct snap *a, const struct snap *b, double *srv_cpu_s)
{
    double win = (double)(b->t - a->t) / 1e9;
    double hz = (double)sysconf(_SC_CLK_TCK);
    double lg = tv_s(b->self.ru_utime) + tv_s(b->self.ru_stime) - tv_s(a->self.ru_utime) - tv_s(a->self.ru_stime);
    *srv_cpu_s = -1;
    printf(" window_s=%.3f lg_cpu_s=%.3f", win, lg);
    if (c->pid > 0 && a->ticks >= 0 && b->ticks >= 0) {
        *srv_cpu_s = (double)(b->ticks - a->ticks) / hz;
        printf(" srv_cpu_s=%.3f srv_user_s=%.3f", *srv_cpu_s, (double)(b->user_ticks - a->user_ticks) / hz);
    }
    if (c->pid > 0 && a->sched_ns >= 0 && b->sched_ns >= 0)
        printf(" srv_sched_s=%.4f", (double)(b->sched_ns - a->sched_ns) / 1e9);
    if (c->pid > 0 && a->ctxsw >= 0 && b->ctxsw >= 0)
        printf(" srv_ctxsw=%lld", b->ctxsw - a->ctxsw);
    if (*srv_cpu_s >= 0 && a->busy >= 0 && b->busy >= 0) /* what else ran, on either core */
        printf(" bg_cpu_s=%.3f", (double)(b->busy - a->busy) / hz - *srv_cpu_s - lg);
    return win;
}

/* ---- latency histogram: 0.1 us bins up to 100 ms, then 1 ms bins up to 10 s ---- */

#define FINE_BINS 1000000
#define COARSE_BINS 10000
static uint32_t g_fine[FINE_BINS];
static uint32_t g_coarse[COARSE_BINS + 1];
static uint64_t g_samples;

static void hist_reset(void)
{
    memset(g_fine, 0, sizeof g_fine);
    memset(g_coarse, 0, sizeof g_coarse);
    g_samples = 0;
}

static void hist_add(int64_t ns)
{
    int64_t b = ns / 100;
    if (ns < 0)
        b = 0;
    if (b < FINE_BINS) {
        g_fine[b]++;
    } else {
        int64_t cb = ns / 1000000;
        g_coarse[cb < COARSE_BINS ? cb : COARSE_BINS]++;
    }
    g_samples++;
}

/* The latency (us) below which a fraction q of the samples lie; -1 without samples. */
static double hist_quantile(double q)
{
    uint64_t want, seen = 0;
    if (g_samples == 0)
        return -1;
    want = (uint64_t)(q * (double)g_samples);
    if (want >= g_samples)
        want = g_samples - 1;
    for (int i = 0; i < FINE_BINS; i++) {
        seen += g_fine[i];
        if (seen > want)
            return (i + 0.5) / 10.0;
    }
    for (int i = 0; i <= COARSE_BINS; i++) {
        seen += g_coarse[i];
        if (seen > want)
            return (i + 0.5) * 1000.0;
    }
    return -1;
}

/* ---- sockets ---- */

/* A non-blocking connected TCP socket, or -1 (errno set) if connecting fails by `deadline`. */
static int tcp_connect(int64_t deadline)
{
    int fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1, err = 0;
    socklen_t len = sizeof err;
    if (fd < 0)
        return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&g_addr, g_addrlen) != 0) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int left, r;
        if (errno != EINPROGRESS)
            goto fail;
        left = (int)((deadline - now_ns()) / 1000000);
        if (left <= 0 || (r = poll(&p, 1, left)) <= 0) {
            errno = ETIMEDOUT;
            goto fail;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            errno = err ? err : errno;
            goto fail;
        }
    }
    return fd;
fail:
    err = errno;
    close(fd);
    errno = err;
    return -1;
}

static void ep_add(int ep, int fd, uint32_t events, uint32_t idx)
{
    struct epoll_event ev = {.events = events, .data.u32 = idx};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        die("epoll_ctl");
}

static void ep_mod(int ep, int fd, uint32_t events, uint32_t idx)
{
    struct epoll_event ev = {.events = events, .data.u32 = idx};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) != 0)
        die("epoll_ctl");
}

static void print_head(const struct cfg *c)
{
    printf("RESULT mode=%s host=%s conns=%d size=%zu", c->mode, c->host, c->conns, c->size);
}

/* ---- tcp ping-pong ---- */

struct ppconn {
    int fd;
    int dead;
    size_t sent, got;
    int64_t t0;
};

static int pp_write(int ep, struct ppconn *pc, uint32_t idx, const char *msg, size_t size)
{
    while (pc->sent < size) {
        ssize_t w = send(pc->fd, msg + pc->sent, size - pc->sent, MSG_NOSIGNAL);
        if (w > 0) {
            pc->sent += (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && errno == EAGAIN) {
            ep_mod(ep, pc->fd, EPOLLIN | EPOLLOUT, idx);
            return 0;
        } else {
            return -1;
        }
    }
    return 0;
}

static int run_tcp_pingpong(const struct cfg *c)
{
    struct ppconn *pcs = calloc((size_t)c->conns, sizeof *pcs);
    char *msg = malloc(c->size), *rbuf = malloc(c->size);
    struct epoll_event evs[MAX_EVENTS];
    struct snap a, b;
    int ep = epoll_create1(EPOLL_CLOEXEC), measuring;
    uint64_t done = 0, errors = 0;
    int64_t start, warm_end, end;
    double win, cpu;

    if (!pcs || !msg || !rbuf || ep < 0)
        die("setup");
    memset(msg, 'p', c->size);
    start = now_ns();
    for (int i = 0; i < c->conns; i++) {
        if ((pcs[i].fd = tcp_connect(start + 10000000000LL)) < 0)
            die("connect");
        ep_add(ep, pcs[i].fd, EPOLLIN, (uint32_t)i);
    }
    hist_reset();
    start = now_ns();
    warm_end = start + (int64_t)(c->warmup * 1e9);
    end = warm_end + (int64_t)(c->duration * 1e9);
    measuring = c->warmup <= 0;
    if (measuring)
        take_snap(c, &a);
    for (int i = 0; i < c->conns; i++) {
        pcs[i].t0 = now_ns();
        if (pp_write(ep, &pcs[i], (uint32_t)i, msg, c->size) != 0)
            die("send");
    }
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, 5);
        int64_t t = now_ns();
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        if (!measuring && t >= warm_end) {
            take_snap(c, &a);
            hist_reset();
            done = 0;
            measuring = 1;
        }
        if (t >= end)
            break;
        for (int e = 0; e < n; e++) {
            uint32_t idx = evs[e].data.u32;
            struct ppconn *pc = &pcs[idx];
            if (pc->dead)
                continue;
            if (evs[e].events & EPOLLOUT) {
                if (pp_write(ep, pc, idx, msg, c->size) != 0)
                    goto broken;
                if (pc->sent == c->size)
                    ep_mod(ep, pc->fd, EPOLLIN, idx);
            }
            if (evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                for (;;) {
                    ssize_t r = recv(pc->fd, rbuf, c->size - pc->got, 0);
                    if (r > 0) {
                        pc->got += (size_t)r;
                        if (pc->got < c->size)
                            continue;
                        /* one whole echo: a request done, the next one starts */
                        t = now_ns();
                        hist_add(t - pc->t0);
                        done++;
                        pc->got = 0;
                        pc->sent = 0;
                        pc->t0 = t;
                        if (pp_write(ep, pc, idx, msg, c->size) != 0)
                            goto broken;
                        break; /* nothing more can come until the server reads it */
                    }
                    if (r < 0 && errno == EINTR)
                        continue;
                    if (r < 0 && errno == EAGAIN)
                        break;
                    goto broken; /* 0: the server closed; or an error */
                }
            }
            continue;
        broken:
            errors++;
            pc->dead = 1;
            epoll_ctl(ep, EPOLL_CTL_DEL, pc->fd, NULL);
        }
    }
    take_snap(c, &b);
    print_head(c);
    win = print_window(c, &a, &b, &cpu);
    printf(" requests=%llu rps=%.0f p50_us=%.1f p99_us=%.1f errors=%llu", (unsigned long long)done,
           (double)done / win, hist_quantile(0.50), hist_quantile(0.99), (unsigned long long)errors);
    if (cpu >= 0 && done > 0)
        printf(" cpu_us_per_req=%.3f", cpu * 1e6 / (double)done);
    printf("\n");
    return errors ? 1 : 0;
}

/* ---- tcp connection churn ---- */

/* A non-blocking connect started (or done) to the server; -1 if it failed at once. */
static int churn_connect(int ep, uint32_t idx)
{
    int fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    struct linger reset = {.l_onoff = 1, .l_linger = 0};
    if (fd < 0)
        return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    if (connect(fd, (struct sockaddr *)&g_addr, g_addrlen) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    ep_add(ep, fd, EPOLLOUT, idx);
    return fd;
}

static int run_tcp_churn(const struct cfg *c)
{
    struct ppconn *pcs = calloc((size_t)c->conns, sizeof *pcs);
    char *msg = malloc(c->size), *rbuf = malloc(c->size);
    struct epoll_event evs[MAX_EVENTS];
    struct snap a, b;
    int ep = epoll_create1(EPOLL_CLOEXEC), measuring;
    uint64_t done = 0, errors = 0;
    int64_t start, warm_end, end;
    double win, cpu;

    if (!pcs || !msg || !rbuf || ep < 0)
        die("setup");
    memset(msg, 'c', c->size);
    hist_reset();
    start = now_ns();
    warm_end = start + (int64_t)(c->warmup * 1e9);
    end = warm_end + (int64_t)(c->duration * 1e9);
    measuring = c->warmup <= 0;
    if (measuring)
        take_snap(c, &a);
    for (int i = 0; i < c->conns; i++) {
        pcs[i].t0 = now_ns();
        if ((pcs[i].fd = churn_connect(ep, (uint32_t)i)) < 0)
            die("connect");
    }
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, 5);
        int64_t t = now_ns();
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        if (!measuring && t >= warm_end) {
            take_snap(c, &a);
            hist_reset();
            done = 0;
            errors = 0;
            measuring = 1;
        }
        if (t >= end)
            break;
        for (int e = 0; e < n; e++) {
            uint32_t idx = evs[e].data.u32;
            struct ppconn *pc = &pcs[idx];
            int again = 0;
            if (evs[e].events & (EPOLLERR | EPOLLHUP)) {
                errors++;
                again = 1;
            } else if ((evs[e].events & EPOLLOUT) && pc->sent < c->size) {
                if (pp_write(ep, pc, idx, msg, c->size) != 0) {
                    errors++;
                    again = 1;
                } else if (pc->sent == c->size) {
                    ep_mod(ep, pc->fd, EPOLLIN, idx);
                }
            } else if (evs[e].events & EPOLLIN) {
                for (;;) {
                    ssize_t r = recv(pc->fd, rbuf, c->size - pc->got, 0);
                    if (r > 0 && (pc->got += (size_t)r) < c->size)
                        continue;
                    if (r > 0) { /* the whole echo: one connection done */
                        hist_add(now_ns() - pc->t0);
                        done++;
                        again = 1;
                    } else if (r < 0 && errno == EINTR) {
                        continue;
                    } else if (!(r < 0 && errno == EAGAIN)) {
                        errors++;
                        again = 1;
                    }
                    break;
                }
            }
            if (again) {
                close(pc->fd); /* a reset: SO_LINGER 0 */
                pc->sent = pc->got = 0;
                pc->t0 = now_ns();
                if ((pc->fd = churn_connect(ep, idx)) < 0)
                    die("connect");
            }
        }
    }
    take_snap(c, &b);
    print_head(c);
    win = print_window(c, &a, &b, &cpu);
    printf(" requests=%llu rps=%.0f p50_us=%.1f p99_us=%.1f errors=%llu", (unsigned long long)done,
           (double)done / win, hist_quantile(0.50), hist_quantile(0.99), (unsigned long long)errors);
    if (cpu >= 0 && done > 0)
        printf(" cpu_us_per_req=%.3f", cpu * 1e6 / (double)done);
    printf("\n");
    return errors ? 1 : 0;
}

/* ---- tcp one-shot requests ---- */

struct osconn {
    int fd;
    int state; /* 0 connecting, 1 reading the reply */
    size_t got;
    int64_t t0;
};

/* Starts slot `i`'s next exchange: a non-blocking connect. */
static void os_start(int ep, struct osconn *oc, uint32_t i)
{
    int one = 1;
    oc->fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (oc->fd < 0)
        die("socket");
    setsockopt(oc->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    oc->state = 0;
    oc->got = 0;
    oc->t0 = now_ns();
    if (connect(oc->fd, (struct sockaddr *)&g_addr, g_addrlen) != 0 && errno != EINPROGRESS)
        die("connect");
    ep_add(ep, oc->fd, EPOLLOUT, i);
}

static int run_tcp_oneshot(const struct cfg *c)
{
    struct osconn *ocs = calloc((size_t)c->conns, sizeof *ocs);
    char *msg = malloc(c->size), rbuf[4096];
    struct epoll_event evs[MAX_EVENTS];
    struct snap a, b;
    int ep = epoll_create1(EPOLL_CLOEXEC), measuring;
    uint64_t done = 0, errors = 0;
    int64_t start, warm_end, end;
    double win, cpu;

    if (!ocs || !msg || ep < 0)
        die("setup");
    memset(msg, 'q', c->size);
    hist_reset();
    start = now_ns();
    warm_end = start + (int64_t)(c->warmup * 1e9);
    end = warm_end + (int64_t)(c->duration * 1e9);
    measuring = c->warmup <= 0;
    if (measuring)
        take_snap(c, &a);
    for (int i = 0; i < c->conns; i++)
        os_start(ep, &ocs[i], (uint32_t)i);
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, 5);
        int64_t t = now_ns();
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        if (!measuring && t >= warm_end) {
            take_snap(c, &a);
            hist_reset();
            done = errors = 0;
            measuring = 1;
        }
        if (t >= end)
            break;
        for (int e = 0; e < n; e++) {
            uint32_t idx = evs[e].data.u32;
            struct osconn *oc = &ocs[idx];
            int ok = 0;
            if (oc->state == 0) {
                int err = 0;
                socklen_t len = sizeof err;
                if (getsockopt(oc->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0 ||
                    send(oc->fd, msg, c->size, MSG_NOSIGNAL) != (ssize_t)c->size)
                    goto next;
                oc->state = 1;
                ep_mod(ep, oc->fd, EPOLLIN, idx);
                continue;
            }
            for (;;) {
                ssize_t r = recv(oc->fd, rbuf, sizeof rbuf, 0);
                if (r > 0) {
                    oc->got += (size_t)r;
                    continue;
                }
                if (r < 0 && errno == EINTR)
                    continue;
                if (r < 0 && errno == EAGAIN)
                    break;
                ok = r == 0 && oc->got > 0; /* the whole reply, then the server's close */
                goto next;
            }
            continue;
        next:
            if (ok) {
                t = now_ns();
                hist_add(t - oc->t0);
                done++;
            } else {
                errors++;
            }
            close(oc->fd); /* leaves the epoll set with it */
            os_start(ep, oc, idx);
        }
    }
    take_snap(c, &b);
    print_head(c);
    win = print_window(c, &a, &b, &cpu);
    printf(" requests=%llu rps=%.0f p50_us=%.1f p99_us=%.1f errors=%llu", (unsigned long long)done,
           (double)done / win, hist_quantile(0.50), hist_quantile(0.99), (unsigned long long)errors);
    if (cpu >= 0 && done > 0)
        printf(" cpu_us_per_req=%.3f", cpu * 1e6 / (double)done);
    if (c->pid > 0)
        printf(" srv_hwm_kb=%ld srv_threads=%ld", proc_status(c->pid, "VmHWM"), proc_status(c->pid, "Threads"));
    printf("\n");
    for (int i = 0; i < c->conns; i++)
        close(ocs[i].fd);
    return 0;
}

/* ---- tcp streaming ---- */

struct stconn {
    int fd;
    int dead;
    size_t off; /* of the chunk being written */
};

static int run_tcp_stream(const struct cfg *c)
{
    struct stconn *scs = calloc((size_t)c->conns, sizeof *scs);
    char *chunk = malloc(STREAM_CHUNK), *rbuf = malloc(STREAM_CHUNK);
    struct epoll_event evs[MAX_EVENTS];
    struct snap a, b;
    int ep = epoll_create1(EPOLL_CLOEXEC), measuring;
    uint64_t bytes = 0, errors = 0;
    int64_t start, warm_end, end;
    double win, cpu;

    if (!scs || !chunk || !rbuf || ep < 0)
        die("setup");
    memset(chunk, 's', STREAM_CHUNK);
    start = now_ns();
    for (int i = 0; i < c->conns; i++) {
        if ((scs[i].fd = tcp_connect(start + 10000000000LL)) < 0)
            die("connect");
        ep_add(ep, scs[i].fd, EPOLLIN | EPOLLOUT, (uint32_t)i);
    }
    start = now_ns();
    warm_end = start + (int64_t)(c->warmup * 1e9);
    end = warm_end + (int64_t)(c->duration * 1e9);
    measuring = c->warmup <= 0;
    if (measuring)
        take_snap(c, &a);
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, 5);
        int64_t t = now_ns();
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        if (!measuring && t >= warm_end) {
            take_snap(c, &a);
            bytes = 0;
            measuring = 1;
        }
        if (t >= end)
            break;
        for (int e = 0; e < n; e++) {
            struct stconn *sc = &scs[evs[e].data.u32];
            if (sc->dead)
                continue;
            if (evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                for (;;) {
                    ssize_t r = recv(sc->fd, rbuf, STREAM_CHUNK, 0);
                    if (r > 0) {
                        bytes += (uint64_t)r;
                        continue;
                    }
                    if (r < 0 && errno == EINTR)
                        continue;
                    if (r < 0 && errno == EAGAIN)
                        break;
                    goto broken;
                }
            }
            if (evs[e].events & EPOLLOUT) {
                for (;;) {
                    ssize_t w = send(sc->fd, chunk + sc->off, STREAM_CHUNK - sc->off, MSG_NOSIGNAL);
                    if (w > 0) {
                        sc->off = (sc->off + (size_t)w) % STREAM_CHUNK;
                        continue;
                    }
                    if (w < 0 && errno == EINTR)
                        continue;
                    if (w < 0 && errno == EAGAIN)
                        break;
                    goto broken;
                }
            }
            continue;
        broken:
            errors++;
            sc->dead = 1;
            epoll_ctl(ep, EPOLL_CTL_DEL, sc->fd, NULL);
        }
    }
    take_snap(c, &b);
    print_head(c);
    win = print_window(c, &a, &b, &cpu);
    printf(" bytes=%llu mbps=%.1f errors=%llu", (unsigned long long)bytes, (double)bytes / win / 1e6,
           (unsigned long long)errors);
    if (cpu >= 0 && bytes > 0)
        printf(" cpu_ms_per_gb=%.2f", cpu * 1e3 / ((double)bytes / 1e9));
    printf("\n");
    return errors ? 1 : 0;
}

/* ---- tcp fetch: a 1-byte request, an S-byte response ---- */

static int run_tcp_fetch(const struct cfg *c)
{
    struct ppconn *fcs = calloc((size_t)c->conns, sizeof *fcs);
    char *rbuf = malloc(STREAM_CHUNK);
    struct epoll_event evs[MAX_EVENTS];
    struct snap a, b;
    int ep = epoll_create1(EPOLL_CLOEXEC), measuring;
    uint64_t done = 0, bytes = 0, errors = 0;
    int64_t start, warm_end, end;
    double win, cpu;
    long rss;

    if (!fcs || !rbuf || ep < 0)
        die("setup");
    start = now_ns();
    for (int i = 0; i < c->conns; i++) {
        if ((fcs[i].fd = tcp_connect(start + 10000000000LL)) < 0)
            die("connect");
        ep_add(ep, fcs[i].fd, EPOLLIN, (uint32_t)i);
    }
    hist_reset();
    start = now_ns();
    warm_end = start + (int64_t)(c->warmup * 1e9);
    end = warm_end + (int64_t)(c->duration * 1e9);
    measuring = c->warmup <= 0;
    if (measuring)
        take_snap(c, &a);
    for (int i = 0; i < c->conns; i++) {
        fcs[i].t0 = now_ns();
        if (send(fcs[i].fd, "g", 1, MSG_NOSIGNAL) != 1)
            die("send");
    }
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, 5);
        int64_t t = now_ns();
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        if (!measuring && t >= warm_end) {
            take_snap(c, &a);
            hist_reset();
            done = bytes = 0;
            measuring = 1;
        }
        if (t >= end)
            break;
        for (int e = 0; e < n; e++) {
            struct ppconn *fc = &fcs[evs[e].data.u32];
            if (fc->dead)
                continue;
            for (;;) {
                size_t want = c->size - fc->got < STREAM_CHUNK ? c->size - fc->got : STREAM_CHUNK;
                ssize_t r = recv(fc->fd, rbuf, want, 0);
                if (r > 0) {
                    fc->got += (size_t)r;
                    bytes += (uint64_t)r;
                    if (fc->got < c->size)
                        continue;
                    /* one whole response: the next request (1 byte: the socket takes it) */
                    t = now_ns();
                    hist_add(t - fc->t0);
                    done++;
                    fc->got = 0;
                    fc->t0 = t;
                    if (send(fc->fd, "g", 1, MSG_NOSIGNAL) != 1)
                        goto broken;
                    break;
                }
                if (r < 0 && errno == EINTR)
                    continue;
                if (r < 0 && errno == EAGAIN)
                    break;
                goto broken;
            }
            continue;
        broken:
            errors++;
            fc->dead = 1;
            epoll_ctl(ep, EPOLL_CTL_DEL, fc->fd, NULL);
        }
    }
    take_snap(c, &b);
    rss = c->pid > 0 ? proc_status(c->pid, "VmHWM") : -1;
    print_head(c);
    win = print_window(c, &a, &b, &cpu);
    printf(" requests=%llu rps=%.1f bytes=%llu mbps=%.1f p50_ms=%.2f p99_ms=%.2f errors=%llu",
           (unsigned long long)done, (double)done / win, (unsigned long long)bytes, (double)bytes / win / 1e6,
           hist_quantile(0.50) / 1e3, hist_quantile(0.99) / 1e3, (unsigned long long)errors);
    if (cpu >= 0 && bytes > 0)
        printf(" cpu_ms_per_gb=%.2f", cpu * 1e3 / ((double)bytes / 1e9));
    if (rss >= 0)
        printf(" srv_peak_rss_kb=%ld", rss);
    printf("\n");
    return errors ? 1 : 0;
}

/* ---- udp ping-pong ---- */

struct udpsock {
    int fd;
    uint64_t seq;
    int64_t t0;
};

static void udp_send(struct udpsock *us, char *msg, size_t size)
{
    memcpy(msg, &us->seq, sizeof us->seq);
    us->t0 = now_ns();
    /* A full buffer or a refused port loses this one; the resend timer covers it. */
    (void)send(us->fd, msg, size, 0);
}

static int run_udp_pingpong(const struct cfg *c)
{
    struct udpsock *uss = calloc((size_t)c->conns, sizeof *uss);
    size_t cap = c->size < 65536 ? 65536 : c->size;
    char *msg = malloc(c->size), *rbuf = malloc(cap);
    struct epoll_event evs[MAX_EVENTS];
    struct snap a, b;
    int ep = epoll_create1(EPOLL_CLOEXEC), measuring;
    uint64_t done = 0, lost = 0;
    int64_t start, warm_end, end, last_scan;
    double win, cpu;

    if (!uss || !msg || !rbuf || ep < 0)
        die("setup");
    if (c->size < sizeof(uint64_t)) {
        fprintf(stderr, "loadgen: udp-pingpong needs --size of at least 8\n");
        return 2;
    }
    memset(msg, 'u', c->size);
    for (int i = 0; i < c->conns; i++) {
        int fd = socket(g_addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&g_addr, g_addrlen) != 0)
            die("udp socket");
        uss[i].fd = fd;
        uss[i].seq = (uint64_t)i << 40;
        ep_add(ep, fd, EPOLLIN, (uint32_t)i);
    }
    hist_reset();
    start = now_ns();
    warm_end = start + (int64_t)(c->warmup * 1e9);
    end = warm_end + (int64_t)(c->duration * 1e9);
    measuring = c->warmup <= 0;
    if (measuring)
        take_snap(c, &a);
    for (int i = 0; i < c->conns; i++)
        udp_send(&uss[i], msg, c->size);
    last_scan = now_ns();
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, 5);
        int64_t t = now_ns();
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        if (!measuring && t >= warm_end) {
            take_snap(c, &a);
            hist_reset();
            done = 0;
            lost = 0;
            measuring = 1;
        }
        if (t >= end)
            break;
        for (int e = 0; e < n; e++) {
            struct udpsock *us = &uss[evs[e].data.u32];
            for (;;) {
                ssize_t r = recv(us->fd, rbuf, cap, 0);
                uint64_t seq;
                if (r < 0 && errno == EINTR)
                    continue;
                if (r < 0) /* EAGAIN, or ECONNREFUSED from a resend: wait */
                    break;
                if ((size_t)r != c->size)
                    continue;
                memcpy(&seq, rbuf, sizeof seq);
                if (seq != us->seq)
                    continue; /* the late echo of a resent datagram */
                t = now_ns();
                hist_add(t - us->t0);
                done++;
                us->seq++;
                udp_send(us, msg, c->size);
            }
        }
        if (t - last_scan > 20000000LL) {
            last_scan = t;
            for (int i = 0; i < c->conns; i++) {
                if (t - uss[i].t0 > UDP_RESEND_NS) {
                    lost++;
                    uss[i].seq++;
                    udp_send(&uss[i], msg, c->size);
                }
            }
        }
    }
    take_snap(c, &b);
    print_head(c);
    win = print_window(c, &a, &b, &cpu);
    printf(" requests=%llu rps=%.0f p50_us=%.1f p99_us=%.1f lost=%llu errors=0", (unsigned long long)done,
           (double)done / win, hist_quantile(0.50), hist_quantile(0.99), (unsigned long long)lost);
    if (cpu >= 0 && done > 0)
        printf(" cpu_us_per_req=%.3f", cpu * 1e6 / (double)done);
    printf("\n");
    return 0;
}

/* ---- idle connections ---- */

static void sleep_s(double s)
{
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int run_idle(const struct cfg *c)
{
    int *fds = calloc((size_t)c->conns, sizeof *fds);
    size_t *got = calloc((size_t)c->conns, sizeof *got);
    struct epoll_event evs[MAX_EVENTS];
    char msg[IDLE_MSG], rbuf[256];
    int ep = epoll_create1(EPOLL_CLOEXEC), connected = 0, echoed = 0, errors = 0;
    int64_t start = now_ns(), deadline = start + (int64_t)(c->duration * 1e9), t_conn, t_echo;
    long rss_base, rss_held = -1, rss_after = -1;

    if (!fds || !got || ep < 0)
        die("setup");
    memset(msg, 'i', sizeof msg);
    rss_base = c->pid > 0 ? proc_rss_kb(c->pid) : -1;
    for (int i = 0; i < c->conns; i++) {
        fds[i] = tcp_connect(deadline);
        if (fds[i] < 0) {
            fprintf(stderr, "loadgen: connection %d: %s\n", i, strerror(errno));
            break;
        }
        connected++;
    }
    t_conn = now_ns();
    sleep_s(c->settle); /* the server accepts and registers the last ones */
    if (c->pid > 0)
        rss_held = proc_rss_kb(c->pid);
    for (int i = 0; i < connected; i++) {
        ep_add(ep, fds[i], EPOLLIN, (uint32_t)i);
        if (send(fds[i], msg, sizeof msg, MSG_NOSIGNAL) != (ssize_t)sizeof msg)
            errors++;
    }
    while (echoed + errors < connected && now_ns() < deadline) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, 10);
        for (int e = 0; e < n; e++) {
            uint32_t i = evs[e].data.u32;
            ssize_t r = recv(fds[i], rbuf, sizeof rbuf, 0);
            if (r > 0) {
                got[i] += (size_t)r;
                if (got[i] >= sizeof msg) {
                    echoed += got[i] == sizeof msg;
                    errors += got[i] != sizeof msg;
                    epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
                }
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
            }
        }
    }
    t_echo = now_ns();
    sleep_s(c->settle < 0.2 ? c->settle : 0.2);
    if (c->pid > 0)
        rss_after = proc_rss_kb(c->pid);
    print_head(c);
    printf(" connected=%d echoed=%d errors=%d connect_s=%.3f echo_s=%.3f", connected, echoed,
           connected - echoed, (double)(t_conn - start) / 1e9, (double)(t_echo - t_conn) / 1e9 - c->settle);
    if (rss_base >= 0 && rss_held >= 0 && rss_after >= 0 && connected > 0)
        printf(" rss_base_kb=%ld rss_held_kb=%ld rss_after_kb=%ld held_b_per_conn=%.0f after_b_per_conn=%.0f",
               rss_base, rss_held, rss_after, (double)(rss_held - rss_base) * 1024.0 / connected,
               (double)(rss_after - rss_base) * 1024.0 / connected);
    printf(" ok=%d\n", echoed == c->conns);
    fflush(stdout);
    return echoed == c->conns ? 0 : 1;
}

/* ---- main ---- */

/* Many connections need more descriptors than the usual soft limit of 1024: raises it as far as
 * the hard limit allows (the runner raises both where it may). */
static void raise_nofile(int conns)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)conns + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen tcp-pingpong|tcp-churn|tcp-oneshot|tcp-stream|tcp-fetch|udp-pingpong|idle --port P [--host 127.0.0.1|::1]\n"
            "               [--conns N] [--size BYTES] [--duration S] [--warmup S] [--settle S] [--pid PID]\n");
    exit(2);
}

static double num(const char *s, double lo, double hi)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "loadgen: bad number '%s'\n", s);
        usage();
    }
    return v;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, 0, 'h'},     {"port", required_argument, 0, 'p'},
        {"conns", required_argument, 0, 'n'},    {"size", required_argument, 0, 's'},
        {"duration", required_argument, 0, 'd'}, {"warmup", required_argument, 0, 'w'},
        {"settle", required_argument, 0, 'S'},   {"pid", required_argument, 0, 'P'},
        {0, 0, 0, 0},
    };
    struct cfg c = {.host = "127.0.0.1", .port = 0, .conns = 1, .size = 64, .duration = 3, .warmup = 0.5, .settle = 0.5};
    int o, rc;

    if (argc < 2 || argv[1][0] == '-')
        usage();
    c.mode = argv[1];
    optind = 2;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'h': c.host = optarg; break;
        case 'p': c.port = (int)num(optarg, 1, 65535); break;
        case 'n': c.conns = (int)num(optarg, 1, 1000000); break;
        case 's': c.size = (size_t)num(optarg, 1, 1 << 30); break;
        case 'd': c.duration = num(optarg, 0.01, 3600); break;
        case 'w': c.warmup = num(optarg, 0, 3600); break;
        case 'S': c.settle = num(optarg, 0, 60); break;
        case 'P': c.pid = (int)num(optarg, 1, 1 << 30); break;
        default: usage();
        }
    }
    if (optind != argc || c.port == 0)
        usage();
    if (strcmp(c.mode, "idle") == 0)
        c.size = IDLE_MSG;

    /* Loopback only: refuse anything else before touching the network. */
    memset(&g_addr, 0, sizeof g_addr);
    if (strcmp(c.host, "127.0.0.1") == 0) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&g_addr;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)c.port);
        inet_pton(AF_INET, c.host, &sin->sin_addr);
        g_addrlen = sizeof *sin;
    } else if (strcmp(c.host, "::1") == 0) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&g_addr;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)c.port);
        inet_pton(AF_INET6, c.host, &sin6->sin6_addr);
        g_addrlen = sizeof *sin6;
    } else {
        fprintf(stderr, "loadgen: refusing host '%s': only 127.0.0.1 and ::1 are allowed\n", c.host);
        return 2;
    }

    raise_nofile(c.conns);

    /* Whatever happens, the run ends: a hang is killed by the alarm. */
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)(c.warmup + c.duration + 2 * c.settle) + 30);
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (strcmp(c.mode, "tcp-pingpong") == 0)
        rc = run_tcp_pingpong(&c);
    else if (strcmp(c.mode, "tcp-churn") == 0)
        rc = run_tcp_churn(&c);
    else if (strcmp(c.mode, "tcp-stream") == 0)
        rc = run_tcp_stream(&c);
    else if (strcmp(c.mode, "tcp-oneshot") == 0)
        rc = run_tcp_oneshot(&c);
    else if (strcmp(c.mode, "tcp-fetch") == 0)
        rc = run_tcp_fetch(&c);
    else if (strcmp(c.mode, "udp-pingpong") == 0)
        rc = run_udp_pingpong(&c);
    else if (strcmp(c.mode, "idle") == 0)
        rc = run_idle(&c);
    else
        usage();
    return rc;
}
