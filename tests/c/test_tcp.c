/* test_tcp.c - TCP echo server with many concurrent plain clients, on_open /
 * on_close accounting, 1 MiB exchange through ns_tcp_send, truncated reply,
 * half-close, peer reset, ns_conn_peer. */
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "netsock.h"
#include "check.h"

#define NCLIENTS 300
#define MAXCONNS 1024

/* ---- a bookkeeping echo server --------------------------------------------- */

struct conn_rec {
    uint64_t id;
    int opened;
    int closed;
    int close_reason;
    size_t bytes;
    int peer_port; /* from ns_conn_peer in on_open */
};

struct echo_state {
    pthread_mutex_t lock;
    struct conn_rec conns[MAXCONNS];
    int nconns;
    int opens;
    int closes;
    int bad_id;      /* id 0, duplicate id, or data/close for an unknown id */
    int double_close;
    int check_reason; /* expect NS_OK as every on_close reason */
    int wrong_reason;
    int other_threads; /* callbacks on a different thread than the first one */
    int have_thread;
    pthread_t cb_thread;
    int tolerate_send_errors; /* peers that stop reading early (truncation tests) */
    /* reply behaviour */
    size_t reply_extra; /* on_data: also send this many pattern bytes (half-close test) */
};

static void es_init(struct echo_state *st)
{
    memset(st, 0, sizeof *st);
    pthread_mutex_init(&st->lock, NULL);
}

static void es_thread(struct echo_state *st)
{
    /* caller holds lock */
    if (!st->have_thread) {
        st->have_thread = 1;
        st->cb_thread = pthread_self();
    } else if (!pthread_equal(st->cb_thread, pthread_self())) {
        st->other_threads++;
    }
}

static struct conn_rec *es_find(struct echo_state *st, uint64_t id)
{
    int i;
    for (i = 0; i < st->nconns; i++)
        if (st->conns[i].id == id)
            return &st->conns[i];
    return NULL;
}

static int parse_port(const char *peer)
{
    const char *colon = strrchr(peer, ':');
    return colon ? atoi(colon + 1) : -1;
}

static void es_on_open(ns_conn *conn, void *user)
{
    struct echo_state *st = (struct echo_state *)user;
    uint64_t id = ns_conn_id(conn);
    char peer[128];
    int prc = ns_conn_peer(conn, peer, sizeof peer);
    pthread_mutex_lock(&st->lock);
    es_thread(st);
    st->opens++;
    if (id == 0 || es_find(st, id) != NULL || st->nconns >= MAXCONNS) {
        st->bad_id++;
    } else {
        struct conn_rec *r = &st->conns[st->nconns++];
        r->id = id;
        r->opened = 1;
        r->peer_port = prc == NS_OK && strncmp(peer, "127.0.0.1:", 10) == 0 ? parse_port(peer) : -1;
    }
    pthread_mutex_unlock(&st->lock);
}

static void es_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct echo_state *st = (struct echo_state *)user;
    uint64_t id = ns_conn_id(conn);
    struct conn_rec *r;
    size_t extra;
    int rc, tolerate;
    pthread_mutex_lock(&st->lock);
    es_thread(st);
    r = es_find(st, id);
    if (!r || r->closed)
        st->bad_id++;
    else
        r->bytes += len;
    extra = st->reply_extra;
    tolerate = st->tolerate_send_errors;
    pthread_mutex_unlock(&st->lock);
    rc = ns_conn_send(conn, data, len);
    if (rc != NS_OK && !(tolerate && (rc == NS_ERR_RESET || rc == NS_ERR_CLOSED)))
        CHECK_EQ_INT(rc, NS_OK);
    if (extra) {
        /* a big reply: far more than the socket buffers hold, so most of it
           is queued inside the library when the peer's FIN is seen */
        char *big = malloc(extra);
        size_t i;
        CHECK(big != NULL);
        if (big) {
            for (i = 0; i < extra; i++)
                big[i] = (char)('a' + i % 23);
            CHECK_EQ_INT(ns_conn_send(conn, big, extra), NS_OK);
            free(big);
        }
    }
}

