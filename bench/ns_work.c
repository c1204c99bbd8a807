/*
 * ns_work.c - netsock servers whose handler works, for the workers scenarios.
 *
 *   ns_work oneshot HOST:PORT WORKERS BLOCK_MS   the classic server: each request (one read)
 *                                                 blocks BLOCK_MS, is answered "ACK!", and the
 *                                                 connection closed
 *   ns_work spin HOST:PORT WORKERS SPIN_US        an echo whose handler computes SPIN_US of
 *                                                 CPU time per message first (CPU-bound)
 *
 * One loop thread, run on main's thread (ns_options_set_run_in_wait); WORKERS worker threads
 * (ns_options_set_workers; 0: the handler runs on the loop thread). Prints "port=N".
 * SIGTERM or SIGINT stop the server.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <netsock.h>

static ns_server *g_server;
static long g_amount;

static void on_signal(int sig)
{
    (void)sig;
    ns_server_stop(g_server);
}

static void on_request(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct timespec ts = {g_amount / 1000, (g_amount % 1000) * 1000000L};
    (void)data;
    (void)len;
    (void)user;
    nanosleep(&ts, NULL);
    ns_conn_send(conn, "ACK!", 4);
    ns_conn_close(conn);
}

static long long thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void on_spin(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    long long until = thread_cpu_ns() + g_amount * 1000LL;
    (void)user;
    while (thread_cpu_ns() < until) {
    }
    ns_conn_send(conn, data, len);
}

int main(int argc, char **argv)
{
    ns_options *opts;
    struct sigaction sa;
    int rc, spin;

    if (argc != 5 || (strcmp(argv[1], "oneshot") != 0 && strcmp(argv[1], "spin") != 0)) {
        fprintf(stderr, "usage: ns_work oneshot|spin HOST:PORT WORKERS BLOCK_MS|SPIN_US\n");
        return 2;
    }
    spin = strcmp(argv[1], "spin") == 0;
    g_amount = strtol(argv[4], NULL, 10);
    opts = ns_options_new();
    if (opts == NULL || ns_options_set_workers(opts, (size_t)strtol(argv[3], NULL, 10)) != NS_OK ||
        ns_options_set_run_in_wait(opts, 1) != NS_OK) {
        fprintf(stderr, "ns_work: options: %s\n", ns_last_error());
        return 1;
    }
    rc = ns_tcp_serve(argv[2], spin ? on_spin : on_request, NULL, opts, &g_server);
    ns_options_free(opts);
    if (rc != NS_OK) {
        fprintf(stderr, "ns_work: cannot serve on %s: %s (%s)\n", argv[2], ns_strerror(rc), ns_last_error());
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
