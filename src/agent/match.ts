/**
 * Destination matching for the client agent's routes (claim 12: per destination, portside,
 * firewall or direct), the outside relay's `clients.allow.destinations`, and the inside relay's
 * `reach`. Pure: no node:net.
 *
 * A pattern is one of
 *   CIDR or address          10.0.0.0/8   10.1.2.3   [fd00::]/8   ::1
 *   host name glob           ftp.intra    *.intra    *
 * optionally followed by `:PORT` or `:LOW-HIGH` (IPv6 then in brackets: `[fd00::]/8:21`).
 */
import { parseIPv4, parseIPv6 } from '../rules/ip.js';

export type Via = 'portside' | 'firewall' | 'direct';

interface Net { family: 4 | 6; bits: bigint; prefix: number }

export interface DestPattern {
  text: string;
  net?: Net;
  /** Lower-case glob compiled to a RegExp (host names only). */
  host?: RegExp;
  ports?: [number, number];
}

function ipBits(s: string): { family: 4 | 6; bits: bigint } | null {
  const v4 = parseIPv4(s);
  if (v4) return { family: 4, bits: v4.reduce((a, b) => (a << 8n) | BigInt(b), 0n) };
  const v6 = parseIPv6(s);
  if (!v6) return null;
  const bits = v6.reduce((a, b) => (a << 16n) | BigInt(b), 0n);
  // ::ffff:a.b.c.d is an IPv4 address for matching purposes.
  if (bits >> 32n === 0xffffn) return { family: 4, bits: bits & 0xffffffffn };
  return { family: 6, bits };
}

/** Parse one pattern; throws Error with a readable message. */
export function parseDestPattern(text: string): DestPattern {
  let rest = text.trim();
  if (!rest) throw new Error('empty destination pattern');
  let ports: [number, number] | undefined;
  let addr: string;
  if (rest.startsWith('[')) {
    const end = rest.indexOf(']');
    if (end < 0) throw new Error(`'${text}': missing ']'`);
    addr = rest.slice(1, end);
    rest = rest.slice(end + 1);
    // [fd00::]/8:21 — the prefix length follows the bracket.
    const m = /^(\/\d{1,3})?(?::(.+))?$/.exec(rest);
    if (!m) throw new Error(`'${text}': expected [ADDR]/BITS:PORT`);
    if (m[1]) addr += m[1];
    if (m[2]) ports = parsePorts(m[2], text);
  } else {
    const colons = rest.split(':').length - 1;
    if (colons === 1) {
      const i = rest.lastIndexOf(':');
      ports = parsePorts(rest.slice(i + 1), text);
      addr = rest.slice(0, i);
    } else addr = rest; // bare IPv6 (no port) or no port at all
  }
  const [a, bitsText] = addr.split('/');
  const ip = ipBits(a!);
  if (ip) {
    const max = ip.family === 4 ? 32 : 128;
    const prefix = bitsText === undefined ? max : Number(bitsText);
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) throw new Error(`'${text}': prefix length must be 0-${max}`);
    return { text, net: { family: ip.family, bits: ip.bits, prefix }, ports };
  }
  if (bitsText !== undefined) throw new Error(`'${text}': not an IP network`);
  if (!/^[A-Za-z0-9*.-]+$/.test(addr)) throw new Error(`'${text}': not an address, network or host name pattern`);
  const re = new RegExp(`^${addr.toLowerCase().replace(/[.]/g, '\\.').replace(/\*/g, '.*')}$`);
  return { text, host: re, ports };
}

function parsePorts(s: string, text: string): [number, number] {
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(s);
  if (!m) throw new Error(`'${text}': bad port '${s}'`);
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo < 1 || hi > 65535 || lo > hi) throw new Error(`'${text}': port out of range`);
  return [lo, hi];
}

/** Does host:port match? Host names match only name globs; IP literals only networks. */
export function matchDest(p: DestPattern, host: string, port?: number): boolean {
  if (p.ports && (port === undefined || port < p.ports[0] || port > p.ports[1])) return false;
  const ip = ipBits(host);
  if (p.net) {
    if (!ip || ip.family !== p.net.family) return false;
    const width = p.net.family === 4 ? 32 : 128;
    const shift = BigInt(width - p.net.prefix);
    return ip.bits >> shift === p.net.bits >> shift;
  }
  // `*` alone matches every destination, addresses included.
  if (p.host!.source === '^.*$') return true;
  return !ip && p.host!.test(host.toLowerCase());
}

export function matchAny(list: readonly DestPattern[], host: string, port?: number): boolean {
  return list.some((p) => matchDest(p, host, port));
}

export interface Route { match: DestPattern; via: Via }

/** First matching route wins; no match goes through portside. */
export function routeFor(routes: readonly Route[], host: string, port: number): Via {
  for (const r of routes) if (matchDest(r.match, host, port)) return r.via;
  return 'portside';
}

/** Loopback or one of the given local addresses (the agent connects back only to its own machine). */
export function isLocalAddress(host: string, own: readonly string[]): boolean {
  const ip = ipBits(host);
  if (!ip) return false;
  if (ip.family === 4 && ip.bits >> 24n === 127n) return true;
  if (ip.family === 6 && ip.bits === 1n) return true;
  return own.some((o) => {
    const x = ipBits(o);
    return x !== null && x.family === ip.family && x.bits === ip.bits;
  });
}
