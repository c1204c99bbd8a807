/* test_misuse.c - calls made where they cannot work, and every NULL:
 *  - ns_server_wait inside the server's own on_open / on_data / on_close
 *    returns NS_ERR_MISUSE (1 and 4 loop threads), and the server goes on;
 *  - ns_server_free inside on_data (1 and 4 loop threads): it returns, the
 *    server stops, no on_data starts after it (only on_close callbacks, with
 *    NS_ERR_STOPPED), no crash or deadlock, the loop threads end and the port
 *    is released (a new connection is refused within a bounded time);
 *  - ns_client_free inside that client's own on_data (own loop and a shared
 *    ns_loop): on_close follows with NS_ERR_STOPPED, no on_data after, the
 *    loop's thread ends (own loop) or keeps serving its other clients (shared);
 *  - a stale connection id gives NS_ERR_CLOSED; so does ns_conn_send after
 *    ns_conn_close, and ns_client_send on a client whose connection closed;
 *  - NULL for every pointer parameter of every function in the header gives
 *    NS_ERR_INVALID, or the documented NULL / 0 / no-op result; out-parameters
 *    are left alone on failure. */
#include "netsock.h"
#include "check.h"

static pthread_mutex_t lk = PTHREAD_MUTEX_INITIALIZER;

static long geti(long *v)
{
    long r;
    pthread_mutex_lock(&lk);
    r = *v;
    pthread_mutex_unlock(&lk);
    return r;
}

static void addi(long *v, long d)
{
    pthread_mutex_lock(&lk);
    *v += d;
    pthread_mutex_unlock(&lk);
}

static int echo_ok(int fd, const char *msg)
{
    char buf[64];
    size_t n = strlen(msg);
    if (fd < 0 || write_all_timeout(fd, msg, n, 3000) != n)
        return 0;
    return read_timeout(fd, buf, n, 3000, NULL) == n && memcmp(buf, msg, n) == 0;
}

/* 1 if a connection to 127.0.0.1:port is refused (nobody listens). */
static int port_refuses(int port)
{
    int fd = tcp_connect4(port);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    return errno == ECONNREFUSED;
}

/* ---- ns_server_wait inside callbacks ---------------------------------------------------- */

static long w_open_misuse, w_data_misuse, w_close_misuse, w_other;

static void w_on_open(ns_conn *conn, void *user)
{
    int rc = ns_server_wait(ns_conn_server(conn));
    (void)user;
    addi(rc == NS_ERR_MISUSE ? &w_open_misuse : &w_other, 1);
}

static void w_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    int rc = ns_server_wait(ns_conn_server(conn));
    (void)user;
    addi(rc == NS_ERR_MISUSE ? &w_data_misuse : &w_other, 1);
    ns_conn_send(conn, data, len); /* and it goes on serving */
}

static void w_on_close(ns_conn *conn, int reason, void *user)
{
    int rc = ns_server_wait(ns_conn_server(conn));
    (void)user;
    (void)reason;
    addi(rc == NS_ERR_MISUSE ? &w_close_misuse : &w_other, 1);
}

static void test_wait_in_callback(int threads)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    int fds[8], i, n = 8;
    char title[128];

    snprintf(title, sizeof title, "ns_server_wait inside on_open/on_data/on_close: NS_ERR_MISUSE (%d loop threads)",
             threads);
    SECTION(title);
    w_open_misuse = w_data_misuse = w_close_misuse = w_other = 0;
    CHECK_EQ_INT(ns_options_set_threads(o, (size_t)threads), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_open(o, w_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, w_on_close), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", w_on_data, NULL, o, &srv), NS_OK);
    ns_options_free(o);
    if (!srv)
        return;
    for (i = 0; i < n; i++) {
        fds[i] = tcp_connect4(ns_server_port(srv));
        CHECK(echo_ok(fds[i], "still serving"));
    }
    for (i = 0; i < n; i++)
        close(fds[i]);
    WAIT_FOR(geti(&w_close_misuse) + geti(&w_other) >= n, 3000);
    printf("MISUSE results: on_open %ld, on_data %ld, on_close %ld; anything else %ld\n", geti(&w_open_misuse),
           geti(&w_data_misuse), geti(&w_close_misuse), geti(&w_other));
    CHECK_EQ_INT(geti(&w_open_misuse), n);
    CHECK(geti(&w_data_misuse) >= n);
    CHECK_EQ_INT(geti(&w_close_misuse), n);
    CHECK_EQ_INT(geti(&w_other), 0);
    /* from another thread it is fine: stop, then wait returns */
    CHECK_EQ_INT(ns_server_stop(srv), NS_OK);
    CHECK_EQ_INT(ns_server_wait(srv), NS_OK);
    CHECK_EQ_INT(ns_server_wait(srv), NS_OK); /* again: still stopped */
    ns_server_free(srv);
}

