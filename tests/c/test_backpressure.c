/* test_backpressure.c - max_write_buffer against a peer that sends requests but
 * never reads: ns_conn_send returns NS_ERR_LIMIT and queues nothing of that
 * message, ns_conn_pending never passes the bound, the server stops reading
 * the connection while more than a quarter of the bound is queued, and the
 * process does not grow while the peer tries to push 64 MiB; once the peer
 * reads, on_drain fires, reading resumes, and every reply the server accepted
 * arrives, in order. Sends from another thread that wait for a held loop stop at
 * the bound too (NS_ERR_LIMIT). */
#include <netinet/tcp.h>

#include "netsock.h"
#include "check.h"

#define BOUND (1024 * 1024)        /* max_write_buffer */
#define LOW_WATER (BOUND / 4)
#define REQ 1024                   /* one request: 1 KiB of the raw stream, so one read
                                      carries up to 64 of them: 8 MiB of replies */
#define BLOCK (64 * 1024)          /* one reply: 64 KiB */
#define PUSH_MAX (64u * 1024 * 1024)

/* byte i of reply block seq */
static unsigned char block_byte(uint64_t seq, size_t i)
{
    if (i < 8)
        return (unsigned char)(seq >> (8 * i));
    return (unsigned char)((seq * 7 + i) & 0xff);
}

struct bp {
    pthread_mutex_t lock;
    int opens, closes, reason;
    long data_calls;
    long data_above;       /* on_data (a read) while more than LOW_WATER was queued */
    size_t max_entry_pending;
    uint64_t bytes_seen;
    size_t req_partial;
    uint64_t seq;          /* blocks accepted by ns_conn_send */
    long limits;           /* sends refused with NS_ERR_LIMIT */
    long limit_changed;    /* ... that changed ns_conn_pending anyway */
    long other_rc;
    size_t max_pending;
    long drains;
    long drain_high;       /* on_drain with more than LOW_WATER queued */
    long drain_not_above;  /* on_drain without having been above LOW_WATER */
    int was_above;
};

static struct bp bp;
static unsigned char blockbuf[BLOCK];

static void bp_on_open(ns_conn *conn, void *user)
{
    struct bp *b = (struct bp *)user;
    (void)conn;
    pthread_mutex_lock(&b->lock);
    b->opens++;
    pthread_mutex_unlock(&b->lock);
}

static void bp_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct bp *b = (struct bp *)user;
    size_t entry = ns_conn_pending(conn), reqs, r, i;
    (void)data;
    pthread_mutex_lock(&b->lock);
    b->data_calls++;
    if (entry > LOW_WATER)
        b->data_above++;
    if (entry > b->max_entry_pending)
        b->max_entry_pending = entry;
    b->bytes_seen += len;
    reqs = (b->req_partial + len) / REQ;
    b->req_partial = (b->req_partial + len) % REQ;
    pthread_mutex_unlock(&b->lock);

    /* two blocks per request: the replies to one delivery (8 MiB) outgrow what the kernel's
       buffers and the queue hold, though netsock stops reading past 64 KiB queued */
    for (r = 0; r < 2 * reqs; r++) {
        uint64_t seq;
        size_t before, after;
        int rc;
        pthread_mutex_lock(&b->lock);
        seq = b->seq;
        pthread_mutex_unlock(&b->lock);
        for (i = 0; i < BLOCK; i++)
            blockbuf[i] = block_byte(seq, i);
        before = ns_conn_pending(conn);
        rc = ns_conn_send(conn, blockbuf, BLOCK);
        after = ns_conn_pending(conn);
        pthread_mutex_lock(&b->lock);
        if (rc == NS_OK) {
            b->seq++;
        } else if (rc == NS_ERR_LIMIT) {
            b->limits++;
            if (after != before)
                b->limit_changed++;
        } else {
            b->other_rc++;
        }
        if (after > b->max_pending)
            b->max_pending = after;
        if (after > LOW_WATER)
            b->was_above = 1;
        pthread_mutex_unlock(&b->lock);
    }
}

static void bp_on_drain(ns_conn *conn, void *user)
{
    struct bp *b = (struct bp *)user;
    size_t p = ns_conn_pending(conn);
    pthread_mutex_lock(&b->lock);
    b->drains++;
    if (p > LOW_WATER)
        b->drain_high++;
    if (!b->was_above)
        b->drain_not_above++;
    b->was_above = 0;
    pthread_mutex_unlock(&b->lock);
}

static void bp_on_close(ns_conn *conn, int reason, void *user)
{
    struct bp *b = (struct bp *)user;
    (void)conn;
    pthread_mutex_lock(&b->lock);
    b->closes++;
    b->reason = reason;
    pthread_mutex_unlock(&b->lock);
}

static long bp_get(long *field)
{
    long v;
    pthread_mutex_lock(&bp.lock);
    v = *field;
    pthread_mutex_unlock(&bp.lock);
    return v;
}

static int bp_int(int *field)
{
    int v;
    pthread_mutex_lock(&bp.lock);
    v = *field;
    pthread_mutex_unlock(&bp.lock);
    return v;
}

