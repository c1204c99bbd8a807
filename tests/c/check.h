/* check.h - tiny assertion helper for the netsock C tests.
 *
 * CHECK(cond)          records a pass, or prints file:line, the expression and
 *                      this thread's ns_last_error() and records a failure.
 * CHECK_EQ_INT(a, b)   same for an integer comparison; also prints both values
 *                      and their ns_strerror() text (handy for ns_result codes).
 * CHECK_EQ_STR(a, b)   string comparison (NULL-safe).
 * CHECK_DONE()         prints "<prog>: N checks passed, M failed" and gives the
 *                      exit status (0 only if nothing failed): return CHECK_DONE();
 *
 * The counters are protected by a mutex, so checks may run in library
 * callbacks (on the server's I/O thread) and in helper threads.
 * Also a few small helpers shared by the test programs (monotonic clock,
 * sleeping, a watchdog, an int read under a lock, plain sockets,
 * /proc/self/status numbers such as VmRSS and Threads, ns_server_stats into
 * a checked struct) - all static so each test is a single .c file.
 */
#ifndef NETSOCK_TEST_CHECK_H
#define NETSOCK_TEST_CHECK_H

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "netsock.h"

static pthread_mutex_t check_lock_ = PTHREAD_MUTEX_INITIALIZER;
static long check_passed_ = 0;
static long check_failed_ = 0;

static inline void check_record_(int ok)
{
    pthread_mutex_lock(&check_lock_);
    if (ok)
        check_passed_++;
    else
        check_failed_++;
    pthread_mutex_unlock(&check_lock_);
}

static inline long check_failures(void)
{
    long n;
    pthread_mutex_lock(&check_lock_);
    n = check_failed_;
    pthread_mutex_unlock(&check_lock_);
    return n;
}

static inline const char *check_last_error_(void)
{
    const char *e = ns_last_error();
    return e ? e : "(NULL)";
}

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (cond) {                                                              \
            check_record_(1);                                                    \
        } else {                                                                 \
            check_record_(0);                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s  [ns_last_error: \"%s\"]\n", \
                    __FILE__, __LINE__, #cond, check_last_error_());             \
            fflush(stderr);                                                      \
        }                                                                        \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                       \
    do {                                                                         \
        long long check_a_ = (long long)(a);                                     \
        long long check_b_ = (long long)(b);                                     \
        if (check_a_ == check_b_) {                                              \
            check_record_(1);                                                    \
        } else {                                                                 \
            check_record_(0);                                                    \
            fprintf(stderr,                                                      \
                    "%s:%d: CHECK_EQ_INT failed: %s == %s\n"                     \
                    "    left  = %lld (%s)\n    right = %lld (%s)\n"             \
                    "    ns_last_error: \"%s\"\n",                               \
                    __FILE__, __LINE__, #a, #b,                                  \
                    check_a_, check_code_text_(check_a_),                        \
                    check_b_, check_code_text_(check_b_),                        \
                    check_last_error_());                                        \
            fflush(stderr);                                                      \
        }                                                                        \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                       \
    do {                                                                         \
        const char *check_sa_ = (a);                                             \
        const char *check_sb_ = (b);                                             \
        if (check_sa_ && check_sb_ && strcmp(check_sa_, check_sb_) == 0) {       \
            check_record_(1);                                                    \
        } else {                                                                 \
            check_record_(0);                                                    \
            fprintf(stderr,                                                      \
                    "%s:%d: CHECK_EQ_STR failed: %s == %s\n"                     \
                    "    left  = \"%s\"\n    right = \"%s\"\n",                  \
                    __FILE__, __LINE__, #a, #b,                                  \
                    check_sa_ ? check_sa_ : "(NULL)",                            \
                    check_sb_ ? check_sb_ : "(NULL)");                           \
            fflush(stderr);                                                      \
        }                                                                        \
    } while (0)

/* ns_strerror text for values that look like ns_result codes. */
static inline const char *check_code_text_(long long v)
{
    if (v <= 0 && v >= NS_RESULT_MIN) {
        const char *s = ns_strerror((int)v);
        return s ? s : "(NULL strerror)";
    }
    return "-";
}

#define CHECK_DONE() check_done_(__FILE__)

static inline int check_done_(const char *file)
{
    long p, f;
    pthread_mutex_lock(&check_lock_);
    p = check_passed_;
    f = check_failed_;
    pthread_mutex_unlock(&check_lock_);
    printf("%s: %ld checks passed, %ld failed\n", file, p, f);
    fflush(stdout);
    return f == 0 && p > 0 ? 0 : 1;
}

/* Print a line that says which part of a test program runs now. */
#define SECTION(name)                                                            \
    do {                                                                         \
        printf("-- %s\n", name);                                                 \
        fflush(stdout);                                                          \
    } while (0)

/* ---- small shared helpers -------------------------------------------- */

/* Monotonic time in milliseconds. */
static inline int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void sleep_ms(long ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* Watchdog: if the program is still running after `seconds`, SIGALRM kills
 * it (default action), so a hang shows up as a failed program instead of a
 * stuck test run. */
static inline void watchdog(unsigned seconds)
{
    signal(SIGALRM, SIG_DFL);
    alarm(seconds);
}

/* Loop (bounded) until cond holds or ms milliseconds passed; check cond afterwards. */
#define WAIT_FOR(cond, ms)                                                       \
    do {                                                                         \
        int64_t wait_end_ = now_ms() + (ms);                                     \
        while (!(cond) && now_ms() < wait_end_)                                  \
            sleep_ms(2);                                                         \
    } while (0)

/* An int that callbacks update under `m`, read under it. */
static inline int locked_int(pthread_mutex_t *m, const int *p)
{
    int v;
    pthread_mutex_lock(m);
    v = *p;
    pthread_mutex_unlock(m);
    return v;
}

/* ---- plain socket helpers (the "any plain socket peer") ------------------ */

static inline int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL, 0);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Bound local port of a socket, -1 on error. */
static inline int sock_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}

/* Socket of `type` bound to 127.0.0.1:0; -1 on error. */
static inline int bound_socket4(int type)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, type, 0);
    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A port on 127.0.0.1 that nobody uses right now (bind port 0, read, close). */
