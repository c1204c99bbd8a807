/* test_addrs.c - the address forms people type: a dotted host that is no IPv4 address, an
 * IPv6 literal without brackets, ":port" (every interface for a server, this host for a
 * client), scoped IPv6, port 0 for a client, a Unix path whose folder is missing. */
#include <net/if.h>
#include <stdio.h>
#include <string.h>

#include "netsock.h"
#include "check.h"

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

/* Whether this host can bind the IPv6 loopback. */
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

/* ns_last_error() holds `part`. */
static int error_has(const char *part)
{
    const char *e = ns_last_error();
    return e != NULL && strstr(e, part) != NULL;
}

/* ns_tcp_send of `msg` to `addr` comes back whole. */
static void check_echo(const char *addr, const char *msg)
{
    char reply[64];
    size_t rlen = 0;
    int rc = ns_tcp_send(addr, msg, strlen(msg), reply, sizeof reply, &rlen, 5000);
    if (rc != NS_OK)
        fprintf(stderr, "  ns_tcp_send(\"%s\")\n", addr);
    CHECK_EQ_INT(rc, NS_OK);
    CHECK_EQ_INT(rlen, strlen(msg));
    CHECK(rc == NS_OK && memcmp(reply, msg, strlen(msg)) == 0);
}

/* ns_udp_request of `msg` to `addr` comes back whole. */
static void check_udp_echo(const char *addr, const char *msg)
{
    char reply[64];
    size_t rlen = 0;
    int rc = ns_udp_request(addr, msg, strlen(msg), reply, sizeof reply, &rlen, 5000);
    if (rc != NS_OK)
        fprintf(stderr, "  ns_udp_request(\"%s\")\n", addr);
    CHECK_EQ_INT(rc, NS_OK);
    CHECK_EQ_INT(rlen, strlen(msg));
    CHECK(rc == NS_OK && memcmp(reply, msg, strlen(msg)) == 0);
}

static void test_not_ipv4(void)
{
    ns_server *srv = NULL;
    char reply[8];
    size_t rlen = 0;

    SECTION("256.1.1.1:80 is an invalid IPv4 address, not a name to look up");
    CHECK_EQ_INT(ns_tcp_serve("256.1.1.1:80", echo_on_data, NULL, NULL, &srv), NS_ERR_ADDR);
    CHECK(srv == NULL);
    CHECK(error_has("invalid IPv4 address"));
    CHECK_EQ_INT(ns_tcp_send("256.1.1.1:80", "x", 1, reply, sizeof reply, &rlen, 1000), NS_ERR_ADDR);
    CHECK(error_has("invalid IPv4 address"));
    CHECK_EQ_INT(ns_udp_send("1.2.3:80", "x", 1), NS_ERR_ADDR);
    CHECK(error_has("invalid IPv4 address"));
}

static void test_unbracketed_ipv6(void)
{
    ns_server *srv = NULL;

    SECTION("::1:80 hints at [::1]:80");
    CHECK_EQ_INT(ns_tcp_serve("::1:80", echo_on_data, NULL, NULL, &srv), NS_ERR_ADDR);
    CHECK(srv == NULL);
    CHECK(error_has("brackets"));
    CHECK(error_has("\"[::1]:80\""));
    CHECK_EQ_INT(ns_udp_send("fe80::1:80", "x", 1), NS_ERR_ADDR);
    CHECK(error_has("\"[fe80::1]:80\""));
}

static void test_any_host_tcp(int v6)
{
    ns_server *srv = NULL;
    char addr[128], expect[128];
    int port;

    SECTION("a TCP server on :0 listens on every interface; a client's :port is this host");
    CHECK_EQ_INT(ns_tcp_serve(":0", echo_on_data, NULL, NULL, &srv), NS_OK);
    if (!srv)
        return;
    port = ns_server_port(srv);
    CHECK(port > 0);
    CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);
    snprintf(expect, sizeof expect, v6 ? "[::]:%d" : "0.0.0.0:%d", port);
    CHECK_EQ_STR(addr, expect);

    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    check_echo(addr, "four");
    if (v6) {
        snprintf(addr, sizeof addr, "[::1]:%d", port);
        check_echo(addr, "six");
    } else {
        printf("   IPv6 loopback not available here: [::1] skipped\n");
    }
    snprintf(addr, sizeof addr, ":%d", port);
    check_echo(addr, "this host");
    ns_server_free(srv);
}

static void test_any_host_udp(int v6)
{
    ns_server *srv = NULL;
    char addr[128];
    int port;

    SECTION("a UDP server on :0 answers on every interface");
    CHECK_EQ_INT(ns_udp_serve(":0", echo_datagram, NULL, NULL, &srv), NS_OK);
    if (!srv)
        return;
    port = ns_server_port(srv);
    CHECK(port > 0);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    check_udp_echo(addr, "four");
    if (v6) {
        snprintf(addr, sizeof addr, "[::1]:%d", port);
        check_udp_echo(addr, "six");
    }
    snprintf(addr, sizeof addr, ":%d", port);
    check_udp_echo(addr, "this host");
    ns_server_free(srv);
}

