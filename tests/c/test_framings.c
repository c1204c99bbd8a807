/* test_framings.c - the framings real protocols need (issue 16), through the C API:
 * NS_FRAMING_DELIMITER ("\r\n", as Redis and SMTP), NS_FRAMING_LENGTH_FIELD (DNS over TCP's
 * two bytes, PostgreSQL's length at offset 1, MQTT's varint), NS_FRAMING_FIXED, and raw
 * framing with ns_conn_keep for a protocol no setting describes; ns_tcp_request in the new
 * framings; hostile lengths closing with NS_ERR_LIMIT. Peers are plain sockets. */
#include "check.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int closes, reason, msgs;
static char last[256];
static size_t last_len;

static void rec_close(ns_conn *conn, int r, void *user)
{
    (void)conn, (void)user;
    pthread_mutex_lock(&lock);
    closes++;
    reason = r;
    pthread_mutex_unlock(&lock);
}

/* Echoes each message back framed the same way (send_frame builds the framing). */
static void frame_echo(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    pthread_mutex_lock(&lock);
    msgs++;
    last_len = len < sizeof last ? len : sizeof last;
    memcpy(last, data, last_len);
    pthread_mutex_unlock(&lock);
    CHECK_EQ_INT(ns_conn_send_frame(conn, data, len), NS_OK);
}

/* Echoes each frame whole, header included (length fields deliver the whole frame). */
static void whole_echo(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    pthread_mutex_lock(&lock);
    msgs++;
    last_len = len < sizeof last ? len : sizeof last;
    memcpy(last, data, last_len);
    pthread_mutex_unlock(&lock);
    CHECK_EQ_INT(ns_conn_send(conn, data, len), NS_OK);
}

static void reset(void)
{
    pthread_mutex_lock(&lock);
    closes = reason = msgs = 0;
    last_len = 0;
    pthread_mutex_unlock(&lock);
}

static ns_server *serve(ns_options *o, ns_data_cb cb)
{
    ns_server *srv = NULL;
    CHECK_EQ_INT(ns_options_set_on_close(o, rec_close), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", cb, NULL, o, &srv), NS_OK);
    return srv;
}

/* Writes `in` in pieces of 1..3 bytes, then reads `want` bytes of echo and compares. */
static void exchange(int port, const void *in, size_t n, const void *want, size_t want_n)
{
    char back[512];
    size_t i;
    int fd = tcp_connect4(port), eof = 0;
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    for (i = 0; i < n;) {
        size_t k = 1 + i % 3;
        if (k > n - i)
            k = n - i;
        CHECK_EQ_INT(write_all_timeout(fd, (const char *)in + i, k, 1000), k);
        i += k;
    }
    CHECK_EQ_INT(read_timeout(fd, back, want_n, 3000, &eof), want_n);
    CHECK(memcmp(back, want, want_n) == 0);
    close(fd);
}

static void test_delimiter(void)
{
    ns_options *o = ns_options_new();
    ns_server *srv;
    char addr[64], reply[64];
    size_t rlen = 0;
    static const char in[] = "PING\r\nSET k v\r\n";

    SECTION("NS_FRAMING_DELIMITER: \"\\r\\n\" messages split anywhere; send_frame appends it");
    reset();
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_DELIMITER), NS_OK); /* "\r\n" by default */
    srv = serve(o, frame_echo);
    if (!srv)
        return;
    exchange(ns_server_port(srv), in, sizeof in - 1, in, sizeof in - 1);
    CHECK_EQ_INT(locked_int(&lock, &msgs), 2);
    CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);
    CHECK_EQ_INT(ns_tcp_request(addr, "ECHO hi", 7, reply, sizeof reply, &rlen, 3000, NS_FRAMING_DELIMITER), NS_OK);
    CHECK_EQ_INT(rlen, 7);
    CHECK(memcmp(reply, "ECHO hi", 7) == 0);
    /* a message containing the delimiter cannot be sent */
    CHECK_EQ_INT(ns_tcp_request(addr, "a\r\nb", 4, reply, sizeof reply, &rlen, 3000, NS_FRAMING_DELIMITER),
                 NS_ERR_INVALID);
    ns_server_free(srv);

    /* another delimiter, set after the framing */
    reset();
    CHECK_EQ_INT(ns_options_set_delimiter(o, (const uint8_t *)"||", 2), NS_OK);
    srv = serve(o, frame_echo);
    if (srv) {
        exchange(ns_server_port(srv), "a|b||c||", 8, "a|b||c||", 8);
        pthread_mutex_lock(&lock);
        CHECK_EQ_INT(msgs, 2);
        CHECK(last_len == 1 && last[0] == 'c');
        pthread_mutex_unlock(&lock);
        ns_server_free(srv);
    }
    CHECK_EQ_INT(ns_options_set_delimiter(o, (const uint8_t *)"123456789", 9), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_delimiter(o, NULL, 2), NS_ERR_INVALID);
    ns_options_free(o);
}