static void es_on_close(ns_conn *conn, int reason, void *user)
{
    struct echo_state *st = (struct echo_state *)user;
    uint64_t id = ns_conn_id(conn);
    struct conn_rec *r;
    pthread_mutex_lock(&st->lock);
    es_thread(st);
    st->closes++;
    r = es_find(st, id);
    if (!r) {
        st->bad_id++;
    } else {
        if (r->closed)
            st->double_close++;
        r->closed++;
        r->close_reason = reason;
        if (st->check_reason && reason != NS_OK)
            st->wrong_reason++;
    }
    pthread_mutex_unlock(&st->lock);
}

static int es_closes(struct echo_state *st)
{
    int v;
    pthread_mutex_lock(&st->lock);
    v = st->closes;
    pthread_mutex_unlock(&st->lock);
    return v;
}

static int es_opens(struct echo_state *st)
{
    int v;
    pthread_mutex_lock(&st->lock);
    v = st->opens;
    pthread_mutex_unlock(&st->lock);
    return v;
}

static ns_server *es_serve(struct echo_state *st, const char *addr)
{
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    CHECK(o != NULL);
    CHECK_EQ_INT(ns_options_set_on_open(o, es_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, es_on_close), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve(addr, es_on_data, st, o, &srv), NS_OK);
    ns_options_free(o);
    return srv;
}

/* ---- 300 concurrent clients ----------------------------------------------- */

struct client {
    int fd;
    char msg[512];
    size_t len;
    size_t sent;
    char got[512];
    size_t rcvd;
    int connected;
    int done;
    int failed;
    int local_port;
};

