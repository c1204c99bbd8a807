/* test_threads.c - threads and server lifetime: callbacks on one library
 * thread, ns_server_stop from another thread / a callback / a signal handler,
 * ns_server_send from other threads, sends after stop, concurrent clients,
 * and loop 0 run on the caller's thread inside ns_server_wait, also inside another
 * server's callback; ns_conn_server once a free has begun. */
#include <stdio.h>
#include <string.h>

#include "netsock.h"
#include "check.h"

/* ---- shared recording server ---------------------------------------------- */

struct rec {
    pthread_mutex_t lock;
    ns_server *srv;
    pthread_t cb_thread;
    int have_thread;
    int other_threads;
    int opens, closes, datas;
    uint64_t last_id;
    int last_reason;
    int stop_in_data; /* on_data calls ns_server_stop */
    int stop_rc;
    int echo;
};

static void rec_init(struct rec *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    r->echo = 1;
}

static void rec_thread(struct rec *r)
{
    if (!r->have_thread) {
        r->have_thread = 1;
        r->cb_thread = pthread_self();
    } else if (!pthread_equal(r->cb_thread, pthread_self())) {
        r->other_threads++;
    }
}

static void rec_open(ns_conn *c, void *u)
{
    struct rec *r = (struct rec *)u;
    pthread_mutex_lock(&r->lock);
    rec_thread(r);
    r->opens++;
    r->last_id = ns_conn_id(c);
    pthread_mutex_unlock(&r->lock);
}

static void rec_close(ns_conn *c, int reason, void *u)
{
    struct rec *r = (struct rec *)u;
    (void)c;
    pthread_mutex_lock(&r->lock);
    rec_thread(r);
    r->closes++;
    r->last_reason = reason;
    pthread_mutex_unlock(&r->lock);
}

static void rec_data(ns_conn *c, const uint8_t *d, size_t n, void *u)
{
    struct rec *r = (struct rec *)u;
    int stop, echo;
    pthread_mutex_lock(&r->lock);
    rec_thread(r);
    r->datas++;
    stop = r->stop_in_data;
    echo = r->echo;
    pthread_mutex_unlock(&r->lock);
    if (echo)
        CHECK_EQ_INT(ns_conn_send(c, d, n), NS_OK);
    if (stop) {
        int rc = ns_server_stop(r->srv);
        pthread_mutex_lock(&r->lock);
        r->stop_rc = rc;
        pthread_mutex_unlock(&r->lock);
    }
}

static int rec_get(struct rec *r, const int *field)
{
    int v;
    pthread_mutex_lock(&r->lock);
    v = *field;
    pthread_mutex_unlock(&r->lock);
    return v;
}

static ns_server *rec_serve(struct rec *r)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    CHECK_EQ_INT(ns_options_set_on_open(o, rec_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, rec_close), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", rec_data, r, o, &srv), NS_OK);
    ns_options_free(o);
    r->srv = srv;
    return srv;
}

/* connect a plain client and do one echo so the connection is surely open */
static int connect_and_ping(int port)
{
    char buf[4];
    int fd = tcp_connect4(port);
    CHECK(fd >= 0);
    if (fd < 0)
        return -1;
    CHECK_EQ_INT(write_all_timeout(fd, "ping", 4, 2000), 4);
    CHECK_EQ_INT(read_timeout(fd, buf, 4, 5000, NULL), 4);
    return fd;
}

/* ---- stop from another thread --------------------------------------------- */

struct stopper {
    ns_server *srv;
    int delay_ms;
    int rc;
};

static void *stop_thread(void *arg)
{
    struct stopper *s = (struct stopper *)arg;
    sleep_ms(s->delay_ms);
    s->rc = ns_server_stop(s->srv);
    return NULL;
}

