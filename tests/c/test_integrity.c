/* test_integrity.c - the promises of issue 12, through the C API:
 *
 *  1. a send that returned NS_OK reaches the peer, in order, with none missing, or the
 *     connection ends with NS_ERR_LIMIT and the peer sees the end after a prefix of them
 *     (ns_server_send_frame, ns_client_send_frame, and loop sends racing thread sends);
 *  2. ns_tcp_send reads while it writes: a 12 MiB echo with no timeout, a 32 MiB echo into a
 *     1 MiB buffer;
 *  3. no call waits past its timeout, even with under 1 us left (clock_gettime is interposed
 *     here to put the deadline 500 ns away);
 *  4. the last partial message at EOF: a line is a line, a cut len32 frame is NS_ERR_CLOSED;
 *  5. error texts name the address and the step, without errno text; NULL handles record
 *     NS_ERR_INVALID in ns_last_error(), free functions leave it alone.
 */
#define _GNU_SOURCE
#include <sys/syscall.h>
#include <sys/un.h>

#include "check.h"

/* ---- a clock that can jump (item 3) --------------------------------------------------- */

/* While armed (on the arming thread only), the `jump_at`-th CLOCK_MONOTONIC reading is moved
 * to 500 ns before the deadline the first reading set (`limit_ns` after it), and later
 * readings keep that offset. Time only ever runs faster, so any bounded wait returns sooner. */
static pthread_t clock_thread;
static int clock_armed, clock_calls, clock_jump_at;
static int64_t clock_first_ns, clock_offset_ns, clock_limit_ns;

static int64_t ts_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec;
}

int clock_gettime(clockid_t clk, struct timespec *ts)
{
    int r = (int)syscall(SYS_clock_gettime, clk, ts);
    if (r == 0 && clk == CLOCK_MONOTONIC && clock_armed && pthread_equal(pthread_self(), clock_thread)) {
        int64_t t = ts_ns(ts);
        clock_calls++;
        if (clock_calls == 1)
            clock_first_ns = t;
        if (clock_calls == clock_jump_at)
            clock_offset_ns = clock_first_ns + clock_limit_ns - 500 - t;
        t += clock_offset_ns;
        ts->tv_sec = t / 1000000000LL;
        ts->tv_nsec = t % 1000000000LL;
    }
    return r;
}

static void clock_arm(int jump_at, int limit_ms)
{
    clock_thread = pthread_self();
    clock_calls = 0;
    clock_offset_ns = 0;
    clock_jump_at = jump_at;
    clock_limit_ns = (int64_t)limit_ms * 1000000LL;
    clock_armed = 1;
}

/* Real elapsed time, from a clock the interposer leaves alone. */
static int64_t real_ms(void)
{
    struct timespec ts;
    syscall(SYS_clock_gettime, CLOCK_BOOTTIME, &ts);
    return ts_ns(&ts) / 1000000;
}

/* ---- item 1: accepted sends arrive, in order, or the connection ends ------------------- */

#define MSG_LEN 2000
#define NMSG 1600

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

struct conn_rec {
    uint64_t id;
    int opens, closes, reason;
    /* loop sends (section "race"): numbered, with what each returned */
    int loop_sent, loop_ok[NMSG];
};
static struct conn_rec rec;

static void rec_open(ns_conn *conn, void *user)
{
    (void)user;
    pthread_mutex_lock(&lock);
    rec.id = ns_conn_id(conn);
    rec.opens++;
    pthread_mutex_unlock(&lock);
}

static void rec_close(ns_conn *conn, int reason, void *user)
{
    (void)conn;
    (void)user;
    pthread_mutex_lock(&lock);
    rec.closes++;
    rec.reason = reason;
    pthread_mutex_unlock(&lock);
}

/* One numbered line of MSG_LEN bytes: "<tag><number> xxxx...". */
static size_t make_msg(char *buf, char tag, int n)
{
    int k = snprintf(buf, MSG_LEN, "%c%06d ", tag, n);
    memset(buf + k, 'x', MSG_LEN - (size_t)k);
    return MSG_LEN;
}

