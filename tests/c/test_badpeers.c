/* test_badpeers.c - peers that misbehave, against a real server that counts
 * on_open / on_close per connection id:
 *  - a peer that resets (SO_LINGER 0, then close) while the server streams a
 *    large reply to it: on_close NS_ERR_RESET, no SIGPIPE, others still served;
 *  - a peer that connects and sends nothing: open until it closes (no idle
 *    timeout), or closed with NS_ERR_TIMEOUT on time (idle timeout set);
 *  - slowloris: the idle timeout measures SILENCE (no traffic in either
 *    direction), not progress: a peer trickling one byte of a line that never
 *    ends, faster than the timeout, is NOT closed (every byte resets it); one
 *    whose gaps are longer than the timeout, or that sends one byte and falls
 *    silent, is closed one timeout after its last byte. (Only max_conns bounds
 *    what trickling peers can hold; there is no "whole request" deadline.)
 *  - a peer that half-closes: gets its whole reply, then on_close NS_OK;
 *  - a peer that never reads while the server writes: the queue stays within
 *    max_write_buffer (sends past it return NS_ERR_LIMIT), reading pauses, so
 *    the peer stalls and the process RSS stays bounded;
 *  - churn: 10,000 plain connections (64 at a time; plain close, echo, send
 *    and close unread, reset), each gets exactly one on_open and one on_close,
 *    stats accepted == closed == 10000, active 0, descriptors back to baseline;
 *  - garbage to a LEN32 server: random bytes and random frames; a connection
 *    closes with NS_ERR_LIMIT exactly when a length prefix is over max_frame,
 *    otherwise it is served (valid frames echoed) until the peer closes; an
 *    ns_tcp_request client keeps working throughout. */
#include "netsock.h"
#include "check.h"

#define TBL (1u << 15) /* id table size: more than any one server's connections */
#define MAXWB (1024u * 1024u)
#define CHUNK (256u * 1024u)
#define STREAM_TOTAL (64u * 1024u * 1024u)
#define ORDER 1024
#define NCHURN 10000
#define CHURN_THREADS 64

static volatile sig_atomic_t g_sigpipes = 0;
static void on_sigpipe(int sig)
{
    (void)sig;
    g_sigpipes++;
}

static uint64_t rng_state = 88172645463325252ull;
static pthread_mutex_t rng_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t rnd(void)
{
    uint64_t x;
    pthread_mutex_lock(&rng_lock);
    x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    pthread_mutex_unlock(&rng_lock);
    return x;
}

static unsigned char pat(size_t i)
{
    return (unsigned char)((i * 131 + i / 4093) & 0xff);
}
static unsigned char chunkbuf[CHUNK];

/* ---- the recording server ------------------------------------------------------------ */

struct rec {
    uint64_t id;
    int opens, closes, reason;
    long datas;
    int64_t open_ms, close_ms, last_data_ms;
    size_t stream_sent; /* bytes of the streamed reply handed to netsock */
};

enum { M_NONE, M_ECHO, M_STREAM, M_FLOOD };

struct cstate {        /* per connection (ns_conn_set_user) */
    int mode;
    size_t sent;
};

struct bsrv {
    pthread_mutex_t lock;
    struct rec *tbl;
    uint64_t order[ORDER]; /* ids of the first ORDER connections, in open order */
    long opens, closes, bad, datas_after_close;
    long reasons[16];
    size_t max_pending;
    long limit_rcs, other_send_fail;
    int len32;          /* echo whole frames (ns_conn_send_frame) */
};

static struct rec *rec_slot(struct bsrv *S, uint64_t id, int insert)
{
    size_t h = (size_t)((id * 0x9E3779B97F4A7C15ull) >> 40) & (TBL - 1), n;
    for (n = 0; n < TBL; n++, h = (h + 1) & (TBL - 1)) {
        if (S->tbl[h].id == id)
            return &S->tbl[h];
        if (S->tbl[h].id == 0) {
            if (!insert)
                return NULL;
            S->tbl[h].id = id;
            return &S->tbl[h];
        }
    }
    return NULL;
}

static void b_on_open(ns_conn *conn, void *user)
{
    struct bsrv *S = (struct bsrv *)user;
    uint64_t id = ns_conn_id(conn);
    struct rec *r;
    struct cstate *cs = calloc(1, sizeof *cs);
    CHECK(cs != NULL);
    CHECK_EQ_INT(ns_conn_set_user(conn, cs), NS_OK);
    pthread_mutex_lock(&S->lock);
    if (S->opens < ORDER)
        S->order[S->opens] = id;
    S->opens++;
    r = rec_slot(S, id, 1);
    if (!r || r->opens != 0) {
        S->bad++;
    } else {
        r->opens = 1;
        r->open_ms = now_ms();
    }
    pthread_mutex_unlock(&S->lock);
}

/* Streams the big reply: 256 KiB at a time while the queue is at most half full,
 * continued from on_drain. */