/* ---- ns_server_free inside on_data ----------------------------------------------------------- */

static struct {
    long datas, datas_after_free, closes, closes_after_free, stopped_closes, free_returned, freeing;
} fr;

static void f_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    int after;
    (void)user;
    pthread_mutex_lock(&lk);
    after = fr.free_returned > 0;
    fr.datas++;
    if (after)
        fr.datas_after_free++;
    pthread_mutex_unlock(&lk);
    if (after)
        return;
    if (len == 3 && memcmp(data, "die", 3) == 0) {
        ns_server *srv = ns_conn_server(conn);
        addi(&fr.freeing, 1);
        ns_server_free(srv); /* cannot wait here: returns, the loop ends after us */
        addi(&fr.free_returned, 1);
        /* the connection itself is still valid for the rest of this callback */
        CHECK(ns_conn_id(conn) != 0);
        return;
    }
    ns_conn_send_frame(conn, data, len);
}

static void f_on_close(ns_conn *conn, int reason, void *user)
{
    (void)conn;
    (void)user;
    pthread_mutex_lock(&lk);
    fr.closes++;
    if (fr.free_returned)
        fr.closes_after_free++;
    if (reason == NS_ERR_STOPPED)
        fr.stopped_closes++;
    pthread_mutex_unlock(&lk);
}

static void test_free_in_on_data(int threads)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    int fds[4], i, n = 4, port, refused = 0, sent_die = 0;
    long th0 = proc_status_num("Threads"), th1 = -1, th_up;
    int64_t t0, t_refused = -1;
    char title[128];

    snprintf(title, sizeof title, "ns_server_free inside on_data (%d loop threads), others sending meanwhile",
             threads);
    SECTION(title);
    memset(&fr, 0, sizeof fr);
    CHECK_EQ_INT(ns_options_set_threads(o, (size_t)threads), NS_OK);
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_LINE), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, f_on_close), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", f_on_data, NULL, o, &srv), NS_OK);
    ns_options_free(o);
    if (!srv)
        return;
    port = ns_server_port(srv);
    th_up = proc_status_num("Threads");
    CHECK_EQ_INT(th_up, th0 + threads);
    for (i = 0; i < n; i++) {
        fds[i] = tcp_connect4(port);
        CHECK(echo_ok(fds[i], "hi\n"));
        CHECK(set_nonblock(fds[i]) == 0);
    }
    /* the others keep sending while fds[0] says "die" */
    t0 = now_ms();
    while (now_ms() < t0 + 400) {
        for (i = 1; i < n; i++)
            (void)!send(fds[i], "xxxxxxx\n", 8, MSG_NOSIGNAL);
        if (!sent_die && now_ms() >= t0 + 100)
            sent_die = send(fds[0], "die\nafter die\n", 14, MSG_NOSIGNAL) == 14; /* one segment */
        sleep_ms(1);
    }
    CHECK(sent_die);
    /* srv is gone now: not to be used. */
    WAIT_FOR(geti(&fr.free_returned) == 1, 3000);
    CHECK_EQ_INT(geti(&fr.freeing), 1);
    CHECK_EQ_INT(geti(&fr.free_returned), 1);
    /* every connection ends: the peers see EOF (or a reset, for unread input) */
    for (i = 0; i < n; i++) {
        int e = wait_eof(fds[i], 3000);
        while (e == 2) /* echoes sent before the free */
            e = wait_eof(fds[i], 3000);
        CHECK(e == 1 || e == -ECONNRESET);
    }
    WAIT_FOR(geti(&fr.closes) >= n, 3000);
    /* the port is released and the loop threads end, within bounded time */
    t0 = now_ms();
    while (now_ms() < t0 + 3000) {
        if (port_refuses(port)) {
            refused = 1;
            t_refused = now_ms() - t0;
            break;
        }
        sleep_ms(10);
    }
    WAIT_FOR(proc_status_num("Threads") == th0, 3000);
    th1 = proc_status_num("Threads");
    pthread_mutex_lock(&lk);
    printf("free inside on_data: %ld on_data in all, %ld started after the free returned; %ld on_close "
           "(%ld after the free, %ld with NS_ERR_STOPPED); new connection refused after %lld ms; threads "
           "%ld -> %ld -> %ld\n",
           fr.datas, fr.datas_after_free, fr.closes, fr.closes_after_free, fr.stopped_closes, (long long)t_refused,
           th0, th_up, th1);
    CHECK_EQ_INT(fr.datas_after_free, 0);
    CHECK_EQ_INT(fr.closes, n);
    CHECK_EQ_INT(fr.stopped_closes, n);
    pthread_mutex_unlock(&lk);
    CHECK(refused);
    CHECK_EQ_INT(th1, th0);
    for (i = 0; i < n; i++)
        close(fds[i]);
}

