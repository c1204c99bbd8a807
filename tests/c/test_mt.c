/* test_mt.c - loop threads: a TCP server with 4 threads and 200 concurrent
 * connections (per-connection state through ns_conn_set_user / ns_conn_user):
 * every connection's callbacks run on one thread, in order; several threads
 * are used, at once; ns_server_stats adds up. A UDP server with 4 threads
 * answers datagrams from several client threads. */
#include <sys/resource.h>

#include "netsock.h"
#include "check.h"

#define NCONN 200
#define NMSGS 5
#define NTHREADS 4
#define MAXTH 64

/* ---- thread bookkeeping shared by both servers ------------------------------- */

struct threads {
    pthread_mutex_t lock;
    pthread_t seen[MAXTH];
    int nseen;
    int inside;       /* callbacks running right now */
    int max_inside;   /* most callbacks running at once */
    int main_thread_cb;
};

static pthread_t main_thread;

static void th_enter(struct threads *t)
{
    int i, found = 0;
    pthread_t self = pthread_self();
    pthread_mutex_lock(&t->lock);
    for (i = 0; i < t->nseen; i++)
        if (pthread_equal(t->seen[i], self))
            found = 1;
    if (!found && t->nseen < MAXTH)
        t->seen[t->nseen++] = self;
    if (pthread_equal(self, main_thread))
        t->main_thread_cb++;
    t->inside++;
    if (t->inside > t->max_inside)
        t->max_inside = t->inside;
    pthread_mutex_unlock(&t->lock);
}

static void th_leave(struct threads *t)
{
    pthread_mutex_lock(&t->lock);
    t->inside--;
    pthread_mutex_unlock(&t->lock);
}

/* ---- the TCP server ------------------------------------------------------------ */

struct session {        /* per connection, allocated in on_open, freed in on_close */
    uint64_t id;
    pthread_t thread;
    int idx;            /* client index from the first message; -1 before */
    int next_seq;
    int thread_err;
    int order_err;
    int nmsg;
    uint64_t bytes;     /* message bytes plus their newlines */
};

struct result {         /* per client index, filled in on_close */
    int closes;
    int reason;
    int thread_err;
    int order_err;
    int nmsg;
    uint64_t bytes;
};

struct mt {
    pthread_mutex_t lock;
    struct threads th;
    struct result res[NCONN];
    int opens, closes;
    int bad;            /* NULL session, unknown index, send failures */
};

static struct mt mt;

static void mt_on_open(ns_conn *conn, void *user)
{
    struct mt *m = (struct mt *)user;
    struct session *s = calloc(1, sizeof *s);
    th_enter(&m->th);
    if (!s) {
        CHECK(s != NULL);
    } else {
        s->id = ns_conn_id(conn);
        s->thread = pthread_self();
        s->idx = -1;
        CHECK(ns_conn_user(conn) == NULL);
        CHECK_EQ_INT(ns_conn_set_user(conn, s), NS_OK);
    }
    pthread_mutex_lock(&m->lock);
    m->opens++;
    pthread_mutex_unlock(&m->lock);
    th_leave(&m->th);
}

static void mt_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct mt *m = (struct mt *)user;
    struct session *s = (struct session *)ns_conn_user(conn);
    char text[128];
    int idx = -1, seq = -1;
    struct timespec ts = {0, 200000}; /* 0.2 ms of "work", so threads overlap */
    th_enter(&m->th);
    if (!s || s->id != ns_conn_id(conn)) {
        pthread_mutex_lock(&m->lock);
        m->bad++;
        pthread_mutex_unlock(&m->lock);
        th_leave(&m->th);
        return;
    }
    if (!pthread_equal(s->thread, pthread_self()))
        s->thread_err++;
    memcpy(text, data, len < sizeof text - 1 ? len : sizeof text - 1);
    text[len < sizeof text - 1 ? len : sizeof text - 1] = 0;
    if (sscanf(text, "c%d m%d", &idx, &seq) != 2 || idx < 0 || idx >= NCONN)
        s->order_err++;
    else if (s->idx == -1 && seq == 0)
        s->idx = idx;
    if (idx != s->idx || seq != s->next_seq)
        s->order_err++;
    s->next_seq = seq + 1;
    s->nmsg++;
    s->bytes += len + 1;
    nanosleep(&ts, NULL);
    if (ns_conn_send_frame(conn, data, len) != NS_OK) {
        pthread_mutex_lock(&m->lock);
        m->bad++;
        pthread_mutex_unlock(&m->lock);
    }
    th_leave(&m->th);
}

