/*
 * portside socket hook, loaded with LD_PRELOAD by `portside run`.
 *
 * It wraps connect(): a TCP connect() whose destination routes to "portside"
 * (PORTSIDE_ROUTES, see match.h) is made to the portside agent's SOCKS5 server
 * (PORTSIDE_SOCKS) on the same fd instead, followed by a SOCKS5 CONNECT for the
 * original destination. Everything else (bind, listen, accept, UDP, direct
 * destinations) is left alone, so a program's own listening sockets (active-mode
 * FTP) keep working. getpeername() on a hooked fd returns the original
 * destination, as the program expects.
 *
 * Environment:
 *   PORTSIDE_SOCKS            agent address, numeric HOST:PORT or [V6]:PORT
 *   PORTSIDE_ROUTES           route list, first match wins, default direct
 *   PORTSIDE_NAMES            host name patterns the relays resolve (names.h): getaddrinfo()
 *                             (and, for older programs, gethostbyname, gethostbyname2 and
 *                             their _r forms) answers with a stand-in from 224.0.0.0/8,
 *                             connect() to it sends the name in the SOCKS5 CONNECT
 *   PORTSIDE_CONNECT_TIMEOUT  seconds for the whole SOCKS exchange (default 60)
 *   PORTSIDE_HOOK_DEBUG=1     one line per decision on stderr (else silent)
 *
 * SOCKS5 reply to errno (what the program sees from connect()):
 *   01 general failure -> ECONNREFUSED     05 connection refused -> ECONNREFUSED
 *   02 not allowed     -> ECONNREFUSED     06 TTL expired        -> ETIMEDOUT
 *   03 net unreachable -> ENETUNREACH      07 command unsupported-> EOPNOTSUPP
 *   04 host unreachable-> EHOSTUNREACH     08 atyp unsupported   -> EAFNOSUPPORT
 *   no reply in time -> ETIMEDOUT; agent closed or spoke garbage -> ECONNREFUSED;
 *   agent not reachable -> the errno of that connect (usually ECONNREFUSED).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "match.h"
#include "names.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_ROUTES 256

static int (*real_connect)(int, const struct sockaddr *, socklen_t);
static int (*real_close)(int);
static int (*real_getpeername)(int, struct sockaddr *, socklen_t *);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static int (*real_getaddrinfo)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
static void (*real_freeaddrinfo)(struct addrinfo *);
static struct hostent *(*real_gethostbyname)(const char *);
static struct hostent *(*real_gethostbyname2)(const char *, int);
static int (*real_gethostbyname_r)(const char *, struct hostent *, char *, size_t, struct hostent **, int *);
static int (*real_gethostbyname2_r)(const char *, int, struct hostent *, char *, size_t, struct hostent **, int *);

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int debug;
static int have_agent;
static struct sockaddr_storage agent;
static socklen_t agent_len;
static struct ps_route routes[MAX_ROUTES];
static int nroutes;
static int timeout_ms = 60000;
static struct ps_names name_patterns;
static void names_init(void);

static void dbg(const char *fmt, ...) {
  if (!debug) return;
  char buf[512];
  int saved = errno;
  int n = snprintf(buf, sizeof buf, "portside-hook[%d]: ", (int)getpid());
  va_list ap;
  va_start(ap, fmt);
  n += vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
  buf[n++] = '\n';
  ssize_t w = write(2, buf, (size_t)n);
  (void)w;
  errno = saved;
}

static void init(void) {
  real_connect = dlsym(RTLD_NEXT, "connect");
  real_close = dlsym(RTLD_NEXT, "close");
  real_getpeername = dlsym(RTLD_NEXT, "getpeername");
  real_dup = dlsym(RTLD_NEXT, "dup");
  real_dup2 = dlsym(RTLD_NEXT, "dup2");
  real_dup3 = dlsym(RTLD_NEXT, "dup3");
  real_getaddrinfo = dlsym(RTLD_NEXT, "getaddrinfo");
  real_freeaddrinfo = dlsym(RTLD_NEXT, "freeaddrinfo");
  real_gethostbyname = dlsym(RTLD_NEXT, "gethostbyname");
  real_gethostbyname2 = dlsym(RTLD_NEXT, "gethostbyname2");
  real_gethostbyname_r = dlsym(RTLD_NEXT, "gethostbyname_r");
  real_gethostbyname2_r = dlsym(RTLD_NEXT, "gethostbyname2_r");
  const char *d = getenv("PORTSIDE_HOOK_DEBUG");
  debug = d && *d && strcmp(d, "0") != 0;
  const char *s = getenv("PORTSIDE_SOCKS");
  if (s && *s) {
    if (ps_parse_hostport(s, &agent, &agent_len) == 0) have_agent = 1;
    else dbg("PORTSIDE_SOCKS '%s' is not a numeric HOST:PORT; nothing is hooked", s);
  }
  char err[300];
  int n = ps_routes_parse(getenv("PORTSIDE_ROUTES"), routes, MAX_ROUTES, err, sizeof err);
  if (n < 0) {
    /* A broken route list must not send traffic somewhere unintended: hook nothing. */
    dbg("PORTSIDE_ROUTES: %s; nothing is hooked", err);
    have_agent = 0;
    n = 0;
  }
  nroutes = n;
  if (ps_names_parse(getenv("PORTSIDE_NAMES"), &name_patterns, err, sizeof err) < 0) {
    dbg("PORTSIDE_NAMES: %s; no names are resolved by the relays", err);
    name_patterns.n = 0;
  }
  if (have_agent && name_patterns.n) names_init();
  const char *t = getenv("PORTSIDE_CONNECT_TIMEOUT");
  if (t && atoi(t) > 0) timeout_ms = atoi(t) * 1000;
  dbg("loaded: agent %s, %d routes, %d name patterns", have_agent ? s : "(none)", nroutes, name_patterns.n);
}

