/*
 * one_loop.c - a whole program on one thread: a TCP echo server, a UDP echo server and a
 * heartbeat timer, all on one loop that runs on main's thread (like uv_run).
 *
 * Shows: ns_loop_new with run_in_wait (the loop's thread is whoever calls ns_loop_run),
 * servers started on that loop with ns_options_set_loop instead of threads of their own, a
 * repeating timer (ns_timer_start), and stopping the lot from a signal handler with
 * ns_loop_stop. No callback here needs a lock: they all run on main's thread.
 *
 * Try it:
 *   ./one_loop 127.0.0.1:7777             (TCP and UDP on the same port; default 0.0.0.0:6666)
 *   nc 127.0.0.1 7777                     lines come back
 *   nc -u 127.0.0.1 7777                  datagrams come back
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <netsock.h>

static ns_loop *g_loop;
static unsigned long g_tcp_bytes, g_datagrams; /* main's thread only: no lock */

static void on_signal(int sig)
{
    (void)sig;
    ns_loop_stop(g_loop); /* async-signal-safe */
}

static void tcp_echo(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    ns_conn_send(conn, data, len);
    g_tcp_bytes += len;
}

static void udp_echo(ns_server *srv, const ns_peer *from, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    ns_udp_reply(srv, from, data, len);
    g_datagrams++;
}

static void heartbeat(uint64_t timer_id, void *user)
{
    unsigned *beats = user;
    (void)timer_id;
    printf("heartbeat %u: %lu TCP bytes and %lu datagrams echoed so far\n", ++*beats, g_tcp_bytes,
           g_datagrams);
}

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "0.0.0.0:6666";
    ns_options *o = ns_options_new();
    ns_server *tcp = NULL, *udp = NULL;
    char bound[256], udp_addr[256];
    unsigned beats = 0;
    uint64_t timer;
    struct sigaction sa;
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0);
    /* The loop: its first (and only) thread is the one that calls ns_loop_run. */
    ns_options_set_run_in_wait(o, 1);
    if (ns_loop_new(o, &g_loop) != NS_OK) {
        fprintf(stderr, "ns_loop_new: %s\n", ns_last_error());
        return 1;
    }
    /* Both servers on it: options carry the loop. */
    ns_options_set_loop(o, g_loop);
    rc = ns_tcp_serve(addr, tcp_echo, NULL, o, &tcp);
    if (rc == NS_OK) {
        ns_server_addr(tcp, bound, sizeof bound);
        /* the same port for UDP (port 0 above: the one the OS chose for TCP) */
        snprintf(udp_addr, sizeof udp_addr, "%s", bound);
        rc = ns_udp_serve(udp_addr, udp_echo, NULL, o, &udp);
    }
    ns_options_free(o);
    if (rc != NS_OK) {
        fprintf(stderr, "cannot serve on %s: %s (%s)\n", addr, ns_strerror(rc), ns_last_error());
        ns_server_free(tcp);
        ns_loop_free(g_loop);
        return 1;
    }
    ns_timer_start(g_loop, 1000, 1000, heartbeat, &beats, &timer);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    printf("listening on %s\nTCP and UDP on one thread\n", bound);

    rc = ns_loop_run(g_loop); /* everything above runs here until SIGINT/SIGTERM */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    ns_server_free(udp);
    ns_server_free(tcp);
    ns_loop_free(g_loop);
    printf("stopped after %u heartbeats\n", beats);
    return rc == NS_OK ? 0 : 1;
}