/* ---- ns_client_free inside the client's own on_data ------------------------------------------ */

static void e_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    ns_conn_send(conn, data, len);
}

static struct {
    ns_client *client;
    long datas, datas_after_free, closes, stopped, freed;
} cf;

static void cf_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    ns_client *c;
    (void)conn;
    (void)data;
    (void)len;
    (void)user;
    pthread_mutex_lock(&lk);
    cf.datas++;
    if (cf.freed)
        cf.datas_after_free++;
    c = cf.freed ? NULL : cf.client;
    pthread_mutex_unlock(&lk);
    if (c) {
        ns_client_free(c); /* cannot wait here: the close follows when we return */
        addi(&cf.freed, 1);
    }
}

static void cf_on_close(ns_conn *conn, int reason, void *user)
{
    (void)conn;
    (void)user;
    pthread_mutex_lock(&lk);
    cf.closes++;
    if (reason == NS_ERR_STOPPED)
        cf.stopped++;
    pthread_mutex_unlock(&lk);
}

static long other_got;
static void other_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)conn;
    (void)data;
    (void)user;
    addi(&other_got, (long)len);
}

static void test_client_free_in_on_data(int shared)
{
    ns_options *o = ns_options_new(), *so = ns_options_new();
    ns_server *srv = NULL;
    ns_loop *lp = NULL;
    ns_client *c = NULL, *other = NULL;
    char addr[64];
    long th0, th1;
    ns_stats s;

    SECTION(shared ? "ns_client_free inside its own on_data (shared ns_loop, another client on it)"
                   : "ns_client_free inside its own on_data (its own loop)");
    memset(&cf, 0, sizeof cf);
    other_got = 0;
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", e_on_data, NULL, so, &srv), NS_OK);
    ns_options_free(so);
    if (!srv)
        return;
    CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);
    th0 = proc_status_num("Threads");
    if (shared) {
        CHECK_EQ_INT(ns_loop_new(NULL, &lp), NS_OK);
        CHECK_EQ_INT(ns_options_set_loop(o, lp), NS_OK);
    }
    CHECK_EQ_INT(ns_options_set_on_close(o, cf_on_close), NS_OK);
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_LINE), NS_OK);
    CHECK_EQ_INT(ns_tcp_connect(addr, cf_on_data, NULL, o, &c), NS_OK);
    if (shared) {
        ns_options *oo = ns_options_new();
        CHECK_EQ_INT(ns_options_set_loop(oo, lp), NS_OK);
        CHECK_EQ_INT(ns_tcp_connect(addr, other_on_data, NULL, oo, &other), NS_OK);
        ns_options_free(oo);
    }
    ns_options_free(o);
    if (!c)
        return;
    pthread_mutex_lock(&lk);
    cf.client = c;
    pthread_mutex_unlock(&lk);
    /* two lines, echoed in one segment: the client frees itself on the first */
    CHECK_EQ_INT(ns_client_send(c, "one\ntwo\n", 8), NS_OK);
    WAIT_FOR(geti(&cf.freed) == 1, 3000);
    CHECK_EQ_INT(geti(&cf.freed), 1);
    WAIT_FOR(geti(&cf.closes) == 1, 3000);
    /* the server sees its end of the connection close */
    WAIT_FOR(server_stats(srv).closed >= 1, 3000);
    s = server_stats(srv);
    pthread_mutex_lock(&lk);
    printf("client freed in on_data: %ld on_data (%ld after the free), %ld on_close (%ld NS_ERR_STOPPED); "
           "server closed %llu\n",
           cf.datas, cf.datas_after_free, cf.closes, cf.stopped, (unsigned long long)s.closed);
    CHECK_EQ_INT(cf.datas_after_free, 0);
    CHECK_EQ_INT(cf.closes, 1);
    CHECK_EQ_INT(cf.stopped, 1);
    pthread_mutex_unlock(&lk);
    CHECK_EQ_INT(s.closed, 1);
    if (shared) {
        /* the shared loop serves its other client on */
        CHECK_EQ_INT(ns_client_send(other, "ping", 4), NS_OK);
        WAIT_FOR(geti(&other_got) >= 4, 3000);
        CHECK_EQ_INT(geti(&other_got), 4);
        ns_client_free(other);
        ns_loop_free(lp);
    }
    /* its loop thread ends */
    WAIT_FOR(proc_status_num("Threads") == th0, 3000);
    th1 = proc_status_num("Threads");
    printf("threads: %ld before the client(s), %ld after\n", th0, th1);
    CHECK_EQ_INT(th1, th0);
    ns_server_free(srv);
}

