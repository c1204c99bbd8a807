/* test_owned.c - sends without a copy: ns_conn_send_owned, ns_server_send_owned and
 * ns_client_send_owned write from the caller's buffer and call free_fn exactly once, on the
 * loop thread, once it is written or when the connection ends; a refused call does NOT call
 * free_fn (the caller still owns the buffer). One send of any size is taken when nothing waits
 * for the connection, and one that would pile up past the write buffer limit is refused. A
 * 1 GiB owned send streams with the process's memory flat. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "netsock.h"
#include "check.h"

/* ---- a release that counts, and checks its thread ----------------------------------- */

struct rel {
    pthread_mutex_t lock;
    int calls;
    int wrong_thread; /* called on another thread than the loop's */
    int have_loop;
    pthread_t loop;
    size_t unmap; /* the buffer is a mapping of this many bytes (munmap), else malloc'd */
};

static void release(void *data, void *user)
{
    struct rel *r = (struct rel *)user;
    pthread_mutex_lock(&r->lock);
    r->calls++;
    if (r->have_loop && !pthread_equal(pthread_self(), r->loop))
        r->wrong_thread++;
    pthread_mutex_unlock(&r->lock);
    if (r->unmap)
        munmap(data, r->unmap);
    else
        free(data);
}

static void rel_init(struct rel *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
}

static void rel_loop_is_me(struct rel *r)
{
    pthread_mutex_lock(&r->lock);
    r->loop = pthread_self();
    r->have_loop = 1;
    pthread_mutex_unlock(&r->lock);
}

static char *copy_of(const void *p, size_t n)
{
    char *c = malloc(n ? n : 1);
    if (c)
        memcpy(c, p, n);
    return c;
}

/* ---- an echo server answering with owned sends -------------------------------------- */

struct srv_state {
    struct rel rel;
    pthread_mutex_t lock;
    uint64_t id;
    int closes;
    int send_errors;      /* an owned echo refused */
    int refused_ok;       /* refusals with the expected code */
};

static void o_on_open(ns_conn *conn, void *user)
{
    struct srv_state *s = (struct srv_state *)user;
    rel_loop_is_me(&s->rel);
    pthread_mutex_lock(&s->lock);
    s->id = ns_conn_id(conn);
    pthread_mutex_unlock(&s->lock);
}

static void o_on_close(ns_conn *conn, int reason, void *user)
{
    struct srv_state *s = (struct srv_state *)user;
    (void)conn, (void)reason;
    pthread_mutex_lock(&s->lock);
    s->closes++;
    pthread_mutex_unlock(&s->lock);
}

/* A refused call leaves the buffer ours (a release that ran for it would show in the count
 * of releases, and make this free a double free under ASan and valgrind). */
static void expect_refused(struct srv_state *s, int rc, int want, char *buf)
{
    pthread_mutex_lock(&s->lock);
    if (rc == want)
        s->refused_ok++;
    pthread_mutex_unlock(&s->lock);
    free(buf);
}

static void o_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct srv_state *s = (struct srv_state *)user;
    char *copy;
    int rc;
    if (len >= 5 && memcmp(data, "close", 5) == 0) {
        ns_conn_close(conn);
        copy = copy_of(data, len);
        expect_refused(s, ns_conn_send_owned(conn, copy, len, release, &s->rel), NS_ERR_CLOSED, copy);
        return;
    }
    copy = copy_of(data, len);
    expect_refused(s, ns_conn_send_owned(conn, copy, len, NULL, &s->rel), NS_ERR_INVALID, copy);
    expect_refused(s, ns_conn_send_owned(conn, NULL, 1, release, &s->rel), NS_ERR_INVALID, NULL);
    copy = copy_of(data, len);
    rc = ns_conn_send_owned(conn, copy, len, release, &s->rel);
    if (rc != NS_OK) {
        free(copy);
        pthread_mutex_lock(&s->lock);
        s->send_errors++;
        pthread_mutex_unlock(&s->lock);
    }
}