/* Streaming check of the replies: consecutive blocks 0, 1, 2, ... */
struct verifier {
    uint64_t seq;
    size_t off;
    uint64_t total;
    long bad;
};

static void verify(struct verifier *v, const unsigned char *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (p[i] != block_byte(v->seq, v->off)) {
            if (v->bad < 3)
                fprintf(stderr, "reply byte %llu (block %llu offset %zu) is wrong\n",
                        (unsigned long long)(v->total + i), (unsigned long long)v->seq, v->off);
            v->bad++;
        }
        if (++v->off == BLOCK) {
            v->off = 0;
            v->seq++;
        }
    }
    v->total += n;
}

/* ---- ns_server_send from another thread while the loop cannot take the sends ---------- */

static pthread_mutex_t hold_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t hold_id;
static int hold_released;

/* Reports the connection, then holds its loop until released. */
static void hold_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)data;
    (void)len;
    (void)user;
    pthread_mutex_lock(&hold_lock);
    hold_id = ns_conn_id(conn);
    int64_t end = now_ms() + 10000;
    while (!hold_released && now_ms() < end) {
        pthread_mutex_unlock(&hold_lock);
        sleep_ms(2);
        pthread_mutex_lock(&hold_lock);
    }
    pthread_mutex_unlock(&hold_lock);
}

static uint64_t held_id(void)
{
    pthread_mutex_lock(&hold_lock);
    uint64_t id = hold_id;
    pthread_mutex_unlock(&hold_lock);
    return id;
}

/* The sends waiting for a held loop are bounded by max_write_buffer too: NS_ERR_LIMIT past it. */
static void test_waiting_sends_are_bounded(void)
{
    static unsigned char msg[10000], got[100000];
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    size_t n = 0;
    int fd, i, rc = NS_OK;
    uint64_t id;

    SECTION("ns_server_send while the loop is held: waiting sends stop at the write buffer limit");
    CHECK_EQ_INT(ns_options_set_max_write_buffer(o, sizeof got), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", hold_data, NULL, o, &srv), NS_OK);
    ns_options_free(o);
    if (!srv)
        return;
    fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    CHECK_EQ_INT(send(fd, "x", 1, 0), 1);
    WAIT_FOR(held_id() != 0, 5000);
    id = held_id();
    memset(msg, 5, sizeof msg);
    /* each counts its bytes and what it takes to queue (about 100 bytes) */
    for (i = 0; i < 10 && (rc = ns_server_send(srv, id, msg, sizeof msg)) == NS_OK; i++) {
    }
    CHECK_EQ_INT(rc, NS_ERR_LIMIT);
    CHECK(i >= 5 && i < 10);
    pthread_mutex_lock(&hold_lock);
    hold_released = 1;
    pthread_mutex_unlock(&hold_lock);
    /* the ones that waited all arrive */
    while (n < (size_t)i * sizeof msg) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 5000) != 1)
            break;
        ssize_t r = recv(fd, got + n, sizeof got - n, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    CHECK_EQ_INT(n, (size_t)i * sizeof msg);
    CHECK(memchr(got, 0, n) == NULL);
    close(fd);
    ns_server_free(srv);
}

