/* test_clients.c - persistent clients: 100 LEN32 clients sharing one ns_loop
 * exchange several framed messages each with a framed echo server (sends from
 * the main thread, replies through each client's on_data), then
 * ns_client_free closes each with exactly one on_close; a client on a loop of
 * its own (ns_client_close, its thread goes away with it); refused and bad
 * connects; the server going away (on_close, then NS_ERR_CLOSED); reconnecting
 * by free + connect to a new server; ns_client_free while the client's on_close
 * still runs on a shared loop waits for it. */
#include "netsock.h"
#include "check.h"

#define NCLI 100
#define NMSG 5
#define LOOP_THREADS 2
#define MAXTH 16

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t main_thread;

/* ---- the server: echo (framed in its framing), counting closes ------------------- */

static int srv_opens, srv_closes;

static void s_on_open(ns_conn *conn, void *user)
{
    (void)conn;
    (void)user;
    pthread_mutex_lock(&lock);
    srv_opens++;
    pthread_mutex_unlock(&lock);
}

static void s_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    CHECK_EQ_INT(ns_conn_send_frame(conn, data, len), NS_OK);
}

static void s_on_close(ns_conn *conn, int reason, void *user)
{
    (void)conn;
    (void)reason;
    (void)user;
    pthread_mutex_lock(&lock);
    srv_closes++;
    pthread_mutex_unlock(&lock);
}

static int get_int(int *p)
{
    return locked_int(&lock, p);
}

static ns_server *serve(int framing)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    CHECK(o != NULL);
    if (!o)
        return NULL;
    CHECK_EQ_INT(ns_options_set_framing(o, framing), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_open(o, s_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, s_on_close), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", s_on_data, NULL, o, &srv), NS_OK);
    ns_options_free(o);
    return srv;
}

/* ---- client callbacks: one cst per client (the user pointer) ---------------------- */

struct cst {
    int idx;
    uint64_t open_id;
    int opens, closes, reason;
    int data_before_open, data_after_close;
    int nrep;
    int order_err;
    char raw[256];
    size_t raw_got;
    pthread_t th;
    int th_set, th_err;
};

static pthread_t seen[MAXTH];
static int nseen, on_main;

static void c_thread(struct cst *c)
{
    /* caller holds lock */
    int i, found = 0;
    pthread_t self = pthread_self();
    if (!c->th_set) {
        c->th = self;
        c->th_set = 1;
    } else if (!pthread_equal(c->th, self)) {
        c->th_err++;
    }
    for (i = 0; i < nseen; i++)
        if (pthread_equal(seen[i], self))
            found = 1;
    if (!found && nseen < MAXTH)
        seen[nseen++] = self;
    if (pthread_equal(self, main_thread))
        on_main++;
}

static void c_on_open(ns_conn *conn, void *user)
{
    struct cst *c = (struct cst *)user;
    pthread_mutex_lock(&lock);
    c_thread(c);
    c->opens++;
    c->open_id = ns_conn_id(conn);
    pthread_mutex_unlock(&lock);
}

static void c_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct cst *c = (struct cst *)user;
    char want[64];
    (void)conn;
    pthread_mutex_lock(&lock);
    c_thread(c);
    if (!c->opens)
        c->data_before_open++;
    if (c->closes)
        c->data_after_close++;
    snprintf(want, sizeof want, "client %d message %d", c->idx, c->nrep);
    if (len != strlen(want) || memcmp(data, want, len) != 0)
        c->order_err++;
    c->nrep++;
    if (c->raw_got + len <= sizeof c->raw) {
        memcpy(c->raw + c->raw_got, data, len);
        c->raw_got += len;
    }
    pthread_mutex_unlock(&lock);
}

static void c_on_close(ns_conn *conn, int reason, void *user)
{
    struct cst *c = (struct cst *)user;
    CHECK_EQ_INT(ns_conn_send(conn, "late", 4), NS_ERR_CLOSED);
    pthread_mutex_lock(&lock);
    c_thread(c);
    c->closes++;
    c->reason = reason;
    pthread_mutex_unlock(&lock);
}

