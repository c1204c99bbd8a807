/*
 * tcp_server.c - the classic TCP server, on netsock.
 *
 * Shows: ns_tcp_serve with on_open/on_close options, reading the bound
 * address back, answering from the data callback, and a clean shutdown
 * from a signal handler (ns_server_stop is async-signal-safe).
 *
 * Every time a connection sends something, the server prints it, answers
 * "ACK!" and closes the connection.
 *
 * The classic version gives each client a thread, so its handler may block.
 * Here the handler is the classic blocking one too (it "looks the answer
 * up" for WORK_MS, standing in for a file or a database), and it runs on a
 * pool of WORKERS threads (ns_options_set_workers): a slow client does not
 * stall the others, yet 10,000 clients still take 8 threads, not 10,000.
 * Each connection's callbacks still run one at a time and in order.
 *
 * Try it:
 *   ./tcp_server 127.0.0.1:6666          (default 0.0.0.0:6666; port 0 = any free port)
 *   ./tcp_client 127.0.0.1:6666 hello    or:  echo hello | nc 127.0.0.1 6666
 *   Ctrl-C stops the server.  "unix:/tmp/ns.sock" listens on a Unix socket.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <netsock.h>

#define WORKERS 8  /* threads the blocking handlers run on */
#define WORK_MS 10 /* how long the handler blocks per request */

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

static void on_open(ns_conn *conn, void *user)
{
    char peer[256];
    (void)user;
    if (ns_conn_peer(conn, peer, sizeof peer) != NS_OK)
        strcpy(peer, "?");
    printf("connection #%llu from %s\n", (unsigned long long)ns_conn_id(conn), peer);
}

static void on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    static const char answer[] = "ACK!";
    char peer[256];
    int rc;
    (void)user;

    if (ns_conn_peer(conn, peer, sizeof peer) != NS_OK)
        strcpy(peer, "?");
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        len--; /* print a typed line without its line break */
    printf("received from %s: %.*s\n", peer, (int)len, (const char *)data);

    /* the blocking part of a classic handler: fine on a worker thread */
    nanosleep(&(struct timespec){0, WORK_MS * 1000000L}, NULL);

    rc = ns_conn_send(conn, answer, strlen(answer));
    if (rc != NS_OK)
        fprintf(stderr, "send to %s failed: %s\n", peer, ns_strerror(rc));
    rc = ns_conn_close(conn); /* the answer is flushed first */
    if (rc != NS_OK && rc != NS_ERR_CLOSED)
        fprintf(stderr, "close of %s failed: %s\n", peer, ns_strerror(rc));
}

static void on_close(ns_conn *conn, int reason, void *user)
{
    unsigned long long id = (unsigned long long)ns_conn_id(conn);
    (void)user;
    if (reason == NS_OK)
        printf("connection #%llu closed\n", id);
    else /* NS_ERR_RESET: the peer reset it; NS_ERR_STOPPED: we are shutting down */
        printf("connection #%llu closed: %s\n", id, ns_strerror(reason));
}

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "0.0.0.0:6666";
    char bound[256];
    ns_options *opts;
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0); /* line-buffered even when redirected */

    opts = ns_options_new();
    if (opts == NULL) {
        fprintf(stderr, "ns_options_new failed\n");
        return 1;
    }
    if (ns_options_set_on_open(opts, on_open) != NS_OK ||
        ns_options_set_on_close(opts, on_close) != NS_OK ||
        ns_options_set_workers(opts, WORKERS) != NS_OK) {
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
    printf("listening on %s\n", bound);
    fflush(stdout);

    rc = ns_server_wait(g_server); /* returns once a signal stopped the server */
    if (rc != NS_OK)
        fprintf(stderr, "ns_server_wait: %s\n", ns_strerror(rc));
    /* The handler must never see a freed server; a second Ctrl-C now just ends us. */
    if (handle_signals(SIG_DFL) != 0)
        perror("sigaction");
    ns_server_free(g_server);
    printf("server stopped\n");
    return rc == NS_OK ? 0 : 1;
}
