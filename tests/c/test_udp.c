/* test_udp.c - UDP server: ns_udp_reply from the callback and from another
 * thread with a copied ns_peer, ns_udp_send, ns_udp_request (incl. large and
 * truncated replies), ns_peer_format. */
#include <stdio.h>
#include <string.h>

#include "netsock.h"
#include "check.h"

enum mode { MODE_ECHO, MODE_DEFER, MODE_RECORD };

struct ustate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    enum mode mode;
    int count;
    ns_peer peer; /* copy of the last sender */
    char peer_text[128];
    int peer_rc;
    unsigned char data[65536];
    size_t len;
    int have_thread;
    pthread_t cb_thread;
    int other_threads;
};

static void ustate_init(struct ustate *u, enum mode m)
{
    memset(u, 0, sizeof *u);
    pthread_mutex_init(&u->lock, NULL);
    pthread_cond_init(&u->cond, NULL);
    u->mode = m;
}

static void on_dgram(ns_server *srv, const ns_peer *from, const uint8_t *data, size_t len,
                     void *user)
{
    struct ustate *u = (struct ustate *)user;
    char text[128];
    int prc = ns_peer_format(from, text, sizeof text);
    enum mode m;
    pthread_mutex_lock(&u->lock);
    if (!u->have_thread) {
        u->have_thread = 1;
        u->cb_thread = pthread_self();
    } else if (!pthread_equal(u->cb_thread, pthread_self())) {
        u->other_threads++;
    }
    m = u->mode;
    u->count++;
    u->peer = *from; /* plain struct copy */
    u->peer_rc = prc;
    snprintf(u->peer_text, sizeof u->peer_text, "%s", prc == NS_OK ? text : "");
    u->len = len < sizeof u->data ? len : sizeof u->data;
    if (len)
        memcpy(u->data, data, u->len);
    pthread_cond_broadcast(&u->cond);
    pthread_mutex_unlock(&u->lock);
    if (m == MODE_ECHO)
        CHECK_EQ_INT(ns_udp_reply(srv, from, data, len), NS_OK);
}

/* wait (bounded) until the callback ran at least n times */
static int wait_count(struct ustate *u, int n, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    int got;
    pthread_mutex_lock(&u->lock);
    while (u->count < n && now_ms() < end) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&u->cond, &u->lock, &ts);
    }
    got = u->count;
    pthread_mutex_unlock(&u->lock);
    return got;
}

static ns_server *userve(struct ustate *u, char *addr, size_t cap)
{
    ns_server *srv = NULL;
    CHECK_EQ_INT(ns_udp_serve("127.0.0.1:0", on_dgram, u, NULL, &srv), NS_OK);
    if (srv)
        CHECK_EQ_INT(ns_server_addr(srv, addr, cap), NS_OK);
    return srv;
}

/* a plain UDP client socket on 127.0.0.1, sending to the server port */
static int plain_send(int fd, int port, const void *buf, size_t len)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    return (int)sendto(fd, buf, len, 0, (struct sockaddr *)&sa, sizeof sa);
}

/* receive one datagram within timeout_ms; returns its length or -1 */
static int plain_recv(int fd, void *buf, size_t cap, int timeout_ms)
{
    struct pollfd p;
    p.fd = fd;
    p.events = POLLIN;
    p.revents = 0;
    if (poll(&p, 1, timeout_ms) <= 0)
        return -1;
    return (int)recv(fd, buf, cap, MSG_DONTWAIT);
}