/* ---- stale ids, sends after close --------------------------------------------------------------- */

static struct {
    uint64_t last_id;
    long opens, closes, ok_reason;
    int rc_send1, rc_close, rc_send2, rc_frame2, rc_close2, rc_in_close, rc_frame_in_close;
} sc;

static void s_on_open(ns_conn *conn, void *user)
{
    (void)user;
    pthread_mutex_lock(&lk);
    sc.last_id = ns_conn_id(conn);
    sc.opens++;
    pthread_mutex_unlock(&lk);
}

static void s_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    if (len >= 4 && memcmp(data, "quit", 4) == 0) {
        int a = ns_conn_send(conn, "bye", 3);
        int b = ns_conn_close(conn);
        int c = ns_conn_send(conn, "more", 4);
        int d = ns_conn_send_frame(conn, "more", 4);
        int e = ns_conn_close(conn); /* twice: no harm */
        pthread_mutex_lock(&lk);
        sc.rc_send1 = a;
        sc.rc_close = b;
        sc.rc_send2 = c;
        sc.rc_frame2 = d;
        sc.rc_close2 = e;
        pthread_mutex_unlock(&lk);
        return;
    }
    ns_conn_send(conn, data, len);
}

static void s_on_close(ns_conn *conn, int reason, void *user)
{
    int a = ns_conn_send(conn, "x", 1), b = ns_conn_send_frame(conn, "x", 1);
    (void)user;
    pthread_mutex_lock(&lk);
    sc.closes++;
    if (reason == NS_OK)
        sc.ok_reason++;
    sc.rc_in_close = a;
    sc.rc_frame_in_close = b;
    pthread_mutex_unlock(&lk);
}

static long cl_closes;
static int cl_reason = 99;
static void cl_on_close(ns_conn *conn, int reason, void *user)
{
    (void)conn;
    (void)user;
    pthread_mutex_lock(&lk);
    cl_closes++;
    cl_reason = reason;
    pthread_mutex_unlock(&lk);
}

static void cl_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)conn;
    (void)data;
    (void)len;
    (void)user;
}