/* A loop send per "go" line the peer sends: a burst of 8 numbered messages from on_data. */
static void burst_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    char msg[MSG_LEN];
    int i;
    (void)user;
    if (len != 2 || memcmp(data, "go", 2) != 0)
        return;
    for (i = 0; i < 8; i++) {
        int n;
        pthread_mutex_lock(&lock);
        n = rec.loop_sent;
        pthread_mutex_unlock(&lock);
        if (n >= NMSG)
            return;
        make_msg(msg, 'L', n);
        int rc = ns_conn_send_frame(conn, msg, MSG_LEN);
        pthread_mutex_lock(&lock);
        rec.loop_ok[n] = rc == NS_OK;
        rec.loop_sent++;
        pthread_mutex_unlock(&lock);
    }
}

static void ignore_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)conn, (void)data, (void)len, (void)user;
}

/* The sender: NMSG numbered messages from this thread, some while the peer does not read. */
struct sender {
    ns_server *srv; /* or */
    ns_client *cl;
    uint64_t id;
    int ok[NMSG], refused, other;
    int done;
};

static void *sender_main(void *arg)
{
    struct sender *s = (struct sender *)arg;
    char msg[MSG_LEN];
    int i;
    for (i = 0; i < NMSG; i++) {
        int rc;
        make_msg(msg, 'T', i);
        rc = s->srv ? ns_server_send_frame(s->srv, s->id, msg, MSG_LEN) : ns_client_send_frame(s->cl, msg, MSG_LEN);
        s->ok[i] = rc == NS_OK;
        if (rc == NS_ERR_LIMIT)
            s->refused++;
        else if (rc != NS_OK)
            s->other++;
        if (i % 4 == 3)
            sleep_ms(1); /* spread over about half a second: the peer starts reading meanwhile */
    }
    pthread_mutex_lock(&lock);
    s->done = 1;
    pthread_mutex_unlock(&lock);
    return NULL;
}

/* What the peer got: the numbers of its lines, per tag. */
struct got {
    int t[NMSG + 8], nt, l[NMSG + 8], nl, bad, eof;
};

/* Reads lines from `fd` after `delay_ms` (the peer "reads only later"), slowly at first;
 * sends "go" lines meanwhile if `go` is set. Stops at EOF, or once nothing came for 1.5 s
 * after the sender was done, or after 30 s. */
static void read_lines(int fd, int delay_ms, int go, struct sender *s, struct got *g)
{
    static char buf[1 << 20];
    size_t have = 0;
    int64_t end = now_ms() + 30000, quiet_since = now_ms(), go_until = now_ms() + delay_ms + 2000;
    memset(g, 0, sizeof *g);
    set_nonblock(fd);
    while (now_ms() < end) {
        struct pollfd p;
        ssize_t r;
        int done;
        if (go && now_ms() < go_until)
            (void)!write(fd, "go\n", 3);
        if (now_ms() < quiet_since + delay_ms && have == 0 && g->nt + g->nl == 0) {
            sleep_ms(5);
            continue;
        }
        p.fd = fd;
        p.events = POLLIN;
        p.revents = 0;
        poll(&p, 1, 20);
        r = read(fd, buf + have, sizeof buf - have);
        if (r == 0) {
            g->eof = 1;
            break;
        }
        pthread_mutex_lock(&lock);
        done = s->done;
        pthread_mutex_unlock(&lock);
        if (r < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                g->eof = -errno;
                break;
            }
            if (done && now_ms() - quiet_since > 1500)
                break;
            continue;
        }
        quiet_since = now_ms();
        have += (size_t)r;
        /* cut whole lines */
        {
            size_t pos = 0;
            char *nl;
            while ((nl = memchr(buf + pos, '\n', have - pos)) != NULL) {
                size_t len = (size_t)(nl - (buf + pos));
                int n = -1;
                char tag = buf[pos];
                if (len == MSG_LEN && sscanf(buf + pos + 1, "%6d", &n) == 1 && (tag == 'T' || tag == 'L')) {
                    if (tag == 'T' && g->nt < NMSG + 8)
                        g->t[g->nt++] = n;
                    else if (tag == 'L' && g->nl < NMSG + 8)
                        g->l[g->nl++] = n;
                } else {
                    g->bad++;
                }
                pos += len + 1;
            }
            memmove(buf, buf + pos, have - pos);
            have -= pos;
        }
        if (now_ms() < quiet_since + 200 && g->nt + g->nl < 100)
            sleep_ms(1); /* slow at first: the queues stay full for a while */
    }
}