static void test_scoped_ipv6(int v6)
{
    ns_server *srv = NULL;
    char addr[128];
    unsigned lo = if_nametoindex("lo");
    int rc, port;

    SECTION("scoped IPv6: [addr%name]:port and [addr%index]:port");
    /* Parsed; whether a link-local address on lo can be reached depends on the host. */
    rc = ns_udp_send("[fe80::1%lo]:9", "x", 1);
    CHECK(rc != NS_ERR_ADDR);
    CHECK_EQ_INT(ns_udp_send("[fe80::1%no-such-if0]:9", "x", 1), NS_ERR_ADDR);
    CHECK(error_has("no-such-if0"));
    CHECK_EQ_INT(ns_udp_send("[fe80::1%]:9", "x", 1), NS_ERR_ADDR);

    CHECK(lo > 0);
    if (!v6 || lo == 0) {
        printf("   IPv6 loopback not available here: scoped round trips skipped\n");
        return;
    }
    /* The loopback needs no scope, so the kernel ignores it: the text is what is tested. */
    CHECK_EQ_INT(ns_tcp_serve("[::1]:0", echo_on_data, NULL, NULL, &srv), NS_OK);
    if (!srv)
        return;
    port = ns_server_port(srv);
    snprintf(addr, sizeof addr, "[::1%%lo]:%d", port);
    check_echo(addr, "named scope");
    snprintf(addr, sizeof addr, "[::1%%%u]:%d", lo, port);
    check_echo(addr, "numbered scope");
    ns_server_free(srv);
}

static void test_client_port_0(void)
{
    ns_client *cl = NULL;
    char reply[8];
    size_t rlen = 0;

    SECTION("a client cannot reach port 0");
    CHECK_EQ_INT(ns_udp_send("127.0.0.1:0", "x", 1), NS_ERR_ADDR);
    CHECK(error_has("port 0"));
    CHECK_EQ_INT(ns_udp_request("127.0.0.1:0", "x", 1, reply, sizeof reply, &rlen, 1000), NS_ERR_ADDR);
    CHECK(error_has("port 0"));
    CHECK_EQ_INT(ns_tcp_send("127.0.0.1:0", "x", 1, reply, sizeof reply, &rlen, 1000), NS_ERR_ADDR);
    CHECK(error_has("port 0"));
    CHECK_EQ_INT(ns_tcp_request("127.0.0.1:0", "x", 1, reply, sizeof reply, &rlen, 1000, NS_FRAMING_LINE),
                 NS_ERR_ADDR);
    CHECK(error_has("port 0"));
    CHECK_EQ_INT(ns_tcp_connect("127.0.0.1:0", echo_on_data, NULL, NULL, &cl), NS_ERR_ADDR);
    CHECK(cl == NULL);
    CHECK(error_has("port 0"));
    CHECK_EQ_INT(ns_tcp_send(":0", "x", 1, reply, sizeof reply, &rlen, 1000), NS_ERR_ADDR);
    CHECK(error_has("port 0"));
    ns_client_free(cl);
}

static void test_unix_missing_folder(void)
{
    char tmpl[] = "/tmp/ns_addrs_XXXXXX";
    char path[256], addr[300], reply[8];
    char *dir = mkdtemp(tmpl);
    ns_server *srv = NULL;
    size_t rlen = 0;

    SECTION("a Unix path whose folder is missing is named");
    CHECK(dir != NULL);
    if (!dir)
        return;
    snprintf(path, sizeof path, "%s/no-such-dir/x.sock", dir);
    snprintf(addr, sizeof addr, "unix:%s", path);

    CHECK_EQ_INT(ns_tcp_serve(addr, echo_on_data, NULL, NULL, &srv), NS_ERR_ADDR);
    CHECK(srv == NULL);
    CHECK(error_has("no folder"));
    CHECK(error_has(path));
    CHECK_EQ_INT(ns_udp_serve(addr, echo_datagram, NULL, NULL, &srv), NS_ERR_ADDR);
    CHECK(srv == NULL);
    CHECK(error_has(path));

    /* A client finds nobody there: still a refusal, naming the path. */
    CHECK_EQ_INT(ns_tcp_send(addr, "x", 1, reply, sizeof reply, &rlen, 1000), NS_ERR_REFUSED);
    CHECK(error_has(path));
    CHECK_EQ_INT(ns_udp_send(addr, "x", 1), NS_ERR_REFUSED);
    CHECK(error_has(path));
    CHECK_EQ_INT(rmdir(dir), 0);
}

int main(void)
{
    int v6 = ipv6_available();
    watchdog(60);
    test_not_ipv4();
    test_unbracketed_ipv6();
    test_any_host_tcp(v6);
    test_any_host_udp(v6);
    test_scoped_ipv6(v6);
    test_client_port_0();
    test_unix_missing_folder();
    return CHECK_DONE();
}
