/* test_udp.c - UDP server: ns_udp_reply from the callback and from another
 * thread with a copied ns_peer, ns_udp_send, ns_udp_request (incl. large and
 * truncated replies), ns_peer_format, ns_peer_parse (a reply to an address the
 * server never heard from). */
#include <stdio.h>
#include <string.h>
#include <net/if.h>
#include <sys/un.h>

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

/* ---- ns_peer_parse: a server sends to an address it never heard from ------------ */

/* "1.2.3.4:5", "[::1]:5" or "unix:/path": the text netsock writes for an address. */
static void sockaddr_text(const struct sockaddr_storage *ss, char *buf, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sa = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &sa->sin_addr, ip, sizeof ip);
        snprintf(buf, cap, "%s:%d", ip, ntohs(sa->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sa = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &sa->sin6_addr, ip, sizeof ip);
        snprintf(buf, cap, "[%s]:%d", ip, ntohs(sa->sin6_port));
    } else if (ss->ss_family == AF_UNIX) {
        snprintf(buf, cap, "unix:%s", ((const struct sockaddr_un *)ss)->sun_path);
    } else {
        snprintf(buf, cap, "family %d", ss->ss_family);
    }
}

/* A UDP server on `srv_addr` sends "hi" from the main thread to `peer_text`, the address of
 * the plain datagram socket `fd`, which it never heard from; the reply comes from the server's
 * address. Then `fd` sends the server a datagram: the ns_peer netsock fills in for it is the
 * parsed one, byte for byte. */
static void reply_to_parsed(const char *srv_addr, int fd, const char *peer_text)
{
    struct ustate *u = malloc(sizeof *u);
    struct sockaddr_storage from;
    socklen_t fromlen = sizeof from;
    char text[256], srv_text[256], buf[16];
    ns_server *srv = NULL;
    ns_peer peer;
    struct pollfd p;
    int n = -1;

    if (!u)
        return;
    ustate_init(u, MODE_RECORD);
    CHECK_EQ_INT(ns_udp_serve(srv_addr, on_dgram, u, NULL, &srv), NS_OK);
    CHECK_EQ_INT(ns_peer_parse(peer_text, &peer), NS_OK);
    CHECK_EQ_INT(ns_peer_format(&peer, text, sizeof text), NS_OK);
    CHECK_EQ_STR(text, peer_text);
    if (!srv) {
        free(u);
        return;
    }
    CHECK_EQ_INT(ns_server_addr(srv, srv_text, sizeof srv_text), NS_OK);
    CHECK_EQ_INT(ns_udp_reply(srv, &peer, "hi", 2), NS_OK);
    p.fd = fd;
    p.events = POLLIN;
    p.revents = 0;
    if (poll(&p, 1, 5000) == 1)
        n = (int)recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fromlen);
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        CHECK(memcmp(buf, "hi", 2) == 0);
        sockaddr_text(&from, text, sizeof text);
        CHECK_EQ_STR(text, srv_text);
        CHECK_EQ_INT(sendto(fd, "back", 4, 0, (struct sockaddr *)&from, fromlen), 4);
        CHECK_EQ_INT(wait_count(u, 1, 5000), 1);
        pthread_mutex_lock(&u->lock);
        CHECK_EQ_STR(u->peer_text, peer_text);
        CHECK(memcmp(&u->peer, &peer, sizeof peer) == 0);
        pthread_mutex_unlock(&u->lock);
    }
    ns_server_free(srv);
    free(u);
}

/* ns_peer_parse(text) fails with `code` (and `why` in ns_last_error(), if not NULL) and leaves
 * its output as it was. */
static void parse_refused(const char *text, int code, const char *why)
{
    ns_peer out, before;
    int rc;
    memset(&out, 0xA5, sizeof out);
    before = out;
    rc = ns_peer_parse(text, &out);
    if (rc != code)
        fprintf(stderr, "ns_peer_parse(\"%s\"):\n", text ? text : "(NULL)");
    CHECK_EQ_INT(rc, code);
    if (why && !strstr(ns_last_error(), why))
        fprintf(stderr, "ns_peer_parse(\"%s\"): \"%s\" lacks \"%s\"\n", text, ns_last_error(), why);
    CHECK(!why || strstr(ns_last_error(), why));
    CHECK(memcmp(&out, &before, sizeof out) == 0);
}

