/* soak.c - mixed churn against netsock for a given time: `soak SECONDS`.
 *
 * A TCP server (2 loop threads, line framing, 300 ms idle timeout, 64 KiB max
 * frame) that echoes lines and answers "big" with 256 KiB, and a UDP echo
 * server, face several client threads at once:
 *   - plain connections that exchange a few lines and close;
 *   - resets (SO_LINGER 0) in the middle of a 256 KiB reply;
 *   - half-closes (shutdown, then every echo and the server's end);
 *   - idle connections, which the idle timeout must close;
 *   - lines over the frame limit, which must close the connection;
 *   - persistent ns_tcp_connect clients on a shared ns_loop, freed at random
 *     moments; one-shot ns_tcp_request calls;
 *   - ns_server_send_frame pushes from another thread to random open ids;
 *   - ns_udp_request round trips.
 * A warm-up phase runs the same load for a short while and frees everything;
 * the baseline VmRSS, descriptor and thread counts are taken then. After the
 * main phase (servers freed, clients closed) the descriptors and threads must
 * be back to the baseline, VmRSS within 4 MiB of it, every connection opened
 * must have been closed exactly once, and no client may have seen a wrong
 * answer. Prints what it did; exits non-zero on any failure. */
#include "netsock.h"
#include "check.h"

#define CHURNERS 4
#define IDLE_MS 300
#define MAX_FRAME (64 * 1024)
#define BIG_LINES 256
#define BIG_LINE 1023 /* + "\n": 256 KiB */
#define RSS_SLACK_KB (4 * 1024)
#define MAXIDS 4096

enum kind { K_PLAIN, K_RESET, K_HALF, K_IDLE, K_OVERSIZE, K_CLIENT, K_REQUEST, K_NKINDS };
static const char *kind_names[K_NKINDS] = {"plain", "reset mid-reply", "half-close", "idle (timed out)",
                                           "over the frame limit", "ns_tcp_connect client",
                                           "ns_tcp_request"};

/* ---- the servers ------------------------------------------------------------------------ */

static struct {
    pthread_mutex_t lock;
    uint64_t ids[MAXIDS];
    int nids;
    long opens, closes, bad, reasons[16];
} srvst = {PTHREAD_MUTEX_INITIALIZER, {0}, 0, 0, 0, 0, {0}};

static char bigline[BIG_LINE + 1];

static void s_on_open(ns_conn *conn, void *user)
{
    (void)conn;
    (void)user;
    pthread_mutex_lock(&srvst.lock);
    srvst.opens++;
    pthread_mutex_unlock(&srvst.lock);
}

static void s_on_close(ns_conn *conn, int reason, void *user)
{
    uint64_t id = ns_conn_id(conn);
    int i;
    (void)user;
    pthread_mutex_lock(&srvst.lock);
    srvst.closes++;
    if (reason <= 0 && reason > -16)
        srvst.reasons[-reason]++;
    for (i = 0; i < srvst.nids; i++) {
        if (srvst.ids[i] == id) {
            srvst.ids[i] = srvst.ids[--srvst.nids];
            break;
        }
    }
    pthread_mutex_unlock(&srvst.lock);
}

static void s_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    /* a connection that has talked is pushed to as well (idle ones must stay silent, or
       the pushes would keep them from timing out) */
    if (!ns_conn_user(conn)) {
        ns_conn_set_user(conn, conn); /* any non-NULL mark */
        pthread_mutex_lock(&srvst.lock);
        if (srvst.nids < MAXIDS)
            srvst.ids[srvst.nids++] = ns_conn_id(conn);
        pthread_mutex_unlock(&srvst.lock);
    }
    if (len == 3 && memcmp(data, "big", 3) == 0) {
        int i;
        for (i = 0; i < BIG_LINES; i++)
            if (ns_conn_send_frame(conn, bigline, BIG_LINE) != NS_OK)
                break;
        return;
    }
    ns_conn_send_frame(conn, data, len);
}

static void u_on_datagram(ns_server *srv, const ns_peer *from, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    ns_udp_reply(srv, from, data, len);
}