/* The rule, for one source: `got` is exactly the accepted ones in order, or (closed with
 * NS_ERR_LIMIT, EOF seen) a prefix of them. Returns 1 if it holds. */
static int rule_holds(const char *what, const int *ok, int nsent, const int *got, int ngot, int limit_closed)
{
    int i, k = 0, accepted = 0;
    for (i = 0; i < nsent; i++)
        accepted += ok[i];
    for (i = 0; i < nsent && k < ngot; i++) {
        if (!ok[i])
            continue;
        if (got[k] != i) {
            printf("%s: message %d (accepted) missing or out of order: got %d at position %d\n", what, i,
                   got[k], k);
            return 0;
        }
        k++;
    }
    if (k < ngot) {
        printf("%s: %d messages past the accepted ones\n", what, ngot - k);
        return 0;
    }
    if (ngot < accepted && !limit_closed) {
        printf("%s: %d of %d accepted messages arrived, and the connection did not end with NS_ERR_LIMIT\n",
               what, ngot, accepted);
        return 0;
    }
    return 1;
}

static void unix_path(char *path, size_t cap, const char *name)
{
    snprintf(path, cap, "/tmp/netsock-integrity-%d-%s.sock", (int)getpid(), name);
    unlink(path);
}

static int unix_connect(const char *path) /* path: under 100 bytes */
{
    struct sockaddr_un sa;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static ns_options *line_opts(void)
{
    ns_options *o = ns_options_new();
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_LINE), NS_OK);
    CHECK_EQ_INT(ns_options_set_max_write_buffer(o, 64 * 1024), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_open(o, rec_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, rec_close), NS_OK);
    return o;
}

static void check_run(const char *what, struct sender *s, struct got *g)
{
    int closes, reason, limit_closed;
    pthread_mutex_lock(&lock);
    closes = rec.closes;
    reason = rec.reason;
    pthread_mutex_unlock(&lock);
    limit_closed = closes == 1 && reason == NS_ERR_LIMIT && g->eof == 1;
    printf("%s: %d sent, %d refused with NS_ERR_LIMIT, %d arrived (+%d from the loop), %s\n", what, NMSG,
           s->refused, g->nt, g->nl, limit_closed ? "then closed with NS_ERR_LIMIT" : "still open");
    CHECK_EQ_INT(g->bad, 0);
    CHECK_EQ_INT(s->other, 0);
    CHECK(s->refused > 0); /* the limit was reached: the test tested something */
    CHECK(rule_holds(what, s->ok, NMSG, g->t, g->nt, limit_closed));
    CHECK_EQ_INT(closes, 0); /* netsock never needs the way out the rule leaves */
}

static void test_server_sends(void)
{
    static struct sender s;
    static struct got g;
    char path[128], addr[160];
    ns_options *o = line_opts();
    ns_server *srv = NULL;
    pthread_t th;
    int fd;

    SECTION("ns_server_send_frame from a thread to a peer that reads only later: no holes");
    memset(&rec, 0, sizeof rec);
    memset(&s, 0, sizeof s);
    unix_path(path, sizeof path, "srv");
    snprintf(addr, sizeof addr, "unix:%s", path);
    CHECK_EQ_INT(ns_tcp_serve(addr, ignore_data, NULL, o, &srv), NS_OK);
    ns_options_free(o);
    if (!srv)
        return;
    fd = unix_connect(path);
    CHECK(fd >= 0);
    WAIT_FOR(locked_int(&lock, &rec.opens) == 1, 3000);
    s.srv = srv;
    pthread_mutex_lock(&lock);
    s.id = rec.id;
    pthread_mutex_unlock(&lock);
    CHECK_EQ_INT(pthread_create(&th, NULL, sender_main, &s), 0);
    read_lines(fd, 150, 0, &s, &g);
    pthread_join(th, NULL);
    check_run("server sends", &s, &g);
    /* all written: nothing is counted as waiting (the accounting leaks nothing), so one
       message over the whole write buffer is taken (a byte left counted would refuse it) */
    {
        static char whole[64 * 1024];
        int rc;
        memset(whole, 'w', sizeof whole);
        /* (the loop counts the last lines as written a moment after the peer may have them) */
        WAIT_FOR((rc = ns_server_send_frame(srv, s.id, whole, sizeof whole)) == NS_OK, 3000); /* + "\n" */
        CHECK_EQ_INT(rc, NS_OK);
    }
    close(fd);
    ns_server_free(srv);
}