static void ensure_init(void) { pthread_once(&init_once, init); }

__attribute__((constructor)) static void ctor(void) { ensure_init(); }

/* ---- names the relays resolve: stand-in address -> name ---------------------
 * Shared with forked children (MAP_SHARED): a program may resolve in a child process
 * (lftp does) and connect in its parent. An exec'd program starts a table of its own. */

#define NAME_SLOTS 4096
struct name_table {
  pthread_mutex_t lock;
  unsigned n;
  char name[NAME_SLOTS][PS_NAME_MAX + 1];
};
static struct name_table *names_tab;

static void names_init(void) {
  void *m = mmap(NULL, sizeof *names_tab, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) { dbg("name table: %s; no names are resolved by the relays", strerror(errno)); return; }
  struct name_table *t = m;
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutex_init(&t->lock, &a);
  pthread_mutexattr_destroy(&a);
  names_tab = t;
}

/* The table index for name (1-based), added if new; 0 when the table is full. */
static unsigned name_index(const char *name) {
  unsigned r = 0;
  pthread_mutex_lock(&names_tab->lock);
  for (unsigned i = 0; i < names_tab->n && !r; i++)
    if (strcasecmp(names_tab->name[i], name) == 0) r = i + 1;
  if (!r && names_tab->n < NAME_SLOTS) {
    snprintf(names_tab->name[names_tab->n], PS_NAME_MAX + 1, "%s", name);
    r = ++names_tab->n;
  }
  pthread_mutex_unlock(&names_tab->lock);
  return r;
}

/* The name a stand-in address (IPv4, or IPv4-mapped IPv6) stands for, into out; 0 if none. */
static int name_for(const struct sockaddr *sa, char *out) {
  if (!names_tab) return 0;
  in_addr_t a;
  if (sa->sa_family == AF_INET) a = ((const struct sockaddr_in *)sa)->sin_addr.s_addr;
  else if (IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)sa)->sin6_addr))
    memcpy(&a, ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr + 12, 4);
  else return 0;
  unsigned i = ps_name_index(a);
  if (!i) return 0;
  int ok = 0;
  pthread_mutex_lock(&names_tab->lock);
  if (i <= names_tab->n) { strcpy(out, names_tab->name[i - 1]); ok = 1; }
  pthread_mutex_unlock(&names_tab->lock);
  return ok;
}

/* ---- table of hooked fds: fd -> original destination ---------------------- */

struct hooked {
  int fd;
  dev_t dev;   /* the socket's identity, so a stale entry (fd closed behind */
  ino_t ino;   /* our back, e.g. inside libc) is never reported */
  struct sockaddr_storage dst;
  socklen_t dst_len;
  struct hooked *next;
};

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct hooked *table;

static struct hooked **find_locked(int fd) {
  for (struct hooked **p = &table; *p; p = &(*p)->next)
    if ((*p)->fd == fd) return p;
  return NULL;
}

