/* test_log.c - ns_set_log: a callback at NS_LOG_DEBUG gets messages for a
 * frame-too-large close (INFO, and DEBUG for the close), a max_conns refusal
 * (INFO) and dropped cross-thread messages (WARN); a lower level filters;
 * ns_set_log(NULL, 0) and NS_LOG_OFF turn it off; bad levels give
 * NS_ERR_INVALID. */
#include "netsock.h"
#include "check.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int by_level[8];     /* messages per level (index 0: out of range) */
static int total, bad_msg;
static char last[512];

static void log_cb(int level, const char *msg)
{
    pthread_mutex_lock(&lock);
    total++;
    if (level >= NS_LOG_ERROR && level <= NS_LOG_DEBUG)
        by_level[level]++;
    else
        by_level[0]++;
    if (msg == NULL || msg[0] == 0)
        bad_msg++;
    else
        snprintf(last, sizeof last, "%s", msg);
    pthread_mutex_unlock(&lock);
}

struct counts {
    int total, err, warn, info, debug, other, bad;
};

static struct counts snap(void)
{
    struct counts c;
    pthread_mutex_lock(&lock);
    c.total = total;
    c.err = by_level[NS_LOG_ERROR];
    c.warn = by_level[NS_LOG_WARN];
    c.info = by_level[NS_LOG_INFO];
    c.debug = by_level[NS_LOG_DEBUG];
    c.other = by_level[0];
    c.bad = bad_msg;
    pthread_mutex_unlock(&lock);
    return c;
}

static void print_last(const char *what)
{
    pthread_mutex_lock(&lock);
    printf("  %s: last message: \"%s\"\n", what, last);
    pthread_mutex_unlock(&lock);
}

/* ---- a LEN32 server (max frame 16) and a LINE server (max_conns 1) ------------------- */

static int closes, limit_closes;
static uint64_t line_id;

static int line_tag; /* the LINE server's user pointer */

static void on_open(ns_conn *conn, void *user)
{
    if (user != &line_tag)
        return;
    pthread_mutex_lock(&lock);
    line_id = ns_conn_id(conn);
    pthread_mutex_unlock(&lock);
}

static void on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    CHECK_EQ_INT(ns_conn_send_frame(conn, data, len), NS_OK);
}

static void on_close(ns_conn *conn, int reason, void *user)
{
    (void)conn;
    (void)user;
    pthread_mutex_lock(&lock);
    closes++;
    if (reason == NS_ERR_LIMIT)
        limit_closes++;
    pthread_mutex_unlock(&lock);
}

static int get_int(int *p)
{
    return locked_int(&lock, p);
}

static ns_server *serve(int framing, size_t max_frame, size_t max_conns, size_t max_wbuf, void *user)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    CHECK(o != NULL);
    if (!o)
        return NULL;
    CHECK_EQ_INT(ns_options_set_framing(o, framing), NS_OK);
    CHECK_EQ_INT(ns_options_set_max_frame(o, max_frame), NS_OK);
    CHECK_EQ_INT(ns_options_set_max_conns(o, max_conns), NS_OK);
    CHECK_EQ_INT(ns_options_set_max_write_buffer(o, max_wbuf), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_open(o, on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, on_close), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", on_data, user, o, &srv), NS_OK);
    ns_options_free(o);
    return srv;
}

/* A frame over the limit closes a connection; returns once its on_close ran
 * (the library logs before that callback). */
static void frame_too_large(ns_server *srv)
{
    const unsigned char huge[] = {0xff, 0xff, 0xff, 0xff, 'x'};
    int before = get_int(&limit_closes);
    int fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    write_all_timeout(fd, huge, sizeof huge, 2000);
    WAIT_FOR(get_int(&limit_closes) > before, 5000);
    CHECK_EQ_INT(get_int(&limit_closes), before + 1);
    close(fd);
}

static int holder = -1;

/* An echo through `holder`: the LINE server's loop has finished what it was doing. */
static void sync_line(void)
{
    char buf[5];
    CHECK_EQ_INT(write_all_timeout(holder, "sync\n", 5, 2000), 5);
    CHECK_EQ_INT(read_timeout(holder, buf, 5, 3000, NULL), 5);
    CHECK(memcmp(buf, "sync\n", 5) == 0);
}

/* With the LINE server's one slot taken by `holder`, another connection is
 * refused; returns once the refusal is counted and its turn of the loop is over. */
static void refused(ns_server *srv)
{
    uint64_t before = server_stats(srv).rejected;
    int fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK(wait_eof(fd, 5000) != 2);
    WAIT_FOR(server_stats(srv).rejected > before, 5000);
    CHECK_EQ_INT(server_stats(srv).rejected, before + 1);
    close(fd);
    sync_line();
}

