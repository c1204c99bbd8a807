/* test_sigpipe.c - writing to a connection the peer has closed/reset must give
 * an error code (NS_ERR_RESET), never SIGPIPE: a C host program has the
 * default SIGPIPE disposition (terminate), so one SIGPIPE from the library
 * kills the whole program. To report instead of dying, this program counts
 * SIGPIPEs with a handler and checks that none was raised. */
#include <stdio.h>
#include <string.h>

#include "netsock.h"
#include "check.h"

static volatile sig_atomic_t g_sigpipes = 0;

static void on_sigpipe(int sig)
{
    (void)sig;
    g_sigpipes++;
}

#define BIG (8u * 1024u * 1024u)

struct big_state {
    pthread_mutex_t lock;
    int closes;
    int reason;
    int send_rc;
};

/* on_data: answer anything with 8 MiB, far more than socket buffers hold */
static void big_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct big_state *st = (struct big_state *)user;
    char *buf = malloc(BIG);
    int rc;
    (void)data;
    (void)len;
    if (!buf)
        return;
    memset(buf, 'z', BIG);
    rc = ns_conn_send(conn, buf, BIG);
    free(buf);
    pthread_mutex_lock(&st->lock);
    st->send_rc = rc;
    pthread_mutex_unlock(&st->lock);
}

static void big_on_close(ns_conn *conn, int reason, void *user)
{
    struct big_state *st = (struct big_state *)user;
    (void)conn;
    pthread_mutex_lock(&st->lock);
    st->closes++;
    st->reason = reason;
    pthread_mutex_unlock(&st->lock);
}

static int big_closes(struct big_state *st)
{
    int v;
    pthread_mutex_lock(&st->lock);
    v = st->closes;
    pthread_mutex_unlock(&st->lock);
    return v;
}

static ns_server *big_serve(struct big_state *st)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    memset(st, 0, sizeof *st);
    pthread_mutex_init(&st->lock, NULL);
    st->send_rc = 99;
    CHECK_EQ_INT(ns_options_set_on_close(o, big_on_close), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", big_on_data, st, o, &srv), NS_OK);
    ns_options_free(o);
    return srv;
}

/* Server side: the peer half-closes, reads a little of the reply, then closes
 * with unread data (RST) while the server still flushes its queue. */
static void test_server_write_after_peer_reset(void)
{
    struct big_state st;
    ns_server *srv;
    int round;

    SECTION("server keeps writing to a peer that half-closed and then reset");
    srv = big_serve(&st);
    if (!srv)
        return;
    for (round = 0; round < 3; round++) {
        int fd = tcp_connect4(ns_server_port(srv));
        char buf[4096];
        CHECK(fd >= 0);
        if (fd < 0)
            break;
        CHECK_EQ_INT(write_all_timeout(fd, "x", 1, 2000), 1);
        CHECK_EQ_INT(shutdown(fd, SHUT_WR), 0);
        CHECK(read_timeout(fd, buf, sizeof buf, 5000, NULL) > 0); /* the server is writing */
        close(fd); /* unread data: RST */
        WAIT_FOR(big_closes(&st) >= round + 1, 5000);
        CHECK_EQ_INT(big_closes(&st), round + 1);
        pthread_mutex_lock(&st.lock);
        /* the reset may already hit inside the send itself */
        CHECK(st.send_rc == NS_OK || st.send_rc == NS_ERR_CLOSED || st.send_rc == NS_ERR_RESET);
        CHECK(st.reason == NS_ERR_RESET || st.reason == NS_OK);
        pthread_mutex_unlock(&st.lock);
    }
    CHECK_EQ_INT(g_sigpipes, 0);

    /* the same through ns_tcp_send with a small reply buffer (it stops reading) */
    g_sigpipes = 0;
    for (round = 0; round < 3; round++) {
        char addr[64], reply[16];
        size_t rlen = 0;
        int before = big_closes(&st);
        CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);
        CHECK_EQ_INT(ns_tcp_send(addr, "x", 1, reply, sizeof reply, &rlen, 10000),
                     NS_ERR_TRUNCATED);
        CHECK_EQ_INT(rlen, sizeof reply);
        WAIT_FOR(big_closes(&st) >= before + 1, 5000);
        CHECK_EQ_INT(big_closes(&st), before + 1);
    }
    CHECK_EQ_INT(g_sigpipes, 0);
    ns_server_free(srv);
}

/* Client side: a server that half-closes at once and then resets, while
 * ns_tcp_send is still sending a large request. */
struct rude {
    int lfd;
    int accepted;
};

static void *rude_server(void *arg)
{
    struct rude *r = (struct rude *)arg;
    struct pollfd p;
    int fd, i;
    for (i = 0; i < 3; i++) {
        p.fd = r->lfd;
        p.events = POLLIN;
        p.revents = 0;
        if (poll(&p, 1, 10000) != 1)
            return NULL;
        fd = accept(r->lfd, NULL, NULL);
        if (fd < 0)
            return NULL;
        r->accepted++;
        shutdown(fd, SHUT_WR); /* FIN first: the client goes to CLOSE_WAIT */
        sleep_ms(50);
        close(fd); /* then RST (unread data) */
    }
    return NULL;
}

static void test_client_write_after_server_reset(void)
{
    struct rude r;
    pthread_t th;
    char addr[64], reply[16];
    size_t rlen = 0;
    const size_t N = 32u * 1024u * 1024u;
    char *data;
    int i;

    SECTION("ns_tcp_send keeps sending to a server that half-closed and then reset");
    memset(&r, 0, sizeof r);
    r.lfd = bound_socket4(SOCK_STREAM);
    CHECK(r.lfd >= 0);
    if (r.lfd < 0)
        return;
    CHECK_EQ_INT(listen(r.lfd, 8), 0);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", sock_port(r.lfd));
    data = calloc(1, N);
    CHECK(data != NULL);
    if (!data) {
        close(r.lfd);
        return;
    }
    g_sigpipes = 0;
    CHECK_EQ_INT(pthread_create(&th, NULL, rude_server, &r), 0);
    for (i = 0; i < 3; i++) {
        int rc = ns_tcp_send(addr, data, N, reply, sizeof reply, &rlen, 10000);
        CHECK_EQ_INT(rc, NS_ERR_RESET);
    }
    pthread_join(th, NULL);
    CHECK_EQ_INT(r.accepted, 3);
    CHECK_EQ_INT(g_sigpipes, 0);
    free(data);
    close(r.lfd);
}

int main(void)
{
    struct sigaction sa;
    watchdog(90);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigpipe;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
    test_server_write_after_peer_reset();
    test_client_write_after_server_reset();
    if (g_sigpipes)
        fprintf(stderr, "the library raised SIGPIPE (writes without MSG_NOSIGNAL)\n");
    return CHECK_DONE();
}