static void pump(struct bsrv *S, ns_conn *conn, struct cstate *cs)
{
    while (cs->sent < STREAM_TOTAL && ns_conn_pending(conn) <= MAXWB / 2) {
        int rc = ns_conn_send(conn, chunkbuf, CHUNK);
        size_t p = ns_conn_pending(conn);
        pthread_mutex_lock(&S->lock);
        if (p > S->max_pending)
            S->max_pending = p;
        if (rc != NS_OK)
            S->other_send_fail++;
        pthread_mutex_unlock(&S->lock);
        if (rc != NS_OK)
            break;
        cs->sent += CHUNK;
    }
}

static void b_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct bsrv *S = (struct bsrv *)user;
    struct cstate *cs = (struct cstate *)ns_conn_user(conn);
    struct rec *r;
    int rc;
    pthread_mutex_lock(&S->lock);
    r = rec_slot(S, ns_conn_id(conn), 0);
    if (!r || r->closes)
        S->datas_after_close++;
    if (r) {
        r->datas++;
        r->last_data_ms = now_ms();
    }
    pthread_mutex_unlock(&S->lock);
    if (!cs)
        return;
    if (cs->mode == M_NONE) /* the first byte a peer sends picks its treatment */
        cs->mode = S->len32 || len == 0 ? M_ECHO : data[0] == 'S' ? M_STREAM : data[0] == 'F' ? M_FLOOD : M_ECHO;
    switch (cs->mode) {
    case M_STREAM:
        pump(S, conn, cs);
        break;
    case M_FLOOD: {
        /* a reply per request, as long as the write buffer takes it */
        int i;
        for (i = 0; i < 64; i++) {
            size_t p;
            rc = ns_conn_send(conn, chunkbuf, 128 * 1024);
            p = ns_conn_pending(conn);
            pthread_mutex_lock(&S->lock);
            if (p > S->max_pending)
                S->max_pending = p;
            if (rc == NS_ERR_LIMIT)
                S->limit_rcs++;
            else if (rc != NS_OK)
                S->other_send_fail++;
            pthread_mutex_unlock(&S->lock);
            if (rc != NS_OK)
                break;
        }
        break;
    }
    default:
        rc = S->len32 ? ns_conn_send_frame(conn, data, len) : ns_conn_send(conn, data, len);
        if (rc != NS_OK) {
            pthread_mutex_lock(&S->lock);
            S->other_send_fail++;
            pthread_mutex_unlock(&S->lock);
        }
    }
}

static void b_on_drain(ns_conn *conn, void *user)
{
    struct cstate *cs = (struct cstate *)ns_conn_user(conn);
    if (cs && cs->mode == M_STREAM)
        pump((struct bsrv *)user, conn, cs);
}

static void b_on_close(ns_conn *conn, int reason, void *user)
{
    struct bsrv *S = (struct bsrv *)user;
    struct cstate *cs = (struct cstate *)ns_conn_user(conn);
    struct rec *r;
    /* sends from on_close are refused */
    CHECK_EQ_INT(ns_conn_send(conn, "x", 1), NS_ERR_CLOSED);
    pthread_mutex_lock(&S->lock);
    S->closes++;
    if (reason <= 0 && reason > -16)
        S->reasons[-reason]++;
    else
        S->bad++;
    r = rec_slot(S, ns_conn_id(conn), 0);
    if (!r || r->opens != 1 || r->closes != 0) {
        S->bad++;
    }
    if (r) {
        r->closes++;
        r->reason = reason;
        r->close_ms = now_ms();
        r->stream_sent = cs ? cs->sent : 0;
    }
    pthread_mutex_unlock(&S->lock);
    free(cs);
}

static struct bsrv *bsrv_new(void)
{
    struct bsrv *S = calloc(1, sizeof *S);
    if (!S)
        return NULL;
    pthread_mutex_init(&S->lock, NULL);
    S->tbl = calloc(TBL, sizeof *S->tbl);
    if (!S->tbl) {
        free(S);
        return NULL;
    }
    return S;
}

static void bsrv_free(struct bsrv *S)
{
    if (S) {
        free(S->tbl);
        free(S);
    }
}

