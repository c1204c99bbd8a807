/*
 * dns_server.c - a tiny DNS-over-TCP responder, on netsock.
 *
 * Shows: NS_FRAMING_LENGTH_FIELD set for DNS over TCP,
 * ns_options_set_length_field(opts, 0, 2, 0, 0): each message follows its
 * length in two big-endian bytes (RFC 1035 4.2.2, RFC 7766), and on_data gets
 * one whole frame, those two bytes included, however TCP split or merged the
 * queries; the reply goes out with ns_conn_send_frame, which writes the two
 * length bytes itself (the field is at offset 0).  And reading what a hostile
 * peer sends without trusting a byte of it: every read is bounds-checked, a
 * query too large for max_frame is refused by netsock before it is buffered,
 * and a message that is not a query closes the connection.
 *
 * Answers (authoritative, for any name):
 *   A, class IN             one record: ADDRESS (default 127.0.0.1), TTL 60
 *   any other type, IN      NOERROR and no record (the name exists, with no record
 *                           of that type; NXDOMAIN would say it does not exist at
 *                           all, and resolvers would then forget its A record too)
 *   another class           NOTIMP
 *   another opcode          NOTIMP
 *   not one question        FORMERR
 *   a malformed question    FORMERR, then the connection is closed
 *
 * Try it:
 *   ./dns_server 127.0.0.1:5353 10.0.0.7   (default 127.0.0.1:5353 and 127.0.0.1;
 *                                           port 0 = any free port)
 *   dig +tcp @127.0.0.1 -p 5353 example.com A +short
 *   dig +tcp @127.0.0.1 -p 5353 example.com AAAA
 *   Ctrl-C stops the server.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <netsock.h>

#define MAX_QUERY 4096          /* bytes of one query: larger closes the connection */
#define MAX_NAME 255            /* bytes of a name on the wire (RFC 1035 3.1) */
#define HEADER 12               /* bytes of a DNS header */
#define IDLE_TIMEOUT_MS 30000   /* RFC 7766 6.2.3: servers close idle connections */
#define TTL 60                  /* seconds */

enum { TYPE_A = 1, CLASS_IN = 1 };
enum { NOERROR = 0, FORMERR = 1, NOTIMP = 4 };

static unsigned char g_address[4]; /* the answer to every A query */
static ns_server *g_server;        /* set before the signal handlers are installed */

