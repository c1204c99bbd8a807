/* test_errors.c - every ns_result code from a real situation, argument
 * validation of every function that takes pointers, ns_strerror,
 * ns_last_error (per thread, and in a thread's exit) and ns_version. */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "netsock.h"
#include "check.h"

/* ---- a small echo server used as a live target ------------------------- */

static void echo_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    CHECK_EQ_INT(ns_conn_send(conn, data, len), NS_OK);
}

static void echo_datagram(ns_server *srv, const ns_peer *from, const uint8_t *data, size_t len,
                          void *user)
{
    (void)user;
    CHECK_EQ_INT(ns_udp_reply(srv, from, data, len), NS_OK);
}

static void addr_of(const ns_server *srv, char *buf, size_t cap)
{
    buf[0] = '\0';
    CHECK_EQ_INT(ns_server_addr(srv, buf, cap), NS_OK);
}

/* ---- version ------------------------------------------------------------ */

static void test_version(void)
{
    char expect[64];
    const char *v = ns_version();
    SECTION("version");
    snprintf(expect, sizeof expect, "%d.%d.%d", NS_VERSION_MAJOR, NS_VERSION_MINOR,
             NS_VERSION_PATCH);
    CHECK(v != NULL);
    CHECK_EQ_STR(v, expect);
}

/* ---- strerror ----------------------------------------------------------- */

static void test_strerror(void)
{
    /* every code from NS_RESULT_MIN to 0 (the header says there is no gap), and the ones
     * the header names among them */
    static const int named[] = {
        NS_OK,          NS_ERR_INVALID,   NS_ERR_ADDR,  NS_ERR_ADDR_IN_USE, NS_ERR_REFUSED,
        NS_ERR_TIMEOUT, NS_ERR_CLOSED,    NS_ERR_TRUNCATED, NS_ERR_LIMIT,   NS_ERR_IO,
        NS_ERR_RESET,   NS_ERR_STOPPED,   NS_ERR_PANIC, NS_ERR_MISUSE,
    };
    static const int garbage[] = {12345, -999, INT_MIN, INT_MAX, 1, NS_RESULT_MIN - 1};
    int c, d;
    size_t i;
    SECTION("strerror");
    for (i = 0; i < sizeof named / sizeof named[0]; i++)
        CHECK(named[i] <= 0 && named[i] >= NS_RESULT_MIN);
    for (c = 0; c >= NS_RESULT_MIN; c--) {
        const char *s = ns_strerror(c);
        CHECK(s != NULL);
        if (s) {
            CHECK(s[0] != '\0' && strncmp(s, "NS_", 3) == 0);
            CHECK(strcmp(s, "unknown netsock result code") != 0);
            /* the known codes are distinguishable by their text */
            for (d = 0; d > c; d--) {
                const char *t = ns_strerror(d);
                if (t && strcmp(s, t) == 0) {
                    fprintf(stderr, "codes %d and %d share the text \"%s\"\n", c, d, s);
                    CHECK(strcmp(s, t) != 0);
                }
            }
        }
    }
    for (i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
        const char *s = ns_strerror(garbage[i]);
        CHECK(s != NULL);
        if (s)
            CHECK(s[0] != '\0');
    }
}

/* ---- bad addresses -------------------------------------------------------- */

static const char *const bad_addrs[] = {
    "",           "127.0.0.1",          "127.0.0.1:99999", "127.0.0.1:80x", "[::1",
    "nohost.invalid:80", "127.0.0.1:-1", "127.0.0.1:",
};