/* ---- the load ------------------------------------------------------------------------------ */

struct stats {
    long done[K_NKINDS];
    long bad[K_NKINDS]; /* wrong or missing answers */
    long pushes_ok, pushes_closed, pushes_other;
    long udp_ok, udp_bad;
};

static struct run {
    int port, uport;
    char addr[64], uaddr[64];
    ns_server *srv;
    ns_loop *lp;
    volatile int stop;
    pthread_mutex_t lock;
    struct stats st;
} R;

static int stopping(void)
{
    int v;
    pthread_mutex_lock(&R.lock);
    v = R.stop;
    pthread_mutex_unlock(&R.lock);
    return v;
}

static void count(enum kind k, int ok)
{
    pthread_mutex_lock(&R.lock);
    R.st.done[k]++;
    if (!ok)
        R.st.bad[k]++;
    pthread_mutex_unlock(&R.lock);
}

static uint64_t xs(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* What one client connection has read and not yet used. */
struct lr {
    char buf[8192];
    size_t have;
};

/* Reads lines until `want` lines other than "push" arrived (want < 0: until EOF), each of
 * which must equal `expect`. Returns the matching lines read, -1 for a wrong one; *eof is
 * set as read_timeout sets it. */
static int read_echoes(struct lr *lr, int fd, const char *expect, int want, int timeout_ms, int *eof)
{
    char *buf = lr->buf;
    size_t have = lr->have;
    int got = 0, e = 0;
    int64_t end = now_ms() + timeout_ms;
    *eof = 0;
    while (got < want || want < 0) {
        char *nl;
        while ((nl = memchr(buf, '\n', have)) != NULL) {
            size_t l = (size_t)(nl - buf);
            if (!(l == 4 && memcmp(buf, "push", 4) == 0)) {
                if (l != strlen(expect) || memcmp(buf, expect, l) != 0) {
                    fprintf(stderr, "soak: expected \"%s\", got \"%.*s\"\n", expect, (int)(l < 60 ? l : 60), buf);
                    return -1;
                }
                got++;
            }
            memmove(buf, nl + 1, have - l - 1);
            have -= l + 1;
        }
        if (got >= want && want >= 0)
            break;
        if (have == sizeof lr->buf)
            return -1;
        if (read_timeout(fd, buf + have, 1, (int)(end - now_ms()), &e) != 1) {
            *eof = e;
            break;
        }
        have++;
        /* take what else is there without blocking */
        {
            ssize_t r = recv(fd, buf + have, sizeof lr->buf - have, MSG_DONTWAIT);
            if (r > 0)
                have += (size_t)r;
        }
        if (now_ms() >= end)
            break;
    }
    lr->have = have;
    return got;
}

static __thread struct lr lr;

static void do_plain(uint64_t *rng)
{
    int fd = tcp_connect4(R.port), n = 1 + (int)(xs(rng) % 5), i, eof, ok = fd >= 0;
    lr.have = 0;
    for (i = 0; ok && i < n; i++)
        ok = write_all_timeout(fd, "hello\n", 6, 3000) == 6 && read_echoes(&lr, fd, "hello", 1, 3000, &eof) == 1;
    if (fd >= 0)
        close(fd);
    count(K_PLAIN, ok);
}

static void do_reset(uint64_t *rng)
{
    static __thread char buf[16384];
    int fd = tcp_connect4(R.port), ok = fd >= 0;
    if (ok && write_all_timeout(fd, "big\n", 4, 3000) != 4)
        ok = 0;
    if (ok && xs(rng) % 2)
        ok = read_timeout(fd, buf, sizeof buf, 3000, NULL) > 0; /* mid-reply */
    if (fd >= 0)
        close_reset(fd);
    count(K_RESET, ok);
}

static void do_half(uint64_t *rng)
{
    int fd = tcp_connect4(R.port), n = 1 + (int)(xs(rng) % 8), i, eof = 0, ok = fd >= 0;
    for (i = 0; ok && i < n; i++)
        ok = write_all_timeout(fd, "half\n", 5, 3000) == 5;
    lr.have = 0;
    if (ok)
        ok = shutdown(fd, SHUT_WR) == 0 && read_echoes(&lr, fd, "half", -1, 3000, &eof) == n && eof == 1;
    if (fd >= 0)
        close(fd);
    count(K_HALF, ok);
}

static void do_idle(void)
{
    int fd = tcp_connect4(R.port), eof = 0, ok = fd >= 0;
    int64_t t0 = now_ms();
    if (ok) {
        /* only pushes may come; then the end, about one idle timeout after the last one */
        lr.have = 0;
        ok = read_echoes(&lr, fd, "-", -1, IDLE_MS * 20, &eof) == 0 && eof == 1 && now_ms() - t0 >= IDLE_MS - 50;
    }
    if (fd >= 0)
        close(fd);
    count(K_IDLE, ok);
}

static void do_oversize(void)
{
    static __thread char junk[MAX_FRAME + 4096];
    int fd = tcp_connect4(R.port), eof = 0, ok = fd >= 0;
    if (ok) {
        memset(junk, 'j', sizeof junk); /* no newline: a line longer than the limit */
        write_all_timeout(fd, junk, sizeof junk, 3000); /* may stop short once closed */
        lr.have = 0;
        ok = read_echoes(&lr, fd, "-", -1, 3000, &eof) == 0 && (eof == 1 || eof == -ECONNRESET);
    }
    if (fd >= 0)
        close(fd);
    count(K_OVERSIZE, ok);
}

struct cstate {
    pthread_mutex_t lock;
    int got;
    int opens;
    int closes;
};

static void c_on_open(ns_conn *conn, void *user)
{
    struct cstate *cs = (struct cstate *)user;
    (void)conn;
    pthread_mutex_lock(&cs->lock);
    cs->opens++;
    pthread_mutex_unlock(&cs->lock);
}

static void c_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct cstate *cs = (struct cstate *)user;
    (void)conn;
    if (len == 4 && memcmp(data, "push", 4) == 0)
        return;
    pthread_mutex_lock(&cs->lock);
    if (len == 6 && memcmp(data, "client", 6) == 0)
        cs->got++;
    else
        cs->got = -1000;
    pthread_mutex_unlock(&cs->lock);
}