static void test_peer_parse(void)
{
    char text[256], dir_tmpl[] = "/tmp/ns_peer_XXXXXX", *dir;
    struct sockaddr_in6 sa6;
    int fd;

    SECTION("ns_peer_parse: a UDP server on port 0 replies to any address");
    fd = bound_socket4(SOCK_DGRAM);
    CHECK(fd >= 0);
    if (fd >= 0) {
        snprintf(text, sizeof text, "127.0.0.1:%d", sock_port(fd));
        reply_to_parsed("127.0.0.1:0", fd, text);
        close(fd);
    }

    SECTION("ns_peer_parse: IPv6, scoped IPv6");
    memset(&sa6, 0, sizeof sa6);
    sa6.sin6_family = AF_INET6;
    sa6.sin6_addr = in6addr_loopback;
    fd = socket(AF_INET6, SOCK_DGRAM, 0);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa6, sizeof sa6) == 0) {
        snprintf(text, sizeof text, "[::1]:%d", sock_port(fd));
        reply_to_parsed("[::1]:0", fd, text);
    } else {
        printf("   IPv6 loopback not available here: [::1] skipped\n");
    }
    if (fd >= 0)
        close(fd);
    {
        ns_peer peer;
        char expect[64];
        snprintf(expect, sizeof expect, "[fe80::1%%%u]:5", if_nametoindex("lo"));
        CHECK_EQ_INT(ns_peer_parse("[fe80::1%lo]:5", &peer), NS_OK);
        CHECK_EQ_INT(ns_peer_format(&peer, text, sizeof text), NS_OK);
        CHECK_EQ_STR(text, expect);
    }

    SECTION("ns_peer_parse: a unix: path");
    dir = mkdtemp(dir_tmpl);
    CHECK(dir != NULL);
    fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    CHECK(fd >= 0);
    if (dir && fd >= 0) {
        struct sockaddr_un sa;
        char srv_addr[128];
        memset(&sa, 0, sizeof sa);
        sa.sun_family = AF_UNIX;
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s/plain.sock", dir);
        CHECK_EQ_INT(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
        snprintf(srv_addr, sizeof srv_addr, "unix:%s/srv.sock", dir);
        snprintf(text, sizeof text, "unix:%s", sa.sun_path);
        reply_to_parsed(srv_addr, fd, text);
        unlink(sa.sun_path);
    }
    if (fd >= 0)
        close(fd);
    if (dir)
        CHECK_EQ_INT(rmdir(dir), 0); /* empty: the server removed its socket file */

    SECTION("ns_peer_parse: refusals, out untouched");
    parse_refused(NULL, NS_ERR_INVALID, NULL);
    CHECK_EQ_INT(ns_peer_parse("127.0.0.1:5", NULL), NS_ERR_INVALID);
    parse_refused("localhost:5", NS_ERR_ADDR, "does not resolve");
    parse_refused("nohost.invalid:5", NS_ERR_ADDR, "does not resolve");
    parse_refused(":5", NS_ERR_ADDR, "no host");
    parse_refused("127.0.0.1:0", NS_ERR_ADDR, "port 0");
    parse_refused("[::1]:0", NS_ERR_ADDR, "port 0");
    parse_refused("unix:@x", NS_ERR_ADDR, "abstract");
    parse_refused("unix:", NS_ERR_ADDR, NULL);
    parse_refused("", NS_ERR_ADDR, NULL);
    parse_refused("nonsense", NS_ERR_ADDR, NULL);
    parse_refused("127.0.0.1", NS_ERR_ADDR, NULL);
    parse_refused("127.0.0.1:65536", NS_ERR_ADDR, NULL);
    parse_refused("256.1.1.1:5", NS_ERR_ADDR, NULL);
    parse_refused("::1:5", NS_ERR_ADDR, "brackets");
    parse_refused("[::1]", NS_ERR_ADDR, NULL);
    parse_refused("[fe80::1%no-such-if0]:5", NS_ERR_ADDR, NULL);
    parse_refused("\xff\xfe:5", NS_ERR_ADDR, "UTF-8");
}

int main(void)
{
    watchdog(90);
    test_echo_plain_client();
    test_reply_from_thread();
    test_udp_send();
    test_peer_parse();
    return CHECK_DONE();
}
