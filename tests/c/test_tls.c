/* test_tls.c - TLS (rustls inside netsock) through the C API, with certificates made by
 * tests/tls/certs.sh (the openssl CLI) in a temporary folder:
 *  - configuration: unreadable files, garbage PEM, a key that does not match its certificate
 *    (NS_ERR_TLS with the reason in ns_last_error), PEM in memory, NULLs, settings on the
 *    wrong side (NS_ERR_INVALID), a server given a client's configuration and the reverse;
 *  - an echo server and netsock's TLS client, blocking and async, by name (SNI "localhost",
 *    ALPN "h2" agreed) and by IP address (no SNI); the configuration freed right after
 *    ns_options_set_tls; close_notify both ways (NS_OK on each side), a TCP end without it
 *    (the client freed) is NS_ERR_CLOSED on the server;
 *  - failed verification: wrong CA, expired certificate, name mismatch: NS_ERR_TLS from the
 *    blocking connect, on_close(NS_ERR_TLS) without on_open for the async one; the server
 *    never calls back and counts each in tls_failures;
 *  - mutual TLS: the server requires a client certificate; without one the client fails,
 *    with one it is served;
 *  - a server that accepts and never answers: the client's handshake times out
 *    (NS_ERR_TIMEOUT, blocking and async);
 *  - line framing and max_frame apply to the plaintext (NS_ERR_LIMIT, frames_too_large);
 *  - bad peers on plain sockets: plaintext, garbage records, half a ClientHello then silence
 *    (closed at the handshake timeout, which is connect_timeout_ms on servers too): each a
 *    clean close, no callback, counted, logged at NS_LOG_INFO;
 *  - a TLS peer that never reads: the server's queue stays within max_write_buffer (sends
 *    past it are NS_ERR_LIMIT), memory bounded;
 *  - churn: NS_TLS_CHURN (default 10,000; 2,000 under ASan, 150 under valgrind) full
 *    handshakes, each opened and closed once, descriptors and memory back to baseline (RSS
 *    is not checked under ASan or valgrind, whose leak checkers do that job). */
#include "netsock.h"
#include "check.h"

#include <stdarg.h>
#include <sys/stat.h>

static char certs[256];

static const char *cert(const char *name)
{
    static char path[8][512];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, 512, "%s/%s", certs, name);
    return p;
}

/* ASan keeps freed memory in quarantine: RSS says nothing there (LeakSanitizer checks). */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#else
#define UNDER_ASAN 0
#endif

static int under_valgrind(void)
{
    const char *p = getenv("LD_PRELOAD");
    return p && strstr(p, "vgpreload") != NULL;
}

/* ---- a TLS echo server that counts what reaches its callbacks ---------------------------- */

typedef struct {
    pthread_mutex_t lock;
    int opens, closes, last_reason;
    char sni[256], alpn[256];
    /* never-reading peer: the outcome of the sends made on "go" */
    int flood_rc;
    size_t flood_sent, flood_pending_max, max_wb;
} srv_state;

static void s_open(ns_conn *c, void *user)
{
    srv_state *s = user;
    char sni[256], alpn[256];
    CHECK_EQ_INT(ns_conn_server_name(c, sni, sizeof sni), NS_OK);
    CHECK_EQ_INT(ns_conn_alpn(c, alpn, sizeof alpn), NS_OK);
    CHECK_EQ_INT(ns_conn_alpn(c, alpn, 0), NS_ERR_TRUNCATED);
    pthread_mutex_lock(&s->lock);
    s->opens++;
    memcpy(s->sni, sni, sizeof sni);
    memcpy(s->alpn, alpn, sizeof alpn);
    pthread_mutex_unlock(&s->lock);
}

static void s_data(ns_conn *c, const uint8_t *d, size_t n, void *user)
{
    srv_state *s = user;
    if (n == 2 && memcmp(d, "go", 2) == 0 && s->max_wb) {
        static uint8_t chunk[16384];
        size_t sent = 0, pmax = 0;
        int rc = NS_OK, i;
        for (i = 0; i < 4096 && rc == NS_OK; i++) {
            rc = ns_conn_send(c, chunk, sizeof chunk);
            if (rc == NS_OK)
                sent += sizeof chunk;
            if (ns_conn_pending(c) > pmax)
                pmax = ns_conn_pending(c);
        }
        pthread_mutex_lock(&s->lock);
        s->flood_rc = rc;
        s->flood_sent = sent;
        s->flood_pending_max = pmax;
        pthread_mutex_unlock(&s->lock);
        return;
    }
    CHECK_EQ_INT(ns_conn_send(c, d, n), NS_OK);
}

