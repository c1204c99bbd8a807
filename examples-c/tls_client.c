/*
 * tls_client.c - a TLS client, on netsock (TLS by rustls, inside the library).
 *
 * Shows: a client's TLS configuration (ns_tls_client_new: the CA to trust, or the system's
 * roots), a client certificate for servers that ask for one (ns_tls_set_client_cert), and
 * ns_tcp_connect, which returns once the TCP connect AND the handshake are done: the server's
 * certificate was checked against the host of the address ("localhost" below; an IP address
 * is checked against the certificate's IP addresses), which is also sent as SNI.  A failed
 * check is NS_ERR_TLS with the reason in ns_last_error().  Then callbacks see plaintext, and
 * ns_client_close sends close_notify.
 *
 * Try it (with tls_echo_server running, or `openssl s_server -rev`):
 *   ./tls_client localhost:8443 /tmp/certs/ca.pem "echo me"
 *   ./tls_client localhost:8443 /tmp/certs/ca.pem "hi" /tmp/certs/client.pem /tmp/certs/client.key
 *   ./tls_client example.com:443 - "GET / HTTP/1.0"      (- : the system's roots)
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <netsock.h>

/* What the loop thread tells the main thread. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static char reply[4096];
static size_t reply_len;
static int closed, close_reason;

static void on_data(ns_conn *conn, const uint8_t *data, size_t len, void *user)
{
    (void)conn;
    (void)user;
    pthread_mutex_lock(&lock);
    if (len > sizeof reply - reply_len)
        len = sizeof reply - reply_len;
    memcpy(reply + reply_len, data, len);
    reply_len += len;
    pthread_cond_signal(&changed);
    pthread_mutex_unlock(&lock);
}

static void on_close(ns_conn *conn, int reason, void *user)
{
    (void)conn;
    (void)user;
    pthread_mutex_lock(&lock);
    closed = 1;
    close_reason = reason;
    pthread_cond_signal(&changed);
    pthread_mutex_unlock(&lock);
}

static int got_reply(void) { return reply_len > 0; }
static int got_close(void) { return closed; }

/* Waits until done() (checked under `lock`) or `seconds` passed. */
static void wait_until(int (*done)(void), int seconds)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += seconds;
    pthread_mutex_lock(&lock);
    while (!done() && pthread_cond_timedwait(&changed, &lock, &until) == 0) {
    }
    pthread_mutex_unlock(&lock);
}

int main(int argc, char **argv)
{
    const char *addr = argc > 1 ? argv[1] : "localhost:8443";
    const char *ca = argc > 2 ? argv[2] : "ca.pem";
    const char *message = argc > 3 ? argv[3] : "hello over TLS";
    ns_tls *tls = NULL;
    ns_options *opts;
    ns_client *client = NULL;
    char line[4200];
    int rc;

    rc = ns_tls_client_new(strcmp(ca, "-") == 0 ? NULL : ca, &tls);
    if (rc == NS_OK && argc > 5)
        rc = ns_tls_set_client_cert(tls, argv[4], argv[5]);
    if (rc != NS_OK) {
        fprintf(stderr, "tls_client: %s (%s)\n", ns_strerror(rc), ns_last_error());
        ns_tls_free(tls);
        return 1;
    }
    opts = ns_options_new();
    if (!opts || ns_options_set_tls(opts, tls) != NS_OK) {
        fprintf(stderr, "tls_client: %s\n", ns_last_error());
        ns_tls_free(tls);
        ns_options_free(opts);
        return 1;
    }
    ns_tls_free(tls); /* the options keep what they need */
    ns_options_set_on_close(opts, on_close);
    ns_options_set_connect_timeout_ms(opts, 5000); /* connect and handshake */

    rc = ns_tcp_connect(addr, on_data, NULL, opts, &client);
    ns_options_free(opts);
    if (rc != NS_OK) {
        fprintf(stderr, "tls_client: %s: %s (%s)\n", addr, ns_strerror(rc), ns_last_error());
        return 1;
    }
    snprintf(line, sizeof line, "%s\n", message);
    rc = ns_client_send(client, line, strlen(line));
    if (rc != NS_OK)
        fprintf(stderr, "tls_client: send: %s\n", ns_strerror(rc));
    printf("sent to %s: %s\n", addr, message);

    wait_until(got_reply, 5);
    pthread_mutex_lock(&lock);
    printf("reply: %.*s\n", (int)reply_len, reply);
    pthread_mutex_unlock(&lock);

    ns_client_close(client); /* close_notify, once what was sent is written */
    wait_until(got_close, 5);
    pthread_mutex_lock(&lock);
    printf("closed: %s\n", closed ? ns_strerror(close_reason) : "(no close within 5 s)");
    rc = reply_len > 0 && closed ? 0 : 1;
    pthread_mutex_unlock(&lock);
    ns_client_free(client);
    return rc;
}
