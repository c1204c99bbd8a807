/*
 * resp_server.c - a small Redis-compatible server (RESP2), on netsock.
 *
 * Shows: raw framing with ns_conn_keep for a protocol no framing setting
 * describes; pipelining (every whole command of a delivery is answered, and
 * the replies leave in one ns_conn_send); a whole server on main's thread
 * (ns_options_set_run_in_wait + ns_server_wait), so the table needs no lock;
 * and the limits a public server wants: a bounded table, bounded requests,
 * bounded memory.
 *
 * Why raw framing and not NS_FRAMING_DELIMITER: a request is an array of bulk
 * strings, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n", each value after
 * its length; the value is any bytes, "\r\n" included (here "a\r\nb").
 * Delimiter framing would cut that value in two and drop the "\r\n" between
 * the halves, and gluing them together again would take a buffer of our own,
 * the very thing a framing should spare us.  So the parser reads the lengths
 * itself, and when a delivery ends inside a command it hands that unfinished
 * tail back with ns_conn_keep: the next on_data starts with it.  Bulk values
 * are skipped by their length, never scanned, so a large value arriving in
 * many reads costs a few header parses, not a rescan of its bytes.
 *
 * Commands: PING [msg], ECHO msg, SET key value, GET key, DEL key [key ...],
 * INCR key, and enough of COMMAND, CONFIG GET, CLIENT, HELLO, SELECT and QUIT
 * for redis-cli and redis-benchmark.  Inline commands ("PING\r\n", as typed
 * into nc, and as redis-benchmark's PING_INLINE sends them) work too; their
 * arguments are split at spaces (no quoting).
 *
 * Try it:
 *   ./resp_server 127.0.0.1:7000         (default 127.0.0.1:6379; port 0 = any free port)
 *   redis-cli -p 7000 SET greeting hello
 *   redis-cli -p 7000 GET greeting
 *   redis-cli -p 7000 INCR visits
 *   redis-benchmark -p 7000 -t ping,set,get -P 16 -q
 *   nc 127.0.0.1 7000                    then type PING or GET greeting
 *   Ctrl-C stops the server.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <netsock.h>

#define MAX_ARGS 1024                   /* arguments of one command */
#define MAX_BULK (512 * 1024)           /* bytes of one argument (a key or a value) */
#define MAX_INLINE (64 * 1024)          /* bytes of one inline command line */
#define MAX_REQUEST (1024 * 1024)       /* bytes of one whole command: also max_frame, */
                                        /* so netsock never keeps more for us */
#define TABLE_SLOTS (1u << 16)          /* a power of two */
#define MAX_KEYS (TABLE_SLOTS / 4 * 3)  /* at most 3/4 full: probes stay short */
#define MAX_MEMORY (64u << 20)          /* bytes of keys and values, all together */
#define FLUSH_AT (64 * 1024)            /* send the replies gathered so far past this */

/* ---- the table: open addressing, linear probing ---------------------------------------- */

/*
 * One slot: the key's bytes, then the value's, in one allocation.  A slot with
 * mem == NULL is free.  Deleting shifts the entries after it back, so there are
 * no tombstones and lookups stay short however many keys come and go.  (A server
 * facing hostile clients would use a keyed hash such as SipHash, so that nobody
 * can choose keys that collide; FNV-1a keeps this example short.)
 */
struct entry {
    char *mem;
    uint64_t hash;
    uint32_t key_len, value_len;
};
static struct entry g_table[TABLE_SLOTS];
static size_t g_keys, g_bytes;

static uint64_t hash_of(const uint8_t *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    while (n--)
        h = (h ^ *p++) * 1099511628211ull;
    return h;
}

/* The slot holding `key`, or the free slot where it would go (there always is one). */
static size_t slot_of(const uint8_t *key, size_t len, uint64_t h)
{
    size_t i = h & (TABLE_SLOTS - 1);
    while (g_table[i].mem != NULL &&
           !(g_table[i].hash == h && g_table[i].key_len == len && memcmp(g_table[i].mem, key, len) == 0))
        i = (i + 1) & (TABLE_SLOTS - 1);
    return i;
}

