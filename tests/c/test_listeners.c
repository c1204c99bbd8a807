/* test_listeners.c - sockets a server does not bind itself, in one process: "fd:N" (TCP, UDP,
 * Unix), "systemd:N|NAME" (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES), descriptors of the wrong
 * type (NS_ERR_ADDR, left open), ns_options_set_reuseport (two servers on one port both get
 * connections), and ns_server_handoff to a server started with "handoff:" (connections made
 * across it all answered; NS_ERR_TIMEOUT when nobody takes the sockets). The same across
 * processes (a parent passing descriptor 3, systemd-socket-activate, prefork workers, a
 * restart under load) is in tests/peers/run.sh. */
#include <sys/un.h>

#include "check.h"

/* Greets each connection with the server's name (`user`), then closes it. */
static void on_open(ns_conn *conn, void *user)
{
    const char *name = user;
    CHECK_EQ_INT(ns_conn_send(conn, name, strlen(name)), NS_OK);
    ns_conn_close(conn);
}

static void on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)conn, (void)data, (void)len, (void)user;
}

static void on_datagram(ns_server *srv, const ns_peer *from, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    ns_udp_reply(srv, from, data, len);
}

static ns_server *serve(const char *addr, const char *name, int reuseport, int *rc)
{
    ns_server *srv = NULL;
    ns_options *o = ns_options_new();
    CHECK_EQ_INT(ns_options_set_on_open(o, on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_reuseport(o, reuseport), NS_OK);
    CHECK_EQ_INT(ns_options_set_connect_timeout_ms(o, 3000), NS_OK);
    CHECK_EQ_INT(ns_options_set_drain_timeout_ms(o, 2000), NS_OK);
    *rc = ns_tcp_serve(addr, on_data, (void *)name, o, &srv);
    ns_options_free(o);
    return *rc == NS_OK ? srv : NULL;
}

/* Connects to 127.0.0.1:port and returns the first byte of the greeting, 0 if none. */
static char greeting(int port)
{
    char c = 0;
    int fd = tcp_connect4(port);
    if (fd < 0)
        return 0;
    if (read_timeout(fd, &c, 1, 3000, NULL) != 1)
        c = 0;
    close(fd);
    return c;
}

static int listening4(void)
{
    int fd = bound_socket4(SOCK_STREAM);
    CHECK(fd >= 0 && listen(fd, 16) == 0);
    return fd;
}

static int is_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1;
}