/* A server with the recording callbacks; `o` may carry extra settings. */
static ns_server *b_serve(struct bsrv *S, ns_options *o)
{
    ns_server *srv = NULL;
    CHECK_EQ_INT(ns_options_set_on_open(o, b_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, b_on_close), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_drain(o, b_on_drain), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", b_on_data, S, o, &srv), NS_OK);
    return srv;
}

static long b_get(struct bsrv *S, long *f)
{
    long v;
    pthread_mutex_lock(&S->lock);
    v = *f;
    pthread_mutex_unlock(&S->lock);
    return v;
}

static size_t b_maxp(struct bsrv *S)
{
    size_t v;
    pthread_mutex_lock(&S->lock);
    v = S->max_pending;
    pthread_mutex_unlock(&S->lock);
    return v;
}

/* The record of the n-th connection opened (0-based), copied; waits up to 3 s for it. */
static struct rec b_nth(struct bsrv *S, int n)
{
    struct rec out;
    struct rec *r;
    memset(&out, 0, sizeof out);
    WAIT_FOR(b_get(S, &S->opens) > n, 3000);
    pthread_mutex_lock(&S->lock);
    if (n < ORDER && S->opens > n && (r = rec_slot(S, S->order[n], 0)) != NULL)
        out = *r;
    pthread_mutex_unlock(&S->lock);
    return out;
}

static int echo_ok(int fd, const char *msg)
{
    char buf[128];
    size_t n = strlen(msg);
    if (fd < 0 || write_all_timeout(fd, msg, n, 3000) != n)
        return 0;
    return read_timeout(fd, buf, n, 3000, NULL) == n && memcmp(buf, msg, n) == 0;
}

static int small_rcvbuf_connect(int port, int bytes)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
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

/* ---- 1. reset while the server streams a large reply ------------------------------------- */

static void test_reset_mid_write(void)
{
    struct bsrv *S = bsrv_new();
    ns_options *o = ns_options_new();
    ns_server *srv;
    int other, i, port, n = 6;

    SECTION("peers reset (SO_LINGER 0) while the server streams 64 MiB to them");
    CHECK(S && o);
    if (!S || !o)
        return;
    CHECK_EQ_INT(ns_options_set_max_write_buffer(o, MAXWB), NS_OK);
    srv = b_serve(S, o);
    ns_options_free(o);
    if (!srv)
        return;
    port = ns_server_port(srv);
    other = tcp_connect4(port);
    CHECK(echo_ok(other, "hello"));
    for (i = 0; i < n; i++) {
        static unsigned char buf[64 * 1024];
        int fd = small_rcvbuf_connect(port, 32 * 1024);
        size_t got = 0;
        struct rec r;
        CHECK(fd >= 0);
        if (fd < 0)
            continue;
        CHECK_EQ_INT(write_all_timeout(fd, "S", 1, 2000), 1);
        if (i % 3 == 0) {
            /* read a while: the stream is flowing, netsock's queue is in use */
            got = read_timeout(fd, buf, sizeof buf, 3000, NULL);
            CHECK_EQ_INT(got, sizeof buf);
            CHECK(buf[0] == pat(0) && buf[sizeof buf - 1] == pat(sizeof buf - 1));
        } else if (i % 3 == 1) {
            sleep_ms(50); /* the kernel buffers are full, netsock queues */
        }                 /* else: reset at once */
        close_reset(fd);
        r = b_nth(S, i + 1);
        WAIT_FOR((r = b_nth(S, i + 1)).closes >= 1, 5000);
        CHECK_EQ_INT(r.closes, 1);
        CHECK_EQ_INT(r.reason, NS_ERR_RESET);
        CHECK(r.stream_sent < STREAM_TOTAL); /* it was cut off mid-reply */
        printf("reset %d (%s): on_close %s after %zu bytes of the reply were queued\n", i,
               i % 3 == 0 ? "after reading 64 KiB" : i % 3 == 1 ? "50 ms in" : "at once",
               ns_strerror(r.reason), r.stream_sent);
        /* the server keeps serving others */
        CHECK(echo_ok(other, "still there?"));
    }
    CHECK_EQ_INT(g_sigpipes, 0);
    CHECK(b_maxp(S) <= MAXWB);
    {
        ns_stats s = server_stats(srv);
        CHECK_EQ_INT(s.accepted, n + 1);
        CHECK_EQ_INT(s.closed, n);
        CHECK_EQ_INT(s.active, 1);
        printf("bytes_out %llu\n", (unsigned long long)s.bytes_out);
    }
    close(other);
    WAIT_FOR(b_get(S, &S->closes) >= n + 1, 3000);
    CHECK_EQ_INT(b_get(S, &S->closes), n + 1);
    CHECK_EQ_INT(b_get(S, &S->bad), 0);
    CHECK_EQ_INT(b_get(S, &S->datas_after_close), 0);
    ns_server_free(srv);
    bsrv_free(S);
}

/* ---- 2. silent peers, slowloris, idle timeout ---------------------------------------- */

static void test_silent_no_timeout(void)
{
    struct bsrv *S = bsrv_new();
    ns_options *o = ns_options_new();
    ns_server *srv;
    int fd;
    struct rec r;

    SECTION("a peer that connects and sends nothing stays open (no idle timeout) until it closes");
    CHECK(S && o);
    if (!S || !o)
        return;
    srv = b_serve(S, o);
    ns_options_free(o);
    if (!srv)
        return;
    fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    r = b_nth(S, 0);
    CHECK_EQ_INT(r.opens, 1);
    sleep_ms(700);
    CHECK_EQ_INT(wait_eof(fd, 0), 0); /* nothing came, no EOF */
    r = b_nth(S, 0);
    CHECK_EQ_INT(r.closes, 0);
    CHECK_EQ_INT(r.datas, 0);
    CHECK_EQ_INT(server_stats(srv).active, 1);
    close(fd);
    WAIT_FOR(b_nth(S, 0).closes >= 1, 3000);
    r = b_nth(S, 0);
    CHECK_EQ_INT(r.closes, 1);
    CHECK_EQ_INT(r.reason, NS_OK);
    CHECK_EQ_INT(server_stats(srv).active, 0);
    ns_server_free(srv);
    bsrv_free(S);
}

#define IDLE_MS 300
#define FAST_MS 100 /* trickle faster than the idle timeout */
#define SLOW_MS 600 /* gaps longer than the idle timeout */

static void test_idle_slowloris(void)
{
    struct bsrv *S = bsrv_new();
    ns_options *o = ns_options_new();
    ns_server *srv;
    int port, fs, ft, fu, fv, i;
    int64_t t0, end, next_t, next_u, last_t = 0, u_first = 0, v_byte = 0;
    int t_bytes = 0, u_bytes = 0, t_closed_early = 0;
    struct rec rs, rt, ru, rv;

    SECTION("idle timeout 300 ms (line framing): silent peer, trickles of an endless line");
    CHECK(S && o);
    if (!S || !o)
        return;
    CHECK_EQ_INT(ns_options_set_idle_timeout_ms(o, IDLE_MS), NS_OK);
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_LINE), NS_OK);
    srv = b_serve(S, o);
    ns_options_free(o);
    if (!srv)
        return;
    port = ns_server_port(srv);
    /* S: silent; T: a byte every FAST_MS; U: a byte every SLOW_MS; V: one byte, then silence */
    fs = tcp_connect4(port);
    b_nth(S, 0);
    ft = tcp_connect4(port);
    b_nth(S, 1);
    fu = tcp_connect4(port);
    b_nth(S, 2);
    fv = tcp_connect4(port);
    b_nth(S, 3);
    CHECK(fs >= 0 && ft >= 0 && fu >= 0 && fv >= 0);
    t0 = now_ms();
    end = t0 + 1800;
    next_t = t0;
    next_u = t0;
    while (now_ms() < end) {
        int64_t now = now_ms();
        if (now >= next_t) {
            if (send(ft, "t", 1, MSG_NOSIGNAL) == 1) {
                t_bytes++;
                last_t = now;
            } else {
                t_closed_early = 1;
            }
            next_t += FAST_MS;
        }
        if (now >= next_u) {
            if (send(fu, "u", 1, MSG_NOSIGNAL) == 1) {
                if (!u_first)
                    u_first = now;
                u_bytes++;
            }
            next_u += SLOW_MS;
        }
        if (!v_byte && now >= t0 + 150) {
            CHECK_EQ_INT(send(fv, "v", 1, MSG_NOSIGNAL), 1);
            v_byte = now;
        }
        if (b_nth(S, 1).closes)
            t_closed_early = 1;
        sleep_ms(5);
    }
    /* T trickled for 1.8 s (six idle timeouts) and is still open */
    rt = b_nth(S, 1);
    CHECK_EQ_INT(t_closed_early, 0);
    CHECK_EQ_INT(rt.closes, 0);
    CHECK_EQ_INT(rt.datas, 0); /* its line never ended: no message, still not closed */
    CHECK(t_bytes >= 15);
    CHECK_EQ_INT(wait_eof(ft, 0), 0);
    /* now T falls silent: closed one timeout after its last byte */
    WAIT_FOR(b_nth(S, 1).closes >= 1, 3000);
    rt = b_nth(S, 1);
    rs = b_nth(S, 0);
    ru = b_nth(S, 2);
    rv = b_nth(S, 3);
    printf("silent peer closed %lld ms after open; trickler (%d bytes, one per %d ms) closed %lld ms "
           "after its last byte; slow trickler (%d bytes, one per %d ms) closed %lld ms after its "
           "first byte; one-byte peer closed %lld ms after its byte (%lld after open)\n",
           (long long)(rs.close_ms - rs.open_ms), t_bytes, FAST_MS, (long long)(rt.close_ms - last_t),
           u_bytes, SLOW_MS, (long long)(ru.close_ms - u_first), (long long)(rv.close_ms - v_byte),
           (long long)(rv.close_ms - rv.open_ms));
    {
        struct rec *all[4];
        all[0] = &rs;
        all[1] = &rt;
        all[2] = &ru;
        all[3] = &rv;
        for (i = 0; i < 4; i++) {
            CHECK_EQ_INT(all[i]->closes, 1);
            CHECK_EQ_INT(all[i]->reason, NS_ERR_TIMEOUT);
        }
    }
    CHECK(rs.close_ms - rs.open_ms >= IDLE_MS - 50 && rs.close_ms - rs.open_ms <= IDLE_MS + 1000);
    CHECK(rt.close_ms - last_t >= IDLE_MS - 50 && rt.close_ms - last_t <= IDLE_MS + 1000);
    CHECK(rt.close_ms - rt.open_ms >= 1800); /* lived through the whole trickle */
    /* U's first gap (600 ms) is longer than the timeout: it went before its second byte */
    CHECK(ru.close_ms - u_first >= IDLE_MS - 50 && ru.close_ms - u_first < SLOW_MS + 200);
    CHECK(rv.close_ms - v_byte >= IDLE_MS - 50 && rv.close_ms - v_byte <= IDLE_MS + 1000);
    CHECK(rv.close_ms - rv.open_ms >= 150 + IDLE_MS - 50); /* counted from the byte, not the open */
    /* the peers see the end */
    CHECK(wait_eof(fs, 2000) == 1);
    CHECK(wait_eof(fv, 2000) == 1);
    {
        int e = wait_eof(ft, 2000);
        CHECK(e == 1 || e == -ECONNRESET);
        e = wait_eof(fu, 2000);
        CHECK(e == 1 || e == -ECONNRESET || e == -EPIPE);
    }
    {
        ns_stats s = server_stats(srv);
        CHECK_EQ_INT(s.timeouts, 4);
        CHECK_EQ_INT(s.active, 0);
    }
    close(fs);
    close(ft);
    close(fu);
    close(fv);
    CHECK_EQ_INT(b_get(S, &S->bad), 0);
    ns_server_free(srv);
    bsrv_free(S);
}