/* Stores value under key; NULL on success, else the error to reply. */
static const char *table_set(const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len)
{
    uint64_t h = hash_of(key, key_len);
    struct entry *e = &g_table[slot_of(key, key_len, h)];
    size_t old = e->mem ? e->key_len + e->value_len : 0;
    char *mem;

    if (e->mem == NULL && g_keys >= MAX_KEYS)
        return "ERR the table is full";
    if (g_bytes - old + key_len + value_len > MAX_MEMORY)
        return "OOM command not allowed when used memory > 'maxmemory'";
    mem = realloc(e->mem, key_len + value_len + 1); /* +1: never a 0-byte allocation */
    if (mem == NULL)
        return "OOM out of memory";
    if (e->mem == NULL) {
        memcpy(mem, key, key_len);
        e->hash = h;
        e->key_len = (uint32_t)key_len;
        g_keys++;
    }
    memcpy(mem + key_len, value, value_len);
    e->mem = mem;
    e->value_len = (uint32_t)value_len;
    g_bytes = g_bytes - old + key_len + value_len;
    return NULL;
}

static struct entry *table_get(const uint8_t *key, size_t len)
{
    struct entry *e = &g_table[slot_of(key, len, hash_of(key, len))];
    return e->mem ? e : NULL;
}

static int table_del(const uint8_t *key, size_t len)
{
    size_t i = slot_of(key, len, hash_of(key, len)), j = i;

    if (g_table[i].mem == NULL)
        return 0;
    free(g_table[i].mem);
    g_bytes -= g_table[i].key_len + g_table[i].value_len;
    g_keys--;
    /* Backward shift: an entry further along may move into the hole unless its
     * home slot lies (cyclically) after the hole, up to where it sits now. */
    for (;;) {
        size_t home;
        j = (j + 1) & (TABLE_SLOTS - 1);
        if (g_table[j].mem == NULL)
            break;
        home = g_table[j].hash & (TABLE_SLOTS - 1);
        if (i < j ? (home <= i || home > j) : (home <= i && home > j)) {
            g_table[i] = g_table[j];
            i = j;
        }
    }
    g_table[i].mem = NULL;
    return 1;
}

/* ---- replies: gathered here, sent once per delivery (or every FLUSH_AT bytes) ----------- */

/* One loop thread runs every callback, so one buffer serves every connection. */
static struct {
    char *buf;
    size_t len, cap;
    int failed; /* out of memory */
} g_out;

static void out_add(const void *p, size_t n)
{
    if (g_out.len + n > g_out.cap) {
        size_t cap = g_out.cap ? g_out.cap : FLUSH_AT;
        char *buf;
        while (cap < g_out.len + n)
            cap *= 2;
        buf = realloc(g_out.buf, cap);
        if (buf == NULL) {
            g_out.failed = 1;
            return;
        }
        g_out.buf = buf;
        g_out.cap = cap;
    }
    memcpy(g_out.buf + g_out.len, p, n);
    g_out.len += n;
}

/* Sends what was gathered: NS_OK, or why not (NS_ERR_LIMIT: the client does not
 * read its replies and has max_write_buffer of them queued already). */
static int out_flush(ns_conn *conn)
{
    int rc = NS_OK;
    if (g_out.len > 0)
        rc = ns_conn_send(conn, g_out.buf, g_out.len);
    g_out.len = 0;
    return rc;
}

static void reply_raw(const char *s)
{
    out_add(s, strlen(s));
}

static void reply_int(long long v)
{
    char line[32];
    out_add(line, (size_t)snprintf(line, sizeof line, ":%lld\r\n", v));
}

static void reply_bulk(const void *p, size_t n)
{
    char line[32];
    out_add(line, (size_t)snprintf(line, sizeof line, "$%zu\r\n", n));
    out_add(p, n);
    out_add("\r\n", 2);
}

static void reply_array(size_t n)
{
    char line[32];
    out_add(line, (size_t)snprintf(line, sizeof line, "*%zu\r\n", n));
}

