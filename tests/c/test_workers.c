/* test_workers.c - ns_options_set_workers: connection callbacks on a pool of worker
 * threads, one at a time and in order per connection, parallel across connections.
 *
 *   parallel  4 workers, a handler sleeping 50 ms per message, 8 clients one message each:
 *             all 8 replies come well within the 8 x 50 ms a serial loop would take
 *   order     3 clients x 1,000 pipelined messages, handlers sleeping at random: replies in
 *             order, and an in-flight flag per connection never sees two callbacks at once
 *             (on_data and on_timer); the callbacks never run on the loop thread
 *   api       every ns_conn_* call on a worker: id, peer, server, user, pending, timer,
 *             pause/resume, keep (raw framing), close, send after close; ns_server_post runs
 *             its task on a worker, with the user pointer
 *   idle      a handler blocking past the idle timeout does not make its connection idle
 *   flood     a client floods while its handler sleeps: worker_queued stays within the bound
 *             (max_frame plus one 64 KiB read, counting 64 bytes per message) and RSS flat
 *   many      10,000 connections (a child process opens them), 8 workers, a handler blocking
 *             1 ms: every reply arrives, thread count constant, RSS per connection small
 *   stop      ns_server_free while callbacks run: they finish, on_close runs for every
 *             connection before free returns, nothing starts after; free and wait inside a
 *             worker callback; ns_server_wait waits for the workers' on_close
 *   client    a client with workers: its callbacks on a worker, free waits for on_close
 *
 * Under valgrind (one thread at a time, much slower) the workloads shrink and the timing
 * bound of "parallel" is not checked (its sleeps still overlap, but valgrind's scheduler
 * makes wall time meaningless). */
#define _GNU_SOURCE
#include <sys/resource.h>
#include <sys/wait.h>

#include "netsock.h"
#include "check.h"

static int vg;
static const char *self_path; /* argv[0]: /proc/self/exe would be valgrind's tool under it */

