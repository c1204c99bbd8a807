/*
 * tcp_client.c - the classic one-shot TCP client, on netsock.
 *
 * Shows: ns_tcp_send, which connects, sends the message, shuts down its
 * write side and reads the reply until the server closes - all within one
 * timeout - and how to report errors (ns_strerror + ns_last_error).
 *
 * Try it (with tcp_server or echo_server running, or `nc -l 6666`):
 *   ./tcp_client                                  -> 127.0.0.1:6666, default message
 *   ./tcp_client 127.0.0.1:6666 "hello there"
 *   ./tcp_client unix:/tmp/ns.sock hi
 */
#include <stdio.h>
#include <string.h>

#include <netsock.h>

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "127.0.0.1:6666";
    const char *message = argc > 2 ? argv[2] : "hehe, just for a test!";
    char reply[4096];
    size_t reply_len = 0;
    int rc;

    rc = ns_tcp_send(addr, message, strlen(message), reply, sizeof reply, &reply_len,
                     5000 /* ms */);
    if (rc != NS_OK) {
        fprintf(stderr, "tcp_client: %s: %s (%s)\n", addr, ns_strerror(rc), ns_last_error());
        return 1;
    }
    printf("sent to %s: %s\n", addr, message);
    printf("reply: %.*s\n", (int)reply_len, reply);
    return 0;
}