/* "-<text>\r\n"; the text must not hold "\r" or "\n" (see printable()). */
static void reply_error(const char *fmt, ...)
{
    char line[256];
    va_list ap;
    int n;
    line[0] = '-';
    va_start(ap, fmt);
    n = vsnprintf(line + 1, sizeof line - 3, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof line - 4)
        n = (int)(sizeof line - 4);
    memcpy(line + 1 + n, "\r\n", 2);
    out_add(line, (size_t)n + 3);
}

/* ---- the protocol ---------------------------------------------------------------------- */

/* One command's arguments: pointers into the delivery, valid while on_data runs. */
struct arg {
    const uint8_t *p;
    size_t len;
};
static struct arg g_argv[MAX_ARGS];

/* What a parser returns besides the bytes it consumed. */
#define INCOMPLETE 0  /* the command goes on past the delivery: keep it */
#define BAD (-1)      /* a protocol error: reply, then close */

/* Reads a decimal integer ending in "\r\n" at d[*i]; 1 (and *i past it), INCOMPLETE or BAD. */
static int read_number(const uint8_t *d, size_t len, size_t *i, long long *out)
{
    size_t j = *i, digits = 0;
    int neg = 0;
    long long v = 0;

    if (j < len && d[j] == '-') {
        neg = 1;
        j++;
    }
    for (; j < len && d[j] >= '0' && d[j] <= '9'; j++) {
        if (++digits > 18) /* longer than any length we accept */
            return BAD;
        v = v * 10 + (d[j] - '0');
    }
    if (j + 2 > len)
        return j < len && d[j] != '\r' ? BAD : INCOMPLETE;
    if (digits == 0 || d[j] != '\r' || d[j + 1] != '\n')
        return BAD;
    *i = j + 2;
    *out = neg ? -v : v;
    return 1;
}

/*
 * "*<n>\r\n" then n times "$<len>\r\n<len bytes>\r\n": the arguments go to g_argv.
 * Returns the bytes the command takes, INCOMPLETE, or BAD with *why set.
 */
static long parse_multibulk(const uint8_t *d, size_t len, int *argc, const char **why)
{
    size_t i = 1;
    long long n, k, blen;
    int r = read_number(d, len, &i, &n);

    if (r != 1 || n > MAX_ARGS) {
        *why = "invalid multibulk length";
        return r == INCOMPLETE ? INCOMPLETE : BAD;
    }
    for (k = 0; k < n; k++) {
        if (i >= len)
            return INCOMPLETE;
        if (d[i] != '$') {
            *why = "expected '$'";
            return BAD;
        }
        i++;
        r = read_number(d, len, &i, &blen);
        if (r == INCOMPLETE)
            return INCOMPLETE;
        if (r == BAD || blen < 0 || blen > MAX_BULK) {
            *why = "invalid bulk length";
            return BAD;
        }
        if (i + (size_t)blen + 2 > MAX_REQUEST) { /* said before it is buffered */
            *why = "command larger than 1 MiB";
            return BAD;
        }
        if (len - i < (size_t)blen + 2)
            return INCOMPLETE;
        if (d[i + blen] != '\r' || d[i + blen + 1] != '\n') {
            *why = "bulk string not followed by CRLF";
            return BAD;
        }
        g_argv[k].p = d + i;
        g_argv[k].len = (size_t)blen;
        i += (size_t)blen + 2;
    }
    *argc = n > 0 ? (int)n : 0; /* "*0" and "*-1" are no command */
    return (long)i;
}

/* A line of words: "SET k v\r\n" (or "\n"). Same returns as parse_multibulk. */
static long parse_inline(const uint8_t *d, size_t len, int *argc, const char **why)
{
    const uint8_t *nl = memchr(d, '\n', len < MAX_INLINE ? len : MAX_INLINE);
    size_t end, i = 0;
    int n = 0;

    if (nl == NULL) {
        *why = "too big inline request";
        return len < MAX_INLINE ? INCOMPLETE : BAD;
    }
    end = (size_t)(nl - d);
    if (end > 0 && d[end - 1] == '\r')
        end--;
    for (;;) {
        size_t start;
        while (i < end && (d[i] == ' ' || d[i] == '\t'))
            i++;
        if (i == end)
            break;
        if (n == MAX_ARGS) {
            *why = "too many arguments";
            return BAD;
        }
        start = i;
        while (i < end && d[i] != ' ' && d[i] != '\t')
            i++;
        g_argv[n].p = d + start;
        g_argv[n].len = i - start;
        n++;
    }
    *argc = n;
    return (long)(nl - d) + 1;
}