static ns_options *client_opts(int framing, const ns_loop *lp)
{
    ns_options *o = ns_options_new();
    CHECK(o != NULL);
    if (!o)
        return NULL;
    CHECK_EQ_INT(ns_options_set_framing(o, framing), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_open(o, c_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, c_on_close), NS_OK);
    CHECK_EQ_INT(ns_options_set_connect_timeout_ms(o, 5000), NS_OK);
    if (lp)
        CHECK_EQ_INT(ns_options_set_loop(o, lp), NS_OK);
    return o;
}

/* ---- 100 clients on one loop ------------------------------------------------------ */

static int total_replies(struct cst *cs, int n)
{
    int i, t = 0;
    pthread_mutex_lock(&lock);
    for (i = 0; i < n; i++)
        t += cs[i].nrep;
    pthread_mutex_unlock(&lock);
    return t;
}

static void test_shared_loop(void)
{
    static struct cst cs[NCLI];
    static ns_client *cl[NCLI];
    ns_server *srv;
    ns_options *lo, *o;
    ns_loop *lp = NULL;
    char addr[64];
    int i, k, connected = 0;
    long threads0, threads1;

    SECTION("100 LEN32 clients on one 2-thread ns_loop");
    srv = serve(NS_FRAMING_LEN32);
    if (!srv)
        return;
    CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);
    lo = ns_options_new();
    CHECK(lo != NULL);
    CHECK_EQ_INT(ns_options_set_threads(lo, LOOP_THREADS), NS_OK);
    CHECK_EQ_INT(ns_loop_new(lo, &lp), NS_OK);
    ns_options_free(lo);
    CHECK(lp != NULL);
    if (!lp) {
        ns_server_free(srv);
        return;
    }
    o = client_opts(NS_FRAMING_LEN32, lp);
    threads0 = proc_status_num("Threads");
    pthread_mutex_lock(&lock);
    nseen = on_main = 0;
    pthread_mutex_unlock(&lock);
    for (i = 0; i < NCLI; i++) {
        memset(&cs[i], 0, sizeof cs[i]);
        cs[i].idx = i;
        cl[i] = NULL;
        CHECK_EQ_INT(ns_tcp_connect(addr, c_on_data, &cs[i], o, &cl[i]), NS_OK);
        if (cl[i])
            connected++;
    }
    CHECK_EQ_INT(connected, NCLI);
    threads1 = proc_status_num("Threads");
    printf("threads: %ld before the clients, %ld with %d clients\n", threads0, threads1, NCLI);
    CHECK(threads0 > 0 && threads1 >= threads0 && threads1 < threads0 + 5); /* no thread each */

    /* send from the main thread: every message of every client, in order */
    for (k = 0; k < NMSG; k++)
        for (i = 0; i < NCLI; i++) {
            char msg[64];
            int n = snprintf(msg, sizeof msg, "client %d message %d", i, k);
            if (cl[i])
                CHECK_EQ_INT(ns_client_send_frame(cl[i], msg, (size_t)n), NS_OK);
        }
    WAIT_FOR(total_replies(cs, NCLI) >= NCLI * NMSG, 15000);
    CHECK_EQ_INT(total_replies(cs, NCLI), NCLI * NMSG);

    pthread_mutex_lock(&lock);
    {
        int ok = 0, ids = 0;
        for (i = 0; i < NCLI; i++) {
            struct cst *c = &cs[i];
            if (c->opens == 1 && c->closes == 0 && c->nrep == NMSG && c->order_err == 0 &&
                c->th_err == 0 && c->data_before_open == 0)
                ok++;
            else if (ok + 3 > i)
                fprintf(stderr, "client %d: opens %d closes %d replies %d order_err %d th_err %d\n",
                        i, c->opens, c->closes, c->nrep, c->order_err, c->th_err);
            if (cl[i] && ns_client_id(cl[i]) == c->open_id && c->open_id != 0)
                ids++;
        }
        CHECK_EQ_INT(ok, NCLI);
        CHECK_EQ_INT(ids, NCLI); /* ns_client_id is the id its callbacks see */
        printf("client callbacks ran on %d threads\n", nseen);
        CHECK(nseen >= 1 && nseen <= LOOP_THREADS);
        CHECK_EQ_INT(on_main, 0);
    }
    pthread_mutex_unlock(&lock);
    CHECK_EQ_INT(get_int(&srv_opens), NCLI);

    /* free: each gets exactly one on_close (NS_ERR_STOPPED) before free returns */
    {
        int bad = 0;
        for (i = 0; i < NCLI; i++) {
            ns_client_free(cl[i]);
            pthread_mutex_lock(&lock);
            if (cs[i].closes != 1 || cs[i].reason != NS_ERR_STOPPED) {
                if (bad < 3)
                    fprintf(stderr, "client %d after free: closes %d reason %d\n", i, cs[i].closes,
                            cs[i].reason);
                bad++;
            }
            pthread_mutex_unlock(&lock);
        }
        CHECK_EQ_INT(bad, 0);
    }
    WAIT_FOR(get_int(&srv_closes) >= NCLI, 5000);
    CHECK_EQ_INT(get_int(&srv_closes), NCLI);
    pthread_mutex_lock(&lock);
    {
        int once = 0;
        for (i = 0; i < NCLI; i++)
            once += cs[i].closes == 1 && cs[i].data_after_close == 0;
        CHECK_EQ_INT(once, NCLI);
    }
    pthread_mutex_unlock(&lock);
    ns_loop_free(lp);
    ns_options_free(o); /* the options held the loop too: now its threads end */
    {
        ns_stats s = server_stats(srv);
        CHECK_EQ_INT(s.accepted, NCLI);
        CHECK_EQ_INT(s.closed, NCLI);
    }
    WAIT_FOR(proc_status_num("Threads") <= threads0 - LOOP_THREADS, 3000);
    CHECK_EQ_INT(proc_status_num("Threads"), threads0 - LOOP_THREADS);
    ns_server_free(srv);
}

