/* test_gather.c - the sends of one loop turn are gathered and written together when it ends:
 * what a peer receives is exactly what was sent, in order, whatever mix of small sends, a
 * large one (written at once, after what was gathered before it), framed and owned sends a
 * callback, a posted task or a connection timer makes; ns_conn_pending counts gathered bytes
 * until they are written; a close right after sends in the same callback writes them first;
 * a peer that resets before the turn's end ends the connection visibly (on_close, an error). */
#include <stdio.h>
#include <string.h>

#include "netsock.h"
#include "check.h"

#define BIG (100 * 1024)

struct gs {
    pthread_mutex_t lock;
    uint64_t id;
    int closes;
    int reason;
    int pending_seen; /* ns_conn_pending after a small send, before the turn's end */
    int releases;
    int errors;
};

static char g_big[BIG];

static void g_release(void *data, void *user)
{
    struct gs *s = (struct gs *)user;
    (void)data;
    pthread_mutex_lock(&s->lock);
    s->releases++;
    pthread_mutex_unlock(&s->lock);
}

static void note(struct gs *s, int rc)
{
    if (rc != NS_OK) {
        pthread_mutex_lock(&s->lock);
        s->errors++;
        pthread_mutex_unlock(&s->lock);
    }
}

/* The expected stream for one "go": r00..r15, BIG bytes, "owned!", t0..t2. */
static size_t expected(char *out)
{
    size_t n = 0;
    int i;
    for (i = 0; i < 16; i++)
        n += (size_t)sprintf(out + n, "r%02d\n", i);
    memcpy(out + n, g_big, BIG);
    n += BIG;
    memcpy(out + n, "owned!", 6);
    n += 6;
    for (i = 0; i < 3; i++)
        n += (size_t)sprintf(out + n, "t%d\n", i);
    return n;
}

static void burst(ns_conn *conn, struct gs *s)
{
    static char owned[] = "owned!";
    char line[8];
    int i;
    for (i = 0; i < 16; i++) {
        int n = snprintf(line, sizeof line, "r%02d\n", i);
        note(s, ns_conn_send(conn, line, (size_t)n));
        if (i == 0 && ns_conn_pending(conn) == 4) {
            pthread_mutex_lock(&s->lock);
            s->pending_seen++;
            pthread_mutex_unlock(&s->lock);
        }
    }
    note(s, ns_conn_send(conn, g_big, BIG));
    note(s, ns_conn_send_owned(conn, owned, 6, g_release, s));
    for (i = 0; i < 3; i++) {
        int n = snprintf(line, sizeof line, "t%d\n", i);
        note(s, ns_conn_send(conn, line, (size_t)n));
    }
}

static void g_task(ns_conn *conn, void *user)
{
    if (conn)
        burst(conn, (struct gs *)user);
}

static void g_on_timer(ns_conn *conn, void *user)
{
    burst(conn, (struct gs *)user);
}

static void g_on_open(ns_conn *conn, void *user)
{
    struct gs *s = (struct gs *)user;
    pthread_mutex_lock(&s->lock);
    s->id = ns_conn_id(conn);
    pthread_mutex_unlock(&s->lock);
}

static void g_on_close(ns_conn *conn, int reason, void *user)
{
    struct gs *s = (struct gs *)user;
    (void)conn;
    pthread_mutex_lock(&s->lock);
    s->closes++;
    s->reason = reason;
    pthread_mutex_unlock(&s->lock);
}

static void g_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct gs *s = (struct gs *)user;
    size_t i;
    for (i = 0; i < len; i++) {
        switch (data[i]) {
        case 'g': /* go: the burst from on_data */
            burst(conn, s);
            break;
        case 't': /* the burst from the connection's timer */
            note(s, ns_conn_set_timer(conn, 1));
            break;
        case 'b': /* bye: a reply, then close, in one callback */
            note(s, ns_conn_send(conn, "bye\n", 4));
            note(s, ns_conn_close(conn));
            break;
        case 's': /* a reply for a peer that resets at once */
            note(s, ns_conn_send(conn, "late\n", 5));
            break;
        }
    }
}