static void forget(int fd) {
  pthread_mutex_lock(&table_lock);
  struct hooked **p = find_locked(fd);
  if (p) {
    struct hooked *h = *p;
    *p = h->next;
    free(h);
  }
  pthread_mutex_unlock(&table_lock);
}

static void remember(int fd, const struct sockaddr *dst, socklen_t len) {
  struct stat st;
  if (fstat(fd, &st) != 0) return;
  struct hooked *h = calloc(1, sizeof *h);
  if (!h) return;
  h->fd = fd;
  h->dev = st.st_dev;
  h->ino = st.st_ino;
  if (len > sizeof h->dst) len = sizeof h->dst;
  memcpy(&h->dst, dst, len);
  h->dst_len = len;
  forget(fd);
  pthread_mutex_lock(&table_lock);
  h->next = table;
  table = h;
  pthread_mutex_unlock(&table_lock);
}

/* Copy fd's entry, if still valid, into out. 1 if found. */
static int lookup(int fd, struct hooked *out) {
  struct stat st;
  int found = 0, stale = 0;
  if (fstat(fd, &st) != 0) return 0;
  pthread_mutex_lock(&table_lock);
  struct hooked **p = find_locked(fd);
  if (p) {
    if ((*p)->dev == st.st_dev && (*p)->ino == st.st_ino) { *out = **p; found = 1; }
    else stale = 1;
  }
  pthread_mutex_unlock(&table_lock);
  if (stale) forget(fd);
  return found;
}

static void copy_entry(int from, int to) {
  struct hooked h;
  if (lookup(from, &h)) remember(to, (struct sockaddr *)&h.dst, h.dst_len);
}

/* ---- SOCKS5 exchange ------------------------------------------------------- */

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Wait for events on a non-blocking fd until deadline. 0 ready, else errno value. */
static int wait_fd(int fd, short events, long deadline) {
  for (;;) {
    long left = deadline - now_ms();
    if (left <= 0) return ETIMEDOUT;
    struct pollfd p = {.fd = fd, .events = events};
    int r = poll(&p, 1, (int)left);
    if (r > 0) return 0;
    if (r == 0) return ETIMEDOUT;
    if (errno != EINTR) return errno;
  }
}

static int send_all(int fd, const unsigned char *b, size_t n, long deadline) {
  while (n) {
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    if (w > 0) { b += w; n -= (size_t)w; continue; }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int e = wait_fd(fd, POLLOUT, deadline);
      if (e) return e;
      continue;
    }
    return ECONNREFUSED;
  }
  return 0;
}

/* Read exactly n bytes, never more: whatever follows belongs to the program. */
static int recv_exact(int fd, unsigned char *b, size_t n, long deadline) {
  while (n) {
    ssize_t r = recv(fd, b, n, 0);
    if (r > 0) { b += r; n -= (size_t)r; continue; }
    if (r == 0) return ECONNREFUSED; /* the agent hung up without a reply */
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      int e = wait_fd(fd, POLLIN, deadline);
      if (e) return e;
      continue;
    }
    return ECONNREFUSED;
  }
  return 0;
}

static int reply_errno(unsigned char rep) {
  switch (rep) {
    case 0x03: return ENETUNREACH;
    case 0x04: return EHOSTUNREACH;
    case 0x06: return ETIMEDOUT;
    case 0x07: return EOPNOTSUPP;
    case 0x08: return EAFNOSUPPORT;
    default: return ECONNREFUSED; /* 01 general, 02 not allowed by rules, 05 refused */
  }
}