static void test_bad_addresses(void)
{
    size_t i;
    char reply[16];
    size_t rlen;
    SECTION("bad addresses");
    for (i = 0; i < sizeof bad_addrs / sizeof bad_addrs[0]; i++) {
        const char *a = bad_addrs[i];
        ns_server *srv = NULL;
        int rc;

        rc = ns_tcp_serve(a, echo_on_data, NULL, NULL, &srv);
        if (rc != NS_ERR_ADDR)
            fprintf(stderr, "  ns_tcp_serve(\"%s\")\n", a);
        CHECK_EQ_INT(rc, NS_ERR_ADDR);
        CHECK(ns_last_error() != NULL && ns_last_error()[0] != '\0');
        if (rc == NS_OK)
            ns_server_free(srv);
        srv = NULL;

        rc = ns_udp_serve(a, echo_datagram, NULL, NULL, &srv);
        if (rc != NS_ERR_ADDR)
            fprintf(stderr, "  ns_udp_serve(\"%s\")\n", a);
        CHECK_EQ_INT(rc, NS_ERR_ADDR);
        if (rc == NS_OK)
            ns_server_free(srv);

        rc = ns_tcp_send(a, "x", 1, reply, sizeof reply, &rlen, 1000);
        if (rc != NS_ERR_ADDR)
            fprintf(stderr, "  ns_tcp_send(\"%s\")\n", a);
        CHECK_EQ_INT(rc, NS_ERR_ADDR);

        rc = ns_udp_send(a, "x", 1);
        if (rc != NS_ERR_ADDR)
            fprintf(stderr, "  ns_udp_send(\"%s\")\n", a);
        CHECK_EQ_INT(rc, NS_ERR_ADDR);

        rc = ns_udp_request(a, "x", 1, reply, sizeof reply, &rlen, 1000);
        if (rc != NS_ERR_ADDR)
            fprintf(stderr, "  ns_udp_request(\"%s\")\n", a);
        CHECK_EQ_INT(rc, NS_ERR_ADDR);
    }

    /* NULL address text: NS_ERR_INVALID everywhere */
    {
        ns_server *srv = NULL;
        CHECK_EQ_INT(ns_tcp_serve(NULL, echo_on_data, NULL, NULL, &srv), NS_ERR_INVALID);
        CHECK_EQ_INT(ns_udp_serve(NULL, echo_datagram, NULL, NULL, &srv), NS_ERR_INVALID);
        CHECK_EQ_INT(ns_tcp_send(NULL, "x", 1, reply, sizeof reply, &rlen, 1000), NS_ERR_INVALID);
        CHECK_EQ_INT(ns_udp_send(NULL, "x", 1), NS_ERR_INVALID);
        CHECK_EQ_INT(ns_udp_request(NULL, "x", 1, reply, sizeof reply, &rlen, 1000),
                     NS_ERR_INVALID);
    }
}

/* ---- NULL pointers / bad lengths ------------------------------------------ */

struct cb_state {
    ns_server *srv;
    int done;
    int conn_checks_done;
    pthread_mutex_t lock;
};

static struct cb_state g_cb = {NULL, 0, 0, PTHREAD_MUTEX_INITIALIZER};

/* on_data for the pointer-checks server: validates conn-level arguments. */
static void ptr_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    char small[3];
    char peer[128];
    (void)user;
    CHECK_EQ_INT(ns_conn_send(conn, NULL, 5), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_conn_peer(conn, NULL, 64), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_conn_peer(conn, small, sizeof small), NS_ERR_TRUNCATED);
    CHECK_EQ_INT(ns_conn_peer(conn, peer, sizeof peer), NS_OK);
    CHECK(strncmp(peer, "127.0.0.1:", 10) == 0);
    CHECK(ns_conn_id(conn) != 0);
    /* NULL data with len 0 is an empty send, not an error */
    CHECK_EQ_INT(ns_conn_send(conn, NULL, 0), NS_OK);
    CHECK_EQ_INT(ns_conn_send(conn, data, len), NS_OK);
    pthread_mutex_lock(&g_cb.lock);
    g_cb.conn_checks_done = 1;
    pthread_mutex_unlock(&g_cb.lock);
}

static void ptr_datagram(ns_server *srv, const ns_peer *from, const uint8_t *data, size_t len,
                         void *user)
{
    char buf[128];
    char small[3];
    (void)user;
    CHECK(from != NULL);
    CHECK_EQ_INT(ns_udp_reply(srv, from, NULL, 5), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_udp_reply(srv, NULL, data, len), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_udp_reply(NULL, from, data, len), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_peer_format(from, NULL, 64), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_peer_format(from, small, sizeof small), NS_ERR_TRUNCATED);
    CHECK_EQ_INT(ns_peer_format(from, buf, sizeof buf), NS_OK);
    CHECK(strncmp(buf, "127.0.0.1:", 10) == 0);
    CHECK_EQ_INT(ns_udp_reply(srv, from, data, len), NS_OK);
}