static int under_valgrind(void)
{
    const char *p = getenv("LD_PRELOAD");
    return p && strstr(p, "vgpreload") != NULL;
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void bump(long *p)
{
    pthread_mutex_lock(&mu);
    (*p)++;
    pthread_mutex_unlock(&mu);
}

static long get(const long *p)
{
    long v;
    pthread_mutex_lock(&mu);
    v = *p;
    pthread_mutex_unlock(&mu);
    return v;
}

/* Whether the calling thread is one of netsock's workers (by its name). */
static int on_worker(void)
{
    char name[32] = "";
    pthread_getname_np(pthread_self(), name, sizeof name);
    return strncmp(name, "netsock-worker-", 15) == 0;
}

static ns_server *serve(ns_data_cb on_data, void *user, ns_options *o)
{
    ns_server *srv = NULL;
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", on_data, user, o, &srv), NS_OK);
    return srv;
}

static ns_options *options(int workers, int framing)
{
    ns_options *o = ns_options_new();
    CHECK_EQ_INT(ns_options_set_workers(o, (size_t)workers), NS_OK);
    CHECK_EQ_INT(ns_options_set_framing(o, framing), NS_OK);
    return o;
}

/* Reads one "\n"-ended line into buf (NUL-terminated, without the "\n") within ms. */
static int read_line(int fd, char *buf, size_t cap, int ms)
{
    size_t n = 0;
    int eof = 0;
    while (n + 1 < cap) {
        if (read_timeout(fd, buf + n, 1, ms, &eof) != 1)
            return -1;
        if (buf[n] == '\n') {
            buf[n] = 0;
            return (int)n;
        }
        n++;
    }
    return -1;
}

/* ---- parallel -------------------------------------------------------------------------- */

static void slow_echo(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    sleep_ms(50);
    CHECK_EQ_INT(ns_conn_send_frame(conn, data, len), NS_OK);
}

static void test_parallel(void)
{
    enum { N = 8 };
    ns_options *o = options(4, NS_FRAMING_LINE);
    ns_server *srv = serve(slow_echo, NULL, o);
    int fds[N], i, got = 0;
    int64_t t0, took;
    char line[64];
    SECTION("parallel");
    ns_options_free(o);
    if (!srv)
        return;
    for (i = 0; i < N; i++)
        fds[i] = tcp_connect4(ns_server_port(srv));
    t0 = now_ms();
    for (i = 0; i < N; i++)
        CHECK_EQ_INT(write_all_timeout(fds[i], "hi\n", 3, 2000), 3);
    for (i = 0; i < N; i++)
        if (read_line(fds[i], line, sizeof line, 5000) == 2 && strcmp(line, "hi") == 0)
            got++;
    took = now_ms() - t0;
    CHECK_EQ_INT(got, N);
    printf("parallel: 8 replies of a 50 ms handler on 4 workers in %lld ms (serial: 400)\n",
           (long long)took);
    /* ~100 ms with 4 workers; a generous bound that a serial 400 ms still fails */
    if (!vg)
        CHECK(took < 300);
    for (i = 0; i < N; i++)
        close(fds[i]);
    ns_server_free(srv);
}

/* ---- order ----------------------------------------------------------------------------- */

struct per_conn {
    int inflight; /* set while a callback of this connection runs (atomics) */
    long next;    /* the message number expected next */
    unsigned seed;
};

static struct {
    long overlaps, misordered, loop_thread, timers, opens, closes;
} ord;

static void enter(struct per_conn *pc)
{
    if (__atomic_exchange_n(&pc->inflight, 1, __ATOMIC_SEQ_CST) != 0)
        bump(&ord.overlaps);
    if (!on_worker())
        bump(&ord.loop_thread);
}

static void leave(struct per_conn *pc)
{
    __atomic_store_n(&pc->inflight, 0, __ATOMIC_SEQ_CST);
}

static void ord_open(ns_conn *conn, void *user)
{
    struct per_conn *pc = calloc(1, sizeof *pc);
    (void)user;
    pc->seed = (unsigned)ns_conn_id(conn);
    CHECK_EQ_INT(ns_conn_set_user(conn, pc), NS_OK);
    enter(pc);
    CHECK_EQ_INT(ns_conn_set_timer(conn, 1), NS_OK);
    bump(&ord.opens);
    leave(pc);
}

static void ord_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct per_conn *pc = ns_conn_user(conn);
    char num[32];
    (void)user;
    enter(pc);
    snprintf(num, sizeof num, "%.*s", (int)len, (const char *)data);
    if (atol(num) != pc->next)
        bump(&ord.misordered);
    pc->next++;
    /* 0-400 us, now and then nothing */
    usleep((useconds_t)(rand_r(&pc->seed) % 5) * 100);
    CHECK_EQ_INT(ns_conn_send_frame(conn, data, len), NS_OK);
    leave(pc);
}

static void ord_timer(ns_conn *conn, void *user)
{
    struct per_conn *pc = ns_conn_user(conn);
    (void)user;
    enter(pc);
    bump(&ord.timers);
    if (get(&ord.timers) < 200)
        CHECK_EQ_INT(ns_conn_set_timer(conn, 1), NS_OK);
    leave(pc);
}

static void ord_close(ns_conn *conn, int reason, void *user)
{
    struct per_conn *pc = ns_conn_user(conn);
    (void)user;
    (void)reason;
    enter(pc);
    bump(&ord.closes);
    leave(pc);
    free(pc);
}

