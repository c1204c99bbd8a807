/*
 * ns_timers.c - netsock's timers under load, as an application would use them (the `timers`
 * and `conn-timers` scenarios; uv_timers.c does the same with libuv).
 *
 *   ns_timers timers N PERIOD_MS WARMUP_S WINDOW_S
 *       One loop on main's thread (ns_loop_new with run_in_wait, ns_loop_run). N repeating
 *       timers (ns_timer_start, every PERIOD_MS), their first expiries spread evenly over the
 *       first period, started from a task on the loop; each fire counts one. After WARMUP_S the
 *       window of WINDOW_S is measured; prints one RESULT line (timers_common.h) and exits.
 *   ns_timers conn HOST:PORT [timer|notimer]
 *       A TCP echo server (ns_tcp_serve, the loop in ns_server_wait on main's thread) whose
 *       on_data re-arms the connection's timer (ns_conn_set_timer, 5 s) before echoing each
 *       chunk with ns_conn_send; `notimer` leaves the timer alone. A timer that fires closes
 *       its connection. Prints "port=N" once bound; SIGTERM or SIGINT stop it.
 *
 * Every run is bounded: an alarm ends a `timers` run that overstays its time by 30 s.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netsock.h>

#include "timers_common.h"

/* ---- timers ---- */

static ns_loop *g_loop;
static struct tcfg g_cfg;
static struct tsnap g_before, g_a, g_b;
static uint64_t g_fires;
static uint64_t *g_ids; /* what the application keeps of each timer: its id, to stop it */
static int g_failed;

static void on_fire(uint64_t id, void *user)
{
    (void)id;
    (void)user;
    g_fires++;
}

static void on_window_start(uint64_t id, void *user)
{
    (void)id;
    (void)user;
    tc_snap(&g_a, g_fires);
}

static void on_window_end(uint64_t id, void *user)
{
    (void)id;
    (void)user;
    tc_snap(&g_b, g_fires);
    ns_loop_stop(g_loop);
}

/* Runs on the loop: starts the N timers, then the two that bound the window. */
static void start_all(void *user)
{
    uint64_t id;
    uint32_t warm = (uint32_t)(g_cfg.warmup_s * 1000), win = (uint32_t)(g_cfg.window_s * 1000);
    (void)user;
    for (long i = 0; i < g_cfg.n; i++) {
        if (ns_timer_start(g_loop, (uint32_t)tc_first_ms(&g_cfg, i), (uint32_t)g_cfg.period_ms, on_fire, NULL,
                           &g_ids[i]) != NS_OK) {
            fprintf(stderr, "ns_timers: ns_timer_start: %s\n", ns_last_error());
            g_failed = 1;
            ns_loop_stop(g_loop);
            return;
        }
    }
    if (ns_timer_start(g_loop, warm, 0, on_window_start, NULL, &id) != NS_OK ||
        ns_timer_start(g_loop, warm + win, 0, on_window_end, NULL, &id) != NS_OK) {
        fprintf(stderr, "ns_timers: ns_timer_start: %s\n", ns_last_error());
        g_failed = 1;
        ns_loop_stop(g_loop);
    }
}

static int run_timers(char **argv)
{
    ns_options *opts = ns_options_new();
    if (tc_parse(argv, &g_cfg) != 0) {
        fprintf(stderr, "ns_timers: bad N PERIOD_MS WARMUP_S WINDOW_S\n");
        return 2;
    }
    alarm((unsigned)(g_cfg.warmup_s + g_cfg.window_s) + 30);
    if (opts == NULL || ns_options_set_run_in_wait(opts, 1) != NS_OK || ns_loop_new(opts, &g_loop) != NS_OK) {
        fprintf(stderr, "ns_timers: loop: %s\n", ns_last_error());
        return 1;
    }
    ns_options_free(opts);
    tc_snap(&g_before, 0);
    if ((g_ids = calloc((size_t)g_cfg.n, sizeof *g_ids)) == NULL) {
        fprintf(stderr, "ns_timers: out of memory\n");
        return 1;
    }
    if (ns_loop_post(g_loop, start_all, NULL) != NS_OK || ns_loop_run(g_loop) != NS_OK) {
        fprintf(stderr, "ns_timers: run: %s\n", ns_last_error());
        return 1;
    }
    if (g_failed || g_b.t_ns == 0)
        return 1;
    tc_print("netsock", &g_cfg, &g_before, &g_a, &g_b, "");
    ns_loop_free(g_loop);
    free(g_ids);
    return 0;
}

/* ---- conn ---- */

static ns_server *g_server;
static int g_rearm = 1;

static void on_signal(int sig)
{
    (void)sig;
    ns_server_stop(g_server);
}

static void on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    if (g_rearm)
        ns_conn_set_timer(conn, CONN_TIMER_MS);
    ns_conn_send(conn, data, len); /* NS_ERR_LIMIT only if the peer never reads */
}

static void on_conn_timer(ns_conn *conn, void *user)
{
    (void)user;
    ns_conn_close(conn); /* silent for 5 s */
}

static int run_conn(int argc, char **argv)
{
    ns_options *opts;
    struct sigaction sa;
    int rc;

    if (argc == 2 && !(g_rearm = strcmp(argv[1], "timer") == 0) && strcmp(argv[1], "notimer") != 0) {
        fprintf(stderr, "ns_timers: conn HOST:PORT [timer|notimer]\n");
        return 2;
    }
    tc_raise_nofile();
    opts = ns_options_new();
    if (opts == NULL || ns_options_set_run_in_wait(opts, 1) != NS_OK ||
        ns_options_set_on_timer(opts, on_conn_timer) != NS_OK) {
        fprintf(stderr, "ns_timers: options: %s\n", ns_last_error());
        return 1;
    }
    rc = ns_tcp_serve(argv[0], on_data, NULL, opts, &g_server);
    ns_options_free(opts);
    if (rc != NS_OK) {
        fprintf(stderr, "ns_timers: cannot serve on %s: %s (%s)\n", argv[0], ns_strerror(rc), ns_last_error());
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

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "timers") == 0)
        return run_timers(argv + 2);
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "conn") == 0)
        return run_conn(argc - 2, argv + 2);
    fprintf(stderr, "usage: ns_timers timers N PERIOD_MS WARMUP_S WINDOW_S\n"
                    "       ns_timers conn HOST:PORT [timer|notimer]\n");
    return 2;
}