static void test_client_sends(void)
{
    static struct sender s;
    static struct got g;
    char path[96], addr[160];
    struct sockaddr_un sa;
    ns_options *o = line_opts();
    ns_client *cl = NULL;
    pthread_t th;
    int lfd, fd;

    SECTION("ns_client_send_frame from a thread to a server that reads only later: no holes");
    memset(&rec, 0, sizeof rec);
    memset(&s, 0, sizeof s);
    unix_path(path, sizeof path, "cli");
    lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    CHECK_EQ_INT(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    CHECK_EQ_INT(listen(lfd, 4), 0);
    snprintf(addr, sizeof addr, "unix:%s", path);
    CHECK_EQ_INT(ns_tcp_connect(addr, ignore_data, NULL, o, &cl), NS_OK);
    ns_options_free(o);
    fd = accept(lfd, NULL, NULL);
    CHECK(fd >= 0);
    if (!cl || fd < 0)
        goto out;
    s.cl = cl;
    CHECK_EQ_INT(pthread_create(&th, NULL, sender_main, &s), 0);
    read_lines(fd, 150, 0, &s, &g);
    pthread_join(th, NULL);
    check_run("client sends", &s, &g);
out:
    if (fd >= 0)
        close(fd);
    ns_client_free(cl);
    close(lfd);
    unlink(path);
}

static void test_racing_sends(void)
{
    static struct sender s;
    static struct got g;
    char path[128], addr[160];
    ns_options *o = line_opts();
    ns_server *srv = NULL;
    pthread_t th;
    int fd, limit_closed;

    SECTION("loop sends racing thread sends: each source arrives whole, or the connection ends");
    memset(&rec, 0, sizeof rec);
    memset(&s, 0, sizeof s);
    unix_path(path, sizeof path, "race");
    snprintf(addr, sizeof addr, "unix:%s", path);
    CHECK_EQ_INT(ns_tcp_serve(addr, burst_on_data, NULL, o, &srv), NS_OK);
    ns_options_free(o);
    if (!srv)
        return;
    fd = unix_connect(path);
    CHECK(fd >= 0);
    WAIT_FOR(locked_int(&lock, &rec.opens) == 1, 3000);
    s.srv = srv;
    pthread_mutex_lock(&lock);
    s.id = rec.id;
    pthread_mutex_unlock(&lock);
    CHECK_EQ_INT(pthread_create(&th, NULL, sender_main, &s), 0);
    read_lines(fd, 150, 1, &s, &g);
    pthread_join(th, NULL);
    pthread_mutex_lock(&lock);
    limit_closed = rec.closes == 1 && rec.reason == NS_ERR_LIMIT && g.eof == 1;
    printf("race: thread: %d refused, %d arrived; loop: %d sent, %d arrived; %s (closes %d, reason %d, "
           "eof %d)\n",
           s.refused, g.nt, rec.loop_sent, g.nl, limit_closed ? "closed with NS_ERR_LIMIT" : "still open",
           rec.closes, rec.reason, g.eof);
    CHECK(rule_holds("race, thread sends", s.ok, NMSG, g.t, g.nt, limit_closed));
    CHECK(rule_holds("race, loop sends", rec.loop_ok, rec.loop_sent, g.l, g.nl, limit_closed));
    CHECK_EQ_INT(rec.closes, 0); /* netsock never needs the way out the rule leaves */
    pthread_mutex_unlock(&lock);
    CHECK_EQ_INT(g.bad, 0);
    close(fd);
    ns_server_free(srv);
}

/* ---- item 2: ns_tcp_send reads while it writes ---------------------------------------- */

/* The README's echo server. */
static void echo_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    ns_conn_send(conn, data, len);
}