static void fd_forms(void)
{
    char addr[32];
    int rc, fd, port;
    ns_server *srv;

    SECTION("fd:N, TCP");
    fd = listening4();
    port = sock_port(fd);
    snprintf(addr, sizeof addr, "fd:%d", fd);
    srv = serve(addr, "F", 0, &rc);
    CHECK_EQ_INT(rc, NS_OK);
    CHECK_EQ_INT(ns_server_port(srv), port);
    CHECK_EQ_INT(greeting(port), 'F');
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    ns_server_free(srv);
    CHECK(!is_open(fd)); /* the server owned it */

    SECTION("fd:N, UDP");
    {
        ns_server *u = NULL;
        char back[8] = {0};
        int ufd = bound_socket4(SOCK_DGRAM), c = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in to;
        snprintf(addr, sizeof addr, "fd:%d", ufd);
        CHECK_EQ_INT(ns_udp_serve(addr, on_datagram, NULL, NULL, &u), NS_OK);
        memset(&to, 0, sizeof to);
        to.sin_family = AF_INET;
        to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        to.sin_port = htons((uint16_t)ns_server_port(u));
        CHECK_EQ_INT(sendto(c, "dgram", 5, 0, (struct sockaddr *)&to, sizeof to), 5);
        CHECK_EQ_INT(read_timeout(c, back, 5, 3000, NULL), 5);
        CHECK_EQ_STR(back, "dgram");
        close(c);
        ns_server_free(u);
    }

    SECTION("fd:N, Unix");
    {
        struct sockaddr_un sa;
        char c = 0;
        int ufd = socket(AF_UNIX, SOCK_STREAM, 0), cl = socket(AF_UNIX, SOCK_STREAM, 0);
        memset(&sa, 0, sizeof sa);
        sa.sun_family = AF_UNIX;
        snprintf(sa.sun_path, sizeof sa.sun_path, "/tmp/netsock-test-fd-%d.sock", (int)getpid());
        unlink(sa.sun_path);
        CHECK(bind(ufd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(ufd, 4) == 0);
        snprintf(addr, sizeof addr, "fd:%d", ufd);
        srv = serve(addr, "U", 0, &rc);
        CHECK_EQ_INT(rc, NS_OK);
        CHECK(connect(cl, (struct sockaddr *)&sa, sizeof sa) == 0);
        CHECK_EQ_INT(read_timeout(cl, &c, 1, 3000, NULL), 1);
        CHECK_EQ_INT(c, 'U');
        close(cl);
        ns_server_free(srv);
        unlink(sa.sun_path);
    }

    SECTION("descriptors of the wrong type are NS_ERR_ADDR and stay open");
    {
        ns_server *u = NULL;
        int udp = bound_socket4(SOCK_DGRAM), idle = bound_socket4(SOCK_STREAM), tcp = listening4();
        int unbound = socket(AF_INET, SOCK_DGRAM, 0), file = open("/dev/null", O_RDONLY);
        int pair[2];
        CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pair) == 0);
        snprintf(addr, sizeof addr, "fd:%d", udp);
        CHECK_EQ_INT(ns_tcp_serve(addr, on_data, NULL, NULL, &srv), NS_ERR_ADDR);
        snprintf(addr, sizeof addr, "fd:%d", idle);
        CHECK_EQ_INT(ns_tcp_serve(addr, on_data, NULL, NULL, &srv), NS_ERR_ADDR);
        snprintf(addr, sizeof addr, "fd:%d", file);
        CHECK_EQ_INT(ns_tcp_serve(addr, on_data, NULL, NULL, &srv), NS_ERR_ADDR);
        snprintf(addr, sizeof addr, "fd:%d", pair[0]);
        CHECK_EQ_INT(ns_tcp_serve(addr, on_data, NULL, NULL, &srv), NS_ERR_ADDR);
        snprintf(addr, sizeof addr, "fd:%d", tcp);
        CHECK_EQ_INT(ns_udp_serve(addr, on_datagram, NULL, NULL, &u), NS_ERR_ADDR);
        snprintf(addr, sizeof addr, "fd:%d", unbound);
        CHECK_EQ_INT(ns_udp_serve(addr, on_datagram, NULL, NULL, &u), NS_ERR_ADDR);
        CHECK_EQ_INT(ns_tcp_serve("fd:999999", on_data, NULL, NULL, &srv), NS_ERR_ADDR);
        CHECK_EQ_INT(ns_tcp_serve("fd:x", on_data, NULL, NULL, &srv), NS_ERR_ADDR);
        CHECK_EQ_INT(ns_tcp_serve("fd:", on_data, NULL, NULL, &srv), NS_ERR_ADDR);
        CHECK(is_open(udp) && is_open(idle) && is_open(tcp) && is_open(unbound) && is_open(file));
        close(udp), close(idle), close(tcp), close(unbound), close(file), close(pair[0]), close(pair[1]);
    }
}

static void systemd_forms(void)
{
    char pid[16];
    int rc, fd, port;
    ns_server *srv;

    SECTION("systemd:N and systemd:NAME");
    if (is_open(3)) {
        printf("descriptor 3 is taken here: systemd: checked by tests/peers only\n");
        return;
    }
    fd = listening4();
    port = sock_port(fd);
    if (fd != 3) { /* the lowest free descriptor may be 3 itself */
        CHECK(dup2(fd, 3) == 3);
        close(fd);
    }
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    unsetenv("LISTEN_PID");
    CHECK_EQ_INT(ns_tcp_serve("systemd:0", on_data, NULL, NULL, &srv), NS_ERR_ADDR);
    setenv("LISTEN_PID", "1", 1);
    setenv("LISTEN_FDS", "1", 1);
    CHECK_EQ_INT(ns_tcp_serve("systemd:0", on_data, NULL, NULL, &srv), NS_ERR_ADDR); /* not us */
    setenv("LISTEN_PID", pid, 1);
    setenv("LISTEN_FDNAMES", "web", 1);
    CHECK_EQ_INT(ns_tcp_serve("systemd:1", on_data, NULL, NULL, &srv), NS_ERR_ADDR);
    CHECK_EQ_INT(ns_tcp_serve("systemd:admin", on_data, NULL, NULL, &srv), NS_ERR_ADDR);
    CHECK_EQ_INT(ns_udp_serve("systemd:0", on_datagram, NULL, NULL, &srv), NS_ERR_ADDR);
    CHECK(is_open(3));
    srv = serve("systemd:web", "S", 0, &rc);
    CHECK_EQ_INT(rc, NS_OK);
    CHECK_EQ_INT(greeting(port), 'S');
    ns_server_free(srv);
    CHECK(!is_open(3));
    unsetenv("LISTEN_PID"), unsetenv("LISTEN_FDS"), unsetenv("LISTEN_FDNAMES");
}

