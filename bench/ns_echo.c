/*
 * ns_echo.c - the echo server on netsock, as an application would write it.
 *
 *   ns_echo tcp|udp HOST:PORT [THREADS [wait|thread [reuseport]]]   (e.g. 127.0.0.1:0; prints "port=N")
 *
 * TCP: ns_tcp_serve, each chunk sent back with ns_conn_send; THREADS loop threads (default 1).
 * `wait` (the default) runs the first loop on main's thread inside ns_server_wait, as a
 * single-threaded server would (ns_options_set_run_in_wait); `thread` gives it a thread.
 * `reuseport`: one SO_REUSEPORT socket per loop (ns_options_set_reuseport) instead of one
 * socket whose connections loop 0 hands round.
 * UDP: ns_udp_serve, each datagram sent back with ns_udp_reply.
 * SIGTERM or SIGINT stop the server (ns_server_stop) and the program exits.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
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
    ns_conn_send(conn, data, len); /* NS_ERR_LIMIT only if the peer never reads */
}

static void on_datagram(ns_server *srv, const ns_peer *from, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    ns_udp_reply(srv, from, data, len); /* a full send buffer loses it, as UDP may */
}

int main(int argc, char **argv)
{
    ns_options *opts;
    struct sigaction sa;
    long threads = 1;
    int rc, udp, in_wait = 1, reuseport = argc == 6 && strcmp(argv[5], "reuseport") == 0;

    if (argc < 3 || argc > 6 || (strcmp(argv[1], "tcp") != 0 && strcmp(argv[1], "udp") != 0) ||
        (argc >= 5 && !(in_wait = strcmp(argv[4], "wait") == 0) && strcmp(argv[4], "thread") != 0) ||
        (argc == 6 && !reuseport)) {
        fprintf(stderr, "usage: ns_echo tcp|udp HOST:PORT [THREADS [wait|thread [reuseport]]]\n");
        return 2;
    }
    udp = strcmp(argv[1], "udp") == 0;
    if (argc >= 4 && ((threads = strtol(argv[3], NULL, 10)) < 1 || threads > 256)) {
        fprintf(stderr, "ns_echo: THREADS must be 1 to 256\n");
        return 2;
    }
    opts = ns_options_new();
    if (opts == NULL || ns_options_set_threads(opts, (size_t)threads) != NS_OK ||
        ns_options_set_run_in_wait(opts, in_wait) != NS_OK || ns_options_set_reuseport(opts, reuseport) != NS_OK) {
        fprintf(stderr, "ns_echo: options: %s\n", ns_last_error());
        return 1;
    }
    rc = udp ? ns_udp_serve(argv[2], on_datagram, NULL, opts, &g_server)
             : ns_tcp_serve(argv[2], on_data, NULL, opts, &g_server);
    ns_options_free(opts);
    if (rc != NS_OK) {
        fprintf(stderr, "ns_echo: cannot serve on %s: %s (%s)\n", argv[2], ns_strerror(rc), ns_last_error());
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