static void test_many_clients(void)
{
    static struct echo_state st;
    static struct client cl[NCLIENTS];
    static struct pollfd pfd[NCLIENTS];
    ns_server *srv;
    struct sockaddr_in sa;
    int port, i, remaining, ok = 0, mism = 0, ports_ok = 0;
    int64_t deadline;
    struct rlimit rl;

    SECTION("300 concurrent echo clients");
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 2 * NCLIENTS + 64) {
        rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    es_init(&st);
    st.check_reason = 1;
    srv = es_serve(&st, "127.0.0.1:0");
    if (!srv)
        return;
    port = ns_server_port(srv);
    CHECK(port > 0);

    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);

    for (i = 0; i < NCLIENTS; i++) {
        struct client *c = &cl[i];
        int j, n;
        memset(c, 0, sizeof *c);
        n = snprintf(c->msg, sizeof c->msg, "client %03d says hello:", i);
        /* distinct lengths and content */
        for (j = 0; j < i % 97; j++)
            c->msg[n + j] = (char)('A' + (i + j) % 26);
        c->len = (size_t)n + (size_t)(i % 97);
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0 || set_nonblock(c->fd) != 0) {
            c->failed = 1;
            c->done = 1;
            continue;
        }
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            c->connected = 1;
        else if (errno != EINPROGRESS) {
            fprintf(stderr, "client %d connect: %s\n", i, strerror(errno));
            c->failed = 1;
            c->done = 1;
        }
        c->local_port = sock_port(c->fd);
    }

    deadline = now_ms() + 20000;
    for (;;) {
        int nf = 0, r;
        int64_t left;
        remaining = 0;
        for (i = 0; i < NCLIENTS; i++) {
            struct client *c = &cl[i];
            if (c->done)
                continue;
            remaining++;
            pfd[nf].fd = c->fd;
            pfd[nf].events = (short)(c->connected ? (c->sent < c->len ? POLLOUT : POLLIN) : POLLOUT);
            pfd[nf].revents = 0;
            nf++;
        }
        left = deadline - now_ms();
        if (remaining == 0 || left <= 0)
            break;
        r = poll(pfd, (nfds_t)nf, (int)(left < 200 ? left : 200));
        if (r <= 0)
            continue;
        nf = 0;
        for (i = 0; i < NCLIENTS; i++) {
            struct client *c = &cl[i];
            short rev;
            if (c->done)
                continue;
            rev = pfd[nf++].revents;
            if (!rev)
                continue;
            if (!c->connected) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) {
                    fprintf(stderr, "client %d connect: %s\n", i, strerror(err));
                    c->failed = c->done = 1;
                    continue;
                }
                c->connected = 1;
            }
            if (c->sent < c->len) {
                ssize_t w = send(c->fd, c->msg + c->sent, c->len - c->sent, MSG_NOSIGNAL);
                if (w > 0)
                    c->sent += (size_t)w;
                else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                    fprintf(stderr, "client %d send: %s\n", i, strerror(errno));
                    c->failed = c->done = 1;
                }
                continue;
            }
            {
                ssize_t rd = recv(c->fd, c->got + c->rcvd, sizeof c->got - c->rcvd, 0);
                if (rd > 0) {
                    c->rcvd += (size_t)rd;
                    if (c->rcvd >= c->len)
                        c->done = 1;
                } else if (rd == 0) {
                    fprintf(stderr, "client %d: early EOF after %zu bytes\n", i, c->rcvd);
                    c->failed = c->done = 1;
                } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                    fprintf(stderr, "client %d recv: %s\n", i, strerror(errno));
                    c->failed = c->done = 1;
                }
            }
        }
    }
    CHECK_EQ_INT(remaining, 0);

    /* everything was open at the same time: all 300 opened before any closed */
    CHECK_EQ_INT(es_opens(&st), NCLIENTS);
    CHECK_EQ_INT(es_closes(&st), 0);

    /* ns_conn_peer of each connection is the port of one of our clients */
    pthread_mutex_lock(&st.lock);
    for (i = 0; i < st.nconns; i++) {
        int j;
        for (j = 0; j < NCLIENTS; j++)
            if (cl[j].local_port == st.conns[i].peer_port) {
                ports_ok++;
                break;
            }
    }
    pthread_mutex_unlock(&st.lock);
    CHECK_EQ_INT(ports_ok, NCLIENTS);

    for (i = 0; i < NCLIENTS; i++) {
        struct client *c = &cl[i];
        if (!c->failed && c->rcvd == c->len && memcmp(c->got, c->msg, c->len) == 0)
            ok++;
        else if (!c->failed) {
            mism++;
            if (mism < 5)
                fprintf(stderr, "client %d: got %zu bytes, wanted %zu (\"%.*s\")\n", i, c->rcvd,
                        c->len, (int)c->rcvd, c->got);
        }
        if (c->fd >= 0)
            close(c->fd);
    }
    CHECK_EQ_INT(ok, NCLIENTS);
    CHECK_EQ_INT(mism, 0);

    /* every connection gets exactly one on_close(NS_OK) */
    WAIT_FOR(es_closes(&st) >= NCLIENTS, 10000);
    sleep_ms(50); /* a late duplicate would show up here */
    pthread_mutex_lock(&st.lock);
    CHECK_EQ_INT(st.opens, NCLIENTS);
    CHECK_EQ_INT(st.closes, NCLIENTS);
    CHECK_EQ_INT(st.nconns, NCLIENTS);
    CHECK_EQ_INT(st.bad_id, 0);
    CHECK_EQ_INT(st.double_close, 0);
    CHECK_EQ_INT(st.wrong_reason, 0);
    CHECK_EQ_INT(st.other_threads, 0);
    CHECK(st.have_thread && !pthread_equal(st.cb_thread, pthread_self()));
    {
        int unclosed = 0;
        size_t total = 0, expect = 0;
        for (i = 0; i < st.nconns; i++) {
            if (st.conns[i].closed != 1)
                unclosed++;
            total += st.conns[i].bytes;
        }
        for (i = 0; i < NCLIENTS; i++)
            expect += cl[i].len;
        CHECK_EQ_INT(unclosed, 0);
        CHECK_EQ_INT(total, expect);
    }
    pthread_mutex_unlock(&st.lock);
    ns_server_free(srv);
}