static void mt_on_close(ns_conn *conn, int reason, void *user)
{
    struct mt *m = (struct mt *)user;
    struct session *s = (struct session *)ns_conn_user(conn);
    th_enter(&m->th);
    pthread_mutex_lock(&m->lock);
    m->closes++;
    if (!s || s->id != ns_conn_id(conn) || s->idx < 0 || s->idx >= NCONN) {
        m->bad++;
    } else {
        struct result *r = &m->res[s->idx];
        if (!pthread_equal(s->thread, pthread_self()))
            s->thread_err++;
        r->closes++;
        r->reason = reason;
        r->thread_err = s->thread_err;
        r->order_err = s->order_err;
        r->nmsg = s->nmsg;
        r->bytes = s->bytes;
    }
    pthread_mutex_unlock(&m->lock);
    free(s);
    th_leave(&m->th);
}

static int mt_closes(void)
{
    int c;
    pthread_mutex_lock(&mt.lock);
    c = mt.closes;
    pthread_mutex_unlock(&mt.lock);
    return c;
}

/* ---- 200 plain clients, each: send message k, read its echo, send k + 1 ---------- */

struct client {
    int fd;
    int connected;
    int seq;            /* message being exchanged */
    char out[128];
    size_t outlen, sent;
    char in[128];
    size_t got;
    int done, failed;
    uint64_t bytes;
};

static void client_next(struct client *c, int i)
{
    int pad = (i * 7 + c->seq * 13) % 40, n;
    n = snprintf(c->out, sizeof c->out, "c%d m%d ", i, c->seq);
    memset(c->out + n, 'a' + c->seq, (size_t)pad);
    c->out[n + pad] = '\n';
    c->outlen = (size_t)n + (size_t)pad + 1;
    c->sent = 0;
    c->got = 0;
}

