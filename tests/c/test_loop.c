/* test_loop.c - the loop as a thing of its own (issue 13, first part), through the C API:
 *
 *  - a whole program on the main thread: ns_loop_run on a run_in_wait loop with a client on
 *    it, timers and posted tasks, every callback on the main thread, ended by ns_loop_stop
 *    from a timer;
 *  - timers: one-shot, repeating, stopped inside their callback, stopped from another thread,
 *    ids never 0, NS_ERR_CLOSED for unknown and finished ids;
 *  - posts: order from one thread, posts from the loop's own callbacks, NS_ERR_CLOSED once
 *    stopped, tasks still queued at the stop run then;
 *  - a server's loop (ns_server_loop): its timers run on the thread of its callbacks;
 *  - ns_server_post and ns_server_close by id from other threads while connections churn;
 *  - ns_conn_pause / ns_conn_resume against a peer that floods;
 *  - ns_conn_set_timer: a heartbeat, re-armed in on_timer, cancelled with 0;
 *  - the argument rules (NULL, ns_loop_run inside the loop's own callback).
 */
#include "check.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t main_thread;

static int get_int(int *p)
{
    return locked_int(&lock, p);
}

static void add_int(int *p, int n)
{
    pthread_mutex_lock(&lock);
    *p += n;
    pthread_mutex_unlock(&lock);
}

/* ---- an echo server (a thread of its own) for the clients ---------------------------- */

static void echo_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    ns_conn_send(conn, data, len);
}

/* ---- 1. a whole program on the main thread ---------------------------------------------- */

struct one {
    ns_loop *lp;
    ns_client *cl;
    int ticks, posts, replies, off_main, misuse;
    uint64_t tick_id;
};
static struct one one;

static void one_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)conn, (void)data, (void)user;
    if (!pthread_equal(pthread_self(), main_thread))
        one.off_main++;
    one.replies += (int)len;
}

static void one_post(void *user)
{
    if (!pthread_equal(pthread_self(), main_thread))
        one.off_main++;
    one.posts += (int)(intptr_t)user;
}

static void one_stop(uint64_t id, void *user)
{
    (void)id, (void)user;
    if (!pthread_equal(pthread_self(), main_thread))
        one.off_main++;
    /* waiting for the loop inside its own callback would deadlock */
    if (ns_loop_run(one.lp) == NS_ERR_MISUSE)
        one.misuse++;
    CHECK_EQ_INT(ns_loop_stop(one.lp), NS_OK);
}

static void one_tick(uint64_t id, void *user)
{
    (void)user;
    if (!pthread_equal(pthread_self(), main_thread))
        one.off_main++;
    CHECK(id == one.tick_id);
    one.ticks++;
    /* a post from the loop's own thread, and a send on the client */
    CHECK_EQ_INT(ns_loop_post(one.lp, one_post, (void *)(intptr_t)10), NS_OK);
    CHECK_EQ_INT(ns_client_send(one.cl, "ping", 4), NS_OK);
    if (one.ticks == 5) {
        uint64_t stopper;
        CHECK_EQ_INT(ns_timer_stop(one.lp, id), NS_OK); /* inside its own callback */
        CHECK_EQ_INT(ns_timer_start(one.lp, 30, 0, one_stop, NULL, &stopper), NS_OK);
    }
}

