/*
 * tls_loadgen.c - the TLS scenarios' load generator: OpenSSL clients on threads, loopback only.
 *
 *   tls_loadgen MODE --port P [--host 127.0.0.1] [--conns N] [--size S]
 *               [--duration SEC] [--warmup SEC] [--pid SERVER_PID]
 *
 * Modes (each of the N threads runs one connection at a time, blocking):
 *   tls-handshake  connect, a full handshake (no session resumption), one 1-byte echo,
 *                  close_notify, close; again. Handshakes/s and server CPU per handshake.
 *   tls-pingpong   one persistent connection per thread: S bytes out, the S-byte echo back,
 *                  again. Requests/s and server CPU per request.
 *   tls-stream     one persistent connection per thread: S bytes out (64 KiB: four records),
 *                  the S bytes echoed back, again. MB/s echoed and server CPU per GB.
 * The client verifies nothing (the server's cost is what is measured); TLS 1.3, OpenSSL's
 * defaults. Timing and output as bench/loadgen.c: --warmup seconds, then a window of
 * --duration seconds over which the server's utime+stime (/proc/PID/stat) is read; one line
 * "RESULT key=value ..." on stdout. Only 127.0.0.1 is accepted as host.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

static const char *mode;
static int port, conns = 1, pid;
static size_t size = 64;
static double duration = 3, warmup = 0.5;
static SSL_CTX *ctx;
static atomic_ullong ops, bytes, errors;
static atomic_int stop;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The server's utime+stime in seconds, -1 without --pid. */
static double server_cpu(void)
{
    char path[64], buf[1024], *p;
    unsigned long ut = 0, st = 0;
    FILE *f;
    size_t n;
    if (!pid)
        return -1;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if (!(f = fopen(path, "r")))
        return -1;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')');
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* A connected, handshaken TLS client; NULL on failure. */
static SSL *dial(void)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    SSL *ssl;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    if (SSL_connect(ssl) != 1) {
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    return ssl;
}

static void hang_up(SSL *ssl)
{
    int fd = SSL_get_fd(ssl);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
}

/* Sends n bytes and reads n back; 0 on success. */
static int echo(SSL *ssl, const char *out, char *in, size_t n)
{
    size_t got = 0;
    if (SSL_write(ssl, out, (int)n) != (int)n)
        return -1;
    while (got < n) {
        int r = SSL_read(ssl, in + got, (int)(n - got));
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static void *worker(void *arg)
{
    char *out = malloc(size), *in = malloc(size);
    int handshakes = strcmp(mode, "tls-handshake") == 0;
    SSL *ssl = NULL;
    (void)arg;
    memset(out, 'p', size);
    while (!atomic_load(&stop)) {
        if (!ssl && !(ssl = dial())) {
            atomic_fetch_add(&errors, 1);
            usleep(10000);
            continue;
        }
        if (echo(ssl, out, in, handshakes ? 1 : size) != 0) {
            atomic_fetch_add(&errors, 1);
            hang_up(ssl);
            ssl = NULL;
            continue;
        }
        atomic_fetch_add(&ops, 1);
        atomic_fetch_add(&bytes, handshakes ? 1 : size);
        if (handshakes) {
            hang_up(ssl);
            ssl = NULL;
        }
    }
    if (ssl)
        hang_up(ssl);
    free(out);
    free(in);
    return NULL;
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"port", 1, 0, 'p'}, {"host", 1, 0, 'h'},     {"conns", 1, 0, 'c'}, {"size", 1, 0, 's'},
        {"duration", 1, 0, 'd'}, {"warmup", 1, 0, 'w'}, {"pid", 1, 0, 'P'}, {0, 0, 0, 0}};
    pthread_t *threads;
    unsigned long long ops0, bytes0, ops1, bytes1;
    double t0, t1, cpu0, cpu1, win, cpu;
    int opt, i;

    if (argc < 2) {
        fprintf(stderr, "usage: tls_loadgen tls-handshake|tls-pingpong|tls-stream --port P ...\n");
        return 2;
    }
    mode = argv[1];
    optind = 2;
    while ((opt = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'h':
            if (strcmp(optarg, "127.0.0.1") != 0) {
                fprintf(stderr, "tls_loadgen: only 127.0.0.1\n");
                return 2;
            }
            break;
        case 'c': conns = atoi(optarg); break;
        case 's': size = (size_t)atol(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'P': pid = atoi(optarg); break;
        default: return 2;
        }
    }
    if (!port || conns < 1 || size < 1 || (strcmp(mode, "tls-handshake") != 0 &&
                                            strcmp(mode, "tls-pingpong") != 0 && strcmp(mode, "tls-stream") != 0)) {
        fprintf(stderr, "tls_loadgen: bad arguments\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)(warmup + duration + 30));
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    threads = calloc((size_t)conns, sizeof *threads);
    for (i = 0; i < conns; i++)
        pthread_create(&threads[i], NULL, worker, NULL);
    usleep((useconds_t)(warmup * 1e6));
    t0 = now_s();
    cpu0 = server_cpu();
    ops0 = atomic_load(&ops);
    bytes0 = atomic_load(&bytes);
    usleep((useconds_t)(duration * 1e6));
    ops1 = atomic_load(&ops);
    bytes1 = atomic_load(&bytes);
    cpu1 = server_cpu();
    t1 = now_s();
    atomic_store(&stop, 1);
    for (i = 0; i < conns; i++)
        pthread_join(threads[i], NULL);
    win = t1 - t0;
    cpu = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
    printf("RESULT mode=%s conns=%d size=%zu window_s=%.3f ops=%llu errors=%llu srv_cpu_s=%.3f",
           mode, conns, size, win, ops1 - ops0, (unsigned long long)atomic_load(&errors), cpu);
    if (strcmp(mode, "tls-handshake") == 0)
        printf(" hps=%.1f cpu_us_per_handshake=%.2f", (double)(ops1 - ops0) / win,
               cpu >= 0 && ops1 > ops0 ? cpu * 1e6 / (double)(ops1 - ops0) : -1);
    else if (strcmp(mode, "tls-pingpong") == 0)
        printf(" requests=%llu rps=%.1f cpu_us_per_req=%.2f", ops1 - ops0, (double)(ops1 - ops0) / win,
               cpu >= 0 && ops1 > ops0 ? cpu * 1e6 / (double)(ops1 - ops0) : -1);
    else
        printf(" bytes=%llu mbps=%.1f cpu_ms_per_gb=%.1f", bytes1 - bytes0, (double)(bytes1 - bytes0) / win / 1e6,
               cpu >= 0 && bytes1 > bytes0 ? cpu * 1e3 / ((double)(bytes1 - bytes0) / 1e9) : -1);
    printf("\n");
    SSL_CTX_free(ctx);
    free(threads);
    return 0;
}
