/*
 * Test driver for match.c: `test-match SPEC [DEST...]` prints "routes N", then
 * "DEST ACTION" per destination (DEST is A.B.C.D:PORT or [V6]:PORT).
 * A bad SPEC prints "error: MESSAGE" and exits 2; a bad DEST exits 3.
 */
#include <stdio.h>

#include "match.h"

int main(int argc, char **argv) {
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
