/*
 * kv_client.c - the client of kv_server, in netsock's two client styles.
 *
 * Shows:
 *  - one request per connection: ns_tcp_request connects, sends one
 *    LEN32-framed message, reads one whole framed reply and closes, within
 *    one timeout;
 *  - a persistent connection (-i): ns_tcp_connect runs the connection on a
 *    loop thread of its own; requests go out with ns_client_send_frame and
 *    each reply arrives in on_data, on that thread, while main waits for it
 *    (at most REPLY_TIMEOUT_MS) on a mutex and condition variable.
 *
 * Try it (with kv_server running):
 *   ./kv_client 127.0.0.1:7000 SET name netsock     -> OK
 *   ./kv_client 127.0.0.1:7000 GET name             -> VALUE netsock
 *   ./kv_client -i 127.0.0.1:7000                   then type requests, one a line
 *   printf 'DEL name\nGET name\n' | ./kv_client -i 127.0.0.1:7000
 *
 * Exits 0 when every request got a reply (whatever it said), 1 otherwise,
 * 2 for bad arguments.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <netsock.h>

#define REPLY_TIMEOUT_MS 5000
#define MAX_MESSAGE 4096

/* What main and the loop thread share in -i mode; `lock` guards it. */
struct session {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    unsigned long replies; /* replies received so far */
    int closed;            /* on_close has run ... */
    int reason;            /* ... with this reason */
};

/* Joins argv[first..argc-1] with spaces into buf; its length, or 0 if it does not fit. */
static size_t join_args(int argc, char **argv, int first, char *buf, size_t cap)
{
    size_t len = 0;
    int i;
    for (i = first; i < argc; i++) {
        size_t n = strlen(argv[i]);
        if (len + (i > first) + n >= cap)
            return 0;
        if (i > first)
            buf[len++] = ' ';
        memcpy(buf + len, argv[i], n);
        len += n;
    }
    return len;
}

/* One request on a connection of its own. */
static int request_once(const char *addr, const char *req, size_t len)
{
    char reply[MAX_MESSAGE];
    size_t reply_len = 0;
    int rc = ns_tcp_request(addr, req, len, reply, sizeof reply, &reply_len, REPLY_TIMEOUT_MS,
                            NS_FRAMING_LEN32);
    if (rc != NS_OK) {
        fprintf(stderr, "kv_client: %s: %s (%s)\n", addr, ns_strerror(rc), ns_last_error());
        return 1;
    }
    printf("%.*s\n", (int)reply_len, reply);
    return 0;
}