/* ---- 3. half-close ------------------------------------------------------------------------- */

static void test_half_close(void)
{
    struct bsrv *S = bsrv_new();
    ns_options *o = ns_options_new();
    ns_server *srv;
    int fd, e;
    size_t n = 200 * 1024, got;
    unsigned char *out = malloc(n), *in = malloc(n + 1);
    struct rec r;

    SECTION("a peer sends 200 KiB, half-closes, reads the whole echo, then the server closes (NS_OK)");
    CHECK(S && o && out && in);
    if (!S || !o || !out || !in)
        return;
    srv = b_serve(S, o);
    ns_options_free(o);
    if (!srv)
        return;
    for (got = 0; got < n; got++)
        out[got] = (unsigned char)('a' + got % 26);
    fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    CHECK_EQ_INT(write_all_timeout(fd, out, n, 5000), n);
    CHECK_EQ_INT(shutdown(fd, SHUT_WR), 0);
    got = read_timeout(fd, in, n + 1, 5000, &e);
    CHECK_EQ_INT(got, n);
    CHECK_EQ_INT(e, 1); /* EOF after the reply */
    CHECK(memcmp(in, out, n) == 0);
    WAIT_FOR(b_nth(S, 0).closes >= 1, 3000);
    r = b_nth(S, 0);
    CHECK_EQ_INT(r.closes, 1);
    CHECK_EQ_INT(r.reason, NS_OK);
    close(fd);

    /* a tiny request, half-closed at once */
    fd = tcp_connect4(ns_server_port(srv));
    CHECK_EQ_INT(write_all_timeout(fd, "hello", 5, 2000), 5);
    CHECK_EQ_INT(shutdown(fd, SHUT_WR), 0);
    got = read_timeout(fd, in, 6, 3000, &e);
    CHECK_EQ_INT(got, 5);
    CHECK_EQ_INT(e, 1);
    WAIT_FOR(b_nth(S, 1).closes >= 1, 3000);
    CHECK_EQ_INT(b_nth(S, 1).reason, NS_OK);
    close(fd);
    CHECK_EQ_INT(b_get(S, &S->bad), 0);
    ns_server_free(srv);
    bsrv_free(S);
    free(out);
    free(in);
}

