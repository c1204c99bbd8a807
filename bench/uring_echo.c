/*
 * uring_echo.c - the io_uring reference: a single-threaded TCP echo server on io_uring
 * (liburing), the way the kernel's newest interfaces allow: what an io_uring backend of
 * netsock could at best approach.
 *
 *   uring_echo tcp HOST:PORT     (e.g. 127.0.0.1:0; prints "port=N" once bound)
 *   uring_echo probe             exit 0 if io_uring with everything used here works, else
 *                                print why on stdout ("unavailable: ...") and exit 3
 *
 * One ring (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN: completions are
 * processed only when this thread asks for them), one multishot accept on the listener, one
 * multishot recv per connection reading into a provided-buffer ring (the kernel picks a free
 * buffer per completion: connections own no buffer), and each chunk sent back from the very
 * buffer it arrived in, which returns to the ring once the send completes. A connection has
 * at most one send in flight (two could overtake each other); chunks that arrive meanwhile
 * wait in its queue. When the ring runs dry, the recv ends (ENOBUFS) and is armed again once
 * a buffer comes back. TCP_NODELAY. UDP is not served (the bench runs this in TCP scenarios).
 *
 * When io_uring is not there (an old kernel, or a seccomp profile that blocks it, as
 * container runtimes often do), it says so and exits with status 3; the runner then leaves
 * the `uring` server out. Runs until killed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <liburing.h>

#define RING_ENTRIES 4096
#define CQ_ENTRIES 65536
#define BGID 1
#define NBUFS 16384 /* a power of two: 10,000 ping-pong connections each hold one at most */
#define BUF_SIZE 4096

enum op { OP_ACCEPT = 1, OP_RECV = 2, OP_SEND = 3 };

struct chunk {
    uint16_t bid;
    uint32_t len, off;
};

struct conn {
    int open;     /* the fd is ours (not yet closed) */
    int eof;      /* the recv ended for good: close once the queue is sent */
    int sending;  /* a send is in flight (the queue's head) */
    int armed;    /* a multishot recv is armed */
    struct chunk *q;
    size_t head, len, cap;
};

static struct io_uring g_ring;
static struct io_uring_buf_ring *g_br;
static char *g_bufs;
static struct conn *g_conns; /* indexed by fd */
static size_t g_nconns;
static int g_lfd;
/* connections whose recv ended for want of buffers, armed again once buffers come back */
static int *g_starved;
static size_t g_nstarved;

static void die(const char *what, int err)
{
    fprintf(stderr, "uring_echo: %s: %s\n", what, strerror(err));
    exit(1);
}

static uint64_t tag(enum op op, int fd, unsigned bid)
{
    return (uint64_t)op | (uint64_t)(uint32_t)fd << 8 | (uint64_t)bid << 40;
}

static struct io_uring_sqe *sqe_get(void)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&g_ring);
    if (sqe == NULL) { /* the submission queue is full: hand it to the kernel, take a new one */
        io_uring_submit(&g_ring);
        sqe = io_uring_get_sqe(&g_ring);
        if (sqe == NULL)
            die("io_uring_get_sqe", EBUSY);
    }
    return sqe;
}

static void arm_accept(void)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_multishot_accept(sqe, g_lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, tag(OP_ACCEPT, g_lfd, 0));
}

static void arm_recv(int fd)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    io_uring_sqe_set_data64(sqe, tag(OP_RECV, fd, 0));
    g_conns[fd].armed = 1;
}

static void give_back(unsigned bid)
{
    io_uring_buf_ring_add(g_br, g_bufs + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(NBUFS), 0);
    io_uring_buf_ring_advance(g_br, 1);
}

static void send_head(int fd)
{
    struct conn *c = &g_conns[fd];
    struct chunk *ch = &c->q[c->head];
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_send(sqe, fd, g_bufs + (size_t)ch->bid * BUF_SIZE + ch->off, ch->len - ch->off, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, tag(OP_SEND, fd, ch->bid));
    c->sending = 1;
}