static void s_close(ns_conn *c, int reason, void *user)
{
    srv_state *s = user;
    (void)c;
    pthread_mutex_lock(&s->lock);
    s->closes++;
    s->last_reason = reason;
    pthread_mutex_unlock(&s->lock);
}

static int sget(srv_state *s, const int *p)
{
    return locked_int(&s->lock, p);
}

/* A TLS echo server on 127.0.0.1:0 with `cert_name` (.pem/.key); NULL on failure. */
static ns_server *tls_server(srv_state *s, const char *cert_name, const char *client_ca,
                             uint32_t handshake_ms, size_t max_wb)
{
    ns_tls *tls = NULL;
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    char pem[64], key[64];
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    s->max_wb = max_wb;
    snprintf(pem, sizeof pem, "%s.pem", cert_name);
    snprintf(key, sizeof key, "%s.key", cert_name);
    CHECK_EQ_INT(ns_tls_server_new(cert(pem), cert(key), &tls), NS_OK);
    CHECK_EQ_INT(ns_tls_set_alpn(tls, "h2,http/1.1"), NS_OK);
    if (client_ca)
        CHECK_EQ_INT(ns_tls_set_client_ca(tls, cert(client_ca)), NS_OK);
    CHECK_EQ_INT(ns_options_set_tls(o, tls), NS_OK);
    ns_tls_free(tls); /* the options keep what they need */
    ns_options_set_on_open(o, s_open);
    ns_options_set_on_close(o, s_close);
    ns_options_set_connect_timeout_ms(o, handshake_ms);
    if (max_wb)
        ns_options_set_max_write_buffer(o, max_wb);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", s_data, s, o, &srv), NS_OK);
    ns_options_free(o);
    return srv;
}

/* ---- netsock's TLS client ----------------------------------------------------------------- */

typedef struct {
    pthread_mutex_t lock;
    int opens, closes, reason;
    char alpn[256];
    size_t got;
    uint8_t *buf;
    size_t cap;
    int pause_on_open;
} cli_state;

static void c_open(ns_conn *c, void *user)
{
    cli_state *s = user;
    char alpn[256];
    CHECK_EQ_INT(ns_conn_alpn(c, alpn, sizeof alpn), NS_OK);
    if (s->pause_on_open) {
        CHECK_EQ_INT(ns_conn_send(c, "go", 2), NS_OK);
        CHECK_EQ_INT(ns_conn_pause(c), NS_OK);
    }
    pthread_mutex_lock(&s->lock);
    s->opens++;
    memcpy(s->alpn, alpn, sizeof alpn);
    pthread_mutex_unlock(&s->lock);
}

static void c_data(ns_conn *c, const uint8_t *d, size_t n, void *user)
{
    cli_state *s = user;
    (void)c;
    pthread_mutex_lock(&s->lock);
    if (s->buf && s->got + n <= s->cap)
        memcpy(s->buf + s->got, d, n);
    s->got += n;
    pthread_mutex_unlock(&s->lock);
}

static void c_close(ns_conn *c, int reason, void *user)
{
    cli_state *s = user;
    (void)c;
    pthread_mutex_lock(&s->lock);
    s->closes++;
    s->reason = reason;
    pthread_mutex_unlock(&s->lock);
}

static int cget(cli_state *s, const int *p)
{
    return locked_int(&s->lock, p);
}

static size_t cgot(cli_state *s)
{
    size_t n;
    pthread_mutex_lock(&s->lock);
    n = s->got;
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* Client options trusting `ca` (with `client_cert`.pem/.key if not NULL), ALPN "h2". */
static ns_options *client_opts(cli_state *s, const char *ca, const char *client_cert, ns_loop *lp)
{
    ns_tls *tls = NULL;
    ns_options *o = ns_options_new();
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    CHECK_EQ_INT(ns_tls_client_new(cert(ca), &tls), NS_OK);
    CHECK_EQ_INT(ns_tls_set_alpn(tls, "h2"), NS_OK);
    if (client_cert) {
        char pem[64], key[64];
        snprintf(pem, sizeof pem, "%s.pem", client_cert);
        snprintf(key, sizeof key, "%s.key", client_cert);
        CHECK_EQ_INT(ns_tls_set_client_cert(tls, cert(pem), cert(key)), NS_OK);
    }
    CHECK_EQ_INT(ns_options_set_tls(o, tls), NS_OK);
    ns_tls_free(tls);
    ns_options_set_on_open(o, c_open);
    ns_options_set_on_close(o, c_close);
    ns_options_set_connect_timeout_ms(o, 5000);
    if (lp)
        ns_options_set_loop(o, lp);
    return o;
}

static void addr_of(ns_server *srv, const char *host, char *out, size_t cap)
{
    char bound[64];
    const char *colon;
    CHECK_EQ_INT(ns_server_addr(srv, bound, sizeof bound), NS_OK);
    colon = strrchr(bound, ':');
    snprintf(out, cap, "%s%s", host, colon ? colon : ":0");
}

/* ---- configuration ------------------------------------------------------------------------- */

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = malloc(65536);
    *len = f && buf ? fread(buf, 1, 65536, f) : 0;
    if (f)
        fclose(f);
    return buf;
}

