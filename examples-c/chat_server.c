/*
 * chat_server.c - a line-based broadcast chat server, on netsock.
 *
 * Shows: NS_FRAMING_LINE (on_data gets one line at a time, without its
 * "\n" or "\r\n"), per-connection state with ns_conn_set_user/ns_conn_user
 * (allocated in on_open, freed in on_close), sending to other connections
 * by id with ns_server_send_frame, and the limits a public server wants:
 * a 4 KiB longest line and a 10 minute idle timeout.
 *
 * The first line a client sends is its nickname; after that every line is
 * sent to everyone else as "<nick> text".  Commands: /nick NAME, /who, /quit.
 *
 * Try it:
 *   ./chat_server 127.0.0.1:7000         (default 0.0.0.0:6666; port 0 = any free port)
 *   nc 127.0.0.1 7000                    in two or more terminals: type a
 *                                        nickname, then chat
 *   Ctrl-C stops the server.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netsock.h>

#define MAX_MEMBERS 64
#define MAX_NICK 20                     /* characters */
#define MAX_LINE 4096                   /* bytes: longer lines close the connection */
#define IDLE_TIMEOUT_MS (10 * 60 * 1000)

/* One connection's session, found again with ns_conn_user() in every callback. */
struct session {
    uint64_t id;                        /* ns_conn_id(), for ns_server_send_frame() */
    char nick[MAX_NICK + 1];            /* "" until the client has chosen one */
};

/*
 * The chat room: the server's `user` pointer.  All callbacks run on the
 * server's loop thread, one at a time (one loop thread is the default), so
 * the member list needs no lock.  With ns_options_set_threads(opts, n > 1)
 * callbacks of different connections would run at once and it would need one.
 */
struct room {
    struct session *members[MAX_MEMBERS];
    size_t count;
};

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

/* Sends text (a NUL-terminated line) back to this connection. */
static void reply(ns_conn *conn, const char *text)
{
    int rc = ns_conn_send_frame(conn, text, strlen(text));
    if (rc != NS_OK)
        fprintf(stderr, "send to #%llu failed: %s\n", (unsigned long long)ns_conn_id(conn),
                ns_strerror(rc));
}

/* Sends text to every member with a nickname but `except`, and prints it.
 * `conn` is the connection whose callback is running: ns_conn_server gives the
 * server even before ns_tcp_serve has returned to main. */
static void broadcast(ns_conn *conn, struct room *room, const struct session *except,
                      const char *text)
{
    ns_server *srv = ns_conn_server(conn);
    size_t i;
    int rc;

    printf("%s\n", text);

    for (i = 0; i < room->count; i++) {
        const struct session *to = room->members[i];
        if (to == except || to->nick[0] == '\0')
            continue;
        /* Queued for the loop, which is this very thread: it goes out right
         * after this callback.  NS_ERR_CLOSED: that member has just left. */
        rc = ns_server_send_frame(srv, to->id, text, strlen(text));
        if (rc != NS_OK && rc != NS_ERR_CLOSED)
            fprintf(stderr, "send to #%llu failed: %s\n", (unsigned long long)to->id,
                    ns_strerror(rc));
    }
}

static struct session *find_nick(const struct room *room, const char *nick, size_t len)
{
    size_t i;
    for (i = 0; i < room->count; i++)
        if (strlen(room->members[i]->nick) == len &&
            memcmp(room->members[i]->nick, nick, len) == 0)
            return room->members[i];
    return NULL;
}

/* Takes `name` (len bytes, not NUL-terminated) as the session's nickname,
 * telling the client why not if it cannot; 0 on success. */
static int set_nick(struct room *room, ns_conn *conn, struct session *s, const char *name,
                    size_t len)
{
    char text[128];
    size_t i;

    if (len == 0 || len > MAX_NICK) {
        reply(conn, "* a nickname has 1 to 20 letters, digits, '-' or '_'");
        return -1;
    }
    for (i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_')) {
            reply(conn, "* a nickname has 1 to 20 letters, digits, '-' or '_'");
            return -1;
        }
    }
    if (find_nick(room, name, len) != NULL) {
        snprintf(text, sizeof text, "* %.*s is taken, try another nickname", (int)len, name);
        reply(conn, text);
        return -1;
    }

    if (s->nick[0] == '\0')
        snprintf(text, sizeof text, "* %.*s joined", (int)len, name);
    else
        snprintf(text, sizeof text, "* %s is now %.*s", s->nick, (int)len, name);
    memcpy(s->nick, name, len);
    s->nick[len] = '\0';
    broadcast(conn, room, s, text);
    snprintf(text, sizeof text, "* you are %s; /who lists who is here, /quit leaves", s->nick);
    reply(conn, text);
    return 0;
}

static void who(const struct room *room, ns_conn *conn)
{
    char text[MAX_MEMBERS * (MAX_NICK + 1) + 16] = "* here:";
    size_t i;
    for (i = 0; i < room->count; i++) {
        if (room->members[i]->nick[0] != '\0') {
            strcat(text, " ");
            strcat(text, room->members[i]->nick);
        }
    }
    reply(conn, text);
}