static void test_order(void)
{
    enum { C = 3 };
    int n = vg ? 200 : 1000, fds[C], i, c, bad = 0;
    ns_options *o = options(4, NS_FRAMING_LINE);
    ns_server *srv;
    char *all = malloc((size_t)n * 8), line[32];
    size_t len = 0;
    SECTION("order");
    ns_options_set_on_open(o, ord_open);
    ns_options_set_on_timer(o, ord_timer);
    ns_options_set_on_close(o, ord_close);
    srv = serve(ord_data, NULL, o);
    ns_options_free(o);
    if (!srv || !all)
        return;
    for (i = 0; i < n; i++)
        len += (size_t)sprintf(all + len, "%d\n", i);
    for (c = 0; c < C; c++) {
        fds[c] = tcp_connect4(ns_server_port(srv));
        CHECK_EQ_INT(write_all_timeout(fds[c], all, len, 5000), len);
    }
    for (c = 0; c < C; c++)
        for (i = 0; i < n; i++)
            if (read_line(fds[c], line, sizeof line, 10000) < 0 || atoi(line) != i) {
                bad++;
                break;
            }
    CHECK_EQ_INT(bad, 0);
    for (c = 0; c < C; c++)
        close(fds[c]);
    WAIT_FOR(get(&ord.closes) == C, 5000);
    CHECK_EQ_INT(get(&ord.opens), C);
    CHECK_EQ_INT(get(&ord.closes), C);
    CHECK_EQ_INT(get(&ord.overlaps), 0);
    CHECK_EQ_INT(get(&ord.misordered), 0);
    CHECK_EQ_INT(get(&ord.loop_thread), 0);
    CHECK(get(&ord.timers) > 0);
    ns_server_free(srv);
    free(all);
}

/* ---- api ------------------------------------------------------------------------------- */

static ns_server *api_srv;
static struct {
    long checked, closes, close_ok, timers, resumed, kept, posted, posted_null;
} api;
static int user_token;
static uint64_t api_id;

/* Posted with ns_server_post: runs on a worker too, with the connection's user pointer. */
static void api_task(ns_conn *conn, void *user)
{
    CHECK(user == &user_token);
    if (conn == NULL) {
        bump(&api.posted_null);
        return;
    }
    CHECK(on_worker());
    CHECK(ns_conn_user(conn) == &user_token);
    CHECK_EQ_INT(ns_conn_send_frame(conn, "posted", 6), NS_OK);
    bump(&api.posted);
}

static void api_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    char peer[64];
    (void)user;
    CHECK(on_worker());
    if (len == 4 && memcmp(data, "info", 4) == 0) {
        CHECK(ns_conn_id(conn) != 0);
        CHECK_EQ_INT(ns_conn_peer(conn, peer, sizeof peer), NS_OK);
        CHECK(strncmp(peer, "127.0.0.1:", 10) == 0);
        CHECK(ns_conn_server(conn) == api_srv);
        CHECK(ns_conn_user(conn) == NULL);
        CHECK_EQ_INT(ns_conn_set_user(conn, &user_token), NS_OK);
        CHECK(ns_conn_user(conn) == &user_token);
        pthread_mutex_lock(&mu);
        api_id = ns_conn_id(conn);
        pthread_mutex_unlock(&mu);
        CHECK_EQ_INT(ns_conn_send_frame(conn, "info", 4), NS_OK);
        CHECK(ns_conn_pending(conn) <= 5);
        CHECK_EQ_INT(ns_server_wait(api_srv), NS_ERR_MISUSE); /* would wait for itself */
        CHECK_EQ_INT(ns_conn_keep(conn, 1), NS_ERR_INVALID);  /* line framing */
        CHECK_EQ_INT(ns_conn_send_frame(conn, "a\nb", 3), NS_ERR_INVALID);
        bump(&api.checked);
    } else if (len == 5 && memcmp(data, "pause", 5) == 0) {
        /* paused: "later" waits until the timer resumes reading */
        CHECK_EQ_INT(ns_conn_pause(conn), NS_OK);
        CHECK_EQ_INT(ns_conn_set_timer(conn, 100), NS_OK);
        CHECK_EQ_INT(ns_conn_send_frame(conn, "paused", 6), NS_OK);
    } else if (len == 5 && memcmp(data, "later", 5) == 0) {
        CHECK_EQ_INT(get(&api.resumed), 1);
        CHECK_EQ_INT(ns_conn_send_frame(conn, "later", 5), NS_OK);
    } else if (len == 3 && memcmp(data, "bye", 3) == 0) {
        CHECK(ns_conn_user(conn) == &user_token);
        CHECK_EQ_INT(ns_conn_send_frame(conn, "bye", 3), NS_OK);
        CHECK_EQ_INT(ns_conn_close(conn), NS_OK);
        CHECK_EQ_INT(ns_conn_send(conn, "x", 1), NS_ERR_CLOSED);
    }
}