static void reuseport(void)
{
    char addr[32];
    int rc, i, a = 0, b = 0, port;
    ns_server *one, *two, *plain;

    SECTION("reuseport: two servers on one port both get connections");
    one = serve("127.0.0.1:0", "A", 1, &rc);
    CHECK_EQ_INT(rc, NS_OK);
    port = ns_server_port(one);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    CHECK(serve(addr, "P", 0, &rc) == NULL);
    CHECK_EQ_INT(rc, NS_ERR_ADDR_IN_USE);
    two = serve(addr, "B", 1, &rc);
    CHECK_EQ_INT(rc, NS_OK);
    for (i = 0; i < 200 && (a < 5 || b < 5); i++) {
        char c = greeting(port);
        a += c == 'A';
        b += c == 'B';
    }
    printf("%d connections: %d to A, %d to B\n", i, a, b);
    CHECK(a >= 5 && b >= 5);
    CHECK_EQ_INT(a + b, i);
    ns_server_free(one);
    CHECK_EQ_INT(greeting(port), 'B'); /* A's sockets left the group */
    ns_server_free(two);

    SECTION("reuseport with several loops: each loop has a socket of its own");
    {
        ns_options *o = ns_options_new();
        CHECK_EQ_INT(ns_options_set_on_open(o, on_open), NS_OK);
        CHECK_EQ_INT(ns_options_set_reuseport(o, 1), NS_OK);
        CHECK_EQ_INT(ns_options_set_threads(o, 3), NS_OK);
        CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", on_data, "T", o, &plain), NS_OK);
        ns_options_free(o);
        for (i = 0; i < 30; i++)
            CHECK_EQ_INT(greeting(ns_server_port(plain)), 'T');
        CHECK_EQ_INT(server_stats(plain).accepted, 30);
        ns_server_free(plain);
    }
}

struct handoff_args {
    ns_server *srv;
    const char *path;
    uint32_t timeout_ms;
    int rc;
};

static void *handoff_thread(void *p)
{
    struct handoff_args *h = p;
    h->rc = ns_server_handoff(h->srv, h->path, h->timeout_ms);
    return NULL;
}

static void handoff(void)
{
    char path[64], addr[80];
    struct handoff_args h;
    pthread_t t;
    int rc, port, i, old = 0, new = 0, failed = 0;
    ns_server *a, *b;

    snprintf(path, sizeof path, "/tmp/netsock-test-handoff-%d.sock", (int)getpid());
    snprintf(addr, sizeof addr, "handoff:%s", path);

    SECTION("ns_server_handoff: nobody comes, the server serves on");
    a = serve("127.0.0.1:0", "O", 0, &rc);
    port = ns_server_port(a);
    CHECK_EQ_INT(ns_server_handoff(a, path, 100), NS_ERR_TIMEOUT);
    CHECK_EQ_INT(greeting(port), 'O');
    CHECK(access(path, F_OK) != 0); /* the offer's file is gone */
    CHECK_EQ_INT(ns_server_handoff(NULL, path, 100), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_server_handoff(a, NULL, 100), NS_ERR_INVALID);
    {
        ns_options *o = ns_options_new();
        ns_server *none = NULL;
        CHECK_EQ_INT(ns_options_set_connect_timeout_ms(o, 100), NS_OK);
        CHECK_EQ_INT(ns_tcp_serve(addr, on_data, NULL, o, &none), NS_ERR_TIMEOUT);
        ns_options_free(o);
    }

    SECTION("ns_server_handoff to a server on handoff:PATH, connections all answered");
    h.srv = a, h.path = path, h.timeout_ms = 5000, h.rc = 1;
    CHECK(pthread_create(&t, NULL, handoff_thread, &h) == 0);
    for (i = 0; i < 20; i++) {
        char c = greeting(port);
        old += c == 'O';
        failed += c == 0;
    }
    b = serve(addr, "N", 0, &rc);
    CHECK_EQ_INT(rc, NS_OK);
    CHECK_EQ_INT(ns_server_port(b), port);
    for (i = 0; i < 40; i++) {
        char c = greeting(port);
        old += c == 'O';
        new += c == 'N';
        failed += c == 0;
    }
    pthread_join(t, NULL);
    CHECK_EQ_INT(h.rc, NS_OK);
    CHECK_EQ_INT(failed, 0);
    CHECK(old >= 20 && new >= 1);
    CHECK_EQ_INT(greeting(port), 'N');
    ns_server_free(a); /* its copy of the socket goes; the new server's stays */
    CHECK_EQ_INT(greeting(port), 'N');
    ns_server_free(b);
    unlink(path);
}