static void test_stop_from_thread(void)
{
    struct rec r;
    struct stopper sp;
    ns_server *srv;
    pthread_t th;
    int fd, rc, port;
    uint64_t id;
    int64_t t0;

    SECTION("ns_server_stop from another thread while a client is connected");
    rec_init(&r);
    srv = rec_serve(&r);
    if (!srv)
        return;
    port = ns_server_port(srv);
    fd = connect_and_ping(port);
    CHECK_EQ_INT(rec_get(&r, &r.opens), 1);
    pthread_mutex_lock(&r.lock);
    id = r.last_id;
    pthread_mutex_unlock(&r.lock);
    CHECK(id != 0);

    sp.srv = srv;
    sp.delay_ms = 150;
    sp.rc = 99;
    CHECK_EQ_INT(pthread_create(&th, NULL, stop_thread, &sp), 0);
    t0 = now_ms();
    rc = ns_server_wait(srv); /* the watchdog catches a hang here */
    CHECK_EQ_INT(rc, NS_OK);
    CHECK(now_ms() - t0 >= 100); /* it really waited for the stop */
    pthread_join(th, NULL);
    CHECK_EQ_INT(sp.rc, NS_OK);

    /* once wait returned, the open connection has had its on_close(STOPPED) */
    pthread_mutex_lock(&r.lock);
    CHECK_EQ_INT(r.closes, 1);
    CHECK_EQ_INT(r.last_reason, NS_ERR_STOPPED);
    CHECK_EQ_INT(r.other_threads, 0);
    CHECK(r.have_thread && !pthread_equal(r.cb_thread, pthread_self()));
    CHECK(r.have_thread && !pthread_equal(r.cb_thread, th));
    pthread_mutex_unlock(&r.lock);

    /* the client sees EOF */
    if (fd >= 0) {
        CHECK_EQ_INT(wait_eof(fd, 5000), 1);
        close(fd);
    }
    /* a stopped server takes no more sends, stop/wait again are harmless */
    CHECK_EQ_INT(ns_server_send(srv, id, "late", 4), NS_ERR_CLOSED);
    CHECK_EQ_INT(ns_server_stop(srv), NS_OK);
    CHECK_EQ_INT(ns_server_wait(srv), NS_OK);
    ns_server_free(srv);
    /* the port is released: nobody accepts there any more */
    {
        char addr[64], reply[8];
        size_t rlen;
        snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
        rc = ns_tcp_send(addr, "x", 1, reply, sizeof reply, &rlen, 2000);
        CHECK_EQ_INT(rc, NS_ERR_REFUSED);
    }
    /* no callbacks after free */
    CHECK_EQ_INT(rec_get(&r, &r.closes), 1);
    CHECK_EQ_INT(rec_get(&r, &r.opens), 1);
}

/* ---- stop from inside a callback ----------------------------------------- */

static void test_stop_from_callback(void)
{
    struct rec r;
    ns_server *srv;
    int fd;
    char buf[8];

    SECTION("ns_server_stop from inside on_data");
    rec_init(&r);
    r.stop_in_data = 1;
    r.stop_rc = 99;
    srv = rec_serve(&r);
    if (!srv)
        return;
    fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    if (fd >= 0)
        CHECK_EQ_INT(write_all_timeout(fd, "stop", 4, 2000), 4);
    CHECK_EQ_INT(ns_server_wait(srv), NS_OK);
    CHECK_EQ_INT(rec_get(&r, &r.stop_rc), NS_OK);
    CHECK_EQ_INT(rec_get(&r, &r.closes), 1);
    CHECK_EQ_INT(rec_get(&r, &r.last_reason), NS_ERR_STOPPED);
    if (fd >= 0) {
        int eof = 0;
        /* the echo queued before the stop may or may not be flushed; then EOF */
        size_t n = read_timeout(fd, buf, sizeof buf, 5000, &eof);
        CHECK(n == 0 || n == 4);
        CHECK_EQ_INT(eof, 1);
        close(fd);
    }
    ns_server_free(srv);
}

/* ---- stop from a signal handler (async-signal-safe) ------------------------ */

static ns_server *volatile g_sig_srv;
static volatile sig_atomic_t g_sig_rc = 99;

static void on_sigusr1(int sig)
{
    (void)sig;
    g_sig_rc = ns_server_stop(g_sig_srv);
}

struct killer {
    pthread_t target;
};

static void *kill_thread(void *arg)
{
    struct killer *k = (struct killer *)arg;
    sleep_ms(150);
    pthread_kill(k->target, SIGUSR1);
    return NULL;
}

static void test_stop_from_signal(void)
{
    struct rec r;
    struct sigaction sa;
    struct killer k;
    pthread_t th;
    ns_server *srv;
    int fd;

    SECTION("ns_server_stop from a signal handler");
    rec_init(&r);
    srv = rec_serve(&r);
    if (!srv)
        return;
    fd = connect_and_ping(ns_server_port(srv));
    g_sig_srv = srv;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigusr1;
    sigemptyset(&sa.sa_mask);
    CHECK_EQ_INT(sigaction(SIGUSR1, &sa, NULL), 0);
    k.target = pthread_self();
    CHECK_EQ_INT(pthread_create(&th, NULL, kill_thread, &k), 0);
    CHECK_EQ_INT(ns_server_wait(srv), NS_OK); /* the handler runs on this thread */
    pthread_join(th, NULL);
    CHECK_EQ_INT(g_sig_rc, NS_OK);
    CHECK_EQ_INT(rec_get(&r, &r.last_reason), NS_ERR_STOPPED);
    if (fd >= 0) {
        CHECK_EQ_INT(wait_eof(fd, 5000), 1);
        close(fd);
    }
    ns_server_free(srv);
    signal(SIGUSR1, SIG_DFL);
}