static void test_config(void)
{
    ns_tls *tls = NULL, *cli = NULL;
    ns_options *o = ns_options_new();
    ns_server *srv = NULL;
    ns_client *c = NULL;
    uint8_t *pem, *key;
    size_t pem_len, key_len;
    char long_alpn[300];
    int rc;
    SECTION("configuration");

    CHECK_EQ_INT(ns_tls_server_new("/nonexistent/cert.pem", cert("server.key"), &tls), NS_ERR_TLS);
    CHECK(strstr(ns_last_error(), "cannot read") != NULL);
    CHECK(tls == NULL);
    CHECK_EQ_INT(ns_tls_server_new(cert("server.pem"), cert("client.key"), &tls), NS_ERR_TLS);
    CHECK(strstr(ns_last_error(), "key does not match certificate") != NULL);
    CHECK_EQ_INT(ns_tls_server_new(cert("server.key"), cert("server.key"), &tls), NS_ERR_TLS);
    CHECK_EQ_INT(ns_tls_server_new_pem((const uint8_t *)"junk", 4, (const uint8_t *)"junk", 4, &tls),
                 NS_ERR_TLS);
    CHECK_EQ_INT(ns_tls_server_new(NULL, cert("server.key"), &tls), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tls_server_new(cert("server.pem"), cert("server.key"), NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tls_server_new_pem(NULL, 5, NULL, 0, &tls), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tls_client_new(cert("server.key"), &cli), NS_ERR_TLS);
    CHECK_EQ_INT(ns_tls_set_alpn(NULL, "h2"), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_options_set_tls(NULL, NULL), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_conn_alpn(NULL, long_alpn, sizeof long_alpn), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_conn_server_name(NULL, long_alpn, sizeof long_alpn), NS_ERR_INVALID);
    ns_tls_free(NULL);

    /* the system's roots: there or not, a clean answer */
    rc = ns_tls_client_new(NULL, &cli);
    CHECK(rc == NS_OK || rc == NS_ERR_TLS);
    ns_tls_free(cli);
    cli = NULL;

    /* PEM in memory */
    pem = slurp(cert("server.pem"), &pem_len);
    key = slurp(cert("server.key"), &key_len);
    CHECK(pem_len > 0 && key_len > 0);
    CHECK_EQ_INT(ns_tls_server_new_pem(pem, pem_len, key, key_len, &tls), NS_OK);
    free(pem);
    free(key);

    /* settings on the wrong side, and a protocol name too long */
    CHECK_EQ_INT(ns_tls_client_new(cert("ca.pem"), &cli), NS_OK);
    CHECK_EQ_INT(ns_tls_set_client_cert(tls, cert("client.pem"), cert("client.key")), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tls_set_client_ca(cli, cert("ca.pem")), NS_ERR_INVALID);
    CHECK_EQ_INT(ns_tls_set_client_cert(cli, cert("client.pem"), cert("server.key")), NS_ERR_TLS);
    memset(long_alpn, 'a', sizeof long_alpn - 1);
    long_alpn[sizeof long_alpn - 1] = '\0';
    CHECK_EQ_INT(ns_tls_set_alpn(tls, long_alpn), NS_ERR_INVALID);

    /* a server with a client's configuration, a client with a server's */
    CHECK_EQ_INT(ns_options_set_tls(o, cli), NS_OK);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", s_data, NULL, o, &srv), NS_ERR_INVALID);
    CHECK(srv == NULL);
    CHECK_EQ_INT(ns_options_set_tls(o, tls), NS_OK);
    CHECK_EQ_INT(ns_tcp_connect_async("127.0.0.1:9", c_data, NULL, o, &c), NS_ERR_INVALID);
    CHECK(c == NULL);
    /* NULL turns TLS off again */
    CHECK_EQ_INT(ns_options_set_tls(o, NULL), NS_OK);
    ns_tls_free(tls);
    ns_tls_free(cli);
    ns_options_free(o);
}

/* ---- echo ------------------------------------------------------------------------------------ */

#define ECHO_BYTES (256u * 1024u)

static void test_echo(void)
{
    srv_state s;
    cli_state cs;
    ns_server *srv = tls_server(&s, "server", NULL, 5000, 0);
    ns_options *o = client_opts(&cs, "ca.pem", NULL, NULL);
    ns_client *c = NULL;
    uint8_t *data = malloc(ECHO_BYTES);
    char addr[64];
    size_t i;
    ns_stats st;
    SECTION("echo by name: SNI, ALPN, close_notify both ways");
    if (!srv || !data)
        return;
    for (i = 0; i < ECHO_BYTES; i++)
        data[i] = (uint8_t)(i * 7 + (i >> 11));
    cs.buf = malloc(ECHO_BYTES + 1);
    cs.cap = ECHO_BYTES + 1;
    addr_of(srv, "localhost", addr, sizeof addr);
    CHECK_EQ_INT(ns_tcp_connect(addr, c_data, &cs, o, &c), NS_OK);
    WAIT_FOR(cget(&cs, &cs.opens) == 1 && sget(&s, &s.opens) == 1, 5000);
    pthread_mutex_lock(&s.lock);
    CHECK_EQ_STR(s.sni, "localhost");
    CHECK_EQ_STR(s.alpn, "h2");
    pthread_mutex_unlock(&s.lock);
    pthread_mutex_lock(&cs.lock);
    CHECK_EQ_STR(cs.alpn, "h2");
    pthread_mutex_unlock(&cs.lock);
    for (i = 0; i < ECHO_BYTES; i += 4096)
        CHECK_EQ_INT(ns_client_send(c, data + i, 4096), NS_OK);
    WAIT_FOR(cgot(&cs) == ECHO_BYTES, 10000);
    CHECK(cs.buf && memcmp(cs.buf, data, ECHO_BYTES) == 0);
    CHECK_EQ_INT(ns_client_close(c), NS_OK);
    WAIT_FOR(cget(&cs, &cs.closes) == 1 && sget(&s, &s.closes) == 1, 5000);
    CHECK_EQ_INT(cget(&cs, &cs.reason), NS_OK);
    CHECK_EQ_INT(sget(&s, &s.last_reason), NS_OK);
    ns_client_free(c);

    SECTION("by IP address: verified against the IP SAN, no SNI");
    addr_of(srv, "127.0.0.1", addr, sizeof addr);
    CHECK_EQ_INT(ns_tcp_connect(addr, c_data, &cs, o, &c), NS_OK);
    WAIT_FOR(sget(&s, &s.opens) == 2, 5000);
    pthread_mutex_lock(&s.lock);
    CHECK_EQ_STR(s.sni, "");
    pthread_mutex_unlock(&s.lock);

    SECTION("a TCP end without close_notify is NS_ERR_CLOSED");
    /* one exchange first, so that the client has read the server's session tickets (unread
     * input would make its close a reset) */
    CHECK_EQ_INT(ns_client_send(c, "x", 1), NS_OK);
    WAIT_FOR(cgot(&cs) == ECHO_BYTES + 1, 5000);
    ns_client_free(c); /* closes at once: NS_ERR_STOPPED here, no close_notify */
    WAIT_FOR(sget(&s, &s.closes) == 2, 5000);
    CHECK_EQ_INT(sget(&s, &s.last_reason), NS_ERR_CLOSED);

    SECTION("async connect");
    memset(&cs.opens, 0, sizeof cs.opens);
    CHECK_EQ_INT(ns_tcp_connect_async(addr, c_data, &cs, o, &c), NS_OK);
    WAIT_FOR(cget(&cs, &cs.opens) == 1, 5000);
    CHECK_EQ_INT(ns_client_send(c, "ping", 4), NS_OK);
    ns_client_close(c);
    WAIT_FOR(sget(&s, &s.closes) == 3, 5000);
    CHECK_EQ_INT(sget(&s, &s.last_reason), NS_OK);
    ns_client_free(c);

    st = server_stats(srv);
    CHECK_EQ_INT(st.tls_handshakes, 3);
    CHECK_EQ_INT(st.tls_failures, 0);
    CHECK_EQ_INT(st.accepted, 3);
    free(cs.buf);
    free(data);
    ns_options_free(o);
    ns_server_free(srv);
}

/* ---- verification failures ------------------------------------------------------------------ */

/* A blocking and an async connect to a server presenting `cert_name`, trusting `ca`: both
 * fail with NS_ERR_TLS and a reason containing `why`; the server never calls back. */
static void fails(const char *cert_name, const char *ca, const char *why)
{
    srv_state s;
    cli_state cs;
    ns_server *srv = tls_server(&s, cert_name, NULL, 5000, 0);
    ns_options *o = client_opts(&cs, ca, NULL, NULL);
    ns_client *c = NULL;
    char addr[64];
    if (!srv)
        return;
    addr_of(srv, "localhost", addr, sizeof addr);
    CHECK_EQ_INT(ns_tcp_connect(addr, c_data, &cs, o, &c), NS_ERR_TLS);
    if (!strstr(ns_last_error(), why)) {
        fprintf(stderr, "expected \"%s\" in \"%s\"\n", why, ns_last_error());
        CHECK(0);
    }
    CHECK(c == NULL);
    CHECK_EQ_INT(ns_tcp_connect_async(addr, c_data, &cs, o, &c), NS_OK);
    WAIT_FOR(cget(&cs, &cs.closes) == 1, 5000);
    CHECK_EQ_INT(cget(&cs, &cs.reason), NS_ERR_TLS);
    CHECK_EQ_INT(cget(&cs, &cs.opens), 0);
    ns_client_free(c);
    WAIT_FOR(server_stats(srv).tls_failures == 2, 5000);
    CHECK_EQ_INT(sget(&s, &s.opens), 0);
    CHECK_EQ_INT(sget(&s, &s.closes), 0);
    CHECK_EQ_INT(server_stats(srv).accepted, 0);
    ns_options_free(o);
    ns_server_free(srv);
}

static void test_verification(void)
{
    SECTION("wrong CA");
    fails("server", "other-ca.pem", "UnknownIssuer");
    SECTION("expired certificate");
    fails("expired", "ca.pem", "expired");
    SECTION("name mismatch");
    fails("wrongname", "ca.pem", "not valid for name");
}

/* ---- mutual TLS ------------------------------------------------------------------------------ */

static void test_mutual(void)
{
    srv_state s;
    cli_state cs, cs2;
    ns_server *srv = tls_server(&s, "server", "ca.pem", 5000, 0);
    ns_options *anon = client_opts(&cs, "ca.pem", NULL, NULL);
    ns_options *with = client_opts(&cs2, "ca.pem", "client", NULL);
    ns_client *c = NULL;
    char addr[64];
    int rc;
    SECTION("mutual TLS: no client certificate");
    if (!srv)
        return;
    addr_of(srv, "localhost", addr, sizeof addr);
    /* TLS 1.3: the client's handshake is done before the server refuses it */
    rc = ns_tcp_connect(addr, c_data, &cs, anon, &c);
    CHECK(rc == NS_OK || rc == NS_ERR_TLS);
    if (rc == NS_OK) {
        WAIT_FOR(cget(&cs, &cs.closes) == 1, 5000);
        CHECK_EQ_INT(cget(&cs, &cs.reason), NS_ERR_TLS);
        ns_client_free(c);
    }
    WAIT_FOR(server_stats(srv).tls_failures == 1, 5000);
    CHECK_EQ_INT(sget(&s, &s.opens), 0);

    SECTION("mutual TLS: with one");
    cs2.buf = malloc(16);
    cs2.cap = 16;
    CHECK_EQ_INT(ns_tcp_connect(addr, c_data, &cs2, with, &c), NS_OK);
    CHECK_EQ_INT(ns_client_send(c, "mutual", 6), NS_OK);
    WAIT_FOR(cgot(&cs2) == 6, 5000);
    CHECK(cs2.buf && memcmp(cs2.buf, "mutual", 6) == 0);
    CHECK_EQ_INT(sget(&s, &s.opens), 1);
    ns_client_free(c);
    free(cs2.buf);
    ns_options_free(anon);
    ns_options_free(with);
    ns_server_free(srv);
}

/* ---- bad peers on plain sockets --------------------------------------------------------------- */

/* Sends `n` bytes to the server, then waits for its close: the ms it took, -1 if none came
 * within `limit_ms` (what the server sends meanwhile, an alert, is read and dropped). */
static long send_and_wait_close(int port, const void *bytes, size_t n, int limit_ms)
{
    int fd = tcp_connect4(port), eof = 0;
    int64_t t0 = now_ms();
    char sink[4096];
    long took = -1;
    if (fd < 0)
        return -1;
    CHECK_EQ_INT(write_all_timeout(fd, bytes, n, 2000), n);
    while (now_ms() - t0 < limit_ms) {
        read_timeout(fd, sink, sizeof sink, (int)(limit_ms - (now_ms() - t0)), &eof);
        if (eof != 0) {
            took = (long)(now_ms() - t0);
            break;
        }
    }
    close(fd);
    return took;
}

/* The start of a real ClientHello: netsock's own client, caught by a plain listener. */
static size_t client_hello(uint8_t *out, size_t cap)
{
    cli_state cs;
    ns_options *o = client_opts(&cs, "ca.pem", NULL, NULL);
    int lfd = bound_socket4(SOCK_STREAM), fd;
    ns_client *c = NULL;
    char addr[64];
    size_t got = 0;
    if (lfd < 0 || listen(lfd, 4) != 0)
        return 0;
    snprintf(addr, sizeof addr, "127.0.0.1:%d", sock_port(lfd));
    CHECK_EQ_INT(ns_tcp_connect_async(addr, c_data, &cs, o, &c), NS_OK);
    fd = accept(lfd, NULL, NULL);
    if (fd >= 0) {
        got = read_timeout(fd, out, 5, 3000, NULL);
        if (got == 5) {
            size_t len = ((size_t)out[3] << 8) | out[4];
            if (len + 5 <= cap)
                got += read_timeout(fd, out + 5, len, 3000, NULL);
        }
        close(fd);
    }
    ns_client_free(c);
    ns_options_free(o);
    close(lfd);
    return got;
}

/* Log lines at NS_LOG_INFO that name a failed TLS handshake. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int tls_log_lines;

static void on_log(int level, const char *msg)
{
    if (level == NS_LOG_INFO && strstr(msg, "TLS handshake") != NULL) {
        pthread_mutex_lock(&log_lock);
        tls_log_lines++;
        pthread_mutex_unlock(&log_lock);
    }
}

static void test_bad_peers(void)
{
    srv_state s;
    ns_server *srv = tls_server(&s, "server", NULL, 500, 0);
    static const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    uint8_t garbage[2048], hello[4096];
    size_t i, hello_len;
    long took;
    int port;
    SECTION("bad peers: plaintext, garbage records, half a ClientHello");
    if (!srv)
        return;
    CHECK_EQ_INT(ns_set_log(on_log, NS_LOG_INFO), NS_OK);
    {
        char a[64];
        addr_of(srv, "", a, sizeof a);
        port = atoi(a + 1);
    }
    took = send_and_wait_close(port, http, sizeof http - 1, 3000);
    CHECK(took >= 0 && took < 400); /* refused at once, not at the timeout */

    for (i = 0; i < sizeof garbage; i++)
        garbage[i] = (uint8_t)(i * 131 + 17);
    took = send_and_wait_close(port, garbage, sizeof garbage, 3000);
    CHECK(took >= 0 && took < 400);
    /* a record header that promises a handshake, then garbage inside it */
    garbage[0] = 0x16, garbage[1] = 0x03, garbage[2] = 0x01, garbage[3] = 0x01, garbage[4] = 0x00;
    took = send_and_wait_close(port, garbage, 5 + 256, 3000);
    CHECK(took >= 0 && took < 400);

    hello_len = client_hello(hello, sizeof hello);
    CHECK(hello_len > 100 && hello[0] == 0x16);
    took = send_and_wait_close(port, hello, hello_len / 2, 4000);
    printf("half a ClientHello: closed after %ld ms (handshake timeout 500 ms)\n", took);
    CHECK(took >= 400 && took < 3000);

    WAIT_FOR(server_stats(srv).tls_failures == 4, 3000);
    CHECK_EQ_INT(ns_set_log(NULL, NS_LOG_OFF), NS_OK);
    /* each failure logged at NS_LOG_INFO */
    CHECK_EQ_INT(locked_int(&log_lock, &tls_log_lines), 4);
    CHECK_EQ_INT(server_stats(srv).accepted, 0);
    CHECK_EQ_INT(sget(&s, &s.opens), 0);
    CHECK_EQ_INT(sget(&s, &s.closes), 0);
    ns_server_free(srv);
}