/* ---- 4. a peer that never reads --------------------------------------------------------- */

static void test_never_reads(void)
{
    struct bsrv *S = bsrv_new();
    ns_options *o = ns_options_new();
    ns_server *srv;
    int fd, other;
    long rss0, rss1;
    size_t sent = 0, sent_at_stall_check = 0;
    int64_t t0;
    static char req[4096];
    struct rec r;
    ns_stats s_mid, s_end;

    memset(&s_mid, 0, sizeof s_mid);

    SECTION("a peer that sends requests for 128 KiB replies and never reads (max_write_buffer 1 MiB)");
    CHECK(S && o);
    if (!S || !o)
        return;
    CHECK_EQ_INT(ns_options_set_max_write_buffer(o, MAXWB), NS_OK);
    srv = b_serve(S, o);
    ns_options_free(o);
    if (!srv)
        return;
    other = tcp_connect4(ns_server_port(srv));
    CHECK(echo_ok(other, "hi"));
    rss0 = proc_status_num("VmRSS");
    fd = small_rcvbuf_connect(ns_server_port(srv), 16 * 1024);
    CHECK(fd >= 0 && set_nonblock(fd) == 0);
    memset(req, 'F', sizeof req);
    t0 = now_ms();
    while (now_ms() < t0 + 1500) {
        ssize_t w = send(fd, req, sizeof req, MSG_NOSIGNAL);
        if (w > 0) {
            sent += (size_t)w;
        } else {
            struct pollfd p;
            p.fd = fd;
            p.events = POLLOUT;
            p.revents = 0;
            poll(&p, 1, 20);
        }
        if (!sent_at_stall_check && now_ms() >= t0 + 1000) {
            sent_at_stall_check = sent ? sent : 1;
            s_mid = server_stats(srv);
        }
    }
    rss1 = proc_status_num("VmRSS");
    s_end = server_stats(srv);
    /* the server stopped reading: the peer's requests stalled in the socket buffers */
    printf("never-reading peer: wrote %zu bytes of requests (%zu in the last 500 ms); server queue "
           "peaked at %ld bytes; %ld sends refused with NS_ERR_LIMIT; VmRSS %ld -> %ld kB\n",
           sent, sent - sent_at_stall_check, (long)b_maxp(S), b_get(S, &S->limit_rcs),
           rss0, rss1);
    printf("never-reading peer: server bytes_in %llu -> %llu, bytes_out %llu -> %llu over the last 500 ms\n",
           (unsigned long long)s_mid.bytes_in, (unsigned long long)s_end.bytes_in,
           (unsigned long long)s_mid.bytes_out, (unsigned long long)s_end.bytes_out);
    /* the server neither reads nor writes any more: nothing grows */
    CHECK_EQ_INT(s_end.bytes_in, s_mid.bytes_in);
    CHECK_EQ_INT(s_end.bytes_out, s_mid.bytes_out);
    CHECK(sent < 64u * 1024u * 1024u);
    CHECK_EQ_INT(sent - sent_at_stall_check, 0);
    CHECK((long)b_maxp(S) <= (long)MAXWB);
    CHECK((long)b_maxp(S) > (long)MAXWB / 2); /* it was used */
    CHECK(b_get(S, &S->limit_rcs) > 0);
    CHECK_EQ_INT(b_get(S, &S->other_send_fail), 0);
    CHECK(rss1 - rss0 < 16 * 1024);
    /* meanwhile other connections are served */
    CHECK(echo_ok(other, "and me?"));
    r = b_nth(S, 1);
    CHECK_EQ_INT(r.closes, 0);
    /* closing with unread data resets the connection */
    close(fd);
    WAIT_FOR(b_nth(S, 1).closes >= 1, 3000);
    r = b_nth(S, 1);
    CHECK_EQ_INT(r.closes, 1);
    CHECK_EQ_INT(r.reason, NS_ERR_RESET);
    close(other);
    WAIT_FOR(b_get(S, &S->closes) >= 2, 3000);
    CHECK_EQ_INT(b_get(S, &S->bad), 0);
    CHECK_EQ_INT(g_sigpipes, 0);
    ns_server_free(srv);
    bsrv_free(S);
}

