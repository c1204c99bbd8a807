/*
 * timers_common.h - what ns_timers.c and uv_timers.c share: their arguments, the process's own
 * figures (CPU time, context switches, VmRSS), the machine's busy time, and the RESULT line of
 * the `timers` mode. Header-only (static functions): each program includes it once.
 */
#ifndef TIMERS_COMMON_H
#define TIMERS_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* The per-connection timer of the `conn` mode: set again on every message, so it never fires
 * while the load runs; if it does (a peer silent that long), the connection is closed. */
#define CONN_TIMER_MS 5000

/* `timers` mode: how many, their period, and the run's phases. */
struct tcfg {
    long n;
    long period_ms;
    double warmup_s;
    double window_s;
};

/* One reading of the process (and the machine) at a phase boundary. */
struct tsnap {
    int64_t t_ns;
    double user_s, sys_s;
    long nvcsw, nivcsw;
    long rss_kb;
    long long busy_ticks;
    uint64_t fires;
};

static int64_t tc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int tc_read(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;
    if (fd < 0)
        return -1;
    n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return 0;
}

/* VmRSS of this process in kB (user space only), -1 if unreadable. */
static long tc_rss_kb(void)
{
    char buf[8192], *p;
    long kb;
    if (tc_read("/proc/self/status", buf, sizeof buf) != 0 || (p = strstr(buf, "VmRSS:")) == NULL ||
        sscanf(p + 6, "%ld", &kb) != 1)
        return -1;
    return kb;
}

/* The machine's busy time on all cores in clock ticks (as loadgen.c reads it), -1 if unreadable:
 * minus ours, what other processes used meanwhile. */
static long long tc_busy_ticks(void)
{
    char buf[512];
    unsigned long long v[8];
    if (tc_read("/proc/stat", buf, sizeof buf) != 0 ||
        sscanf(buf, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
               &v[6], &v[7]) != 8)
        return -1;
    return (long long)(v[0] + v[1] + v[2] + v[5] + v[6]);
}

static void tc_snap(struct tsnap *s, uint64_t fires)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    s->t_ns = tc_now_ns();
    s->user_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    s->sys_s = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    s->nvcsw = ru.ru_nvcsw;
    s->nivcsw = ru.ru_nivcsw;
    s->rss_kb = tc_rss_kb();
    s->busy_ticks = tc_busy_ticks();
    s->fires = fires;
}

/* Parses `N PERIOD_MS WARMUP_S WINDOW_S` (argv[0..3]); 0 on success. */
static int tc_parse(char **argv, struct tcfg *c)
{
    char *e1, *e2, *e3, *e4;
    c->n = strtol(argv[0], &e1, 10);
    c->period_ms = strtol(argv[1], &e2, 10);
    c->warmup_s = strtod(argv[2], &e3);
    c->window_s = strtod(argv[3], &e4);
    if (*e1 || *e2 || *e3 || *e4 || c->n < 1 || c->n > 10000000 || c->period_ms < 1 || c->period_ms > 60000 ||
        c->warmup_s < 0.1 || c->warmup_s > 600 || c->window_s < 0.1 || c->window_s > 600)
        return -1;
    return 0;
}

/* The first expiry of timer i: spread evenly over the first period. */
static uint64_t tc_first_ms(const struct tcfg *c, long i)
{
    return (uint64_t)((i * c->period_ms) / c->n);
}

/* Raises the soft descriptor limit to the hard one (10,000 connections need more than 1024). */
static void tc_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/*
 * The `timers` RESULT line: `before` was taken before the first timer was made, `a` and `b` at
 * the ends of the measured window (after the warm-up, every timer armed and firing).
 *   fires, fires_per_s, expected_per_s (n * 1000 / period_ms)
 *   cpu_s, user_s          the process's CPU time (all threads) over the window
 *   cpu_ns_per_fire, user_ns_per_fire
 *   sleeps_per_s           voluntary context switches per second (the loop waited)
 *   b_per_timer            VmRSS growth from before the timers were made to the window's start,
 *                          per timer (user space only)
 *   bg_cpu_s               what other processes used during the window (all cores)
 */
static void tc_print(const char *server, const struct tcfg *c, const struct tsnap *before, const struct tsnap *a,
                     const struct tsnap *b, const char *extra)
{
    double win = (double)(b->t_ns - a->t_ns) / 1e9;
    double cpu = (b->user_s + b->sys_s) - (a->user_s + a->sys_s), user = b->user_s - a->user_s;
    double fires = (double)(b->fires - a->fires);
    double hz = (double)sysconf(_SC_CLK_TCK);
    printf("RESULT mode=timers server=%s timers=%ld period_ms=%ld window_s=%.3f fires=%.0f fires_per_s=%.0f "
           "expected_per_s=%.0f cpu_s=%.4f user_s=%.4f",
           server, c->n, c->period_ms, win, fires, fires / win, (double)c->n * 1000.0 / (double)c->period_ms, cpu,
           user);
    if (fires > 0)
        printf(" cpu_ns_per_fire=%.1f user_ns_per_fire=%.1f", cpu * 1e9 / fires, user * 1e9 / fires);
    printf(" sleeps_per_s=%.0f preempt_per_s=%.0f", (double)(b->nvcsw - a->nvcsw) / win,
           (double)(b->nivcsw - a->nivcsw) / win);
    if (before->rss_kb >= 0 && a->rss_kb >= 0)
        printf(" rss_before_kb=%ld rss_armed_kb=%ld rss_end_kb=%ld b_per_timer=%.1f", before->rss_kb, a->rss_kb,
               b->rss_kb, (double)(a->rss_kb - before->rss_kb) * 1024.0 / (double)c->n);
    if (a->busy_ticks >= 0 && b->busy_ticks >= 0)
        printf(" bg_cpu_s=%.3f", (double)(b->busy_ticks - a->busy_ticks) / hz - cpu);
    printf("%s%s\n", extra && *extra ? " " : "", extra ? extra : "");
    fflush(stdout);
}

#endif