static void test_big_echo(void)
{
    const size_t big = 12u << 20, huge = 32u << 20, cap = 1u << 20;
    ns_server *srv = NULL;
    char addr[64];
    unsigned char *req, *reply;
    size_t rlen = 0, i;
    int64_t t0;

    SECTION("ns_tcp_send: 12 MiB to an echo server with no timeout, 32 MiB into a 1 MiB buffer");
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", echo_on_data, NULL, NULL, &srv), NS_OK);
    req = malloc(huge);
    reply = malloc(big + 1);
    CHECK(req && reply);
    if (!srv || !req || !reply)
        goto out;
    for (i = 0; i < huge; i++)
        req[i] = (unsigned char)(i * 131 + (i >> 16));
    CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);

    t0 = now_ms();
    CHECK_EQ_INT(ns_tcp_send(addr, req, big, reply, big + 1, &rlen, 0), NS_OK);
    CHECK_EQ_INT(rlen, big);
    CHECK(memcmp(reply, req, big) == 0);
    printf("12 MiB echo: %lld ms\n", (long long)(now_ms() - t0));

    rlen = 0;
    memset(reply, 0, cap + 1);
    CHECK_EQ_INT(ns_tcp_send(addr, req, huge, reply, cap, &rlen, 60000), NS_ERR_TRUNCATED);
    CHECK_EQ_INT(rlen, cap);
    CHECK(memcmp(reply, req, cap) == 0);
    CHECK_EQ_INT(reply[cap], 0);
out:
    free(req);
    free(reply);
    ns_server_free(srv);
}

/* ---- item 3: no unbounded waits ------------------------------------------------------- */

static void test_deadline_under_a_microsecond(void)
{
    int udp = bound_socket4(SOCK_DGRAM), tcp = bound_socket4(SOCK_STREAM);
    char uaddr[64], taddr[64], reply[16];
    size_t rlen;
    int jump, f;

    SECTION("500 ns left: every blocking call still returns within its timeout");
    CHECK(udp >= 0 && tcp >= 0);
    if (udp < 0 || tcp < 0)
        return;
    CHECK_EQ_INT(listen(tcp, 8), 0); /* never accepts: connects complete, replies never come */
    snprintf(uaddr, sizeof uaddr, "127.0.0.1:%d", sock_port(udp));
    snprintf(taddr, sizeof taddr, "127.0.0.1:%d", sock_port(tcp));
    for (f = 0; f < 3; f++) {
        for (jump = 2; jump <= 6; jump++) {
            int64_t t0 = real_ms(), dt;
            int rc;
            clock_arm(jump, 200);
            if (f == 0)
                rc = ns_udp_request(uaddr, "ping", 4, reply, sizeof reply, &rlen, 200);
            else if (f == 1)
                rc = ns_tcp_send(taddr, "ping", 4, reply, sizeof reply, &rlen, 200);
            else
                rc = ns_tcp_request(taddr, "ping", 4, reply, sizeof reply, &rlen, 200, NS_FRAMING_LINE);
            clock_armed = 0;
            dt = real_ms() - t0;
            CHECK_EQ_INT(rc, NS_ERR_TIMEOUT);
            CHECK(dt <= 200 + 50);
        }
    }
    /* and with the real clock, a timeout is kept in full */
    {
        int64_t t0 = real_ms(), dt;
        CHECK_EQ_INT(ns_udp_request(uaddr, "ping", 4, reply, sizeof reply, &rlen, 150), NS_ERR_TIMEOUT);
        dt = real_ms() - t0;
        CHECK(dt >= 150 && dt < 150 + 500);
    }
    close(udp);
    close(tcp);
}

/* ---- item 4: the last partial message at EOF ------------------------------------------- */

static char lines[4][16];
static int nlines;