/* ---- 5. connect/close churn ------------------------------------------------------------- */

struct churner {
    int port, count, index;
    long fails, kinds[4];
};

static void *churn_main(void *p)
{
    struct churner *c = (struct churner *)p;
    int i;
    for (i = 0; i < c->count; i++) {
        int kind = (c->index + i) % 4;
        int fd = tcp_connect4(c->port);
        char buf[8];
        if (fd < 0) {
            c->fails++;
            continue;
        }
        c->kinds[kind]++;
        switch (kind) {
        case 0: /* connect, close */
            close(fd);
            break;
        case 1: /* one echo, close */
            if (write_all_timeout(fd, "ping", 4, 5000) != 4 || read_timeout(fd, buf, 4, 5000, NULL) != 4 ||
                memcmp(buf, "ping", 4) != 0)
                c->fails++;
            close(fd);
            break;
        case 2: /* send, close without reading the echo */
            if (send(fd, "zzz", 3, MSG_NOSIGNAL) != 3)
                c->fails++;
            close(fd);
            break;
        default: /* reset */
            close_reset(fd);
        }
    }
    return NULL;
}

static void test_churn(void)
{
    struct bsrv *S = bsrv_new();
    ns_options *o = ns_options_new();
    ns_server *srv;
    static struct churner ch[CHURN_THREADS];
    pthread_t th[CHURN_THREADS];
    int i, fd0, fd1, fd_up, started = 0;
    long fails = 0, kinds[4] = {0, 0, 0, 0}, bad_recs = 0, scanned = 0;
    int64_t t0, dt, t_settle;
    ns_stats s;

    SECTION("churn: 10,000 connections, 64 at a time (close / echo / send-and-close / reset)");
    CHECK(S && o);
    if (!S || !o)
        return;
    fd0 = proc_fd_count(); /* before the server: its own descriptors must go too */
    srv = b_serve(S, o);
    ns_options_free(o);
    if (!srv)
        return;
    t0 = now_ms();
    for (i = 0; i < CHURN_THREADS; i++) {
        memset(&ch[i], 0, sizeof ch[i]);
        ch[i].port = ns_server_port(srv);
        ch[i].index = i;
        ch[i].count = NCHURN / CHURN_THREADS + (i < NCHURN % CHURN_THREADS);
        if (pthread_create(&th[i], NULL, churn_main, &ch[i]) == 0)
            started++;
        else
            break;
    }
    CHECK_EQ_INT(started, CHURN_THREADS);
    for (i = 0; i < started; i++) {
        int k;
        pthread_join(th[i], NULL);
        fails += ch[i].fails;
        for (k = 0; k < 4; k++)
            kinds[k] += ch[i].kinds[k];
    }
    dt = now_ms() - t0;
    WAIT_FOR(server_stats(srv).closed >= NCHURN, 10000);
    t_settle = now_ms() - t0;
    /* with the server still up: only its few own descriptors (listener, epoll, eventfd,
       spare) are left, none per connection */
    WAIT_FOR(proc_fd_count() <= fd0 + 4, 5000);
    fd_up = proc_fd_count();
    s = server_stats(srv);
    printf("churn: %d connections in %.2f s (all closed after %.2f s): %ld plain, %ld echo, %ld "
           "send-and-close, %ld reset; client failures %ld\n",
           NCHURN, dt / 1000.0, t_settle / 1000.0, kinds[0], kinds[1], kinds[2], kinds[3], fails);
    pthread_mutex_lock(&S->lock);
    printf("churn: stats accepted %llu closed %llu active %llu rejected %llu; on_open %ld on_close %ld; "
           "reasons OK %ld RESET %ld IO %ld other %ld; descriptors %d before the server, %d after the "
           "churn with the server up\n",
           (unsigned long long)s.accepted, (unsigned long long)s.closed, (unsigned long long)s.active,
           (unsigned long long)s.rejected, S->opens, S->closes, S->reasons[0], S->reasons[-NS_ERR_RESET],
           S->reasons[-NS_ERR_IO], S->closes - S->reasons[0] - S->reasons[-NS_ERR_RESET] - S->reasons[-NS_ERR_IO],
           fd0, fd_up);
    for (i = 0; i < (int)TBL; i++) {
        if (S->tbl[i].id == 0)
            continue;
        scanned++;
        if (S->tbl[i].opens != 1 || S->tbl[i].closes != 1)
            bad_recs++;
    }
    CHECK_EQ_INT(S->opens, NCHURN);
    CHECK_EQ_INT(S->closes, NCHURN);
    CHECK_EQ_INT(S->bad, 0);
    CHECK_EQ_INT(S->datas_after_close, 0);
    CHECK_EQ_INT(S->other_send_fail, 0);
    CHECK_EQ_INT(S->reasons[0] + S->reasons[-NS_ERR_RESET], NCHURN); /* EOF or reset, nothing else */
    pthread_mutex_unlock(&S->lock);
    CHECK_EQ_INT(scanned, NCHURN);
    CHECK_EQ_INT(bad_recs, 0);
    CHECK_EQ_INT(fails, 0);
    CHECK_EQ_INT(s.accepted, NCHURN);
    CHECK_EQ_INT(s.closed, NCHURN);
    CHECK_EQ_INT(s.active, 0);
    CHECK_EQ_INT(s.rejected, 0);
    CHECK(s.bytes_in > 0);
    CHECK(dt < 12000);
    CHECK(fd0 > 0);
    CHECK(fd_up >= fd0 && fd_up <= fd0 + 4);
    ns_server_free(srv);
    fd1 = proc_fd_count();
    printf("churn: descriptors after ns_server_free: %d (baseline %d)\n", fd1, fd0);
    CHECK_EQ_INT(fd1, fd0);
    bsrv_free(S);
}

