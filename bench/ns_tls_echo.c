/*
 * ns_tls_echo.c - the TLS echo server on netsock, as an application would write it.
 *
 *   ns_tls_echo HOST:PORT CERT.pem KEY.pem        (e.g. 127.0.0.1:0; prints "port=N")
 *
 * ns_tcp_serve with ns_options_set_tls (rustls inside netsock, provider ring), one loop run on
 * main's thread inside ns_server_wait; each chunk of plaintext sent back with ns_conn_send.
 * SIGTERM or SIGINT stop the server (ns_server_stop) and the program exits.
 */
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

static void on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    ns_conn_send(conn, data, len);
}

int main(int argc, char **argv)
{
    ns_options *opts;
    ns_tls *tls = NULL;
    struct sigaction sa;
    int rc;

    if (argc != 4) {
        fprintf(stderr, "usage: ns_tls_echo HOST:PORT CERT.pem KEY.pem\n");
        return 2;
    }
    opts = ns_options_new();
    if (opts == NULL || ns_tls_server_new(argv[2], argv[3], &tls) != NS_OK ||
        ns_options_set_tls(opts, tls) != NS_OK || ns_options_set_run_in_wait(opts, 1) != NS_OK) {
        fprintf(stderr, "ns_tls_echo: options: %s\n", ns_last_error());
        return 1;
    }
    ns_tls_free(tls);
    rc = ns_tcp_serve(argv[1], on_data, NULL, opts, &g_server);
    ns_options_free(opts);
    if (rc != NS_OK) {
        fprintf(stderr, "ns_tls_echo: cannot serve on %s: %s (%s)\n", argv[1], ns_strerror(rc),
                ns_last_error());
        return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    printf("port=%d\n", ns_server_port(g_server));
    fflush(stdout);
    rc = ns_server_wait(g_server);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    ns_server_free(g_server);
    return rc == NS_OK ? 0 : 1;
}