static int is(const struct arg *a, const char *name)
{
    size_t n = strlen(name);
    return a->len == n && strncasecmp((const char *)a->p, name, n) == 0;
}

/* An argument as text for an error line: at most 40 bytes, "\r", "\n" and the like as '?'. */
static const char *printable(const struct arg *a)
{
    static char text[41];
    size_t i, n = a->len < 40 ? a->len : 40;
    for (i = 0; i < n; i++)
        text[i] = a->p[i] >= 0x20 && a->p[i] < 0x7f ? (char)a->p[i] : '?';
    text[n] = '\0';
    return text;
}

/* A value as a 64-bit integer, as Redis reads it: optional '-', digits, nothing else. */
static int parse_int64(const uint8_t *p, size_t n, long long *out)
{
    size_t i = 0;
    int neg = 0;
    unsigned long long v = 0, limit;

    if (n == 0 || n > 20)
        return -1;
    if (p[0] == '-') {
        neg = 1;
        i = 1;
        if (n == 1)
            return -1;
    }
    limit = neg ? (unsigned long long)LLONG_MAX + 1 : (unsigned long long)LLONG_MAX;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9' || v > (limit - (p[i] - '0')) / 10)
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    *out = neg ? (long long)(0 - v) : (long long)v;
    return 0;
}

/* ---- the commands: each gets argc >= its table's min_args; 0 to go on, -1 to close ------ */

static int cmd_get(ns_conn *conn, int argc)
{
    const struct entry *e = table_get(g_argv[1].p, g_argv[1].len);
    (void)conn, (void)argc;
    if (e == NULL)
        reply_raw("$-1\r\n"); /* nil */
    else
        reply_bulk(e->mem + e->key_len, e->value_len);
    return 0;
}

static int cmd_set(ns_conn *conn, int argc)
{
    const char *err;
    (void)conn;
    if (argc > 3) { /* EX, NX and the other options: not here */
        reply_error("ERR syntax error");
        return 0;
    }
    err = table_set(g_argv[1].p, g_argv[1].len, g_argv[2].p, g_argv[2].len);
    if (err != NULL)
        reply_error("%s", err);
    else
        reply_raw("+OK\r\n");
    return 0;
}

static int cmd_del(ns_conn *conn, int argc)
{
    int i, n = 0;
    (void)conn;
    for (i = 1; i < argc; i++)
        n += table_del(g_argv[i].p, g_argv[i].len);
    reply_int(n);
    return 0;
}

static int cmd_incr(ns_conn *conn, int argc)
{
    const struct arg *key = &g_argv[1];
    const struct entry *e = table_get(key->p, key->len);
    long long v = 0;
    char text[24];
    const char *err;
    (void)conn, (void)argc;

    if (e != NULL && parse_int64((const uint8_t *)e->mem + e->key_len, e->value_len, &v) != 0) {
        reply_error("ERR value is not an integer or out of range");
        return 0;
    }
    if (v == LLONG_MAX) {
        reply_error("ERR increment or decrement would overflow");
        return 0;
    }
    v++;
    err = table_set(key->p, key->len, (const uint8_t *)text, (size_t)snprintf(text, sizeof text, "%lld", v));
    if (err != NULL)
        reply_error("%s", err);
    else
        reply_int(v);
    return 0;
}

static int cmd_ping(ns_conn *conn, int argc)
{
    (void)conn;
    if (argc == 2)
        reply_bulk(g_argv[1].p, g_argv[1].len);
    else
        reply_raw("+PONG\r\n");
    return 0;
}