static void test_stale_and_closed(void)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    int fd, e;
    uint64_t id, id2;
    char buf[16], addr[64];
    size_t got;

    SECTION("stale ids, ns_conn_send after ns_conn_close, sends on a closed client");
    memset(&sc, 0, sizeof sc);
    CHECK_EQ_INT(ns_options_set_on_open(o, s_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, s_on_close), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", s_on_data, NULL, o, &srv), NS_OK);
    ns_options_free(o);
    if (!srv)
        return;
    CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);

    /* a connection that closes: its id is stale from on_close on */
    fd = tcp_connect4(ns_server_port(srv));
    CHECK(echo_ok(fd, "hello"));
    pthread_mutex_lock(&lk);
    id = sc.last_id;
    pthread_mutex_unlock(&lk);
    CHECK(id != 0);
    CHECK_EQ_INT(ns_server_send(srv, id, "live", 4), NS_OK);
    CHECK_EQ_INT(read_timeout(fd, buf, 4, 3000, NULL), 4);
    close(fd);
    WAIT_FOR(geti(&sc.closes) == 1, 3000);
    CHECK_EQ_INT(ns_server_send(srv, id, "stale", 5), NS_ERR_CLOSED);
    CHECK_EQ_INT(ns_server_send_frame(srv, id, "stale", 5), NS_ERR_CLOSED);
    CHECK_EQ_INT(ns_server_send(srv, id, NULL, 0), NS_ERR_CLOSED);
    CHECK_EQ_INT(ns_server_send(srv, 0, "never", 5), NS_ERR_CLOSED);
    CHECK_EQ_INT(ns_server_send(srv, id + 256, "not yet", 7), NS_ERR_CLOSED); /* the next id of that loop */
    CHECK_EQ_INT(ns_server_send(srv, UINT64_MAX, "never", 5), NS_ERR_CLOSED);

    /* ns_conn_close, then sends on it: NS_ERR_CLOSED; what was queued before goes out */
    fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    CHECK_EQ_INT(write_all_timeout(fd, "quit", 4, 2000), 4);
    got = read_timeout(fd, buf, sizeof buf, 3000, &e);
    CHECK_EQ_INT(got, 3);
    CHECK(memcmp(buf, "bye", 3) == 0);
    CHECK_EQ_INT(e, 1);
    WAIT_FOR(geti(&sc.closes) == 2, 3000);
    pthread_mutex_lock(&lk);
    id2 = sc.last_id;
    CHECK_EQ_INT(sc.rc_send1, NS_OK);
    CHECK_EQ_INT(sc.rc_close, NS_OK);
    CHECK_EQ_INT(sc.rc_send2, NS_ERR_CLOSED);
    CHECK_EQ_INT(sc.rc_frame2, NS_ERR_CLOSED);
    CHECK(sc.rc_close2 == NS_OK || sc.rc_close2 == NS_ERR_CLOSED);
    CHECK_EQ_INT(sc.rc_in_close, NS_ERR_CLOSED);
    CHECK_EQ_INT(sc.rc_frame_in_close, NS_ERR_CLOSED);
    CHECK_EQ_INT(sc.ok_reason, 2);
    pthread_mutex_unlock(&lk);
    CHECK_EQ_INT(ns_server_send(srv, id2, "late", 4), NS_ERR_CLOSED);
    close(fd);

    /* a client whose connection the server closed: sends give NS_ERR_CLOSED */
    {
        ns_options *co = ns_options_new();
        ns_client *c = NULL;
        int rc;
        CHECK_EQ_INT(ns_options_set_on_close(co, cl_on_close), NS_OK);
        CHECK_EQ_INT(ns_tcp_connect(addr, cl_on_data, NULL, co, &c), NS_OK);
        ns_options_free(co);
        if (c) {
            CHECK_EQ_INT(ns_client_send(c, "quit", 4), NS_OK);
            WAIT_FOR(geti(&cl_closes) == 1, 3000);
            CHECK_EQ_INT(geti(&cl_closes), 1);
            CHECK_EQ_INT(cl_reason, NS_OK);
            CHECK_EQ_INT(ns_client_send(c, "more", 4), NS_ERR_CLOSED);
            CHECK_EQ_INT(ns_client_send_frame(c, "more", 4), NS_ERR_CLOSED);
            rc = ns_client_close(c);
            CHECK(rc == NS_OK || rc == NS_ERR_CLOSED);
            CHECK(ns_client_id(c) != 0);
            ns_client_free(c);
            CHECK_EQ_INT(geti(&cl_closes), 1); /* no second on_close */
        }
    }

    /* a stopped server: sends to a live id are refused too */
    fd = tcp_connect4(ns_server_port(srv));
    CHECK(echo_ok(fd, "last"));
    pthread_mutex_lock(&lk);
    id = sc.last_id;
    pthread_mutex_unlock(&lk);
    CHECK_EQ_INT(ns_server_stop(srv), NS_OK);
    CHECK_EQ_INT(ns_server_send(srv, id, "x", 1), NS_ERR_CLOSED);
    CHECK_EQ_INT(ns_server_wait(srv), NS_OK);
    CHECK_EQ_INT(ns_server_send_frame(srv, id, "x", 1), NS_ERR_CLOSED);
    CHECK_EQ_INT(ns_server_stop(srv), NS_OK); /* repeatable */
    close(fd);
    ns_server_free(srv);
}

/* ---- NULL for every pointer parameter ------------------------------------------------------------ */