static void api_timer(ns_conn *conn, void *user)
{
    (void)user;
    CHECK(on_worker());
    bump(&api.timers);
    bump(&api.resumed);
    CHECK_EQ_INT(ns_conn_resume(conn), NS_OK);
}

static void api_close(ns_conn *conn, int reason, void *user)
{
    (void)user;
    CHECK(on_worker());
    CHECK_EQ_INT(ns_conn_send(conn, "x", 1), NS_ERR_CLOSED);
    pthread_mutex_lock(&mu);
    api.closes++;
    api.close_ok += reason == NS_OK;
    pthread_mutex_unlock(&mu);
}

/* Raw framing: "ab" is kept whole (an unfinished message), "abcd" arrives as one. */
static void keep_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    if (len == 2) {
        CHECK_EQ_INT(ns_conn_keep(conn, 3), NS_ERR_INVALID);
        CHECK_EQ_INT(ns_conn_keep(conn, 2), NS_OK);
    } else {
        CHECK_EQ_INT(len, 4);
        CHECK(memcmp(data, "abcd", 4) == 0);
        bump(&api.kept);
        CHECK_EQ_INT(ns_conn_send(conn, data, len), NS_OK);
    }
}

static void test_api(void)
{
    ns_options *o = options(2, NS_FRAMING_LINE);
    ns_server *ksrv;
    int fd, eof = 0;
    char line[64];
    int64_t t0;
    uint64_t id;
    SECTION("api");
    ns_options_set_on_timer(o, api_timer);
    ns_options_set_on_close(o, api_close);
    api_srv = serve(api_data, NULL, o);
    ns_options_free(o);
    if (!api_srv)
        return;
    fd = tcp_connect4(ns_server_port(api_srv));
    CHECK_EQ_INT(write_all_timeout(fd, "info\n", 5, 2000), 5);
    CHECK_EQ_INT(read_line(fd, line, sizeof line, 5000), 4);
    pthread_mutex_lock(&mu);
    id = api_id;
    pthread_mutex_unlock(&mu);
    CHECK_EQ_INT(ns_server_post(api_srv, id, api_task, &user_token), NS_OK);
    CHECK_EQ_INT(read_line(fd, line, sizeof line, 5000), 6);
    CHECK_EQ_STR(line, "posted");
    CHECK_EQ_INT(ns_server_post(api_srv, id + 256 * 1000, api_task, &user_token), NS_ERR_CLOSED);
    t0 = now_ms();
    CHECK_EQ_INT(write_all_timeout(fd, "pause\nlater\n", 12, 2000), 12);
    CHECK_EQ_INT(read_line(fd, line, sizeof line, 5000), 6);
    CHECK_EQ_INT(read_line(fd, line, sizeof line, 5000), 5);
    CHECK_EQ_STR(line, "later");
    CHECK(now_ms() - t0 >= 90);
    CHECK_EQ_INT(write_all_timeout(fd, "bye\n", 4, 2000), 4);
    CHECK_EQ_INT(read_line(fd, line, sizeof line, 5000), 3);
    CHECK_EQ_INT(wait_eof(fd, 5000), 1);
    close(fd);
    WAIT_FOR(get(&api.closes) == 1, 5000);
    CHECK_EQ_INT(get(&api.checked), 1);
    CHECK_EQ_INT(get(&api.timers), 1);
    CHECK_EQ_INT(get(&api.close_ok), 1);
    CHECK_EQ_INT(get(&api.posted), 1);
    CHECK_EQ_INT(get(&api.posted_null), 0);
    ns_server_free(api_srv);

    o = options(2, NS_FRAMING_RAW);
    ksrv = serve(keep_data, NULL, o);
    ns_options_free(o);
    if (!ksrv)
        return;
    fd = tcp_connect4(ns_server_port(ksrv));
    CHECK_EQ_INT(write_all_timeout(fd, "ab", 2, 2000), 2);
    sleep_ms(vg ? 300 : 50);
    CHECK_EQ_INT(write_all_timeout(fd, "cd", 2, 2000), 2);
    CHECK_EQ_INT(read_timeout(fd, line, 4, 5000, &eof), 4);
    CHECK(memcmp(line, "abcd", 4) == 0);
    CHECK_EQ_INT(get(&api.kept), 1);
    close(fd);
    ns_server_free(ksrv);

    /* the peer's end right after its request (ns_tcp_send does that): the orderly close
     * waits for the worker's reply */
    o = options(2, NS_FRAMING_LINE);
    ksrv = serve(slow_echo, NULL, o);
    ns_options_free(o);
    if (!ksrv)
        return;
    fd = tcp_connect4(ns_server_port(ksrv));
    CHECK_EQ_INT(write_all_timeout(fd, "last\n", 5, 2000), 5);
    shutdown(fd, SHUT_WR);
    CHECK_EQ_INT(read_line(fd, line, sizeof line, 5000), 4);
    CHECK_EQ_STR(line, "last");
    CHECK_EQ_INT(wait_eof(fd, 5000), 1);
    close(fd);
    ns_server_free(ksrv);
}