static void test_length_fields(void)
{
    ns_options *o = ns_options_new();
    ns_server *srv;
    char addr[64], reply[64];
    size_t rlen = 0;
    /* two DNS-over-TCP messages (2-byte big-endian length) */
    static const unsigned char dns[] = {0, 3, 'a', 'b', 'c', 0, 1, 'z'};
    /* a PostgreSQL query: 'Q', then a length counting itself but not the type byte */
    static const unsigned char pg[] = {'Q', 0, 0, 0, 13, 'S', 'E', 'L', 'E', 'C', 'T', ' ', '1', 0};
    /* MQTT PINGREQ (no body) and a PUBLISH with a 2-byte varint remaining length (130) */
    static unsigned char mqtt[2 + 3 + 130];

    SECTION("NS_FRAMING_LENGTH_FIELD: DNS over TCP, PostgreSQL, MQTT; frames delivered whole");
    reset();
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_LENGTH_FIELD), NS_OK);
    CHECK_EQ_INT(ns_options_set_length_field(o, 0, 2, 0, 0), NS_OK);
    srv = serve(o, whole_echo);
    if (srv) {
        exchange(ns_server_port(srv), dns, sizeof dns, dns, sizeof dns);
        pthread_mutex_lock(&lock);
        CHECK_EQ_INT(msgs, 2);
        CHECK(last_len == 3 && memcmp(last, "\0\1z", 3) == 0); /* header included */
        pthread_mutex_unlock(&lock);
        ns_server_free(srv);
    }

    reset();
    CHECK_EQ_INT(ns_options_set_length_field(o, 1, 4, 0, -4), NS_OK);
    srv = serve(o, whole_echo);
    if (srv) {
        exchange(ns_server_port(srv), pg, sizeof pg, pg, sizeof pg);
        CHECK_EQ_INT(locked_int(&lock, &msgs), 1);
        ns_server_free(srv);
    }

    reset();
    mqtt[0] = 0xc0, mqtt[1] = 0;                       /* PINGREQ */
    mqtt[2] = 0x30, mqtt[3] = 0x82, mqtt[4] = 0x01;    /* PUBLISH, remaining length 130 */
    memset(mqtt + 5, 'm', 130);
    CHECK_EQ_INT(ns_options_set_length_field(o, 1, 0, 0, 0), NS_OK);
    srv = serve(o, whole_echo);
    if (srv) {
        exchange(ns_server_port(srv), mqtt, sizeof mqtt, mqtt, sizeof mqtt);
        CHECK_EQ_INT(locked_int(&lock, &msgs), 2);
        ns_server_free(srv);
    }

    /* ns_tcp_request with the default length field (4 bytes, big-endian, at offset 0): the
     * reply is the whole frame */
    reset();
    CHECK_EQ_INT(ns_options_set_length_field(o, 0, 4, 0, 0), NS_OK);
    srv = serve(o, whole_echo);
    if (srv) {
        CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);
        CHECK_EQ_INT(ns_tcp_request(addr, "hey", 3, reply, sizeof reply, &rlen, 3000, NS_FRAMING_LENGTH_FIELD),
                     NS_OK);
        CHECK_EQ_INT(rlen, 7);
        CHECK(memcmp(reply, "\0\0\0\3hey", 7) == 0);
        ns_server_free(srv);
    }
    CHECK_EQ_INT(ns_options_set_length_field(o, 0, 3, 0, 0), NS_ERR_INVALID);
    ns_options_free(o);
}