static void test_one_thread(void)
{
    ns_options *o = ns_options_new();
    ns_server *echo = NULL;
    char addr[64];
    int64_t t0;

    SECTION("one thread: ns_loop_run with a client, timers and posts, all on the main thread");
    memset(&one, 0, sizeof one);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", echo_on_data, NULL, NULL, &echo), NS_OK);
    if (!echo)
        return;
    CHECK_EQ_INT(ns_server_addr(echo, addr, sizeof addr), NS_OK);
    CHECK_EQ_INT(ns_options_set_run_in_wait(o, 1), NS_OK);
    CHECK_EQ_INT(ns_loop_new(o, &one.lp), NS_OK);
    CHECK_EQ_INT(ns_options_set_loop(o, one.lp), NS_OK);
    CHECK_EQ_INT(ns_tcp_connect(addr, one_on_data, NULL, o, &one.cl), NS_OK);
    CHECK_EQ_INT(ns_timer_start(one.lp, 10, 20, one_tick, NULL, &one.tick_id), NS_OK);
    CHECK(one.tick_id != 0);
    CHECK_EQ_INT(ns_loop_post(one.lp, one_post, (void *)(intptr_t)1), NS_OK); /* before run */
    t0 = now_ms();
    CHECK_EQ_INT(ns_loop_run(one.lp), NS_OK);
    printf("ran %lld ms: %d ticks, posts %d, %d reply bytes\n", (long long)(now_ms() - t0), one.ticks,
           one.posts, one.replies);
    CHECK_EQ_INT(one.ticks, 5);
    CHECK_EQ_INT(one.posts, 1 + 5 * 10);
    CHECK_EQ_INT(one.replies, 5 * 4);
    CHECK_EQ_INT(one.off_main, 0);
    CHECK_EQ_INT(one.misuse, 1);
    /* stopped: no more posts or timers */
    CHECK_EQ_INT(ns_loop_post(one.lp, one_post, NULL), NS_ERR_CLOSED);
    {
        uint64_t id = 0;
        CHECK_EQ_INT(ns_timer_start(one.lp, 1, 0, one_tick, NULL, &id), NS_ERR_CLOSED);
        CHECK_EQ_INT(id, 0);
    }
    CHECK_EQ_INT(ns_client_send(one.cl, "x", 1), NS_ERR_CLOSED);
    ns_client_free(one.cl);
    ns_options_free(o);
    ns_loop_free(one.lp);
    ns_server_free(echo);
}

/* ---- 2. timers and 3. posts on a loop with a thread of its own --------------------------- */

struct tstate {
    int once, rep, self_stopped, slow_runs, ordered, disorder, last, null_runs;
    uint64_t rep_id, self_id;
};
static struct tstate ts;

static void t_once(uint64_t id, void *user)
{
    (void)id, (void)user;
    add_int(&ts.once, 1);
}

static void t_rep(uint64_t id, void *user)
{
    (void)id, (void)user;
    add_int(&ts.rep, 1);
}

static void t_self(uint64_t id, void *user)
{
    ns_loop *lp = (ns_loop *)user;
    add_int(&ts.self_stopped, 1);
    CHECK_EQ_INT(ns_timer_stop(lp, id), NS_OK);
    CHECK_EQ_INT(ns_timer_stop(lp, id), NS_ERR_CLOSED);
}

static void t_slow(uint64_t id, void *user)
{
    (void)id, (void)user;
    add_int(&ts.slow_runs, 1);
}

static void p_seq(void *user)
{
    int n = (int)(intptr_t)user;
    pthread_mutex_lock(&lock);
    if (n != ts.last + 1)
        ts.disorder++;
    ts.last = n;
    ts.ordered++;
    pthread_mutex_unlock(&lock);
}

static void *poster(void *arg)
{
    ns_loop *lp = (ns_loop *)arg;
    int i;
    for (i = 1; i <= 2000; i++)
        CHECK_EQ_INT(ns_loop_post(lp, p_seq, (void *)(intptr_t)i), NS_OK);
    return NULL;
}