static struct {
    int done;
    int send_null_conn, send_null_data, send_null_data0, frame_null_conn, frame_null_data, frame_null_data0;
    int close_null, peer_null_conn, peer_null_buf, peer_null_buf0, set_user_null, set_user_nullptr;
    int pending_null, id_null, user_null, server_null;
    void *user_after;
} nc;

static void n_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)data;
    (void)len;
    (void)user;
    pthread_mutex_lock(&lk);
    if (!nc.done) {
        nc.send_null_conn = ns_conn_send(NULL, "x", 1);
        nc.send_null_data = ns_conn_send(conn, NULL, 1);
        nc.send_null_data0 = ns_conn_send(conn, NULL, 0);
        nc.frame_null_conn = ns_conn_send_frame(NULL, "x", 1);
        nc.frame_null_data = ns_conn_send_frame(conn, NULL, 1);
        nc.frame_null_data0 = ns_conn_send_frame(conn, NULL, 0); /* an empty line: "\n" */
        nc.close_null = ns_conn_close(NULL);
        nc.peer_null_conn = ns_conn_peer(NULL, (char[64]){0}, 64);
        nc.peer_null_buf = ns_conn_peer(conn, NULL, 64);
        nc.peer_null_buf0 = ns_conn_peer(conn, NULL, 0);
        nc.set_user_null = ns_conn_set_user(NULL, &nc);
        nc.set_user_nullptr = ns_conn_set_user(conn, NULL);
        nc.user_after = ns_conn_user(conn);
        nc.pending_null = (int)ns_conn_pending(NULL);
        nc.id_null = (int)ns_conn_id(NULL);
        nc.user_null = ns_conn_user(NULL) == NULL;
        nc.server_null = ns_conn_server(NULL) == NULL;
        nc.done = 1;
    }
    pthread_mutex_unlock(&lk);
    ns_conn_send_frame(conn, "ok", 2);
}

static void n_on_dgram(ns_server *srv, const ns_peer *from, const uint8_t *data, size_t len, void *user)
{
    (void)srv;
    (void)from;
    (void)data;
    (void)len;
    (void)user;
}

