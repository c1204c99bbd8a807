/*
 * ns_fetch.c - the large-response scenario's server: every byte a client sends asks for one
 * SIZE-byte response, sent in one of two ways:
 *
 *   ns_fetch owned|copy HOST:PORT SIZE    (e.g. 127.0.0.1:0 67108864; prints "port=N")
 *
 *   owned   ns_conn_send_owned from one response buffer all connections share (made once,
 *           never freed: its free_fn does nothing): written from where it is
 *   copy    ns_conn_send of the same buffer: what the socket does not take at once is copied
 *           into the connection's queue (one send of any size is taken when nothing waits)
 *
 * Runs on main's thread (ns_options_set_run_in_wait); SIGTERM or SIGINT stop it.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netsock.h>

static ns_server *g_server;
static int g_owned;
static char *g_resp;
static size_t g_size;

static void keep(void *data, void *user)
{
    (void)data, (void)user; /* the shared response lives as long as the program */
}

static void on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    size_t i;
    (void)data, (void)user;
    for (i = 0; i < len; i++) {
        int rc = g_owned ? ns_conn_send_owned(conn, g_resp, g_size, keep, NULL) : ns_conn_send(conn, g_resp, g_size);
        if (rc != NS_OK) { /* NS_ERR_LIMIT: a client asking faster than it reads */
            ns_conn_close(conn);
            return;
        }
    }
}

static void on_signal(int sig)
{
    (void)sig;
    ns_server_stop(g_server);
}

int main(int argc, char **argv)
{
    ns_options *opts;
    struct sigaction sa;
    int rc;

    if (argc != 4 || (strcmp(argv[1], "owned") != 0 && strcmp(argv[1], "copy") != 0) ||
        (g_size = strtoul(argv[3], NULL, 10)) == 0) {
        fprintf(stderr, "usage: ns_fetch owned|copy HOST:PORT SIZE\n");
        return 2;
    }
    g_owned = strcmp(argv[1], "owned") == 0;
    if ((g_resp = malloc(g_size)) == NULL) {
        fprintf(stderr, "ns_fetch: cannot allocate %zu bytes\n", g_size);
        return 1;
    }
    memset(g_resp, 'f', g_size);
    opts = ns_options_new();
    if (opts == NULL || ns_options_set_run_in_wait(opts, 1) != NS_OK) {
        fprintf(stderr, "ns_fetch: options: %s\n", ns_last_error());
        return 1;
    }
    rc = ns_tcp_serve(argv[2], on_data, NULL, opts, &g_server);
    ns_options_free(opts);
    if (rc != NS_OK) {
        fprintf(stderr, "ns_fetch: cannot serve on %s: %s (%s)\n", argv[2], ns_strerror(rc), ns_last_error());
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
    free(g_resp);
    return rc == NS_OK ? 0 : 1;
}