/* ---- a silent server: the client's handshake timeout ------------------------------------ */

static void test_client_timeout(void)
{
    cli_state cs;
    ns_options *o = client_opts(&cs, "ca.pem", NULL, NULL);
    int lfd = bound_socket4(SOCK_STREAM), rc;
    ns_client *c = NULL;
    char addr[64];
    int64_t t0;
    SECTION("a server that accepts and never answers: the client's handshake times out");
    if (lfd < 0 || listen(lfd, 8) != 0) {
        CHECK(0);
        return;
    }
    snprintf(addr, sizeof addr, "localhost:%d", sock_port(lfd));
    ns_options_set_connect_timeout_ms(o, 300);
    t0 = now_ms();
    rc = ns_tcp_connect(addr, c_data, &cs, o, &c);
    CHECK_EQ_INT(rc, NS_ERR_TIMEOUT);
    CHECK(strstr(ns_last_error(), "TLS handshake") != NULL);
    CHECK(now_ms() - t0 >= 250 && now_ms() - t0 < 3000);
    CHECK(c == NULL);
    CHECK_EQ_INT(ns_tcp_connect_async(addr, c_data, &cs, o, &c), NS_OK);
    WAIT_FOR(cget(&cs, &cs.closes) == 1, 5000);
    CHECK_EQ_INT(cget(&cs, &cs.reason), NS_ERR_TIMEOUT);
    CHECK_EQ_INT(cget(&cs, &cs.opens), 0);
    ns_client_free(c);
    ns_options_free(o);
    close(lfd);
}

