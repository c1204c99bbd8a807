/*
 * kv_server.c - a small in-memory key-value store, on netsock.
 *
 * Shows: NS_FRAMING_LEN32 (every message is a 4-byte big-endian length and
 * that many bytes; on_data gets one whole request however TCP split it),
 * answering with ns_conn_send_frame, and a graceful stop: on SIGINT/SIGTERM
 * the server stops accepting and reading, and replies already queued get up
 * to DRAIN_MS to reach their clients (ns_options_set_drain_timeout_ms).
 *
 * Requests              Replies
 *   SET key value         OK                 (the value is the rest of the message)
 *   GET key               VALUE value  or  NOT_FOUND
 *   DEL key               OK  or  NOT_FOUND
 *   anything else         ERR reason
 *
 * Try it:
 *   ./kv_server 127.0.0.1:7000           (default 0.0.0.0:6666; port 0 = any free port)
 *   ./kv_client 127.0.0.1:7000 SET name netsock
 *   ./kv_client 127.0.0.1:7000 GET name
 *   ./kv_client -i 127.0.0.1:7000        then type requests, one per line
 *   (nc cannot write the length prefixes; kv_client does.)
 *   Ctrl-C stops the server.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <netsock.h>

#define MAX_KEYS 128
#define MAX_KEY 64      /* bytes */
#define MAX_VALUE 1024  /* bytes */
#define MAX_REQUEST (4 + MAX_KEY + 1 + MAX_VALUE) /* "SET key value": larger closes the connection */
#define DRAIN_MS 2000

/*
 * The table: a fixed array searched from the start, plenty for a demo.  All
 * callbacks run on the server's one loop thread (the default), one at a time,
 * so it needs no lock.
 */
struct entry {
    size_t key_len, value_len; /* key_len 0: a free slot */
    char key[MAX_KEY];
    char value[MAX_VALUE];
};
static struct entry g_table[MAX_KEYS];

static ns_server *g_server; /* set before the signal handlers are installed */

static void on_signal(int sig)
{
    (void)sig;
    ns_server_stop(g_server); /* only wakes the server up; main does the rest */
}

/* Route SIGINT and SIGTERM to handler (or SIG_DFL); -1 on failure. */
static int handle_signals(void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGINT, &sa, NULL) == 0 && sigaction(SIGTERM, &sa, NULL) == 0 ? 0 : -1;
}

static struct entry *find(const char *key, size_t len)
{
    size_t i;
    for (i = 0; i < MAX_KEYS; i++)
        if (g_table[i].key_len == len && memcmp(g_table[i].key, key, len) == 0)
            return &g_table[i];
    return NULL;
}

/* Carries out one request (len bytes, not NUL-terminated); the reply goes in
 * `out` (at least 6 + MAX_VALUE bytes) and its length is returned. */
static size_t execute(const char *req, size_t len, char *out)
{
    const char *space = memchr(req, ' ', len);
    size_t cmd_len = space ? (size_t)(space - req) : len;
    const char *key = space ? space + 1 : req + len;
    size_t key_len = req + len - key;
    const char *value = NULL;
    size_t value_len = 0;
    struct entry *e;

    if (cmd_len == 3 && memcmp(req, "SET", 3) == 0) {
        space = memchr(key, ' ', key_len);
        if (space == NULL)
            return sprintf(out, "ERR usage: SET key value");
        value = space + 1;
        value_len = key + key_len - value;
        key_len = space - key;
    } else if (!(cmd_len == 3 && (memcmp(req, "GET", 3) == 0 || memcmp(req, "DEL", 3) == 0))) {
        return sprintf(out, "ERR unknown command: use SET, GET or DEL");
    }
    if (key_len == 0 || memchr(key, ' ', key_len) != NULL)
        return sprintf(out, "ERR a key is 1 to %d bytes without spaces", MAX_KEY);
    if (key_len > MAX_KEY)
        return sprintf(out, "ERR key longer than %d bytes", MAX_KEY);
    if (value_len > MAX_VALUE)
        return sprintf(out, "ERR value longer than %d bytes", MAX_VALUE);

    e = find(key, key_len);
    switch (req[0]) {
    case 'S':
        if (e == NULL)
            e = find(key, 0); /* a free slot */
        if (e == NULL)
            return sprintf(out, "ERR the table is full (%d keys)", MAX_KEYS);
        memcpy(e->key, key, key_len);
        e->key_len = key_len;
        memcpy(e->value, value, value_len);
        e->value_len = value_len;
        return sprintf(out, "OK");
    case 'G':
        if (e == NULL)
            return sprintf(out, "NOT_FOUND");
        memcpy(out, "VALUE ", 6);
        memcpy(out + 6, e->value, e->value_len);
        return 6 + e->value_len;
    default: /* DEL */
        if (e == NULL)
            return sprintf(out, "NOT_FOUND");
        e->key_len = 0;
        return sprintf(out, "OK");
    }
}