/* ---- a client on a loop of its own; ns_client_close --------------------------------- */

static void test_own_loop(void)
{
    static struct cst c;
    ns_server *srv;
    ns_options *o;
    ns_client *cl = NULL;
    char addr[64];
    long threads0, threads1;

    SECTION("a client without a shared loop; ns_client_close");
    pthread_mutex_lock(&lock);
    srv_opens = srv_closes = 0;
    pthread_mutex_unlock(&lock);
    srv = serve(NS_FRAMING_LEN32);
    if (!srv)
        return;
    CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);
    o = client_opts(NS_FRAMING_LEN32, NULL);
    memset(&c, 0, sizeof c);
    c.idx = 7;
    threads0 = proc_status_num("Threads");
    CHECK_EQ_INT(ns_tcp_connect(addr, c_on_data, &c, o, &cl), NS_OK);
    ns_options_free(o); /* copied by the connect */
    threads1 = proc_status_num("Threads");
    CHECK_EQ_INT(threads1, threads0 + 1); /* a loop thread of its own */
    CHECK(cl != NULL);
    if (!cl) {
        ns_server_free(srv);
        return;
    }
    CHECK_EQ_INT(ns_client_send_frame(cl, "client 7 message 0", 18), NS_OK);
    CHECK_EQ_INT(ns_client_send_frame(cl, "client 7 message 1", 18), NS_OK);
    /* close once what was sent is written: the server gets both messages */
    CHECK_EQ_INT(ns_client_close(cl), NS_OK);
    WAIT_FOR(get_int(&c.closes) >= 1, 5000);
    pthread_mutex_lock(&lock);
    CHECK_EQ_INT(c.opens, 1);
    CHECK_EQ_INT(c.closes, 1);
    CHECK_EQ_INT(c.reason, NS_OK);
    CHECK_EQ_INT(c.order_err, 0);
    CHECK(!pthread_equal(c.th, main_thread));
    pthread_mutex_unlock(&lock);
    {
        ns_stats s;
        WAIT_FOR(get_int(&srv_closes) >= 1, 5000);
        s = server_stats(srv);
        CHECK_EQ_INT(s.bytes_in, 2 * (4 + 18)); /* both frames were written before the close */
    }
    CHECK_EQ_INT(ns_client_send(cl, "x", 1), NS_ERR_CLOSED);
    CHECK_EQ_INT(ns_client_send_frame(cl, "x", 1), NS_ERR_CLOSED);
    {
        int rc = ns_client_close(cl); /* closing again: harmless */
        CHECK(rc == NS_ERR_CLOSED || rc == NS_OK);
    }
    ns_client_free(cl);
    CHECK_EQ_INT(get_int(&c.closes), 1); /* no second on_close */
    WAIT_FOR(proc_status_num("Threads") <= threads0, 3000);
    CHECK_EQ_INT(proc_status_num("Threads"), threads0); /* its thread went with it */
    ns_server_free(srv);
}

