/*
 * ossl_tls_echo.c - the OpenSSL reference: a minimal epoll + OpenSSL TLS echo server.
 *
 *   ossl_tls_echo HOST:PORT CERT.pem KEY.pem        (e.g. 127.0.0.1:0; prints "port=N")
 *
 * One thread, edge-triggered epoll, non-blocking sockets, one SSL per connection over its
 * descriptor (OpenSSL reads and writes the socket itself, as libevent's bufferevent_openssl
 * and most servers let it). TLS 1.2 and 1.3 with OpenSSL's defaults, no session resumption
 * (every handshake full, as netsock's bench clients make them). Each chunk of plaintext read
 * with SSL_read is written back with SSL_write (SSL_MODE_ENABLE_PARTIAL_WRITE off, so a
 * write that would block keeps the rest in a per-connection queue, flushed on EPOLLOUT).
 * Runs until killed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define BUF_SIZE (64 * 1024)
#define MAX_EVENTS 256

struct conn {
    SSL *ssl;
    unsigned char *out; /* plaintext SSL_write could not take yet (retried as is) */
    size_t out_len;
};

static struct conn **conns; /* by descriptor */
static int nconns;
static int ep;

static void drop(int fd)
{
    struct conn *c = conns[fd];
    if (c) {
        SSL_free(c->ssl);
        free(c->out);
        free(c);
        conns[fd] = NULL;
    }
    close(fd);
}

/* Writes what waits; 1 if the connection lives on, 0 if it was dropped. */
static int flush_out(int fd)
{
    struct conn *c = conns[fd];
    while (c->out_len > 0) {
        int n = SSL_write(c->ssl, c->out, (int)c->out_len);
        if (n <= 0) {
            int e = SSL_get_error(c->ssl, n);
            if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
                return 1;
            drop(fd);
            return 0;
        }
        c->out_len = 0; /* without partial writes, all or nothing */
    }
    return 1;
}

static void serve(int fd)
{
    static unsigned char buf[BUF_SIZE];
    struct conn *c = conns[fd];
    if (!c)
        return;
    if (!SSL_is_init_finished(c->ssl)) {
        int r = SSL_accept(c->ssl);
        if (r <= 0) {
            int e = SSL_get_error(c->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                drop(fd);
            return;
        }
    }
    if (!flush_out(fd))
        return;
    while (c->out_len == 0) {
        int n = SSL_read(c->ssl, buf, sizeof buf);
        if (n <= 0) {
            int e = SSL_get_error(c->ssl, n);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                if (e == SSL_ERROR_ZERO_RETURN)
                    SSL_shutdown(c->ssl);
                drop(fd);
            }
            return;
        }
        int w = SSL_write(c->ssl, buf, n);
        if (w <= 0) {
            int e = SSL_get_error(c->ssl, w);
            if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) {
                drop(fd);
                return;
            }
            c->out = realloc(c->out, (size_t)n);
            memcpy(c->out, buf, (size_t)n);
            c->out_len = (size_t)n;
        }
    }
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    struct epoll_event ev, events[MAX_EVENTS];
    SSL_CTX *ctx;
    char host[64];
    const char *colon;
    int lfd, one = 1, i;

    if (argc != 4 || !(colon = strrchr(argv[1], ':')) || (size_t)(colon - argv[1]) >= sizeof host) {
        fprintf(stderr, "usage: ossl_tls_echo HOST:PORT CERT.pem KEY.pem\n");
        return 2;
    }
    memcpy(host, argv[1], (size_t)(colon - argv[1]));
    host[colon - argv[1]] = '\0';
    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, argv[2]) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

    nconns = 1 << 16;
    conns = calloc((size_t)nconns, sizeof *conns);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    inet_pton(AF_INET, host, &sa.sin_addr);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (!conns || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 4096) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &len) != 0) {
        perror("ossl_tls_echo: listen");
        return 1;
    }
    ep = epoll_create1(0);
    ev.events = EPOLLIN;
    ev.data.fd = lfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    printf("port=%d\n", ntohs(sa.sin_port));
    fflush(stdout);

    for (;;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        for (i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd != lfd) {
                serve(fd);
                continue;
            }
            for (;;) {
                int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                struct conn *c;
                if (cfd < 0)
                    break;
                if (cfd >= nconns || !(c = calloc(1, sizeof *c)) || !(c->ssl = SSL_new(ctx))) {
                    close(cfd);
                    continue;
                }
                setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                SSL_set_fd(c->ssl, cfd);
                conns[cfd] = c;
                ev.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
                ev.data.fd = cfd;
                epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);
            }
        }
    }
}