static void lines_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)conn, (void)user;
    pthread_mutex_lock(&lock);
    if (nlines < 4)
        snprintf(lines[nlines], sizeof lines[0], "%.*s", (int)(len < 15 ? len : 15), (const char *)data);
    nlines++;
    pthread_mutex_unlock(&lock);
}

/* Sends `bytes` from a plain socket, shuts down its side, waits for on_close. */
static void send_and_end(ns_server *srv, const void *bytes, size_t n)
{
    int fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK_EQ_INT(write_all_timeout(fd, bytes, n, 3000), n);
    shutdown(fd, SHUT_WR);
    WAIT_FOR(locked_int(&lock, &rec.closes) == 1, 3000);
    close(fd);
}

static void test_partial_at_eof(void)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    static const unsigned char cut[7] = {0, 0, 0, 5, 'a', 'b', 'c'}; /* 5 bytes announced, 3 sent */

    SECTION("EOF: a final line without its newline is a line; a cut len32 frame is NS_ERR_CLOSED");
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_LINE), NS_OK);
    CHECK_EQ_INT(ns_options_set_max_frame(o, 8), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, rec_close), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", lines_on_data, NULL, o, &srv), NS_OK);
    if (srv) {
        memset(&rec, 0, sizeof rec);
        nlines = 0;
        send_and_end(srv, "hello\nworld", 11);
        pthread_mutex_lock(&lock);
        CHECK_EQ_INT(nlines, 2);
        CHECK_EQ_STR(lines[0], "hello");
        CHECK_EQ_STR(lines[1], "world");
        CHECK_EQ_INT(rec.reason, NS_OK);
        pthread_mutex_unlock(&lock);

        memset(&rec, 0, sizeof rec);
        nlines = 0;
        send_and_end(srv, "a\r\nlast\r", 8); /* a trailing "\r" goes, as before a "\n" */
        pthread_mutex_lock(&lock);
        CHECK_EQ_INT(nlines, 2);
        CHECK_EQ_STR(lines[1], "last");
        pthread_mutex_unlock(&lock);

        memset(&rec, 0, sizeof rec);
        nlines = 0;
        send_and_end(srv, "ok\n123456789", 12); /* over max_frame, even at the end */
        pthread_mutex_lock(&lock);
        CHECK_EQ_INT(nlines, 1);
        CHECK_EQ_INT(rec.reason, NS_ERR_LIMIT);
        pthread_mutex_unlock(&lock);
        ns_server_free(srv);
        srv = NULL;
    }
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_LEN32), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", lines_on_data, NULL, o, &srv), NS_OK);
    if (srv) {
        memset(&rec, 0, sizeof rec);
        nlines = 0;
        send_and_end(srv, cut, sizeof cut);
        pthread_mutex_lock(&lock);
        CHECK_EQ_INT(nlines, 0);
        CHECK_EQ_INT(rec.closes, 1);
        CHECK_EQ_INT(rec.reason, NS_ERR_CLOSED);
        pthread_mutex_unlock(&lock);
        ns_server_free(srv);
    }
    ns_options_free(o);
}

/* ---- item 5: texts a user can act on; NULL handles --------------------------------------- */