/* ---- ns_server_free with a client still connected ------------------------- */

static void test_free_with_client(void)
{
    struct rec r;
    ns_server *srv;
    int fd;

    SECTION("ns_server_free with a connected client");
    rec_init(&r);
    srv = rec_serve(&r);
    if (!srv)
        return;
    fd = connect_and_ping(ns_server_port(srv));
    ns_server_free(srv);
    CHECK_EQ_INT(rec_get(&r, &r.closes), 1);
    CHECK_EQ_INT(rec_get(&r, &r.last_reason), NS_ERR_STOPPED);
    if (fd >= 0) {
        CHECK_EQ_INT(wait_eof(fd, 5000), 1);
        close(fd);
    }
}

/* ---- ns_server_send from other threads ------------------------------------- */

#define SENDERS 4
#define PER_SENDER 100
#define RECLEN 16

struct sender {
    ns_server *srv;
    uint64_t id;
    int idx;
    int failures;
};

static void *send_thread(void *arg)
{
    struct sender *s = (struct sender *)arg;
    int i;
    for (i = 0; i < PER_SENDER; i++) {
        char msg[RECLEN + 1];
        /* fixed-size record: "T<idx>-<seq 8 digits>....\n" */
        snprintf(msg, sizeof msg, "T%d-%08d.....", s->idx, i);
        msg[RECLEN - 1] = '\n';
        if (ns_server_send(s->srv, s->id, msg, RECLEN) != NS_OK)
            s->failures++;
    }
    return NULL;
}

static void test_server_send_threads(void)
{
    struct rec r;
    struct sender sd[SENDERS];
    pthread_t th[SENDERS];
    ns_server *srv;
    int fd, i;
    uint64_t id;
    static char buf[SENDERS * PER_SENDER * RECLEN + 64];
    size_t n;

    SECTION("ns_server_send from other threads, by connection id");
    rec_init(&r);
    srv = rec_serve(&r);
    if (!srv)
        return;
    fd = connect_and_ping(ns_server_port(srv));
    pthread_mutex_lock(&r.lock);
    id = r.last_id;
    pthread_mutex_unlock(&r.lock);

    /* one message from one other thread */
    sd[0].srv = srv;
    sd[0].id = id;
    if (fd >= 0) {
        char got[32];
        CHECK_EQ_INT(ns_server_send(srv, id, "hello by id", 11), NS_OK);
        n = read_timeout(fd, got, 11, 5000, NULL);
        CHECK_EQ_INT(n, 11);
        CHECK(n == 11 && memcmp(got, "hello by id", 11) == 0);
    }

    for (i = 0; i < SENDERS; i++) {
        sd[i].srv = srv;
        sd[i].id = id;
        sd[i].idx = i;
        sd[i].failures = 0;
        CHECK_EQ_INT(pthread_create(&th[i], NULL, send_thread, &sd[i]), 0);
    }
    for (i = 0; i < SENDERS; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(sd[i].failures, 0);
    }
    if (fd >= 0) {
        int next[SENDERS] = {0};
        int bad = 0;
        size_t k;
        n = read_timeout(fd, buf, (size_t)SENDERS * PER_SENDER * RECLEN, 10000, NULL);
        CHECK_EQ_INT(n, SENDERS * PER_SENDER * RECLEN);
        /* each message arrives whole, and each thread's messages in order */
        for (k = 0; k + RECLEN <= n; k += RECLEN) {
            int t = -1, seq = -1;
            if (sscanf(buf + k, "T%d-%8d", &t, &seq) != 2 || t < 0 || t >= SENDERS ||
                seq != next[t] || buf[k + RECLEN - 1] != '\n') {
                if (bad++ < 3)
                    fprintf(stderr, "bad record at %zu: \"%.*s\"\n", k, RECLEN, buf + k);
            } else {
                next[t]++;
            }
        }
        CHECK_EQ_INT(bad, 0);
        close(fd);
    }
    /* after the client went away the id is unknown */
    WAIT_FOR(rec_get(&r, &r.closes) >= 1, 5000);
    CHECK_EQ_INT(rec_get(&r, &r.last_reason), NS_OK);
    CHECK_EQ_INT(ns_server_send(srv, id, "gone", 4), NS_ERR_CLOSED);
    CHECK_EQ_INT(rec_get(&r, &r.other_threads), 0);
    ns_server_free(srv);
}

/* ---- concurrent one-shot clients from several threads ----------------------- */

#define CLIENT_THREADS 8
#define CALLS_PER_THREAD 20