/* ---- idle ----------------------------------------------------------------------------- */

static void very_slow_echo(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    sleep_ms(300);
    CHECK_EQ_INT(ns_conn_send_frame(conn, data, len), NS_OK);
}

/* A handler that blocks past the idle timeout does not make its connection idle; once it is
 * done, the timeout applies again. */
static void test_idle(void)
{
    ns_options *o = options(1, NS_FRAMING_LINE);
    ns_server *srv;
    int fd;
    char line[32];
    SECTION("idle");
    ns_options_set_idle_timeout_ms(o, 100);
    srv = serve(very_slow_echo, NULL, o);
    ns_options_free(o);
    if (!srv)
        return;
    fd = tcp_connect4(ns_server_port(srv));
    CHECK_EQ_INT(write_all_timeout(fd, "slow\n", 5, 2000), 5);
    CHECK_EQ_INT(read_line(fd, line, sizeof line, 5000), 4);
    CHECK_EQ_INT(wait_eof(fd, 5000), 1);
    CHECK_EQ_INT(server_stats(srv).timeouts, 1);
    close(fd);
    ns_server_free(srv);
}

/* ---- flood ----------------------------------------------------------------------------- */

static void sleepy(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)conn;
    (void)data;
    (void)len;
    (void)user;
    sleep_ms(20);
}

static void test_flood(void)
{
    enum { MSG = 1000, MAX_FRAME = 64 * 1024 };
    ns_options *o = options(1, NS_FRAMING_LINE);
    ns_server *srv;
    char msg[MSG];
    int fd;
    long rss0, rss1, max_queued = 0;
    /* reading pauses at max_frame (64 bytes counted per message); the rest of that read of
     * the loop (64 KiB) still arrives */
    long bound = MAX_FRAME / (MSG + 64) + 64 * 1024 / MSG + 2;
    size_t sent = 0;
    int64_t end;
    SECTION("flood");
    ns_options_set_max_frame(o, MAX_FRAME);
    srv = serve(sleepy, NULL, o);
    ns_options_free(o);
    if (!srv)
        return;
    memset(msg, 'f', sizeof msg);
    msg[MSG - 1] = '\n';
    fd = tcp_connect4(ns_server_port(srv));
    set_nonblock(fd);
    rss0 = proc_status_num("VmRSS");
    end = now_ms() + (vg ? 3000 : 1500);
    while (now_ms() < end) {
        ssize_t w = send(fd, msg, sizeof msg, MSG_NOSIGNAL);
        ns_stats s = server_stats(srv);
        if (w > 0)
            sent += (size_t)w;
        else
            sleep_ms(5);
        if ((long)s.worker_queued > max_queued)
            max_queued = (long)s.worker_queued;
    }
    rss1 = proc_status_num("VmRSS");
    printf("flood: %zu bytes sent, at most %ld messages waiting (bound %ld), RSS %ld -> %ld kB\n",
           sent, max_queued, bound, rss0, rss1);
    CHECK(max_queued > 0);
    CHECK(max_queued <= bound);
    /* the rest waits in the kernel: the client stalled well short of 1.5 s of loopback */
    CHECK(sent < 64u << 20);
    CHECK(rss1 - rss0 < 8 * 1024);
    close(fd);
    ns_server_free(srv);
}