static void test_error_texts(void)
{
    int port = free_port4(SOCK_STREAM), uport = free_port4(SOCK_DGRAM);
    int udp = bound_socket4(SOCK_DGRAM), tcp = bound_socket4(SOCK_STREAM);
    char addr[64], want[128], reply[16];
    size_t rlen;
    ns_client *cl = NULL;

    SECTION("refused and timed-out calls name the address and the step, without errno text");
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    snprintf(want, sizeof want, "connection refused by 127.0.0.1:%d", port);
    CHECK_EQ_INT(ns_tcp_send(addr, "x", 1, reply, sizeof reply, &rlen, 2000), NS_ERR_REFUSED);
    CHECK_EQ_STR(ns_last_error(), want);
    CHECK_EQ_INT(ns_tcp_request(addr, "x", 1, reply, sizeof reply, &rlen, 2000, NS_FRAMING_LINE), NS_ERR_REFUSED);
    CHECK_EQ_STR(ns_last_error(), want);
    CHECK_EQ_INT(ns_tcp_connect(addr, ignore_data, NULL, NULL, &cl), NS_ERR_REFUSED);
    CHECK_EQ_STR(ns_last_error(), want);

    snprintf(addr, sizeof addr, "127.0.0.1:%d", uport);
    snprintf(want, sizeof want, "connection refused by 127.0.0.1:%d", uport);
    CHECK_EQ_INT(ns_udp_request(addr, "x", 1, reply, sizeof reply, &rlen, 2000), NS_ERR_REFUSED);
    CHECK_EQ_STR(ns_last_error(), want);

    snprintf(addr, sizeof addr, "127.0.0.1:%d", sock_port(udp));
    snprintf(want, sizeof want, "no reply from 127.0.0.1:%d within 400 ms", sock_port(udp));
    CHECK_EQ_INT(ns_udp_request(addr, "x", 1, reply, sizeof reply, &rlen, 400), NS_ERR_TIMEOUT);
    CHECK_EQ_STR(ns_last_error(), want);

    CHECK_EQ_INT(listen(tcp, 4), 0);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", sock_port(tcp));
    snprintf(want, sizeof want, "no reply from 127.0.0.1:%d within 300 ms", sock_port(tcp));
    CHECK_EQ_INT(ns_tcp_send(addr, "x", 1, reply, sizeof reply, &rlen, 300), NS_ERR_TIMEOUT);
    CHECK_EQ_STR(ns_last_error(), want);
    CHECK(strstr(ns_last_error(), "os error") == NULL);
    close(udp);
    close(tcp);
}

static void test_null_handles(void)
{
    SECTION("NULL handles record NS_ERR_INVALID; free functions leave ns_last_error() alone");
#define FRESH() CHECK_EQ_INT(ns_udp_send("no port", "x", 1), NS_ERR_ADDR)
#define INVALID_RECORDED() CHECK(strncmp(ns_last_error(), "invalid argument", 16) == 0)
    FRESH();
    CHECK_EQ_INT(ns_server_stop(NULL), NS_ERR_INVALID);
    INVALID_RECORDED();
    CHECK_EQ_STR(ns_last_error(), "invalid argument: `srv` is NULL");
    FRESH();
    CHECK_EQ_INT(ns_conn_id(NULL), 0);
    INVALID_RECORDED();
    FRESH();
    CHECK_EQ_INT(ns_conn_pending(NULL), 0);
    INVALID_RECORDED();
    FRESH();
    CHECK(ns_conn_user(NULL) == NULL);
    INVALID_RECORDED();
    FRESH();
    CHECK(ns_conn_server(NULL) == NULL);
    INVALID_RECORDED();
    FRESH();
    CHECK_EQ_INT(ns_client_id(NULL), 0);
    INVALID_RECORDED();
    FRESH();
    CHECK_EQ_INT(ns_server_port(NULL), NS_ERR_INVALID);
    INVALID_RECORDED();
    /* a later failure replaces the static text of ns_server_stop */
    CHECK_EQ_INT(ns_server_stop(NULL), NS_ERR_INVALID);
    FRESH();
    CHECK(strstr(ns_last_error(), "no port") != NULL);
    /* the free functions: no-ops that record nothing */
    ns_server_free(NULL);
    ns_client_free(NULL);
    ns_loop_free(NULL);
    ns_options_free(NULL);
    CHECK(strstr(ns_last_error(), "no port") != NULL);
}

/* With arguments, only the named parts run (to try one against another build). */
int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*run)(void);
    } parts[] = {
        {"null", test_null_handles},   {"texts", test_error_texts},     {"eof", test_partial_at_eof},
        {"deadline", test_deadline_under_a_microsecond}, {"server", test_server_sends},
        {"client", test_client_sends}, {"race", test_racing_sends},     {"echo", test_big_echo},
    };
    size_t i;
    int a;
    watchdog(100);
    for (i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        int on = argc < 2;
        for (a = 1; a < argc; a++)
            on |= strcmp(argv[a], parts[i].name) == 0;
        if (on)
            parts[i].run();
    }
    return CHECK_DONE();
}
