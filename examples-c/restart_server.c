/*
 * restart_server.c - a server that restarts without refusing a connection.
 *
 * Shows: ns_server_handoff and the "handoff:" address. On SIGHUP the running process starts
 * a new copy of itself (say, a new build of the same program) with the address
 * "handoff:PATH", and hands it its listening socket over the Unix socket PATH. The socket is
 * shared, not closed: connections waiting in its backlog are the new process's, the old one
 * stops accepting, finishes the connections it has (within the drain timeout) and exits 0.
 * The same pattern as nginx's, HAProxy's or Envoy's hot restart, in one call. Each line a
 * client sends is answered with "PID: LINE".
 *
 * Signals are taken by one thread with sigwait (blocked everywhere else, the loop threads
 * included), so the handoff runs on an ordinary thread, never in a signal handler.
 *
 * Try it:
 *   ./restart_server 127.0.0.1:7000 /tmp/restart.sock
 *   echo hi | nc -q1 127.0.0.1 7000           "1234: hi"
 *   kill -HUP 1234                            a new process takes over
 *   echo hi | nc -q1 127.0.0.1 7000           "1240: hi"
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <netsock.h>

extern char **environ;

static ns_server *g_server;
static const char *g_path;

static void on_line(ns_conn *conn, const uint8_t *line, size_t len, void *user)
{
    char reply[600];
    int n;
    (void)user;
    n = snprintf(reply, sizeof reply, "%d: %.*s", (int)getpid(), (int)(len > 512 ? 512 : len), (const char *)line);
    ns_conn_send_frame(conn, reply, (size_t)n);
}

/* Starts this program again, serving "handoff:PATH"; 0 on success. */
static int start_successor(void)
{
    char addr[600];
    char *args[4];
    pid_t pid;
    posix_spawnattr_t attr;
    sigset_t none;
    int rc;

    snprintf(addr, sizeof addr, "handoff:%s", g_path);
    args[0] = "restart_server";
    args[1] = addr;
    args[2] = (char *)g_path;
    args[3] = NULL;
    sigemptyset(&none);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    rc = posix_spawn(&pid, "/proc/self/exe", NULL, &attr, args, environ);
    posix_spawnattr_destroy(&attr);
    return rc;
}

/* The signal thread: SIGHUP hands off, SIGINT/SIGTERM stop. Returns once the server stops. */
static void *signals(void *set)
{
    for (;;) {
        int sig, rc;
        if (sigwait(set, &sig) != 0)
            continue;
        if (sig != SIGHUP) {
            ns_server_stop(g_server);
            return NULL;
        }
        if (start_successor() != 0) {
            fprintf(stderr, "%d: cannot start a new process\n", (int)getpid());
            continue;
        }
        rc = ns_server_handoff(g_server, g_path, 10000);
        if (rc == NS_OK) {
            printf("%d: handed over; exiting\n", (int)getpid());
            return NULL; /* the server has stopped: ns_server_wait returns */
        }
        fprintf(stderr, "%d: handoff failed, still serving: %s (%s)\n", (int)getpid(), ns_strerror(rc),
                ns_last_error());
    }
}

int main(int argc, char **argv)
{
    sigset_t set;
    pthread_t sig_thread;
    ns_options *opts;
    char bound[256];
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 3) {
        fprintf(stderr, "usage: restart_server ADDR|handoff:PATH PATH\n");
        return 2;
    }
    g_path = argv[2];
    /* Blocked before any thread starts, so that every thread inherits the mask. */
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    opts = ns_options_new();
    if (opts == NULL || ns_options_set_framing(opts, NS_FRAMING_LINE) != NS_OK ||
        ns_options_set_drain_timeout_ms(opts, 5000) != NS_OK ||
        ns_options_set_connect_timeout_ms(opts, 10000) != NS_OK) {
        fprintf(stderr, "options: %s\n", ns_last_error());
        return 1;
    }
    rc = ns_tcp_serve(argv[1], on_line, NULL, opts, &g_server);
    ns_options_free(opts);
    if (rc != NS_OK) {
        fprintf(stderr, "%d: cannot serve on %s: %s (%s)\n", (int)getpid(), argv[1], ns_strerror(rc), ns_last_error());
        return 1;
    }
    if (ns_server_addr(g_server, bound, sizeof bound) != NS_OK)
        strcpy(bound, "?");
    printf("%d: listening on %s\n", (int)getpid(), bound);
    if (pthread_create(&sig_thread, NULL, signals, &set) != 0) {
        ns_server_free(g_server);
        return 1;
    }
    rc = ns_server_wait(g_server);
    pthread_join(sig_thread, NULL);
    ns_server_free(g_server);
    return rc == NS_OK ? 0 : 1;
}