struct client_job {
    char addr[64];
    int idx;
    int ok;
};

static void *client_thread(void *arg)
{
    struct client_job *j = (struct client_job *)arg;
    int i;
    for (i = 0; i < CALLS_PER_THREAD; i++) {
        char msg[64], reply[64];
        size_t rlen = 0;
        int n = snprintf(msg, sizeof msg, "thread %d call %d", j->idx, i);
        int rc = ns_tcp_send(j->addr, msg, (size_t)n, reply, sizeof reply, &rlen, 10000);
        if (rc == NS_OK && rlen == (size_t)n && memcmp(reply, msg, (size_t)n) == 0)
            j->ok++;
        else
            fprintf(stderr, "thread %d call %d: rc %d (%s) rlen %zu: %s\n", j->idx, i, rc,
                    ns_strerror(rc), rlen, ns_last_error());
    }
    return NULL;
}

static void test_concurrent_clients(void)
{
    struct rec r;
    struct client_job jobs[CLIENT_THREADS];
    pthread_t th[CLIENT_THREADS];
    ns_server *srv;
    int i, total = 0;

    SECTION("ns_tcp_send from 8 threads at once");
    rec_init(&r);
    srv = rec_serve(&r);
    if (!srv)
        return;
    for (i = 0; i < CLIENT_THREADS; i++) {
        jobs[i].idx = i;
        jobs[i].ok = 0;
        CHECK_EQ_INT(ns_server_addr(srv, jobs[i].addr, sizeof jobs[i].addr), NS_OK);
        CHECK_EQ_INT(pthread_create(&th[i], NULL, client_thread, &jobs[i]), 0);
    }
    for (i = 0; i < CLIENT_THREADS; i++) {
        pthread_join(th[i], NULL);
        total += jobs[i].ok;
    }
    CHECK_EQ_INT(total, CLIENT_THREADS * CALLS_PER_THREAD);
    WAIT_FOR(rec_get(&r, &r.closes) >= CLIENT_THREADS * CALLS_PER_THREAD, 5000);
    CHECK_EQ_INT(rec_get(&r, &r.opens), CLIENT_THREADS * CALLS_PER_THREAD);
    CHECK_EQ_INT(rec_get(&r, &r.closes), CLIENT_THREADS * CALLS_PER_THREAD);
    CHECK_EQ_INT(rec_get(&r, &r.other_threads), 0);
    ns_server_free(srv);
}

/* ---- UDP callbacks: one library thread too --------------------------------- */

struct urec {
    pthread_mutex_t lock;
    pthread_t cb_thread;
    int have_thread;
    int other_threads;
    int count;
};

static void urec_dgram(ns_server *srv, const ns_peer *from, const uint8_t *d, size_t n, void *u)
{
    struct urec *r = (struct urec *)u;
    pthread_mutex_lock(&r->lock);
    if (!r->have_thread) {
        r->have_thread = 1;
        r->cb_thread = pthread_self();
    } else if (!pthread_equal(r->cb_thread, pthread_self())) {
        r->other_threads++;
    }
    r->count++;
    pthread_mutex_unlock(&r->lock);
    CHECK_EQ_INT(ns_udp_reply(srv, from, d, n), NS_OK);
}

struct ujob {
    char addr[64];
    int ok;
};

static void *udp_client_thread(void *arg)
{
    struct ujob *j = (struct ujob *)arg;
    int i;
    for (i = 0; i < 20; i++) {
        char reply[16];
        size_t rlen = 0;
        if (ns_udp_request(j->addr, "abc", 3, reply, sizeof reply, &rlen, 5000) == NS_OK &&
            rlen == 3)
            j->ok++;
    }
    return NULL;
}

static void test_udp_threads(void)
{
    struct urec r;
    struct ujob jobs[4];
    pthread_t th[4];
    ns_server *srv = NULL;
    int i, ok = 0;

    SECTION("UDP callbacks on one library thread; concurrent ns_udp_request");
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.lock, NULL);
    CHECK_EQ_INT(ns_udp_serve("127.0.0.1:0", urec_dgram, &r, NULL, &srv), NS_OK);
    if (!srv)
        return;
    for (i = 0; i < 4; i++) {
        jobs[i].ok = 0;
        CHECK_EQ_INT(ns_server_addr(srv, jobs[i].addr, sizeof jobs[i].addr), NS_OK);
        CHECK_EQ_INT(pthread_create(&th[i], NULL, udp_client_thread, &jobs[i]), 0);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ok += jobs[i].ok;
    }
    CHECK_EQ_INT(ok, 80);
    pthread_mutex_lock(&r.lock);
    CHECK_EQ_INT(r.other_threads, 0);
    CHECK(r.have_thread && !pthread_equal(r.cb_thread, pthread_self()));
    for (i = 0; i < 4; i++)
        CHECK(r.have_thread && !pthread_equal(r.cb_thread, th[i]));
    pthread_mutex_unlock(&r.lock);
    ns_server_free(srv);
}