/* Closes the connection once nothing of it is in flight; its queued buffers go back. */
static void maybe_close(int fd)
{
    struct conn *c = &g_conns[fd];
    if (!c->open || c->sending || c->armed)
        return;
    for (size_t i = c->head; i < c->len; i++)
        give_back(c->q[i].bid);
    free(c->q);
    memset(c, 0, sizeof *c);
    close(fd);
}

static void queue_chunk(int fd, unsigned bid, uint32_t len)
{
    struct conn *c = &g_conns[fd];
    if (c->head == c->len)
        c->head = c->len = 0;
    if (c->len == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 4;
        struct chunk *q = realloc(c->q, cap * sizeof *q);
        if (q == NULL)
            die("realloc", ENOMEM);
        c->q = q;
        c->cap = cap;
    }
    c->q[c->len++] = (struct chunk){.bid = (uint16_t)bid, .len = len, .off = 0};
    if (!c->sending)
        send_head(fd);
}

static void on_accept(struct io_uring_cqe *cqe)
{
    int fd = cqe->res, one = 1;
    if (!(cqe->flags & IORING_CQE_F_MORE))
        arm_accept();
    if (fd < 0)
        return; /* e.g. EMFILE: the next connection may fare better */
    if ((size_t)fd >= g_nconns) {
        close(fd);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    memset(&g_conns[fd], 0, sizeof g_conns[fd]);
    g_conns[fd].open = 1;
    arm_recv(fd);
}

static void on_recv(int fd, struct io_uring_cqe *cqe)
{
    struct conn *c = &g_conns[fd];
    int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    if (!more)
        c->armed = 0;
    if (cqe->res > 0) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (c->eof)
            give_back(bid);
        else
            queue_chunk(fd, bid, (uint32_t)cqe->res);
        if (!more && !c->eof)
            arm_recv(fd); /* the kernel ended it (it may): go on */
        return;
    }
    if (cqe->res == -ENOBUFS && !c->eof) {
        g_starved[g_nstarved++] = fd; /* armed again once buffers come back */
        return;
    }
    if (more)
        return;
    c->eof = 1; /* the peer's end, or an error */
    maybe_close(fd);
}

static void on_send(int fd, unsigned bid, struct io_uring_cqe *cqe)
{
    struct conn *c = &g_conns[fd];
    struct chunk *ch = &c->q[c->head];
    c->sending = 0;
    if (cqe->res < 0) {
        c->eof = 1;
        if (c->armed)
            shutdown(fd, SHUT_RDWR); /* ends the recv, then the connection closes */
        maybe_close(fd);
        return;
    }
    ch->off += (uint32_t)cqe->res;
    if (ch->off < ch->len) {
        send_head(fd);
        return;
    }
    give_back(bid);
    c->head++;
    if (c->head < c->len)
        send_head(fd);
    else if (c->eof)
        maybe_close(fd);
}

static int setup(void)
{
    struct io_uring_params p;
    struct io_uring_buf_reg reg;
    size_t ring_bytes = NBUFS * sizeof(struct io_uring_buf);
    int rc;

    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
    p.cq_entries = CQ_ENTRIES;
    if ((rc = io_uring_queue_init_params(RING_ENTRIES, &g_ring, &p)) < 0) {
        printf("unavailable: io_uring_setup with SINGLE_ISSUER|DEFER_TASKRUN: %s\n", strerror(-rc));
        return -1;
    }
    g_br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    g_bufs = mmap(NULL, (size_t)NBUFS * BUF_SIZE, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (g_br == MAP_FAILED || g_bufs == MAP_FAILED)
        die("mmap", errno);
    io_uring_buf_ring_init(g_br);
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)g_br;
    reg.ring_entries = NBUFS;
    reg.bgid = BGID;
    if ((rc = io_uring_register_buf_ring(&g_ring, &reg, 0)) < 0) {
        printf("unavailable: provided-buffer rings (IORING_REGISTER_PBUF_RING): %s\n", strerror(-rc));
        return -1;
    }
    for (unsigned i = 0; i < NBUFS; i++)
        io_uring_buf_ring_add(g_br, g_bufs + (size_t)i * BUF_SIZE, BUF_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(NBUFS), (int)i);
    io_uring_buf_ring_advance(g_br, NBUFS);
    return 0;
}

