/*
 * Route matching for the portside socket hook: which destinations go to the
 * portside agent and which are left alone. Kept apart from the hook so a test
 * driver (test-match.c) can exercise it without LD_PRELOAD.
 */
#ifndef PORTSIDE_MATCH_H
#define PORTSIDE_MATCH_H

#include <stddef.h>
#include <sys/socket.h>

enum ps_action { PS_DIRECT = 0, PS_PORTSIDE = 1 };

struct ps_route {
  int family;              /* AF_INET, AF_INET6, or 0 for "*" (any address) */
  unsigned char addr[16];  /* network address, already masked */
  int prefix;              /* prefix length in bits */
  unsigned short port_lo;  /* 0..65535; port_lo=0,port_hi=65535 means any port */
  unsigned short port_hi;
  enum ps_action action;
};

/*
 * Parse a route list: entries separated by ';' (',' and newlines also accepted),
 * each MATCH=ACTION, first match wins. MATCH is
 *   *  |  *:PORT  |  A.B.C.D[/N][:PORT]  |  V6ADDR[/N]  |  [V6ADDR[/N]][:PORT]  |  [V6ADDR]/N[:PORT]
 * PORT is a number or a range LO-HI. ACTION is portside or direct ("firewall"
 * means portside: only the agent can reach the firewall, and its routes do).
 * Returns the number of routes stored (at most max) or -1 on a syntax error;
 * on error, err (if given) receives a message naming the bad entry.
 */
int ps_routes_parse(const char *spec, struct ps_route *out, int max, char *err, size_t errlen);

/* Action for a destination (AF_INET or AF_INET6 sockaddr); PS_DIRECT if nothing matches.
 * An IPv4-mapped IPv6 address (::ffff:a.b.c.d) matches IPv4 routes. */
enum ps_action ps_route_lookup(const struct ps_route *routes, int n, const struct sockaddr *sa);

/* Parse "HOST:PORT" or "[V6]:PORT" (numeric addresses only) into a sockaddr. 0 on success. */
int ps_parse_hostport(const char *s, struct sockaddr_storage *out, socklen_t *outlen);

#endif
