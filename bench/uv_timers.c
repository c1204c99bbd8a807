/*
 * uv_timers.c - the libuv reference of ns_timers.c, written for libuv at its best.
 *
 *   uv_timers timers N PERIOD_MS WARMUP_S WINDOW_S
 *       uv_default_loop; N repeating uv_timer_t (uv_timer_start, every PERIOD_MS) embedded in
 *       one array allocated at start (no malloc per timer), their first expiries spread evenly
 *       over the first period; each fire counts one. After WARMUP_S the window of WINDOW_S is
 *       measured; prints one RESULT line (timers_common.h) and exits.
 *   uv_timers conn HOST:PORT [timer|notimer]
 *       A TCP echo server whose read callback re-arms the connection's uv_timer_t (embedded in
 *       the connection, uv_timer_start 5 s one-shot) before echoing the chunk. Reads land in
 *       one static buffer (no malloc per read); the echo goes out with uv_try_write, and only
 *       what the socket did not take is copied into a uv_write (as uv_echo.c's malloc per read
 *       and per write would not be libuv at its best). Reading stops while more than 4 MiB wait.
 *       A timer that fires closes its connection. TCP_NODELAY. Prints "port=N" once bound;
 *       runs until killed.
 *
 * Every run is bounded: an alarm ends a `timers` run that overstays its time by 30 s.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "timers_common.h"

#define MAX_QUEUE (4 << 20)
#define READ_BUF (64 * 1024)

/* ---- timers ---- */

static struct tcfg g_cfg;
static struct tsnap g_before, g_a, g_b;
static uint64_t g_fires;
static uv_timer_t *g_timers;
static uv_timer_t g_window_start, g_window_end;

static void on_fire(uv_timer_t *t)
{
    (void)t;
    g_fires++;
}

static void on_window_start(uv_timer_t *t)
{
    (void)t;
    tc_snap(&g_a, g_fires);
}

static void on_window_end(uv_timer_t *t)
{
    tc_snap(&g_b, g_fires);
    uv_stop(t->loop);
}

static int run_timers(char **argv)
{
    uv_loop_t *loop;
    uint64_t warm, win;
    if (tc_parse(argv, &g_cfg) != 0) {
        fprintf(stderr, "uv_timers: bad N PERIOD_MS WARMUP_S WINDOW_S\n");
        return 2;
    }
    alarm((unsigned)(g_cfg.warmup_s + g_cfg.window_s) + 30);
    loop = uv_default_loop();
    uv_timer_init(loop, &g_window_start);
    uv_timer_init(loop, &g_window_end);
    tc_snap(&g_before, 0);
    if ((g_timers = calloc((size_t)g_cfg.n, sizeof *g_timers)) == NULL) {
        fprintf(stderr, "uv_timers: out of memory\n");
        return 1;
    }
    uv_update_time(loop);
    for (long i = 0; i < g_cfg.n; i++) {
        uv_timer_init(loop, &g_timers[i]);
        uv_timer_start(&g_timers[i], on_fire, tc_first_ms(&g_cfg, i), (uint64_t)g_cfg.period_ms);
    }
    warm = (uint64_t)(g_cfg.warmup_s * 1000);
    win = (uint64_t)(g_cfg.window_s * 1000);
    uv_timer_start(&g_window_start, on_window_start, warm, 0);
    uv_timer_start(&g_window_end, on_window_end, warm + win, 0);
    uv_run(loop, UV_RUN_DEFAULT);
    if (g_b.t_ns == 0)
        return 1;
    {
        char extra[64];
        snprintf(extra, sizeof extra, "sizeof_uv_timer_t=%zu", sizeof(uv_timer_t));
        tc_print("libuv", &g_cfg, &g_before, &g_a, &g_b, extra);
    }
    return 0; /* exits with the timers running: freeing them is not what is measured */
}

/* ---- conn ---- */

typedef struct {
    uv_tcp_t tcp;
    uv_timer_t timer;
    int open_handles; /* freed when both handles have closed */
    int paused;
} conn_t;

typedef struct {
    uv_write_t req;
    uv_buf_t buf;
} write_req_t;

static uv_loop_t *g_loop;
static int g_rearm = 1;
static char g_buf[READ_BUF]; /* every read lands here: its data is echoed or copied before the next */

static void fail(const char *what, int err)
{
    fprintf(stderr, "uv_timers: %s: %s\n", what, uv_strerror(err));
    exit(1);
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    (void)handle;
    (void)suggested;
    *buf = uv_buf_init(g_buf, sizeof g_buf);
}

