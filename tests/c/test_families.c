/* test_families.c - IPv6 TCP and UDP round trips, Unix-domain stream and
 * datagram servers (socket file removed on free). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "netsock.h"
#include "check.h"

struct seen {
    pthread_mutex_t lock;
    char peer[256];
    int peer_rc;
    int count;
    int reply_rc;
    int unnamed;
};

static struct seen g_seen = {PTHREAD_MUTEX_INITIALIZER, "", 0, 0, 0, 0};

static void seen_reset(void)
{
    pthread_mutex_lock(&g_seen.lock);
    g_seen.peer[0] = '\0';
    g_seen.peer_rc = 99;
    g_seen.count = 0;
    g_seen.reply_rc = 99;
    g_seen.unnamed = 0;
    pthread_mutex_unlock(&g_seen.lock);
}

static int seen_count(void)
{
    int n;
    pthread_mutex_lock(&g_seen.lock);
    n = g_seen.count;
    pthread_mutex_unlock(&g_seen.lock);
    return n;
}

static void echo_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    char peer[128];
    int rc = ns_conn_peer(conn, peer, sizeof peer);
    (void)user;
    pthread_mutex_lock(&g_seen.lock);
    g_seen.peer_rc = rc;
    snprintf(g_seen.peer, sizeof g_seen.peer, "%s", rc == NS_OK ? peer : "");
    g_seen.count++;
    pthread_mutex_unlock(&g_seen.lock);
    CHECK_EQ_INT(ns_conn_send(conn, data, len), NS_OK);
}

static void echo_datagram(ns_server *srv, const ns_peer *from, const uint8_t *data, size_t len,
                          void *user)
{
    char peer[256];
    int rc = ns_peer_format(from, peer, sizeof peer);
    (void)user;
    pthread_mutex_lock(&g_seen.lock);
    g_seen.peer_rc = rc;
    snprintf(g_seen.peer, sizeof g_seen.peer, "%s", rc == NS_OK ? peer : "");
    g_seen.count++;
    g_seen.reply_rc = ns_udp_reply(srv, from, data, len);
    if (rc == NS_OK && strcmp(peer, "unix:") == 0) {
        /* an unnamed (unbound) unix datagram sender cannot be answered */
        g_seen.unnamed++;
    } else {
        CHECK_EQ_INT(g_seen.reply_rc, NS_OK);
    }
    pthread_mutex_unlock(&g_seen.lock);
}

/* fill a sockaddr_un with path; 0 if it does not fit */
static int set_sun_path(struct sockaddr_un *sa, const char *path)
{
    size_t n = strlen(path);
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (n >= sizeof sa->sun_path)
        return 0;
    memcpy(sa->sun_path, path, n + 1);
    return 1;
}