/* Connect fd (already non-blocking) to the agent. 0 or an errno value. */
static int connect_agent(int fd, int family, long deadline) {
  struct sockaddr_storage a;
  socklen_t alen = agent_len;
  memcpy(&a, &agent, sizeof a);
  if (family != agent.ss_family) {
    if (family == AF_INET6 && agent.ss_family == AF_INET) {
      /* An IPv6 socket reaches an IPv4 agent at its v4-mapped address; that needs
       * V6ONLY off, which may still be changed since the socket is not connected. */
      struct sockaddr_in6 m = {.sin6_family = AF_INET6, .sin6_port = ((struct sockaddr_in *)&agent)->sin_port};
      m.sin6_addr.s6_addr[10] = m.sin6_addr.s6_addr[11] = 0xff;
      memcpy(m.sin6_addr.s6_addr + 12, &((struct sockaddr_in *)&agent)->sin_addr, 4);
      int v6only = 0;
      socklen_t l = sizeof v6only;
      if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &l) == 0 && v6only) {
        int off = 0;
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) != 0)
          dbg("fd %d: IPV6_V6ONLY is set and cannot be cleared: %s", fd, strerror(errno));
      }
      memcpy(&a, &m, sizeof m);
      alen = sizeof m;
    } else {
      /* An IPv4 socket cannot reach an IPv6 agent; give the agent an IPv4 address. */
      dbg("fd %d: IPv4 socket but the agent address is IPv6", fd);
      return EAFNOSUPPORT;
    }
  }
  if (real_connect(fd, (struct sockaddr *)&a, alen) == 0) return 0;
  if (errno != EINPROGRESS && errno != EINTR) return errno;
  int e = wait_fd(fd, POLLOUT, deadline);
  if (e) return e;
  int soerr = 0;
  socklen_t l = sizeof soerr;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l) != 0) return errno;
  return soerr;
}

static void fmt_addr(const struct sockaddr *sa, char *buf, size_t len) {
  char host[INET6_ADDRSTRLEN] = "?";
  unsigned port = 0;
  if (sa->sa_family == AF_INET) {
    inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof host);
    port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
    snprintf(buf, len, "%s:%u", host, port);
  } else {
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof host);
    port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    snprintf(buf, len, "[%s]:%u", host, port);
  }
}

/* The SOCKS5 CONNECT request for an address (req: 22 bytes of room). Returns its length. */
static size_t request_for_addr(const struct sockaddr *dst, unsigned char *req) {
  req[0] = 5; req[1] = 1; req[2] = 0;
  if (dst->sa_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)dst;
    req[3] = 1;
    memcpy(req + 4, &s4->sin_addr, 4);
    memcpy(req + 8, &s4->sin_port, 2);
    return 10;
  }
  const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)dst;
  if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) { /* really an IPv4 destination */
    req[3] = 1;
    memcpy(req + 4, s6->sin6_addr.s6_addr + 12, 4);
    memcpy(req + 8, &s6->sin6_port, 2);
    return 10;
  }
  req[3] = 4;
  memcpy(req + 4, &s6->sin6_addr, 16);
  memcpy(req + 20, &s6->sin6_port, 2);
  return 22;
}

/* The SOCKS5 CONNECT request for a name (ATYP 3) and the port of dst (req: 262 bytes of room). */
static size_t request_for_name(const char *name, const struct sockaddr *dst, unsigned char *req) {
  size_t l = strlen(name);
  req[0] = 5; req[1] = 1; req[2] = 0; req[3] = 3; req[4] = (unsigned char)l;
  memcpy(req + 5, name, l);
  const void *port = dst->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)dst)->sin_port
                                              : (const void *)&((const struct sockaddr_in6 *)dst)->sin6_port;
  memcpy(req + 5 + l, port, 2);
  return 5 + l + 2;
}

/* Whole exchange on fd with a prepared CONNECT request. 0 or an errno value. */
static int socks_connect(int fd, const unsigned char *req, size_t rlen, int family) {
  long deadline = now_ms() + timeout_ms;
  int e = connect_agent(fd, family, deadline);
  if (e) { dbg("fd %d: agent not reachable: %s", fd, strerror(e)); return e; }

  static const unsigned char hello[3] = {5, 1, 0}; /* v5, one method: no auth */
  unsigned char rsp[22];
  if ((e = send_all(fd, hello, sizeof hello, deadline)) ||
      (e = recv_exact(fd, rsp, 2, deadline)))
    return e;
  if (rsp[0] != 5 || rsp[1] != 0) {
    dbg("fd %d: agent refused the greeting (%02x %02x)", fd, rsp[0], rsp[1]);
    return ECONNREFUSED;
  }

  if ((e = send_all(fd, req, rlen, deadline)) || (e = recv_exact(fd, rsp, 4, deadline))) return e;
  if (rsp[0] != 5) { dbg("fd %d: agent reply is not SOCKS5", fd); return ECONNREFUSED; }
  if (rsp[1] != 0) {
    e = reply_errno(rsp[1]);
    dbg("fd %d: agent replied %02x -> %s", fd, rsp[1], strerror(e));
    return e;
  }
  /* Skip the bound address (BND.ADDR, BND.PORT). */
  size_t skip;
  unsigned char l1;
  if (rsp[3] == 1) skip = 4 + 2;
  else if (rsp[3] == 4) skip = 16 + 2;
  else if (rsp[3] == 3) {
    if ((e = recv_exact(fd, &l1, 1, deadline))) return e;
    skip = (size_t)l1 + 2;
  } else { dbg("fd %d: bad address type in reply", fd); return ECONNREFUSED; }
  unsigned char junk[258];
  return recv_exact(fd, junk, skip, deadline);
}

