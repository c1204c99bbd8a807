/* test_connect.c - clients that connect on the loop (issue 13): ns_tcp_connect_async
 * (connected, refused, timed out, a name, unparsable text, from inside a server's callback)
 * and ns_options_set_reconnect across a server restart. */
#include "check.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

struct cli {
    int opens, closes, reason, replies;
    int64_t closed_at;
};

static int get_int(int *p)
{
    return locked_int(&lock, p);
}

static struct cli snap(struct cli *c)
{
    struct cli s;
    pthread_mutex_lock(&lock);
    s = *c;
    pthread_mutex_unlock(&lock);
    return s;
}

static void c_on_open(ns_conn *conn, void *user)
{
    struct cli *c = (struct cli *)user;
    (void)conn;
    pthread_mutex_lock(&lock);
    c->opens++;
    pthread_mutex_unlock(&lock);
}

static void c_on_close(ns_conn *conn, int reason, void *user)
{
    struct cli *c = (struct cli *)user;
    (void)conn;
    pthread_mutex_lock(&lock);
    c->closes++;
    c->reason = reason;
    c->closed_at = now_ms();
    pthread_mutex_unlock(&lock);
}

static void c_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct cli *c = (struct cli *)user;
    (void)conn, (void)data;
    pthread_mutex_lock(&lock);
    c->replies += (int)len;
    pthread_mutex_unlock(&lock);
}

static void echo_on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)user;
    ns_conn_send(conn, data, len);
}

static ns_options *client_opts(void)
{
    ns_options *o = ns_options_new();
    CHECK_EQ_INT(ns_options_set_on_open(o, c_on_open), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_close(o, c_on_close), NS_OK);
    return o;
}