static int ipv6_available(void)
{
    struct sockaddr_in6 sa;
    int ok, fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    memset(&sa, 0, sizeof sa);
    sa.sin6_family = AF_INET6;
    sa.sin6_addr = in6addr_loopback;
    ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static int connect6(int type, int port)
{
    struct sockaddr_in6 sa;
    int fd = socket(AF_INET6, type, 0);
    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof sa);
    sa.sin6_family = AF_INET6;
    sa.sin6_addr = in6addr_loopback;
    sa.sin6_port = htons((uint16_t)port);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void test_ipv6(void)
{
    ns_server *tcp = NULL, *udp = NULL;
    char addr[128], expect[128], reply[64];
    size_t rlen = 0;
    int port, fd;

    SECTION("IPv6 [::1] TCP and UDP");
    if (!ipv6_available()) {
        printf("   IPv6 loopback not available here: skipped\n");
        return;
    }
    CHECK_EQ_INT(ns_tcp_serve("[::1]:0", echo_on_data, NULL, NULL, &tcp), NS_OK);
    if (tcp) {
        port = ns_server_port(tcp);
        CHECK(port > 0);
        CHECK_EQ_INT(ns_server_addr(tcp, addr, sizeof addr), NS_OK);
        snprintf(expect, sizeof expect, "[::1]:%d", port);
        CHECK_EQ_STR(addr, expect);

        seen_reset();
        CHECK_EQ_INT(ns_tcp_send(addr, "six", 3, reply, sizeof reply, &rlen, 5000), NS_OK);
        CHECK_EQ_INT(rlen, 3);
        CHECK(memcmp(reply, "six", 3) == 0);
        pthread_mutex_lock(&g_seen.lock);
        CHECK_EQ_INT(g_seen.peer_rc, NS_OK);
        CHECK(strncmp(g_seen.peer, "[::1]:", 6) == 0);
        pthread_mutex_unlock(&g_seen.lock);

        /* a plain AF_INET6 client */
        fd = connect6(SOCK_STREAM, port);
        CHECK(fd >= 0);
        if (fd >= 0) {
            char buf[16];
            CHECK_EQ_INT(write_all_timeout(fd, "plain6", 6, 2000), 6);
            CHECK_EQ_INT(read_timeout(fd, buf, 6, 5000, NULL), 6);
            CHECK(memcmp(buf, "plain6", 6) == 0);
            close(fd);
        }
        ns_server_free(tcp);
    }

    CHECK_EQ_INT(ns_udp_serve("[::1]:0", echo_datagram, NULL, NULL, &udp), NS_OK);
    if (udp) {
        port = ns_server_port(udp);
        CHECK(port > 0);
        CHECK_EQ_INT(ns_server_addr(udp, addr, sizeof addr), NS_OK);
        snprintf(expect, sizeof expect, "[::1]:%d", port);
        CHECK_EQ_STR(addr, expect);
        seen_reset();
        rlen = 0;
        CHECK_EQ_INT(ns_udp_request(addr, "dgram6", 6, reply, sizeof reply, &rlen, 5000), NS_OK);
        CHECK_EQ_INT(rlen, 6);
        CHECK(memcmp(reply, "dgram6", 6) == 0);
        pthread_mutex_lock(&g_seen.lock);
        CHECK(strncmp(g_seen.peer, "[::1]:", 6) == 0);
        pthread_mutex_unlock(&g_seen.lock);

        /* plain AF_INET6 datagram client; the peer text names its port */
        fd = connect6(SOCK_DGRAM, port);
        CHECK(fd >= 0);
        if (fd >= 0) {
            char buf[16];
            struct pollfd p;
            seen_reset();
            CHECK_EQ_INT(send(fd, "u6", 2, 0), 2);
            p.fd = fd;
            p.events = POLLIN;
            p.revents = 0;
            CHECK_EQ_INT(poll(&p, 1, 5000), 1);
            CHECK_EQ_INT(recv(fd, buf, sizeof buf, MSG_DONTWAIT), 2);
            snprintf(expect, sizeof expect, "[::1]:%d", sock_port(fd));
            pthread_mutex_lock(&g_seen.lock);
            CHECK_EQ_STR(g_seen.peer, expect);
            pthread_mutex_unlock(&g_seen.lock);
            close(fd);
        }
        ns_server_free(udp);
    }
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void test_unix_stream(const char *dir)
{
    char path[200], addr[256], got[256], reply[64];
    size_t rlen = 0;
    ns_server *srv = NULL;
    int fd;

    SECTION("Unix-domain stream server");
    snprintf(path, sizeof path, "%s/s.sock", dir);
    snprintf(addr, sizeof addr, "unix:%s", path);
    CHECK_EQ_INT(ns_tcp_serve(addr, echo_on_data, NULL, NULL, &srv), NS_OK);
    if (!srv)
        return;
    CHECK(file_exists(path));
    CHECK_EQ_INT(ns_server_port(srv), 0);
    CHECK_EQ_INT(ns_server_addr(srv, got, sizeof got), NS_OK);
    CHECK_EQ_STR(got, addr);

    /* a second server on the same live path */
    {
        ns_server *again = NULL;
        int rc = ns_tcp_serve(addr, echo_on_data, NULL, NULL, &again);
        CHECK_EQ_INT(rc, NS_ERR_ADDR_IN_USE);
        if (rc == NS_OK)
            ns_server_free(again);
        CHECK(file_exists(path));
    }

    seen_reset();
    CHECK_EQ_INT(ns_tcp_send(addr, "over unix", 9, reply, sizeof reply, &rlen, 5000), NS_OK);
    CHECK_EQ_INT(rlen, 9);
    CHECK(memcmp(reply, "over unix", 9) == 0);
    pthread_mutex_lock(&g_seen.lock);
    CHECK_EQ_INT(g_seen.peer_rc, NS_OK);
    CHECK_EQ_STR(g_seen.peer, "unix:");
    pthread_mutex_unlock(&g_seen.lock);

    /* a plain AF_UNIX client */
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    if (fd >= 0) {
        struct sockaddr_un sa;
        char buf[16];
        int eof = 0;
        CHECK(set_sun_path(&sa, path));
        CHECK_EQ_INT(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
        CHECK_EQ_INT(write_all_timeout(fd, "plain unix", 10, 2000), 10);
        CHECK_EQ_INT(read_timeout(fd, buf, 10, 5000, NULL), 10);
        CHECK(memcmp(buf, "plain unix", 10) == 0);
        /* half-close works on unix streams too */
        CHECK_EQ_INT(shutdown(fd, SHUT_WR), 0);
        CHECK_EQ_INT(read_timeout(fd, buf, sizeof buf, 5000, &eof), 0);
        CHECK_EQ_INT(eof, 1);
        close(fd);
    }

    ns_server_free(srv);
    CHECK(!file_exists(path));
    /* and nobody listens there any more */
    CHECK_EQ_INT(ns_tcp_send(addr, "x", 1, reply, sizeof reply, &rlen, 2000), NS_ERR_REFUSED);
    unlink(path);
}

static void test_unix_stale_file(const char *dir)
{
    char path[200], addr[256], reply[16];
    size_t rlen = 0;
    ns_server *srv = NULL;
    int fd;
    struct sockaddr_un sa;

    SECTION("Unix-domain stream server over a stale socket file");
    snprintf(path, sizeof path, "%s/stale.sock", dir);
    snprintf(addr, sizeof addr, "unix:%s", path);
    /* leave a socket file behind that nobody answers on */
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK(set_sun_path(&sa, path));
    CHECK_EQ_INT(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd);
    CHECK(file_exists(path));
    CHECK_EQ_INT(ns_tcp_serve(addr, echo_on_data, NULL, NULL, &srv), NS_OK);
    if (srv) {
        CHECK_EQ_INT(ns_tcp_send(addr, "st", 2, reply, sizeof reply, &rlen, 5000), NS_OK);
        CHECK_EQ_INT(rlen, 2);
        ns_server_free(srv);
    }
    CHECK(!file_exists(path));
    unlink(path);
}

/* Keeps a copy of each datagram's sender (at most 4). */
static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;
static ns_peer kept[4];
static int kept_n;

static void keep_datagram(ns_server *srv, const ns_peer *from, const uint8_t *data, size_t len, void *user)
{
    (void)srv;
    (void)data;
    (void)len;
    (void)user;
    pthread_mutex_lock(&kept_lock);
    if (kept_n < 4)
        kept[kept_n++] = *from;
    pthread_mutex_unlock(&kept_lock);
}

static int kept_count(void)
{
    return locked_int(&kept_lock, &kept_n);
}

/* Sends one datagram from a socket bound to `from` to `to`. */
static int send_from(const char *from, const char *to)
{
    struct sockaddr_un me, dst;
    int ok, fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (fd < 0)
        return 0;
    ok = set_sun_path(&me, from) && set_sun_path(&dst, to) &&
         bind(fd, (struct sockaddr *)&me, sizeof me) == 0 &&
         sendto(fd, "x", 1, 0, (struct sockaddr *)&dst, sizeof dst) == 1;
    close(fd);
    unlink(from);
    return ok;
}

static void test_unix_dgram(const char *dir)
{
    char path[200], addr[256], got[256], reply[64];
    size_t rlen = 0;
    ns_server *srv = NULL;
    int fd;

    SECTION("Unix-domain datagram server");
    snprintf(path, sizeof path, "%s/d.sock", dir);
    snprintf(addr, sizeof addr, "unix:%s", path);
    CHECK_EQ_INT(ns_udp_serve(addr, echo_datagram, NULL, NULL, &srv), NS_OK);
    if (!srv)
        return;
    CHECK(file_exists(path));
    CHECK_EQ_INT(ns_server_port(srv), 0);
    CHECK_EQ_INT(ns_server_addr(srv, got, sizeof got), NS_OK);
    CHECK_EQ_STR(got, addr);

    seen_reset();
    CHECK_EQ_INT(ns_udp_request(addr, "unix dgram", 10, reply, sizeof reply, &rlen, 5000), NS_OK);
    CHECK_EQ_INT(rlen, 10);
    CHECK(memcmp(reply, "unix dgram", 10) == 0);
    pthread_mutex_lock(&g_seen.lock);
    CHECK(strncmp(g_seen.peer, "unix:/", 6) == 0); /* the request's own bound socket */
    pthread_mutex_unlock(&g_seen.lock);
    /* the request's temporary socket file is gone */
    {
        const char *p = g_seen.peer + 5;
        CHECK(p[0] == '/' && !file_exists(p));
    }

    /* a plain bound AF_UNIX datagram client */
    fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    CHECK(fd >= 0);
    if (fd >= 0) {
        struct sockaddr_un me, srvsa;
        char buf[32], expect[256];
        int n;
        struct pollfd p;
        char cpath[200];
        snprintf(cpath, sizeof cpath, "%s/client.sock", dir);
        CHECK(set_sun_path(&me, cpath));
        CHECK_EQ_INT(bind(fd, (struct sockaddr *)&me, sizeof me), 0);
        CHECK(set_sun_path(&srvsa, path));
        seen_reset();
        CHECK_EQ_INT(sendto(fd, "plain", 5, 0, (struct sockaddr *)&srvsa, sizeof srvsa), 5);
        p.fd = fd;
        p.events = POLLIN;
        p.revents = 0;
        CHECK_EQ_INT(poll(&p, 1, 5000), 1);
        n = (int)recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        CHECK_EQ_INT(n, 5);
        CHECK(n == 5 && memcmp(buf, "plain", 5) == 0);
        snprintf(expect, sizeof expect, "unix:%s", cpath);
        pthread_mutex_lock(&g_seen.lock);
        CHECK_EQ_STR(g_seen.peer, expect);
        pthread_mutex_unlock(&g_seen.lock);
        close(fd);
        unlink(cpath);
    }

    /* ns_udp_send needs no reply address */
    seen_reset();
    CHECK_EQ_INT(ns_udp_send(addr, "oneway", 6), NS_OK);
    WAIT_FOR(seen_count() >= 1, 5000);
    pthread_mutex_lock(&g_seen.lock);
    CHECK_EQ_INT(g_seen.count, 1);
    /* its socket is unbound: the server sees "unix:" and cannot answer it
       (the header documents NS_ERR_ADDR for that ns_udp_reply) */
    CHECK_EQ_STR(g_seen.peer, "unix:");
    CHECK_EQ_INT(g_seen.unnamed, 1);
    CHECK_EQ_INT(g_seen.reply_rc, NS_ERR_ADDR);
    pthread_mutex_unlock(&g_seen.lock);

    ns_server_free(srv);

    /* copies of one sender's ns_peer compare equal whole, even after a longer name came in
       between (the server reuses its receive slots) */
    CHECK_EQ_INT(ns_udp_serve(addr, keep_datagram, NULL, NULL, &srv), NS_OK);
    if (srv) {
        char shortp[200], longp[200];
        snprintf(shortp, sizeof shortp, "%s/s", dir);
        snprintf(longp, sizeof longp, "%s/a-much-longer-name-for-the-second-sender", dir);
        CHECK(send_from(shortp, path));
        WAIT_FOR(kept_count() >= 1, 5000);
        CHECK(send_from(longp, path));
        WAIT_FOR(kept_count() >= 2, 5000);
        CHECK(send_from(shortp, path));
        WAIT_FOR(kept_count() >= 3, 5000);
        pthread_mutex_lock(&kept_lock);
        CHECK_EQ_INT(kept_n, 3);
        CHECK(memcmp(&kept[0], &kept[2], sizeof(ns_peer)) == 0);
        CHECK(memcmp(&kept[0], &kept[1], sizeof(ns_peer)) != 0);
        pthread_mutex_unlock(&kept_lock);
        ns_server_free(srv);
    }
    CHECK(!file_exists(path));
    /* a unix datagram path with no socket: refused */
    CHECK_EQ_INT(ns_udp_send(addr, "x", 1), NS_ERR_REFUSED);
    unlink(path);
}

int main(void)
{
    char tmpl[] = "/tmp/netsock_test_XXXXXX";
    char *dir;
    watchdog(90);
    test_ipv6();
    dir = mkdtemp(tmpl);
    CHECK(dir != NULL);
    if (dir) {
        test_unix_stream(dir);
        test_unix_stale_file(dir);
        test_unix_dgram(dir);
        CHECK_EQ_INT(rmdir(dir), 0); /* empty: every socket file was removed */
    }
    return CHECK_DONE();
}