/* Whether multishot recv works: armed on one end of a socket pair, it must deliver a chunk. */
static int probe_recv(void)
{
    int sv[2], rc;
    struct io_uring_cqe *cqe;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        die("socketpair", errno);
    g_nconns = (size_t)sv[0] + 1;
    if ((g_conns = calloc(g_nconns, sizeof *g_conns)) == NULL)
        die("calloc", ENOMEM);
    arm_recv(sv[0]);
    if (write(sv[1], "x", 1) != 1)
        die("write", errno);
    if ((rc = io_uring_submit_and_wait(&g_ring, 1)) < 0 || (rc = io_uring_peek_cqe(&g_ring, &cqe)) < 0) {
        printf("unavailable: io_uring_enter: %s\n", strerror(-rc));
        return -1;
    }
    if (cqe->res != 1) {
        printf("unavailable: multishot recv with provided buffers: %s\n",
               cqe->res < 0 ? strerror(-cqe->res) : "no data");
        return -1;
    }
    return 0;
}

static int listen_on(const char *text, int *port)
{
    char host[128];
    const char *colon = strrchr(text, ':');
    struct sockaddr_storage ss;
    socklen_t len;
    size_t hl;
    int fd, one = 1;
    if (!colon || (hl = (size_t)(colon - text)) >= sizeof host)
        return -1;
    memcpy(host, text, hl);
    host[hl] = '\0';
    memset(&ss, 0, sizeof ss);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        host[hl - 1] = '\0';
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)atoi(colon + 1));
        if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
            return -1;
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)atoi(colon + 1));
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
            return -1;
        len = sizeof *a;
    }
    if ((fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
        die("socket", errno);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 1024) != 0)
        die("bind/listen", errno);
    len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        die("getsockname", errno);
    *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

int main(int argc, char **argv)
{
    struct rlimit rl;
    int port;

    if (argc == 2 && strcmp(argv[1], "probe") == 0) {
        if (setup() != 0 || probe_recv() != 0)
            return 3;
        printf("ok\n");
        return 0;
    }
    if (argc != 3 || strcmp(argv[1], "tcp") != 0) {
        fprintf(stderr, "usage: uring_echo tcp HOST:PORT | uring_echo probe\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (setup() != 0) {
        fflush(stdout);
        fprintf(stderr, "uring_echo: io_uring is unavailable here\n");
        return 3;
    }
    if ((g_lfd = listen_on(argv[2], &port)) < 0) {
        fprintf(stderr, "uring_echo: bad address '%s'\n", argv[2]);
        return 2;
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        die("getrlimit", errno);
    g_nconns = rl.rlim_cur > (1 << 20) ? (1 << 20) : (size_t)rl.rlim_cur;
    if ((g_conns = calloc(g_nconns, sizeof *g_conns)) == NULL || (g_starved = calloc(g_nconns, sizeof *g_starved)) == NULL)
        die("calloc", ENOMEM);
    arm_accept();
    printf("port=%d\n", port);
    fflush(stdout);
    for (;;) {
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        int rc = io_uring_submit_and_wait(&g_ring, 1);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
            die("io_uring_submit_and_wait", -rc);
        io_uring_for_each_cqe(&g_ring, head, cqe) {
            uint64_t t = io_uring_cqe_get_data64(cqe);
            int fd = (int)(uint32_t)(t >> 8);
            seen++;
            switch ((enum op)(t & 0xff)) {
            case OP_ACCEPT: on_accept(cqe); break;
            case OP_RECV: on_recv(fd, cqe); break;
            case OP_SEND: on_send(fd, (unsigned)(t >> 40), cqe); break;
            }
        }
        io_uring_cq_advance(&g_ring, seen);
        /* buffers came back (or not): the connections that went without get their recv again */
        while (g_nstarved > 0) {
            int fd = g_starved[--g_nstarved];
            if (g_conns[fd].open && !g_conns[fd].eof && !g_conns[fd].armed)
                arm_recv(fd);
        }
    }
}
