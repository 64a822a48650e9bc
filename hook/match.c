/* Route matching for the portside socket hook; see match.h for the syntax. */
#include "match.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void set_err(char *err, size_t errlen, const char *msg, const char *entry) {
  if (err && errlen) snprintf(err, errlen, "%s: '%s'", msg, entry);
}

/* Decimal number in [lo,hi] filling the whole string; -1 otherwise. */
static long parse_num(const char *s, long lo, long hi) {
  if (!*s) return -1;
  long v = 0;
  for (const char *p = s; *p; p++) {
    if (!isdigit((unsigned char)*p)) return -1;
    v = v * 10 + (*p - '0');
    if (v > hi) return -1;
  }
  return v < lo ? -1 : v;
}

static int parse_ports(const char *s, struct ps_route *r) {
  char buf[32];
  if (strlen(s) >= sizeof buf) return -1;
  strcpy(buf, s);
  char *dash = strchr(buf, '-');
  if (dash) *dash = '\0';
  long lo = parse_num(buf, 0, 65535);
  long hi = dash ? parse_num(dash + 1, 0, 65535) : lo;
  if (lo < 0 || hi < 0 || hi < lo) return -1;
  r->port_lo = (unsigned short)lo;
  r->port_hi = (unsigned short)hi;
  return 0;
}

static void mask(unsigned char *a, int len, int prefix) {
  for (int i = 0; i < len; i++) {
    int bits = prefix - i * 8;
    if (bits >= 8) continue;
    a[i] &= bits <= 0 ? 0 : (unsigned char)(0xff << (8 - bits));
  }
}

/* Parse one MATCH (no ACTION) into r. */
static int parse_match(char *m, struct ps_route *r) {
  char *addr = m, *prefix = NULL, *port = NULL;
  r->port_lo = 0;
  r->port_hi = 65535;
  if (m[0] == '[') {
    char *close = strchr(m, ']');
    if (!close) return -1;
    *close = '\0';
    addr = m + 1;
    char *after = close + 1;
    if (*after == '/') {             /* [V6]/N[:PORT] */
      prefix = after + 1;
      char *c = strchr(prefix, ':');
      if (c) { *c = '\0'; port = c + 1; }
    } else if (*after == ':') {
      port = after + 1;
    } else if (*after) {
      return -1;
    }
    char *slash = strchr(addr, '/'); /* [V6/N] */
    if (slash) { if (prefix) return -1; *slash = '\0'; prefix = slash + 1; }
  } else if (strchr(m, ':') && strchr(m, ':') != strrchr(m, ':')) {
    /* bare IPv6 (two or more colons): no port possible, use brackets for that */
    char *slash = strchr(m, '/');
    if (slash) { *slash = '\0'; prefix = slash + 1; }
  } else {
    char *c = strchr(m, ':');
    if (c) { *c = '\0'; port = c + 1; }
    char *slash = strchr(m, '/');
    if (slash) { *slash = '\0'; prefix = slash + 1; }
  }
  if (port && parse_ports(port, r) < 0) return -1;
  if (strcmp(addr, "*") == 0) {
    if (prefix) return -1;
    r->family = 0;
    r->prefix = 0;
    memset(r->addr, 0, sizeof r->addr);
    return 0;
  }
  memset(r->addr, 0, sizeof r->addr);
  int maxbits;
  if (inet_pton(AF_INET, addr, r->addr) == 1) { r->family = AF_INET; maxbits = 32; }
  else if (inet_pton(AF_INET6, addr, r->addr) == 1) { r->family = AF_INET6; maxbits = 128; }
  else return -1;
  if (prefix) {
    long p = parse_num(prefix, 0, maxbits);
    if (p < 0) return -1;
    r->prefix = (int)p;
  } else {
    r->prefix = maxbits;
  }
  /* An IPv4-mapped IPv6 network is stored as IPv4 so it matches either form. */
  static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (r->family == AF_INET6 && r->prefix >= 96 && memcmp(r->addr, v4mapped, 12) == 0) {
    memmove(r->addr, r->addr + 12, 4);
    memset(r->addr + 4, 0, 12);
    r->family = AF_INET;
    r->prefix -= 96;
  }
  mask(r->addr, r->family == AF_INET ? 4 : 16, r->prefix);
  return 0;
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s)) s++;
  char *e = s + strlen(s);
  while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
  return s;
}