static void on_handle_closed(uv_handle_t *handle)
{
    conn_t *c = handle->data;
    if (--c->open_handles == 0)
        free(c);
}

static void conn_close(conn_t *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void after_write(uv_write_t *req, int status)
{
    write_req_t *wr = (write_req_t *)req;
    conn_t *c = req->handle->data;
    free(wr);
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->paused && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <= MAX_QUEUE / 2) {
        c->paused = 0;
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
    }
}

static void on_conn_timer(uv_timer_t *t)
{
    conn_close(t->data); /* silent for 5 s */
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = stream->data;
    uv_buf_t out;
    int w;
    if (nread < 0) { /* UV_EOF or an error */
        conn_close(c);
        return;
    }
    if (nread == 0)
        return;
    if (g_rearm)
        uv_timer_start(&c->timer, on_conn_timer, CONN_TIMER_MS, 0);
    out = uv_buf_init(buf->base, (unsigned int)nread);
    w = uv_try_write(stream, &out, 1); /* UV_EAGAIN while earlier writes wait */
    if (w < 0 && w != UV_EAGAIN) {
        conn_close(c);
        return;
    }
    if (w < 0)
        w = 0;
    if ((size_t)w < (size_t)nread) { /* the rest waits: copied, since g_buf is reused */
        size_t rest = (size_t)nread - (size_t)w;
        write_req_t *wr = malloc(sizeof *wr + rest);
        if (wr == NULL) {
            conn_close(c);
            return;
        }
        memcpy(wr + 1, buf->base + w, rest);
        wr->buf = uv_buf_init((char *)(wr + 1), (unsigned int)rest);
        if (uv_write(&wr->req, stream, &wr->buf, 1, after_write) != 0) {
            free(wr);
            conn_close(c);
            return;
        }
        if (uv_stream_get_write_queue_size(stream) > MAX_QUEUE) {
            uv_read_stop(stream);
            c->paused = 1;
        }
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    conn_t *c;
    if (status < 0) {
        fprintf(stderr, "uv_timers: connection: %s\n", uv_strerror(status));
        return;
    }
    if ((c = calloc(1, sizeof *c)) == NULL)
        return;
    uv_tcp_init(g_loop, &c->tcp);
    uv_timer_init(g_loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
}

static int parse_addr(const char *text, struct sockaddr_storage *ss)
{
    char host[128];
    const char *colon = strrchr(text, ':');
    size_t hl;
    int port;
    if (!colon || (hl = (size_t)(colon - text)) >= sizeof host)
        return -1;
    memcpy(host, text, hl);
    host[hl] = '\0';
    port = atoi(colon + 1);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        return uv_ip6_addr(host + 1, port, (struct sockaddr_in6 *)ss);
    }
    return uv_ip4_addr(host, port, (struct sockaddr_in *)ss);
}

static int run_conn(int argc, char **argv)
{
    struct sockaddr_storage ss, bound;
    int len = sizeof bound, rc;
    static uv_tcp_t tcp;

    if (argc == 2 && !(g_rearm = strcmp(argv[1], "timer") == 0) && strcmp(argv[1], "notimer") != 0) {
        fprintf(stderr, "uv_timers: conn HOST:PORT [timer|notimer]\n");
        return 2;
    }
    memset(&ss, 0, sizeof ss);
    if (parse_addr(argv[0], &ss) != 0) {
        fprintf(stderr, "uv_timers: bad address '%s'\n", argv[0]);
        return 2;
    }
    tc_raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    g_loop = uv_default_loop();
    uv_tcp_init(g_loop, &tcp);
    if ((rc = uv_tcp_bind(&tcp, (const struct sockaddr *)&ss, 0)) != 0)
        fail("bind", rc);
    if ((rc = uv_listen((uv_stream_t *)&tcp, 4096, on_connection)) != 0)
        fail("listen", rc);
    if ((rc = uv_tcp_getsockname(&tcp, (struct sockaddr *)&bound, &len)) != 0)
        fail("getsockname", rc);
    printf("port=%d\n", ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                          : ((struct sockaddr_in *)&bound)->sin_port));
    fflush(stdout);
    return uv_run(g_loop, UV_RUN_DEFAULT);
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "timers") == 0)
        return run_timers(argv + 2);
    if ((argc == 3 || argc == 4) && strcmp(argv[1], "conn") == 0)
        return run_conn(argc - 2, argv + 2);
    fprintf(stderr, "usage: uv_timers timers N PERIOD_MS WARMUP_S WINDOW_S\n"
                    "       uv_timers conn HOST:PORT [timer|notimer]\n");
    return 2;
}