/* ---- loop 0 inside ns_server_wait (ns_options_set_run_in_wait) ------------- */

struct in_wait_job {
    ns_server *srv;
    int port;
    char addr[64];
    int udp;
    int conns; /* TCP connections held open at once (at least 1) */
    int pinged;
    int wait_rc;
};

/* One echo (TCP or UDP) against a server whose loop only runs inside ns_server_wait, then stop. */
static void *in_wait_client(void *arg)
{
    struct in_wait_job *j = (struct in_wait_job *)arg;
    if (j->udp) {
        char reply[8];
        size_t rlen = 0;
        j->pinged = ns_udp_request(j->addr, "ping", 4, reply, sizeof reply, &rlen, 5000) == NS_OK && rlen == 4;
    } else {
        int fds[4], i, n = j->conns < 1 ? 1 : j->conns;
        for (i = 0; i < n && i < 4; i++) {
            fds[i] = connect_and_ping(j->port);
            j->pinged += fds[i] >= 0;
        }
        while (i-- > 0)
            if (fds[i] >= 0)
                close(fds[i]);
    }
    ns_server_stop(j->srv);
    return NULL;
}

/* A second waiter from another thread: returns once the loop run by main has ended. */
static void *in_wait_waiter(void *arg)
{
    struct in_wait_job *j = (struct in_wait_job *)arg;
    j->wait_rc = ns_server_wait(j->srv);
    return NULL;
}

/* Echoes, then frees the server from inside the callback that ns_server_wait runs. */
static void free_in_data(ns_conn *c, const uint8_t *d, size_t n, void *u)
{
    struct rec *r = (struct rec *)u;
    CHECK_EQ_INT(ns_conn_send(c, d, n), NS_OK);
    ns_server_free(r->srv);
    pthread_mutex_lock(&r->lock);
    r->datas++;
    pthread_mutex_unlock(&r->lock);
}

struct ping_kill {
    int port;
    pthread_t target;
    int pinged;
    int end;
};

/* One echo on a connection it keeps, then SIGUSR1 to the thread running the loop; then the
 * connection's end as the stop closes it. */
static void *ping_then_kill(void *arg)
{
    struct ping_kill *pk = (struct ping_kill *)arg;
    int fd = connect_and_ping(pk->port);
    pk->pinged = fd >= 0;
    pthread_kill(pk->target, SIGUSR1);
    if (fd >= 0) {
        pk->end = wait_eof(fd, 5000);
        close(fd);
    }
    return NULL;
}

/* One echo, then frees the server from this thread while main runs its loop in the wait. */
static void *ping_then_free(void *arg)
{
    struct in_wait_job *j = (struct in_wait_job *)arg;
    int fd = connect_and_ping(j->port);
    j->pinged = fd >= 0;
    ns_server_free(j->srv); /* returns once the loop in main's wait has ended */
    if (fd >= 0) {
        j->wait_rc = wait_eof(fd, 5000);
        close(fd);
    }
    return NULL;
}

/* A recording TCP server with `threads` loops whose loop 0 runs inside ns_server_wait. */
static ns_server *in_wait_serve(struct rec *r, size_t threads, ns_data_cb on_data)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    rec_init(r);
    CHECK_EQ_INT(ns_options_set_on_open(o, rec_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, rec_close), NS_OK);
    CHECK_EQ_INT(ns_options_set_threads(o, threads), NS_OK);
    CHECK_EQ_INT(ns_options_set_run_in_wait(o, 1), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", on_data, r, o, &srv), NS_OK);
    ns_options_free(o);
    r->srv = srv;
    return srv;
}