/* Tells the client why, then closes the connection (on_close follows). */
static void hang_up(ns_conn *conn, const char *why)
{
    int rc;
    reply(conn, why);
    rc = ns_conn_close(conn);
    if (rc != NS_OK && rc != NS_ERR_CLOSED)
        fprintf(stderr, "close of #%llu failed: %s\n", (unsigned long long)ns_conn_id(conn),
                ns_strerror(rc));
}

static void on_open(ns_conn *conn, void *user)
{
    struct room *room = user;
    struct session *s;
    int rc;

    if (room->count == MAX_MEMBERS) { /* not reached: max_conns is MAX_MEMBERS */
        hang_up(conn, "* the room is full");
        return;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        hang_up(conn, "* out of memory");
        return;
    }
    s->id = ns_conn_id(conn);
    rc = ns_conn_set_user(conn, s);
    if (rc != NS_OK) {
        fprintf(stderr, "ns_conn_set_user: %s\n", ns_strerror(rc));
        free(s);
        hang_up(conn, "* internal error");
        return;
    }
    room->members[room->count++] = s;
    printf("connection #%llu opened\n", (unsigned long long)s->id);
    reply(conn, "* welcome to netsock chat! what is your nickname?");
}

static void on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    struct room *room = user;
    struct session *s = ns_conn_user(conn);
    const char *line = (const char *)data; /* one line, without "\n": not NUL-terminated */
    char text[MAX_NICK + MAX_LINE + 8];

    if (s == NULL) /* on_open could not set up the session and is closing it */
        return;
    if (len == 0)
        return;
    if (len > 6 && memcmp(line, "/nick ", 6) == 0) {
        set_nick(room, conn, s, line + 6, len - 6);
    } else if (len == 4 && memcmp(line, "/who", 4) == 0) {
        who(room, conn);
    } else if (len == 5 && memcmp(line, "/quit", 5) == 0) {
        hang_up(conn, "* bye"); /* "* bye" is written first; on_close tells the others */
    } else if (line[0] == '/') {
        reply(conn, "* commands: /nick NAME, /who, /quit");
    } else if (s->nick[0] == '\0') {
        set_nick(room, conn, s, line, len); /* the first line is the nickname */
    } else {
        snprintf(text, sizeof text, "<%s> %.*s", s->nick, (int)len, line);
        broadcast(conn, room, s, text);
    }
}

static void on_close(ns_conn *conn, int reason, void *user)
{
    struct room *room = user;
    struct session *s = ns_conn_user(conn);
    char text[MAX_NICK + 64];
    size_t i;

    printf("connection #%llu closed%s%s\n", (unsigned long long)ns_conn_id(conn),
           reason == NS_OK ? "" : ": ", reason == NS_OK ? "" : ns_strerror(reason));
    if (s == NULL)
        return;
    for (i = 0; i < room->count; i++) {
        if (room->members[i] == s) {
            room->members[i] = room->members[--room->count];
            break;
        }
    }
    /* When the server stops, everyone is leaving: no notices. */
    if (s->nick[0] != '\0' && reason != NS_ERR_STOPPED) {
        snprintf(text, sizeof text, "* %s left%s", s->nick,
                 reason == NS_ERR_TIMEOUT ? " (idle)"
                 : reason == NS_ERR_LIMIT ? " (line too long)"
                                          : "");
        broadcast(conn, room, NULL, text);
    }
    free(s); /* netsock never frees the user pointer */
}

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "0.0.0.0:6666";
    static struct room room;
    char bound[256];
    ns_options *opts;
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0); /* line-buffered even when redirected */

    opts = ns_options_new();
    if (opts == NULL) {
        fprintf(stderr, "ns_options_new failed\n");
        return 1;
    }
    if (ns_options_set_framing(opts, NS_FRAMING_LINE) != NS_OK ||
        ns_options_set_max_frame(opts, MAX_LINE) != NS_OK ||
        ns_options_set_idle_timeout_ms(opts, IDLE_TIMEOUT_MS) != NS_OK ||
        ns_options_set_max_conns(opts, MAX_MEMBERS) != NS_OK ||
        ns_options_set_on_open(opts, on_open) != NS_OK ||
        ns_options_set_on_close(opts, on_close) != NS_OK) {
        fprintf(stderr, "cannot set options: %s\n", ns_last_error());
        ns_options_free(opts);
        return 1;
    }
    rc = ns_tcp_serve(addr, on_data, &room, opts, &g_server);
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

    rc = ns_server_wait(g_server); /* returns once a signal stopped the server */
    if (rc != NS_OK)
        fprintf(stderr, "ns_server_wait: %s\n", ns_strerror(rc));
    /* The handler must never see a freed server; a second Ctrl-C now just ends us. */
    if (handle_signals(SIG_DFL) != 0)
        perror("sigaction");
    ns_server_free(g_server); /* every on_close has run: all sessions are freed */
    printf("server stopped\n");
    return rc == NS_OK ? 0 : 1;
}