static void test_timers_and_posts(void)
{
    ns_loop *lp = NULL;
    uint64_t a = 0, b = 0, slow = 0;
    pthread_t th;
    int rep_at_stop;

    SECTION("timers: one-shot, repeating, stopped inside and from another thread; posts in order");
    memset(&ts, 0, sizeof ts);
    CHECK_EQ_INT(ns_loop_new(NULL, &lp), NS_OK);
    if (!lp)
        return;
    CHECK_EQ_INT(ns_timer_start(lp, 30, 0, t_once, NULL, &a), NS_OK);
    CHECK_EQ_INT(ns_timer_start(lp, 5, 10, t_rep, NULL, &ts.rep_id), NS_OK);
    CHECK_EQ_INT(ns_timer_start(lp, 5, 5, t_self, lp, &ts.self_id), NS_OK);
    CHECK_EQ_INT(ns_timer_start(lp, 5000, 0, t_slow, NULL, &slow), NS_OK);
    CHECK(a != 0 && ts.rep_id != 0 && ts.self_id != 0 && slow != 0);
    CHECK(a != ts.rep_id && ts.rep_id != ts.self_id && ts.self_id != slow);
    CHECK_EQ_INT(get_int(&ts.once), 0); /* not before its time */
    WAIT_FOR(get_int(&ts.once) == 1 && get_int(&ts.rep) >= 5, 3000);
    CHECK_EQ_INT(get_int(&ts.once), 1);
    CHECK(get_int(&ts.rep) >= 5);
    CHECK_EQ_INT(ns_timer_stop(lp, a), NS_ERR_CLOSED); /* a one-shot that ran */
    CHECK_EQ_INT(ns_timer_stop(lp, ts.rep_id), NS_OK); /* from this (another) thread */
    rep_at_stop = get_int(&ts.rep);
    sleep_ms(60);
    CHECK(get_int(&ts.rep) <= rep_at_stop); /* no run started after the stop returned */
    CHECK_EQ_INT(ns_timer_stop(lp, ts.rep_id), NS_ERR_CLOSED);
    CHECK_EQ_INT(get_int(&ts.self_stopped), 1); /* stopped in its callback: ran once */
    CHECK_EQ_INT(ns_timer_stop(lp, 0), NS_ERR_CLOSED);
    CHECK_EQ_INT(ns_timer_stop(lp, 999999), NS_ERR_CLOSED);
    CHECK_EQ_INT(ns_timer_stop(lp, slow), NS_OK); /* a long one, stopped before it ran */
    CHECK_EQ_INT(get_int(&ts.slow_runs), 0);
    b = 0;
    CHECK_EQ_INT(ns_timer_start(lp, 0, 0, t_once, NULL, &b), NS_OK); /* after 0 ms: next turn */
    WAIT_FOR(get_int(&ts.once) == 2, 2000);
    CHECK_EQ_INT(get_int(&ts.once), 2);

    /* 2000 posts from one thread run in order */
    CHECK_EQ_INT(pthread_create(&th, NULL, poster, lp), 0);
    pthread_join(th, NULL);
    WAIT_FOR(get_int(&ts.ordered) == 2000, 5000);
    CHECK_EQ_INT(get_int(&ts.ordered), 2000);
    CHECK_EQ_INT(get_int(&ts.disorder), 0);
    ns_loop_free(lp);
}

/* ---- 4. a server's loop ------------------------------------------------------------------ */

static pthread_t srv_cb_thread, srv_timer_thread;
static int srv_seen_cb, srv_seen_timer;

static void srv_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    pthread_mutex_lock(&lock);
    srv_cb_thread = pthread_self();
    srv_seen_cb = 1;
    pthread_mutex_unlock(&lock);
    ns_conn_send(conn, data, len);
}

static void srv_timer(uint64_t id, void *user)
{
    (void)id, (void)user;
    pthread_mutex_lock(&lock);
    srv_timer_thread = pthread_self();
    srv_seen_timer = 1;
    pthread_mutex_unlock(&lock);
}

static void test_server_loop(void)
{
    ns_server *srv = NULL;
    ns_loop *lp;
    char addr[64], reply[8];
    size_t rlen = 0;
    uint64_t id = 0;

    SECTION("ns_server_loop: a server's timers run on the thread of its callbacks");
    srv_seen_cb = srv_seen_timer = 0;
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", srv_on_data, NULL, NULL, &srv), NS_OK);
    if (!srv)
        return;
    lp = ns_server_loop(srv);
    CHECK(lp != NULL);
    CHECK(ns_server_loop(srv) == lp); /* the same, borrowed */
    CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);
    CHECK_EQ_INT(ns_tcp_send(addr, "hi", 2, reply, sizeof reply, &rlen, 3000), NS_OK);
    CHECK_EQ_INT(ns_timer_start(lp, 1, 0, srv_timer, NULL, &id), NS_OK);
    WAIT_FOR(get_int(&srv_seen_timer) == 1, 2000);
    pthread_mutex_lock(&lock);
    CHECK(srv_seen_cb && srv_seen_timer);
    CHECK(pthread_equal(srv_cb_thread, srv_timer_thread));
    CHECK(!pthread_equal(srv_timer_thread, pthread_self()));
    pthread_mutex_unlock(&lock);
    ns_server_free(srv);
}