int main(void)
{
    static unsigned char req[64 * 1024], rbuf[256 * 1024];
    ns_options *o;
    ns_server *srv = NULL;
    ns_stats s;
    int fd, one = 1, small = 128 * 1024;
    uint64_t pushed = 0;
    long rss0, rss1, calls_at_stall;
    uint64_t in_at_stall;
    int64_t last_progress, deadline;
    struct verifier v;
    int eof = 0;

    watchdog(60);
    pthread_mutex_init(&bp.lock, NULL);
    memset(req, 'r', sizeof req);

    SECTION("a peer that never reads: NS_ERR_LIMIT, bounded queue, reading stops");
    o = ns_options_new();
    CHECK(o != NULL);
    if (!o)
        return CHECK_DONE();
    CHECK_EQ_INT(ns_options_set_max_write_buffer(o, BOUND), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_open(o, bp_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_drain(o, bp_on_drain), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, bp_on_close), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", bp_on_data, &bp, o, &srv), NS_OK);
    ns_options_free(o);
    if (!srv)
        return CHECK_DONE();

    /* small client buffers, so the kernel holds little of either direction */
    {
        struct sockaddr_in sa;
        fd = socket(AF_INET, SOCK_STREAM, 0);
        CHECK(fd >= 0);
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa.sin_port = htons((uint16_t)ns_server_port(srv));
        CHECK_EQ_INT(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
        CHECK_EQ_INT(set_nonblock(fd), 0);
    }
    WAIT_FOR(bp_int(&bp.opens) >= 1, 5000);
    CHECK_EQ_INT(bp_int(&bp.opens), 1);
    rss0 = proc_status_num("VmRSS");
    CHECK(rss0 > 0);

    /* push requests until 64 MiB went out or nothing moved for 500 ms */
    last_progress = now_ms();
    deadline = now_ms() + 15000;
    while (pushed < PUSH_MAX && now_ms() < deadline && now_ms() - last_progress < 500) {
        struct pollfd pfd;
        ssize_t w;
        size_t want = sizeof req;
        if (PUSH_MAX - pushed < want)
            want = (size_t)(PUSH_MAX - pushed);
        pfd.fd = fd;
        pfd.events = POLLOUT;
        pfd.revents = 0;
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        w = send(fd, req, want, MSG_NOSIGNAL);
        if (w > 0) {
            pushed += (uint64_t)w;
            last_progress = now_ms();
        } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            fprintf(stderr, "push: %s\n", strerror(errno));
            break;
        }
    }
    rss1 = proc_status_num("VmRSS");
    printf("pushed %llu bytes before the stall; RSS %ld kB -> %ld kB\n",
           (unsigned long long)pushed, rss0, rss1);
    CHECK(pushed < PUSH_MAX);             /* the server stopped taking requests */
    CHECK(pushed > 0);
    CHECK(rss1 > 0 && rss1 - rss0 < 32 * 1024);

    /* nothing is read any more: on_data and bytes_in stay put */
    calls_at_stall = bp_get(&bp.data_calls);
    in_at_stall = server_stats(srv).bytes_in;
    sleep_ms(300);
    CHECK_EQ_INT(bp_get(&bp.data_calls), calls_at_stall);
    s = server_stats(srv);
    CHECK_EQ_INT(s.bytes_in, in_at_stall);
    CHECK(s.bytes_in < pushed);

    pthread_mutex_lock(&bp.lock);
    printf("on_data %ld calls (%ld above the low-water mark), %llu replies accepted, "
           "%ld refused, max pending %zu\n",
           bp.data_calls, bp.data_above, (unsigned long long)bp.seq, bp.limits, bp.max_pending);
    CHECK(bp.limits > 0);                 /* NS_ERR_LIMIT happened */
    CHECK_EQ_INT(bp.limit_changed, 0);    /* ... and queued nothing */
    CHECK_EQ_INT(bp.other_rc, 0);
    CHECK(bp.max_pending <= BOUND);
    CHECK(bp.max_pending > LOW_WATER);
    CHECK_EQ_INT(bp.data_above, 0);       /* no read while above a quarter of the bound */
    CHECK_EQ_INT(bp.drains, 0);           /* nobody read yet */
    CHECK_EQ_INT(bp.closes, 0);
    pthread_mutex_unlock(&bp.lock);

    SECTION("the peer reads: on_drain, reading resumes, every accepted reply in order");
    CHECK_EQ_INT(shutdown(fd, SHUT_WR), 0); /* no more requests: the server closes when done */
    memset(&v, 0, sizeof v);
    deadline = now_ms() + 20000;
    while (now_ms() < deadline) {
        struct pollfd pfd;
        ssize_t r;
        pfd.fd = fd;
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (poll(&pfd, 1, 200) <= 0)
            continue;
        r = recv(fd, rbuf, sizeof rbuf, 0);
        if (r > 0) {
            verify(&v, rbuf, (size_t)r);
        } else if (r == 0) {
            eof = 1;
            break;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            fprintf(stderr, "read: %s\n", strerror(errno));
            break;
        }
    }
    CHECK_EQ_INT(eof, 1);
    WAIT_FOR(bp_int(&bp.closes) >= 1, 5000);
    pthread_mutex_lock(&bp.lock);
    printf("read %llu bytes = %llu blocks; %ld on_drain; on_data %ld calls in all\n",
           (unsigned long long)v.total, (unsigned long long)v.seq, bp.drains, bp.data_calls);
    CHECK_EQ_INT(v.bad, 0);
    CHECK_EQ_INT(v.off, 0);
    CHECK_EQ_INT(v.seq, bp.seq);          /* every accepted reply, nothing else */
    CHECK_EQ_INT(v.total, bp.seq * BLOCK);
    CHECK(bp.drains >= 1);
    CHECK_EQ_INT(bp.drain_high, 0);
    CHECK_EQ_INT(bp.drain_not_above, 0);
    CHECK(bp.data_calls > calls_at_stall); /* reading resumed */
    CHECK_EQ_INT(bp.bytes_seen, pushed);   /* every request byte was read at last */
    CHECK(bp.max_pending <= BOUND);
    CHECK_EQ_INT(bp.limit_changed, 0);
    CHECK_EQ_INT(bp.data_above, 0);
    CHECK_EQ_INT(bp.closes, 1);
    CHECK_EQ_INT(bp.reason, NS_OK);
    pthread_mutex_unlock(&bp.lock);
    s = server_stats(srv);
    CHECK_EQ_INT(s.bytes_in, pushed);
    CHECK_EQ_INT(s.bytes_out, v.total);
    CHECK_EQ_INT(s.accepted, 1);
    CHECK_EQ_INT(s.closed, 1);
    CHECK_EQ_INT(s.active, 0);
    close(fd);
    ns_server_free(srv);
    test_waiting_sends_are_bounded();
    return CHECK_DONE();
}