static void test_async_connect(void)
{
    static struct cli c;
    ns_options *o = client_opts();
    ns_server *srv = NULL;
    ns_client *cl = NULL;
    char addr[64];
    int64_t t0, dt;

    SECTION("ns_tcp_connect_async: returns at once; on_open, then data; sends before on_open are closed");
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", echo_on_data, NULL, NULL, &srv), NS_OK);
    if (!srv)
        return;
    CHECK_EQ_INT(ns_server_addr(srv, addr, sizeof addr), NS_OK);
    memset(&c, 0, sizeof c);
    CHECK_EQ_INT(ns_tcp_connect_async(addr, c_on_data, &c, o, &cl), NS_OK);
    WAIT_FOR(get_int(&c.opens) == 1, 3000);
    CHECK_EQ_INT(get_int(&c.opens), 1);
    CHECK_EQ_INT(ns_client_send(cl, "hello", 5), NS_OK);
    WAIT_FOR(get_int(&c.replies) == 5, 3000);
    CHECK_EQ_INT(get_int(&c.replies), 5);
    ns_client_free(cl);
    CHECK_EQ_INT(get_int(&c.closes), 1);

    /* a name, resolved off the loop */
    snprintf(addr, sizeof addr, "localhost:%d", ns_server_port(srv));
    memset(&c, 0, sizeof c);
    cl = NULL;
    CHECK_EQ_INT(ns_tcp_connect_async(addr, c_on_data, &c, o, &cl), NS_OK);
    WAIT_FOR(get_int(&c.opens) == 1, 5000);
    CHECK_EQ_INT(get_int(&c.opens), 1);
    ns_client_free(cl);

    SECTION("ns_tcp_connect_async: refused and timed out end in on_close with no on_open");
    snprintf(addr, sizeof addr, "127.0.0.1:%d", free_port4(SOCK_STREAM));
    memset(&c, 0, sizeof c);
    cl = NULL;
    t0 = now_ms();
    CHECK_EQ_INT(ns_tcp_connect_async(addr, c_on_data, &c, o, &cl), NS_OK);
    CHECK(now_ms() - t0 < 100); /* returned at once */
    WAIT_FOR(get_int(&c.closes) == 1, 3000);
    c = snap(&c);
    CHECK_EQ_INT(c.closes, 1);
    CHECK_EQ_INT(c.opens, 0);
    CHECK_EQ_INT(c.reason, NS_ERR_REFUSED);
    CHECK_EQ_INT(ns_client_send(cl, "x", 1), NS_ERR_CLOSED);
    ns_client_free(cl);

    /* a listener whose accept queue is full drops the SYN: the connect times out */
    {
        int lfd = bound_socket4(SOCK_STREAM), fill[4], i, n = 0;
        CHECK(lfd >= 0);
        CHECK_EQ_INT(listen(lfd, 0), 0);
        for (i = 0; i < 4; i++) { /* fill the queue (non-blocking, never accepted) */
            struct sockaddr_in sa;
            fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            memset(&sa, 0, sizeof sa);
            sa.sin_family = AF_INET;
            sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            sa.sin_port = htons((uint16_t)sock_port(lfd));
            (void)!connect(fill[i], (struct sockaddr *)&sa, sizeof sa);
            n++;
        }
        sleep_ms(50);
        CHECK_EQ_INT(ns_options_set_connect_timeout_ms(o, 300), NS_OK);
        snprintf(addr, sizeof addr, "127.0.0.1:%d", sock_port(lfd));
        memset(&c, 0, sizeof c);
        cl = NULL;
        t0 = now_ms();
        CHECK_EQ_INT(ns_tcp_connect_async(addr, c_on_data, &c, o, &cl), NS_OK);
        WAIT_FOR(get_int(&c.closes) == 1, 3000);
        c = snap(&c);
        dt = c.closed_at - t0;
        printf("timed out after %lld ms (limit 300): reason %s\n", (long long)dt, ns_strerror(c.reason));
        CHECK_EQ_INT(c.opens, 0);
        CHECK_EQ_INT(c.reason, NS_ERR_TIMEOUT);
        CHECK(dt >= 290 && dt < 1000);
        ns_client_free(cl);
        for (i = 0; i < n; i++)
            close(fill[i]);
        close(lfd);
        CHECK_EQ_INT(ns_options_set_connect_timeout_ms(o, 10000), NS_OK);
    }

    /* a name that does not resolve: on_close with NS_ERR_ADDR, from the resolver's answer */
    memset(&c, 0, sizeof c);
    cl = NULL;
    CHECK_EQ_INT(ns_tcp_connect_async("nohost.invalid:80", c_on_data, &c, o, &cl), NS_OK);
    WAIT_FOR(get_int(&c.closes) == 1, 10000);
    c = snap(&c);
    CHECK_EQ_INT(c.opens, 0);
    CHECK_EQ_INT(c.reason, NS_ERR_ADDR);
    ns_client_free(cl);

    SECTION("ns_tcp_connect_async: unparsable text fails at once; NULL arguments");
    cl = NULL;
    CHECK_EQ_INT(ns_tcp_connect_async("no port", c_on_data, &c, o, &cl), NS_ERR_ADDR);
    CHECK(cl == NULL);
    CHECK_EQ_INT(ns_tcp_connect_async(NULL, c_on_data, &c, o, &cl), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tcp_connect_async(addr, NULL, &c, o, &cl), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tcp_connect_async(addr, c_on_data, &c, o, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_reconnect(o, 0, 5), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_reconnect(o, 50, 10), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_reconnect(NULL, 1, 1), NS_ERR_INVALID);
    ns_options_free(o);
    ns_server_free(srv);
}

/* A tiny proxy's first step: a server whose on_open opens an upstream connection, on the
 * server's own loop, from inside the callback. */
static char upstream_addr[64];
static ns_client *upstream;
static struct cli up;

static void px_on_open(ns_conn *conn, void *user)
{
    ns_options *o = client_opts();
    (void)user;
    CHECK_EQ_INT(ns_options_set_loop(o, ns_server_loop(ns_conn_server(conn))), NS_OK);
    CHECK_EQ_INT(ns_tcp_connect_async(upstream_addr, c_on_data, &up, o, &upstream), NS_OK);
    ns_options_free(o);
}

static void test_connect_from_callback(void)
{
    ns_server *back = NULL, *front = NULL;
    ns_options *o = ns_options_new();
    int fd;

    SECTION("ns_tcp_connect_async from inside a server's callback, on the server's loop");
    memset(&up, 0, sizeof up);
    upstream = NULL;
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", echo_on_data, NULL, NULL, &back), NS_OK);
    if (!back)
        return;
    CHECK_EQ_INT(ns_server_addr(back, upstream_addr, sizeof upstream_addr), NS_OK);
    CHECK_EQ_INT(ns_options_set_on_open(o, px_on_open), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", echo_on_data, NULL, o, &front), NS_OK);
    ns_options_free(o);
    fd = tcp_connect4(ns_server_port(front));
    CHECK(fd >= 0);
    WAIT_FOR(get_int(&up.opens) == 1, 3000);
    CHECK_EQ_INT(get_int(&up.opens), 1);
    CHECK_EQ_INT(ns_client_send(upstream, "via", 3), NS_OK);
    WAIT_FOR(get_int(&up.replies) == 3, 3000);
    CHECK_EQ_INT(get_int(&up.replies), 3);
    ns_client_free(upstream);
    close(fd);
    ns_server_free(front);
    ns_server_free(back);
}

static void test_reconnect(void)
{
    static struct cli c;
    ns_options *o = client_opts();
    ns_server *srv = NULL;
    ns_client *cl = NULL;
    char addr[64];
    int port, closes_down;
    struct cli s;

    SECTION("ns_options_set_reconnect: a client follows its server through a restart");
    CHECK_EQ_INT(ns_options_set_reconnect(o, 20, 160), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", echo_on_data, NULL, NULL, &srv), NS_OK);
    if (!srv)
        return;
    port = ns_server_port(srv);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    memset(&c, 0, sizeof c);
    CHECK_EQ_INT(ns_tcp_connect(addr, c_on_data, &c, o, &cl), NS_OK); /* the blocking one */
    WAIT_FOR(get_int(&c.opens) == 1, 3000);
    CHECK_EQ_INT(ns_client_send(cl, "one", 3), NS_OK);
    WAIT_FOR(get_int(&c.replies) == 3, 3000);

    ns_server_free(srv); /* the server goes away: on_close, then refused attempts */
    srv = NULL;
    WAIT_FOR(get_int(&c.closes) >= 3, 3000);
    s = snap(&c);
    printf("server down: %d closes so far (the first, then refused attempts), last %s\n", s.closes,
           ns_strerror(s.reason));
    CHECK(s.closes >= 3);
    CHECK_EQ_INT(s.opens, 1);
    CHECK_EQ_INT(s.reason, NS_ERR_REFUSED);
    CHECK_EQ_INT(ns_client_send(cl, "lost", 4), NS_ERR_CLOSED); /* disconnected */

    CHECK_EQ_INT(ns_tcp_serve(addr, echo_on_data, NULL, NULL, &srv), NS_OK); /* back, same port */
    WAIT_FOR(get_int(&c.opens) == 2, 3000);
    CHECK_EQ_INT(get_int(&c.opens), 2);
    CHECK(ns_client_id(cl) != 0);
    WAIT_FOR(ns_client_send(cl, "two", 3) == NS_OK, 1000);
    WAIT_FOR(get_int(&c.replies) == 6, 3000);
    CHECK_EQ_INT(get_int(&c.replies), 6);

    /* the owner's close: no reconnect after it */
    closes_down = get_int(&c.closes);
    CHECK_EQ_INT(ns_client_close(cl), NS_OK);
    WAIT_FOR(get_int(&c.closes) == closes_down + 1, 3000);
    sleep_ms(300);
    s = snap(&c);
    CHECK_EQ_INT(s.opens, 2);
    CHECK_EQ_INT(s.closes, closes_down + 1);
    ns_client_free(cl);

    /* freed while waiting to reconnect: nothing runs after the free */
    memset(&c, 0, sizeof c);
    cl = NULL;
    CHECK_EQ_INT(ns_tcp_connect_async(addr, c_on_data, &c, o, &cl), NS_OK);
    WAIT_FOR(get_int(&c.opens) == 1, 3000);
    ns_server_free(srv);
    WAIT_FOR(get_int(&c.closes) >= 1, 3000);
    ns_client_free(cl);
    s = snap(&c);
    sleep_ms(200);
    CHECK_EQ_INT(get_int(&c.closes), s.closes);
    ns_options_free(o);
}

int main(void)
{
    watchdog(100);
    test_async_connect();
    test_connect_from_callback();
    test_reconnect();
    return CHECK_DONE();
}