/* ---- many ------------------------------------------------------------------------------ */

static void blocks_1ms(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    usleep(1000);
    CHECK_EQ_INT(ns_conn_send_frame(conn, data, len), NS_OK);
}

/* The child: opens n connections, sends a line on each, reads each reply, reports on `out`
 * ("ok N\n"), then waits for a byte on `in` before closing them all. */
static void many_child(int port, int n, int out, int in)
{
    int *fds = calloc((size_t)n, sizeof *fds), i, ok = 0;
    char line[32], buf[64];
    for (i = 0; i < n; i++) {
        fds[i] = tcp_connect4(port);
        if (fds[i] < 0)
            break;
    }
    n = i;
    for (i = 0; i < n; i++)
        write_all_timeout(fds[i], "ping\n", 5, 5000);
    for (i = 0; i < n; i++)
        if (read_line(fds[i], line, sizeof line, 60000) == 4)
            ok++;
    snprintf(buf, sizeof buf, "ok %d\n", ok);
    if (write(out, buf, strlen(buf)) < 0)
        _exit(2);
    if (read(in, buf, 1) < 0)
        _exit(2);
    _exit(0);
}

static void test_many(void)
{
    int n = vg ? 300 : 10000, to_parent[2], to_child[2], status = 0, ok = -1, reaped = 0;
    ns_options *o = options(8, NS_FRAMING_LINE);
    ns_server *srv;
    long threads0, rss0, threads_max = 0, rss_max = 0;
    char buf[64] = "";
    size_t got = 0;
    pid_t pid;
    int64_t end;
    SECTION("many");
    srv = serve(blocks_1ms, NULL, o);
    ns_options_free(o);
    if (!srv || pipe(to_parent) != 0 || pipe(to_child) != 0)
        return;
    sleep_ms(20);
    threads0 = proc_status_num("Threads");
    rss0 = proc_status_num("VmRSS");
    pid = fork();
    if (pid == 0) {
        /* exec'd, so that valgrind does not follow it (nor count netsock's heap it copied) */
        char port[16], count[16];
        snprintf(port, sizeof port, "%d", ns_server_port(srv));
        snprintf(count, sizeof count, "%d", n);
        dup2(to_child[0], 0);
        dup2(to_parent[1], 1);
        execl(self_path, "test_workers", "many-child", port, count, (char *)NULL);
        _exit(3);
    }
    CHECK(pid > 0);
    set_nonblock(to_parent[0]);
    end = now_ms() + 100000;
    while (now_ms() < end && (got == 0 || buf[got - 1] != '\n') && !reaped) {
        long t = proc_status_num("Threads"), r = proc_status_num("VmRSS");
        ssize_t rd = read(to_parent[0], buf + got, sizeof buf - 1 - got);
        if (rd > 0)
            got += (size_t)rd;
        if (t > threads_max)
            threads_max = t;
        if (r > rss_max)
            rss_max = r;
        if (waitpid(pid, &status, WNOHANG) == pid)
            reaped = 1; /* ended early: failed */
        sleep_ms(20);
    }
    buf[got] = 0;
    sscanf(buf, "ok %d", &ok);
    {
        ns_stats s = server_stats(srv);
        printf("many: %d of %d replies; threads %ld -> at most %ld; RSS %ld -> at most %ld kB "
               "(%.1f kB per connection)\n",
               ok, n, threads0, threads_max, rss0, rss_max, (double)(rss_max - rss0) / n);
        CHECK_EQ_INT(s.accepted, n);
        CHECK_EQ_INT(s.active, n);
    }
    CHECK_EQ_INT(ok, n);
    /* the pool's threads and the loop's, whatever the connections */
    CHECK_EQ_INT(threads_max, threads0);
    /* a connection costs its socket state and its line, a few kB, never a thread's stack */
    if (!vg) /* valgrind's shadow memory grows with every allocation */
        CHECK((rss_max - rss0) < 16L * n);
    if (write(to_child[1], "x", 1) != 1)
        CHECK(0);
    if (!reaped)
        waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    WAIT_FOR(server_stats(srv).closed == (uint64_t)n, 20000);
    CHECK_EQ_INT(server_stats(srv).closed, n);
    close(to_parent[0]);
    close(to_parent[1]);
    close(to_child[0]);
    close(to_child[1]);
    ns_server_free(srv);
}

