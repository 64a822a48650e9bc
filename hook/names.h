/*
 * Names the relays resolve (remote DNS, as proxychains' proxy_dns): for a host name matching
 * PORTSIDE_NAMES, the hook's getaddrinfo() answers with a stand-in IPv4 address from 224.0.0.0/8
 * (multicast: never a TCP destination of its own), remembers which name it stands for, and a
 * connect() to it becomes a SOCKS5 CONNECT for the name. The name is then resolved by the inside
 * relay, on the network where it means something. Kept apart from the hook so a test driver
 * (test-match.c) can exercise it without LD_PRELOAD.
 */
#ifndef PORTSIDE_NAMES_H
#define PORTSIDE_NAMES_H

#include <netinet/in.h>
#include <stddef.h>

#define PS_NAME_MAX 255
#define PS_MAX_PATTERNS 64

struct ps_names {
  int n;
  char pattern[PS_MAX_PATTERNS][PS_NAME_MAX + 1];
};

/* Parse "PATTERN;PATTERN…" (',' also accepted): host names, '*' matching any run of characters
 * ("*.intra", "ftp.intra"). Returns the count, or -1 with err naming the bad entry. */
int ps_names_parse(const char *spec, struct ps_names *out, char *err, size_t errlen);

/* Does name (not a numeric address) match one of the patterns? Case-insensitive. */
int ps_names_match(const struct ps_names *p, const char *name);

/* The stand-in address for table index i (1-based): 224.(i>>16).(i>>8).(i), network order. */
in_addr_t ps_name_addr(unsigned i);
/* The table index a stand-in address carries, or 0 if it is not one. */
unsigned ps_name_index(in_addr_t a);

#endif
