/*
 * ns_resp.c - the gathered-writes scenario's server: just enough RESP for redis-benchmark
 * (PING inline and multibulk, SET, GET, CONFIG GET), answering the commands of a delivery in
 * one of two ways:
 *
 *   ns_resp each|gather HOST:PORT    (e.g. 127.0.0.1:0; prints "port=N" once bound)
 *
 *   each     one ns_conn_send per reply, as a new user writes it: with -P 16, sixteen sends
 *            in one on_data
 *   gather   the replies gathered into one buffer, sent with one ns_conn_send per on_data
 *
 * Netsock gathering the sends of a loop turn itself makes the two cost the same; this pair
 * measures how close they are. No table: SET stores nothing and GET answers a fixed 3-byte
 * value (redis-benchmark's default size), so the two differ only in how they send.
 * Runs on main's thread (ns_options_set_run_in_wait); SIGTERM or SIGINT stop it.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <netsock.h>

#define MAX_ARGS 8
#define MAX_REQUEST (64 * 1024)

static ns_server *g_server;
static int g_gather;
static char g_out[64 * 1024];
static size_t g_out_len;

struct arg {
    const uint8_t *p;
    size_t len;
};

/* One reply: sent at once (each) or added to the buffer (gather). 0, or -1 if refused. */
static int reply(ns_conn *conn, const char *s, size_t n)
{
    if (!g_gather)
        return ns_conn_send(conn, s, n) == NS_OK ? 0 : -1;
    if (g_out_len + n > sizeof g_out) {
        if (ns_conn_send(conn, g_out, g_out_len) != NS_OK)
            return -1;
        g_out_len = 0;
    }
    memcpy(g_out + g_out_len, s, n);
    g_out_len += n;
    return 0;
}

static int is(const struct arg *a, const char *name)
{
    size_t n = strlen(name);
    return a->len == n && strncasecmp((const char *)a->p, name, n) == 0;
}

/* A decimal number ending in "\r\n" at d[*i]: 1, 0 if incomplete, -1 if bad. */
static int number(const uint8_t *d, size_t len, size_t *i, long *out)
{
    size_t j = *i;
    long v = 0;
    for (; j < len && d[j] >= '0' && d[j] <= '9' && v < MAX_REQUEST; j++)
        v = v * 10 + (d[j] - '0');
    if (j + 2 > len)
        return 0;
    if (j == *i || d[j] != '\r' || d[j + 1] != '\n' || v >= MAX_REQUEST)
        return -1;
    *i = j + 2;
    *out = v;
    return 1;
}

/* One command at d: the bytes it takes (its arguments in argv), 0 if incomplete, -1 if bad. */
static long parse(const uint8_t *d, size_t len, struct arg *argv, int *argc)
{
    size_t i = 1;
    long n, blen;
    int r;
    if (d[0] != '*') { /* inline: words up to "\r\n" */
        const uint8_t *nl = memchr(d, '\n', len);
        size_t end, k = 0;
        if (nl == NULL)
            return len < MAX_REQUEST ? 0 : -1;
        end = (size_t)(nl - d) - (nl > d && nl[-1] == '\r');
        for (*argc = 0; k < end && *argc < MAX_ARGS;) {
            size_t start;
            while (k < end && d[k] == ' ')
                k++;
            for (start = k; k < end && d[k] != ' '; k++)
                ;
            if (k > start)
                argv[(*argc)++] = (struct arg){d + start, k - start};
        }
        return (long)(nl - d) + 1;
    }
    if ((r = number(d, len, &i, &n)) <= 0)
        return r;
    if (n > MAX_ARGS)
        return -1;
    for (*argc = 0; *argc < n; (*argc)++) {
        if (i >= len)
            return 0;
        if (d[i++] != '$')
            return -1;
        if ((r = number(d, len, &i, &blen)) <= 0)
            return r;
        if (len - i < (size_t)blen + 2)
            return 0;
        argv[*argc] = (struct arg){d + i, (size_t)blen};
        i += (size_t)blen + 2;
    }
    return (long)i;
}

static int execute(ns_conn *conn, const struct arg *argv, int argc)
{
    static const char config[] = "*4\r\n$4\r\nsave\r\n$0\r\n\r\n$10\r\nappendonly\r\n$2\r\nno\r\n";
    if (is(&argv[0], "PING"))
        return reply(conn, "+PONG\r\n", 7);
    if (is(&argv[0], "SET") && argc == 3)
        return reply(conn, "+OK\r\n", 5);
    if (is(&argv[0], "GET") && argc == 2)
        return reply(conn, "$3\r\nxxx\r\n", 9);
    if (is(&argv[0], "CONFIG")) /* redis-benchmark asks for save and appendonly */
        return reply(conn, config, sizeof config - 1);
    return reply(conn, "-ERR unknown command\r\n", 22);
}

static void on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct arg argv[MAX_ARGS];
    size_t pos = 0;
    int argc, failed = 0;
    (void)user;
    g_out_len = 0;
    while (pos < len && !failed) {
        long used = parse(data + pos, len - pos, argv, &argc);
        if (used == 0) { /* the rest of the command comes with the next delivery */
            failed = ns_conn_keep(conn, len - pos) != NS_OK;
            break;
        }
        if (used < 0) {
            failed = 1;
            break;
        }
        pos += (size_t)used;
        if (argc > 0 && execute(conn, argv, argc) != 0)
            failed = 1;
    }
    if (g_gather && !failed && g_out_len > 0 && ns_conn_send(conn, g_out, g_out_len) != NS_OK)
        failed = 1;
    if (failed)
        ns_conn_close(conn);
}

static void on_signal(int sig)
{
    (void)sig;
    ns_server_stop(g_server);
}

int main(int argc, char **argv)
{
    ns_options *opts;
    struct sigaction sa;
    int rc;

    if (argc != 3 || (strcmp(argv[1], "each") != 0 && strcmp(argv[1], "gather") != 0)) {
        fprintf(stderr, "usage: ns_resp each|gather HOST:PORT\n");
        return 2;
    }
    g_gather = strcmp(argv[1], "gather") == 0;
    opts = ns_options_new();
    if (opts == NULL || ns_options_set_max_frame(opts, MAX_REQUEST) != NS_OK ||
        ns_options_set_run_in_wait(opts, 1) != NS_OK) {
        fprintf(stderr, "ns_resp: options: %s\n", ns_last_error());
        return 1;
    }
    rc = ns_tcp_serve(argv[2], on_data, NULL, opts, &g_server);
    ns_options_free(opts);
    if (rc != NS_OK) {
        fprintf(stderr, "ns_resp: cannot serve on %s: %s (%s)\n", argv[2], ns_strerror(rc), ns_last_error());
        return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    printf("port=%d\n", ns_server_port(g_server));
    fflush(stdout);
    rc = ns_server_wait(g_server);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    ns_server_free(g_server);
    return rc == NS_OK ? 0 : 1;
}