static void test_echo_plain_client(void)
{
    struct ustate *u = malloc(sizeof *u);
    char addr[64], expect[64], buf[128];
    ns_server *srv;
    int fd, port, n;

    SECTION("udp echo from the callback; ns_peer_format");
    if (!u)
        return;
    ustate_init(u, MODE_ECHO);
    srv = userve(u, addr, sizeof addr);
    if (!srv) {
        free(u);
        return;
    }
    port = ns_server_port(srv);
    CHECK(port > 0);
    snprintf(expect, sizeof expect, "127.0.0.1:%d", port);
    CHECK_EQ_STR(addr, expect);

    fd = bound_socket4(SOCK_DGRAM);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK_EQ_INT(plain_send(fd, port, "hello udp", 9), 9);
        n = plain_recv(fd, buf, sizeof buf, 5000);
        CHECK_EQ_INT(n, 9);
        CHECK(n == 9 && memcmp(buf, "hello udp", 9) == 0);
        snprintf(expect, sizeof expect, "127.0.0.1:%d", sock_port(fd));
        pthread_mutex_lock(&u->lock);
        CHECK_EQ_INT(u->peer_rc, NS_OK);
        CHECK_EQ_STR(u->peer_text, expect);
        CHECK(u->have_thread && !pthread_equal(u->cb_thread, pthread_self()));
        pthread_mutex_unlock(&u->lock);

        /* a second, different datagram from the same socket */
        CHECK_EQ_INT(plain_send(fd, port, "again", 5), 5);
        n = plain_recv(fd, buf, sizeof buf, 5000);
        CHECK_EQ_INT(n, 5);
        CHECK(n == 5 && memcmp(buf, "again", 5) == 0);
        close(fd);
    }

    /* ns_udp_request round trip, a large datagram, and a truncated reply */
    {
        static unsigned char big[60000], rbig[60000];
        char reply[64];
        size_t rlen = 0, i;
        CHECK_EQ_INT(ns_udp_request(addr, "question", 8, reply, sizeof reply, &rlen, 5000), NS_OK);
        CHECK_EQ_INT(rlen, 8);
        CHECK(memcmp(reply, "question", 8) == 0);

        for (i = 0; i < sizeof big; i++)
            big[i] = (unsigned char)(i * 31 + 7);
        rlen = 0;
        CHECK_EQ_INT(ns_udp_request(addr, big, sizeof big, rbig, sizeof rbig, &rlen, 5000), NS_OK);
        CHECK_EQ_INT(rlen, sizeof big);
        CHECK(memcmp(rbig, big, sizeof big) == 0);

        memset(reply, 0, sizeof reply);
        rlen = 0;
        CHECK_EQ_INT(ns_udp_request(addr, "0123456789", 10, reply, 4, &rlen, 5000),
                     NS_ERR_TRUNCATED);
        CHECK_EQ_INT(rlen, 4);
        CHECK(memcmp(reply, "0123", 4) == 0);
        CHECK(reply[4] == 0);

        /* reply_len may be NULL */
        memset(reply, 0, sizeof reply);
        CHECK_EQ_INT(ns_udp_request(addr, "nolen", 5, reply, sizeof reply, NULL, 5000), NS_OK);
        CHECK(memcmp(reply, "nolen", 5) == 0);
    }
    pthread_mutex_lock(&u->lock);
    CHECK_EQ_INT(u->other_threads, 0);
    pthread_mutex_unlock(&u->lock);
    ns_server_free(srv);
    free(u);
}

/* ---- reply from another thread with a copied peer --------------------------- */

struct replier {
    ns_server *srv;
    struct ustate *u;
    int rc1, rc2;
};

static void *reply_thread(void *arg)
{
    struct replier *r = (struct replier *)arg;
    ns_peer copy;
    char msg[80];
    int n;
    if (wait_count(r->u, 1, 5000) < 1) {
        r->rc1 = r->rc2 = 99;
        return NULL;
    }
    pthread_mutex_lock(&r->u->lock);
    copy = r->u->peer;
    n = snprintf(msg, sizeof msg, "late reply to %.*s", (int)r->u->len, (char *)r->u->data);
    pthread_mutex_unlock(&r->u->lock);
    sleep_ms(50); /* the callback has long returned */
    r->rc1 = ns_udp_reply(r->srv, &copy, msg, (size_t)n);
    r->rc2 = ns_udp_reply(r->srv, &copy, "second", 6);
    return NULL;
}

