/**
 * IP literal parsing without node:net (the rules code stays pure).
 * Rules formats only ever carry IP literals, never host names.
 */

/** Parse a dotted-quad IPv4 literal; null if it is not one. */
export function parseIPv4(s: string): number[] | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return null;
    // Leading zeros are refused: some stacks read them as octal, so they are ambiguous.
    if (p.length > 1 && p[0] === '0') return null;
    const n = Number(p);
    if (n > 255) return null;
    out.push(n);
  }
  return out;
}

/** Parse an IPv6 literal (with optional embedded IPv4 tail) into 8 groups; null if invalid. */
export function parseIPv6(s: string): number[] | null {
  if (s.length === 0 || s.length > 45 || s.includes('%')) return null;
  let tail: number[] = [];
  let head = s;
  const lastColon = s.lastIndexOf(':');
  if (lastColon >= 0 && s.slice(lastColon + 1).includes('.')) {
    const v4 = parseIPv4(s.slice(lastColon + 1));
    if (!v4) return null;
    tail = [(v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!];
    head = s.slice(0, lastColon + 1);
    // "::1.2.3.4" leaves "::", "a::1.2.3.4" leaves "a::", "a:b:...:1.2.3.4" leaves "...:"
    if (head.endsWith(':') && !head.endsWith('::')) head = head.slice(0, -1);
  }
  const dbl = head.indexOf('::');
  if (dbl >= 0 && head.indexOf('::', dbl + 1) >= 0) return null;
  const parseGroups = (t: string): number[] | null => {
    if (t === '') return [];
    const out: number[] = [];
    for (const g of t.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  let groups: number[];
  if (dbl >= 0) {
    const left = parseGroups(head.slice(0, dbl));
    const right = parseGroups(head.slice(dbl + 2));
    if (!left || !right) return null;
    const fill = 8 - tail.length - left.length - right.length;
    if (fill < 1) return null;
    groups = [...left, ...new Array<number>(fill).fill(0), ...right, ...tail];
  } else {
    const g = parseGroups(head);
    if (!g) return null;
    groups = [...g, ...tail];
  }
  return groups.length === 8 ? groups : null;
}

/** 4, 6, or 0 when s is not an IP literal. */
export function ipFamily(s: string): 0 | 4 | 6 {
  if (parseIPv4(s)) return 4;
  if (parseIPv6(s)) return 6;
  return 0;
}

/**
 * Canonical text for comparing addresses: IPv4 dotted quad, IPv4-mapped IPv6 (::ffff:a.b.c.d, as
 * dual-stack sockets report IPv4 peers) folded to IPv4, other IPv6 as 8 full lowercase groups.
 * Returns null for anything that is not an IP literal.
 */
export function canonicalIp(s: string): string | null {
  const v4 = parseIPv4(s);
  if (v4) return v4.join('.');
  const v6 = parseIPv6(s.startsWith('[') && s.endsWith(']') ? s.slice(1, -1) : s);
  if (!v6) return null;
  if (v6.slice(0, 5).every((g) => g === 0) && v6[5] === 0xffff) {
    return [v6[6]! >> 8, v6[6]! & 0xff, v6[7]! >> 8, v6[7]! & 0xff].join('.');
  }
  return v6.map((g) => g.toString(16).padStart(4, '0')).join(':');
}

/** IPv4 literal as an unsigned 32-bit integer (IRC DCC's address form). */
export function ipv4ToUint32(s: string): number | null {
  const v4 = parseIPv4(canonicalIp(s) ?? '');
  if (!v4) return null;
  return ((v4[0]! << 24) >>> 0) + (v4[1]! << 16) + (v4[2]! << 8) + v4[3]!;
}

export function uint32ToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff].join('.');
}
