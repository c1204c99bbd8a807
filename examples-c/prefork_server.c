/*
 * prefork_server.c - N worker processes serving one port, and a parent that keeps them up.
 *
 * Shows: ns_options_set_reuseport. Each worker is a process of its own with its own netsock
 * server bound to the same address with SO_REUSEPORT: the kernel spreads new connections over
 * the workers, with no accept lock and nothing shared between them, and a worker that dies
 * takes only its own connections with it. The parent only watches: it restarts a worker that
 * died, and on SIGINT/SIGTERM stops them all and exits. Each line a client sends is answered
 * with "worker PID: LINE", so you can see the spreading.
 *
 * The parent binds the address once (SO_REUSEPORT, never listening) before it starts the
 * workers: port 0 becomes a real port that every worker then binds, and the port stays
 * reserved for the workers while one restarts. It uses no netsock itself, so forking is safe
 * (a process with netsock loop threads should not fork without exec).
 *
 * Try it:
 *   ./prefork_server 127.0.0.1:7000 4     (default 127.0.0.1:0, 2 workers)
 *   for i in 1 2 3 4 5 6; do echo hi | nc -q1 127.0.0.1 7000; done
 *   kill <a worker's pid>                 the parent starts another
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#define _DEFAULT_SOURCE /* SO_REUSEPORT is Linux's, not POSIX's */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <netsock.h>

#define MAX_WORKERS 64

static volatile sig_atomic_t g_stopping; /* the parent was told to stop */
static ns_server *g_server;              /* a worker's server */

/* ---- a worker ---------------------------------------------------------------------------- */

static void worker_signal(int sig)
{
    (void)sig;
    ns_server_stop(g_server);
}

static void on_line(ns_conn *conn, const uint8_t *line, size_t len, void *user)
{
    char reply[600];
    int n;
    (void)user;
    n = snprintf(reply, sizeof reply, "worker %d: %.*s", (int)getpid(), (int)(len > 512 ? 512 : len),
                 (const char *)line);
    ns_conn_send_frame(conn, reply, (size_t)n); /* the line framing adds the "\n" */
}

/* Serves `addr` until SIGTERM; the process's exit status. */
static int worker(const char *addr)
{
    struct sigaction sa;
    ns_options *opts = ns_options_new();
    int rc;

    if (opts == NULL || ns_options_set_reuseport(opts, 1) != NS_OK ||
        ns_options_set_framing(opts, NS_FRAMING_LINE) != NS_OK ||
        ns_options_set_run_in_wait(opts, 1) != NS_OK) {
        fprintf(stderr, "worker %d: options: %s\n", (int)getpid(), ns_last_error());
        return 1;
    }
    rc = ns_tcp_serve(addr, on_line, NULL, opts, &g_server);
    ns_options_free(opts);
    if (rc != NS_OK) {
        fprintf(stderr, "worker %d: cannot serve on %s: %s (%s)\n", (int)getpid(), addr, ns_strerror(rc),
                ns_last_error());
        return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = worker_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGINT, SIG_IGN); /* Ctrl-C reaches the whole group: the parent decides */
    printf("worker %d: serving %s\n", (int)getpid(), addr);
    fflush(stdout);
    rc = ns_server_wait(g_server); /* runs the loop on this thread (run_in_wait) */
    ns_server_free(g_server);
    return rc == NS_OK ? 0 : 1;
}

/* ---- the parent -------------------------------------------------------------------------- */

static void parent_signal(int sig)
{
    (void)sig;
    g_stopping = 1;
}

/* Starts a worker process for `addr`; its pid, or -1. `reserve` is closed in the child. */
static pid_t start_worker(const char *addr, int reserve)
{
    pid_t pid;
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        signal(SIGTERM, SIG_DFL);
        close(reserve);
        _exit(worker(addr));
    }
    return pid;
}

/* Binds 127.0.0.1:port (IPv4 "host:port" text) with SO_REUSEPORT, without listening; writes
 * the address with the port it got into `out`. The socket, or -1. */
static int reserve_port(const char *addr, char *out, size_t cap)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    char host[64];
    const char *colon = strrchr(addr, ':');
    int one = 1, fd;

    if (colon == NULL || (size_t)(colon - addr) >= sizeof host)
        return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -1;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    snprintf(out, cap, "%s:%d", host, ntohs(sa.sin_port));
    return fd;
}

int main(int argc, char **argv)
{
    const char *want = argc > 1 ? argv[1] : "127.0.0.1:0";
    int n = argc > 2 ? atoi(argv[2]) : 2;
    pid_t workers[MAX_WORKERS];
    struct sigaction sa;
    char addr[96];
    int i, reserve, status;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (n < 1 || n > MAX_WORKERS) {
        fprintf(stderr, "usage: prefork_server [IPV4:PORT] [WORKERS 1-%d]\n", MAX_WORKERS);
        return 2;
    }
    reserve = reserve_port(want, addr, sizeof addr);
    if (reserve < 0) {
        fprintf(stderr, "prefork_server: cannot bind %s: %s\n", want, strerror(errno));
        return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = parent_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    printf("listening on %s with %d workers (parent %d)\n", addr, n, (int)getpid());
    for (i = 0; i < n; i++)
        workers[i] = start_worker(addr, reserve);

    /* Watch: a worker that exits while we are not stopping is replaced. */
    while (!g_stopping) {
        pid_t dead = waitpid(-1, &status, 0);
        if (dead < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (i = 0; i < n; i++) {
            if (workers[i] == dead && !g_stopping) {
                workers[i] = start_worker(addr, reserve);
                printf("worker %d died; restarted as %d\n", (int)dead, (int)workers[i]);
            }
        }
    }
    for (i = 0; i < n; i++)
        if (workers[i] > 0)
            kill(workers[i], SIGTERM);
    for (i = 0; i < n; i++)
        if (workers[i] > 0)
            waitpid(workers[i], &status, 0);
    close(reserve);
    printf("stopped\n");
    return 0;
}