static void test_hostile_lengths(void)
{
    ns_options *o = ns_options_new();
    ns_server *srv;
    static const unsigned char huge[] = {0x7f, 0xff, 0xff, 0xff, 'x'};
    static const unsigned char negative[] = {'Q', 0, 0, 0, 1, 'x'};
    static const unsigned char varint11[] = {0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80};
    const unsigned char *bad[3] = {huge, negative, varint11};
    size_t lens[3] = {sizeof huge, sizeof negative, sizeof varint11};
    int fields[3][3] = {{0, 4, 0}, {1, 4, -4}, {1, 0, 0}};
    int i;

    SECTION("hostile lengths: over max_frame, shorter than the header, an 11-byte varint -> NS_ERR_LIMIT");
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_LENGTH_FIELD), NS_OK);
    CHECK_EQ_INT(ns_options_set_max_frame(o, 4096), NS_OK);
    for (i = 0; i < 3; i++) {
        int fd;
        reset();
        CHECK_EQ_INT(ns_options_set_length_field(o, (size_t)fields[i][0], (size_t)fields[i][1], 0, fields[i][2]), NS_OK);
        srv = serve(o, whole_echo);
        if (!srv)
            continue;
        fd = tcp_connect4(ns_server_port(srv));
        CHECK_EQ_INT(write_all_timeout(fd, bad[i], lens[i], 1000), lens[i]);
        WAIT_FOR(locked_int(&lock, &closes) == 1, 3000);
        CHECK_EQ_INT(locked_int(&lock, &reason), NS_ERR_LIMIT);
        CHECK_EQ_INT(locked_int(&lock, &msgs), 0);
        CHECK_EQ_INT(server_stats(srv).frames_too_large, 1);
        close(fd);
        ns_server_free(srv);
    }
    ns_options_free(o);
}

static void test_fixed(void)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;

    SECTION("NS_FRAMING_FIXED: 4-byte messages; no size is NS_ERR_INVALID at serve");
    reset();
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_FIXED), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", frame_echo, NULL, o, &srv), NS_ERR_INVALID);
    CHECK(srv == NULL);
    CHECK_EQ_INT(ns_options_set_fixed_size(o, 0), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_fixed_size(o, 4), NS_OK);
    srv = serve(o, frame_echo);
    if (srv) {
        exchange(ns_server_port(srv), "abcdefghijkl", 12, "abcdefghijkl", 12);
        CHECK_EQ_INT(locked_int(&lock, &msgs), 3);
        ns_server_free(srv);
    }
    ns_options_free(o);
}

/* A protocol no setting describes: "<n>:<n bytes>" (a netstring without its comma), parsed
 * in raw framing with ns_conn_keep for the unfinished tail. */
static int ns_count;

static void netstring_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    size_t pos = 0;
    (void)user;
    for (;;) {
        size_t n = 0, i = pos;
        while (i < len && data[i] >= '0' && data[i] <= '9')
            n = n * 10 + (size_t)(data[i++] - '0');
        if (i >= len || i + 1 + n > len) { /* unfinished: keep it for the next delivery */
            CHECK_EQ_INT(ns_conn_keep(conn, len - pos), NS_OK);
            return;
        }
        CHECK(data[i] == ':');
        pthread_mutex_lock(&lock); /* counted before the echo, which the test waits for */
        ns_count++;
        pthread_mutex_unlock(&lock);
        CHECK_EQ_INT(ns_conn_send(conn, data + i + 1, n), NS_OK);
        pos = i + 1 + n;
        if (pos == len)
            return;
    }
}