/* ---- stop ------------------------------------------------------------------------------ */

static struct {
    long running, started, late, opens, closes, stopped, freed, waited_misuse;
} st;

static void stop_open(ns_conn *conn, void *user)
{
    (void)conn;
    (void)user;
    bump(&st.opens);
}

static void stop_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)conn;
    (void)data;
    (void)len;
    (void)user;
    if (get(&st.freed))
        bump(&st.late);
    bump(&st.started);
    bump(&st.running);
    sleep_ms(200);
    pthread_mutex_lock(&mu);
    st.running--;
    pthread_mutex_unlock(&mu);
}

static void stop_close(ns_conn *conn, int reason, void *user)
{
    (void)conn;
    (void)user;
    if (get(&st.freed))
        bump(&st.late);
    sleep_ms(20);
    pthread_mutex_lock(&mu);
    st.closes++;
    st.stopped += reason == NS_ERR_STOPPED;
    pthread_mutex_unlock(&mu);
}

/* Frees its own server from a worker callback (after checking that waiting is refused). */
static void free_inside(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    ns_server *srv = ns_conn_server(conn);
    (void)data;
    (void)len;
    (void)user;
    CHECK_EQ_INT(ns_server_wait(srv), NS_ERR_MISUSE);
    ns_server_free(srv);
    CHECK(ns_conn_server(conn) == NULL);
    bump(&st.freed);
}

static void *stop_later(void *srv)
{
    sleep_ms(100);
    ns_server_stop(srv);
    return NULL;
}

static void test_stop(void)
{
    enum { C = 3 };
    ns_options *o = options(2, NS_FRAMING_LINE);
    ns_server *srv;
    int fds[C], i;
    pthread_t t;
    SECTION("stop");
    ns_options_set_on_open(o, stop_open);
    ns_options_set_on_close(o, stop_close);
    srv = serve(stop_data, NULL, o);
    if (!srv)
        return;
    for (i = 0; i < C; i++) {
        fds[i] = tcp_connect4(ns_server_port(srv));
        CHECK_EQ_INT(write_all_timeout(fds[i], "a\nb\nc\n", 6, 2000), 6);
    }
    WAIT_FOR(get(&st.running) == 2, 5000);
    CHECK_EQ_INT(get(&st.running), 2);
    ns_server_free(srv);
    /* the running callbacks finished, every opened connection's on_close ran (a connection
     * whose on_open had not started yet gets neither: under valgrind, that happens) */
    CHECK_EQ_INT(get(&st.running), 0);
    CHECK(get(&st.opens) >= 2);
    CHECK_EQ_INT(get(&st.closes), get(&st.opens));
    CHECK_EQ_INT(get(&st.stopped), get(&st.opens));
    bump(&st.freed);
    sleep_ms(300);
    /* nothing started after free returned; the queued messages never ran */
    CHECK_EQ_INT(get(&st.late), 0);
    CHECK(get(&st.started) < 3 * C);
    for (i = 0; i < C; i++)
        close(fds[i]);

    /* ns_server_wait after a stop returns once the workers' on_close callbacks returned */
    memset(&st, 0, sizeof st);
    srv = serve(stop_data, NULL, o);
    if (!srv)
        return;
    fds[0] = tcp_connect4(ns_server_port(srv));
    CHECK_EQ_INT(write_all_timeout(fds[0], "a\n", 2, 2000), 2);
    WAIT_FOR(get(&st.running) == 1, 5000);
    pthread_create(&t, NULL, stop_later, srv);
    CHECK_EQ_INT(ns_server_wait(srv), NS_OK);
    CHECK_EQ_INT(get(&st.running), 0);
    CHECK_EQ_INT(get(&st.closes), 1);
    pthread_join(t, NULL);
    ns_server_free(srv);
    close(fds[0]);

    /* freed inside a worker callback: on_close still runs, once */
    memset(&st, 0, sizeof st);
    srv = serve(free_inside, NULL, o);
    ns_options_free(o);
    if (!srv)
        return;
    fds[0] = tcp_connect4(ns_server_port(srv));
    CHECK_EQ_INT(write_all_timeout(fds[0], "free\n", 5, 2000), 5);
    WAIT_FOR(get(&st.closes) == 1, 5000);
    CHECK_EQ_INT(get(&st.freed), 1);
    CHECK_EQ_INT(get(&st.closes), 1);
    CHECK_EQ_INT(wait_eof(fds[0], 5000), 1);
    close(fds[0]);
    sleep_ms(50); /* the pool's threads end by themselves */
}