/* ---- wrapped calls ---------------------------------------------------------- */

EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len) {
  ensure_init();
  if (!have_agent || !addr || (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
    return real_connect(fd, addr, len);
  if ((addr->sa_family == AF_INET && len < sizeof(struct sockaddr_in)) ||
      (addr->sa_family == AF_INET6 && len < sizeof(struct sockaddr_in6)))
    return real_connect(fd, addr, len);

  int type = 0, proto = 0, family = 0;
  socklen_t l = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) != 0 || type != SOCK_STREAM)
    return real_connect(fd, addr, len);
  l = sizeof proto;
  if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &l) == 0 && proto != IPPROTO_TCP)
    return real_connect(fd, addr, len);
  l = sizeof family;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &l) != 0 || family != addr->sa_family)
    return real_connect(fd, addr, len); /* the kernel reports the mismatch */

  char where[PS_NAME_MAX + 16];
  char name[PS_NAME_MAX + 1];
  int by_name = name_for(addr, name);
  if (by_name) snprintf(where, sizeof where, "%s:%u (a name the relays resolve)", name,
                        ntohs(addr->sa_family == AF_INET ? ((const struct sockaddr_in *)addr)->sin_port : ((const struct sockaddr_in6 *)addr)->sin6_port));
  else fmt_addr(addr, where, sizeof where);
  if (!by_name && ps_route_lookup(routes, nroutes, addr) != PS_PORTSIDE) {
    dbg("fd %d: %s direct", fd, where);
    return real_connect(fd, addr, len);
  }

  /* A second connect() on a socket we already connected: say so, as the kernel would. */
  struct hooked h;
  if (lookup(fd, &h)) {
    struct sockaddr_storage peer;
    socklen_t pl = sizeof peer;
    if (real_getpeername(fd, (struct sockaddr *)&peer, &pl) == 0) {
      errno = EISCONN;
      return -1;
    }
  }

  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return -1;
  /* Do the exchange non-blocking with our own deadline, whatever the program chose. */
  if (!(flags & O_NONBLOCK)) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  unsigned char req[5 + PS_NAME_MAX + 2];
  size_t rlen = by_name ? request_for_name(name, addr, req) : request_for_addr(addr, req);
  int e = socks_connect(fd, req, rlen, family);
  if (!(flags & O_NONBLOCK)) fcntl(fd, F_SETFL, flags);

  if (e) {
    dbg("fd %d: %s via portside failed: %s", fd, where, strerror(e));
    errno = e;
    return -1;
  }
  remember(fd, addr, len);
  dbg("fd %d: %s via portside%s", fd, where, (flags & O_NONBLOCK) ? " (non-blocking: EINPROGRESS)" : " (blocking)");
  if (flags & O_NONBLOCK) {
    /* The program expects a TCP connect in progress: it will poll for writability
     * (immediately true) and read SO_ERROR (0). */
    errno = EINPROGRESS;
    return -1;
  }
  return 0;
}

EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *len) {
  ensure_init();
  struct hooked h;
  if (addr && len && lookup(fd, &h)) {
    /* Only while the socket really is connected (to the agent). */
    struct sockaddr_storage peer;
    socklen_t pl = sizeof peer;
    if (real_getpeername(fd, (struct sockaddr *)&peer, &pl) != 0) return -1;
    socklen_t n = *len < h.dst_len ? *len : h.dst_len;
    memcpy(addr, &h.dst, n);
    *len = h.dst_len;
    return 0;
  }
  return real_getpeername(fd, addr, len);
}

EXPORT int close(int fd) {
  ensure_init();
  /* Unlocked peek: the common case (nothing hooked) stays a plain close. */
  if (table) forget(fd);
  return real_close(fd);
}

EXPORT int dup(int fd) {
  ensure_init();
  int n = real_dup(fd);
  if (n >= 0 && table) copy_entry(fd, n);
  return n;
}

