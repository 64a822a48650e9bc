/*
 * Test program for the hook's connect() semantics, run under LD_PRELOAD by
 * test/e2e/hook.e2e.test.ts against a TCP echo target:
 *   test-connect MODE ADDR PORT      (ADDR numeric, IPv4 or IPv6)
 * MODE: block | nonblock | v6only | dup; or byname | byname_r with a host NAME for ADDR,
 * resolved with gethostbyname() / gethostbyname_r() (as older programs do) and printed. Prints one "key=value" line per step;
 * exits 0 when every step ran, 1 on an unexpected failure (the line says which).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *errname(int e) {
  switch (e) {
    case 0: return "0";
    case EINPROGRESS: return "EINPROGRESS";
    case EISCONN: return "EISCONN";
    case EALREADY: return "EALREADY";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ENETUNREACH: return "ENETUNREACH";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ENOTCONN: return "ENOTCONN";
    default: return strerror(e);
  }
}

static void print_peer(const char *key, int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  char host[INET6_ADDRSTRLEN];
  if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0) { printf("%s=error:%s\n", key, errname(errno)); return; }
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in *s = (struct sockaddr_in *)&ss;
    printf("%s=%s:%u\n", key, inet_ntop(AF_INET, &s->sin_addr, host, sizeof host), ntohs(s->sin_port));
  } else {
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
    printf("%s=[%s]:%u\n", key, inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof host), ntohs(s->sin6_port));
  }
}

/* Send a line, read it back from the echo target. */
static int echo(int fd, const char *msg) {
  size_t n = strlen(msg);
  if (send(fd, msg, n, MSG_NOSIGNAL) != (ssize_t)n) { printf("echo=send-failed:%s\n", errname(errno)); return 1; }
  char buf[256];
  size_t got = 0;
  while (got < n) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 10000) <= 0) { printf("echo=timeout\n"); return 1; }
    ssize_t r = recv(fd, buf + got, sizeof buf - 1 - got, 0);
    if (r <= 0) { printf("echo=closed\n"); return 1; }
    got += (size_t)r;
  }
  buf[got] = '\0';
  if (buf[got - 1] == '\n') buf[got - 1] = '\0';
  printf("echo=%s\n", buf);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: %s block|nonblock|v6only|dup ADDR PORT | byname|byname_r NAME PORT\n", argv[0]); return 2; }
  const char *mode = argv[1];
  setvbuf(stdout, NULL, _IOLBF, 0);
  char resolved[INET6_ADDRSTRLEN];
  if (strncmp(mode, "byname", 6) == 0) {
    struct hostent *h, hb;
    char buf[1024];
    int herr = 0;
    if (strcmp(mode, "byname_r") == 0) {
      if (gethostbyname_r(argv[2], &hb, buf, sizeof buf, &h, &herr) != 0) h = NULL;
    } else h = gethostbyname(argv[2]);
    if (!h || h->h_addrtype != AF_INET || !h->h_addr_list[0]) { printf("resolved=none\n"); return 1; }
    inet_ntop(AF_INET, h->h_addr_list[0], resolved, sizeof resolved);
    printf("resolved=%s\n", resolved);
    argv[2] = resolved;
    mode = "block";
  }
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t len;
  int family;
  struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, argv[2], &s4->sin_addr) == 1) {
    family = s4->sin_family = AF_INET;
    s4->sin_port = htons((unsigned short)atoi(argv[3]));
    len = sizeof *s4;
  } else if (inet_pton(AF_INET6, argv[2], &s6->sin6_addr) == 1) {
    family = s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((unsigned short)atoi(argv[3]));
    len = sizeof *s6;
  } else { fprintf(stderr, "bad address\n"); return 2; }

  int fd = socket(family, SOCK_STREAM, 0);
  if (fd < 0) { perror("socket"); return 1; }

  if (strcmp(mode, "v6only") == 0) {
    int on = 1;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) != 0) { perror("v6only"); return 1; }
  }
  if (strcmp(mode, "nonblock") == 0) {
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    int r = connect(fd, (struct sockaddr *)&ss, len);
    printf("connect=%d %s\n", r, r == 0 ? "0" : errname(errno));
    if (r != 0 && errno != EINPROGRESS) return 1;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int pr = poll(&p, 1, 10000);
    printf("writable=%s\n", pr == 1 && (p.revents & POLLOUT) ? "yes" : "no");
    int soerr = -1;
    socklen_t l = sizeof soerr;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l);
    printf("so_error=%s\n", errname(soerr));
    r = connect(fd, (struct sockaddr *)&ss, len);
    printf("again=%d %s\n", r, r == 0 ? "0" : errname(errno));
    print_peer("peer", fd);
    return echo(fd, "nonblocking hello\n");
  }
  int r = connect(fd, (struct sockaddr *)&ss, len);
  printf("connect=%d %s\n", r, r == 0 ? "0" : errname(errno));
  if (r != 0) return 1;
  printf("still_blocking=%s\n", (fcntl(fd, F_GETFL) & O_NONBLOCK) ? "no" : "yes");
  print_peer("peer", fd);
  if (strcmp(mode, "dup") == 0) {
    int d = dup(fd);
    print_peer("dup_peer", d);
    close(fd);
    print_peer("after_close_peer", d);
    int rc = echo(d, "dup hello\n");
    close(d);
    /* A new, unhooked socket that may reuse the numbers must not inherit the entries. */
    int u = socket(AF_INET, SOCK_STREAM, 0);
    print_peer("unconnected_peer", u);
    return rc;
  }
  return echo(fd, strcmp(mode, "v6only") == 0 ? "v6only hello\n" : "blocking hello\n");
}
