/* test_limits.c - max_conns (the connection over the limit is accepted and
 * closed at once, counted as rejected; a freed slot is usable again),
 * idle_timeout_ms (NS_ERR_TIMEOUT roughly on time, counted; talking keeps a
 * connection open), drain_timeout_ms on ns_server_stop (queued output is
 * flushed to a reading peer before the close; a peer that never reads is cut
 * off at the drain timeout; every connection gets exactly one on_close), and
 * the ns_options setters' validation. */
#include <stddef.h>

#include "netsock.h"
#include "check.h"

#define MAXRECS 32
#define BIG (8 * 1024 * 1024)

/* ---- a recording echo server; "go" makes it send BIG pattern bytes -------------- */

struct lrec {
    uint64_t id;
    int64_t open_ms, close_ms, last_data_ms;
    int closes;
    int reason;
};

struct ls {
    pthread_mutex_t lock;
    struct lrec recs[MAXRECS];
    int nrecs, opens, closes, bad;
    size_t pending_after_go;
    int go_rc;
    int went;
};

static struct ls ls;
static unsigned char *bigbuf;

static unsigned char pat(size_t i)
{
    return (unsigned char)((i * 131 + i / 4093) & 0xff);
}

static void ls_reset(void)
{
    pthread_mutex_lock(&ls.lock);
    memset(ls.recs, 0, sizeof ls.recs);
    ls.nrecs = ls.opens = ls.closes = ls.bad = 0;
    ls.pending_after_go = 0;
    ls.go_rc = 0;
    ls.went = 0;
    pthread_mutex_unlock(&ls.lock);
}

static struct lrec *ls_find(uint64_t id)
{
    int i;
    for (i = 0; i < ls.nrecs; i++)
        if (ls.recs[i].id == id)
            return &ls.recs[i];
    return NULL;
}

static void ls_on_open(ns_conn *conn, void *user)
{
    (void)user;
    pthread_mutex_lock(&ls.lock);
    ls.opens++;
    if (ls.nrecs < MAXRECS) {
        struct lrec *r = &ls.recs[ls.nrecs++];
        r->id = ns_conn_id(conn);
        r->open_ms = now_ms();
        r->last_data_ms = r->open_ms;
    } else {
        ls.bad++;
    }
    pthread_mutex_unlock(&ls.lock);
}

static void ls_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct lrec *r;
    (void)user;
    pthread_mutex_lock(&ls.lock);
    r = ls_find(ns_conn_id(conn));
    if (r)
        r->last_data_ms = now_ms();
    else
        ls.bad++;
    pthread_mutex_unlock(&ls.lock);
    if (len == 2 && memcmp(data, "go", 2) == 0) {
        int rc = ns_conn_send(conn, bigbuf, BIG);
        size_t p = ns_conn_pending(conn);
        pthread_mutex_lock(&ls.lock);
        ls.go_rc = rc;
        ls.pending_after_go = p;
        ls.went = 1;
        pthread_mutex_unlock(&ls.lock);
        return;
    }
    /* echo: raw bytes as they came, or one message in the server's framing */
    CHECK_EQ_INT(ns_conn_send_frame(conn, data, len), NS_OK);
}

static void ls_on_close(ns_conn *conn, int reason, void *user)
{
    struct lrec *r;
    (void)user;
    pthread_mutex_lock(&ls.lock);
    ls.closes++;
    r = ls_find(ns_conn_id(conn));
    if (!r) {
        ls.bad++;
    } else {
        r->closes++;
        r->reason = reason;
        r->close_ms = now_ms();
    }
    pthread_mutex_unlock(&ls.lock);
}

static int ls_int(int *f)
{
    int v;
    pthread_mutex_lock(&ls.lock);
    v = *f;
    pthread_mutex_unlock(&ls.lock);
    return v;
}

