/* test_proxy.c - ns_options_set_proxy_protocol: hand-made PROXY v1 and v2 headers (the
 * client's address is what ns_conn_peer reports, on_data never sees the header), v2 LOCAL
 * keeping the real peer, a header split across reads and a slow one, malformed headers and
 * a missing one closed without on_open and counted in ns_stats.proxy_rejected, and no
 * detection without the option. HAProxy itself is in tests/peers/run.sh. */
#include "check.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int opens;
static int closes;

/* Greets each connection with the peer netsock reports, then echoes. */
static void on_open(ns_conn *conn, void *user)
{
    char peer[128], line[140];
    (void)user;
    pthread_mutex_lock(&lock);
    opens++;
    pthread_mutex_unlock(&lock);
    if (ns_conn_peer(conn, peer, sizeof peer) != NS_OK)
        strcpy(peer, "?");
    snprintf(line, sizeof line, "%s\n", peer);
    CHECK_EQ_INT(ns_conn_send(conn, line, strlen(line)), NS_OK);
}

static void on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    ns_conn_send(conn, data, len);
}

static void on_close(ns_conn *conn, int reason, void *user)
{
    (void)conn;
    (void)reason;
    (void)user;
    pthread_mutex_lock(&lock);
    closes++;
    pthread_mutex_unlock(&lock);
}

static ns_server *serve(int proxy, uint32_t timeout_ms)
{
    ns_server *srv = NULL;
    ns_options *o = ns_options_new();
    CHECK(o != NULL);
    CHECK_EQ_INT(ns_options_set_on_open(o, on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, on_close), NS_OK);
    CHECK_EQ_INT(ns_options_set_proxy_protocol(o, proxy), NS_OK);
    CHECK_EQ_INT(ns_options_set_connect_timeout_ms(o, timeout_ms), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", on_data, NULL, o, &srv), NS_OK);
    ns_options_free(o);
    return srv;
}

/* Reads one line (the greeting) into buf; its length, 0 on EOF or timeout. */
static size_t read_line(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        int eof;
        if (read_timeout(fd, buf + n, 1, 3000, &eof) != 1)
            break;
        if (buf[n++] == '\n')
            break;
    }
    buf[n] = '\0';
    return n;
}

/* Sends header (hlen bytes) in pieces of `piece` bytes, `gap_ms` apart, then "ping"; checks
 * the greeting names `want` (NULL: the connection's own peer) and the echo is "ping". */
static void exchange(int port, const void *header, size_t hlen, size_t piece, int gap_ms, const char *want)
{
    char line[160], own[64], echo[5] = {0};
    const char *p = header;
    int fd = tcp_connect4(port);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    snprintf(own, sizeof own, "127.0.0.1:%d\n", sock_port(fd));
    while (hlen > 0) {
        size_t n = hlen < piece ? hlen : piece;
        CHECK_EQ_INT(write_all_timeout(fd, p, n, 2000), n);
        p += n;
        hlen -= n;
        if (hlen > 0 && gap_ms > 0)
            sleep_ms(gap_ms);
    }
    CHECK_EQ_INT(write_all_timeout(fd, "ping", 4, 2000), 4);
    read_line(fd, line, sizeof line);
    if (want) {
        char w[160];
        snprintf(w, sizeof w, "%s\n", want);
        CHECK_EQ_STR(line, w);
    } else {
        CHECK_EQ_STR(line, own);
    }
    CHECK_EQ_INT(read_timeout(fd, echo, 4, 3000, NULL), 4);
    CHECK_EQ_STR(echo, "ping");
    close(fd);
}

/* A v2 header: command (0 LOCAL, 1 PROXY), family byte, address block, then `tlv` bytes of a
 * NOOP TLV. Returns its length. */
static size_t v2(uint8_t *out, int cmd, uint8_t fam, const uint8_t *addrs, size_t alen, size_t tlv)
{
    static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    size_t body = alen + (tlv ? 3 + tlv : 0);
    memcpy(out, sig, 12);
    out[12] = (uint8_t)(0x20 | cmd);
    out[13] = fam;
    out[14] = (uint8_t)(body >> 8);
    out[15] = (uint8_t)body;
    memcpy(out + 16, addrs, alen);
    if (tlv) {
        uint8_t *t = out + 16 + alen;
        t[0] = 0x04; /* PP2_TYPE_NOOP */
        t[1] = (uint8_t)(tlv >> 8);
        t[2] = (uint8_t)tlv;
        memset(t + 3, 'x', tlv);
    }
    return 16 + body;
}

/* Sends bad bytes (or nothing, for a slow peer): the connection must end without a greeting,
 * and proxy_rejected must grow by one. */
static void refused(ns_server *srv, int port, const void *bytes, size_t len, int wait_ms)
{
    ns_stats before = server_stats(srv), after;
    int opens_before = locked_int(&lock, &opens);
    char c;
    int eof = 0, fd = tcp_connect4(port);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    if (len > 0)
        CHECK_EQ_INT(write_all_timeout(fd, bytes, len, 2000), len);
    CHECK_EQ_INT(read_timeout(fd, &c, 1, wait_ms, &eof), 0);
    CHECK(eof != 0); /* closed (EOF, or a reset for unread bytes), not timed out */
    close(fd);
    WAIT_FOR(server_stats(srv).proxy_rejected == before.proxy_rejected + 1, 2000);
    after = server_stats(srv);
    CHECK_EQ_INT(after.proxy_rejected, before.proxy_rejected + 1);
    CHECK_EQ_INT(after.accepted, before.accepted);
    CHECK_EQ_INT(locked_int(&lock, &opens), opens_before);
}