static int cmd_echo(ns_conn *conn, int argc)
{
    (void)conn, (void)argc;
    reply_bulk(g_argv[1].p, g_argv[1].len);
    return 0;
}

/* redis-cli asks for the command table (COMMAND DOCS) to offer hints: we have none,
 * and it falls back on its own. */
static int cmd_command(ns_conn *conn, int argc)
{
    (void)conn, (void)argc;
    reply_array(0);
    return 0;
}

/* CONFIG GET, for the settings redis-benchmark asks about, answered as a server that
 * never saves to disk; other names match nothing, as in Redis. */
static int cmd_config(ns_conn *conn, int argc)
{
    static const char *const names[] = {"save", "appendonly"}, *const values[] = {"", "no"};
    size_t found = 0, k;
    int i;
    (void)conn;
    if (!is(&g_argv[1], "GET") || argc < 3) {
        reply_error("ERR only CONFIG GET parameter [parameter ...] is supported");
        return 0;
    }
    for (i = 2; i < argc; i++)
        for (k = 0; k < 2; k++)
            found += is(&g_argv[i], names[k]);
    reply_array(2 * found);
    for (i = 2; i < argc; i++)
        for (k = 0; k < 2; k++)
            if (is(&g_argv[i], names[k])) {
                reply_bulk(names[k], strlen(names[k]));
                reply_bulk(values[k], strlen(values[k]));
            }
    return 0;
}

/* CLIENT SETNAME and SETINFO (sent by client libraries on connect): accepted, ignored. */
static int cmd_client(ns_conn *conn, int argc)
{
    (void)conn, (void)argc;
    if (is(&g_argv[1], "SETNAME") || is(&g_argv[1], "SETINFO"))
        reply_raw("+OK\r\n");
    else
        reply_error("ERR unsupported CLIENT subcommand '%s'", printable(&g_argv[1]));
    return 0;
}

/* HELLO [2]: who we are, as RESP2's flat list of names and values (RESP3: not here). */
static int cmd_hello(ns_conn *conn, int argc)
{
    if (argc > 1 && !is(&g_argv[1], "2")) {
        reply_error("NOPROTO unsupported protocol version");
        return 0;
    }
    reply_array(14);
    reply_bulk("server", 6);
    reply_bulk("netsock-resp", 12);
    reply_bulk("version", 7);
    reply_bulk(ns_version(), strlen(ns_version()));
    reply_bulk("proto", 5);
    reply_int(2);
    reply_bulk("id", 2);
    reply_int((long long)ns_conn_id(conn));
    reply_bulk("mode", 4);
    reply_bulk("standalone", 10);
    reply_bulk("role", 4);
    reply_bulk("master", 6);
    reply_bulk("modules", 7);
    reply_array(0);
    return 0;
}

static int cmd_select(ns_conn *conn, int argc)
{
    (void)conn, (void)argc;
    if (is(&g_argv[1], "0"))
        reply_raw("+OK\r\n");
    else
        reply_error("ERR DB index is out of range");
    return 0;
}

static int cmd_quit(ns_conn *conn, int argc)
{
    (void)conn, (void)argc;
    reply_raw("+OK\r\n");
    return -1;
}

static const struct command {
    const char *name;
    int min_args, max_args; /* argc, the name included; max -1: any */
    int (*run)(ns_conn *conn, int argc);
} g_commands[] = {
    {"GET", 2, 2, cmd_get},         {"SET", 3, -1, cmd_set},       {"PING", 1, 2, cmd_ping},
    {"ECHO", 2, 2, cmd_echo},       {"DEL", 2, -1, cmd_del},       {"INCR", 2, 2, cmd_incr},
    {"COMMAND", 1, -1, cmd_command}, {"CONFIG", 2, -1, cmd_config}, {"CLIENT", 2, -1, cmd_client},
    {"HELLO", 1, -1, cmd_hello},    {"SELECT", 2, 2, cmd_select},  {"QUIT", 1, -1, cmd_quit},
};