EXPORT int dup2(int fd, int nfd) {
  ensure_init();
  int r = real_dup2(fd, nfd);
  if (r >= 0 && table && fd != nfd) { forget(nfd); copy_entry(fd, nfd); }
  return r;
}

EXPORT int dup3(int fd, int nfd, int flags) {
  ensure_init();
  int r = real_dup3(fd, nfd, flags);
  if (r >= 0 && table) { forget(nfd); copy_entry(fd, nfd); }
  return r;
}

/* ---- names the relays resolve: getaddrinfo ----------------------------------- */

/* One answer of ours: the addrinfo and its address in one block, on a list so that
 * freeaddrinfo() knows it from libc's. */
struct stand_in {
  struct addrinfo ai;
  union { struct sockaddr_in v4; struct sockaddr_in6 v6; } sa;
  char canon[PS_NAME_MAX + 1];
  struct stand_in *next;
};
static pthread_mutex_t stand_in_lock = PTHREAD_MUTEX_INITIALIZER;
static struct stand_in *stand_ins;

EXPORT int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res) {
  ensure_init();
  int flags = hints ? hints->ai_flags : 0, family = hints ? hints->ai_family : AF_UNSPEC;
  int socktype = hints ? hints->ai_socktype : 0, protocol = hints ? hints->ai_protocol : 0;
  if (!names_tab || !node || !res || (flags & AI_NUMERICHOST) ||
      (family != AF_UNSPEC && family != AF_INET && family != AF_INET6) ||
      (socktype != 0 && socktype != SOCK_STREAM) || (protocol != 0 && protocol != IPPROTO_TCP) ||
      !ps_names_match(&name_patterns, node))
    return real_getaddrinfo(node, service, hints, res);
  unsigned port = 0;
  if (service && *service) {
    char *end;
    long v = strtol(service, &end, 10);
    if (!*end && v >= 0 && v <= 65535) port = (unsigned)v;
    else if (flags & AI_NUMERICSERV) return EAI_NONAME;
    else {
      struct servent *se = getservbyname(service, "tcp");
      if (!se) return EAI_SERVICE;
      port = ntohs((unsigned short)se->s_port);
    }
  }
  unsigned i = name_index(node);
  if (!i) { dbg("name table full: %s resolved here", node); return real_getaddrinfo(node, service, hints, res); }
  struct stand_in *f = calloc(1, sizeof *f);
  if (!f) return EAI_MEMORY;
  f->ai.ai_flags = flags;
  f->ai.ai_socktype = SOCK_STREAM;
  f->ai.ai_protocol = IPPROTO_TCP;
  in_addr_t a = ps_name_addr(i);
  if (family == AF_INET6) { /* an IPv6-only caller gets the stand-in IPv4-mapped */
    f->sa.v6.sin6_family = AF_INET6;
    f->sa.v6.sin6_port = htons((unsigned short)port);
    f->sa.v6.sin6_addr.s6_addr[10] = f->sa.v6.sin6_addr.s6_addr[11] = 0xff;
    memcpy(f->sa.v6.sin6_addr.s6_addr + 12, &a, 4);
    f->ai.ai_family = AF_INET6;
    f->ai.ai_addrlen = sizeof f->sa.v6;
  } else {
    f->sa.v4.sin_family = AF_INET;
    f->sa.v4.sin_port = htons((unsigned short)port);
    f->sa.v4.sin_addr.s_addr = a;
    f->ai.ai_family = AF_INET;
    f->ai.ai_addrlen = sizeof f->sa.v4;
  }
  f->ai.ai_addr = (struct sockaddr *)&f->sa;
  if (flags & AI_CANONNAME) {
    snprintf(f->canon, sizeof f->canon, "%s", node);
    f->ai.ai_canonname = f->canon;
  }
  pthread_mutex_lock(&stand_in_lock);
  f->next = stand_ins;
  stand_ins = f;
  pthread_mutex_unlock(&stand_in_lock);
  char shown[INET6_ADDRSTRLEN + 8];
  fmt_addr(f->ai.ai_addr, shown, sizeof shown);
  dbg("getaddrinfo %s: %s, a stand-in (the relays resolve the name)", node, shown);
  *res = &f->ai;
  return 0;
}

