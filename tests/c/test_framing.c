/* test_framing.c - NS_FRAMING_LINE and NS_FRAMING_LEN32 servers: whole messages
 * one per on_data call however the bytes were split or coalesced, without their
 * framing ("\r\n" too); the frame limit (exactly at it passes, one byte over
 * closes only that connection with NS_ERR_LIMIT, a 4 GiB length prefix too,
 * counted in frames_too_large); ns_conn_send_frame rules; ns_server_send_frame
 * from another thread; ns_tcp_request round trips, truncation (also of a reply whose
 * body comes after its framing), closes, timeout
 * and NS_ERR_INVALID for raw framing. */
#include <netinet/tcp.h>

#include "netsock.h"
#include "check.h"

#define MAX_FRAME 100
#define MAXRECS 64
#define MAXMSGS 256

/* ---- a framed echo server that records every message per connection --------- */

struct frec {
    uint64_t id;
    int framing;
    int nmsg;
    size_t lens[MAXMSGS];
    char *msgs[MAXMSGS];
    int closes;
    int reason;
    int bad;       /* wrong ns_conn_user / id, NULL data, framing left in a message */
};

struct fstate {
    pthread_mutex_t lock;
    int framing;
    struct frec recs[MAXRECS];
    int nrecs;
    int opens;
    int closes;
    int bad;
};

static struct fstate fs;

static void fs_reset(int framing)
{
    int i, j;
    for (i = 0; i < fs.nrecs; i++)
        for (j = 0; j < fs.recs[i].nmsg; j++)
            free(fs.recs[i].msgs[j]);
    memset(&fs.recs, 0, sizeof fs.recs);
    fs.nrecs = fs.opens = fs.closes = fs.bad = 0;
    fs.framing = framing;
}

static void fs_on_open(ns_conn *conn, void *user)
{
    struct fstate *st = (struct fstate *)user;
    struct frec *r = NULL;
    pthread_mutex_lock(&st->lock);
    st->opens++;
    if (st->nrecs < MAXRECS) {
        r = &st->recs[st->nrecs++];
        r->id = ns_conn_id(conn);
        r->framing = st->framing;
    } else {
        st->bad++;
    }
    pthread_mutex_unlock(&st->lock);
    CHECK(ns_conn_user(conn) == NULL); /* NULL until set */
    if (r) {
        CHECK_EQ_INT(ns_conn_set_user(conn, r), NS_OK);
        CHECK(ns_conn_user(conn) == r);
    }
}

