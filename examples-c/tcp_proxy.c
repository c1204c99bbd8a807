/*
 * tcp_proxy.c - a TCP proxy, on netsock: every connection to it is relayed to an upstream
 * server, both ways, on one loop thread.
 *
 * Shows: opening a connection from inside a callback without blocking the loop
 * (ns_tcp_connect_async on the server's own loop, ns_server_loop), holding the client
 * back until the upstream answers (ns_conn_pause / ns_conn_resume), reaching a connection
 * from the other side's callbacks by id (ns_server_post, ns_server_send, ns_server_close),
 * and backpressure both ways: a chunk the other side's write buffer refuses (NS_ERR_LIMIT)
 * is held, reading from its sender pauses, and both go on when the other side drains.
 *
 * When either side ends, the other is closed once what is queued for it is written. So it
 * relays sessions where each side reads while the other writes (interactive protocols,
 * HTTP keep-alive, Redis); a client that half-closes and then waits for the reply (as
 * ns_tcp_send and tcp_client do) gets nothing back, because netsock closes a connection at
 * its peer's end.
 *
 * Try it:
 *   ./echo_server 127.0.0.1:7777
 *   ./tcp_proxy 127.0.0.1:8888 127.0.0.1:7777
 *   nc 127.0.0.1 8888                     then type lines: they come back through the proxy
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netsock.h>

static ns_server *g_server;
static const char *g_upstream;

/* One relayed connection: the client's id on our server, and our client to the upstream.
 * Both live on the server's loop thread, so only that thread touches a pair. */
struct pair {
    uint64_t down;    /* the client's connection on our server */
    ns_client *up;    /* our connection to the upstream */
    int down_closed;  /* each side's on_close sets its flag; the last one frees the pair */
    int up_closed;
    /* A chunk the upstream (to_up) or the client (to_down) refused for now, with its length:
     * its sender is paused until the receiver drains. */
    uint8_t *to_up, *to_down;
    size_t to_up_len, to_down_len;
};

static void free_if_done(struct pair *p)
{
    if (p->down_closed && p->up_closed) {
        free(p->to_up);
        free(p->to_down);
        free(p);
    }
}

/* Keeps a copy of a refused chunk; 0 if out of memory. */
static int hold(uint8_t **buf, size_t *buf_len, const uint8_t *data, size_t len)
{
    *buf = malloc(len ? len : 1);
    if (!*buf)
        return 0;
    memcpy(*buf, data, len);
    *buf_len = len;
    return 1;
}

/* ---- upstream side: a client on the server's loop ------------------------------------ */

static void resume_down(ns_conn *conn, void *user)
{
    (void)user;
    if (conn) /* NULL: the client left meanwhile */
        ns_conn_resume(conn);
}

static void up_on_open(ns_conn *conn, void *user)
{
    struct pair *p = user;
    (void)conn;
    /* The upstream answered: let the client's bytes flow. */
    ns_server_post(g_server, p->down, resume_down, NULL);
}

static void up_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct pair *p = user;
    if (ns_server_send(g_server, p->down, data, len) == NS_ERR_LIMIT) {
        /* The client reads slower than the upstream writes: hold the chunk, stop reading the
         * upstream; the client's on_drain sends it and resumes. */
        if (!hold(&p->to_down, &p->to_down_len, data, len))
            ns_conn_close(conn);
        ns_conn_pause(conn);
    }
}

/* The upstream took what was queued for it: send what was held, and let the client go on. */
static void up_on_drain(ns_conn *conn, void *user)
{
    struct pair *p = user;
    (void)conn;
    if (p->to_up) {
        if (ns_client_send(p->up, p->to_up, p->to_up_len) == NS_ERR_LIMIT)
            return; /* still full: wait for the next drain */
        free(p->to_up);
        p->to_up = NULL;
    }
    ns_server_post(g_server, p->down, resume_down, NULL);
}

static void resume_up(ns_conn *conn, void *user)
{
    (void)user;
    if (conn)
        ns_conn_resume(conn);
}

