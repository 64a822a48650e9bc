/*
 * Test driver for match.c: `test-match SPEC [DEST...]` prints "routes N", then
 * "DEST ACTION" per destination (DEST is A.B.C.D:PORT or [V6]:PORT).
 * A bad SPEC prints "error: MESSAGE" and exits 2; a bad DEST exits 3.
 * `test-match --names PATTERNS [NAME...]` prints "names N", then "NAME remote|local" per name,
 * and "addr I A.B.C.D I" for a few table indexes (the stand-in address and back).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "match.h"
#include "names.h"

static int names_main(int argc, char **argv) {
  struct ps_names p;
  char err[300];
  int n = ps_names_parse(argv[2], &p, err, sizeof err);
  if (n < 0) {
    printf("error: %s\n", err);
    return 2;
  }
  printf("names %d\n", n);
  for (int i = 3; i < argc; i++) printf("%s %s\n", argv[i], ps_names_match(&p, argv[i]) ? "remote" : "local");
  unsigned idx[] = {1, 255, 256, 65536, 0xffffff};
  for (size_t i = 0; i < sizeof idx / sizeof idx[0]; i++) {
    struct in_addr a = {.s_addr = ps_name_addr(idx[i])};
    printf("addr %u %s %u\n", idx[i], inet_ntoa(a), ps_name_index(a.s_addr));
  }
  struct in_addr other;
  inet_pton(AF_INET, "10.0.0.1", &other);
  printf("addr other %u\n", ps_name_index(other.s_addr));
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "--names") == 0) return names_main(argc, argv);
  if (argc < 2) {
    fprintf(stderr, "usage: %s SPEC [DEST...]\n", argv[0]);
    return 1;
  }
  struct ps_route routes[64];
  char err[300];
  int n = ps_routes_parse(argv[1], routes, 64, err, sizeof err);
  if (n < 0) {
    printf("error: %s\n", err);
    return 2;
  }
  printf("routes %d\n", n);
  for (int i = 2; i < argc; i++) {
    struct sockaddr_storage ss;
    socklen_t len;
    if (ps_parse_hostport(argv[i], &ss, &len) != 0) {
      printf("%s bad-destination\n", argv[i]);
      return 3;
    }
    printf("%s %s\n", argv[i],
           ps_route_lookup(routes, n, (struct sockaddr *)&ss) == PS_PORTSIDE ? "portside" : "direct");
  }
  return 0;
}