EXPORT void freeaddrinfo(struct addrinfo *ai) {
  ensure_init();
  if (ai && stand_ins) {
    pthread_mutex_lock(&stand_in_lock);
    for (struct stand_in **p = &stand_ins; *p; p = &(*p)->next) {
      if (&(*p)->ai == ai) {
        struct stand_in *f = *p;
        *p = f->next;
        pthread_mutex_unlock(&stand_in_lock);
        free(f);
        return;
      }
    }
    pthread_mutex_unlock(&stand_in_lock);
  }
  real_freeaddrinfo(ai);
}

/* ---- names the relays resolve: gethostbyname and friends ------------------- */

/* Whether name is one of ours (a pattern in PORTSIDE_NAMES, not an address literal). */
static int ours(const char *name, int af) {
  ensure_init();
  struct in6_addr tmp;
  return names_tab && name && (af == AF_INET || af == AF_INET6) && inet_pton(AF_INET, name, &tmp) != 1 &&
         inet_pton(AF_INET6, name, &tmp) != 1 && ps_names_match(&name_patterns, name);
}

/* Fill h with name's stand-in (IPv4, or IPv4-mapped for AF_INET6), everything it points to in
 * buf. 0, ERANGE (buf too small) or EAGAIN (name table full: resolve it here instead). */
static int stand_in_host(const char *name, int af, struct hostent *h, char *buf, size_t buflen) {
  size_t nlen = strlen(name) + 1, alen = af == AF_INET6 ? 16 : 4;
  /* pointers first (aligned, as the caller's buf may not be): aliases {NULL}, addresses
   * {addr, NULL}; then the address, the name */
  size_t pad = (size_t)(-(uintptr_t)buf & (sizeof(char *) - 1));
  size_t need = pad + 3 * sizeof(char *) + 16 + nlen;
  if (buflen < need) return ERANGE;
  buf += pad;
  unsigned i = name_index(name);
  if (!i) return EAGAIN;
  in_addr_t a = ps_name_addr(i);
  char **ptrs = (char **)buf;
  unsigned char *addr = (unsigned char *)buf + 3 * sizeof(char *);
  char *copy = (char *)addr + 16;
  memset(addr, 0, 16);
  if (af == AF_INET6) { addr[10] = addr[11] = 0xff; memcpy(addr + 12, &a, 4); }
  else memcpy(addr, &a, 4);
  memcpy(copy, name, nlen);
  ptrs[0] = NULL;
  ptrs[1] = (char *)addr;
  ptrs[2] = NULL;
  h->h_name = copy;
  h->h_aliases = ptrs;
  h->h_addrtype = af;
  h->h_length = (int)alen;
  h->h_addr_list = ptrs + 1;
  dbg("gethostbyname %s: a stand-in (the relays resolve the name)", name);
  return 0;
}

static __thread struct hostent host_static;
static __thread char host_buf[4 * sizeof(char *) + 16 + PS_NAME_MAX + 1];

EXPORT struct hostent *gethostbyname2(const char *name, int af) {
  if (!ours(name, af) || strlen(name) > PS_NAME_MAX || stand_in_host(name, af, &host_static, host_buf, sizeof host_buf) != 0)
    return real_gethostbyname2(name, af);
  return &host_static;
}

EXPORT struct hostent *gethostbyname(const char *name) {
  if (!ours(name, AF_INET) || strlen(name) > PS_NAME_MAX || stand_in_host(name, AF_INET, &host_static, host_buf, sizeof host_buf) != 0)
    return real_gethostbyname(name);
  return &host_static;
}

EXPORT int gethostbyname2_r(const char *name, int af, struct hostent *ret, char *buf, size_t buflen, struct hostent **result, int *h_errnop) {
  if (!ours(name, af) || strlen(name) > PS_NAME_MAX) return real_gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop);
  int rc = stand_in_host(name, af, ret, buf, buflen);
  if (rc == EAGAIN) return real_gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop);
  if (rc) { /* as glibc: the caller grows buf and calls again */
    *result = NULL;
    if (h_errnop) *h_errnop = NETDB_INTERNAL;
    errno = ERANGE;
    return ERANGE;
  }
  *result = ret;
  return 0;
}

EXPORT int gethostbyname_r(const char *name, struct hostent *ret, char *buf, size_t buflen, struct hostent **result, int *h_errnop) {
  if (!ours(name, AF_INET) || strlen(name) > PS_NAME_MAX) return real_gethostbyname_r(name, ret, buf, buflen, result, h_errnop);
  return gethostbyname2_r(name, AF_INET, ret, buf, buflen, result, h_errnop);
}
