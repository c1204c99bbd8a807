/*
 * uv_best.c - the libuv reference at its best: an echo server written the way a libuv user
 * who counts system calls and copies would write it (the bench's `libuv`; uv_echo.c, the
 * way libuv's own examples write it, is `libuv-textbook`).
 *
 *   uv_best tcp|udp HOST:PORT        (e.g. 127.0.0.1:0; prints "port=N" once bound)
 *
 * TCP: one 64 KiB buffer per connection, allocated at its first read (an idle connection
 * holds none), which the alloc callback hands to every read. A chunk read is answered with
 * uv_try_write from that buffer; only when the socket does not take all of it does a write
 * request go out, for the unsent tail, still in the buffer (no copy), and reading stops until
 * that request completes (the buffer is busy meanwhile). TCP_NODELAY.
 * UDP: one static receive buffer; each datagram goes back with uv_udp_try_send, and only if
 * the socket is full is it copied into a uv_udp_send request.
 *
 * Runs until killed.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#define BUF_SIZE (64 * 1024)

typedef struct {
    uv_tcp_t tcp; /* first: the handle's address is the connection's */
    uv_write_t req;
    char *buf;
} conn_t;

typedef struct {
    uv_udp_send_t req;
    uv_buf_t buf;
} udp_send_t;

static uv_loop_t *g_loop;
static char g_udp_buf[BUF_SIZE];

static void fail(const char *what, int err)
{
    fprintf(stderr, "uv_best: %s: %s\n", what, uv_strerror(err));
    exit(1);
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = (conn_t *)handle;
    (void)suggested;
    if (c->buf == NULL)
        c->buf = malloc(BUF_SIZE);
    *buf = uv_buf_init(c->buf, c->buf ? BUF_SIZE : 0);
}

static void on_close(uv_handle_t *handle)
{
    conn_t *c = (conn_t *)handle;
    free(c->buf);
    free(c);
}

static void close_conn(conn_t *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void after_write(uv_write_t *req, int status)
{
    conn_t *c = req->data;
    if (status < 0) {
        close_conn(c);
        return;
    }
    /* the buffer is free again: read into it */
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read) != 0)
        close_conn(c);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = (conn_t *)stream;
    uv_buf_t tail;
    int sent;
    if (nread < 0) { /* UV_EOF or an error */
        close_conn(c);
        return;
    }
    if (nread == 0)
        return;
    tail = uv_buf_init(buf->base, (unsigned int)nread);
    sent = uv_try_write(stream, &tail, 1);
    if (sent == nread)
        return;
    if (sent < 0 && sent != UV_EAGAIN) {
        close_conn(c);
        return;
    }
    if (sent > 0) {
        tail.base += sent;
        tail.len -= (size_t)sent;
    }
    /* the tail waits in the connection's buffer: no read may overwrite it until it is written */
    uv_read_stop(stream);
    c->req.data = c;
    if (uv_write(&c->req, stream, &tail, 1, after_write) != 0)
        close_conn(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    conn_t *c;
    if (status < 0) {
        fprintf(stderr, "uv_best: connection: %s\n", uv_strerror(status));
        return;
    }
    if ((c = calloc(1, sizeof *c)) == NULL)
        return;
    uv_tcp_init(g_loop, &c->tcp);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        close_conn(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
}

static void udp_alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    (void)handle, (void)suggested;
    *buf = uv_buf_init(g_udp_buf, sizeof g_udp_buf);
}

static void after_udp_send(uv_udp_send_t *req, int status)
{
    udp_send_t *sr = (udp_send_t *)req;
    (void)status; /* a datagram that could not be sent is lost, as UDP may */
    free(sr->buf.base);
    free(sr);
}

static void on_udp_recv(uv_udp_t *handle, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
                        unsigned flags)
{
    uv_buf_t out;
    udp_send_t *sr;
    int rc;
    (void)flags;
    if (nread <= 0 || addr == NULL) /* nothing more to read now, or an error */
        return;
    out = uv_buf_init(buf->base, (unsigned int)nread);
    rc = uv_udp_try_send(handle, &out, 1, addr);
    if (rc != UV_EAGAIN)
        return; /* sent, or lost as UDP may */
    if ((sr = malloc(sizeof *sr)) == NULL || (sr->buf.base = malloc((size_t)nread)) == NULL) {
        free(sr);
        return;
    }
    memcpy(sr->buf.base, buf->base, (size_t)nread);
    sr->buf.len = (size_t)nread;
    if (uv_udp_send(&sr->req, handle, &sr->buf, 1, addr, after_udp_send) != 0) {
        free(sr->buf.base);
        free(sr);
    }
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

static int port_of(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
                                           : ((const struct sockaddr_in *)ss)->sin_port);
}

int main(int argc, char **argv)
{
    struct sockaddr_storage ss, bound;
    int len = sizeof bound, rc;
    static uv_tcp_t tcp;
    static uv_udp_t udp;

    if (argc != 3 || (strcmp(argv[1], "tcp") != 0 && strcmp(argv[1], "udp") != 0)) {
        fprintf(stderr, "usage: uv_best tcp|udp HOST:PORT\n");
        return 2;
    }
    memset(&ss, 0, sizeof ss);
    if (parse_addr(argv[2], &ss) != 0) {
        fprintf(stderr, "uv_best: bad address '%s'\n", argv[2]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    g_loop = uv_default_loop();
    if (strcmp(argv[1], "tcp") == 0) {
        uv_tcp_init(g_loop, &tcp);
        if ((rc = uv_tcp_bind(&tcp, (const struct sockaddr *)&ss, 0)) != 0)
            fail("bind", rc);
        if ((rc = uv_listen((uv_stream_t *)&tcp, 1024, on_connection)) != 0)
            fail("listen", rc);
        if ((rc = uv_tcp_getsockname(&tcp, (struct sockaddr *)&bound, &len)) != 0)
            fail("getsockname", rc);
    } else {
        uv_udp_init(g_loop, &udp);
        if ((rc = uv_udp_bind(&udp, (const struct sockaddr *)&ss, 0)) != 0)
            fail("bind", rc);
        if ((rc = uv_udp_recv_start(&udp, udp_alloc_cb, on_udp_recv)) != 0)
            fail("recv_start", rc);
        if ((rc = uv_udp_getsockname(&udp, (struct sockaddr *)&bound, &len)) != 0)
            fail("getsockname", rc);
    }
    printf("port=%d\n", port_of(&bound));
    fflush(stdout);
    return uv_run(g_loop, UV_RUN_DEFAULT);
}
