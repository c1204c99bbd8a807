/*
 * udp_server.c - the classic UDP server, on netsock.
 *
 * Shows: ns_udp_serve, printing the sender of a datagram (ns_peer_format)
 * and answering it (ns_udp_reply), plus a clean shutdown on SIGINT/SIGTERM.
 * Every datagram is answered with "Recvice message ok!" (the spelling of
 * the classic tutorial this mirrors).
 *
 * Try it:
 *   ./udp_server 127.0.0.1:6666          (default 0.0.0.0:6666; port 0 = any free port)
 *   ./udp_client 127.0.0.1:6666          then type lines
 *   or: nc -u 127.0.0.1 6666
 *   Ctrl-C stops the server.
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

static void on_datagram(ns_server *srv, const ns_peer *from, const uint8_t *data, size_t len,
                        void *user)
{
    static const char answer[] = "Recvice message ok!";
    char peer[256];
    int rc;
    (void)user;

    if (ns_peer_format(from, peer, sizeof peer) != NS_OK)
        strcpy(peer, "?");
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        len--; /* nc sends the line break too */
    printf("received from %s: %.*s\n", peer, (int)len, (const char *)data);

    rc = ns_udp_reply(srv, from, answer, strlen(answer));
    if (rc != NS_OK)
        fprintf(stderr, "reply to %s failed: %s (%s)\n", peer, ns_strerror(rc), ns_last_error());
}

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "0.0.0.0:6666";
    char bound[256];
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0); /* line-buffered even when redirected */

    rc = ns_udp_serve(addr, on_datagram, NULL, NULL /* default options */, &g_server);
    if (rc != NS_OK) {
        fprintf(stderr, "cannot bind %s: %s (%s)\n", addr, ns_strerror(rc), ns_last_error());
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