static void test_run_in_wait(void)
{
    struct rec r;
    struct urec u;
    struct in_wait_job job, waiter;
    pthread_t cl, wt;
    ns_options *o;
    ns_server *srv = NULL;
    long threads_before;
    int fd;

    SECTION("run_in_wait: TCP callbacks on the thread in ns_server_wait, no loop thread");
    CHECK_EQ_INT(ns_options_set_run_in_wait(NULL, 1), NS_ERR_INVALID);
    threads_before = proc_status_num("Threads");
    srv = in_wait_serve(&r, 1, rec_data);
    if (!srv)
        return;
    CHECK_EQ_INT(proc_status_num("Threads"), threads_before);
    memset(&job, 0, sizeof job);
    job.srv = srv;
    job.port = ns_server_port(srv);
    waiter = job;
    CHECK_EQ_INT(pthread_create(&cl, NULL, in_wait_client, &job), 0);
    CHECK_EQ_INT(pthread_create(&wt, NULL, in_wait_waiter, &waiter), 0);
    CHECK_EQ_INT(ns_server_wait(srv), NS_OK);
    pthread_join(cl, NULL);
    pthread_join(wt, NULL);
    CHECK(job.pinged);
    CHECK_EQ_INT(waiter.wait_rc, NS_OK);
    pthread_mutex_lock(&r.lock);
    CHECK_EQ_INT(r.opens, 1);
    CHECK_EQ_INT(r.closes, 1);
    CHECK_EQ_INT(r.other_threads, 0);
    /* on whichever of the two waiting threads called first; the other waited for it */
    CHECK(r.have_thread && (pthread_equal(r.cb_thread, pthread_self()) || pthread_equal(r.cb_thread, wt)));
    pthread_mutex_unlock(&r.lock);
    CHECK_EQ_INT(ns_server_wait(srv), NS_OK); /* again: the loop has ended, nothing to run */
    ns_server_free(srv);
    CHECK_EQ_INT(proc_status_num("Threads"), threads_before);

    SECTION("run_in_wait with 2 loops: loop 0 on the waiting thread, loop 1 on its own");
    srv = in_wait_serve(&r, 2, rec_data);
    if (!srv)
        return;
    CHECK_EQ_INT(proc_status_num("Threads"), threads_before + 1);
    memset(&job, 0, sizeof job);
    job.srv = srv;
    job.port = ns_server_port(srv);
    job.conns = 2; /* handed round-robin: one to each loop */
    CHECK_EQ_INT(pthread_create(&cl, NULL, in_wait_client, &job), 0);
    CHECK_EQ_INT(ns_server_wait(srv), NS_OK);
    pthread_join(cl, NULL);
    CHECK_EQ_INT(job.pinged, 2);
    pthread_mutex_lock(&r.lock);
    /* the first connection's three callbacks on main (loop 0), the second's on loop 1 */
    CHECK(r.have_thread && pthread_equal(r.cb_thread, pthread_self()));
    CHECK_EQ_INT(r.other_threads, 3);
    pthread_mutex_unlock(&r.lock);
    CHECK_EQ_INT(rec_get(&r, &r.opens), 2);
    CHECK_EQ_INT(rec_get(&r, &r.closes), 2);
    ns_server_free(srv);

    SECTION("run_in_wait: freed without a wait, the loop never runs and nothing hangs");
    srv = in_wait_serve(&r, 1, rec_data);
    if (!srv)
        return;
    fd = tcp_connect4(ns_server_port(srv)); /* waits in the listen backlog */
    CHECK(fd >= 0);
    sleep_ms(50);
    CHECK_EQ_INT(rec_get(&r, &r.opens), 0);
    ns_server_free(srv);
    CHECK_EQ_INT(rec_get(&r, &r.opens), 0);
    CHECK_EQ_INT(rec_get(&r, &r.closes), 0);
    if (fd >= 0) {
        int end = wait_eof(fd, 5000); /* the closed listener resets what its backlog held */
        CHECK(end == 1 || end == -ECONNRESET);
        close(fd);
    }

    SECTION("run_in_wait: ns_server_free inside a callback that ns_server_wait runs");
    srv = in_wait_serve(&r, 1, free_in_data);
    if (!srv)
        return;
    memset(&job, 0, sizeof job);
    job.port = ns_server_port(srv);
    job.srv = NULL; /* the callback frees it: the client's ns_server_stop(NULL) is a no-op */
    CHECK_EQ_INT(pthread_create(&cl, NULL, in_wait_client, &job), 0);
    CHECK_EQ_INT(ns_server_wait(srv), NS_OK); /* returns once the loop it ran has ended */
    pthread_join(cl, NULL);
    CHECK(job.pinged);
    CHECK_EQ_INT(rec_get(&r, &r.datas), 1);
    CHECK_EQ_INT(rec_get(&r, &r.opens), 1);
    CHECK_EQ_INT(rec_get(&r, &r.closes), 1);
    CHECK_EQ_INT(proc_status_num("Threads"), threads_before);

    SECTION("run_in_wait: ns_server_free from another thread while the loop runs in the wait");
    srv = in_wait_serve(&r, 1, rec_data);
    if (!srv)
        return;
    memset(&job, 0, sizeof job);
    job.srv = srv;
    job.port = ns_server_port(srv);
    CHECK_EQ_INT(pthread_create(&cl, NULL, ping_then_free, &job), 0);
    CHECK_EQ_INT(ns_server_wait(srv), NS_OK); /* srv is freed meanwhile: not touched after */
    pthread_join(cl, NULL);
    CHECK(job.pinged);
    CHECK_EQ_INT(job.wait_rc, 1); /* the connection was closed by the free */
    CHECK_EQ_INT(rec_get(&r, &r.opens), 1);
    CHECK_EQ_INT(rec_get(&r, &r.closes), 1);
    CHECK_EQ_INT(rec_get(&r, &r.last_reason), NS_ERR_STOPPED);

    SECTION("run_in_wait: ns_server_stop from a signal handler that interrupts the loop");
    {
        struct sigaction sa;
        struct ping_kill pk;
        srv = in_wait_serve(&r, 1, rec_data);
        if (!srv)
            return;
        g_sig_srv = srv;
        g_sig_rc = 99;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigusr1;
        sigemptyset(&sa.sa_mask);
        CHECK_EQ_INT(sigaction(SIGUSR1, &sa, NULL), 0);
        memset(&pk, 0, sizeof pk);
        pk.port = ns_server_port(srv);
        pk.target = pthread_self();
        CHECK_EQ_INT(pthread_create(&cl, NULL, ping_then_kill, &pk), 0);
        CHECK_EQ_INT(ns_server_wait(srv), NS_OK); /* the handler runs on this thread */
        pthread_join(cl, NULL);
        CHECK_EQ_INT(g_sig_rc, NS_OK);
        CHECK(pk.pinged);
        CHECK_EQ_INT(pk.end, 1); /* the open connection was closed by the stop */
        CHECK_EQ_INT(rec_get(&r, &r.last_reason), NS_ERR_STOPPED);
        ns_server_free(srv);
        signal(SIGUSR1, SIG_DFL);
    }

    SECTION("run_in_wait: UDP datagrams answered on the thread in ns_server_wait");
    memset(&u, 0, sizeof u);
    pthread_mutex_init(&u.lock, NULL);
    srv = NULL;
    o = ns_options_new();
    CHECK_EQ_INT(ns_options_set_run_in_wait(o, 1), NS_OK);
    CHECK_EQ_INT(ns_udp_serve("127.0.0.1:0", urec_dgram, &u, o, &srv), NS_OK);
    ns_options_free(o);
    if (!srv)
        return;
    CHECK_EQ_INT(proc_status_num("Threads"), threads_before);
    memset(&job, 0, sizeof job);
    job.srv = srv;
    job.udp = 1;
    CHECK_EQ_INT(ns_server_addr(srv, job.addr, sizeof job.addr), NS_OK);
    CHECK_EQ_INT(pthread_create(&cl, NULL, in_wait_client, &job), 0);
    CHECK_EQ_INT(ns_server_wait(srv), NS_OK);
    pthread_join(cl, NULL);
    CHECK(job.pinged);
    pthread_mutex_lock(&u.lock);
    CHECK_EQ_INT(u.count, 1);
    CHECK(u.have_thread && pthread_equal(u.cb_thread, pthread_self()));
    pthread_mutex_unlock(&u.lock);
    ns_server_free(srv);
}

