/*
 * mt_echo_server.c - a TCP echo server on several loop threads, on netsock.
 *
 * Shows: ns_options_set_threads (0: one loop thread per core), which spreads
 * connections over the threads as they are accepted; a graceful stop with
 * a drain timeout (echoes already queued get DRAIN_MS to reach the peer);
 * and the server's counters (ns_server_stats), printed on exit.
 *
 * With several loop threads, callbacks of different connections run at the
 * same time with the same `user` pointer: anything they share needs a lock
 * or an atomic.  This on_data touches nothing shared, so it needs neither.
 *
 * Try it:
 *   ./mt_echo_server 127.0.0.1:7000      (default 0.0.0.0:6666, one thread per core)
 *   ./mt_echo_server 127.0.0.1:7000 4    (four loop threads)
 *   nc 127.0.0.1 7000                    in several terminals, then type lines
 *   Ctrl-C stops the server and prints how much it echoed.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netsock.h>

#define DRAIN_MS 2000

static ns_server *g_server; /* set before the signal handlers are installed */

static void on_signal(int sig)
{
    (void)sig;
    ns_server_stop(g_server); /* only wakes the server up; main does the rest */
}

/* Route SIGINT and SIGTERM to handler (or SIG_DFL); -1 on failure. */
static int handle_signals(void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGINT, &sa, NULL) == 0 && sigaction(SIGTERM, &sa, NULL) == 0 ? 0 : -1;
}

/* Runs on whichever loop thread holds this connection. */
static void on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    int rc;
    (void)user;

    rc = ns_conn_send(conn, data, len);
    if (rc != NS_OK) /* NS_ERR_LIMIT: the peer does not read its echoes */
        fprintf(stderr, "echo on #%llu failed: %s\n", (unsigned long long)ns_conn_id(conn),
                ns_strerror(rc));
}

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "0.0.0.0:6666";
    unsigned long threads = 0; /* one per core */
    char bound[256], *end;
    ns_options *opts;
    ns_stats stats;
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0); /* line-buffered even when redirected */

    if (argc > 2) {
        errno = 0;
        threads = strtoul(argv[2], &end, 10);
        if (errno != 0 || end == argv[2] || *end != '\0' || threads > 256) {
            fprintf(stderr, "usage: mt_echo_server [ADDRESS [THREADS (0-256; 0: one per core)]]\n");
            return 2;
        }
    }

    opts = ns_options_new();
    if (opts == NULL) {
        fprintf(stderr, "ns_options_new failed\n");
        return 1;
    }
    if (ns_options_set_threads(opts, threads) != NS_OK ||
        ns_options_set_drain_timeout_ms(opts, DRAIN_MS) != NS_OK) {
        fprintf(stderr, "cannot set options: %s\n", ns_last_error());
        ns_options_free(opts);
        return 1;
    }
    rc = ns_tcp_serve(addr, on_data, NULL, opts, &g_server);
    ns_options_free(opts); /* serve copied it */
    if (rc != NS_OK) {
        fprintf(stderr, "cannot listen on %s: %s (%s)\n", addr, ns_strerror(rc), ns_last_error());
        return 1;
    }

    rc = ns_server_addr(g_server, bound, sizeof bound);
    if (rc != NS_OK) {
        fprintf(stderr, "ns_server_addr: %s\n", ns_strerror(rc));
        ns_server_free(g_server);
        return 1;
    }

    if (handle_signals(on_signal) != 0) {
        perror("sigaction");
        ns_server_free(g_server);
        return 1;
    }
    if (threads == 0)
        printf("loop threads: one per core\n");
    else
        printf("loop threads: %lu\n", threads);
    printf("listening on %s\n", bound);
    fflush(stdout);

    rc = ns_server_wait(g_server); /* returns once a signal stopped the server and it drained */
    if (rc != NS_OK)
        fprintf(stderr, "ns_server_wait: %s\n", ns_strerror(rc));
    /* The handler must never see a freed server; a second Ctrl-C now just ends us. */
    if (handle_signals(SIG_DFL) != 0)
        perror("sigaction");

    stats.size = sizeof stats; /* how much of ns_stats this program knows */
    if (ns_server_stats(g_server, &stats) == NS_OK)
        printf("connections: %llu accepted, %llu closed\n"
               "bytes: %llu in, %llu out\n",
               (unsigned long long)stats.accepted, (unsigned long long)stats.closed,
               (unsigned long long)stats.bytes_in, (unsigned long long)stats.bytes_out);
    else
        fprintf(stderr, "ns_server_stats: %s\n", ns_last_error());
    ns_server_free(g_server);
    printf("server stopped\n");
    return rc == NS_OK ? 0 : 1;
}