/* ---- 6. garbage to a LEN32 server ---------------------------------------------------------- */

#define GMAX 4096
#define NGARBAGE 40

/* What the server must do with `buf`: 1 if some length prefix (read in order) is over the
 * frame limit (close with NS_ERR_LIMIT); *echo_len is the bytes of whole frames before it,
 * which come back as they were. */
static int expect_limit(const unsigned char *buf, size_t n, size_t *echo_len)
{
    size_t pos = 0;
    *echo_len = 0;
    while (n - pos >= 4) {
        uint32_t len = ((uint32_t)buf[pos] << 24) | ((uint32_t)buf[pos + 1] << 16) |
                       ((uint32_t)buf[pos + 2] << 8) | buf[pos + 3];
        if (len > GMAX)
            return 1;
        if (n - pos - 4 < len)
            return 0;
        pos += 4 + len;
        *echo_len = pos;
    }
    return 0;
}

static void test_garbage(void)
{
    struct bsrv *S = bsrv_new();
    ns_options *o = ns_options_new();
    ns_server *srv;
    char addr[64];
    static unsigned char buf[20000], back[20000];
    int j, req_ok = 0, req_total = 0, n_limit = 0, n_kept = 0, mism = 0;
    ns_stats s;

    SECTION("garbage (random bytes, random frames) to a LEN32 echo server, max_frame 4096");
    CHECK(S && o);
    if (!S || !o)
        return;
    S->len32 = 1;
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_LEN32), NS_OK);
    CHECK_EQ_INT(ns_options_set_max_frame(o, GMAX), NS_OK);
    srv = b_serve(S, o);
    ns_options_free(o);
    if (!srv)
        return;
    CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);
    for (j = 0; j < NGARBAGE; j++) {
        size_t n = 0, echo_len, got;
        int lim, fd, e, reqs = 0;
        char reply[32];
        size_t rlen = 0;
        struct rec r;
        if (j % 2 == 0) { /* pure random, 1 byte to 16 KiB */
            size_t k;
            n = 1 + (size_t)(rnd() % (j < 4 ? 4 : 16384));
            for (k = 0; k < n; k++)
                buf[k] = (unsigned char)rnd();
        } else {          /* 1 to 5 frames with random lengths up to 6000, maybe cut short */
            int f, nf = 1 + (int)(rnd() % 5);
            for (f = 0; f < nf && n + 4 + 6000 < sizeof buf; f++) {
                uint32_t len = (uint32_t)(rnd() % 6001), k;
                buf[n++] = (unsigned char)(len >> 24);
                buf[n++] = (unsigned char)(len >> 16);
                buf[n++] = (unsigned char)(len >> 8);
                buf[n++] = (unsigned char)len;
                for (k = 0; k < len; k++)
                    buf[n++] = (unsigned char)rnd();
            }
            if (rnd() % 3 == 0)
                n -= (size_t)(rnd() % (n < 8 ? n : 8)); /* cut the tail */
            if (n == 0)
                n = 1;
        }
        lim = expect_limit(buf, n, &echo_len);
        fd = tcp_connect4(ns_server_port(srv));
        CHECK(fd >= 0);
        if (fd < 0)
            continue;
        write_all_timeout(fd, buf, n, 3000); /* may stop early once the server closed */
        /* another client keeps working */
        for (reqs = 0; reqs < 2; reqs++) {
            req_total++;
            if (ns_tcp_request(addr, "good", 4, reply, sizeof reply, &rlen, 3000, NS_FRAMING_LEN32) == NS_OK &&
                rlen == 4 && memcmp(reply, "good", 4) == 0)
                req_ok++;
        }
        if (lim) {
            /* the server ends it: EOF (or a reset if our bytes were left unread) */
            got = read_timeout(fd, back, sizeof back, 3000, &e);
            CHECK(e == 1 || e == -ECONNRESET);
            WAIT_FOR(b_nth(S, 3 * j).closes >= 1, 3000);
            r = b_nth(S, 3 * j);
            CHECK_EQ_INT(r.closes, 1);
            CHECK_EQ_INT(r.reason, NS_ERR_LIMIT);
            n_limit++;
            if (r.reason != NS_ERR_LIMIT)
                mism++;
        } else {
            /* served: whole frames come back as they were, and it stays open; our close
             * ends it in order, unless it cut a frame short (NS_ERR_CLOSED) */
            int want = echo_len < n ? NS_ERR_CLOSED : NS_OK;
            got = read_timeout(fd, back, echo_len, 3000, &e);
            CHECK_EQ_INT(got, echo_len);
            CHECK_EQ_INT(e, 0);
            CHECK(memcmp(back, buf, echo_len) == 0);
            CHECK_EQ_INT(wait_eof(fd, 100), 0);
            r = b_nth(S, 3 * j);
            CHECK_EQ_INT(r.closes, 0);
            close(fd);
            fd = -1;
            WAIT_FOR(b_nth(S, 3 * j).closes >= 1, 3000);
            r = b_nth(S, 3 * j);
            CHECK_EQ_INT(r.closes, 1);
            CHECK_EQ_INT(r.reason, want);
            n_kept++;
            if (r.reason != want)
                mism++;
        }
        if (fd >= 0)
            close(fd);
    }
    WAIT_FOR(server_stats(srv).active == 0, 3000);
    s = server_stats(srv);
    printf("garbage: %d connections: %d closed with NS_ERR_LIMIT, %d served until they closed "
           "(%d unexpected); frames_too_large %llu; good requests %d/%d\n",
           NGARBAGE, n_limit, n_kept, mism, (unsigned long long)s.frames_too_large, req_ok, req_total);
    CHECK(n_limit > 0 && n_kept > 0);
    CHECK_EQ_INT(s.frames_too_large, n_limit);
    CHECK_EQ_INT(req_ok, req_total);
    CHECK_EQ_INT(s.accepted, 3 * NGARBAGE);
    CHECK_EQ_INT(s.closed, 3 * NGARBAGE);
    CHECK_EQ_INT(b_get(S, &S->bad), 0);
    CHECK_EQ_INT(b_get(S, &S->datas_after_close), 0);
    ns_server_free(srv);
    bsrv_free(S);
}

int main(void)
{
    size_t i;
    int64_t t0 = now_ms();
    watchdog(60);
    signal(SIGPIPE, on_sigpipe); /* counted: a SIGPIPE from the library is a failure */
    rng_state ^= (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid();
    printf("seed %llu\n", (unsigned long long)rng_state);
    for (i = 0; i < CHUNK; i++)
        chunkbuf[i] = pat(i);
    test_reset_mid_write();
    test_silent_no_timeout();
    test_idle_slowloris();
    test_half_close();
    test_never_reads();
    test_churn();
    test_garbage();
    CHECK_EQ_INT(g_sigpipes, 0);
    printf("total %.1f s\n", (now_ms() - t0) / 1000.0);
    return CHECK_DONE();
}
