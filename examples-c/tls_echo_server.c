/*
 * tls_echo_server.c - a TLS echo server, on netsock (TLS by rustls, inside the library).
 *
 * Shows: a server's TLS configuration from PEM files (ns_tls_server_new), ALPN
 * (ns_tls_set_alpn), the configuration handed to the options (ns_options_set_tls) and freed
 * at once, and what a connection learns from its handshake: ns_conn_server_name (the SNI the
 * client asked for) and ns_conn_alpn.  Callbacks see plaintext, as without TLS; on_open runs
 * once the handshake is done, and a failed handshake never reaches the callbacks (it is
 * counted in ns_stats.tls_failures and logged at NS_LOG_INFO).
 *
 * Try it (a certificate for localhost: sh tests/tls/certs.sh /tmp/certs makes one):
 *   ./tls_echo_server 127.0.0.1:8443 /tmp/certs/server.pem /tmp/certs/server.key
 *   openssl s_client -connect 127.0.0.1:8443 -servername localhost -alpn echo \
 *       -CAfile /tmp/certs/ca.pem        then type lines, Ctrl-D to finish
 *   ./tls_client localhost:8443 /tmp/certs/ca.pem "echo me"
 * Mutual TLS (clients must present a certificate signed by the CA given last):
 *   ./tls_echo_server 127.0.0.1:8443 server.pem server.key /tmp/certs/ca.pem
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

/* The handshake is done: say whom the client asked for and what protocol it agreed on. */
static void on_open(ns_conn *conn, void *user)
{
    char sni[256], alpn[256];
    (void)user;
    if (ns_conn_server_name(conn, sni, sizeof sni) != NS_OK)
        sni[0] = '\0';
    if (ns_conn_alpn(conn, alpn, sizeof alpn) != NS_OK)
        alpn[0] = '\0';
    printf("connection #%llu: TLS up (SNI \"%s\", ALPN \"%s\")\n",
           (unsigned long long)ns_conn_id(conn), sni, alpn);
}

static void on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    int rc;
    (void)user;
    rc = ns_conn_send(conn, data, len); /* sealed and sent as the peer reads */
    if (rc != NS_OK)
        fprintf(stderr, "echo on #%llu failed: %s\n", (unsigned long long)ns_conn_id(conn),
                ns_strerror(rc));
}

/* NS_OK: the client sent close_notify (or we closed); NS_ERR_CLOSED: it ended the TCP
 * connection without one (a truncation). */
static void on_close(ns_conn *conn, int reason, void *user)
{
    (void)user;
    printf("connection #%llu closed: %s\n", (unsigned long long)ns_conn_id(conn),
           ns_strerror(reason));
}

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "127.0.0.1:8443";
    const char *cert = argc > 2 ? argv[2] : "server.pem";
    const char *key = argc > 3 ? argv[3] : "server.key";
    const char *client_ca = argc > 4 ? argv[4] : NULL;
    ns_tls *tls = NULL;
    ns_options *opts;
    ns_stats stats;
    char bound[256];
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0); /* line-buffered even when redirected */

    rc = ns_tls_server_new(cert, key, &tls);
    if (rc != NS_OK) {
        fprintf(stderr, "cannot load %s / %s: %s (%s)\n", cert, key, ns_strerror(rc),
                ns_last_error());
        return 1;
    }
    /* a client offering protocols, neither of these, is refused; one offering none is served */
    ns_tls_set_alpn(tls, "echo,http/1.1");
    if (client_ca && (rc = ns_tls_set_client_ca(tls, client_ca)) != NS_OK) {
        fprintf(stderr, "cannot load %s: %s (%s)\n", client_ca, ns_strerror(rc), ns_last_error());
        ns_tls_free(tls);
        return 1;
    }

    opts = ns_options_new();
    if (!opts || ns_options_set_tls(opts, tls) != NS_OK) {
        fprintf(stderr, "ns_options_set_tls: %s\n", ns_last_error());
        ns_tls_free(tls);
        ns_options_free(opts);
        return 1;
    }
    ns_tls_free(tls); /* the options keep what they need */
    ns_options_set_on_open(opts, on_open);
    ns_options_set_on_close(opts, on_close);
    ns_options_set_connect_timeout_ms(opts, 5000); /* a handshake must be done within 5 s */

    rc = ns_tcp_serve(addr, on_data, NULL, opts, &g_server);
    ns_options_free(opts);
    if (rc != NS_OK) {
        fprintf(stderr, "cannot listen on %s: %s (%s)\n", addr, ns_strerror(rc), ns_last_error());
        return 1;
    }
    if (ns_server_addr(g_server, bound, sizeof bound) != NS_OK || handle_signals(on_signal) != 0) {
        fprintf(stderr, "cannot start: %s\n", ns_last_error());
        ns_server_free(g_server);
        return 1;
    }
    printf("listening on %s\n", bound); /* TLS: try it with openssl s_client, above */

    rc = ns_server_wait(g_server);
    if (handle_signals(SIG_DFL) != 0)
        perror("sigaction");
    memset(&stats, 0, sizeof stats);
    stats.size = sizeof stats;
    if (ns_server_stats(g_server, &stats) == NS_OK)
        printf("handshakes: %llu done, %llu failed\n", (unsigned long long)stats.tls_handshakes,
               (unsigned long long)stats.tls_failures);
    ns_server_free(g_server);
    printf("server stopped\n");
    return rc == NS_OK ? 0 : 1;
}