int main(void)
{
    ns_server *len32, *line;
    struct counts a, b;

    watchdog(60);
    len32 = serve(NS_FRAMING_LEN32, 16, 0, 8 * 1024 * 1024, NULL);
    line = serve(NS_FRAMING_LINE, 1024, 1, 16, &line_tag);
    if (!len32 || !line)
        return CHECK_DONE();
    holder = tcp_connect4(ns_server_port(line));
    CHECK(holder >= 0);
    {
        char buf[3];
        CHECK_EQ_INT(write_all_timeout(holder, "hi\n", 3, 2000), 3);
        CHECK_EQ_INT(read_timeout(holder, buf, 3, 3000, NULL), 3); /* it is open */
    }

    SECTION("bad levels");
    CHECK_EQ_INT(ns_set_log(log_cb, 5), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_set_log(log_cb, -1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_set_log(log_cb, 100), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_set_log(NULL, 42), NS_ERR_INVALID);

    SECTION("off by default: nothing logged");
    a = snap();
    frame_too_large(len32);
    refused(line);
    b = snap();
    CHECK_EQ_INT(b.total, a.total);

    SECTION("NS_LOG_DEBUG: frame too large, refused connection; sends refused, not dropped");
    CHECK_EQ_INT(ns_set_log(log_cb, NS_LOG_DEBUG), NS_OK);
    a = snap();
    frame_too_large(len32);
    b = snap();
    print_last("frame too large");
    CHECK(b.info > a.info);   /* the message over the limit */
    CHECK(b.debug > a.debug); /* the connection closed with an error */

    a = snap();
    refused(line);
    b = snap();
    print_last("refused");
    CHECK(b.info > a.info);

    /* a line with "\n" is refused at once: the caller is told, so nothing is dropped later
       with only a log line; one message over the 16-byte write buffer is taken when nothing
       waits (the limit bounds what piles up); the message after them arrives, so all were
       handled */
    a = snap();
    {
        uint64_t id;
        char buf[31 + 3];
        pthread_mutex_lock(&lock);
        id = line_id;
        pthread_mutex_unlock(&lock);
        CHECK_EQ_INT(ns_server_send_frame(line, id, "a\nb", 3), NS_ERR_INVALID);
        /* the loop counts bytes as written a moment after the peer may have them (here the
           sync echo's 5, then these 31): refused meanwhile, then taken; the reads check that
           each was */
        WAIT_FOR(ns_server_send(line, id, "this is more than sixteen bytes", 31) == NS_OK, 3000);
        CHECK_EQ_INT(read_timeout(holder, buf, 31, 3000, NULL), 31);
        WAIT_FOR(ns_server_send_frame(line, id, "ok", 2) == NS_OK, 3000);
        CHECK_EQ_INT(read_timeout(holder, buf + 31, 3, 3000, NULL), 3);
        CHECK(memcmp(buf, "this is more than sixteen bytesok\n", 34) == 0);
    }
    b = snap();
    CHECK_EQ_INT(b.warn, a.warn);

    SECTION("NS_LOG_INFO filters DEBUG; NS_LOG_WARN filters INFO");
    CHECK_EQ_INT(ns_set_log(log_cb, NS_LOG_INFO), NS_OK);
    a = snap();
    frame_too_large(len32);
    b = snap();
    CHECK(b.info > a.info);
    CHECK_EQ_INT(b.debug, a.debug);
    CHECK_EQ_INT(ns_set_log(log_cb, NS_LOG_WARN), NS_OK);
    a = snap();
    frame_too_large(len32);
    refused(line);
    b = snap();
    CHECK_EQ_INT(b.total, a.total);

    SECTION("ns_set_log(NULL, 0) and NS_LOG_OFF turn it off");
    CHECK_EQ_INT(ns_set_log(log_cb, NS_LOG_DEBUG), NS_OK);
    CHECK_EQ_INT(ns_set_log(NULL, 0), NS_OK);
    a = snap();
    frame_too_large(len32);
    refused(line);
    b = snap();
    CHECK_EQ_INT(b.total, a.total);
    CHECK_EQ_INT(ns_set_log(log_cb, NS_LOG_DEBUG), NS_OK);
    CHECK_EQ_INT(ns_set_log(log_cb, NS_LOG_OFF), NS_OK);
    a = snap();
    frame_too_large(len32);
    b = snap();
    CHECK_EQ_INT(b.total, a.total);
    CHECK_EQ_INT(ns_set_log(NULL, NS_LOG_DEBUG), NS_OK); /* NULL callback: off as well */
    a = snap();
    frame_too_large(len32);
    b = snap();
    CHECK_EQ_INT(b.total, a.total);

    b = snap();
    CHECK_EQ_INT(b.other, 0); /* every level was a valid ns_log_level */
    CHECK_EQ_INT(b.bad, 0);   /* every message had text */
    CHECK(b.total > 0);

    close(holder);
    ns_server_free(len32);
    ns_server_free(line);
    return CHECK_DONE();
}