static ns_server *serve(struct gs *s)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    CHECK(o != NULL);
    if (!o)
        return NULL;
    CHECK_EQ_INT(ns_options_set_on_open(o, g_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, g_on_close), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_timer(o, g_on_timer), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", g_on_data, s, o, &srv), NS_OK);
    ns_options_free(o);
    return srv;
}

static uint64_t conn_id(struct gs *s)
{
    uint64_t id;
    pthread_mutex_lock(&s->lock);
    id = s->id;
    pthread_mutex_unlock(&s->lock);
    return id;
}

/* Reads one burst and compares it with what was sent. */
static void check_burst(int fd, const char *what)
{
    static char want[BIG + 256], got[BIG + 256];
    size_t n = expected(want);
    size_t r = read_timeout(fd, got, n, 5000, NULL);
    int same = r == n && memcmp(got, want, n) == 0;
    printf("%s: %zu of %zu bytes, %s\n", what, r, n, same ? "in order" : "DIFFERENT");
    CHECK(same);
}

int main(void)
{
    static struct gs s;
    ns_server *srv;
    char buf[16];
    uint64_t id;
    size_t i;
    int fd, eof = 0;

    watchdog(60);
    for (i = 0; i < BIG; i++)
        g_big[i] = (char)('a' + i % 26);
    srv = serve(&s);
    if (!srv)
        return CHECK_DONE();
    fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    WAIT_FOR(conn_id(&s) != 0, 3000);
    id = conn_id(&s);
    if (fd < 0 || id == 0)
        return CHECK_DONE();

    SECTION("sends in on_data: small ones gathered, a large one at once, an owned one; all in order");
    CHECK_EQ_INT((int)write_all_timeout(fd, "g", 1, 3000), 1);
    check_burst(fd, "on_data");
    CHECK_EQ_INT(locked_int(&s.lock, &s.pending_seen), 1); /* the first reply waited for the turn's end */

    SECTION("sends in a posted task and in the connection's timer: the same stream");
    CHECK_EQ_INT(ns_server_post(srv, id, g_task, &s), NS_OK);
    check_burst(fd, "posted task");
    CHECK_EQ_INT((int)write_all_timeout(fd, "t", 1, 3000), 1);
    check_burst(fd, "timer");
    WAIT_FOR(locked_int(&s.lock, &s.releases) == 3, 3000);
    CHECK_EQ_INT(locked_int(&s.lock, &s.releases), 3);

    SECTION("a send then ns_conn_close in one callback: the reply, then the end");
    CHECK_EQ_INT((int)write_all_timeout(fd, "b", 1, 3000), 1);
    CHECK_EQ_INT((int)read_timeout(fd, buf, 4, 3000, NULL), 4);
    CHECK(memcmp(buf, "bye\n", 4) == 0);
    CHECK_EQ_INT((int)read_timeout(fd, buf, 1, 3000, &eof), 0);
    CHECK_EQ_INT(eof, 1);
    WAIT_FOR(locked_int(&s.lock, &s.closes) == 1, 3000);
    CHECK_EQ_INT(locked_int(&s.lock, &s.closes), 1);
    CHECK_EQ_INT(locked_int(&s.lock, &s.reason), NS_OK);
    CHECK_EQ_INT(locked_int(&s.lock, &s.errors), 0);
    close(fd);

    SECTION("a peer that resets: the connection ends visibly, once, with an error");
    fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK_EQ_INT((int)write_all_timeout(fd, "s", 1, 3000), 1);
        close_reset(fd);
    }
    WAIT_FOR(locked_int(&s.lock, &s.closes) == 2, 3000);
    CHECK_EQ_INT(locked_int(&s.lock, &s.closes), 2);
    CHECK(locked_int(&s.lock, &s.reason) != NS_OK);
    ns_server_free(srv);
    return CHECK_DONE();
}