static void c_on_close(ns_conn *conn, int reason, void *user)
{
    struct cstate *cs = (struct cstate *)user;
    (void)conn;
    (void)reason;
    pthread_mutex_lock(&cs->lock);
    cs->closes++;
    pthread_mutex_unlock(&cs->lock);
}

static void do_client(uint64_t *rng)
{
    ns_options *o = ns_options_new();
    ns_client *c = NULL;
    struct cstate cs;
    int n = 1 + (int)(xs(rng) % 4), i, ok = 1, got = 0, closes;
    int64_t end;
    memset(&cs, 0, sizeof cs);
    pthread_mutex_init(&cs.lock, NULL);
    ok = o && ns_options_set_framing(o, NS_FRAMING_LINE) == NS_OK && ns_options_set_loop(o, R.lp) == NS_OK &&
         ns_options_set_on_open(o, c_on_open) == NS_OK && ns_options_set_on_close(o, c_on_close) == NS_OK &&
         ns_tcp_connect(R.addr, c_on_data, &cs, o, &c) == NS_OK;
    ns_options_free(o);
    for (i = 0; ok && i < n; i++)
        ok = ns_client_send_frame(c, "client", 6) == NS_OK;
    if (ok && xs(rng) % 3) { /* wait for the answers, or free it in the middle */
        end = now_ms() + 3000;
        do {
            pthread_mutex_lock(&cs.lock);
            got = cs.got;
            pthread_mutex_unlock(&cs.lock);
            if (got >= n)
                break;
            sleep_ms(1);
        } while (now_ms() < end);
        ok = got == n;
        if (ok && xs(rng) % 2) {
            ok = ns_client_close(c) == NS_OK;
            end = now_ms() + 3000;
            do {
                pthread_mutex_lock(&cs.lock);
                closes = cs.closes;
                pthread_mutex_unlock(&cs.lock);
                if (closes)
                    break;
                sleep_ms(1);
            } while (now_ms() < end);
            ok = ok && closes == 1;
        }
    }
    ns_client_free(c);
    pthread_mutex_lock(&cs.lock);
    /* One on_close for the one on_open, and it has run by now. A client freed before its loop
     * started it has neither. */
    if (c && (cs.opens > 1 || cs.closes != cs.opens))
        ok = 0;
    if (cs.got < 0)
        ok = 0;
    pthread_mutex_unlock(&cs.lock);
    pthread_mutex_destroy(&cs.lock);
    count(K_CLIENT, ok);
}

