/*
 * tpc_server.c - the classic thread-per-connection TCP server, the reference of the workers
 * scenarios: the seed's server in C, as a C programmer writes it before any event loop.
 *
 *   tpc_server PORT BLOCK_MS [BACKLOG]   (listens on 127.0.0.1; PORT 0: any; prints "port=N")
 *
 * Accepts in a loop and starts a detached thread per client, which reads one request (up to
 * 1024 bytes), blocks BLOCK_MS (simulated I/O), answers "ACK!" and closes. BACKLOG defaults to
 * 4096 (netsock's default). SIGTERM ends it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long g_block_ms;

static void *handle_client(void *arg)
{
    int fd = (int)(long)arg;
    char request[1024];
    struct timespec ts = {g_block_ms / 1000, (g_block_ms % 1000) * 1000000L};
    if (recv(fd, request, sizeof request, 0) > 0) {
        nanosleep(&ts, NULL);
        send(fd, "ACK!", 4, MSG_NOSIGNAL);
    }
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    pthread_attr_t attr;
    int fd, one = 1;

    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: tpc_server PORT BLOCK_MS [BACKLOG]\n");
        return 2;
    }
    g_block_ms = strtol(argv[2], NULL, 10);
    signal(SIGPIPE, SIG_IGN);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)atoi(argv[1]));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(fd, argc > 3 ? atoi(argv[3]) : 4096) != 0 || getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        perror("tpc_server");
        return 1;
    }
    printf("port=%d\n", ntohs(sa.sin_port));
    fflush(stdout);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (;;) {
        pthread_t t;
        int c = accept(fd, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE) { /* out of descriptors: let threads finish */
                usleep(1000);
                continue;
            }
            perror("accept");
            return 1;
        }
        if (pthread_create(&t, &attr, handle_client, (void *)(long)c) != 0)
            close(c); /* no thread left: the client gets a reset, as the classic server's would */
    }
}
