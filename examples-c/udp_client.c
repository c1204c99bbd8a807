/*
 * udp_client.c - the classic UDP client, on netsock.
 *
 * Shows: ns_udp_request, which sends one datagram and waits (here up to
 * 2 s) for the answer from that address.  Each line read from stdin is
 * sent as one datagram and the reply is printed; an empty line or EOF ends.
 *
 * Try it (with udp_server running, or `nc -u -l 6666` and answer by hand):
 *   ./udp_client                        -> 127.0.0.1:6666, type lines
 *   printf 'one\ntwo\n' | ./udp_client 127.0.0.1:6666
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <netsock.h>

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "127.0.0.1:6666";
    int interactive = isatty(STDIN_FILENO);
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t n;
    int status = 0;

    for (;;) {
        char reply[2048];
        size_t reply_len = 0;
        int rc;

        if (interactive) {
            printf("> ");
            fflush(stdout);
        }
        n = getline(&line, &line_cap, stdin);
        if (n < 0)
            break; /* EOF */
        if (n > 0 && line[n - 1] == '\n')
            line[--n] = '\0';
        if (n == 0)
            break; /* empty line */

        rc = ns_udp_request(addr, line, (size_t)n, reply, sizeof reply, &reply_len,
                            2000 /* ms */);
        if (rc != NS_OK) {
            fprintf(stderr, "udp_client: %s: %s (%s)\n", addr, ns_strerror(rc), ns_last_error());
            status = 1;
            break;
        }
        printf("reply: %.*s\n", (int)reply_len, reply);
    }
    if (ferror(stdin)) {
        perror("udp_client: stdin");
        status = 1;
    }
    free(line);
    return status;
}