int ps_routes_parse(const char *spec, struct ps_route *out, int max, char *err, size_t errlen) {
  int n = 0;
  const char *p = spec ? spec : "";
  while (*p) {
    size_t len = strcspn(p, ";,\n");
    char entry[256];
    if (len >= sizeof entry) {
      set_err(err, errlen, "route entry too long", "...");
      return -1;
    }
    memcpy(entry, p, len);
    entry[len] = '\0';
    p += len;
    if (*p) p++;
    char *e = trim(entry);
    if (!*e) continue;
    char shown[256];
    strcpy(shown, e);
    char *eq = strrchr(e, '=');
    if (!eq) { set_err(err, errlen, "route needs MATCH=ACTION", shown); return -1; }
    *eq = '\0';
    char *act = trim(eq + 1);
    struct ps_route r;
    /* "firewall" also goes to the agent: only the agent can reach the firewall. */
    if (strcmp(act, "portside") == 0 || strcmp(act, "firewall") == 0) r.action = PS_PORTSIDE;
    else if (strcmp(act, "direct") == 0) r.action = PS_DIRECT;
    else { set_err(err, errlen, "route action must be portside or direct", shown); return -1; }
    if (parse_match(trim(e), &r) < 0) { set_err(err, errlen, "bad route address, prefix or port", shown); return -1; }
    if (n >= max) { set_err(err, errlen, "too many routes", shown); return -1; }
    out[n++] = r;
  }
  return n;
}

static int prefix_match(const unsigned char *a, const unsigned char *net, int prefix) {
  int full = prefix / 8, rest = prefix % 8;
  if (memcmp(a, net, (size_t)full) != 0) return 0;
  if (!rest) return 1;
  unsigned char m = (unsigned char)(0xff << (8 - rest));
  return (a[full] & m) == net[full];
}

enum ps_action ps_route_lookup(const struct ps_route *routes, int n, const struct sockaddr *sa) {
  unsigned char a[16];
  int family;
  unsigned port;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
    memcpy(a, &s4->sin_addr, 4);
    family = AF_INET;
    port = ntohs(s4->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    port = ntohs(s6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
      memcpy(a, s6->sin6_addr.s6_addr + 12, 4);
      family = AF_INET;
    } else {
      memcpy(a, s6->sin6_addr.s6_addr, 16);
      family = AF_INET6;
    }
  } else {
    return PS_DIRECT;
  }
  for (int i = 0; i < n; i++) {
    const struct ps_route *r = &routes[i];
    if (port < r->port_lo || port > r->port_hi) continue;
    if (r->family && (r->family != family || !prefix_match(a, r->addr, r->prefix))) continue;
    return r->action;
  }
  return PS_DIRECT;
}

int ps_parse_hostport(const char *s, struct sockaddr_storage *out, socklen_t *outlen) {
  char buf[128];
  if (!s || strlen(s) >= sizeof buf) return -1;
  strcpy(buf, s);
  char *host = buf, *port;
  if (buf[0] == '[') {
    char *close = strchr(buf, ']');
    if (!close || close[1] != ':') return -1;
    *close = '\0';
    host = buf + 1;
    port = close + 2;
  } else {
    port = strrchr(buf, ':');
    if (!port) return -1;
    *port++ = '\0';
  }
  long p = parse_num(port, 1, 65535);
  if (p < 0) return -1;
  memset(out, 0, sizeof *out);
  struct sockaddr_in *s4 = (struct sockaddr_in *)out;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)out;
  if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons((unsigned short)p);
    *outlen = sizeof *s4;
    return 0;
  }
  if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((unsigned short)p);
    *outlen = sizeof *s6;
    return 0;
  }
  return -1;
}