static ns_server *ls_serve(ns_options *o)
{
    ns_server *srv = NULL;
    ls_reset();
    CHECK_EQ_INT(ns_options_set_on_open(o, ls_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, ls_on_close), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", ls_on_data, &ls, o, &srv), NS_OK);
    return srv;
}

/* Sends msg and reads its echo back; 1 on success. */
static int echo_ok(int fd, const char *msg)
{
    char buf[64];
    size_t n = strlen(msg);
    if (fd < 0 || write_all_timeout(fd, msg, n, 3000) != n)
        return 0;
    return read_timeout(fd, buf, n, 3000, NULL) == n && memcmp(buf, msg, n) == 0;
}

/* EOF or reset, and nothing before it. */
static int refused_or_closed(int fd, int timeout_ms)
{
    int r = wait_eof(fd, timeout_ms);
    if (r != 1 && r != -ECONNRESET)
        fprintf(stderr, "expected EOF or reset, wait_eof gave %d\n", r);
    return r == 1 || r == -ECONNRESET;
}

/* ---- max_conns --------------------------------------------------------------------- */

static void test_max_conns(void)
{
    ns_options *o = ns_options_new();
    ns_server *srv;
    ns_stats s;
    int fd[3], over, again, over2, i;

    SECTION("max_conns 3: the 4th is accepted and closed, counted; a freed slot is reused");
    CHECK(o != NULL);
    if (!o)
        return;
    CHECK_EQ_INT(ns_options_set_max_conns(o, 3), NS_OK);
    srv = ls_serve(o);
    ns_options_free(o);
    if (!srv)
        return;
    for (i = 0; i < 3; i++) {
        fd[i] = tcp_connect4(ns_server_port(srv));
        CHECK(echo_ok(fd[i], "hello"));
    }
    over = tcp_connect4(ns_server_port(srv)); /* the kernel completes the handshake */
    CHECK(over >= 0);
    if (over >= 0) {
        write_all_timeout(over, "hi?", 3, 1000); /* may fail once the reset arrived */
        CHECK(refused_or_closed(over, 5000));    /* no reply, just the end */
        close(over);
    }
    WAIT_FOR(server_stats(srv).rejected >= 1, 3000);
    s = server_stats(srv);
    CHECK_EQ_INT(s.rejected, 1);
    CHECK_EQ_INT(s.accepted, 3);
    CHECK_EQ_INT(s.active, 3);
    CHECK_EQ_INT(ls_int(&ls.opens), 3); /* a refused connection is never opened */
    /* the first three still work */
    for (i = 0; i < 3; i++)
        CHECK(echo_ok(fd[i], "still"));

    /* one closes: a slot is free again */
    close(fd[0]);
    WAIT_FOR(ls_int(&ls.closes) >= 1, 5000);
    CHECK_EQ_INT(ls_int(&ls.closes), 1);
    again = tcp_connect4(ns_server_port(srv));
    CHECK(echo_ok(again, "welcome back"));
    s = server_stats(srv);
    CHECK_EQ_INT(s.accepted, 4);
    CHECK_EQ_INT(s.active, 3);
    CHECK_EQ_INT(s.rejected, 1);

    /* and full again */
    over2 = tcp_connect4(ns_server_port(srv));
    CHECK(over2 >= 0);
    if (over2 >= 0) {
        CHECK(refused_or_closed(over2, 5000));
        close(over2);
    }
    WAIT_FOR(server_stats(srv).rejected >= 2, 3000);
    CHECK_EQ_INT(server_stats(srv).rejected, 2);
    CHECK_EQ_INT(ls_int(&ls.opens), 4);

    close(fd[1]);
    close(fd[2]);
    if (again >= 0)
        close(again);
    WAIT_FOR(ls_int(&ls.closes) >= 4, 5000);
    s = server_stats(srv);
    CHECK_EQ_INT(s.closed, 4);
    CHECK_EQ_INT(s.active, 0);
    CHECK_EQ_INT(ls_int(&ls.bad), 0);
    ns_server_free(srv);
}

/* With several loop threads, loop 0 accepts and hands connections to the others:
 * a burst must still not get more than max_conns in. */
static void test_max_conns_threads(void)
{
    ns_options *o = ns_options_new();
    ns_server *srv;
    ns_stats s;
    int fds[20], i, n = 20;

    SECTION("max_conns 3 with 4 loop threads: a burst of 20 connections, 3 get in");
    CHECK(o != NULL);
    if (!o)
        return;
    CHECK_EQ_INT(ns_options_set_max_conns(o, 3), NS_OK);
    CHECK_EQ_INT(ns_options_set_threads(o, 4), NS_OK);
    srv = ls_serve(o);
    ns_options_free(o);
    if (!srv)
        return;
    for (i = 0; i < n; i++) {
        fds[i] = tcp_connect4(ns_server_port(srv));
        CHECK(fds[i] >= 0);
    }
    /* every connection decided: opened (on its loop) or refused */
    WAIT_FOR(server_stats(srv).accepted + server_stats(srv).rejected >= (uint64_t)n, 5000);
    s = server_stats(srv);
    printf("accepted %llu, rejected %llu, on_open %d\n", (unsigned long long)s.accepted,
           (unsigned long long)s.rejected, ls_int(&ls.opens));
    CHECK_EQ_INT(s.accepted + s.rejected, n);
    CHECK_EQ_INT(s.accepted, 3);
    CHECK_EQ_INT(s.rejected, n - 3);
    CHECK_EQ_INT(ls_int(&ls.opens), 3);
    CHECK(s.active <= 3);
    for (i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    WAIT_FOR(ls_int(&ls.closes) >= ls_int(&ls.opens), 5000);
    CHECK_EQ_INT(ls_int(&ls.closes), ls_int(&ls.opens));
    ns_server_free(srv);
}

/* ---- idle timeout -------------------------------------------------------------------- */

static void test_idle_timeout(void)
{
    ns_options *o = ns_options_new();
    ns_server *srv;
    ns_stats s;
    int fa, fb, fc, talk_ok = 1, push_ok = 1, rounds = 0;
    int64_t end, last_talk;
    uint64_t idc;

    SECTION("idle_timeout_ms 200: an idle connection times out; talking or being sent to keeps one open");
    CHECK(o != NULL);
    if (!o)
        return;
    CHECK_EQ_INT(ns_options_set_idle_timeout_ms(o, 200), NS_OK);
    srv = ls_serve(o);
    ns_options_free(o);
    if (!srv)
        return;
    fa = tcp_connect4(ns_server_port(srv));
    CHECK(fa >= 0);
    WAIT_FOR(ls_int(&ls.opens) >= 1, 3000); /* A is recs[0] */
    fb = tcp_connect4(ns_server_port(srv));
    CHECK(fb >= 0);
    WAIT_FOR(ls_int(&ls.opens) >= 2, 3000); /* B is recs[1] */
    fc = tcp_connect4(ns_server_port(srv));
    CHECK(fc >= 0);
    WAIT_FOR(ls_int(&ls.opens) >= 3, 3000); /* C is recs[2] */
    pthread_mutex_lock(&ls.lock);
    idc = ls.recs[2].id;
    pthread_mutex_unlock(&ls.lock);

    /* for 800 ms (four idle timeouts), every 50 ms: B talks (and reads the echo);
       C only receives what the server sends it (traffic in one direction) */
    end = now_ms() + 800;
    last_talk = now_ms();
    while (now_ms() < end) {
        char t;
        if (!echo_ok(fb, "p"))
            talk_ok = 0;
        if (ns_server_send(srv, idc, "t", 1) != NS_OK || read_timeout(fc, &t, 1, 3000, NULL) != 1)
            push_ok = 0;
        last_talk = now_ms();
        rounds++;
        sleep_ms(50);
    }
    CHECK(talk_ok);
    CHECK(push_ok);
    CHECK(rounds >= 10);

    /* A is gone by now, on time, with NS_ERR_TIMEOUT; its client sees the end */
    CHECK(refused_or_closed(fa, 3000));
    pthread_mutex_lock(&ls.lock);
    CHECK_EQ_INT(ls.recs[0].closes, 1);
    CHECK_EQ_INT(ls.recs[0].reason, NS_ERR_TIMEOUT);
    {
        int64_t after = ls.recs[0].close_ms - ls.recs[0].open_ms;
        printf("idle connection closed after %lld ms\n", (long long)after);
        CHECK(after >= 150 && after <= 2000);
    }
    CHECK_EQ_INT(ls.recs[1].closes, 0); /* B is still open */
    CHECK_EQ_INT(ls.recs[2].closes, 0); /* C too */
    pthread_mutex_unlock(&ls.lock);
    s = server_stats(srv);
    CHECK_EQ_INT(s.timeouts, 1);
    CHECK_EQ_INT(s.active, 2);
    CHECK(echo_ok(fb, "still here"));
    CHECK(echo_ok(fc, "me too"));
    last_talk = now_ms();

    /* once they fall silent, they time out as well */
    WAIT_FOR(ls_int(&ls.closes) >= 3, 3000);
    pthread_mutex_lock(&ls.lock);
    {
        int i;
        for (i = 1; i <= 2; i++) {
            int64_t after = ls.recs[i].close_ms - last_talk;
            CHECK_EQ_INT(ls.recs[i].closes, 1);
            CHECK_EQ_INT(ls.recs[i].reason, NS_ERR_TIMEOUT);
            CHECK(after >= 150 && after <= 2000);
        }
    }
    pthread_mutex_unlock(&ls.lock);
    CHECK(refused_or_closed(fb, 3000));
    CHECK(refused_or_closed(fc, 3000));
    s = server_stats(srv);
    CHECK_EQ_INT(s.timeouts, 3);
    CHECK_EQ_INT(s.closed, 3);
    CHECK_EQ_INT(s.active, 0);
    close(fa);
    close(fb);
    close(fc);
    ns_server_free(srv);
}

/* ---- drain on stop --------------------------------------------------------------------- */

struct reader {
    int fd;
    int slow;           /* ms between 64 KiB reads */
    size_t got;
    long bad;
    int eof;
};

static void *reader_main(void *p)
{
    struct reader *r = (struct reader *)p;
    static unsigned char buf[64 * 1024];
    int64_t deadline = now_ms() + 15000;
    while (now_ms() < deadline) {
        struct pollfd pfd;
        ssize_t n;
        pfd.fd = r->fd;
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (poll(&pfd, 1, 200) <= 0)
            continue;
        n = recv(r->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            ssize_t i;
            for (i = 0; i < n; i++)
                if (buf[i] != pat(r->got + (size_t)i))
                    r->bad++;
            r->got += (size_t)n;
            if (r->slow)
                sleep_ms(r->slow);
        } else if (n == 0) {
            r->eof = 1;
            shutdown(r->fd, SHUT_WR); /* done too: the server's side may end now */
            break;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            r->eof = -errno;
            break;
        }
    }
    return NULL;
}

/* A client with a small receive buffer, so most of BIG stays queued in netsock. */
static int small_client(int port)
{
    struct sockaddr_in sa;
    int small = 64 * 1024;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

enum drain_peer { NEVER_READS, READS, READS_AND_TALKS };

static void test_drain(enum drain_peer mode)
{
    ns_options *o = ns_options_new();
    ns_server *srv;
    int fd, idle, late = -1;
    int reading = mode != NEVER_READS;
    uint32_t drain_ms = reading ? 2000 : 700;
    int64_t t0, dt;
    struct reader rd;
    pthread_t th;

    SECTION(mode == READS ? "drain 2000 ms: a slow reader gets every queued byte before the close"
            : mode == READS_AND_TALKS
                ? "drain 2000 ms: a slow reader that sends more during the drain gets every byte"
                : "drain 700 ms: a peer that never reads is cut off at the drain timeout");
    CHECK(o != NULL);
    if (!o)
        return;
    CHECK_EQ_INT(ns_options_set_drain_timeout_ms(o, drain_ms), NS_OK);
    CHECK_EQ_INT(ns_options_set_max_write_buffer(o, 2 * BIG), NS_OK);
    srv = ls_serve(o);
    ns_options_free(o);
    if (!srv)
        return;
    fd = small_client(ns_server_port(srv));
    idle = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0 && idle >= 0);
    CHECK(echo_ok(idle, "idle"));
    CHECK_EQ_INT(write_all_timeout(fd, "go", 2, 3000), 2);
    WAIT_FOR(ls_int(&ls.went), 5000);
    pthread_mutex_lock(&ls.lock);
    CHECK_EQ_INT(ls.go_rc, NS_OK);
    printf("pending when stop is called: %zu bytes\n", ls.pending_after_go);
    CHECK(ls.pending_after_go > 1024 * 1024); /* most of it is still queued */
    pthread_mutex_unlock(&ls.lock);

    t0 = now_ms();
    CHECK_EQ_INT(ns_server_stop(srv), NS_OK);
    memset(&rd, 0, sizeof rd);
    rd.fd = fd;
    rd.slow = 2; /* ~32 MB/s at most: the 8 MiB take a few hundred ms */
    if (reading)
        CHECK_EQ_INT(pthread_create(&th, NULL, reader_main, &rd), 0);
    if (mode == READS_AND_TALKS)
        CHECK_EQ_INT(write_all_timeout(fd, "and another request", 19, 1000), 19);
    /* the idle connection closes at once; like any client, we close on EOF */
    CHECK(refused_or_closed(idle, 1500));
    close(idle);
    idle = -1;
    /* no new connection is accepted while stopping */
    if (mode == READS)
        late = tcp_connect4(ns_server_port(srv)); /* may still reach the backlog */
    CHECK_EQ_INT(ns_server_wait(srv), NS_OK);
    dt = now_ms() - t0;
    printf("ns_server_wait returned %lld ms after ns_server_stop\n", (long long)dt);
    if (reading) {
        pthread_join(th, NULL);
        CHECK(dt < (int64_t)drain_ms);  /* closed when flushed, not at the deadline */
        CHECK_EQ_INT(rd.got, BIG);      /* every byte */
        CHECK_EQ_INT(rd.bad, 0);
        CHECK_EQ_INT(rd.eof, 1);        /* then an orderly end */
    } else {
        CHECK(dt >= (int64_t)drain_ms - 100);
        CHECK(dt <= (int64_t)drain_ms + 1500);
    }
    pthread_mutex_lock(&ls.lock);
    CHECK_EQ_INT(ls.opens, 2); /* the late one never opened */
    CHECK_EQ_INT(ls.closes, 2);
    CHECK_EQ_INT(ls.recs[0].closes, 1);
    CHECK_EQ_INT(ls.recs[1].closes, 1);
    CHECK_EQ_INT(ls.recs[0].reason, NS_ERR_STOPPED);
    CHECK_EQ_INT(ls.recs[1].reason, NS_ERR_STOPPED);
    CHECK_EQ_INT(ls.bad, 0);
    pthread_mutex_unlock(&ls.lock);
    {
        ns_stats s = server_stats(srv);
        CHECK_EQ_INT(s.closed, 2);
        CHECK_EQ_INT(s.active, 0);
        if (reading)
            CHECK(s.bytes_out >= BIG);
    }
    ns_server_free(srv);
    /* no second on_close after free */
    CHECK_EQ_INT(ls_int(&ls.closes), 2);
    CHECK_EQ_INT(ls_int(&ls.opens), 2);
    close(fd);
    if (late >= 0)
        close(late);
}

/* ---- option setters ---------------------------------------------------------------------- */

static void test_setters(void)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    char addr[64], reply[16];
    size_t rlen = 0;

    SECTION("ns_options setters reject bad values with NS_ERR_INVALID");
    CHECK(o != NULL);
    if (!o)
        return;
    CHECK_EQ_INT(ns_options_set_framing(o, 7), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_FIXED + 1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_framing(o, -1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_max_frame(o, 0), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_max_write_buffer(o, 0), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_backlog(o, 0), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_backlog(o, -5), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_threads(o, 1000), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_threads(o, 257), NS_ERR_INVALID);

    CHECK_EQ_INT(ns_options_set_framing(NULL, NS_FRAMING_LINE), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_max_frame(NULL, 10), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_max_write_buffer(NULL, 10), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_max_conns(NULL, 10), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_idle_timeout_ms(NULL, 10), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_drain_timeout_ms(NULL, 10), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_connect_timeout_ms(NULL, 10), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_backlog(NULL, 10), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_threads(NULL, 2), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_nodelay(NULL, true), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_keepalive(NULL, 5), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_on_open(NULL, ls_on_open), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_on_close(NULL, ls_on_close), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_on_drain(NULL, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_loop(NULL, NULL), NS_ERR_INVALID);

    /* the edges that are allowed */
    CHECK_EQ_INT(ns_options_set_threads(o, 256), NS_OK);
    CHECK_EQ_INT(ns_options_set_threads(o, 0), NS_OK);
    CHECK_EQ_INT(ns_options_set_threads(o, 1), NS_OK);
    CHECK_EQ_INT(ns_options_set_max_frame(o, 1), NS_OK);
    CHECK_EQ_INT(ns_options_set_max_write_buffer(o, 1), NS_OK);
    CHECK_EQ_INT(ns_options_set_max_write_buffer(o, 8 * 1024 * 1024), NS_OK);
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_RAW), NS_OK);
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_LEN32), NS_OK);
    CHECK_EQ_INT(ns_options_set_max_frame(o, 1024), NS_OK);
    CHECK_EQ_INT(ns_options_set_max_conns(o, 0), NS_OK);
    CHECK_EQ_INT(ns_options_set_idle_timeout_ms(o, 0), NS_OK);
    CHECK_EQ_INT(ns_options_set_drain_timeout_ms(o, 0), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_drain(o, NULL), NS_OK);

    /* a refused value leaves the earlier one: still len32 after framing 7 */
    CHECK_EQ_INT(ns_options_set_framing(o, 7), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_max_frame(o, 0), NS_ERR_INVALID);

    /* backlog 1, Nagle on, keep-alive on: a server with them serves */
    CHECK_EQ_INT(ns_options_set_backlog(o, 1), NS_OK);
    CHECK_EQ_INT(ns_options_set_nodelay(o, false), NS_OK);
    CHECK_EQ_INT(ns_options_set_keepalive(o, 30), NS_OK);
    srv = ls_serve(o);
    ns_options_free(o);
    if (!srv)
        return;
    CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);
    CHECK_EQ_INT(ns_tcp_request(addr, "abc", 3, reply, sizeof reply, &rlen, 5000, NS_FRAMING_LEN32),
                 NS_OK);
    CHECK_EQ_INT(rlen, 3);
    CHECK(memcmp(reply, "abc", 3) == 0);

    /* ns_server_stats: NULL, and an older, smaller struct gets no more than its size */
    CHECK_EQ_INT(ns_server_stats(srv, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_server_stats(NULL, NULL), NS_ERR_INVALID);
    WAIT_FOR(ls_int(&ls.closes) >= 1, 3000);
    {
        ns_stats s;
        memset(&s, 0xAB, sizeof s);
        s.size = (uint32_t)offsetof(ns_stats, closed); /* size, _reserved, accepted, active */
        CHECK_EQ_INT(ns_server_stats(srv, &s), NS_OK);
        CHECK_EQ_INT(s.size, offsetof(ns_stats, closed));
        CHECK_EQ_INT(s.accepted, 1);
        CHECK_EQ_INT(s.active, 0);
        CHECK(s.closed == 0xABABABABABABABABull); /* untouched */
        CHECK(s.timeouts == 0xABABABABABABABABull);
    }
    ns_server_free(srv);
}

int main(void)
{
    watchdog(60);
    pthread_mutex_init(&ls.lock, NULL);
    bigbuf = malloc(BIG);
    CHECK(bigbuf != NULL);
    if (bigbuf) {
        size_t i;
        for (i = 0; i < BIG; i++)
            bigbuf[i] = pat(i);
        test_max_conns();
        test_max_conns_threads();
        test_idle_timeout();
        test_drain(READS);
        test_drain(READS_AND_TALKS);
        test_drain(NEVER_READS);
        test_setters();
    }
    free(bigbuf);
    return CHECK_DONE();
}