/* -i mode: on the client's loop thread. */
static void on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct session *s = user;
    (void)conn;
    printf("%.*s\n", (int)len, (const char *)data);
    pthread_mutex_lock(&s->lock);
    s->replies++;
    pthread_cond_signal(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

static void on_close(ns_conn *conn, int reason, void *user)
{
    struct session *s = user;
    (void)conn;
    pthread_mutex_lock(&s->lock);
    s->closed = 1;
    s->reason = reason;
    pthread_cond_signal(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

/* The moment REPLY_TIMEOUT_MS from now, on the condition variable's clock. */
static struct timespec deadline(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += REPLY_TIMEOUT_MS / 1000;
    t.tv_nsec += (long)(REPLY_TIMEOUT_MS % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

/* Waits (at most REPLY_TIMEOUT_MS) until `replies` replies have come: NS_OK, NS_ERR_TIMEOUT,
 * or NS_ERR_CLOSED if the connection closed first. */
static int wait_reply(struct session *s, unsigned long replies)
{
    struct timespec until = deadline();
    int rc, err = 0;

    pthread_mutex_lock(&s->lock);
    while (s->replies < replies && !s->closed && err != ETIMEDOUT)
        err = pthread_cond_timedwait(&s->changed, &s->lock, &until);
    rc = s->replies >= replies ? NS_OK : s->closed ? NS_ERR_CLOSED : NS_ERR_TIMEOUT;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* Waits (at most REPLY_TIMEOUT_MS) for on_close: its reason, or NS_ERR_TIMEOUT. */
static int wait_closed(struct session *s)
{
    struct timespec until = deadline();
    int rc, err = 0;

    pthread_mutex_lock(&s->lock);
    while (!s->closed && err != ETIMEDOUT)
        err = pthread_cond_timedwait(&s->changed, &s->lock, &until);
    rc = s->closed ? s->reason : NS_ERR_TIMEOUT;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* Requests from stdin, one a line, over one connection. */
static int interactive(const char *addr)
{
    struct session s = {.lock = PTHREAD_MUTEX_INITIALIZER};
    pthread_condattr_t attr;
    ns_options *opts;
    ns_client *client = NULL;
    char line[MAX_MESSAGE];
    unsigned long sent = 0;
    int rc, status = 0;

    /* The condition variable times out on the monotonic clock: setting the
     * wall clock back cannot stretch the wait. */
    if (pthread_condattr_init(&attr) != 0 ||
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&s.changed, &attr) != 0) {
        fprintf(stderr, "kv_client: cannot make a condition variable\n");
        return 1;
    }
    pthread_condattr_destroy(&attr);

    opts = ns_options_new();
    if (opts == NULL) {
        fprintf(stderr, "ns_options_new failed\n");
        pthread_cond_destroy(&s.changed);
        return 1;
    }
    if (ns_options_set_framing(opts, NS_FRAMING_LEN32) != NS_OK ||
        ns_options_set_connect_timeout_ms(opts, REPLY_TIMEOUT_MS) != NS_OK ||
        ns_options_set_on_close(opts, on_close) != NS_OK) {
        fprintf(stderr, "cannot set options: %s\n", ns_last_error());
        ns_options_free(opts);
        pthread_cond_destroy(&s.changed);
        return 1;
    }
    rc = ns_tcp_connect(addr, on_data, &s, opts, &client);
    ns_options_free(opts); /* connect copied it */
    if (rc != NS_OK) {
        fprintf(stderr, "kv_client: %s: %s (%s)\n", addr, ns_strerror(rc), ns_last_error());
        pthread_cond_destroy(&s.changed);
        return 1;
    }

    while (fgets(line, sizeof line, stdin) != NULL) {
        size_t len = strcspn(line, "\r\n");
        if (line[len] == '\0' && !feof(stdin)) {
            fprintf(stderr, "kv_client: request longer than %d bytes\n", MAX_MESSAGE - 2);
            status = 1;
            break;
        }
        if (len == 0)
            continue; /* skip blank lines */
        rc = ns_client_send_frame(client, line, len);
        if (rc == NS_OK)
            rc = wait_reply(&s, ++sent); /* one request in flight at a time */
        if (rc != NS_OK) {
            fprintf(stderr, "kv_client: %.*s%s: %s\n", len > 40 ? 40 : (int)len, line,
                    len > 40 ? "..." : "", ns_strerror(rc));
            status = 1;
            break;
        }
    }

    /* An orderly goodbye: close once the output is written and wait (bounded)
     * for on_close.  ns_client_free alone would also do, more bluntly. */
    rc = ns_client_close(client);
    if (rc == NS_OK)
        rc = wait_closed(&s);
    if (rc != NS_OK && rc != NS_ERR_CLOSED) /* NS_ERR_CLOSED: it had closed already */
        fprintf(stderr, "kv_client: closing: %s\n", ns_strerror(rc));
    ns_client_free(client); /* no callback runs after this */
    pthread_cond_destroy(&s.changed);
    return status;
}

int main(int argc, char **argv)
{
    char req[MAX_MESSAGE];
    size_t len;

    setvbuf(stdout, NULL, _IOLBF, 0); /* line-buffered even when redirected */

    if (argc == 3 && strcmp(argv[1], "-i") == 0)
        return interactive(argv[2]);
    if (argc < 3 || argv[1][0] == '-') {
        fprintf(stderr, "usage: kv_client ADDRESS SET|GET|DEL KEY [VALUE...]\n"
                        "       kv_client -i ADDRESS     (requests from stdin, one a line)\n");
        return 2;
    }
    len = join_args(argc, argv, 2, req, sizeof req);
    if (len == 0) {
        fprintf(stderr, "kv_client: request longer than %d bytes\n", MAX_MESSAGE - 1);
        return 1;
    }
    return request_once(argv[1], req, len);
}