int main(void)
{
    uint8_t h[600], a4[12] = {203, 0, 113, 9, 127, 0, 0, 1, 0xC3, 0x50, 0, 80}, a6[36] = {0};
    ns_server *srv;
    int port, closes_before;

    watchdog(60);
    srv = serve(1, 400);
    port = ns_server_port(srv);

    SECTION("v1 headers name the client");
    exchange(port, "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n", 45, 100, 0, "192.0.2.7:56324");
    exchange(port, "PROXY TCP6 2001:db8::7 2001:db8::1 4000 443\r\n", 45, 100, 0, "[2001:db8::7]:4000");
    exchange(port, "PROXY UNKNOWN\r\n", 15, 100, 0, NULL);

    SECTION("v2 headers name the client; LOCAL keeps the real peer");
    exchange(port, h, v2(h, 1, 0x11, a4, sizeof a4, 0), 1000, 0, "203.0.113.9:50000");
    exchange(port, h, v2(h, 1, 0x11, a4, sizeof a4, 200), 1000, 0, "203.0.113.9:50000");
    exchange(port, h, v2(h, 1, 0x11, a4, sizeof a4, 500), 1000, 0, "203.0.113.9:50000");
    a6[0] = 0x20, a6[1] = 0x01, a6[2] = 0x0d, a6[3] = 0xb8, a6[15] = 0x09, a6[32] = 0x1F, a6[33] = 0x90;
    exchange(port, h, v2(h, 1, 0x21, a6, sizeof a6, 0), 1000, 0, "[2001:db8::9]:8080");
    exchange(port, h, v2(h, 0, 0x11, a4, sizeof a4, 0), 1000, 0, NULL);
    exchange(port, h, v2(h, 0, 0x00, a4, 0, 0), 1000, 0, NULL);

    SECTION("a header split across reads, and one arriving slowly within the timeout");
    exchange(port, "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n", 45, 1, 2, "192.0.2.7:56324");
    exchange(port, h, v2(h, 1, 0x11, a4, sizeof a4, 0), 5, 60, "203.0.113.9:50000");
    exchange(port, h, v2(h, 1, 0x11, a4, sizeof a4, 0), 14, 100, "203.0.113.9:50000");

    SECTION("malformed, missing and late headers: closed without on_open, counted");
    /* The connections above end on the loop after their client closed: wait for them. */
    WAIT_FOR(locked_int(&lock, &closes) == locked_int(&lock, &opens), 3000);
    closes_before = locked_int(&lock, &closes);
    refused(srv, port, "GET / HTTP/1.1\r\n\r\n", 18, 2000);
    refused(srv, port, "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", 30, 2000);
    refused(srv, port, "PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n", 36, 2000);
    refused(srv, port, "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 31, 2000);
    memset(h, 'x', 200);
    memcpy(h, "PROXY UNKNOWN ", 14);
    refused(srv, port, h, 200, 2000);
    v2(h, 1, 0x11, a4, sizeof a4, 0);
    h[12] = 0x31; /* version 3 */
    refused(srv, port, h, 28, 2000);
    v2(h, 1, 0x11, a4, 4, 0); /* an IPv4 block of 4 bytes */
    refused(srv, port, h, 20, 2000);
    refused(srv, port, NULL, 0, 3000);                  /* nothing within 400 ms */
    refused(srv, port, "PROXY TCP4 1.2.", 15, 3000);    /* half a header, then nothing */
    CHECK_EQ_INT(locked_int(&lock, &closes), closes_before); /* no on_close without on_open */
    {
        /* The peer closes before its header is whole. */
        ns_stats before = server_stats(srv);
        int fd = tcp_connect4(port);
        CHECK_EQ_INT(write_all_timeout(fd, "PROXY TCP4", 10, 2000), 10);
        close(fd);
        WAIT_FOR(server_stats(srv).proxy_rejected == before.proxy_rejected + 1, 2000);
        CHECK_EQ_INT(server_stats(srv).proxy_rejected, before.proxy_rejected + 1);
    }
    ns_server_free(srv);

    SECTION("without the option a header is data: never detected");
    srv = serve(0, 400);
    port = ns_server_port(srv);
    {
        char line[160], echo[48] = {0};
        int fd = tcp_connect4(port), own = sock_port(fd);
        char want[64];
        CHECK_EQ_INT(write_all_timeout(fd, "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n", 45, 2000), 45);
        read_line(fd, line, sizeof line);
        snprintf(want, sizeof want, "127.0.0.1:%d\n", own);
        CHECK_EQ_STR(line, want);
        CHECK_EQ_INT(read_timeout(fd, echo, 45, 3000, NULL), 45);
        CHECK(memcmp(echo, "PROXY TCP4", 10) == 0);
        close(fd);
    }
    CHECK_EQ_INT(server_stats(srv).proxy_rejected, 0);
    ns_server_free(srv);

    SECTION("options: NULL is NS_ERR_INVALID");
    CHECK_EQ_INT(ns_options_set_proxy_protocol(NULL, 1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_reuseport(NULL, 1), NS_ERR_INVALID);
    return CHECK_DONE();
}