static void test_tcp_threads(void)
{
    static struct client cl[NCONN];
    static struct pollfd pfd[NCONN];
    ns_options *o;
    ns_server *srv = NULL;
    struct sockaddr_in sa;
    ns_stats st;
    int i, remaining = NCONN, ok = 0;
    uint64_t total_bytes = 0;
    int64_t deadline;

    SECTION("4 loop threads, 200 concurrent connections, 5 messages each");
    pthread_mutex_init(&mt.lock, NULL);
    pthread_mutex_init(&mt.th.lock, NULL);
    o = ns_options_new();
    CHECK(o != NULL);
    if (!o)
        return;
    CHECK_EQ_INT(ns_options_set_threads(o, NTHREADS), NS_OK);
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_LINE), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_open(o, mt_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, mt_on_close), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", mt_on_data, &mt, o, &srv), NS_OK);
    ns_options_free(o);
    if (!srv)
        return;

    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)ns_server_port(srv));
    for (i = 0; i < NCONN; i++) {
        struct client *c = &cl[i];
        memset(c, 0, sizeof *c);
        client_next(c, i);
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0 || set_nonblock(c->fd) != 0) {
            c->failed = c->done = 1;
            remaining--;
            continue;
        }
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            c->connected = 1;
        else if (errno != EINPROGRESS) {
            c->failed = c->done = 1;
            remaining--;
        }
    }

    deadline = now_ms() + 20000;
    while (remaining > 0 && now_ms() < deadline) {
        int nf = 0, r;
        for (i = 0; i < NCONN; i++) {
            struct client *c = &cl[i];
            if (c->done)
                continue;
            pfd[nf].fd = c->fd;
            pfd[nf].events = (short)(!c->connected || c->sent < c->outlen ? POLLOUT : POLLIN);
            pfd[nf].revents = 0;
            nf++;
        }
        r = poll(pfd, (nfds_t)nf, 200);
        if (r <= 0)
            continue;
        nf = 0;
        for (i = 0; i < NCONN; i++) {
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
                    remaining--;
                    continue;
                }
                c->connected = 1;
            }
            if (c->sent < c->outlen) {
                ssize_t w = send(c->fd, c->out + c->sent, c->outlen - c->sent, MSG_NOSIGNAL);
                if (w > 0) {
                    c->sent += (size_t)w;
                    c->bytes += (uint64_t)w;
                } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                    c->failed = c->done = 1;
                    remaining--;
                }
                continue;
            }
            {
                ssize_t rd = recv(c->fd, c->in + c->got, c->outlen - c->got, 0);
                if (rd > 0) {
                    c->got += (size_t)rd;
                    if (c->got == c->outlen) {
                        if (memcmp(c->in, c->out, c->outlen) != 0) {
                            fprintf(stderr, "client %d: echo %d differs\n", i, c->seq);
                            c->failed = c->done = 1;
                            remaining--;
                        } else if (++c->seq == NMSGS) {
                            c->done = 1;
                            remaining--;
                        } else {
                            client_next(c, i);
                        }
                    }
                } else if (rd == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                    fprintf(stderr, "client %d: EOF or error after %d messages\n", i, c->seq);
                    c->failed = c->done = 1;
                    remaining--;
                }
            }
        }
    }
    CHECK_EQ_INT(remaining, 0);
    for (i = 0; i < NCONN; i++) {
        if (!cl[i].failed && cl[i].seq == NMSGS)
            ok++;
        total_bytes += cl[i].bytes;
    }
    CHECK_EQ_INT(ok, NCONN);

    /* everything was open at once */
    st = server_stats(srv);
    CHECK_EQ_INT(st.accepted, NCONN);
    CHECK_EQ_INT(st.active, NCONN);
    CHECK_EQ_INT(st.closed, 0);

    for (i = 0; i < NCONN; i++)
        if (cl[i].fd >= 0)
            close(cl[i].fd);
    WAIT_FOR(mt_closes() >= NCONN, 10000);

    st = server_stats(srv);
    CHECK_EQ_INT(st.accepted, NCONN);
    CHECK_EQ_INT(st.closed, NCONN);
    CHECK_EQ_INT(st.active, 0);
    CHECK_EQ_INT(st.rejected, 0);
    CHECK_EQ_INT(st.bytes_in, total_bytes);
    CHECK_EQ_INT(st.bytes_out, total_bytes); /* echoes are byte-for-byte the requests */
    CHECK_EQ_INT(st.frames_too_large, 0);
    CHECK_EQ_INT(st.timeouts, 0);

    pthread_mutex_lock(&mt.lock);
    {
        int closes_ok = 0, thread_ok = 0, order_ok = 0, msgs_ok = 0, reason_ok = 0;
        uint64_t bytes = 0;
        for (i = 0; i < NCONN; i++) {
            struct result *r = &mt.res[i];
            closes_ok += r->closes == 1;
            thread_ok += r->thread_err == 0;
            order_ok += r->order_err == 0;
            msgs_ok += r->nmsg == NMSGS;
            reason_ok += r->reason == NS_OK;
            bytes += r->bytes;
        }
        CHECK_EQ_INT(mt.opens, NCONN);
        CHECK_EQ_INT(mt.closes, NCONN);
        CHECK_EQ_INT(mt.bad, 0);
        CHECK_EQ_INT(closes_ok, NCONN);
        CHECK_EQ_INT(thread_ok, NCONN);   /* one thread per connection */
        CHECK_EQ_INT(order_ok, NCONN);    /* messages in order */
        CHECK_EQ_INT(msgs_ok, NCONN);
        CHECK_EQ_INT(reason_ok, NCONN);
        CHECK_EQ_INT(bytes, total_bytes);
    }
    pthread_mutex_unlock(&mt.lock);
    pthread_mutex_lock(&mt.th.lock);
    printf("TCP: callbacks ran on %d threads, at most %d at once\n", mt.th.nseen, mt.th.max_inside);
    CHECK(mt.th.nseen > 1);
    CHECK_EQ_INT(mt.th.nseen, NTHREADS); /* 200 connections spread over all 4 */
    CHECK(mt.th.max_inside > 1);         /* ... running at the same time */
    CHECK_EQ_INT(mt.th.main_thread_cb, 0);
    pthread_mutex_unlock(&mt.th.lock);
    ns_server_free(srv);
}

/* ---- UDP with 4 threads ---------------------------------------------------------- */

#define UDP_CLIENTS 8
#define UDP_EACH 40