static ns_server *serve(struct srv_state *s, size_t max_write_buffer)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    memset(s, 0, sizeof *s);
    rel_init(&s->rel);
    pthread_mutex_init(&s->lock, NULL);
    CHECK(o != NULL);
    if (!o)
        return NULL;
    CHECK_EQ_INT(ns_options_set_on_open(o, o_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, o_on_close), NS_OK);
    if (max_write_buffer)
        CHECK_EQ_INT(ns_options_set_max_write_buffer(o, max_write_buffer), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", o_on_data, s, o, &srv), NS_OK);
    ns_options_free(o);
    return srv;
}

static uint64_t conn_id(struct srv_state *s)
{
    uint64_t id;
    pthread_mutex_lock(&s->lock);
    id = s->id;
    pthread_mutex_unlock(&s->lock);
    return id;
}

static void test_conn_send_owned(void)
{
    static struct srv_state s;
    ns_server *srv;
    char msg[64], got[64];
    int fd, i, ok = 1;

    SECTION("ns_conn_send_owned: an echo from the caller's buffers, each released once, on the loop");
    srv = serve(&s, 0);
    if (!srv)
        return;
    fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    for (i = 0; i < 100 && fd >= 0; i++) {
        int n = snprintf(msg, sizeof msg, "message %03d", i);
        if (write_all_timeout(fd, msg, (size_t)n, 3000) != (size_t)n ||
            read_timeout(fd, got, (size_t)n, 3000, NULL) != (size_t)n || memcmp(got, msg, (size_t)n) != 0)
            ok = 0;
    }
    CHECK(ok);
    WAIT_FOR(locked_int(&s.rel.lock, &s.rel.calls) >= 100, 3000);
    CHECK_EQ_INT(locked_int(&s.rel.lock, &s.rel.calls), 100);
    CHECK_EQ_INT(locked_int(&s.rel.lock, &s.rel.wrong_thread), 0);
    CHECK_EQ_INT(locked_int(&s.lock, &s.send_errors), 0);
    /* two refusals per message (NULL free_fn, NULL data), none released */
    CHECK_EQ_INT(locked_int(&s.lock, &s.refused_ok), 200);

    SECTION("ns_conn_send_owned after ns_conn_close: NS_ERR_CLOSED, the buffer stays the caller's");
    if (fd >= 0) {
        CHECK_EQ_INT((int)write_all_timeout(fd, "close", 5, 3000), 5);
        WAIT_FOR(locked_int(&s.lock, &s.closes) == 1, 3000);
        CHECK_EQ_INT(locked_int(&s.lock, &s.refused_ok), 201);
        CHECK_EQ_INT(locked_int(&s.rel.lock, &s.rel.calls), 100);
        close(fd);
    }

    SECTION("ns_server_send_owned refusals: stale id, NULL arguments; free_fn not called");
    {
        char *b = copy_of("abcd", 4);
        CHECK_EQ_INT(ns_server_send_owned(srv, 999999, b, 4, release, &s.rel), NS_ERR_CLOSED);
        CHECK_EQ_INT(ns_server_send_owned(NULL, 1, b, 4, release, &s.rel), NS_ERR_INVALID);
        CHECK_EQ_INT(ns_server_send_owned(srv, 1, b, 4, NULL, &s.rel), NS_ERR_INVALID);
        CHECK_EQ_INT(ns_server_send_owned(srv, 1, NULL, 4, release, &s.rel), NS_ERR_INVALID);
        CHECK_EQ_INT(ns_conn_send_owned(NULL, b, 4, release, &s.rel), NS_ERR_INVALID);
        CHECK_EQ_INT(ns_client_send_owned(NULL, b, 4, release, &s.rel), NS_ERR_INVALID);
        sleep_ms(50);
        CHECK_EQ_INT(locked_int(&s.rel.lock, &s.rel.calls), 100);
        free(b);
    }
    ns_server_free(srv);
}