static void on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    char reply[6 + MAX_VALUE];
    size_t reply_len;
    int rc;
    (void)user;

    reply_len = execute((const char *)data, len, reply);
    printf("#%llu: %.*s -> %.*s\n", (unsigned long long)ns_conn_id(conn), (int)len,
           (const char *)data, (int)reply_len, reply);
    rc = ns_conn_send_frame(conn, reply, reply_len);
    if (rc != NS_OK)
        fprintf(stderr, "reply to #%llu failed: %s\n", (unsigned long long)ns_conn_id(conn),
                ns_strerror(rc));
}

static void on_close(ns_conn *conn, int reason, void *user)
{
    (void)user;
    if (reason == NS_ERR_LIMIT) /* a request over MAX_REQUEST */
        printf("#%llu: request too large, connection closed\n",
               (unsigned long long)ns_conn_id(conn));
    else if (reason != NS_OK && reason != NS_ERR_STOPPED)
        printf("#%llu: connection closed: %s\n", (unsigned long long)ns_conn_id(conn),
               ns_strerror(reason));
}

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "0.0.0.0:6666";
    char bound[256];
    ns_options *opts;
    size_t i, keys = 0;
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0); /* line-buffered even when redirected */

    opts = ns_options_new();
    if (opts == NULL) {
        fprintf(stderr, "ns_options_new failed\n");
        return 1;
    }
    if (ns_options_set_framing(opts, NS_FRAMING_LEN32) != NS_OK ||
        ns_options_set_max_frame(opts, MAX_REQUEST) != NS_OK ||
        ns_options_set_drain_timeout_ms(opts, DRAIN_MS) != NS_OK ||
        ns_options_set_on_close(opts, on_close) != NS_OK) {
        fprintf(stderr, "cannot set options: %s\n", ns_last_error());
        ns_options_free(opts);
        return 1;
    }
    rc = ns_tcp_serve(addr, on_data, NULL, opts, &g_server);
    ns_options_free(opts); /* serve copied it */
    if (rc != NS_OK) {
        fprintf(stderr, "cannot listen on %s: %s (%s)\n", addr, ns_strerror(rc), ns_last_error());
        return 1;
    }

    rc = ns_server_addr(g_server, bound, sizeof bound);
    if (rc != NS_OK) {
        fprintf(stderr, "ns_server_addr: %s\n", ns_strerror(rc));
        ns_server_free(g_server);
        return 1;
    }

    if (handle_signals(on_signal) != 0) {
        perror("sigaction");
        ns_server_free(g_server);
        return 1;
    }
    printf("listening on %s\n", bound);
    fflush(stdout);

    rc = ns_server_wait(g_server); /* returns once a signal stopped the server and it drained */
    if (rc != NS_OK)
        fprintf(stderr, "ns_server_wait: %s\n", ns_strerror(rc));
    /* The handler must never see a freed server; a second Ctrl-C now just ends us. */
    if (handle_signals(SIG_DFL) != 0)
        perror("sigaction");
    ns_server_free(g_server);
    for (i = 0; i < MAX_KEYS; i++)
        keys += g_table[i].key_len != 0;
    printf("server stopped; keys stored: %zu\n", keys);
    return rc == NS_OK ? 0 : 1;
}