static struct threads uth;
static pthread_mutex_t ulock = PTHREAD_MUTEX_INITIALIZER;
static int u_reply_err;

static void u_on_datagram(ns_server *srv, const ns_peer *from, const uint8_t *data, size_t len, void *user)
{
    struct timespec ts = {0, 1000000}; /* 1 ms of "work" */
    int rc;
    (void)user;
    th_enter(&uth);
    nanosleep(&ts, NULL);
    rc = ns_udp_reply(srv, from, data, len);
    if (rc != NS_OK) {
        pthread_mutex_lock(&ulock);
        u_reply_err++;
        pthread_mutex_unlock(&ulock);
    }
    th_leave(&uth);
}

struct uclient {
    int port;
    int idx;
    int ok;
    uint64_t bytes;
};

static void *uclient_main(void *p)
{
    struct uclient *u = (struct uclient *)p;
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_DGRAM, 0), k;
    if (fd < 0)
        return NULL;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)u->port);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return NULL;
    }
    for (k = 0; k < UDP_EACH; k++) {
        char msg[64], rep[64];
        int n = snprintf(msg, sizeof msg, "u%d d%d", u->idx, k);
        ssize_t got = -1;
        struct pollfd pfd;
        if (send(fd, msg, (size_t)n, 0) != n)
            break;
        u->bytes += (uint64_t)n;
        pfd.fd = fd;
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (poll(&pfd, 1, 3000) == 1)
            got = recv(fd, rep, sizeof rep, MSG_DONTWAIT);
        if (got == n && memcmp(rep, msg, (size_t)n) == 0)
            u->ok++;
        else
            fprintf(stderr, "udp client %d: reply %d: %zd bytes\n", u->idx, k, got);
    }
    close(fd);
    return NULL;
}

static void test_udp_threads(void)
{
    ns_options *o;
    ns_server *srv = NULL;
    pthread_t th[UDP_CLIENTS];
    struct uclient uc[UDP_CLIENTS];
    ns_stats st;
    int i, ok = 0;
    uint64_t bytes = 0;

    SECTION("UDP server with 4 loop threads");
    pthread_mutex_init(&uth.lock, NULL);
    o = ns_options_new();
    CHECK(o != NULL);
    if (!o)
        return;
    CHECK_EQ_INT(ns_options_set_threads(o, NTHREADS), NS_OK);
    CHECK_EQ_INT(ns_udp_serve("127.0.0.1:0", u_on_datagram, NULL, o, &srv), NS_OK);
    ns_options_free(o);
    if (!srv)
        return;
    for (i = 0; i < UDP_CLIENTS; i++) {
        uc[i].port = ns_server_port(srv);
        uc[i].idx = i;
        uc[i].ok = 0;
        uc[i].bytes = 0;
        CHECK_EQ_INT(pthread_create(&th[i], NULL, uclient_main, &uc[i]), 0);
    }
    for (i = 0; i < UDP_CLIENTS; i++) {
        pthread_join(th[i], NULL);
        ok += uc[i].ok;
        bytes += uc[i].bytes;
    }
    CHECK_EQ_INT(ok, UDP_CLIENTS * UDP_EACH);
    st = server_stats(srv);
    CHECK_EQ_INT(st.datagrams_in, UDP_CLIENTS * UDP_EACH);
    CHECK_EQ_INT(st.datagrams_out, UDP_CLIENTS * UDP_EACH);
    CHECK_EQ_INT(st.bytes_in, bytes);
    pthread_mutex_lock(&ulock);
    CHECK_EQ_INT(u_reply_err, 0);
    pthread_mutex_unlock(&ulock);
    pthread_mutex_lock(&uth.lock);
    printf("UDP: datagrams ran on %d threads, at most %d at once\n", uth.nseen, uth.max_inside);
    CHECK(uth.nseen > 1);
    CHECK(uth.nseen <= NTHREADS);
    CHECK(uth.max_inside > 1);
    CHECK_EQ_INT(uth.main_thread_cb, 0);
    pthread_mutex_unlock(&uth.lock);
    ns_server_free(srv);
}

int main(void)
{
    struct rlimit rl;
    watchdog(60);
    main_thread = pthread_self();
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 2 * NCONN + 64) {
        rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    test_tcp_threads();
    test_udp_threads();
    return CHECK_DONE();
}
