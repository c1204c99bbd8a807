/* test_concurrency.c - ns_server_send_frame from 8 threads at once while 50
 * client connections open and close all the time (a line-framed server with 4
 * loop threads). The server greets each connection with "id <its id>"; the
 * sender threads pick open ids at random and send "m <id> <thread> <seq>",
 * with a sequence number per (thread, connection). Each client connection
 * lives a random short time and checks that every message names ITS OWN id
 * and that each thread's sequence numbers arrive in order, without gaps
 * (1, 2, 3, ...). Sends to ids whose on_close has run, and to ids that never
 * existed, must return NS_ERR_CLOSED. At the end: nothing misdelivered,
 * nothing out of order, every connection opened and closed once. */
#include "netsock.h"
#include "check.h"

#define NSENDERS 8
#define NCLIENTS 50
#define RUN_MS 4000
#define MAXLIVE 1024
#define RING 256

/* The application's table of connection ids, as a server that pushes to its clients
 * would keep it: on_close only marks an entry; a sender that finds it marked (or gets
 * NS_ERR_CLOSED) drops it. */
struct entry {
    uint64_t id;
    int closed;             /* on_close has run */
    uint32_t seq[NSENDERS]; /* the last sequence number each sender used */
};

static struct {
    struct entry live[MAXLIVE];
    int nlive;
    uint64_t closed_ring[RING]; /* ids whose on_close has run */
    long nclosed;
    long opens, closes, bad, overflow;
    uint64_t max_id_seen;
} reg;
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;

static volatile int stop_flag;

static int stopping(void)
{
    int v;
    pthread_mutex_lock(&reg_lock);
    v = stop_flag;
    pthread_mutex_unlock(&reg_lock);
    return v;
}

static void c_on_open(ns_conn *conn, void *user)
{
    char hello[64];
    uint64_t id = ns_conn_id(conn);
    int n = snprintf(hello, sizeof hello, "id %llu", (unsigned long long)id);
    (void)user;
    /* the greeting goes first: senders only learn the id below */
    CHECK_EQ_INT(ns_conn_send_frame(conn, hello, (size_t)n), NS_OK);
    pthread_mutex_lock(&reg_lock);
    reg.opens++;
    if (id > reg.max_id_seen)
        reg.max_id_seen = id;
    if (reg.nlive < MAXLIVE) {
        memset(&reg.live[reg.nlive], 0, sizeof reg.live[0]);
        reg.live[reg.nlive++].id = id;
    } else {
        reg.overflow++;
    }
    pthread_mutex_unlock(&reg_lock);
}

static void c_on_close(ns_conn *conn, int reason, void *user)
{
    uint64_t id = ns_conn_id(conn);
    int i, found = 0;
    (void)user;
    (void)reason;
    pthread_mutex_lock(&reg_lock);
    reg.closes++;
    for (i = 0; i < reg.nlive; i++) {
        if (reg.live[i].id == id) {
            reg.live[i].closed = 1;
            found = 1;
            break;
        }
    }
    if (!found)
        reg.bad++;
    reg.closed_ring[reg.nclosed % RING] = id;
    reg.nclosed++;
    pthread_mutex_unlock(&reg_lock);
}

static void c_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)conn;
    (void)data;
    (void)len;
    (void)user;
}

/* ---- senders ------------------------------------------------------------------------------ */

struct sender {
    ns_server *srv;
    int t;
    uint64_t rng;
    long ok, closed, other, marked, stale_checks, stale_bad, never_checks, never_bad;
};