static void fs_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct fstate *st = (struct fstate *)user;
    struct frec *r = (struct frec *)ns_conn_user(conn);
    int framing;
    pthread_mutex_lock(&st->lock);
    framing = st->framing;
    if (!r || r->id != ns_conn_id(conn) || data == NULL) {
        st->bad++;
        pthread_mutex_unlock(&st->lock);
        return;
    }
    if (framing == NS_FRAMING_LINE &&
        (memchr(data, '\n', len) != NULL || (len > 0 && data[len - 1] == '\r')))
        r->bad++;
    if (r->nmsg < MAXMSGS) {
        char *copy = malloc(len + 1);
        if (copy) {
            memcpy(copy, data, len);
            copy[len] = 0;
        }
        r->lens[r->nmsg] = len;
        r->msgs[r->nmsg] = copy;
        r->nmsg++;
    } else {
        r->bad++;
    }
    pthread_mutex_unlock(&st->lock);

    /* commands */
    if (len == 8 && memcmp(data, "close-me", 8) == 0) {
        CHECK_EQ_INT(ns_conn_close(conn), NS_OK);
        return;
    }
    if (len == 4 && memcmp(data, "half", 4) == 0) {
        CHECK_EQ_INT(ns_conn_send(conn, "par", 3), NS_OK); /* a partial frame */
        CHECK_EQ_INT(ns_conn_close(conn), NS_OK);
        return;
    }
    if (len == 6 && memcmp(data, "silent", 6) == 0)
        return;
    if ((len == 4 && memcmp(data, "slow", 4) == 0) || (len == 9 && memcmp(data, "slow-half", 9) == 0)) {
        /* a 26-byte reply whose framing arrives before its body (or a little of it, then a close) */
        static const uint8_t prefix[4] = {0, 0, 0, 26};
        if (framing == NS_FRAMING_LEN32)
            CHECK_EQ_INT(ns_conn_send(conn, prefix, 4), NS_OK);
        CHECK_EQ_INT(ns_conn_send(conn, "abc", 3), NS_OK);
        sleep_ms(100); /* holds this loop: the first part goes out alone */
        if (len == 9)
            CHECK_EQ_INT(ns_conn_close(conn), NS_OK);
        else
            CHECK_EQ_INT(ns_conn_send(conn, framing == NS_FRAMING_LEN32 ? "defghijklmnopqrstuvwxyz"
                                                                         : "defghijklmnopqrstuvwxyz\n",
                                      framing == NS_FRAMING_LEN32 ? 23 : 24),
                         NS_OK);
        return;
    }
    if (len == 7 && memcmp(data, "nl-test", 7) == 0) {
        size_t before = ns_conn_pending(conn);
        if (framing == NS_FRAMING_LINE)
            CHECK_EQ_INT(ns_conn_send_frame(conn, "a\nb", 3), NS_ERR_INVALID);
        else
            CHECK_EQ_INT(ns_conn_send_frame(conn, NULL, 5), NS_ERR_INVALID);
        CHECK_EQ_INT(ns_conn_pending(conn), before);
        CHECK_EQ_INT(ns_conn_send_frame(conn, "nl-ok", 5), NS_OK);
        return;
    }
    CHECK_EQ_INT(ns_conn_send_frame(conn, data, len), NS_OK);
}

static void fs_on_close(ns_conn *conn, int reason, void *user)
{
    struct fstate *st = (struct fstate *)user;
    struct frec *r = (struct frec *)ns_conn_user(conn);
    /* sends from on_close fail */
    CHECK_EQ_INT(ns_conn_send_frame(conn, "x", 1), NS_ERR_CLOSED);
    pthread_mutex_lock(&st->lock);
    st->closes++;
    if (!r || r->id != ns_conn_id(conn)) {
        st->bad++;
    } else {
        r->closes++;
        r->reason = reason;
    }
    pthread_mutex_unlock(&st->lock);
}

static ns_server *fs_serve(int framing, size_t max_frame)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    CHECK(o != NULL);
    if (!o)
        return NULL;
    fs_reset(framing);
    CHECK_EQ_INT(ns_options_set_framing(o, framing), NS_OK);
    if (max_frame)
        CHECK_EQ_INT(ns_options_set_max_frame(o, max_frame), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_open(o, fs_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, fs_on_close), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", fs_on_data, &fs, o, &srv), NS_OK);
    ns_options_free(o);
    return srv;
}

static int fs_get(int *opens, int *closes)
{
    pthread_mutex_lock(&fs.lock);
    if (opens)
        *opens = fs.opens;
    if (closes)
        *closes = fs.closes;
    pthread_mutex_unlock(&fs.lock);
    return 0;
}

static int fs_closes(void)
{
    int c;
    fs_get(NULL, &c);
    return c;
}

static int fs_opens(void)
{
    int o;
    fs_get(&o, NULL);
    return o;
}

/* The record of the idx-th opened connection (caller holds no lock; read under lock). */
static struct frec *fs_rec(int idx)
{
    return idx < MAXRECS ? &fs.recs[idx] : NULL;
}

/* ---- wire encoding and plain-socket helpers ------------------------------------ */

