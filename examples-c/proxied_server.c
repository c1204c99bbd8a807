/*
 * proxied_server.c - a server behind a load balancer that speaks the PROXY protocol.
 *
 * Shows: ns_options_set_proxy_protocol. HAProxy ("send-proxy" or "send-proxy-v2" on the
 * server line), nginx (proxy_protocol on), Envoy and cloud load balancers put a PROXY header
 * before each connection's first byte naming the client they accepted it from. With the
 * option on, netsock reads that header before on_open: ns_conn_peer reports the real client,
 * not the load balancer, and on_data never sees the header. Each line is answered with
 * "PEER: LINE". Only turn the option on when every connection comes through such a proxy:
 * a client reaching the server directly could name any address (SECURITY.md).
 *
 * Try it:
 *   ./proxied_server 127.0.0.1:7001
 *   printf 'PROXY TCP4 203.0.113.9 127.0.0.1 50000 7001\r\nhi\n' | nc -q1 127.0.0.1 7001
 *                                           "203.0.113.9:50000: hi"
 *   or HAProxy in front: server app 127.0.0.1:7001 send-proxy-v2
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <netsock.h>

static ns_server *g_server;

static void on_signal(int sig)
{
    (void)sig;
    ns_server_stop(g_server);
}

static void on_line(ns_conn *conn, const uint8_t *line, size_t len, void *user)
{
    char peer[128], reply[700];
    int n;
    (void)user;
    if (ns_conn_peer(conn, peer, sizeof peer) != NS_OK)
        strcpy(peer, "?");
    n = snprintf(reply, sizeof reply, "%s: %.*s", peer, (int)(len > 512 ? 512 : len), (const char *)line);
    ns_conn_send_frame(conn, reply, (size_t)n);
}

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "127.0.0.1:7001";
    struct sigaction sa;
    ns_options *opts;
    ns_stats stats;
    char bound[256];
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0);
    opts = ns_options_new();
    if (opts == NULL || ns_options_set_proxy_protocol(opts, 1) != NS_OK ||
        ns_options_set_framing(opts, NS_FRAMING_LINE) != NS_OK ||
        ns_options_set_connect_timeout_ms(opts, 5000) != NS_OK /* the header's deadline */) {
        fprintf(stderr, "options: %s\n", ns_last_error());
        return 1;
    }
    rc = ns_tcp_serve(addr, on_line, NULL, opts, &g_server);
    ns_options_free(opts);
    if (rc != NS_OK) {
        fprintf(stderr, "cannot serve on %s: %s (%s)\n", addr, ns_strerror(rc), ns_last_error());
        return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (ns_server_addr(g_server, bound, sizeof bound) != NS_OK)
        strcpy(bound, "?");
    printf("listening on %s (PROXY protocol required)\n", bound);
    rc = ns_server_wait(g_server);
    memset(&stats, 0, sizeof stats);
    stats.size = sizeof stats;
    if (ns_server_stats(g_server, &stats) == NS_OK)
        printf("served %llu connections; %llu refused for a bad or missing PROXY header\n",
               (unsigned long long)stats.accepted, (unsigned long long)stats.proxy_rejected);
    ns_server_free(g_server);
    return rc == NS_OK ? 0 : 1;
}