static void do_request(void)
{
    char reply[64];
    size_t rlen = 0;
    int rc = ns_tcp_request(R.addr, "request", 7, reply, sizeof reply, &rlen, 3000, NS_FRAMING_LINE);
    count(K_REQUEST, rc == NS_OK && rlen == 7 && memcmp(reply, "request", 7) == 0);
}

static void *churn_main(void *p)
{
    uint64_t rng = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull + (uint64_t)now_ms();
    while (!stopping()) {
        unsigned r = (unsigned)(xs(&rng) % 100);
        if (r < 40)
            do_plain(&rng);
        else if (r < 52)
            do_reset(&rng);
        else if (r < 67)
            do_half(&rng);
        else if (r < 69)
            do_idle();
        else if (r < 74)
            do_oversize();
        else if (r < 87)
            do_client(&rng);
        else
            do_request();
    }
    return NULL;
}

static void *pusher_main(void *p)
{
    uint64_t rng = 12345 + (uint64_t)(uintptr_t)p;
    while (!stopping()) {
        uint64_t id = 0;
        int rc;
        pthread_mutex_lock(&srvst.lock);
        if (srvst.nids)
            id = srvst.ids[xs(&rng) % (uint64_t)srvst.nids];
        pthread_mutex_unlock(&srvst.lock);
        if (id) {
            rc = ns_server_send_frame(R.srv, id, "push", 4);
            pthread_mutex_lock(&R.lock);
            if (rc == NS_OK)
                R.st.pushes_ok++;
            else if (rc == NS_ERR_CLOSED)
                R.st.pushes_closed++;
            else
                R.st.pushes_other++;
            pthread_mutex_unlock(&R.lock);
        }
        sleep_ms(1);
    }
    return NULL;
}

static void *udp_main(void *p)
{
    uint64_t rng = 777 + (uint64_t)(uintptr_t)p;
    while (!stopping()) {
        char msg[64], reply[64];
        size_t rlen = 0;
        int n = snprintf(msg, sizeof msg, "dgram %llu", (unsigned long long)xs(&rng)), rc;
        rc = ns_udp_request(R.uaddr, msg, (size_t)n, reply, sizeof reply, &rlen, 2000);
        pthread_mutex_lock(&R.lock);
        if (rc == NS_OK && rlen == (size_t)n && memcmp(reply, msg, rlen) == 0)
            R.st.udp_ok++;
        else
            R.st.udp_bad++;
        pthread_mutex_unlock(&R.lock);
        sleep_ms(2);
    }
    return NULL;
}

