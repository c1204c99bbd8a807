/*
 * echo_server.c - a TCP echo server, on netsock.
 *
 * Shows: the smallest useful server - every chunk received is sent straight
 * back with ns_conn_send (which copies the data and queues it if the peer
 * is slow).  When the peer closes its side, netsock flushes what is queued
 * and closes the connection.  SIGINT/SIGTERM stop the server cleanly.
 *
 * Try it:
 *   ./echo_server 127.0.0.1:7777          (default 0.0.0.0:6666; port 0 = any free port)
 *   nc 127.0.0.1 7777                     then type lines, Ctrl-D to finish
 *   ./tcp_client 127.0.0.1:7777 "echo me"
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <netsock.h>

static ns_server *g_server; /* set before the signal handlers are installed */

static void on_signal(int sig)
{
    (void)sig;
    ns_server_stop(g_server);
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

static void on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    int rc;
    (void)user;

    rc = ns_conn_send(conn, data, len);
    if (rc != NS_OK) {
        fprintf(stderr, "echo on #%llu failed: %s\n", (unsigned long long)ns_conn_id(conn),
                ns_strerror(rc));
        return;
    }
    printf("echoed %zu bytes on connection #%llu\n", len, (unsigned long long)ns_conn_id(conn));
}

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "0.0.0.0:6666";
    char bound[256];
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0); /* line-buffered even when redirected */

    rc = ns_tcp_serve(addr, on_data, NULL, NULL /* default options */, &g_server);
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

    rc = ns_server_wait(g_server);
    if (rc != NS_OK)
        fprintf(stderr, "ns_server_wait: %s\n", ns_strerror(rc));
    /* The handler must never see a freed server; a second Ctrl-C now just ends us. */
    if (handle_signals(SIG_DFL) != 0)
        perror("sigaction");
    ns_server_free(g_server);
    printf("server stopped\n");
    return rc == NS_OK ? 0 : 1;
}