/* ---- a loop run by ns_server_wait inside another server's callback ---------- */

static ns_server *nest_a, *nest_b;
static pthread_mutex_t nest_lock = PTHREAD_MUTEX_INITIALIZER;
static int nest_opens, nest_wait_a_rc = 99, nest_wait_b_rc = 99, nest_freed, nest_late;

static int nest_get(int *p)
{
    return locked_int(&nest_lock, p);
}

static void nest_open(ns_conn *c, void *u)
{
    (void)c;
    (void)u;
    pthread_mutex_lock(&nest_lock);
    nest_opens++;
    pthread_mutex_unlock(&nest_lock);
}

/* A's connection on loop 1 closes slowly: the free of A must wait for it. */
static void nest_close(ns_conn *c, int reason, void *u)
{
    (void)reason;
    (void)u;
    if ((ns_conn_id(c) & 0xff) == 1) {
        sleep_ms(200);
        pthread_mutex_lock(&nest_lock);
        nest_late |= nest_freed;
        pthread_mutex_unlock(&nest_lock);
    }
}

/* B's datagram, on A's loop-0 thread inside A's callback: waiting for A would wait for this
 * very thread; freeing A cannot join it, but must join A's other loop. */
static void nest_dgram(ns_server *s, const ns_peer *from, const uint8_t *d, size_t n, void *u)
{
    (void)from;
    (void)d;
    (void)n;
    (void)u;
    int rc = ns_server_wait(nest_a);
    ns_server_free(nest_a);
    pthread_mutex_lock(&nest_lock);
    nest_wait_a_rc = rc;
    nest_freed = 1;
    pthread_mutex_unlock(&nest_lock);
    CHECK_EQ_INT(ns_server_stop(s), NS_OK);
}

