/* Built against an installed netsock through pkg-config and CMake (tests/install/check.sh). */
#include <netsock.h>
#include <stdio.h>
#include <string.h>

static void echo(ns_conn *conn, const uint8_t *data, size_t len, void *user) {
    (void)user;
    ns_conn_send(conn, data, len);
}

int main(void) {
    ns_server *srv;
    char addr[64], reply[16];
    size_t len = 0;
    if (ns_tcp_serve("127.0.0.1:0", echo, NULL, NULL, &srv) != NS_OK) return 1;
    ns_server_addr(srv, addr, sizeof addr);
    int rc = ns_tcp_send(addr, "installed", 9, reply, sizeof reply, &len, 5000);
    ns_server_free(srv);
    if (rc != NS_OK || len != 9 || memcmp(reply, "installed", 9) != 0) return 1;
    printf("netsock %s: echo ok\n", ns_version());
    return 0;
}