static void up_on_close(ns_conn *conn, int reason, void *user)
{
    struct pair *p = user;
    (void)conn;
    if (reason != NS_OK)
        fprintf(stderr, "upstream for #%llu: %s\n", (unsigned long long)p->down, ns_strerror(reason));
    ns_server_close(g_server, p->down); /* NS_ERR_CLOSED if it is gone already: fine */
    p->up_closed = 1;
    free_if_done(p);
}

/* ---- downstream side: the proxy's own server ------------------------------------------ */

static void down_on_open(ns_conn *conn, void *user)
{
    struct pair *p = calloc(1, sizeof *p);
    ns_options *o = ns_options_new();
    (void)user;
    if (!p || !o) {
        free(p);
        ns_options_free(o);
        ns_conn_close(conn);
        return;
    }
    p->down = ns_conn_id(conn);
    ns_conn_set_user(conn, p);
    ns_conn_pause(conn); /* nothing to forward to yet */

    ns_options_set_loop(o, ns_server_loop(g_server)); /* same thread: no locks needed */
    ns_options_set_on_open(o, up_on_open);
    ns_options_set_on_drain(o, up_on_drain);
    ns_options_set_on_close(o, up_on_close);
    if (ns_tcp_connect_async(g_upstream, up_on_data, p, o, &p->up) != NS_OK) {
        fprintf(stderr, "cannot connect to %s: %s\n", g_upstream, ns_last_error());
        p->up_closed = 1;
        ns_conn_close(conn);
    }
    ns_options_free(o);
}

static void down_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct pair *p = ns_conn_user(conn);
    (void)user;
    if (ns_client_send(p->up, data, len) == NS_ERR_LIMIT) {
        /* The upstream's buffer is full: hold the chunk (it was not accepted) and stop
         * reading the client until the upstream drains. */
        if (!hold(&p->to_up, &p->to_up_len, data, len))
            ns_conn_close(conn);
        ns_conn_pause(conn);
    }
}

/* The client took what was queued for it: send what was held, and let the upstream go on. */
static void down_on_drain(ns_conn *conn, void *user)
{
    struct pair *p = ns_conn_user(conn);
    (void)user;
    if (p->to_down) {
        if (ns_conn_send(conn, p->to_down, p->to_down_len) == NS_ERR_LIMIT)
            return;
        free(p->to_down);
        p->to_down = NULL;
    }
    ns_client_post(p->up, resume_up, NULL);
}

static void down_on_close(ns_conn *conn, int reason, void *user)
{
    struct pair *p = ns_conn_user(conn);
    (void)reason;
    (void)user;
    if (!p)
        return;
    if (p->up) {
        ns_client_close(p->up);
        ns_client_free(p->up); /* inside a callback: the close follows, no wait */
        p->up = NULL;
    }
    p->down_closed = 1;
    free_if_done(p);
}

static void on_signal(int sig)
{
    (void)sig;
    ns_server_stop(g_server);
}

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "0.0.0.0:8888";
    ns_options *o;
    char bound[256];
    struct sigaction sa;
    int rc;

    if (argc < 3) {
        fprintf(stderr, "usage: %s LISTEN_ADDR UPSTREAM_ADDR\n", argv[0]);
        return 2;
    }
    g_upstream = argv[2];
    setvbuf(stdout, NULL, _IOLBF, 0);

    o = ns_options_new();
    ns_options_set_on_open(o, down_on_open);
    ns_options_set_on_close(o, down_on_close);
    ns_options_set_on_drain(o, down_on_drain);
    ns_options_set_run_in_wait(o, 1); /* the whole proxy runs on the main thread */
    rc = ns_tcp_serve(addr, down_on_data, NULL, o, &g_server);
    ns_options_free(o);
    if (rc != NS_OK) {
        fprintf(stderr, "cannot listen on %s: %s (%s)\n", addr, ns_strerror(rc), ns_last_error());
        return 1;
    }
    ns_server_addr(g_server, bound, sizeof bound);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    printf("listening on %s\nrelaying to %s\n", bound, g_upstream);

    rc = ns_server_wait(g_server); /* runs the loop here until SIGINT/SIGTERM */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    ns_server_free(g_server);
    printf("proxy stopped\n");
    return rc == NS_OK ? 0 : 1;
}