/* ---- 5. post and close by id from other threads while connections churn ------------------ */

#define IDS 64
static uint64_t live_ids[IDS];
static int n_opened, n_closed, task_conn, task_null, post_ok, close_ok;
static volatile int churning;

static void ch_on_open(ns_conn *conn, void *user)
{
    (void)user;
    pthread_mutex_lock(&lock);
    live_ids[n_opened % IDS] = ns_conn_id(conn);
    n_opened++;
    pthread_mutex_unlock(&lock);
}

static void ch_on_close(ns_conn *conn, int reason, void *user)
{
    (void)conn, (void)reason, (void)user;
    add_int(&n_closed, 1);
}

static void ch_task(ns_conn *conn, void *user)
{
    int *token = (int *)user;
    CHECK(*token == 42);
    free(token);
    if (conn) {
        int rc = ns_conn_send(conn, "t", 1); /* may be closing: then NS_ERR_CLOSED */
        add_int(&task_conn, 1);
        CHECK(rc == NS_OK || rc == NS_ERR_CLOSED);
    } else {
        add_int(&task_null, 1);
    }
}

static void *ch_poster(void *arg)
{
    ns_server *srv = (ns_server *)arg;
    unsigned seed = 7;
    while (churning) {
        uint64_t id;
        int *token = malloc(sizeof *token);
        *token = 42;
        seed = seed * 1103515245u + 12345u;
        pthread_mutex_lock(&lock);
        id = live_ids[(seed >> 8) % IDS];
        pthread_mutex_unlock(&lock);
        if (ns_server_post(srv, id, ch_task, token) == NS_OK)
            add_int(&post_ok, 1);
        else
            free(token); /* not run: still ours */
        if ((seed >> 4) % 7 == 0 && ns_server_close(srv, id) == NS_OK)
            add_int(&close_ok, 1);
        if ((seed >> 12) % 16 == 0)
            sleep_ms(1); /* leave the loops and the churning thread some CPU (valgrind) */
    }
    return NULL;
}

static void test_post_and_close_by_id(void)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    pthread_t th[2];
    int i, port;
    int64_t end;

    SECTION("ns_server_post and ns_server_close by id from other threads while connections churn");
    n_opened = n_closed = task_conn = task_null = post_ok = close_ok = 0;
    memset(live_ids, 0, sizeof live_ids);
    CHECK_EQ_INT(ns_options_set_on_open(o, ch_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, ch_on_close), NS_OK);
    CHECK_EQ_INT(ns_options_set_threads(o, 2), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", echo_on_data, NULL, o, &srv), NS_OK);
    ns_options_free(o);
    if (!srv)
        return;
    port = ns_server_port(srv);
    churning = 1;
    for (i = 0; i < 2; i++)
        CHECK_EQ_INT(pthread_create(&th[i], NULL, ch_poster, srv), 0);
    end = now_ms() + 3000;
    for (i = 0; i < 400 && now_ms() < end; i++) {
        int fd = tcp_connect4(port);
        if (fd >= 0) {
            (void)!write(fd, "abc", 3);
            if (rand() % 2)
                sleep_ms(1);
            close(fd);
        }
    }
    churning = 0;
    for (i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    ns_server_free(srv); /* tasks still queued run with NULL: every token is freed */
    printf("churn: %d opened, %d closed; %d posts accepted: %d ran with the connection, %d with NULL; "
           "%d closes by id\n",
           n_opened, n_closed, post_ok, task_conn, task_null, close_ok);
    CHECK(n_opened > 20);
    CHECK_EQ_INT(n_closed, n_opened);
    CHECK(post_ok > 0 && task_conn > 0);
    CHECK_EQ_INT(task_conn + task_null, post_ok); /* each accepted task ran exactly once */
    CHECK(close_ok > 0);
    CHECK_EQ_INT(ns_server_close(NULL, 1), NS_ERR_INVALID);
}

/* ---- 6. pause and resume against a flooding peer ----------------------------------------- */

static int fl_lines;
static uint64_t fl_id;

static void fl_on_open(ns_conn *conn, void *user)
{
    (void)user;
    CHECK_EQ_INT(ns_conn_pause(conn), NS_OK);
    pthread_mutex_lock(&lock);
    fl_id = ns_conn_id(conn);
    pthread_mutex_unlock(&lock);
}

static void fl_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)conn, (void)data, (void)len, (void)user;
    add_int(&fl_lines, 1);
}