static uint64_t xs(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void *sender_main(void *p)
{
    struct sender *S = (struct sender *)p;
    long n = 0;
    while (!stopping()) {
        uint64_t id = 0;
        uint32_t seq = 0;
        char msg[96];
        int len, rc, marked = 0;
        pthread_mutex_lock(&reg_lock);
        if (reg.nlive > 0) {
            size_t k = (size_t)(xs(&S->rng) % (uint64_t)reg.nlive);
            struct entry *e = &reg.live[k];
            id = e->id;
            seq = ++e->seq[S->t];
            marked = e->closed;
            if (marked) /* its on_close has run: this send must fail; drop the entry */
                reg.live[k] = reg.live[--reg.nlive];
        }
        pthread_mutex_unlock(&reg_lock);
        if (id) {
            len = snprintf(msg, sizeof msg, "m %llu %d %u", (unsigned long long)id, S->t, seq);
            rc = ns_server_send_frame(S->srv, id, msg, (size_t)len);
            if (rc == NS_OK)
                S->ok++;
            else if (rc == NS_ERR_CLOSED)
                S->closed++;
            else
                S->other++;
            if (marked) {
                S->marked++;
                if (rc != NS_ERR_CLOSED) {
                    S->stale_bad++;
                    fprintf(stderr, "send to closed id %llu gave %d\n", (unsigned long long)id, rc);
                }
            }
        }
        if (++n % 16 == 0) {
            /* an id whose on_close has run: closed for good */
            uint64_t stale = 0;
            pthread_mutex_lock(&reg_lock);
            if (reg.nclosed > 0)
                stale = reg.closed_ring[(reg.nclosed - 1 - (long)(xs(&S->rng) % (reg.nclosed < RING ? (uint64_t)reg.nclosed : RING))) % RING];
            pthread_mutex_unlock(&reg_lock);
            if (stale) {
                S->stale_checks++;
                rc = (n / 16) % 2 ? ns_server_send_frame(S->srv, stale, "late", 4)
                                  : ns_server_send(S->srv, stale, "late\n", 5);
                if (rc != NS_ERR_CLOSED) {
                    S->stale_bad++;
                    fprintf(stderr, "send to closed id %llu gave %d\n", (unsigned long long)stale, rc);
                }
            }
            /* ids that never existed: 0, far ahead of the sequence, an unknown loop */
            S->never_checks += 3;
            if (ns_server_send_frame(S->srv, 0, "x", 1) != NS_ERR_CLOSED)
                S->never_bad++;
            if (ns_server_send_frame(S->srv, ((uint64_t)1 << 40) | (uint64_t)S->t % 4, "x", 1) != NS_ERR_CLOSED)
                S->never_bad++;
            if (ns_server_send_frame(S->srv, ((uint64_t)5 << 8) | 200, "x", 1) != NS_ERR_CLOSED)
                S->never_bad++;
        }
        if (n % 4 == 0)
            sleep_ms(1);
    }
    return NULL;
}

/* ---- clients ------------------------------------------------------------------------------- */

struct client {
    int port, index;
    uint64_t rng;
    long conns, fails, msgs, misdelivered, out_of_order, gaps, bad_lines, no_greeting;
    long closes_by_kind[3];
};

/* Reads and checks lines until `until` (ms clock) or EOF; returns 1 on EOF. */
static int client_read(struct client *c, int fd, uint64_t *myid, uint32_t *last, char *buf, size_t *have,
                       int64_t until)
{
    for (;;) {
        struct pollfd p;
        int64_t left = until - now_ms();
        ssize_t r;
        char *nl;
        /* complete lines first */
        while ((nl = memchr(buf, '\n', *have)) != NULL) {
            size_t linelen = (size_t)(nl - buf);
            unsigned long long id = 0;
            int t = -1;
            unsigned seq = 0;
            *nl = 0;
            if (*myid == 0) {
                if (sscanf(buf, "id %llu", &id) == 1 && id != 0)
                    *myid = id;
                else
                    c->no_greeting++;
            } else if (sscanf(buf, "m %llu %d %u", &id, &t, &seq) == 3 && t >= 0 && t < NSENDERS) {
                c->msgs++;
                if (id != *myid)
                    c->misdelivered++;
                if (seq <= last[t])
                    c->out_of_order++;
                else if (seq != last[t] + 1)
                    c->gaps++;
                last[t] = seq;
            } else {
                c->bad_lines++;
            }
            memmove(buf, nl + 1, *have - linelen - 1);
            *have -= linelen + 1;
        }
        if (left <= 0)
            return 0;
        p.fd = fd;
        p.events = POLLIN;
        p.revents = 0;
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        if (*have >= 65536 - 1) {
            c->bad_lines++;
            *have = 0;
        }
        r = recv(fd, buf + *have, 65536 - 1 - *have, MSG_DONTWAIT);
        if (r > 0)
            *have += (size_t)r;
        else if (r == 0 || (errno != EAGAIN && errno != EINTR))
            return 1;
    }
}

static void *client_main(void *p)
{
    struct client *c = (struct client *)p;
    char *buf = malloc(65536);
    if (!buf) {
        c->fails++;
        return NULL;
    }
    while (!stopping()) {
        uint64_t myid = 0;
        uint32_t last[NSENDERS];
        size_t have = 0;
        int kind, fd = tcp_connect4(c->port);
        int64_t life = 5 + (int64_t)(xs(&c->rng) % 150);
        if (fd < 0) {
            c->fails++;
            sleep_ms(10);
            continue;
        }
        c->conns++;
        memset(last, 0, sizeof last);
        client_read(c, fd, &myid, last, buf, &have, now_ms() + life);
        if (myid == 0) {
            /* the greeting must come, even for a short life */
            client_read(c, fd, &myid, last, buf, &have, now_ms() + 3000);
            if (myid == 0)
                c->no_greeting++;
        }
        kind = (int)(xs(&c->rng) % 3);
        c->closes_by_kind[kind]++;
        if (kind == 0) {
            close(fd);
        } else if (kind == 1) {
            close_reset(fd);
        } else {
            /* half-close: the server flushes what it queued, then ends; read it all */
            shutdown(fd, SHUT_WR);
            if (!client_read(c, fd, &myid, last, buf, &have, now_ms() + 3000))
                c->fails++;
            close(fd);
        }
    }
    free(buf);
    return NULL;
}

int main(void)
{
    static struct sender snd[NSENDERS];
    static struct client cl[NCLIENTS];
    pthread_t sth[NSENDERS], cth[NCLIENTS];
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    int i, ns = 0, nc = 0;
    long ok = 0, closed = 0, other = 0, marked = 0, stale = 0, stale_bad = 0, never = 0, never_bad = 0;
    long conns = 0, fails = 0, msgs = 0, mis = 0, ooo = 0, gaps = 0, badl = 0, nogreet = 0, kinds[3] = {0, 0, 0};
    int64_t t0;
    ns_stats s;
    uint64_t seed = (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid();

    watchdog(60);
    signal(SIGPIPE, SIG_IGN);
    printf("seed %llu\n", (unsigned long long)seed);
    CHECK(o != NULL);
    if (!o)
        return CHECK_DONE();
    CHECK_EQ_INT(ns_options_set_framing(o, NS_FRAMING_LINE), NS_OK);
    CHECK_EQ_INT(ns_options_set_threads(o, 4), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_open(o, c_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, c_on_close), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", c_on_data, NULL, o, &srv), NS_OK);
    ns_options_free(o);
    if (!srv)
        return CHECK_DONE();

    SECTION("8 sender threads, 50 churning client connections, 4 s");
    t0 = now_ms();
    for (i = 0; i < NCLIENTS; i++) {
        cl[i].port = ns_server_port(srv);
        cl[i].index = i;
        cl[i].rng = seed + 1000 + (uint64_t)i * 7919;
        if (pthread_create(&cth[i], NULL, client_main, &cl[i]) != 0)
            break;
        nc++;
    }
    for (i = 0; i < NSENDERS; i++) {
        snd[i].srv = srv;
        snd[i].t = i;
        snd[i].rng = seed + (uint64_t)i * 104729 + 1;
        if (pthread_create(&sth[i], NULL, sender_main, &snd[i]) != 0)
            break;
        ns++;
    }
    CHECK_EQ_INT(nc, NCLIENTS);
    CHECK_EQ_INT(ns, NSENDERS);
    sleep_ms(RUN_MS);
    pthread_mutex_lock(&reg_lock);
    stop_flag = 1;
    pthread_mutex_unlock(&reg_lock);
    for (i = 0; i < ns; i++) {
        pthread_join(sth[i], NULL);
        ok += snd[i].ok;
        closed += snd[i].closed;
        marked += snd[i].marked;
        other += snd[i].other;
        stale += snd[i].stale_checks;
        stale_bad += snd[i].stale_bad;
        never += snd[i].never_checks;
        never_bad += snd[i].never_bad;
    }
    for (i = 0; i < nc; i++) {
        int k;
        pthread_join(cth[i], NULL);
        conns += cl[i].conns;
        fails += cl[i].fails;
        msgs += cl[i].msgs;
        mis += cl[i].misdelivered;
        ooo += cl[i].out_of_order;
        gaps += cl[i].gaps;
        badl += cl[i].bad_lines;
        nogreet += cl[i].no_greeting;
        for (k = 0; k < 3; k++)
            kinds[k] += cl[i].closes_by_kind[k];
    }
    WAIT_FOR(server_stats(srv).closed >= (uint64_t)conns, 5000);
    s = server_stats(srv);
    printf("concurrency: %ld connections in %.1f s (%ld closed, %ld reset, %ld half-closed); "
           "sends: %ld NS_OK, %ld NS_ERR_CLOSED (%ld of them to ids known closed), %ld other; received %ld; "
           "%ld more sends to recently closed ids and %ld to unknown ids, all NS_ERR_CLOSED as they must\n",
           conns, (now_ms() - t0) / 1000.0, kinds[0], kinds[1], kinds[2], ok, closed, marked, other, msgs, stale,
           never);
    printf("concurrency: misdelivered %ld, out of order %ld, gaps %ld, bad lines %ld, missing greetings %ld, "
           "client failures %ld; stats accepted %llu closed %llu active %llu\n",
           mis, ooo, gaps, badl, nogreet, fails, (unsigned long long)s.accepted, (unsigned long long)s.closed,
           (unsigned long long)s.active);
    CHECK_EQ_INT(mis, 0);
    CHECK_EQ_INT(ooo, 0);
    CHECK_EQ_INT(gaps, 0);
    CHECK_EQ_INT(badl, 0);
    CHECK_EQ_INT(nogreet, 0);
    CHECK_EQ_INT(fails, 0);
    CHECK_EQ_INT(other, 0);
    CHECK_EQ_INT(stale_bad, 0);
    CHECK_EQ_INT(never_bad, 0);
    /* enough happened (modest minimums: valgrind runs this 10-50 times slower) */
    CHECK(stale > 20);
    CHECK(conns > 20);
    CHECK(ok > 1000);
    CHECK(marked > 5); /* sends to closed connections happened, and failed */
    CHECK(closed >= marked);
    CHECK(msgs > 0 && msgs <= ok);
    CHECK_EQ_INT(s.accepted, conns);
    CHECK_EQ_INT(s.closed, conns);
    CHECK_EQ_INT(s.active, 0);
    pthread_mutex_lock(&reg_lock);
    CHECK_EQ_INT(reg.opens, conns);
    CHECK_EQ_INT(reg.closes, conns);
    for (i = 0; i < reg.nlive; i++)
        CHECK(reg.live[i].closed); /* what is left in the table is closed */
    CHECK_EQ_INT(reg.bad, 0);
    CHECK_EQ_INT(reg.overflow, 0);
    pthread_mutex_unlock(&reg_lock);
    ns_server_free(srv);
    return CHECK_DONE();
}