/* Carries out one command (g_argv[0..argc), argc >= 1); 0 to go on, -1 to close. */
static int execute(ns_conn *conn, int argc)
{
    size_t i;
    for (i = 0; i < sizeof g_commands / sizeof g_commands[0]; i++) {
        const struct command *c = &g_commands[i];
        if (!is(&g_argv[0], c->name))
            continue;
        if (argc < c->min_args || (c->max_args >= 0 && argc > c->max_args)) {
            reply_error("ERR wrong number of arguments for '%s' command", c->name);
            return 0;
        }
        return c->run(conn, argc);
    }
    reply_error("ERR unknown command '%s'", printable(&g_argv[0]));
    return 0;
}

/* Every whole command of the delivery, answered in order; an unfinished one kept. */
static void on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    size_t pos = 0;
    int close_it = 0;
    (void)user;

    while (pos < len && !close_it) {
        const char *why = NULL;
        int argc = 0;
        long used = data[pos] == '*' ? parse_multibulk(data + pos, len - pos, &argc, &why)
                                     : parse_inline(data + pos, len - pos, &argc, &why);
        if (used == INCOMPLETE) {
            /* The rest has not arrived: netsock holds these bytes and the next on_data
             * starts with them.  Never more than MAX_REQUEST (max_frame), checked above. */
            int rc = ns_conn_keep(conn, len - pos);
            if (rc != NS_OK) {
                reply_error("ERR Protocol error: cannot keep a partial command (%s)", ns_strerror(rc));
                close_it = 1;
            }
            break;
        }
        if (used == BAD) {
            reply_error("ERR Protocol error: %s", why);
            printf("#%llu: protocol error: %s; closing\n", (unsigned long long)ns_conn_id(conn), why);
            close_it = 1;
            break;
        }
        pos += (size_t)used;
        if (argc > 0 && execute(conn, argc) != 0)
            close_it = 1;
        if (g_out.failed) {
            close_it = 1;
            break;
        }
        if (g_out.len >= FLUSH_AT && out_flush(conn) != NS_OK)
            close_it = 1; /* the client does not read its replies: let it go */
    }
    if (g_out.failed) { /* out of memory: what we gathered is incomplete, so send none of it */
        g_out.len = 0;
        g_out.failed = 0;
    }
    if (out_flush(conn) != NS_OK)
        close_it = 1;
    if (close_it)
        ns_conn_close(conn); /* after what is queued has been written */
}

/* ---- the program ----------------------------------------------------------------------- */

static ns_server *g_server; /* set before the signal handlers are installed */

static void on_signal(int sig)
{
    (void)sig;
    ns_server_stop(g_server); /* async-signal-safe: ns_server_wait returns */
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

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "127.0.0.1:6379";
    char bound[256];
    ns_options *opts;
    size_t i, keys;
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0); /* line-buffered even when redirected */

    opts = ns_options_new();
    if (opts == NULL) {
        fprintf(stderr, "ns_options_new failed\n");
        return 1;
    }
    if (ns_options_set_framing(opts, NS_FRAMING_RAW) != NS_OK || /* the default, said out loud */
        ns_options_set_max_frame(opts, MAX_REQUEST) != NS_OK ||  /* the most ns_conn_keep holds */
        ns_options_set_run_in_wait(opts, 1) != NS_OK) {          /* the loop runs in main */
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
    if (ns_server_addr(g_server, bound, sizeof bound) != NS_OK || handle_signals(on_signal) != 0) {
        fprintf(stderr, "cannot start: %s\n", ns_last_error());
        ns_server_free(g_server);
        return 1;
    }
    printf("listening on %s\n", bound);

    /* Every callback runs here, on main's thread, until a signal stops the server. */
    rc = ns_server_wait(g_server);
    if (rc != NS_OK)
        fprintf(stderr, "ns_server_wait: %s\n", ns_strerror(rc));
    if (handle_signals(SIG_DFL) != 0) /* the handler must never see a freed server */
        perror("sigaction");
    ns_server_free(g_server);

    keys = g_keys;
    for (i = 0; i < TABLE_SLOTS; i++)
        free(g_table[i].mem);
    free(g_out.buf);
    printf("server stopped; keys stored: %zu\n", keys);
    return rc == NS_OK ? 0 : 1;
}