static void fl_resume(ns_conn *conn, void *user)
{
    (void)user;
    CHECK(conn != NULL);
    if (conn)
        CHECK_EQ_INT(ns_conn_resume(conn), NS_OK);
}

static void test_pause_resume(void)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    static char line[1024];
    size_t sent = 0, n_lines = 0, rest = 0;
    int fd;
    uint64_t id;
    int64_t end;

    SECTION("ns_conn_pause / ns_conn_resume: a flooding peer stalls, then everything arrives");
    fl_lines = 0;
    fl_id = 0;
    memset(line, 'f', sizeof line - 1);
    line[sizeof line - 1] = '\n';
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_LINE), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_open(o, fl_on_open), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", fl_on_data, NULL, o, &srv), NS_OK);
    ns_options_free(o);
    if (!srv)
        return;
    fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    set_nonblock(fd);
    /* flood until the kernel buffers are full: the paused server reads nothing */
    end = now_ms() + 3000;
    while (now_ms() < end) {
        ssize_t r = write(fd, line, sizeof line);
        if (r == (ssize_t)sizeof line) {
            sent += sizeof line;
            n_lines++;
            continue;
        }
        if (r > 0) { /* a line begun: the rest goes once the server reads again (below) */
            rest = sizeof line - (size_t)r;
            sent += sizeof line;
            n_lines++;
        }
        break;
    }
    sleep_ms(100);
    printf("paused: the peer wrote %zu bytes (%zu lines) before stalling; %d delivered\n", sent, n_lines,
           get_int(&fl_lines));
    CHECK(sent >= 64 * 1024);
    CHECK_EQ_INT(get_int(&fl_lines), 0);
    pthread_mutex_lock(&lock);
    id = fl_id;
    pthread_mutex_unlock(&lock);
    CHECK_EQ_INT(ns_server_post(srv, id, fl_resume, NULL), NS_OK);
    if (rest > 0) /* the kernel's buffers were full inside the last line: finish it now */
        CHECK_EQ_INT(write_all_timeout(fd, line + sizeof line - rest, rest, 5000), rest);
    WAIT_FOR((size_t)get_int(&fl_lines) == n_lines, 5000);
    CHECK_EQ_INT(get_int(&fl_lines), n_lines);
    close(fd);
    ns_server_free(srv);
}

/* ---- 7. the connection's timer ------------------------------------------------------------ */

static int hb_ticks, hb_after_close, hb_closed;

static void hb_on_open(ns_conn *conn, void *user)
{
    (void)user;
    CHECK_EQ_INT(ns_conn_set_timer(conn, 40), NS_OK);
}

static void hb_on_timer(ns_conn *conn, void *user)
{
    (void)user;
    if (get_int(&hb_closed))
        add_int(&hb_after_close, 1);
    add_int(&hb_ticks, 1);
    CHECK_EQ_INT(ns_conn_send(conn, "tick\n", 5), NS_OK);
    CHECK_EQ_INT(ns_conn_set_timer(conn, 40), NS_OK); /* a heartbeat: set again */
}

static void hb_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    if (len == 4 && memcmp(data, "stop", 4) == 0)
        CHECK_EQ_INT(ns_conn_set_timer(conn, 0), NS_OK); /* cancels */
    else if (len == 4 && memcmp(data, "soon", 4) == 0)
        CHECK_EQ_INT(ns_conn_set_timer(conn, 5000), NS_OK); /* moved later */
}

static void hb_on_close(ns_conn *conn, int reason, void *user)
{
    (void)conn, (void)reason, (void)user;
    add_int(&hb_closed, 1);
}