static void test_any_size_and_limit(void)
{
    static struct srv_state s;
    const size_t big = 32u << 20, limit = 64u << 10;
    ns_server *srv;
    char *b, *small;
    uint64_t id;
    int fd;

    SECTION("one send of any size is taken when nothing waits; the next one past the limit is refused");
    srv = serve(&s, limit);
    if (!srv)
        return;
    fd = tcp_connect4(ns_server_port(srv)); /* and never reads, until it resets */
    CHECK(fd >= 0);
    WAIT_FOR(conn_id(&s) != 0, 3000);
    id = conn_id(&s);
    b = malloc(big);
    small = copy_of("x", 1);
    CHECK(b != NULL && small != NULL && fd >= 0 && id != 0);
    if (!b || !small || fd < 0 || id == 0)
        return;
    memset(b, 'b', big);
    /* 512 times the 64 KiB limit: taken, since nothing waited; the peer reads none of it, so
       most of it waits in the queue (no socket buffers hold 32 MiB) */
    CHECK_EQ_INT(ns_server_send_owned(srv, id, b, big, release, &s.rel), NS_OK);
    CHECK_EQ_INT(ns_server_send(srv, id, "x", 1), NS_ERR_LIMIT);
    CHECK_EQ_INT(ns_server_send_owned(srv, id, small, 1, release, &s.rel), NS_ERR_LIMIT);
    sleep_ms(100);
    CHECK_EQ_INT(locked_int(&s.rel.lock, &s.rel.calls), 0); /* neither written nor ended */
    free(small); /* refused: still ours */
    close_reset(fd); /* the connection fails: the lent buffer is released with its queue */
    WAIT_FOR(locked_int(&s.rel.lock, &s.rel.calls) == 1, 5000);
    CHECK_EQ_INT(locked_int(&s.rel.lock, &s.rel.calls), 1);
    CHECK_EQ_INT(locked_int(&s.rel.lock, &s.rel.wrong_thread), 0);
    WAIT_FOR(locked_int(&s.lock, &s.closes) == 1, 3000);
    CHECK_EQ_INT(locked_int(&s.lock, &s.closes), 1);
    ns_server_free(srv);
    CHECK_EQ_INT(locked_int(&s.rel.lock, &s.rel.calls), 1);
}

/* Valgrind checks every byte a sendmsg is handed (the whole rest of the buffer, each call). */
static int under_valgrind(void)
{
    const char *p = getenv("LD_PRELOAD");
    return p && strstr(p, "vgpreload") != NULL;
}

static void test_gigabyte(void)
{
    static struct srv_state s;
    const size_t total = under_valgrind() ? (size_t)64 << 20 : (size_t)1 << 30;
    static char buf[256 * 1024];
    ns_server *srv;
    size_t got = 0;
    long base, peak = 0, rss;
    int64_t end;
    uint64_t id;
    void *p;
    int fd;

    SECTION("a 1 GiB owned send (64 MiB under valgrind) streams with memory flat, then is released once, on the loop");
    srv = serve(&s, 0);
    if (!srv)
        return;
    fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    WAIT_FOR(conn_id(&s) != 0, 3000);
    id = conn_id(&s);
    /* never written to: its pages are the shared zero page, so only a copy would grow RSS */
    p = mmap(NULL, total, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED && fd >= 0 && id != 0);
    if (p == MAP_FAILED || fd < 0 || id == 0)
        return;
    s.rel.unmap = total;
    peak = base = proc_status_num("VmRSS");
    CHECK_EQ_INT(ns_server_send_owned(srv, id, p, total, release, &s.rel), NS_OK);
    end = now_ms() + 90000;
    while (got < total && now_ms() < end) {
        size_t want = total - got < sizeof buf ? total - got : sizeof buf;
        int eof = 0;
        size_t n = read_timeout(fd, buf, want, 5000, &eof);
        if (n == 0)
            break;
        got += n;
        if ((got & ((64u << 20) - 1)) < n && (rss = proc_status_num("VmRSS")) > peak)
            peak = rss;
    }
    CHECK(got == total);
    printf("%zu MiB received; VmRSS %ld kB before, at most %ld kB while streaming\n", got >> 20, base, peak);
    CHECK(base > 0 && peak - base < 64 * 1024); /* kB: no copy of the gigabyte */
    WAIT_FOR(locked_int(&s.rel.lock, &s.rel.calls) == 1, 5000);
    CHECK_EQ_INT(locked_int(&s.rel.lock, &s.rel.calls), 1);
    CHECK_EQ_INT(locked_int(&s.rel.lock, &s.rel.wrong_thread), 0);
    close(fd);
    ns_server_free(srv);
}