/* Runs the whole load for `ms`; frees everything. Returns the failures seen. */
static long run_phase(const char *name, int64_t ms, struct stats *out, long *conns)
{
    ns_options *o = ns_options_new();
    pthread_t ch[CHURNERS], pu, ud;
    int i, nch = 0, have_pu = 0, have_ud = 0;
    long fails = 0;
    int64_t t0 = now_ms(), next_report;
    ns_stats s;

    memset(&R.st, 0, sizeof R.st);
    R.stop = 0;
    pthread_mutex_lock(&srvst.lock);
    srvst.nids = 0;
    srvst.opens = srvst.closes = srvst.bad = 0;
    memset(srvst.reasons, 0, sizeof srvst.reasons);
    pthread_mutex_unlock(&srvst.lock);
    CHECK(o != NULL);
    if (!o)
        return 1;
    CHECK_EQ_INT(ns_options_set_threads(o, 2), NS_OK);
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_LINE), NS_OK);
    CHECK_EQ_INT(ns_options_set_idle_timeout_ms(o, IDLE_MS), NS_OK);
    CHECK_EQ_INT(ns_options_set_max_frame(o, MAX_FRAME), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_open(o, s_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, s_on_close), NS_OK);
    R.srv = NULL;
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", s_on_data, NULL, o, &R.srv), NS_OK);
    ns_options_free(o);
    {
        ns_server *u = NULL;
        ns_options *uo = ns_options_new();
        CHECK_EQ_INT(ns_options_set_threads(uo, 2), NS_OK);
        CHECK_EQ_INT(ns_udp_serve("127.0.0.1:0", u_on_datagram, NULL, uo, &u), NS_OK);
        ns_options_free(uo);
        if (!R.srv || !u) {
            ns_server_free(R.srv);
            ns_server_free(u);
            return 1;
        }
        CHECK_EQ_INT(ns_server_addr(R.srv, R.addr, sizeof R.addr), NS_OK);
        CHECK_EQ_INT(ns_server_addr(u, R.uaddr, sizeof R.uaddr), NS_OK);
        R.port = ns_server_port(R.srv);
        CHECK_EQ_INT(ns_loop_new(NULL, &R.lp), NS_OK);
        for (i = 0; i < CHURNERS; i++)
            if (pthread_create(&ch[i], NULL, churn_main, (void *)(uintptr_t)(i + 1)) == 0)
                nch++;
        have_pu = pthread_create(&pu, NULL, pusher_main, (void *)1) == 0;
        have_ud = pthread_create(&ud, NULL, udp_main, (void *)1) == 0;
        CHECK(nch == CHURNERS && have_pu && have_ud);
        next_report = t0 + 10000;
        while (now_ms() < t0 + ms) {
            sleep_ms(50);
            if (ms >= 20000 && now_ms() >= next_report) {
                long c;
                pthread_mutex_lock(&srvst.lock);
                c = srvst.closes;
                pthread_mutex_unlock(&srvst.lock);
                printf("%s: %llds, %ld connections closed so far, VmRSS %ld kB, %d descriptors\n", name,
                       (long long)((now_ms() - t0) / 1000), c, proc_status_num("VmRSS"), proc_fd_count());
                fflush(stdout);
                next_report += 10000;
            }
        }
        pthread_mutex_lock(&R.lock);
        R.stop = 1;
        pthread_mutex_unlock(&R.lock);
        for (i = 0; i < nch; i++)
            pthread_join(ch[i], NULL);
        if (have_pu)
            pthread_join(pu, NULL);
        if (have_ud)
            pthread_join(ud, NULL);
        /* every client is closed: the server sees every connection end (idle ones at once,
           lingering ones within 2 s) */
        WAIT_FOR(server_stats(R.srv).active == 0, 5000);
        s = server_stats(R.srv);
        ns_server_free(R.srv);
        ns_server_free(u);
        ns_loop_free(R.lp);
        R.srv = NULL;
        R.lp = NULL;
    }
    pthread_mutex_lock(&srvst.lock);
    CHECK_EQ_INT(s.active, 0);
    CHECK_EQ_INT(s.accepted, s.closed);
    CHECK_EQ_INT(srvst.opens, (long)s.accepted);
    CHECK_EQ_INT(srvst.closes, srvst.opens);
    CHECK_EQ_INT(srvst.nids, 0);
    if (s.active != 0 || s.accepted != s.closed || srvst.closes != srvst.opens || srvst.nids != 0)
        fails++;
    *conns = (long)s.accepted;
    printf("%s: %.1f s, server: accepted %llu closed %llu timeouts %llu frames_too_large %llu bytes in %llu "
           "out %llu; on_close reasons: OK %ld, RESET %ld, TIMEOUT %ld, LIMIT %ld, STOPPED %ld, IO %ld\n",
           name, (now_ms() - t0) / 1000.0, (unsigned long long)s.accepted, (unsigned long long)s.closed,
           (unsigned long long)s.timeouts, (unsigned long long)s.frames_too_large, (unsigned long long)s.bytes_in,
           (unsigned long long)s.bytes_out, srvst.reasons[0], srvst.reasons[-NS_ERR_RESET],
           srvst.reasons[-NS_ERR_TIMEOUT], srvst.reasons[-NS_ERR_LIMIT], srvst.reasons[-NS_ERR_STOPPED],
           srvst.reasons[-NS_ERR_IO]);
    pthread_mutex_unlock(&srvst.lock);
    pthread_mutex_lock(&R.lock);
    *out = R.st;
    for (i = 0; i < K_NKINDS; i++) {
        CHECK_EQ_INT(R.st.bad[i], 0);
        fails += R.st.bad[i];
    }
    CHECK_EQ_INT(R.st.pushes_other, 0);
    CHECK_EQ_INT(R.st.udp_bad, 0);
    fails += R.st.pushes_other + R.st.udp_bad;
    pthread_mutex_unlock(&R.lock);
    return fails;
}