static void test_conn_timer(void)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    char buf[256];
    int fd, got, ticks;
    int64_t t0;

    SECTION("ns_conn_set_timer: a heartbeat re-armed in on_timer, cancelled with 0, never after close");
    hb_ticks = hb_after_close = hb_closed = 0;
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_LINE), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_open(o, hb_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_timer(o, hb_on_timer), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, hb_on_close), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", hb_on_data, NULL, o, &srv), NS_OK);
    ns_options_free(o);
    if (!srv)
        return;
    fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    t0 = now_ms();
    got = (int)read_timeout(fd, buf, 15, 3000, NULL); /* three ticks */
    CHECK_EQ_INT(got, 15);
    CHECK(now_ms() - t0 >= 100); /* 3 x 40 ms, not at once */
    CHECK(memcmp(buf, "tick\ntick\ntick\n", 15) == 0);
    CHECK_EQ_INT(write_all_timeout(fd, "soon\n", 5, 1000), 5);
    sleep_ms(150);
    ticks = get_int(&hb_ticks);
    sleep_ms(150);
    CHECK(get_int(&hb_ticks) <= ticks + 1); /* moved 5 s later (one may have been due) */
    CHECK_EQ_INT(write_all_timeout(fd, "stop\n", 5, 1000), 5);
    sleep_ms(50);
    ticks = get_int(&hb_ticks);
    sleep_ms(200);
    CHECK_EQ_INT(get_int(&hb_ticks), ticks); /* cancelled */
    /* a connection that closes with its timer armed never sees it fire */
    close(fd);
    fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    sleep_ms(10);
    close(fd);
    WAIT_FOR(get_int(&hb_closed) == 2, 3000);
    sleep_ms(100);
    CHECK_EQ_INT(get_int(&hb_after_close), 0);
    ns_server_free(srv);
}

/* ---- 9. servers and clients sharing one loop on one thread ------------------------------- */

struct shared_run {
    ns_loop *lp;
    ns_server *tcp, *udp;
    ns_client *cl;
    int off_main, tcp_bytes, datagrams, client_bytes, ticks, udp_replies;
    char tcp_addr[64], udp_addr[64];
    int udp_fd;
};
static struct shared_run sr;

static void sr_check_thread(void)
{
    if (!pthread_equal(pthread_self(), main_thread))
        sr.off_main++;
}

static void sr_tcp(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    sr_check_thread();
    sr.tcp_bytes += (int)len;
    ns_conn_send(conn, data, len);
}

static void sr_udp(ns_server *srv, const ns_peer *from, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    sr_check_thread();
    sr.datagrams++;
    CHECK_EQ_INT(ns_udp_reply(srv, from, data, len), NS_OK);
}

static void sr_client_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)conn, (void)data, (void)user;
    sr_check_thread();
    sr.client_bytes += (int)len;
}

static void sr_client_open(ns_conn *conn, void *user)
{
    (void)user;
    sr_check_thread();
    CHECK_EQ_INT(ns_conn_send(conn, "over tcp", 8), NS_OK);
}