static unsigned get16(const uint8_t *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

static void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/*
 * The question's name at msg[HEADER..n): a series of labels (a length byte of
 * 1-63, then that many bytes), ended by a 0 byte.  Returns the offset just past
 * it, or 0 if it is malformed: running past the message, a label length with
 * its top bits set (a compression pointer: a question's name has nothing
 * before it to point to), or longer than MAX_NAME.  Writes it as text
 * ("example.com.", anything unprintable as '?') into text[256].
 */
static size_t read_name(const uint8_t *msg, size_t n, char *text)
{
    size_t off = HEADER, t = 0;
    for (;;) {
        size_t label, i;
        if (off >= n)
            return 0;
        label = msg[off++];
        if (label == 0)
            break;
        if (label > 63 || off + label > n || off - HEADER + label >= MAX_NAME)
            return 0;
        for (i = 0; i < label; i++) {
            uint8_t c = msg[off + i];
            text[t++] = c > 0x20 && c < 0x7f ? (char)c : '?';
        }
        text[t++] = '.';
        off += label;
    }
    if (t == 0)
        text[t++] = '.'; /* the root */
    text[t] = '\0';
    return off;
}

/* Sends a reply: `question` (its bytes, or NULL for none), with rcode and, for an A
 * answer, one record. */
static void reply(ns_conn *conn, const uint8_t *query, const uint8_t *question, size_t qlen,
                  unsigned rcode, int answer)
{
    uint8_t out[HEADER + MAX_NAME + 4 + 16];
    size_t len = HEADER;
    unsigned flags = get16(query + 2);

    memcpy(out, query, 2);                                     /* the query's id */
    put16(out + 2, 0x8000 | (flags & 0x7800) | 0x0400 |        /* QR, its opcode, AA, */
                       (flags & 0x0100) | rcode);              /* its RD; RA 0 */
    put16(out + 4, question != NULL);                          /* QDCOUNT */
    put16(out + 6, answer != 0);                               /* ANCOUNT */
    put16(out + 8, 0);                                         /* NSCOUNT */
    put16(out + 10, 0);                                        /* ARCOUNT */
    if (question != NULL) {
        memcpy(out + len, question, qlen);
        len += qlen;
    }
    if (answer) {
        static const uint8_t rr[] = {0xc0, HEADER,             /* the name: a pointer to the question's */
                                     0, TYPE_A, 0, CLASS_IN,
                                     0, 0, 0, TTL,             /* TTL, 32 bits */
                                     0, 4};                    /* RDLENGTH */
        memcpy(out + len, rr, sizeof rr);
        memcpy(out + len + sizeof rr, g_address, 4);
        len += sizeof rr + 4;
    }
    /* The framing puts the 2-byte length before it. */
    if (ns_conn_send_frame(conn, out, len) != NS_OK)
        ns_conn_close(conn);
}

static void on_data(ns_conn *conn, const uint8_t *frame, size_t len, void *user)
{
    /* The frame as it came: 2 length bytes (netsock checked them: len == 2 + length),
     * then the message. */
    const uint8_t *msg = frame + 2;
    size_t n = len - 2, end;
    unsigned flags, qtype, qclass;
    char name[MAX_NAME + 2];
    (void)user;

    if (n < HEADER || (get16(msg + 2) & 0x8000) != 0) { /* too short, or a response */
        printf("#%llu: not a DNS query; closing\n", (unsigned long long)ns_conn_id(conn));
        ns_conn_close(conn);
        return;
    }
    flags = get16(msg + 2);
    if ((flags >> 11 & 0xf) != 0) { /* opcode: only QUERY (0) */
        reply(conn, msg, NULL, 0, NOTIMP, 0);
        return;
    }
    if (get16(msg + 4) != 1) { /* QDCOUNT: one question, as every server expects */
        reply(conn, msg, NULL, 0, FORMERR, 0);
        return;
    }
    end = read_name(msg, n, name);
    if (end == 0 || end + 4 > n) {
        printf("#%llu: malformed question; closing\n", (unsigned long long)ns_conn_id(conn));
        reply(conn, msg, NULL, 0, FORMERR, 0);
        ns_conn_close(conn); /* after the reply */
        return;
    }
    qtype = get16(msg + end);
    qclass = get16(msg + end + 2);
    end += 4; /* the question: msg[HEADER..end); what follows (EDNS, say) is ignored */

    if (qclass != CLASS_IN) {
        reply(conn, msg, msg + HEADER, end - HEADER, NOTIMP, 0);
        printf("#%llu: %s class %u -> NOTIMP\n", (unsigned long long)ns_conn_id(conn), name, qclass);
    } else if (qtype == TYPE_A) {
        reply(conn, msg, msg + HEADER, end - HEADER, NOERROR, 1);
        printf("#%llu: %s A -> %u.%u.%u.%u\n", (unsigned long long)ns_conn_id(conn), name, g_address[0],
               g_address[1], g_address[2], g_address[3]);
    } else {
        reply(conn, msg, msg + HEADER, end - HEADER, NOERROR, 0);
        printf("#%llu: %s type %u -> no record\n", (unsigned long long)ns_conn_id(conn), name, qtype);
    }
}

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

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "127.0.0.1:5353";
    const char *answer = argc > 2 ? argv[2] : "127.0.0.1";
    char bound[256];
    ns_options *opts;
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0); /* line-buffered even when redirected */

    if (inet_pton(AF_INET, answer, g_address) != 1) {
        fprintf(stderr, "usage: dns_server [ADDRESS:PORT] [IPv4 ADDRESS TO ANSWER]\n");
        return 2;
    }
    opts = ns_options_new();
    if (opts == NULL) {
        fprintf(stderr, "ns_options_new failed\n");
        return 1;
    }
    if (ns_options_set_framing(opts, NS_FRAMING_LENGTH_FIELD) != NS_OK ||
        ns_options_set_length_field(opts, 0, 2, 0, 0) != NS_OK || /* offset 0, 2 bytes, big-endian */
        ns_options_set_max_frame(opts, 2 + MAX_QUERY) != NS_OK ||
        ns_options_set_idle_timeout_ms(opts, IDLE_TIMEOUT_MS) != NS_OK) {
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
    printf("answering A queries with %s\n", answer);
    printf("listening on %s\n", bound);

    rc = ns_server_wait(g_server); /* returns once a signal stopped the server */
    if (rc != NS_OK)
        fprintf(stderr, "ns_server_wait: %s\n", ns_strerror(rc));
    if (handle_signals(SIG_DFL) != 0) /* the handler must never see a freed server */
        perror("sigaction");
    ns_server_free(g_server);
    printf("server stopped\n");
    return rc == NS_OK ? 0 : 1;
}