static void test_nulls(void)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL, *usrv = NULL, *sentinel_srv = (ns_server *)&nc;
    ns_client *c = NULL, *sentinel_c = (ns_client *)&nc;
    ns_loop *lp = NULL, *sentinel_lp = (ns_loop *)&nc;
    ns_stats st;
    ns_peer peer;
    char addr[64], uaddr[64], buf[64], reply[64];
    size_t rlen = 12345;
    int r;

    SECTION("NULL for every pointer parameter");
    CHECK(o != NULL);
    memset(&peer, 0, sizeof peer);
    /* free functions accept NULL */
    ns_options_free(NULL);
    ns_server_free(NULL);
    ns_client_free(NULL);
    ns_loop_free(NULL);

    /* never-NULL texts */
    CHECK(ns_last_error() != NULL);
    CHECK(ns_version() != NULL);
    CHECK(ns_strerror(NS_OK) != NULL);

    /* options setters */
    CHECK_EQ_INT(ns_options_set_backlog(NULL, 5), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_connect_timeout_ms(NULL, 5), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_drain_timeout_ms(NULL, 5), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_framing(NULL, NS_FRAMING_LINE), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_idle_timeout_ms(NULL, 5), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_keepalive(NULL, 5), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_loop(NULL, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_max_conns(NULL, 5), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_max_frame(NULL, 5), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_max_write_buffer(NULL, 5), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_nodelay(NULL, true), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_on_close(NULL, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_on_drain(NULL, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_on_open(NULL, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_threads(NULL, 1), NS_ERR_INVALID);
    CHECK(strlen(ns_last_error()) > 0);
    /* NULL callbacks and loop clear them: fine */
    CHECK_EQ_INT(ns_options_set_on_close(o, NULL), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_drain(o, NULL), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_open(o, NULL), NS_OK);
    CHECK_EQ_INT(ns_options_set_loop(o, NULL), NS_OK);

    /* loops */
    CHECK_EQ_INT(ns_loop_new(NULL, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_loop_new(o, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_loop_new(NULL, &lp), NS_OK); /* NULL options: one thread */
    ns_loop_free(lp);
    lp = sentinel_lp;
    CHECK_EQ_INT(ns_loop_new(o, NULL), NS_ERR_INVALID);
    CHECK(lp == sentinel_lp);

    /* servers */
    CHECK_EQ_INT(ns_tcp_serve(NULL, n_on_data, NULL, NULL, &srv), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", NULL, NULL, NULL, &srv), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", n_on_data, NULL, NULL, NULL), NS_ERR_INVALID);
    CHECK(srv == NULL);
    srv = sentinel_srv;
    CHECK_EQ_INT(ns_tcp_serve(NULL, n_on_data, NULL, o, &srv), NS_ERR_INVALID);
    CHECK(srv == sentinel_srv); /* out-parameters are written only on success */
    srv = NULL;
    CHECK_EQ_INT(ns_udp_serve(NULL, n_on_dgram, NULL, NULL, &usrv), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_udp_serve("127.0.0.1:0", NULL, NULL, NULL, &usrv), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_udp_serve("127.0.0.1:0", n_on_dgram, NULL, NULL, NULL), NS_ERR_INVALID);
    CHECK(usrv == NULL);
    CHECK_EQ_INT(ns_server_port(NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_server_addr(NULL, buf, sizeof buf), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_server_stop(NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_server_wait(NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_server_send(NULL, 1, "x", 1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_server_send_frame(NULL, 1, "x", 1), NS_ERR_INVALID);
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    CHECK_EQ_INT(ns_server_stats(NULL, &st), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_udp_reply(NULL, &peer, "x", 1), NS_ERR_INVALID);

    /* a live TCP server with NULL arguments */
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_LINE), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", n_on_data, NULL, o, &srv), NS_OK);
    CHECK_EQ_INT(ns_udp_serve("127.0.0.1:0", n_on_dgram, NULL, NULL, &usrv), NS_OK);
    if (!srv || !usrv)
        goto done;
    CHECK_EQ_INT(ns_server_addr(srv, NULL, 64), NS_ERR_INVALID);
    r = ns_server_addr(srv, NULL, 0);
    CHECK(r == NS_ERR_INVALID || r == NS_ERR_TRUNCATED);
    CHECK_EQ_INT(ns_server_stats(srv, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);
    CHECK_EQ_INT(ns_server_addr(usrv, uaddr, sizeof uaddr), NS_OK);

    /* the blocking clients */
    CHECK_EQ_INT(ns_tcp_send(NULL, "x", 1, reply, sizeof reply, &rlen, 1000), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tcp_send(addr, NULL, 1, reply, sizeof reply, &rlen, 1000), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tcp_send(addr, "x\n", 2, NULL, 16, &rlen, 1000), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tcp_request(NULL, "x", 1, reply, sizeof reply, &rlen, 1000, NS_FRAMING_LINE), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tcp_request(addr, NULL, 1, reply, sizeof reply, &rlen, 1000, NS_FRAMING_LINE), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tcp_request(addr, "x", 1, NULL, 16, &rlen, 1000, NS_FRAMING_LINE), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_udp_send(NULL, "x", 1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_udp_send(uaddr, NULL, 1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_udp_request(NULL, "x", 1, reply, sizeof reply, &rlen, 200), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_udp_request(uaddr, NULL, 1, reply, sizeof reply, &rlen, 200), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_udp_request(uaddr, "x", 1, NULL, 16, &rlen, 200), NS_ERR_INVALID);
    CHECK_EQ_INT(rlen, 12345); /* untouched by the failures */
    /* the allowed NULLs: reply_len, and data / reply with a zero length */
    CHECK_EQ_INT(ns_tcp_request(addr, "hi", 2, reply, sizeof reply, NULL, 3000, NS_FRAMING_LINE), NS_OK);
    CHECK_EQ_INT(ns_tcp_request(addr, NULL, 0, reply, sizeof reply, &rlen, 3000, NS_FRAMING_LINE), NS_OK);
    CHECK_EQ_INT(rlen, 2);
    CHECK_EQ_INT(ns_tcp_send(addr, NULL, 0, NULL, 0, NULL, 3000), NS_OK); /* nothing sent, nothing back */
    CHECK_EQ_INT(ns_tcp_send(addr, "x\n", 2, NULL, 0, &rlen, 3000), NS_ERR_TRUNCATED); /* "ok\n" came */
    CHECK_EQ_INT(rlen, 0);
    CHECK_EQ_INT(ns_udp_send(uaddr, NULL, 0), NS_OK);

    /* persistent clients */
    CHECK_EQ_INT(ns_tcp_connect(NULL, n_on_data, NULL, NULL, &c), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tcp_connect(addr, NULL, NULL, NULL, &c), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tcp_connect(addr, n_on_data, NULL, NULL, NULL), NS_ERR_INVALID);
    c = sentinel_c;
    CHECK_EQ_INT(ns_tcp_connect(NULL, n_on_data, NULL, NULL, &c), NS_ERR_INVALID);
    CHECK(c == sentinel_c);
    c = NULL;
    CHECK_EQ_INT(ns_client_send(NULL, "x", 1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_client_send_frame(NULL, "x", 1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_client_close(NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_client_id(NULL), 0);
    CHECK_EQ_INT(ns_tcp_connect(addr, cl_on_data, NULL, NULL, &c), NS_OK); /* NULL options: defaults */
    if (c) {
        CHECK_EQ_INT(ns_client_send(c, NULL, 1), NS_ERR_INVALID);
        CHECK_EQ_INT(ns_client_send_frame(c, NULL, 1), NS_ERR_INVALID);
        CHECK_EQ_INT(ns_client_send(c, NULL, 0), NS_OK);
        CHECK_EQ_INT(ns_client_send(c, "conn\n", 5), NS_OK); /* the server runs the ns_conn checks */
        ns_client_free(c);
    }

    /* ns_conn functions, inside the server's on_data */
    {
        int64_t end = now_ms() + 3000;
        int done = 0;
        while (!done && now_ms() < end) {
            pthread_mutex_lock(&lk);
            done = nc.done;
            pthread_mutex_unlock(&lk);
            sleep_ms(2);
        }
        CHECK(done);
    }
    pthread_mutex_lock(&lk);
    CHECK_EQ_INT(nc.send_null_conn, NS_ERR_INVALID);
    CHECK_EQ_INT(nc.send_null_data, NS_ERR_INVALID);
    CHECK_EQ_INT(nc.send_null_data0, NS_OK);
    CHECK_EQ_INT(nc.frame_null_conn, NS_ERR_INVALID);
    CHECK_EQ_INT(nc.frame_null_data, NS_ERR_INVALID);
    CHECK_EQ_INT(nc.frame_null_data0, NS_OK);
    CHECK_EQ_INT(nc.close_null, NS_ERR_INVALID);
    CHECK_EQ_INT(nc.peer_null_conn, NS_ERR_INVALID);
    CHECK_EQ_INT(nc.peer_null_buf, NS_ERR_INVALID);
    CHECK(nc.peer_null_buf0 == NS_ERR_INVALID || nc.peer_null_buf0 == NS_ERR_TRUNCATED);
    CHECK_EQ_INT(nc.set_user_null, NS_ERR_INVALID);
    CHECK_EQ_INT(nc.set_user_nullptr, NS_OK);
    CHECK(nc.user_after == NULL);
    CHECK_EQ_INT(nc.pending_null, 0);
    CHECK_EQ_INT(nc.id_null, 0);
    CHECK(nc.user_null);
    CHECK(nc.server_null);
    pthread_mutex_unlock(&lk);

    /* peers */
    CHECK_EQ_INT(ns_peer_format(NULL, buf, sizeof buf), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_peer_format(&peer, buf, sizeof buf), NS_ERR_INVALID); /* not filled in by netsock */
    CHECK_EQ_INT(ns_udp_reply(usrv, NULL, "x", 1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_udp_reply(usrv, &peer, "x", 1), NS_ERR_INVALID);

    /* the wrong kind of server */
    CHECK_EQ_INT(ns_server_send(usrv, 1, "x", 1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_server_send_frame(usrv, 1, "x", 1), NS_ERR_INVALID);

    /* logging: NULL callback turns it off */
    CHECK_EQ_INT(ns_set_log(NULL, NS_LOG_DEBUG), NS_OK);
    CHECK_EQ_INT(ns_set_log(NULL, NS_LOG_OFF), NS_OK);

done:
    ns_server_free(srv);
    ns_server_free(usrv);
    ns_options_free(o);
}

int main(void)
{
    int64_t t0 = now_ms();
    watchdog(60);
    signal(SIGPIPE, SIG_IGN);
    test_wait_in_callback(1);
    test_wait_in_callback(4);
    test_free_in_on_data(1);
    test_free_in_on_data(4);
    test_client_free_in_on_data(0);
    test_client_free_in_on_data(1);
    test_stale_and_closed();
    test_nulls();
    printf("total %.1f s\n", (now_ms() - t0) / 1000.0);
    return CHECK_DONE();
}