static void sr_tick(uint64_t id, void *user)
{
    char buf[16];
    (void)id, (void)user;
    sr_check_thread();
    sr.ticks++;
    /* a plain UDP socket's answers, read here without blocking */
    while (recv(sr.udp_fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
        sr.udp_replies++;
    if (sr.ticks == 1) {
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa.sin_port = htons((uint16_t)ns_server_port(sr.udp));
        CHECK_EQ_INT(sendto(sr.udp_fd, "dgram", 5, 0, (struct sockaddr *)&sa, sizeof sa), 5);
    }
    if (sr.client_bytes == 8 && sr.udp_replies == 1 && sr.tcp_bytes == 8)
        CHECK_EQ_INT(ns_loop_stop(sr.lp), NS_OK);
    else if (sr.ticks > 200)
        CHECK_EQ_INT(ns_loop_stop(sr.lp), NS_OK); /* give up: the checks below say what failed */
}

static void sr_connect(void *user)
{
    ns_options *o = ns_options_new();
    (void)user;
    sr_check_thread();
    CHECK_EQ_INT(ns_options_set_loop(o, sr.lp), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_open(o, sr_client_open), NS_OK);
    /* from a task on the loop: the connect must not block it */
    CHECK_EQ_INT(ns_tcp_connect_async(sr.tcp_addr, sr_client_data, NULL, o, &sr.cl), NS_OK);
    ns_options_free(o);
}

static void test_shared_loop(void)
{
    ns_options *o = ns_options_new();
    uint64_t tick = 0;
    int64_t t0;

    SECTION("one thread: a TCP server, a UDP server, an async client, a timer and a task on ns_loop_run");
    memset(&sr, 0, sizeof sr);
    sr.udp_fd = bound_socket4(SOCK_DGRAM);
    CHECK_EQ_INT(ns_options_set_run_in_wait(o, 1), NS_OK);
    CHECK_EQ_INT(ns_loop_new(o, &sr.lp), NS_OK);
    CHECK_EQ_INT(ns_options_set_loop(o, sr.lp), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", sr_tcp, NULL, o, &sr.tcp), NS_OK);
    CHECK_EQ_INT(ns_udp_serve("127.0.0.1:0", sr_udp, NULL, o, &sr.udp), NS_OK);
    ns_options_free(o);
    if (!sr.tcp || !sr.udp)
        return;
    CHECK(ns_server_loop(sr.tcp) != NULL);
    CHECK_EQ_INT(ns_server_addr(sr.tcp, sr.tcp_addr, sizeof sr.tcp_addr), NS_OK);
    CHECK_EQ_INT(ns_loop_post(sr.lp, sr_connect, NULL), NS_OK);
    CHECK_EQ_INT(ns_timer_start(sr.lp, 5, 10, sr_tick, NULL, &tick), NS_OK);
    t0 = now_ms();
    CHECK_EQ_INT(ns_loop_run(sr.lp), NS_OK);
    printf("one thread, %lld ms: TCP %d bytes in, client %d bytes back, %d datagram(s) echoed, %d ticks\n",
           (long long)(now_ms() - t0), sr.tcp_bytes, sr.client_bytes, sr.datagrams, sr.ticks);
    CHECK_EQ_INT(sr.off_main, 0);
    CHECK_EQ_INT(sr.tcp_bytes, 8);
    CHECK_EQ_INT(sr.client_bytes, 8);
    CHECK_EQ_INT(sr.datagrams, 1);
    CHECK_EQ_INT(sr.udp_replies, 1);
    /* the loop stopped: its servers have stopped too */
    CHECK_EQ_INT(ns_server_wait(sr.tcp), NS_OK);
    CHECK_EQ_INT(ns_server_wait(sr.udp), NS_OK);
    ns_client_free(sr.cl);
    ns_server_free(sr.udp);
    ns_server_free(sr.tcp);
    ns_loop_free(sr.lp);
    close(sr.udp_fd);
}

static void test_stop_one_server_of_a_shared_loop(void)
{
    ns_options *o = ns_options_new();
    ns_loop *lp = NULL;
    ns_server *a = NULL, *b = NULL;
    char addr_a[64], addr_b[64], reply[16];
    size_t rlen = 0;
    int fd;
    ns_stats st;

    SECTION("a server stopped on a shared loop: its connections close, the other server goes on");
    CHECK_EQ_INT(ns_options_set_threads(o, 2), NS_OK);
    CHECK_EQ_INT(ns_loop_new(o, &lp), NS_OK);
    CHECK_EQ_INT(ns_options_set_loop(o, lp), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", echo_on_data, NULL, o, &a), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", echo_on_data, NULL, o, &b), NS_OK);
    ns_options_free(o);
    if (!a || !b)
        return;
    CHECK_EQ_INT(ns_server_addr(a, addr_a, sizeof addr_a), NS_OK);
    CHECK_EQ_INT(ns_server_addr(b, addr_b, sizeof addr_b), NS_OK);
    CHECK_EQ_INT(ns_tcp_send(addr_a, "a", 1, reply, sizeof reply, &rlen, 3000), NS_OK);
    CHECK_EQ_INT(ns_tcp_send(addr_b, "b", 1, reply, sizeof reply, &rlen, 3000), NS_OK);
    fd = tcp_connect4(ns_server_port(a)); /* held open across the stop */
    CHECK(fd >= 0);
    sleep_ms(50);
    CHECK_EQ_INT(ns_server_stop(a), NS_OK);
    CHECK_EQ_INT(ns_server_wait(a), NS_OK);
    CHECK_EQ_INT(wait_eof(fd, 3000), 1); /* its connection was closed */
    st = server_stats(a);
    CHECK_EQ_INT(st.accepted, 2);
    CHECK_EQ_INT(st.active, 0);
    CHECK_EQ_INT(ns_tcp_send(addr_b, "still", 5, reply, sizeof reply, &rlen, 3000), NS_OK);
    CHECK_EQ_INT(rlen, 5);
    st = server_stats(b);
    CHECK_EQ_INT(st.accepted, 2); /* each server counts its own */
    ns_server_free(a);
    ns_server_free(b);
    ns_loop_free(lp);
    close(fd);
}

static void stop_loop_task(void *user)
{
    CHECK_EQ_INT(ns_loop_stop((ns_loop *)user), NS_OK);
}

static void test_free_before_the_loop_runs(void)
{
    ns_options *o = ns_options_new();
    ns_loop *lp = NULL;
    ns_server *srv = NULL;
    int64_t t0;

    SECTION("a server freed on a run_in_wait loop that never ran: the free returns, the loop serves nothing of it");
    CHECK_EQ_INT(ns_options_set_run_in_wait(o, 1), NS_OK);
    CHECK_EQ_INT(ns_loop_new(o, &lp), NS_OK);
    CHECK_EQ_INT(ns_options_set_loop(o, lp), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", echo_on_data, NULL, o, &srv), NS_OK);
    ns_options_free(o);
    t0 = now_ms();
    ns_server_free(srv); /* before: waited for a loop that nobody runs */
    CHECK(now_ms() - t0 < 1000);
    CHECK_EQ_INT(ns_loop_post(lp, stop_loop_task, lp), NS_OK);
    CHECK_EQ_INT(ns_loop_run(lp), NS_OK); /* runs, finds the freed server's listener unwanted */
    ns_loop_free(lp);
}

/* ---- 8. argument rules ------------------------------------------------------------------- */

static void nop_task(void *user)
{
    (void)user;
}

static void nop_timer(uint64_t id, void *user)
{
    (void)id, (void)user;
}

static void nop_conn_task(ns_conn *conn, void *user)
{
    (void)conn, (void)user;
}

static void test_arguments(void)
{
    ns_loop *lp = NULL;
    uint64_t id = 0;

    SECTION("NULL arguments are NS_ERR_INVALID, recorded");
    CHECK_EQ_INT(ns_loop_new(NULL, &lp), NS_OK);
    CHECK_EQ_INT(ns_loop_post(NULL, nop_task, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_loop_post(lp, NULL, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_timer_start(NULL, 1, 0, nop_timer, NULL, &id), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_timer_start(lp, 1, 0, NULL, NULL, &id), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_timer_start(lp, 1, 0, nop_timer, NULL, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_timer_stop(NULL, 1), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_loop_run(NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_udp_send("no port", "x", 1), NS_ERR_ADDR);
    CHECK_EQ_INT(ns_loop_stop(NULL), NS_ERR_INVALID);
    CHECK_EQ_STR(ns_last_error(), "invalid argument: `lp` is NULL");
    CHECK(ns_server_loop(NULL) == NULL);
    CHECK_EQ_INT(ns_server_post(NULL, 1, nop_conn_task, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_client_post(NULL, nop_conn_task, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_conn_pause(NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_conn_resume(NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_conn_set_timer(NULL, 5), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_on_timer(NULL, NULL), NS_ERR_INVALID);
    ns_loop_free(lp);
}

int main(void)
{
    main_thread = pthread_self();
    watchdog(100);
    test_arguments();
    test_one_thread();
    test_timers_and_posts();
    test_server_loop();
    test_post_and_close_by_id();
    test_pause_resume();
    test_conn_timer();
    test_shared_loop();
    test_stop_one_server_of_a_shared_loop();
    test_free_before_the_loop_runs();
    return CHECK_DONE();
}