static int cb_conn_checks_done(void)
{
    int v;
    pthread_mutex_lock(&g_cb.lock);
    v = g_cb.conn_checks_done;
    pthread_mutex_unlock(&g_cb.lock);
    return v;
}

static void test_null_pointers(void)
{
    ns_server *tcp = NULL, *udp = NULL;
    ns_options *opts;
    char addr[128], uaddr[128], reply[64], buf[128], tiny[4];
    size_t rlen = 0;
    char peer_unused[8];
    ns_peer zero_peer;

    SECTION("NULL pointers and lengths");
    (void)peer_unused;
    /* no-ops */
    ns_options_free(NULL);
    ns_server_free(NULL);

    opts = ns_options_new();
    CHECK(opts != NULL);
    CHECK_EQ_INT(ns_options_set_on_open(NULL, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_on_close(NULL, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_on_open(opts, NULL), NS_OK); /* NULL cb clears */
    CHECK_EQ_INT(ns_options_set_on_close(opts, NULL), NS_OK);

    /* serve: NULL out, NULL callback */
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", ptr_on_data, NULL, NULL, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_udp_serve("127.0.0.1:0", ptr_datagram, NULL, NULL, NULL), NS_ERR_INVALID);
    {
        ns_server *s = NULL;
        int rc = ns_tcp_serve("127.0.0.1:0", NULL, NULL, NULL, &s);
        CHECK_EQ_INT(rc, NS_ERR_INVALID);
        if (rc == NS_OK)
            ns_server_free(s);
        s = NULL;
        rc = ns_udp_serve("127.0.0.1:0", NULL, NULL, NULL, &s);
        CHECK_EQ_INT(rc, NS_ERR_INVALID);
        if (rc == NS_OK)
            ns_server_free(s);
    }

    /* live servers: options are copied by serve, so free them right away */
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", ptr_on_data, NULL, opts, &tcp), NS_OK);
    ns_options_free(opts);
    CHECK_EQ_INT(ns_udp_serve("127.0.0.1:0", ptr_datagram, NULL, NULL, &udp), NS_OK);
    if (!tcp || !udp) {
        ns_server_free(tcp);
        ns_server_free(udp);
        return;
    }
    addr_of(tcp, addr, sizeof addr);
    addr_of(udp, uaddr, sizeof uaddr);

    /* server-level */
    CHECK(ns_server_port(NULL) < 0);
    CHECK_EQ_INT(ns_server_addr(NULL, buf, sizeof buf), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_server_addr(tcp, NULL, sizeof buf), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_server_addr(tcp, tiny, sizeof tiny), NS_ERR_TRUNCATED);
    CHECK_EQ_INT(ns_server_stop(NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_server_wait(NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_server_send(NULL, 1, "x", 1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_server_send(tcp, 1, NULL, 5), NS_ERR_INVALID);

    /* connection-level with NULL conn */
    CHECK_EQ_INT(ns_conn_send(NULL, "x", 1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_conn_close(NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_conn_id(NULL), 0);
    CHECK_EQ_INT(ns_conn_peer(NULL, buf, sizeof buf), NS_ERR_INVALID);

    /* udp server-level */
    memset(&zero_peer, 0, sizeof zero_peer);
    CHECK_EQ_INT(ns_udp_reply(NULL, &zero_peer, "x", 1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_udp_reply(udp, NULL, "x", 1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_peer_format(NULL, buf, sizeof buf), NS_ERR_INVALID);

    /* wrong kind of server */
    CHECK_EQ_INT(ns_udp_reply(tcp, &zero_peer, "x", 1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_server_send(udp, 1, "x", 1), NS_ERR_INVALID);

    /* clients: NULL data with len > 0, NULL reply with reply_cap > 0 */
    CHECK_EQ_INT(ns_tcp_send(addr, NULL, 5, reply, sizeof reply, &rlen, 2000), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tcp_send(addr, "x", 1, NULL, 10, &rlen, 2000), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_udp_send(uaddr, NULL, 5), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_udp_request(uaddr, NULL, 5, reply, sizeof reply, &rlen, 2000),
                 NS_ERR_INVALID);
    CHECK_EQ_INT(ns_udp_request(uaddr, "x", 1, NULL, 10, &rlen, 2000), NS_ERR_INVALID);

    /* valid calls against the same servers still work (reply_len may be NULL) */
    memset(reply, 0, sizeof reply);
    CHECK_EQ_INT(ns_tcp_send(addr, "hello", 5, reply, sizeof reply, NULL, 5000), NS_OK);
    CHECK(memcmp(reply, "hello", 5) == 0);
    CHECK(cb_conn_checks_done());
    rlen = 0;
    memset(reply, 0, sizeof reply);
    CHECK_EQ_INT(ns_udp_request(uaddr, "dgram", 5, reply, sizeof reply, &rlen, 5000), NS_OK);
    CHECK_EQ_INT(rlen, 5);
    CHECK(memcmp(reply, "dgram", 5) == 0);

    ns_server_free(tcp);
    ns_server_free(udp);
}

/* ---- ADDR_IN_USE ---------------------------------------------------------- */

static void test_addr_in_use(void)
{
    ns_server *a = NULL, *b = NULL, *u = NULL, *v = NULL;
    char addr[64];
    int port, rc, fd;

    SECTION("address in use");
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", echo_on_data, NULL, NULL, &a), NS_OK);
    if (a) {
        port = ns_server_port(a);
        CHECK(port > 0 && port <= 65535);
        snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
        rc = ns_tcp_serve(addr, echo_on_data, NULL, NULL, &b);
        CHECK_EQ_INT(rc, NS_ERR_ADDR_IN_USE);
        CHECK(ns_last_error()[0] != '\0');
        if (rc == NS_OK)
            ns_server_free(b);
        ns_server_free(a);
    }

    CHECK_EQ_INT(ns_udp_serve("127.0.0.1:0", echo_datagram, NULL, NULL, &u), NS_OK);
    if (u) {
        port = ns_server_port(u);
        CHECK(port > 0 && port <= 65535);
        snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
        rc = ns_udp_serve(addr, echo_datagram, NULL, NULL, &v);
        CHECK_EQ_INT(rc, NS_ERR_ADDR_IN_USE);
        if (rc == NS_OK)
            ns_server_free(v);
        ns_server_free(u);
    }

    /* port held by a plain socket */
    fd = bound_socket4(SOCK_STREAM);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK_EQ_INT(listen(fd, 4), 0);
        snprintf(addr, sizeof addr, "127.0.0.1:%d", sock_port(fd));
        b = NULL;
        rc = ns_tcp_serve(addr, echo_on_data, NULL, NULL, &b);
        CHECK_EQ_INT(rc, NS_ERR_ADDR_IN_USE);
        if (rc == NS_OK)
            ns_server_free(b);
        close(fd);
    }
    fd = bound_socket4(SOCK_DGRAM);
    CHECK(fd >= 0);
    if (fd >= 0) {
        snprintf(addr, sizeof addr, "127.0.0.1:%d", sock_port(fd));
        v = NULL;
        rc = ns_udp_serve(addr, echo_datagram, NULL, NULL, &v);
        CHECK_EQ_INT(rc, NS_ERR_ADDR_IN_USE);
        if (rc == NS_OK)
            ns_server_free(v);
        close(fd);
    }
}

/* ---- REFUSED -------------------------------------------------------------- */

static void test_refused(void)
{
    char addr[64], reply[16];
    size_t rlen = 99;
    int port, rc;
    int64_t t0;

    SECTION("refused");
    port = free_port4(SOCK_STREAM);
    CHECK(port > 0);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    t0 = now_ms();
    rc = ns_tcp_send(addr, "hello", 5, reply, sizeof reply, &rlen, 3000);
    CHECK_EQ_INT(rc, NS_ERR_REFUSED);
    CHECK(now_ms() - t0 < 2500); /* a refusal is immediate, not a timeout */
    CHECK(ns_last_error()[0] != '\0');

    /* UDP to a port nobody has bound: with a connected socket the ICMP port
       unreachable is NS_ERR_REFUSED; a plain timeout is acceptable too. */
    port = free_port4(SOCK_DGRAM);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    rc = ns_udp_request(addr, "hello", 5, reply, sizeof reply, &rlen, 300);
    CHECK(rc == NS_ERR_REFUSED || rc == NS_ERR_TIMEOUT);
    if (rc != NS_ERR_REFUSED && rc != NS_ERR_TIMEOUT)
        fprintf(stderr, "  udp_request to closed port gave %d (%s)\n", rc, ns_strerror(rc));
}

/* ---- TIMEOUT -------------------------------------------------------------- */

static void test_timeout(void)
{
    char addr[64], reply[16];
    size_t rlen = 0;
    int lfd, ufd, rc;
    int64_t t0, el;

    SECTION("timeout");
    /* a plain listening socket: the kernel completes the handshake and takes
       the data, but nobody ever answers or closes */
    lfd = bound_socket4(SOCK_STREAM);
    CHECK(lfd >= 0);
    if (lfd >= 0) {
        CHECK_EQ_INT(listen(lfd, 16), 0);
        snprintf(addr, sizeof addr, "127.0.0.1:%d", sock_port(lfd));
        t0 = now_ms();
        rc = ns_tcp_send(addr, "hello", 5, reply, sizeof reply, &rlen, 300);
        el = now_ms() - t0;
        CHECK_EQ_INT(rc, NS_ERR_TIMEOUT);
        CHECK(el >= 250);
        CHECK(el < 3000);
        CHECK(ns_last_error()[0] != '\0');
        close(lfd);
    }

    ufd = bound_socket4(SOCK_DGRAM);
    CHECK(ufd >= 0);
    if (ufd >= 0) {
        char got[16];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", sock_port(ufd));
        t0 = now_ms();
        rc = ns_udp_request(addr, "hello", 5, reply, sizeof reply, &rlen, 300);
        el = now_ms() - t0;
        CHECK_EQ_INT(rc, NS_ERR_TIMEOUT);
        CHECK(el >= 250);
        CHECK(el < 3000);
        /* the request did arrive */
        CHECK_EQ_INT(recv(ufd, got, sizeof got, MSG_DONTWAIT), 5);
        close(ufd);
    }
}

/* ---- CLOSED / MISUSE ------------------------------------------------------ */

struct misuse_state {
    ns_server *srv;
    int wait_rc;
    int close_rc;
    int send_after_close_rc;
    int called;
};

static pthread_mutex_t g_ms_lock = PTHREAD_MUTEX_INITIALIZER;

static void misuse_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct misuse_state *st = (struct misuse_state *)user;
    int w, c, s;
    (void)data;
    (void)len;
    w = ns_server_wait(st->srv);
    CHECK_EQ_INT(ns_conn_send(conn, "bye", 3), NS_OK);
    c = ns_conn_close(conn);
    s = ns_conn_send(conn, "more", 4);
    pthread_mutex_lock(&g_ms_lock);
    if (!st->called) {
        st->wait_rc = w;
        st->close_rc = c;
        st->send_after_close_rc = s;
    }
    st->called++;
    pthread_mutex_unlock(&g_ms_lock);
}

static void misuse_datagram(ns_server *srv, const ns_peer *from, const uint8_t *data, size_t len,
                            void *user)
{
    struct misuse_state *st = (struct misuse_state *)user;
    int w = ns_server_wait(srv);
    (void)data;
    (void)len;
    CHECK_EQ_INT(ns_udp_reply(srv, from, "ok", 2), NS_OK);
    pthread_mutex_lock(&g_ms_lock);
    st->wait_rc = w;
    st->called++;
    pthread_mutex_unlock(&g_ms_lock);
}

static int ms_called(struct misuse_state *st)
{
    int v;
    pthread_mutex_lock(&g_ms_lock);
    v = st->called;
    pthread_mutex_unlock(&g_ms_lock);
    return v;
}

static void test_closed_and_misuse(void)
{
    struct misuse_state st, ust;
    ns_server *srv = NULL, *usrv = NULL;
    char buf[64];
    int fd, eof;
    size_t n;

    SECTION("closed / misuse");
    memset(&st, 0, sizeof st);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", misuse_on_data, &st, NULL, &srv), NS_OK);
    if (!srv)
        return;
    st.srv = srv;

    /* unknown connection ids */
    CHECK_EQ_INT(ns_server_send(srv, 0, "x", 1), NS_ERR_CLOSED);
    CHECK_EQ_INT(ns_server_send(srv, 987654321ULL, "x", 1), NS_ERR_CLOSED);
    CHECK_EQ_INT(ns_server_send(srv, UINT64_MAX, "x", 1), NS_ERR_CLOSED);

    fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK_EQ_INT(write_all_timeout(fd, "hi", 2, 2000), 2);
        /* the queued "bye" is flushed, then the connection closes */
        n = read_timeout(fd, buf, sizeof buf, 5000, &eof);
        CHECK_EQ_INT(n, 3);
        CHECK(n >= 3 && memcmp(buf, "bye", 3) == 0);
        CHECK_EQ_INT(eof, 1);
        close(fd);
    }
    WAIT_FOR(ms_called(&st) > 0, 5000);
    CHECK_EQ_INT(ms_called(&st), 1);
    CHECK_EQ_INT(st.wait_rc, NS_ERR_MISUSE);
    CHECK_EQ_INT(st.close_rc, NS_OK);
    CHECK_EQ_INT(st.send_after_close_rc, NS_ERR_CLOSED);
    ns_server_free(srv);

    /* ns_server_wait inside a UDP server's callback */
    memset(&ust, 0, sizeof ust);
    CHECK_EQ_INT(ns_udp_serve("127.0.0.1:0", misuse_datagram, &ust, NULL, &usrv), NS_OK);
    if (usrv) {
        char addr[64], reply[8];
        size_t rlen = 0;
        ust.srv = usrv;
        addr_of(usrv, addr, sizeof addr);
        CHECK_EQ_INT(ns_udp_request(addr, "w", 1, reply, sizeof reply, &rlen, 5000), NS_OK);
        CHECK_EQ_INT(rlen, 2);
        WAIT_FOR(ms_called(&ust) > 0, 2000);
        CHECK_EQ_INT(ust.wait_rc, NS_ERR_MISUSE);
        ns_server_free(usrv);
    }
}

/* ---- TRUNCATED / LIMIT / IO ------------------------------------------------ */

static void test_truncated_limit_io(void)
{
    ns_server *srv = NULL, *usrv = NULL;
    char addr[64], uaddr[64], reply[8];
    size_t rlen = 0;
    static char big[70000];
    int rc;

    SECTION("truncated / limit / io");
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", echo_on_data, NULL, NULL, &srv), NS_OK);
    CHECK_EQ_INT(ns_udp_serve("127.0.0.1:0", echo_datagram, NULL, NULL, &usrv), NS_OK);
    if (srv && usrv) {
        addr_of(srv, addr, sizeof addr);
        addr_of(usrv, uaddr, sizeof uaddr);
        rc = ns_tcp_send(addr, "0123456789abcdef", 16, reply, sizeof reply, &rlen, 5000);
        CHECK_EQ_INT(rc, NS_ERR_TRUNCATED);
        CHECK_EQ_INT(rlen, sizeof reply);
        CHECK(memcmp(reply, "01234567", 8) == 0);

        rlen = 0;
        rc = ns_udp_request(uaddr, "0123456789abcdef", 16, reply, sizeof reply, &rlen, 5000);
        CHECK_EQ_INT(rc, NS_ERR_TRUNCATED);
        CHECK_EQ_INT(rlen, sizeof reply);
        CHECK(memcmp(reply, "01234567", 8) == 0);

        /* an IPv4 UDP datagram cannot carry 70000 bytes (EMSGSIZE) */
        memset(big, 'b', sizeof big);
        rc = ns_udp_send(uaddr, big, sizeof big);
        CHECK_EQ_INT(rc, NS_ERR_LIMIT);
        rc = ns_udp_request(uaddr, big, sizeof big, reply, sizeof reply, &rlen, 1000);
        CHECK_EQ_INT(rc, NS_ERR_LIMIT);
    }
    ns_server_free(srv);
    ns_server_free(usrv);

    /* other OS error: a unix socket path under a plain file (a missing folder is NS_ERR_ADDR,
     * see test_addrs.c) */
    {
        char tmpl[] = "/tmp/ns_err_XXXXXX";
        char *dir = mkdtemp(tmpl);
        CHECK(dir != NULL);
        if (dir) {
            char file[256], path[300];
            FILE *f;
            ns_server *s = NULL;
            snprintf(file, sizeof file, "%s/file", dir);
            f = fopen(file, "w");
            CHECK(f != NULL);
            if (f)
                fclose(f);
            snprintf(path, sizeof path, "unix:%s/s.sock", file);
            rc = ns_tcp_serve(path, echo_on_data, NULL, NULL, &s);
            CHECK_EQ_INT(rc, NS_ERR_IO);
            CHECK(ns_last_error()[0] != '\0');
            if (rc == NS_OK)
                ns_server_free(s);
            unlink(file);
            rmdir(dir);
        }
    }
}

/* ---- ns_last_error is per thread ------------------------------------------ */

struct le_thread {
    char initial[256];
    char after[256];
    int rc;
};

static void *last_error_thread(void *arg)
{
    struct le_thread *t = (struct le_thread *)arg;
    const char *e = ns_last_error();
    ns_server *s = NULL;
    snprintf(t->initial, sizeof t->initial, "%s", e ? e : "(NULL)");
    /* a different failure on this thread */
    t->rc = ns_tcp_serve(NULL, echo_on_data, NULL, NULL, &s);
    e = ns_last_error();
    snprintf(t->after, sizeof t->after, "%s", e ? e : "(NULL)");
    return NULL;
}

static void test_last_error_per_thread(void)
{
    char mine[512];
    const char *e;
    ns_server *s = NULL;
    pthread_t th;
    struct le_thread t;

    SECTION("ns_last_error per thread");
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:80x", echo_on_data, NULL, NULL, &s), NS_ERR_ADDR);
    e = ns_last_error();
    CHECK(e != NULL && e[0] != '\0');
    snprintf(mine, sizeof mine, "%s", e ? e : "");

    memset(&t, 0, sizeof t);
    CHECK_EQ_INT(pthread_create(&th, NULL, last_error_thread, &t), 0);
    pthread_join(th, NULL);
    CHECK_EQ_STR(t.initial, ""); /* fresh thread: no failure yet */
    CHECK_EQ_INT(t.rc, NS_ERR_INVALID);
    CHECK(t.after[0] != '\0');
    CHECK(strcmp(t.after, mine) != 0);
    /* our text is unchanged by the other thread's failure */
    CHECK_EQ_STR(ns_last_error(), mine);
}

/* ---- calls while a thread exits ------------------------------------------ */

static pthread_key_t exit_key;
static int exit_rc = 1;
static const char *exit_last = NULL;

/* Runs as the thread exits, after the library's own thread-local data may be gone. */
static void exit_dtor(void *p)
{
    (void)p;
    exit_rc = ns_server_port(NULL);
    exit_last = ns_last_error();
}

static void *exiting_thread(void *arg)
{
    (void)arg;
    CHECK_EQ_INT(pthread_setspecific(exit_key, (void *)1), 0);
    CHECK_EQ_INT(ns_server_port(NULL), NS_ERR_INVALID); /* the thread's detail text exists */
    return NULL;
}

/* Legal C: a failing call, and ns_last_error, from a thread-specific-data destructor. */
static void test_calls_at_thread_exit(void)
{
    pthread_t th;
    SECTION("failing calls and ns_last_error while a thread exits");
    CHECK_EQ_INT(pthread_key_create(&exit_key, exit_dtor), 0);
    CHECK_EQ_INT(pthread_create(&th, NULL, exiting_thread, NULL), 0);
    pthread_join(th, NULL);
    CHECK_EQ_INT(exit_rc, NS_ERR_INVALID);
    CHECK(exit_last != NULL);
    pthread_key_delete(exit_key);
}

int main(void)
{
    watchdog(90);
    /* first call on this thread, before any failure */
    CHECK_EQ_STR(ns_last_error(), "");
    test_version();
    test_strerror();
    test_bad_addresses();
    test_null_pointers();
    test_addr_in_use();
    test_refused();
    test_timeout();
    test_closed_and_misuse();
    test_truncated_limit_io();
    test_last_error_per_thread();
    test_calls_at_thread_exit();
    return CHECK_DONE();
}