static void test_reply_from_thread(void)
{
    struct ustate *u = malloc(sizeof *u);
    struct replier rp;
    char addr[64], buf[128];
    ns_server *srv;
    pthread_t th;
    int fd, n;

    SECTION("ns_udp_reply from another thread with a copied ns_peer");
    if (!u)
        return;
    ustate_init(u, MODE_DEFER);
    srv = userve(u, addr, sizeof addr);
    if (!srv) {
        free(u);
        return;
    }
    rp.srv = srv;
    rp.u = u;
    rp.rc1 = rp.rc2 = 98;
    CHECK_EQ_INT(pthread_create(&th, NULL, reply_thread, &rp), 0);
    fd = bound_socket4(SOCK_DGRAM);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK_EQ_INT(plain_send(fd, ns_server_port(srv), "Q1", 2), 2);
        n = plain_recv(fd, buf, sizeof buf, 5000);
        CHECK_EQ_INT(n, 16);
        CHECK(n == 16 && memcmp(buf, "late reply to Q1", 16) == 0);
        n = plain_recv(fd, buf, sizeof buf, 5000);
        CHECK_EQ_INT(n, 6);
        CHECK(n == 6 && memcmp(buf, "second", 6) == 0);
    }
    pthread_join(th, NULL);
    CHECK_EQ_INT(rp.rc1, NS_OK);
    CHECK_EQ_INT(rp.rc2, NS_OK);

    /* ns_udp_request against a server that answers from another thread */
    {
        char reply[64];
        size_t rlen = 0;
        pthread_mutex_lock(&u->lock);
        u->count = 0;
        pthread_mutex_unlock(&u->lock);
        rp.rc1 = rp.rc2 = 98;
        CHECK_EQ_INT(pthread_create(&th, NULL, reply_thread, &rp), 0);
        CHECK_EQ_INT(ns_udp_request(addr, "Q2", 2, reply, sizeof reply, &rlen, 5000), NS_OK);
        CHECK_EQ_INT(rlen, 16);
        CHECK(memcmp(reply, "late reply to Q2", 16) == 0);
        pthread_join(th, NULL);
        CHECK_EQ_INT(rp.rc1, NS_OK);
    }
    if (fd >= 0)
        close(fd);
    ns_server_free(srv);
    free(u);
}

/* ---- ns_udp_send: the callback sees it ---------------------------------------- */

static void test_udp_send(void)
{
    struct ustate *u = malloc(sizeof *u);
    char addr[64];
    ns_server *srv;

    SECTION("ns_udp_send reaches the server callback");
    if (!u)
        return;
    ustate_init(u, MODE_RECORD);
    srv = userve(u, addr, sizeof addr);
    if (!srv) {
        free(u);
        return;
    }
    CHECK_EQ_INT(ns_udp_send(addr, "fire and forget", 15), NS_OK);
    CHECK_EQ_INT(wait_count(u, 1, 5000), 1);
    pthread_mutex_lock(&u->lock);
    CHECK_EQ_INT(u->len, 15);
    CHECK(memcmp(u->data, "fire and forget", 15) == 0);
    CHECK_EQ_INT(u->peer_rc, NS_OK);
    CHECK(strncmp(u->peer_text, "127.0.0.1:", 10) == 0);
    pthread_mutex_unlock(&u->lock);

    /* an empty datagram is a datagram too */
    CHECK_EQ_INT(ns_udp_send(addr, NULL, 0), NS_OK);
    CHECK_EQ_INT(wait_count(u, 2, 5000), 2);
    pthread_mutex_lock(&u->lock);
    CHECK_EQ_INT(u->len, 0);
    pthread_mutex_unlock(&u->lock);

    /* a few more, each seen once */
    CHECK_EQ_INT(ns_udp_send(addr, "a", 1), NS_OK);
    CHECK_EQ_INT(ns_udp_send(addr, "bb", 2), NS_OK);
    CHECK_EQ_INT(ns_udp_send(addr, "ccc", 3), NS_OK);
    CHECK_EQ_INT(wait_count(u, 5, 5000), 5);
    sleep_ms(50);
    pthread_mutex_lock(&u->lock);
    CHECK_EQ_INT(u->count, 5);
    pthread_mutex_unlock(&u->lock);
    ns_server_free(srv);
    free(u);
}

int main(void)
{
    watchdog(90);
    test_echo_plain_client();
    test_reply_from_thread();
    test_udp_send();
    return CHECK_DONE();
}
