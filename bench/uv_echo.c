/*
 * uv_echo.c - the libuv reference: an echo server written the idiomatic libuv way (as libuv's
 * own test/echo-server.c).
 *
 *   uv_echo tcp|udp HOST:PORT        (e.g. 127.0.0.1:0; prints "port=N" once bound)
 *
 * TCP: uv_read_start with an alloc callback that mallocs the suggested size (64 KiB); each
 * chunk read is sent back with uv_write from that same buffer, freed with its write request in
 * the write callback. Reading stops while more than 4 MiB wait to be written. TCP_NODELAY.
 * UDP: uv_udp_recv_start (malloc'd buffers likewise), uv_udp_send back to the sender.
 *
 * Runs until killed.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#define MAX_QUEUE (4 << 20)

typedef struct {
    uv_write_t req;
    uv_buf_t buf;
} write_req_t;

typedef struct {
    uv_udp_send_t req;
    uv_buf_t buf;
} udp_send_t;

static uv_loop_t *g_loop;

static void fail(const char *what, int err)
{
    fprintf(stderr, "uv_echo: %s: %s\n", what, uv_strerror(err));
    exit(1);
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    (void)handle;
    buf->base = malloc(suggested);
    buf->len = buf->base ? suggested : 0;
}

static void on_close(uv_handle_t *handle)
{
    free(handle);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void after_write(uv_write_t *req, int status)
{
    write_req_t *wr = (write_req_t *)req;
    uv_stream_t *stream = req->handle;
    free(wr->buf.base);
    free(wr);
    if (status < 0) {
        if (!uv_is_closing((uv_handle_t *)stream))
            uv_close((uv_handle_t *)stream, on_close);
        return;
    }
    /* resume reading once the backlog is written (the handle's data marks it as paused) */
    if (stream->data != NULL && uv_stream_get_write_queue_size(stream) <= MAX_QUEUE / 2) {
        stream->data = NULL;
        uv_read_start(stream, alloc_cb, on_read);
    }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    write_req_t *wr;
    if (nread < 0) { /* UV_EOF or an error */
        free(buf->base);
        if (!uv_is_closing((uv_handle_t *)stream))
            uv_close((uv_handle_t *)stream, on_close);
        return;
    }
    if (nread == 0) {
        free(buf->base);
        return;
    }
    wr = malloc(sizeof *wr);
    if (wr == NULL) {
        free(buf->base);
        uv_close((uv_handle_t *)stream, on_close);
        return;
    }
    wr->buf = uv_buf_init(buf->base, (unsigned int)nread);
    if (uv_write(&wr->req, stream, &wr->buf, 1, after_write) != 0) {
        free(wr->buf.base);
        free(wr);
        uv_close((uv_handle_t *)stream, on_close);
        return;
    }
    if (uv_stream_get_write_queue_size(stream) > MAX_QUEUE) {
        uv_read_stop(stream);
        stream->data = stream; /* paused */
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    uv_tcp_t *client;
    if (status < 0) {
        fprintf(stderr, "uv_echo: connection: %s\n", uv_strerror(status));
        return;
    }
    client = malloc(sizeof *client);
    if (client == NULL)
        return;
    uv_tcp_init(g_loop, client);
    client->data = NULL;
    if (uv_accept(server, (uv_stream_t *)client) != 0) {
        uv_close((uv_handle_t *)client, on_close);
        return;
    }
    uv_tcp_nodelay(client, 1);
    uv_read_start((uv_stream_t *)client, alloc_cb, on_read);
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
    udp_send_t *sr;
    (void)flags;
    if (nread <= 0 || addr == NULL) { /* nothing more to read now, or an error */
        free(buf->base);
        return;
    }
    sr = malloc(sizeof *sr);
    if (sr == NULL) {
        free(buf->base);
        return;
    }
    sr->buf = uv_buf_init(buf->base, (unsigned int)nread);
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
        fprintf(stderr, "usage: uv_echo tcp|udp HOST:PORT\n");
        return 2;
    }
    memset(&ss, 0, sizeof ss);
    if (parse_addr(argv[2], &ss) != 0) {
        fprintf(stderr, "uv_echo: bad address '%s'\n", argv[2]);
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
        if ((rc = uv_udp_recv_start(&udp, alloc_cb, on_udp_recv)) != 0)
            fail("recv_start", rc);
        if ((rc = uv_udp_getsockname(&udp, (struct sockaddr *)&bound, &len)) != 0)
            fail("getsockname", rc);
    }
    printf("port=%d\n", port_of(&bound));
    fflush(stdout);
    return uv_run(g_loop, UV_RUN_DEFAULT);
}