/* ---- 1 MiB through ns_tcp_send --------------------------------------------- */

static void test_big_exchange(void)
{
    static struct echo_state st;
    const size_t N = 1024 * 1024;
    unsigned char *data, *reply;
    size_t i, rlen = 0;
    char addr[128];
    ns_server *srv;
    int rc;

    SECTION("1 MiB exchange and truncated reply");
    es_init(&st);
    st.tolerate_send_errors = 1;
    srv = es_serve(&st, "127.0.0.1:0");
    if (!srv)
        return;
    CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);
    data = malloc(N);
    reply = malloc(N);
    CHECK(data && reply);
    if (!data || !reply) {
        free(data);
        free(reply);
        ns_server_free(srv);
        return;
    }
    for (i = 0; i < N; i++)
        data[i] = (unsigned char)((i * 7 + i / 251) & 0xff);
    memset(reply, 0, N);
    rc = ns_tcp_send(addr, data, N, reply, N, &rlen, 20000);
    CHECK_EQ_INT(rc, NS_OK);
    CHECK_EQ_INT(rlen, N);
    CHECK(memcmp(reply, data, N) == 0);

    /* the reply is exactly as large as the buffer: still NS_OK, not truncated */
    rlen = 0;
    rc = ns_tcp_send(addr, data, 4096, reply, 4096, &rlen, 10000);
    CHECK_EQ_INT(rc, NS_OK);
    CHECK_EQ_INT(rlen, 4096);

    /* truncated: 256 KiB echoed into a 1000-byte buffer */
    memset(reply, 0, N);
    rlen = 0;
    rc = ns_tcp_send(addr, data, 256 * 1024, reply, 1000, &rlen, 10000);
    CHECK_EQ_INT(rc, NS_ERR_TRUNCATED);
    CHECK_EQ_INT(rlen, 1000);
    CHECK(memcmp(reply, data, 1000) == 0);
    CHECK(reply[1000] == 0); /* nothing written past reply_cap */

    /* reply_cap 0 with reply NULL and a non-empty echo is truncated as well */
    rlen = 77;
    rc = ns_tcp_send(addr, "abc", 3, NULL, 0, &rlen, 10000);
    CHECK_EQ_INT(rc, NS_ERR_TRUNCATED);
    CHECK_EQ_INT(rlen, 0);

    /* empty request: the server sees only open/close, the reply is empty */
    rlen = 77;
    rc = ns_tcp_send(addr, NULL, 0, reply, 16, &rlen, 10000);
    CHECK_EQ_INT(rc, NS_OK);
    CHECK_EQ_INT(rlen, 0);

    /* after all that the server still has consistent accounting */
    WAIT_FOR(es_closes(&st) >= es_opens(&st), 5000);
    pthread_mutex_lock(&st.lock);
    CHECK_EQ_INT(st.opens, 5);
    CHECK_EQ_INT(st.closes, 5);
    CHECK_EQ_INT(st.bad_id, 0);
    CHECK_EQ_INT(st.double_close, 0);
    /* the 1 MiB one closed normally */
    CHECK(st.nconns >= 1 && st.conns[0].close_reason == NS_OK);
    CHECK_EQ_INT(st.conns[0].bytes, N);
    pthread_mutex_unlock(&st.lock);

    ns_server_free(srv);
    free(data);
    free(reply);
}

/* ---- half-close ------------------------------------------------------------ */