/* ---- framing and limits apply to the plaintext ------------------------------------------ */

static void f_data(ns_conn *c, const uint8_t *d, size_t n, void *user)
{
    (void)user;
    CHECK_EQ_INT(ns_conn_send_frame(c, d, n), NS_OK);
}

static void test_framing(void)
{
    srv_state s;
    cli_state cs;
    ns_tls *tls = NULL;
    ns_options *so = ns_options_new(), *o;
    ns_server *srv = NULL;
    ns_client *c = NULL;
    char addr[64], big[300];
    SECTION("line framing and max_frame on the plaintext of a TLS connection");
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.lock, NULL);
    CHECK_EQ_INT(ns_tls_server_new(cert("server.pem"), cert("server.key"), &tls), NS_OK);
    CHECK_EQ_INT(ns_options_set_tls(so, tls), NS_OK);
    ns_tls_free(tls);
    ns_options_set_framing(so, NS_FRAMING_LINE);
    ns_options_set_max_frame(so, 256);
    ns_options_set_on_close(so, s_close);
    CHECK_EQ_INT(ns_tcp_serve("127.0.0.1:0", f_data, &s, so, &srv), NS_OK);
    ns_options_free(so);
    if (!srv)
        return;
    o = client_opts(&cs, "ca.pem", NULL, NULL);
    cs.buf = malloc(64);
    cs.cap = 64;
    addr_of(srv, "localhost", addr, sizeof addr);
    CHECK_EQ_INT(ns_tcp_connect(addr, c_data, &cs, o, &c), NS_OK);
    /* two lines in one send, one cut over two sends: three messages back */
    CHECK_EQ_INT(ns_client_send(c, "one\ntwo\nthr", 11), NS_OK);
    CHECK_EQ_INT(ns_client_send(c, "ee\n", 3), NS_OK);
    WAIT_FOR(cgot(&cs) == 14, 5000);
    CHECK(cs.buf && memcmp(cs.buf, "one\ntwo\nthree\n", 14) == 0);
    /* a line over max_frame closes the connection with NS_ERR_LIMIT, counted */
    memset(big, 'x', sizeof big);
    CHECK_EQ_INT(ns_client_send(c, big, sizeof big), NS_OK);
    WAIT_FOR(sget(&s, &s.closes) == 1, 5000);
    CHECK_EQ_INT(sget(&s, &s.last_reason), NS_ERR_LIMIT);
    CHECK_EQ_INT(server_stats(srv).frames_too_large, 1);
    ns_client_free(c);
    free(cs.buf);
    ns_options_free(o);
    ns_server_free(srv);
}