/* ---- client ---------------------------------------------------------------------------- */

static struct {
    long data, on_worker, closes;
} cl;

static void echo(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    ns_conn_send_frame(conn, data, len);
}

static void cl_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)conn;
    (void)data;
    (void)len;
    (void)user;
    sleep_ms(20);
    if (on_worker())
        bump(&cl.on_worker);
    bump(&cl.data);
}

static void cl_close(ns_conn *conn, int reason, void *user)
{
    (void)conn;
    (void)reason;
    (void)user;
    sleep_ms(50);
    bump(&cl.closes);
}

static void test_client(void)
{
    ns_options *so = options(0, NS_FRAMING_LINE), *co = options(2, NS_FRAMING_LINE);
    ns_server *srv = serve(echo, NULL, so);
    ns_client *c = NULL;
    char addr[64];
    SECTION("client");
    ns_options_set_on_close(co, cl_close);
    if (!srv)
        return;
    ns_server_addr(srv, addr, sizeof addr);
    CHECK_EQ_INT(ns_tcp_connect(addr, cl_data, NULL, co, &c), NS_OK);
    CHECK_EQ_INT(ns_client_send_frame(c, "one", 3), NS_OK);
    CHECK_EQ_INT(ns_client_send_frame(c, "two", 3), NS_OK);
    WAIT_FOR(get(&cl.data) == 2, 5000);
    CHECK_EQ_INT(get(&cl.on_worker), 2);
    ns_client_free(c);
    /* free waited for on_close on the worker */
    CHECK_EQ_INT(get(&cl.closes), 1);
    ns_server_free(srv);
    ns_options_free(so);
    ns_options_free(co);
}

int main(int argc, char **argv)
{
    struct rlimit rl;
    if (argc == 4 && strcmp(argv[1], "many-child") == 0)
        many_child(atoi(argv[2]), atoi(argv[3]), 1, 0);
    self_path = argv[0];
    vg = under_valgrind();
    watchdog(vg ? 600 : 110);
    /* the many-connections section needs ~10,000 descriptors in each process */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    CHECK_EQ_INT(ns_options_set_workers(NULL, 1), NS_ERR_INVALID);
    {
        ns_options *o = ns_options_new();
        CHECK_EQ_INT(ns_options_set_workers(o, 1025), NS_ERR_INVALID);
        CHECK_EQ_INT(ns_options_set_workers(o, 0), NS_OK);
        ns_options_free(o);
    }
    test_parallel();
    test_order();
    test_api();
    test_idle();
    test_flood();
    test_many();
    test_stop();
    test_client();
    return CHECK_DONE();
}