/* Keeps every delivery whole and pauses; a task resumes: the kept bytes come back without new
 * input. */
static ns_server *kr_srv;
static int kr_deliveries, kr_resumed;
static uint64_t kr_id;

static void kr_resume(ns_conn *conn, void *user)
{
    (void)user;
    if (conn) {
        pthread_mutex_lock(&lock);
        kr_resumed = 1;
        pthread_mutex_unlock(&lock);
        CHECK_EQ_INT(ns_conn_resume(conn), NS_OK);
    }
}

static void keep_and_pause(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    int resumed;
    (void)data, (void)user;
    pthread_mutex_lock(&lock);
    kr_deliveries++;
    kr_id = ns_conn_id(conn);
    resumed = kr_resumed;
    pthread_mutex_unlock(&lock);
    if (!resumed) {
        CHECK_EQ_INT(ns_conn_keep(conn, len), NS_OK);
        CHECK_EQ_INT(ns_conn_pause(conn), NS_OK);
    } else {
        CHECK_EQ_INT((int)len, 5); /* what was kept, and nothing new */
        CHECK_EQ_INT(ns_conn_send(conn, data, len), NS_OK);
    }
}

static void test_keep_across_pause(void)
{
    ns_options *o = ns_options_new();
    char back[8];
    int fd, eof = 0;

    SECTION("ns_conn_keep, then pause: resume hands the kept bytes back without new input");
    kr_deliveries = kr_resumed = 0;
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", keep_and_pause, NULL, o, &kr_srv), NS_OK);
    ns_options_free(o);
    if (!kr_srv)
        return;
    fd = tcp_connect4(ns_server_port(kr_srv));
    CHECK_EQ_INT(write_all_timeout(fd, "hello", 5, 1000), 5);
    WAIT_FOR(locked_int(&lock, &kr_deliveries) == 1, 2000);
    sleep_ms(50);
    CHECK_EQ_INT(ns_server_post(kr_srv, kr_id, kr_resume, NULL), NS_OK);
    CHECK_EQ_INT(read_timeout(fd, back, 5, 3000, &eof), 5);
    CHECK(memcmp(back, "hello", 5) == 0);
    CHECK_EQ_INT(locked_int(&lock, &kr_deliveries), 2);
    close(fd);
    ns_server_free(kr_srv);
}

static void keep_misuse(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)data, (void)user;
    CHECK_EQ_INT(ns_conn_keep(conn, len + 1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_conn_keep(conn, len), NS_ERR_LIMIT); /* max_frame 2 */
}

static void test_keep(void)
{
    ns_options *o = ns_options_new();
    ns_server *srv;
    static const char in[] = "5:hello3:abc11:hello world0:2:ok";

    SECTION("raw framing + ns_conn_keep: a netstring-like protocol parsed across any split");
    ns_count = 0;
    srv = serve(o, netstring_on_data);
    if (srv) {
        exchange(ns_server_port(srv), in, sizeof in - 1, "helloabchello worldok", 21);
        WAIT_FOR(locked_int(&lock, &ns_count) == 5, 2000);
        CHECK_EQ_INT(locked_int(&lock, &ns_count), 5);
        ns_server_free(srv);
    }
    CHECK_EQ_INT(ns_options_set_max_frame(o, 2), NS_OK);
    srv = serve(o, keep_misuse);
    if (srv) {
        int fd = tcp_connect4(ns_server_port(srv));
        CHECK_EQ_INT(write_all_timeout(fd, "xyz", 3, 1000), 3);
        sleep_ms(100);
        close(fd);
        ns_server_free(srv);
    }
    CHECK_EQ_INT(ns_conn_keep(NULL, 1), NS_ERR_INVALID);
    ns_options_free(o);
}

int main(void)
{
    watchdog(60);
    test_delimiter();
    test_length_fields();
    test_hostile_lengths();
    test_fixed();
    test_keep();
    test_keep_across_pause();
    return CHECK_DONE();
}