/* ---- a TLS peer that never reads ----------------------------------------------------------- */

#define MAXWB (512u * 1024u)

static void test_never_reads(void)
{
    srv_state s;
    cli_state cs;
    ns_server *srv = tls_server(&s, "server", NULL, 5000, MAXWB);
    ns_options *o = client_opts(&cs, "ca.pem", NULL, NULL);
    ns_client *c = NULL;
    char addr[64];
    long rss0 = proc_status_num("VmRSS"), rss1;
    SECTION("a TLS peer that never reads: the queue stays bounded");
    if (!srv)
        return;
    cs.pause_on_open = 1;
    addr_of(srv, "localhost", addr, sizeof addr);
    CHECK_EQ_INT(ns_tcp_connect(addr, c_data, &cs, o, &c), NS_OK);
    WAIT_FOR(locked_int(&s.lock, &s.flood_rc) != 0, 5000);
    pthread_mutex_lock(&s.lock);
    printf("never-reading peer: %zu bytes accepted, then %s; queue at most %zu bytes\n",
           s.flood_sent, ns_strerror(s.flood_rc), s.flood_pending_max);
    CHECK_EQ_INT(s.flood_rc, NS_ERR_LIMIT);
    CHECK(s.flood_pending_max <= MAXWB);
    pthread_mutex_unlock(&s.lock);
    rss1 = proc_status_num("VmRSS");
    if (!UNDER_ASAN && !under_valgrind())
        CHECK(rss1 - rss0 < 32 * 1024); /* kB */
    ns_client_free(c);
    ns_options_free(o);
    ns_server_free(srv);
}

