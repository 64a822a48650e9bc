/* Remote names for the portside socket hook; see names.h. */
#include "names.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>

static int valid_pattern(const char *p) {
  if (!*p) return 0;
  for (; *p; p++)
    if (!(isalnum((unsigned char)*p) || *p == '.' || *p == '-' || *p == '_' || *p == '*')) return 0;
  return 1;
}

int ps_names_parse(const char *spec, struct ps_names *out, char *err, size_t errlen) {
  out->n = 0;
  if (!spec) return 0;
  const char *s = spec;
  while (*s) {
    size_t len = strcspn(s, ";,\n");
    char entry[PS_NAME_MAX + 2];
    if (len > PS_NAME_MAX) {
      if (err && errlen) snprintf(err, errlen, "name pattern longer than %d characters", PS_NAME_MAX);
      return -1;
    }
    memcpy(entry, s, len);
    entry[len] = '\0';
    /* trim */
    char *a = entry, *b = entry + len;
    while (*a == ' ' || *a == '\t') a++;
    while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r')) *--b = '\0';
    if (*a) {
      if (!valid_pattern(a)) {
        if (err && errlen) snprintf(err, errlen, "bad name pattern: '%s'", a);
        return -1;
      }
      if (out->n == PS_MAX_PATTERNS) {
        if (err && errlen) snprintf(err, errlen, "more than %d name patterns", PS_MAX_PATTERNS);
        return -1;
      }
      strcpy(out->pattern[out->n++], a);
    }
    s += len;
    if (*s) s++;
  }
  return out->n;
}

/* Glob with '*' only, case-insensitive. */
static int glob(const char *p, const char *s) {
  const char *star = NULL, *retry = NULL;
  while (*s) {
    if (*p == '*') { star = p++; retry = s; continue; }
    if (*p && tolower((unsigned char)*p) == tolower((unsigned char)*s)) { p++; s++; continue; }
    if (!star) return 0;
    p = star + 1;
    s = ++retry;
  }
  while (*p == '*') p++;
  return *p == '\0';
}

int ps_names_match(const struct ps_names *p, const char *name) {
  if (!name || !*name || strlen(name) > PS_NAME_MAX) return 0;
  struct in6_addr tmp;
  if (inet_pton(AF_INET, name, &tmp) == 1 || inet_pton(AF_INET6, name, &tmp) == 1) return 0;
  /* A trailing dot (absolute name) matches as without it. */
  char n[PS_NAME_MAX + 1];
  strcpy(n, name);
  size_t l = strlen(n);
  if (l > 1 && n[l - 1] == '.') n[l - 1] = '\0';
  for (int i = 0; i < p->n; i++)
    if (glob(p->pattern[i], n)) return 1;
  return 0;
}

in_addr_t ps_name_addr(unsigned i) {
  return htonl((224u << 24) | (i & 0xffffffu));
}

unsigned ps_name_index(in_addr_t a) {
  unsigned h = ntohl(a);
  return (h >> 24) == 224 ? (h & 0xffffffu) : 0;
}