static ns_server *serve_opts(const char *addr, const char *name, int reuseport, size_t threads)
{
    ns_server *srv = NULL;
    ns_options *o = ns_options_new();
    CHECK_EQ_INT(ns_options_set_on_open(o, on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_reuseport(o, reuseport), NS_OK);
    CHECK_EQ_INT(ns_options_set_threads(o, threads), NS_OK);
    CHECK_EQ_INT(ns_options_set_connect_timeout_ms(o, 3000), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve(addr, on_data, (void *)name, o, &srv), NS_OK);
    ns_options_free(o);
    return srv;
}

static void handoff_sockets(void)
{
    char path[64], addr[80];
    struct handoff_args h;
    pthread_t t;
    int i, port, failed = 0, new = 0;
    ns_server *a, *b;

    snprintf(path, sizeof path, "/tmp/netsock-test-handoff2-%d.sock", (int)getpid());
    snprintf(addr, sizeof addr, "handoff:%s", path);

    SECTION("ns_server_handoff of 3 reuseport sockets to a server with one loop: all served");
    a = serve_opts("127.0.0.1:0", "O", 1, 3);
    port = ns_server_port(a);
    h.srv = a, h.path = path, h.timeout_ms = 5000, h.rc = 1;
    CHECK(pthread_create(&t, NULL, handoff_thread, &h) == 0);
    b = serve_opts(addr, "N", 0, 1);
    pthread_join(t, NULL);
    CHECK_EQ_INT(h.rc, NS_OK);
    ns_server_free(a);
    for (i = 0; i < 60; i++) { /* the kernel hashes them over the 3 sockets */
        char c = greeting(port);
        new += c == 'N';
        failed += c == 0;
    }
    CHECK_EQ_INT(failed, 0);
    CHECK_EQ_INT(new, 60);
    ns_server_free(b);

    SECTION("ns_server_handoff of a UDP server");
    {
        ns_server *u = NULL, *v = NULL;
        ns_options *o = ns_options_new();
        char back[8] = {0};
        int c = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in to;
        CHECK_EQ_INT(ns_udp_serve("127.0.0.1:0", on_datagram, NULL, NULL, &u), NS_OK);
        h.srv = u, h.rc = 1;
        CHECK(pthread_create(&t, NULL, handoff_thread, &h) == 0);
        CHECK_EQ_INT(ns_options_set_threads(o, 2), NS_OK);
        CHECK_EQ_INT(ns_udp_serve(addr, on_datagram, NULL, o, &v), NS_OK);
        ns_options_free(o);
        pthread_join(t, NULL);
        CHECK_EQ_INT(h.rc, NS_OK);
        CHECK_EQ_INT(ns_server_port(v), ns_server_port(u));
        ns_server_free(u);
        memset(&to, 0, sizeof to);
        to.sin_family = AF_INET;
        to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        to.sin_port = htons((uint16_t)ns_server_port(v));
        CHECK_EQ_INT(sendto(c, "moved", 5, 0, (struct sockaddr *)&to, sizeof to), 5);
        CHECK_EQ_INT(read_timeout(c, back, 5, 3000, NULL), 5);
        CHECK_EQ_STR(back, "moved");
        close(c);
        ns_server_free(v);
    }
    unlink(path);
}

int main(void)
{
    watchdog(90);
    fd_forms();
    systemd_forms();
    reuseport();
    handoff();
    handoff_sockets();
    return CHECK_DONE();
}