/* Encodes msg in framing into out (LINE: "\r\n" if crlf); returns bytes. */
static size_t enc(int framing, const void *msg, size_t len, int crlf, unsigned char *out)
{
    size_t n = 0;
    if (framing == NS_FRAMING_LEN32) {
        out[0] = (unsigned char)(len >> 24);
        out[1] = (unsigned char)(len >> 16);
        out[2] = (unsigned char)(len >> 8);
        out[3] = (unsigned char)len;
        n = 4;
    }
    memcpy(out + n, msg, len);
    n += len;
    if (framing == NS_FRAMING_LINE) {
        if (crlf)
            out[n++] = '\r';
        out[n++] = '\n';
    }
    return n;
}

static int connect_nodelay(int port)
{
    int fd = tcp_connect4(port), one = 1;
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Writes buf in pieces of `chunk` bytes (each its own send); with pause_ms
 * between pieces. Returns 1 if everything was written. */
static int write_chunked(int fd, const unsigned char *buf, size_t n, size_t chunk, int pause_ms)
{
    size_t off = 0;
    while (off < n) {
        size_t k = n - off < chunk ? n - off : chunk;
        if (write_all_timeout(fd, buf + off, k, 5000) != k)
            return 0;
        off += k;
        if (pause_ms && off < n)
            sleep_ms(pause_ms);
    }
    return 1;
}

/* Reads exactly n bytes (bounded) and compares them with exp. */
static int expect_bytes(int fd, const unsigned char *exp, size_t n, int timeout_ms)
{
    unsigned char *got = malloc(n + 1);
    size_t r;
    int ok;
    if (!got)
        return 0;
    r = read_timeout(fd, got, n, timeout_ms, NULL);
    ok = r == n && memcmp(got, exp, n) == 0;
    if (!ok)
        fprintf(stderr, "expect_bytes: got %zu of %zu bytes%s\n", r, n,
                r == n ? " (content differs)" : "");
    free(got);
    return ok;
}

/* The peer closed without sending anything more: EOF or reset. */
static int closed_without_data(int fd, int timeout_ms)
{
    int r = wait_eof(fd, timeout_ms);
    if (r != 1 && r != -ECONNRESET)
        fprintf(stderr, "closed_without_data: wait_eof gave %d\n", r);
    return r == 1 || r == -ECONNRESET;
}

/* ---- the message set ----------------------------------------------------------- */

#define NMSG 9
static unsigned char msgbuf[NMSG][MAX_FRAME];
static size_t msglen[NMSG];

static void make_msgs(int framing)
{
    const char *texts[] = {"hello", "", "x", "with spaces and\ttabs", "c\rd", "0123456789"};
    int i;
    for (i = 0; i < 6; i++) {
        msglen[i] = strlen(texts[i]);
        memcpy(msgbuf[i], texts[i], msglen[i]);
    }
    /* exactly at the frame limit */
    for (i = 0; i < MAX_FRAME; i++)
        msgbuf[6][i] = (unsigned char)('a' + i % 26);
    msglen[6] = MAX_FRAME;
    /* binary (len32) or plain again (line) */
    if (framing == NS_FRAMING_LEN32) {
        const unsigned char bin[] = {0, '\n', '\r', 0xff, 0, 1, '\n'};
        memcpy(msgbuf[7], bin, sizeof bin);
        msglen[7] = sizeof bin;
        memcpy(msgbuf[8], "\r\n\r\n", 4);
        msglen[8] = 4;
    } else {
        memcpy(msgbuf[7], "trailing space ", 15);
        msglen[7] = 15;
        memcpy(msgbuf[8], "  ", 2);
        msglen[8] = 2;
    }
}

/* Encodes the whole set (LINE alternates "\n" and "\r\n"); returns bytes. */
static size_t enc_all(int framing, unsigned char *out, int crlf_base)
{
    size_t n = 0;
    int i;
    for (i = 0; i < NMSG; i++)
        n += enc(framing, msgbuf[i], msglen[i], (i + crlf_base) % 2, out + n);
    return n;
}

/* Echo of the whole set (always "\n" for lines: ns_conn_send_frame writes that). */
static size_t echo_all(int framing, unsigned char *out)
{
    size_t n = 0;
    int i;
    for (i = 0; i < NMSG; i++)
        n += enc(framing, msgbuf[i], msglen[i], 0, out + n);
    return n;
}

/* Record idx got messages [from, from + NMSG) equal to the set, one per call. */
static int rec_has_set(int idx, int from)
{
    struct frec *r;
    int i, ok = 1;
    pthread_mutex_lock(&fs.lock);
    r = fs_rec(idx);
    if (!r || r->nmsg < from + NMSG) {
        fprintf(stderr, "record %d: %d messages, wanted at least %d\n", idx, r ? r->nmsg : -1,
                from + NMSG);
        ok = 0;
    } else {
        for (i = 0; i < NMSG; i++) {
            if (r->lens[from + i] != msglen[i] || !r->msgs[from + i] ||
                memcmp(r->msgs[from + i], msgbuf[i], msglen[i]) != 0) {
                fprintf(stderr, "record %d message %d: %zu bytes \"%.*s\", wanted %zu\n", idx,
                        from + i, r->lens[from + i], (int)r->lens[from + i],
                        r->msgs[from + i] ? r->msgs[from + i] : "", msglen[i]);
                ok = 0;
            }
        }
    }
    pthread_mutex_unlock(&fs.lock);
    return ok;
}

static int rec_nmsg(int idx)
{
    int n;
    pthread_mutex_lock(&fs.lock);
    n = fs_rec(idx) ? fs_rec(idx)->nmsg : -1;
    pthread_mutex_unlock(&fs.lock);
    return n;
}

/* ---- whole messages however split ------------------------------------------------ */

static void test_split_and_coalesced(int framing, const char *name)
{
    static unsigned char wire[4096], echo[4096];
    size_t nw, ne;
    ns_server *srv;
    int fd, pass;
    const size_t chunks[] = {1, 1, 3, 7, 4096};
    const int pauses[] = {1, 0, 0, 0, 0};
    char title[128];

    snprintf(title, sizeof title, "%s: messages split into 1..7-byte writes and coalesced", name);
    SECTION(title);
    make_msgs(framing);
    srv = fs_serve(framing, MAX_FRAME);
    if (!srv)
        return;
    fd = connect_nodelay(ns_server_port(srv));
    CHECK(fd >= 0);
    if (fd < 0) {
        ns_server_free(srv);
        return;
    }
    ne = echo_all(framing, echo);
    for (pass = 0; pass < 5; pass++) {
        nw = enc_all(framing, wire, pass);
        CHECK(write_chunked(fd, wire, nw, chunks[pass], pauses[pass]));
        CHECK(expect_bytes(fd, echo, ne, 5000));
        CHECK(rec_has_set(0, pass * NMSG));
        CHECK_EQ_INT(rec_nmsg(0), (pass + 1) * NMSG);
    }
    /* two sets in one write, the second starting mid-segment */
    nw = enc_all(framing, wire, 0);
    nw += enc_all(framing, wire + nw, 1);
    CHECK(write_chunked(fd, wire, nw, 4096, 0));
    CHECK(expect_bytes(fd, echo, ne, 5000));
    CHECK(expect_bytes(fd, echo, ne, 5000));
    CHECK(rec_has_set(0, 5 * NMSG));
    CHECK(rec_has_set(0, 6 * NMSG));
    CHECK_EQ_INT(rec_nmsg(0), 7 * NMSG);

    /* ns_conn_send_frame: "\n" in a line message (or NULL data) is refused, nothing queued */
    {
        unsigned char w[64], e[64];
        size_t a = enc(framing, "nl-test", 7, 1, w), b = enc(framing, "nl-ok", 5, 0, e);
        CHECK(write_chunked(fd, w, a, 4096, 0));
        CHECK(expect_bytes(fd, e, b, 5000));
    }

    close(fd);
    WAIT_FOR(fs_closes() >= 1, 5000);
    pthread_mutex_lock(&fs.lock);
    CHECK_EQ_INT(fs.opens, 1);
    CHECK_EQ_INT(fs.closes, 1);
    CHECK_EQ_INT(fs.bad, 0);
    CHECK_EQ_INT(fs.recs[0].bad, 0);
    CHECK_EQ_INT(fs.recs[0].closes, 1);
    CHECK_EQ_INT(fs.recs[0].reason, NS_OK);
    pthread_mutex_unlock(&fs.lock);
    ns_server_free(srv);
}

/* ---- the frame limit --------------------------------------------------------------- */

struct push_arg {
    ns_server *srv;
    uint64_t id;
    uint64_t closed_id;
    int framing;
    int rc_bad;
    int rc_push;
    int rc_after;
    int rc_closed;
};

static void *push_thread(void *p)
{
    struct push_arg *a = (struct push_arg *)p;
    if (a->framing == NS_FRAMING_LINE)
        a->rc_bad = ns_server_send_frame(a->srv, a->id, "bad\nline", 8);
    else
        a->rc_bad = NS_ERR_INVALID;
    a->rc_push = ns_server_send_frame(a->srv, a->id, "pushed", 6);
    a->rc_after = ns_server_send_frame(a->srv, a->id, "", 0);
    a->rc_closed = ns_server_send_frame(a->srv, a->closed_id, "nobody", 6);
    return NULL;
}

static void test_limit(int framing, const char *name)
{
    static unsigned char wire[32768], e[256];
    unsigned char big[MAX_FRAME + 1];
    ns_server *srv;
    ns_stats s;
    int fa, fb, fc, i;
    size_t n, m;
    char title[128];

    snprintf(title, sizeof title, "%s: frame limit, only the offending connection closes", name);
    SECTION(title);
    srv = fs_serve(framing, MAX_FRAME);
    if (!srv)
        return;
    for (i = 0; i < MAX_FRAME + 1; i++)
        big[i] = (unsigned char)('A' + i % 26);

    fa = connect_nodelay(ns_server_port(srv));
    CHECK(fa >= 0);
    /* A exchanges one message so it is surely open and recorded first */
    n = enc(framing, "a1", 2, 0, wire);
    CHECK(write_chunked(fa, wire, n, 4096, 0));
    CHECK(expect_bytes(fa, wire, n, 5000));

    fb = connect_nodelay(ns_server_port(srv));
    CHECK(fb >= 0);
    /* exactly at the limit passes ("\r\n" for lines: the \r is not part of it) */
    n = enc(framing, big, MAX_FRAME, 1, wire);
    m = enc(framing, big, MAX_FRAME, 0, e);
    CHECK(write_chunked(fb, wire, n, 4096, 0));
    CHECK(expect_bytes(fb, e, m, 5000));
    /* one byte over closes B, written in small pieces so it arrives split (the
       server may close before the last pieces: their writes may fail) */
    n = enc(framing, big, MAX_FRAME + 1, 0, wire);
    write_chunked(fb, wire, n, 16, 0);
    CHECK(closed_without_data(fb, 5000));
    WAIT_FOR(fs_closes() >= 1, 5000);

    /* C: a frame that can never fit - a 4 GiB prefix, or a line without end */
    fc = connect_nodelay(ns_server_port(srv));
    CHECK(fc >= 0);
    if (framing == NS_FRAMING_LEN32) {
        memset(wire, 0xff, 4);
        memset(wire + 4, 'z', 60);
        n = 64;
    } else {
        memset(wire, 'z', sizeof wire);
        n = sizeof wire;
    }
    /* the server may close before everything is written: a short write is fine */
    write_all_timeout(fc, wire, n, 2000);
    CHECK(closed_without_data(fc, 5000));
    WAIT_FOR(fs_closes() >= 2, 5000);

    /* A still works, and also from another thread */
    n = enc(framing, "a2", 2, 1, wire);
    m = enc(framing, "a2", 2, 0, e);
    CHECK(write_chunked(fa, wire, n, 1, 0));
    CHECK(expect_bytes(fa, e, m, 5000));
    {
        struct push_arg pa;
        pthread_t th;
        unsigned char exp[64];
        size_t k;
        memset(&pa, 0, sizeof pa);
        pa.srv = srv;
        pa.framing = framing;
        pthread_mutex_lock(&fs.lock);
        pa.id = fs.recs[0].id;
        pa.closed_id = fs.recs[1].id;
        pthread_mutex_unlock(&fs.lock);
        CHECK_EQ_INT(pthread_create(&th, NULL, push_thread, &pa), 0);
        pthread_join(th, NULL);
        /* a line with "\n" is refused at once, and nothing of it is sent */
        CHECK_EQ_INT(pa.rc_bad, NS_ERR_INVALID);
        CHECK_EQ_INT(pa.rc_push, NS_OK);
        CHECK_EQ_INT(pa.rc_after, NS_OK);
        CHECK_EQ_INT(pa.rc_closed, NS_ERR_CLOSED);
        k = enc(framing, "pushed", 6, 0, exp);
        k += enc(framing, "", 0, 0, exp + k);
        CHECK(expect_bytes(fa, exp, k, 5000));
    }
    n = enc(framing, "a3", 2, 0, wire);
    CHECK(write_chunked(fa, wire, n, 4096, 0));
    CHECK(expect_bytes(fa, wire, n, 5000));

    s = server_stats(srv);
    CHECK_EQ_INT(s.frames_too_large, 2);
    CHECK_EQ_INT(s.accepted, 3);
    CHECK_EQ_INT(s.active, 1);
    CHECK_EQ_INT(s.closed, 2);

    pthread_mutex_lock(&fs.lock);
    CHECK_EQ_INT(fs.nrecs, 3);
    CHECK_EQ_INT(fs.recs[0].closes, 0);
    CHECK_EQ_INT(fs.recs[1].closes, 1);
    CHECK_EQ_INT(fs.recs[1].reason, NS_ERR_LIMIT);
    CHECK_EQ_INT(fs.recs[1].nmsg, 1); /* only the one at the limit */
    CHECK_EQ_INT(fs.recs[2].closes, 1);
    CHECK_EQ_INT(fs.recs[2].reason, NS_ERR_LIMIT);
    CHECK_EQ_INT(fs.recs[2].nmsg, 0);
    CHECK_EQ_INT(fs.recs[0].nmsg, 3);
    CHECK_EQ_INT(fs.bad, 0);
    pthread_mutex_unlock(&fs.lock);

    close(fa);
    close(fb);
    close(fc);
    WAIT_FOR(fs_closes() >= 3, 5000);
    pthread_mutex_lock(&fs.lock);
    CHECK_EQ_INT(fs.recs[0].closes, 1);
    CHECK_EQ_INT(fs.recs[0].reason, NS_OK);
    CHECK_EQ_INT(fs.closes, 3);
    pthread_mutex_unlock(&fs.lock);
    ns_server_free(srv);
}

/* A 4 GiB prefix against the default 1 MiB limit: only that connection closes,
 * and the server's memory does not follow the claim. */
static void test_huge_prefix_default_limit(void)
{
    static unsigned char junk[256 * 1024];
    ns_server *srv;
    ns_stats s;
    int fa, fb;
    long rss0, rss1;
    unsigned char w[16];
    size_t n;

    SECTION("len32: a 0xFFFFFFFF prefix with the default frame limit");
    srv = fs_serve(NS_FRAMING_LEN32, 0);
    if (!srv)
        return;
    fa = connect_nodelay(ns_server_port(srv));
    fb = connect_nodelay(ns_server_port(srv));
    CHECK(fa >= 0 && fb >= 0);
    n = enc(NS_FRAMING_LEN32, "hi", 2, 0, w);
    CHECK(write_chunked(fa, w, n, 4096, 0));
    CHECK(expect_bytes(fa, w, n, 5000));
    memset(junk, 0xff, sizeof junk);
    rss0 = proc_status_num("VmRSS");
    write_all_timeout(fb, junk, sizeof junk, 2000); /* may be cut short by the close */
    CHECK(closed_without_data(fb, 5000));
    WAIT_FOR(fs_closes() >= 1, 5000);
    rss1 = proc_status_num("VmRSS");
    CHECK(rss0 > 0 && rss1 > 0);
    CHECK(rss1 - rss0 < 16 * 1024); /* kB: nowhere near 4 GiB, not even 16 MiB */
    /* A is untouched */
    CHECK(write_chunked(fa, w, n, 1, 0));
    CHECK(expect_bytes(fa, w, n, 5000));
    s = server_stats(srv);
    CHECK_EQ_INT(s.frames_too_large, 1);
    CHECK_EQ_INT(s.active, 1);
    pthread_mutex_lock(&fs.lock);
    CHECK_EQ_INT(fs.closes, 1);
    CHECK(fs.nrecs == 2 && fs.recs[1].reason == NS_ERR_LIMIT && fs.recs[0].closes == 0);
    pthread_mutex_unlock(&fs.lock);
    close(fa);
    close(fb);
    ns_server_free(srv);
}

/* ---- ns_tcp_request ------------------------------------------------------------------ */

static void test_request(int framing, const char *name)
{
    ns_server *srv;
    char addr[128], reply[256];
    size_t rlen;
    int rc;
    char title[128];
    const unsigned char bin[] = {0, '\n', 1, '\r', '\n', 2};

    snprintf(title, sizeof title, "%s: ns_tcp_request", name);
    SECTION(title);
    srv = fs_serve(framing, MAX_FRAME);
    if (!srv)
        return;
    CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);

    rlen = 0;
    memset(reply, 0, sizeof reply);
    CHECK_EQ_INT(ns_tcp_request(addr, "ping", 4, reply, sizeof reply, &rlen, 5000, framing), NS_OK);
    CHECK_EQ_INT(rlen, 4);
    CHECK(memcmp(reply, "ping", 4) == 0);

    /* exactly as large as the buffer: not truncated */
    rlen = 0;
    CHECK_EQ_INT(ns_tcp_request(addr, "ping", 4, reply, 4, &rlen, 5000, framing), NS_OK);
    CHECK_EQ_INT(rlen, 4);

    /* empty message and empty reply */
    rlen = 99;
    CHECK_EQ_INT(ns_tcp_request(addr, "", 0, reply, sizeof reply, &rlen, 5000, framing), NS_OK);
    CHECK_EQ_INT(rlen, 0);

    /* truncated: the first reply_cap bytes, *reply_len = reply_cap, nothing past it */
    memset(reply, 0, sizeof reply);
    rlen = 0;
    rc = ns_tcp_request(addr, "truncate me", 11, reply, 5, &rlen, 5000, framing);
    CHECK_EQ_INT(rc, NS_ERR_TRUNCATED);
    CHECK_EQ_INT(rlen, 5);
    CHECK(memcmp(reply, "trunc", 5) == 0);
    CHECK(reply[5] == 0);

    /* truncated, the reply's first bytes coming after its framing: read on for them */
    memset(reply, 0, sizeof reply);
    rlen = 0;
    CHECK_EQ_INT(ns_tcp_request(addr, "slow", 4, reply, 10, &rlen, 5000, framing), NS_ERR_TRUNCATED);
    CHECK_EQ_INT(rlen, 10);
    CHECK(memcmp(reply, "abcdefghij", 10) == 0);
    CHECK(reply[10] == 0);
    /* ... and the peer closing before they all came is a close (len32); a line's end is the
     * peer's end: "abc" then EOF is the line "abc" */
    if (framing == NS_FRAMING_LEN32) {
        CHECK_EQ_INT(ns_tcp_request(addr, "slow-half", 9, reply, 10, &rlen, 5000, framing), NS_ERR_CLOSED);
    } else {
        rlen = 0;
        CHECK_EQ_INT(ns_tcp_request(addr, "slow-half", 9, reply, 10, &rlen, 5000, framing), NS_OK);
        CHECK_EQ_INT(rlen, 3);
        CHECK(memcmp(reply, "abc", 3) == 0);
    }

    if (framing == NS_FRAMING_LEN32) {
        /* binary with newlines round-trips */
        rlen = 0;
        CHECK_EQ_INT(ns_tcp_request(addr, bin, sizeof bin, reply, sizeof reply, &rlen, 5000, framing),
                     NS_OK);
        CHECK_EQ_INT(rlen, sizeof bin);
        CHECK(memcmp(reply, bin, sizeof bin) == 0);
    } else {
        /* a line cannot contain "\n" */
        CHECK_EQ_INT(ns_tcp_request(addr, "a\nb", 3, reply, sizeof reply, &rlen, 5000, framing),
                     NS_ERR_INVALID);
    }

    /* the peer closes before a whole reply: nothing at all, or half a frame (a line without
     * its newline is a whole line) */
    CHECK_EQ_INT(ns_tcp_request(addr, "close-me", 8, reply, sizeof reply, &rlen, 5000, framing),
                 NS_ERR_CLOSED);
    if (framing == NS_FRAMING_LEN32) {
        CHECK_EQ_INT(ns_tcp_request(addr, "half", 4, reply, sizeof reply, &rlen, 5000, framing),
                     NS_ERR_CLOSED);
    } else {
        rlen = 0;
        CHECK_EQ_INT(ns_tcp_request(addr, "half", 4, reply, sizeof reply, &rlen, 5000, framing), NS_OK);
        CHECK_EQ_INT(rlen, 3);
        CHECK(memcmp(reply, "par", 3) == 0);
    }

    /* no reply at all: the timeout holds */
    {
        int64_t t0 = now_ms(), dt;
        CHECK_EQ_INT(ns_tcp_request(addr, "silent", 6, reply, sizeof reply, &rlen, 300, framing),
                     NS_ERR_TIMEOUT);
        dt = now_ms() - t0;
        CHECK(dt >= 250 && dt < 3000);
    }

    /* raw framing, and no framing at all, are refused */
    CHECK_EQ_INT(ns_tcp_request(addr, "ping", 4, reply, sizeof reply, &rlen, 5000, NS_FRAMING_RAW),
                 NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tcp_request(addr, "ping", 4, reply, sizeof reply, &rlen, 5000, 7), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tcp_request(NULL, "ping", 4, reply, sizeof reply, &rlen, 5000, framing),
                 NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tcp_request(addr, "ping", 4, NULL, 8, &rlen, 5000, framing), NS_ERR_INVALID);

    /* nobody listens */
    {
        char dead[64];
        snprintf(dead, sizeof dead, "127.0.0.1:%d", free_port4(SOCK_STREAM));
        CHECK_EQ_INT(ns_tcp_request(dead, "ping", 4, reply, sizeof reply, &rlen, 5000, framing),
                     NS_ERR_REFUSED);
    }

    /* every request got its own connection, each closed once */
    WAIT_FOR(fs_closes() >= fs_opens() && fs_opens() >= (framing == NS_FRAMING_LEN32 ? 10 : 9), 5000);
    pthread_mutex_lock(&fs.lock);
    CHECK_EQ_INT(fs.bad, 0);
    CHECK_EQ_INT(fs.opens, framing == NS_FRAMING_LEN32 ? 10 : 9);
    CHECK_EQ_INT(fs.closes, fs.opens);
    pthread_mutex_unlock(&fs.lock);
    ns_server_free(srv);
}

int main(void)
{
    watchdog(60);
    pthread_mutex_init(&fs.lock, NULL);
    test_split_and_coalesced(NS_FRAMING_LINE, "line");
    test_split_and_coalesced(NS_FRAMING_LEN32, "len32");
    test_limit(NS_FRAMING_LINE, "line");
    test_limit(NS_FRAMING_LEN32, "len32");
    test_huge_prefix_default_limit();
    test_request(NS_FRAMING_LINE, "line");
    test_request(NS_FRAMING_LEN32, "len32");
    fs_reset(NS_FRAMING_RAW);
    return CHECK_DONE();
}