/* ---- a client's owned sends ---------------------------------------------------------- */

static struct rel g_crel;
static int g_cclosed;

static void c_on_open(ns_conn *conn, void *user)
{
    (void)conn, (void)user;
    rel_loop_is_me(&g_crel);
}

static void c_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)conn, (void)data, (void)len, (void)user;
}

static void c_on_close(ns_conn *conn, int reason, void *user)
{
    (void)conn, (void)reason, (void)user;
    pthread_mutex_lock(&g_crel.lock);
    g_cclosed++;
    pthread_mutex_unlock(&g_crel.lock);
}

static void test_client_send_owned(void)
{
    ns_options *o = ns_options_new();
    ns_client *cl = NULL;
    char addr[64], got[16];
    char *b;
    int lfd, fd = -1;

    SECTION("ns_client_send_owned: written from the buffer, released once; refused after close");
    rel_init(&g_crel);
    lfd = bound_socket4(SOCK_STREAM);
    CHECK(lfd >= 0 && listen(lfd, 4) == 0 && o != NULL);
    if (lfd < 0 || !o)
        return;
    snprintf(addr, sizeof addr, "127.0.0.1:%d", sock_port(lfd));
    CHECK_EQ_INT(ns_options_set_on_open(o, c_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, c_on_close), NS_OK);
    CHECK_EQ_INT(ns_tcp_connect(addr, c_on_data, NULL, o, &cl), NS_OK);
    ns_options_free(o);
    if (cl)
        fd = accept(lfd, NULL, NULL);
    CHECK(fd >= 0);
    if (!cl || fd < 0) {
        close(lfd);
        return;
    }
    b = copy_of("lent bytes", 10);
    CHECK_EQ_INT(ns_client_send_owned(cl, b, 10, release, &g_crel), NS_OK);
    CHECK_EQ_INT((int)read_timeout(fd, got, 10, 3000, NULL), 10);
    CHECK(memcmp(got, "lent bytes", 10) == 0);
    WAIT_FOR(locked_int(&g_crel.lock, &g_crel.calls) == 1, 3000);
    CHECK_EQ_INT(locked_int(&g_crel.lock, &g_crel.calls), 1);
    CHECK_EQ_INT(locked_int(&g_crel.lock, &g_crel.wrong_thread), 0);
    CHECK_EQ_INT(ns_client_close(cl), NS_OK);
    WAIT_FOR(locked_int(&g_crel.lock, &g_cclosed) == 1, 3000);
    b = copy_of("late", 4);
    CHECK_EQ_INT(ns_client_send_owned(cl, b, 4, release, &g_crel), NS_ERR_CLOSED);
    sleep_ms(50);
    CHECK_EQ_INT(locked_int(&g_crel.lock, &g_crel.calls), 1);
    free(b); /* refused: still ours */
    ns_client_free(cl);
    close(fd);
    close(lfd);
}

int main(void)
{
    watchdog(180);
    test_conn_send_owned();
    test_any_size_and_limit();
    test_gigabyte();
    test_client_send_owned();
    return CHECK_DONE();
}