/* ---- failures to connect ---------------------------------------------------------------- */

static void test_connect_errors(void)
{
    static struct cst c;
    ns_client *sentinel = (ns_client *)&c; /* never a real client: checks *out is untouched */
    ns_client *cl = sentinel;
    char addr[64];
    ns_loop *lp = NULL;

    SECTION("ns_tcp_connect errors; NULL handles");
    snprintf(addr, sizeof addr, "127.0.0.1:%d", free_port4(SOCK_STREAM));
    CHECK_EQ_INT(ns_tcp_connect(addr, c_on_data, &c, NULL, &cl), NS_ERR_REFUSED);
    CHECK(cl == sentinel);
    CHECK_EQ_INT(ns_tcp_connect("no-port-here", c_on_data, &c, NULL, &cl), NS_ERR_ADDR);
    CHECK(cl == sentinel);
    CHECK_EQ_INT(ns_tcp_connect(addr, NULL, &c, NULL, &cl), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tcp_connect(NULL, c_on_data, &c, NULL, &cl), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tcp_connect(addr, c_on_data, &c, NULL, NULL), NS_ERR_INVALID);
    CHECK(cl == sentinel);
    CHECK_EQ_INT(get_int(&c.opens), 0);
    CHECK_EQ_INT(get_int(&c.closes), 0);

    CHECK_EQ_INT(ns_client_send(NULL, "x", 1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_client_send_frame(NULL, "x", 1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_client_close(NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_client_id(NULL), 0);
    ns_client_free(NULL);
    ns_loop_free(NULL);
    CHECK_EQ_INT(ns_loop_new(NULL, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_loop_new(NULL, &lp), NS_OK);
    CHECK(lp != NULL);
    ns_loop_free(lp);
}

/* ---- the server goes away; reconnect ------------------------------------------------------ */

static void test_server_gone_and_reconnect(void)
{
    static struct cst c;
    ns_server *srv, *srv2;
    ns_client *cl = NULL;
    ns_options *o;
    char addr[64];

    SECTION("server stopped: on_close, then NS_ERR_CLOSED; reconnect to a new server");
    srv = serve(NS_FRAMING_LINE);
    if (!srv)
        return;
    CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);
    o = client_opts(NS_FRAMING_LINE, NULL);
    memset(&c, 0, sizeof c);
    c.idx = 3;
    CHECK_EQ_INT(ns_tcp_connect(addr, c_on_data, &c, o, &cl), NS_OK);
    if (!cl) {
        ns_options_free(o);
        ns_server_free(srv);
        return;
    }
    CHECK_EQ_INT(ns_client_send_frame(cl, "client 3 message 0", 18), NS_OK);
    WAIT_FOR(get_int(&c.nrep) >= 1, 5000);
    CHECK_EQ_INT(get_int(&c.nrep), 1);

    ns_server_free(srv); /* the server goes away under the client */
    WAIT_FOR(get_int(&c.closes) >= 1, 5000);
    pthread_mutex_lock(&lock);
    CHECK_EQ_INT(c.closes, 1);
    CHECK(c.reason == NS_OK || c.reason == NS_ERR_RESET);
    pthread_mutex_unlock(&lock);
    CHECK_EQ_INT(ns_client_send(cl, "client 3 message 1\n", 19), NS_ERR_CLOSED);
    CHECK_EQ_INT(ns_client_send_frame(cl, "client 3 message 1", 18), NS_ERR_CLOSED);

    /* reconnect: free, then connect again (the new server has a new port) */
    srv2 = serve(NS_FRAMING_LINE);
    if (!srv2) {
        ns_client_free(cl);
        ns_options_free(o);
        return;
    }
    CHECK_EQ_INT(ns_server_addr(srv2, addr, sizeof addr), NS_OK);
    ns_client_free(cl);
    CHECK_EQ_INT(get_int(&c.closes), 1); /* closed already: no second on_close */
    pthread_mutex_lock(&lock);
    memset(&c, 0, sizeof c);
    c.idx = 4;
    pthread_mutex_unlock(&lock);
    cl = NULL;
    CHECK_EQ_INT(ns_tcp_connect(addr, c_on_data, &c, o, &cl), NS_OK);
    if (cl) {
        CHECK_EQ_INT(ns_client_send_frame(cl, "client 4 message 0", 18), NS_OK);
        CHECK_EQ_INT(ns_client_send(cl, "client 4 message 1\n", 19), NS_OK);
        WAIT_FOR(get_int(&c.nrep) >= 2, 5000);
        pthread_mutex_lock(&lock);
        CHECK_EQ_INT(c.nrep, 2);
        CHECK_EQ_INT(c.order_err, 0);
        CHECK_EQ_INT(c.opens, 1);
        CHECK_EQ_INT(c.closes, 0);
        pthread_mutex_unlock(&lock);
        ns_client_free(cl);
        pthread_mutex_lock(&lock);
        CHECK_EQ_INT(c.closes, 1);
        CHECK_EQ_INT(c.reason, NS_ERR_STOPPED);
        pthread_mutex_unlock(&lock);
    }
    ns_options_free(o);
    ns_server_free(srv2);
}

/* ---- a client's own limits and timeouts ----------------------------------------------- */

static void test_client_limits(void)
{
    static struct cst c, d;
    ns_server *srv;
    ns_options *o;
    ns_client *cl = NULL, *idle = NULL;
    char addr[64];
    int64_t t0;

    SECTION("client options: max_write_buffer, max_frame, idle_timeout_ms");
    srv = serve(NS_FRAMING_LEN32);
    if (!srv)
        return;
    CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);
    o = client_opts(NS_FRAMING_LEN32, NULL);
    CHECK_EQ_INT(ns_options_set_max_write_buffer(o, 64), NS_OK);
    CHECK_EQ_INT(ns_options_set_max_frame(o, 20), NS_OK);
    memset(&c, 0, sizeof c);
    c.idx = 9;
    CHECK_EQ_INT(ns_tcp_connect(addr, c_on_data, &c, o, &cl), NS_OK);
    if (cl) {
        /* one send over the write buffer is taken when nothing waits, and one that would pile
           up past it is refused at once (never accepted and dropped later): test_owned */
        CHECK_EQ_INT(ns_client_send_frame(cl, "client 9 message 0", 18), NS_OK);
        WAIT_FOR(get_int(&c.nrep) >= 1, 5000);
        pthread_mutex_lock(&lock);
        CHECK_EQ_INT(c.nrep, 1);
        CHECK_EQ_INT(c.order_err, 0); /* the first reply is message 0 */
        pthread_mutex_unlock(&lock);
        /* a 21-byte reply is over the client's 20-byte frame limit */
        CHECK_EQ_INT(ns_client_send_frame(cl, "client 9 message 1..", 20), NS_OK); /* echo: at it */
        CHECK_EQ_INT(ns_client_send_frame(cl, "client 9 message 2...", 21), NS_OK);
        WAIT_FOR(get_int(&c.closes) >= 1, 5000);
        pthread_mutex_lock(&lock);
        CHECK_EQ_INT(c.closes, 1);
        CHECK_EQ_INT(c.reason, NS_ERR_LIMIT);
        CHECK_EQ_INT(c.nrep, 2); /* message 1 came through whole */
        pthread_mutex_unlock(&lock);
        CHECK_EQ_INT(ns_client_send(cl, "x", 1), NS_ERR_CLOSED);
        ns_client_free(cl);
        CHECK_EQ_INT(get_int(&c.closes), 1);
    }
    ns_options_free(o);

    o = client_opts(NS_FRAMING_LEN32, NULL);
    CHECK_EQ_INT(ns_options_set_idle_timeout_ms(o, 200), NS_OK);
    memset(&d, 0, sizeof d);
    d.idx = 10;
    t0 = now_ms();
    CHECK_EQ_INT(ns_tcp_connect(addr, c_on_data, &d, o, &idle), NS_OK);
    ns_options_free(o);
    if (idle) {
        int64_t dt;
        WAIT_FOR(get_int(&d.closes) >= 1, 3000);
        dt = now_ms() - t0;
        pthread_mutex_lock(&lock);
        CHECK_EQ_INT(d.closes, 1);
        CHECK_EQ_INT(d.reason, NS_ERR_TIMEOUT);
        pthread_mutex_unlock(&lock);
        CHECK(dt >= 150 && dt <= 2000);
        ns_client_free(idle);
        CHECK_EQ_INT(get_int(&d.closes), 1);
    }
    ns_server_free(srv);
}

/* ---- ns_client_free while the client's on_close runs, on a shared loop ----------- */

struct slow_close {
    int opened, in_close, freed, close_done;
    int freed_before_done; /* ns_client_free had returned before on_close did */
};

static void sc_on_open(ns_conn *conn, void *user)
{
    (void)conn;
    struct slow_close *sc = user;
    pthread_mutex_lock(&lock);
    sc->opened = 1;
    pthread_mutex_unlock(&lock);
}

static void sc_on_close(ns_conn *conn, int reason, void *user)
{
    (void)conn;
    (void)reason;
    struct slow_close *sc = user;
    pthread_mutex_lock(&lock);
    sc->in_close = 1;
    pthread_mutex_unlock(&lock);
    sleep_ms(200); /* work in on_close that uses `user`, while the main thread frees */
    pthread_mutex_lock(&lock);
    sc->freed_before_done = sc->freed;
    sc->close_done = 1;
    pthread_mutex_unlock(&lock);
}

static void sc_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)conn;
    (void)data;
    (void)len;
    (void)user;
}