int main(int argc, char **argv)
{
    long seconds = argc > 1 ? strtol(argv[1], NULL, 10) : 0;
    int64_t warm_ms;
    long rss0, rss1, th0, th1, conns0 = 0, conns = 0, fails;
    int fd0, fd1, i;
    struct stats w, st;

    if (seconds <= 0) {
        fprintf(stderr, "usage: %s SECONDS\n", argv[0]);
        return 2;
    }
    watchdog((unsigned)seconds + 90);
    signal(SIGPIPE, SIG_IGN);
    pthread_mutex_init(&R.lock, NULL);
    memset(bigline, 'b', BIG_LINE);
    warm_ms = seconds >= 20 ? 3000 : 1000;

    fails = run_phase("warm-up", warm_ms, &w, &conns0);
    sleep_ms(200);
    rss0 = proc_status_num("VmRSS");
    fd0 = proc_fd_count();
    th0 = proc_status_num("Threads");
    printf("baseline after the warm-up (%ld connections): VmRSS %ld kB, %d descriptors, %ld threads\n", conns0, rss0,
           fd0, th0);
    fflush(stdout);

    fails += run_phase("soak", seconds * 1000, &st, &conns);
    sleep_ms(200);
    rss1 = proc_status_num("VmRSS");
    fd1 = proc_fd_count();
    th1 = proc_status_num("Threads");

    printf("soak: %ld connections churned in %ld s; faults injected by kind:\n", conns, seconds);
    for (i = 0; i < K_NKINDS; i++)
        printf("  %-24s %8ld  (%ld wrong)\n", kind_names[i], st.done[i], st.bad[i]);
    printf("  %-24s %8ld  (%ld NS_ERR_CLOSED: the connection had gone; %ld other)\n", "pushes from a thread",
           st.pushes_ok, st.pushes_closed, st.pushes_other);
    printf("  %-24s %8ld  (%ld wrong)\n", "UDP round trips", st.udp_ok, st.udp_bad);
    printf("soak: VmRSS %ld kB -> %ld kB (%+ld kB, allowed +%d); descriptors %d -> %d; threads %ld -> %ld\n", rss0,
           rss1, rss1 - rss0, RSS_SLACK_KB, fd0, fd1, th0, th1);
    CHECK(rss0 > 0 && rss1 > 0);
    CHECK(rss1 - rss0 <= RSS_SLACK_KB);
    CHECK(fd0 > 0);
    CHECK_EQ_INT(fd1, fd0);
    CHECK_EQ_INT(th1, th0);
    CHECK(conns > 0);
    for (i = 0; i < K_NKINDS; i++)
        CHECK(st.done[i] > 0); /* every kind of fault was injected */
    CHECK(st.udp_ok > 0 && st.pushes_ok > 0);
    (void)fails;
    return CHECK_DONE();
}