static void test_half_close(void)
{
    static struct echo_state st;
    const size_t EXTRA = 4 * 1024 * 1024;
    ns_server *srv;
    int fd, eof = 0;
    size_t n, i, bad = 0;
    char *buf;

    SECTION("half-close: reply is fully delivered, then the connection closes");
    es_init(&st);
    st.reply_extra = EXTRA;
    srv = es_serve(&st, "127.0.0.1:0");
    if (!srv)
        return;
    fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    buf = malloc(EXTRA + 64);
    CHECK(buf != NULL);
    if (fd >= 0 && buf) {
        CHECK_EQ_INT(write_all_timeout(fd, "hello", 5, 2000), 5);
        CHECK_EQ_INT(shutdown(fd, SHUT_WR), 0);
        /* read everything up to EOF */
        n = read_timeout(fd, buf, EXTRA + 64, 20000, &eof);
        CHECK_EQ_INT(n, 5 + EXTRA);
        CHECK_EQ_INT(eof, 1);
        CHECK(n >= 5 && memcmp(buf, "hello", 5) == 0);
        for (i = 5; i < n; i++)
            if (buf[i] != (char)('a' + (i - 5) % 23))
                bad++;
        CHECK_EQ_INT(bad, 0);
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    WAIT_FOR(es_closes(&st) >= 1, 5000);
    pthread_mutex_lock(&st.lock);
    CHECK_EQ_INT(st.opens, 1);
    CHECK_EQ_INT(st.closes, 1);
    CHECK(st.nconns == 1 && st.conns[0].close_reason == NS_OK);
    pthread_mutex_unlock(&st.lock);
    ns_server_free(srv);
}

/* ---- peer reset --------------------------------------------------------------- */

static void test_reset(void)
{
    static struct echo_state st;
    ns_server *srv;
    int fd;
    char buf[8];

    SECTION("peer reset -> on_close NS_ERR_RESET");
    es_init(&st);
    srv = es_serve(&st, "127.0.0.1:0");
    if (!srv)
        return;
    fd = tcp_connect4(ns_server_port(srv));
    CHECK(fd >= 0);
    if (fd >= 0) {
        struct linger lg;
        CHECK_EQ_INT(write_all_timeout(fd, "ping", 4, 2000), 4);
        CHECK_EQ_INT(read_timeout(fd, buf, 4, 5000, NULL), 4);
        lg.l_onoff = 1;
        lg.l_linger = 0;
        CHECK_EQ_INT(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
        close(fd); /* sends RST */
    }
    WAIT_FOR(es_closes(&st) >= 1, 5000);
    pthread_mutex_lock(&st.lock);
    CHECK_EQ_INT(st.closes, 1);
    CHECK(st.nconns == 1);
    if (st.nconns == 1)
        CHECK_EQ_INT(st.conns[0].close_reason, NS_ERR_RESET);
    pthread_mutex_unlock(&st.lock);
    ns_server_free(srv);
}

/* ---- ns_server_addr / port agree ------------------------------------------------ */

static void test_addr_text(void)
{
    static struct echo_state st;
    ns_server *srv;
    char addr[128], expect[64], reply[8];
    size_t rlen = 0;

    SECTION("server address text; localhost client");
    es_init(&st);
    srv = es_serve(&st, "127.0.0.1:0");
    if (!srv)
        return;
    CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);
    snprintf(expect, sizeof expect, "127.0.0.1:%d", ns_server_port(srv));
    CHECK_EQ_STR(addr, expect);
    /* "localhost:port" reaches the 127.0.0.1 server */
    snprintf(expect, sizeof expect, "localhost:%d", ns_server_port(srv));
    CHECK_EQ_INT(ns_tcp_send(expect, "lh", 2, reply, sizeof reply, &rlen, 5000), NS_OK);
    CHECK_EQ_INT(rlen, 2);
    CHECK(memcmp(reply, "lh", 2) == 0);
    ns_server_free(srv);
}

int main(void)
{
    watchdog(100);
    test_many_clients();
    test_big_exchange();
    test_half_close();
    test_reset();
    test_addr_text();
    return CHECK_DONE();
}