/* The header: no callback of a client runs after ns_client_free returns, also when the
 * connection had already closed and its on_close is still running on a shared loop. */
static void test_free_during_close(void)
{
    SECTION("ns_client_free while its on_close runs (shared loop)");
    ns_server *srv = serve(NS_FRAMING_RAW);
    char addr[64];
    CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);
    ns_loop *lp = NULL;
    CHECK_EQ_INT(ns_loop_new(NULL, &lp), NS_OK);
    ns_options *o = ns_options_new();
    CHECK_EQ_INT(ns_options_set_loop(o, lp), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_open(o, sc_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, sc_on_close), NS_OK);
    struct slow_close sc = {0};
    ns_client *cl = NULL;
    CHECK_EQ_INT(ns_tcp_connect(addr, sc_on_data, &sc, o, &cl), NS_OK);
    WAIT_FOR(get_int(&sc.opened), 5000);
    CHECK_EQ_INT(ns_client_close(cl), NS_OK);
    WAIT_FOR(get_int(&sc.in_close), 5000);
    CHECK(get_int(&sc.in_close));
    ns_client_free(cl);
    pthread_mutex_lock(&lock);
    sc.freed = 1;
    int done = sc.close_done;
    pthread_mutex_unlock(&lock);
    CHECK(done);
    sleep_ms(250);
    CHECK_EQ_INT(get_int(&sc.freed_before_done), 0);
    ns_options_free(o);
    ns_loop_free(lp);
    ns_server_free(srv);
}

int main(void)
{
    watchdog(60);
    main_thread = pthread_self();
    test_shared_loop();
    test_own_loop();
    test_connect_errors();
    test_server_gone_and_reconnect();
    test_client_limits();
    test_free_during_close();
    return CHECK_DONE();
}