/* ---- churn ------------------------------------------------------------------------------------- */

static void test_churn(void)
{
    srv_state s;
    cli_state cs;
    ns_loop *lp = NULL;
    ns_server *srv = tls_server(&s, "server", NULL, 5000, 0);
    ns_options *o;
    const char *env = getenv("NS_TLS_CHURN");
    long n = env ? atol(env) : under_valgrind() ? 150 : UNDER_ASAN ? 2000 : 10000, i, warm = n / 10;
    long rss_base = 0, rss_end, fds_base = 0;
    ns_client *c = NULL;
    char addr[64];
    int64_t t0;
    ns_stats st;
    SECTION("churn: full handshakes, memory back to baseline");
    if (!srv)
        return;
    CHECK_EQ_INT(ns_loop_new(NULL, &lp), NS_OK);
    o = client_opts(&cs, "ca.pem", NULL, lp);
    addr_of(srv, "localhost", addr, sizeof addr);
    t0 = now_ms();
    for (i = 0; i < n; i++) {
        if (i == warm) {
            rss_base = proc_status_num("VmRSS");
            fds_base = proc_fd_count();
        }
        if (ns_tcp_connect(addr, c_data, &cs, o, &c) != NS_OK) {
            fprintf(stderr, "handshake %ld: %s\n", i, ns_last_error());
            CHECK(0);
            break;
        }
        ns_client_close(c);
        ns_client_free(c);
    }
    WAIT_FOR(sget(&s, &s.closes) == n, 10000);
    st = server_stats(srv);
    printf("%ld handshakes in %lld ms\n", n, (long long)(now_ms() - t0));
    CHECK_EQ_INT(st.tls_handshakes, n);
    CHECK_EQ_INT(st.tls_failures, 0);
    CHECK_EQ_INT(sget(&s, &s.opens), n);
    /* a client freed before its loop took it gets no callback: as many closes as opens */
    CHECK_EQ_INT(cget(&cs, &cs.closes), cget(&cs, &cs.opens));
    /* lingering sockets let go within 2 s */
    WAIT_FOR(proc_fd_count() <= fds_base, 5000);
    rss_end = proc_status_num("VmRSS");
    printf("RSS %ld kB after %ld handshakes, %ld kB after all %ld\n", rss_base, warm, rss_end, n);
    if (!UNDER_ASAN && !under_valgrind())
        CHECK(rss_end - rss_base < 8 * 1024);
    ns_options_free(o);
    ns_server_free(srv);
    ns_loop_free(lp);
}

int main(void)
{
    char cmd[512];
    const char *tmp = getenv("TMPDIR");
    watchdog(110);
    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(certs, sizeof certs, "%s/netsock-tls-XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(certs)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(cmd, sizeof cmd, "sh tests/tls/certs.sh %s", certs);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot make the test certificates (is the openssl CLI installed?)\n");
        return 1;
    }
    test_config();
    test_echo();
    test_verification();
    test_mutual();
    test_bad_peers();
    test_client_timeout();
    test_framing();
    test_never_reads();
    test_churn();
    snprintf(cmd, sizeof cmd, "rm -rf %s", certs);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", certs);
    return CHECK_DONE();
}