static void nest_data(ns_conn *c, const uint8_t *d, size_t n, void *u)
{
    (void)c;
    (void)d;
    (void)n;
    (void)u;
    int rc = ns_server_wait(nest_b); /* runs B's loop here, until B stops */
    pthread_mutex_lock(&nest_lock);
    nest_wait_b_rc = rc;
    pthread_mutex_unlock(&nest_lock);
}

static void test_nested_wait(void)
{
    char baddr[64];
    int fd0, fd1;
    ns_options *o;

    SECTION("run_in_wait nested in another server's callback: wait is misuse, free joins the rest");
    o = ns_options_new();
    CHECK_EQ_INT(ns_options_set_threads(o, 2), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_open(o, nest_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, nest_close), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", nest_data, NULL, o, &nest_a), NS_OK);
    ns_options_free(o);
    o = ns_options_new();
    CHECK_EQ_INT(ns_options_set_run_in_wait(o, 1), NS_OK);
    CHECK_EQ_INT(ns_udp_serve("127.0.0.1:0", nest_dgram, NULL, o, &nest_b), NS_OK);
    ns_options_free(o);
    if (!nest_a || !nest_b)
        return;
    CHECK_EQ_INT(ns_server_addr(nest_b, baddr, sizeof baddr), NS_OK);
    CHECK_EQ_INT(ns_udp_send(baddr, "x", 1), NS_OK); /* waits until B's loop runs */
    fd0 = tcp_connect4(ns_server_port(nest_a));       /* handed to A's loop 0 */
    WAIT_FOR(nest_get(&nest_opens) == 1, 5000);
    fd1 = tcp_connect4(ns_server_port(nest_a));       /* and this one to loop 1 */
    WAIT_FOR(nest_get(&nest_opens) == 2, 5000);
    CHECK_EQ_INT(nest_get(&nest_opens), 2);
    CHECK(fd0 >= 0 && fd1 >= 0);
    CHECK_EQ_INT(send(fd0, "go", 2, 0), 2);
    WAIT_FOR(nest_get(&nest_wait_b_rc) != 99, 5000);
    CHECK_EQ_INT(nest_get(&nest_wait_a_rc), NS_ERR_MISUSE);
    CHECK_EQ_INT(nest_get(&nest_freed), 1);
    CHECK_EQ_INT(nest_get(&nest_wait_b_rc), NS_OK);
    sleep_ms(250); /* a late on_close of A's loop 1 would show now */
    CHECK_EQ_INT(nest_get(&nest_late), 0);
    if (fd0 >= 0) {
        CHECK_EQ_INT(wait_eof(fd0, 5000), 1);
        close(fd0);
    }
    if (fd1 >= 0) {
        CHECK_EQ_INT(wait_eof(fd1, 5000), 1);
        close(fd1);
    }
    ns_server_free(nest_b);
}

/* ---- ns_conn_server while another thread frees the server ------------------- */

static int gone_in_data, gone_before_ok = -1, gone_after_null = -1;

static void gone_data(ns_conn *c, const uint8_t *d, size_t n, void *u)
{
    (void)d;
    (void)n;
    (void)u;
    int before = ns_conn_server(c) != NULL;
    pthread_mutex_lock(&nest_lock);
    gone_in_data = 1;
    pthread_mutex_unlock(&nest_lock);
    sleep_ms(200); /* the main thread calls ns_server_free meanwhile */
    pthread_mutex_lock(&nest_lock);
    gone_before_ok = before;
    gone_after_null = ns_conn_server(c) == NULL;
    pthread_mutex_unlock(&nest_lock);
}

static void test_conn_server_during_free(void)
{
    ns_server *srv = NULL;
    int fd;

    SECTION("ns_server_free from another thread: a running callback's ns_conn_server gives NULL");
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", gone_data, NULL, NULL, &srv), NS_OK);
    if (!srv)
        return;
    fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    CHECK_EQ_INT(send(fd, "x", 1, 0), 1);
    WAIT_FOR(nest_get(&gone_in_data), 5000);
    ns_server_free(srv); /* returns after the callback */
    CHECK_EQ_INT(nest_get(&gone_before_ok), 1);
    CHECK_EQ_INT(nest_get(&gone_after_null), 1);
    if (fd >= 0)
        close(fd);
}

int main(void)
{
    watchdog(100);
    test_stop_from_thread();
    test_stop_from_callback();
    test_stop_from_signal();
    test_free_with_client();
    test_server_send_threads();
    test_concurrent_clients();
    test_udp_threads();
    test_run_in_wait();
    test_nested_wait();
    test_conn_server_during_free();
    return CHECK_DONE();
}