static inline int free_port4(int type)
{
    int fd = bound_socket4(type);
    int port;
    if (fd < 0)
        return -1;
    port = sock_port(fd);
    close(fd);
    return port;
}

/* Blocking TCP connect to 127.0.0.1:port (loopback: immediate); -1 on error. */
static inline int tcp_connect4(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Write all n bytes within timeout_ms (poll-bounded). Returns bytes written. */
static inline size_t write_all_timeout(int fd, const void *buf, size_t n, int timeout_ms)
{
    const char *p = (const char *)buf;
    size_t done = 0;
    int64_t end = now_ms() + timeout_ms;
    while (done < n) {
        struct pollfd pfd;
        int64_t left = end - now_ms();
        ssize_t w;
        if (left <= 0)
            break;
        pfd.fd = fd;
        pfd.events = POLLOUT;
        pfd.revents = 0;
        if (poll(&pfd, 1, (int)left) <= 0)
            continue;
        w = send(fd, p + done, n - done, MSG_NOSIGNAL);
        if (w > 0)
            done += (size_t)w;
        else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            break;
    }
    return done;
}

/* Read until `want` bytes arrived, EOF, error or timeout_ms passed.
 * *eof (may be NULL) is set to 1 on EOF, -errno on a read error, else 0.
 * Returns the bytes read. */
static inline size_t read_timeout(int fd, void *buf, size_t want, int timeout_ms, int *eof)
{
    char *p = (char *)buf;
    size_t got = 0;
    int64_t end = now_ms() + timeout_ms;
    if (eof)
        *eof = 0;
    while (got < want) {
        struct pollfd pfd;
        int64_t left = end - now_ms();
        ssize_t r;
        if (left <= 0)
            break;
        pfd.fd = fd;
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (poll(&pfd, 1, (int)left) <= 0)
            continue;
        r = recv(fd, p + got, want - got, MSG_DONTWAIT);
        if (r > 0) {
            got += (size_t)r;
        } else if (r == 0) {
            if (eof)
                *eof = 1;
            break;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            if (eof)
                *eof = -errno;
            break;
        }
    }
    return got;
}

/* Wait up to timeout_ms for EOF on fd, discarding nothing: returns 1 on EOF,
 * 0 on timeout, 2 if unexpected data arrived, -errno on error. */
static inline int wait_eof(int fd, int timeout_ms)
{
    char c;
    int eof = 0;
    size_t n = read_timeout(fd, &c, 1, timeout_ms, &eof);
    if (n == 1)
        return 2;
    return eof;
}

/* ---- process and server introspection --------------------------------------- */

/* The number after "key:" in /proc/self/status (e.g. "VmRSS" in kB, "Threads"),
 * -1 if it cannot be read. */
static inline long proc_status_num(const char *key)
{
    char line[256];
    size_t klen = strlen(key);
    long v = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* ns_server_stats into a zeroed struct with size set; checks that it succeeded
 * and filled the whole struct. */
static inline ns_stats server_stats(const ns_server *srv)
{
    ns_stats s;
    memset(&s, 0, sizeof s);
    s.size = (uint32_t)sizeof s;
    CHECK_EQ_INT(ns_server_stats(srv, &s), NS_OK);
    CHECK_EQ_INT(s.size, sizeof s);
    return s;
}

/* ---- descriptors, resets, CPU time (hardening tests) --------------------------------- */

#include <dirent.h>
#include <sys/resource.h>

/* Open descriptors of this process: the entries of /proc/self/fd, not counting
 * the one used to read it. -1 if it cannot be read (e.g. no descriptor left). */
static inline int proc_fd_count(void)
{
    int n = 0;
    struct dirent *e;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;
}

/* The highest open descriptor number (from /proc/self/fd), -1 if unreadable. */
static inline int proc_fd_max(void)
{
    int hi = -1;
    struct dirent *e;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.' && atoi(e->d_name) > hi)
            hi = atoi(e->d_name);
    closedir(d);
    return hi;
}

/* Abortive close: SO_LINGER {1, 0} makes the kernel send RST instead of FIN. */
static inline void close_reset(int fd)
{
    struct linger lg;
    lg.l_onoff = 1;
    lg.l_linger = 0;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* CPU time (user + system) this process has used so far, all threads, in ms. */
static inline int64_t process_cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif /* NETSOCK_TEST_CHECK_H */
