/**
 * Address formats: how an announced address is written inside a notice. Each format parses the
 * text a rule captured as `addr` and renders a replacement address in exactly the same syntax.
 */
import { ErrorCode, PortsideError, Result } from '../errors.js';
import { canonicalIp, ipFamily, parseIPv4, parseIPv6, uint32ToIpv4 } from './ip.js';

export const FORMAT_NAMES = ['ftp-hostport', 'pasv-227', 'eprt', 'epsv-229', 'ip-uint32-port', 'host-port'] as const;
export type FormatName = (typeof FORMAT_NAMES)[number];

export interface ParsedAddress {
  /** '' when the format carries no host (epsv-229): the caller uses the control connection's peer. */
  host: string;
  port: number;
  /** 0 when host is ''. */
  family: 0 | 4 | 6;
}

export function isFormatName(s: string): s is FormatName {
  return (FORMAT_NAMES as readonly string[]).includes(s);
}

function parsePort(s: string): number | string {
  if (!/^\d{1,5}$/.test(s)) return `port "${s}" is not a number`;
  const n = Number(s);
  if (n < 1 || n > 65535) return `port ${n} is outside 1-65535`;
  return n;
}

/** h1,h2,h3,h4,p1,p2 as in FTP PORT and the 227 reply (RFC 959). */
function parseHostPort6(text: string): ParsedAddress | string {
  const parts = text.split(',').map((p) => p.trim());
  if (parts.length !== 6) return `expected 6 comma-separated numbers, got ${parts.length}`;
  const nums: number[] = [];
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return `"${p}" is not a number 0-255`;
    const n = Number(p);
    if (n > 255) return `${n} is not a number 0-255`;
    nums.push(n);
  }
  const port = nums[4]! * 256 + nums[5]!;
  if (port === 0) return 'port 0 is not a valid port';
  return { host: nums.slice(0, 4).join('.'), port, family: 4 };
}

/** |1|ipv4|port| or |2|ipv6|port| with any printable delimiter (RFC 2428). */
function parseEprt(text: string): ParsedAddress | string {
  const t = text.trim();
  const d = t[0];
  if (d === undefined || d.charCodeAt(0) < 33 || d.charCodeAt(0) > 126) return 'missing EPRT delimiter';
  const f = t.split(d);
  if (f.length !== 5 || f[0] !== '' || f[4] !== '') return `expected ${d}proto${d}host${d}port${d}`;
  const port = parsePort(f[3]!);
  if (typeof port === 'string') return port;
  if (f[1] === '1') {
    if (!parseIPv4(f[2]!)) return `"${f[2]}" is not an IPv4 address`;
    return { host: f[2]!, port, family: 4 };
  }
  if (f[1] === '2') {
    if (!parseIPv6(f[2]!)) return `"${f[2]}" is not an IPv6 address`;
    return { host: f[2]!, port, family: 6 };
  }
  return `network protocol "${f[1]}" is neither 1 (IPv4) nor 2 (IPv6)`;
}

/** |||port| (RFC 2428 229 reply): no host, the client reuses the control connection's. */
function parseEpsv(text: string): ParsedAddress | string {
  const t = text.trim();
  const d = t[0];
  if (d === undefined || d.charCodeAt(0) < 33 || d.charCodeAt(0) > 126) return 'missing EPSV delimiter';
  const f = t.split(d);
  if (f.length !== 5 || f[0] !== '' || f[1] !== '' || f[2] !== '' || f[4] !== '') return `expected ${d}${d}${d}port${d}`;
  const port = parsePort(f[3]!);
  if (typeof port === 'string') return port;
  return { host: '', port, family: 0 };
}

/** "<ipv4 as decimal uint32> <port>" (IRC DCC). */
function parseUint32Port(text: string): ParsedAddress | string {
  const m = /^\s*(\S+)\s+(\S+)\s*$/.exec(text);
  if (!m) return 'expected "<ip as uint32> <port>"';
  if (!/^\d{1,10}$/.test(m[1]!) || Number(m[1]) > 0xffffffff) return `"${m[1]}" is not an unsigned 32-bit address`;
  const port = parsePort(m[2]!);
  if (typeof port === 'string') return port;
  return { host: uint32ToIpv4(Number(m[1])), port, family: 4 };
}

/** "<ip literal> <port>". */
function parseHostSpacePort(text: string): ParsedAddress | string {
  const m = /^\s*(\S+)\s+(\S+)\s*$/.exec(text);
  if (!m) return 'expected "<ip> <port>"';
  const fam = ipFamily(m[1]!);
  if (fam === 0) return `"${m[1]}" is not an IP address`;
  const port = parsePort(m[2]!);
  if (typeof port === 'string') return port;
  return { host: m[1]!, port, family: fam };
}

/** Parse the captured text; a string result is the reason it was refused. */
export function parseAddress(format: FormatName, text: string): ParsedAddress | string {
  switch (format) {
    case 'ftp-hostport':
    case 'pasv-227':
      return parseHostPort6(text);
    case 'eprt':
      return parseEprt(text);
    case 'epsv-229':
      return parseEpsv(text);
    case 'ip-uint32-port':
      return parseUint32Port(text);
    case 'host-port':
      return parseHostSpacePort(text);
  }
}

function refuse(message: string): PortsideError {
  return new PortsideError(ErrorCode.RULE_REFUSED, message, Result.REFUSED_BY_RULE);
}

/** IPv4 octets of host (IPv4-mapped IPv6 folded), or throw: the format cannot carry IPv6. */
function needV4(format: FormatName, host: string): number[] {
  const v4 = parseIPv4(canonicalIp(host) ?? '');
  if (!v4) throw refuse(`format ${format} can only carry an IPv4 address, not "${host}"`);
  return v4;
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw refuse(`port ${port} is outside 1-65535`);
}

/**
 * Render host:port in the syntax of `original` (the captured text), keeping its surrounding
 * whitespace and, for EPRT/EPSV, its delimiter. Throws PS_ERR_RULE_REFUSED when the format
 * cannot carry the address (e.g. IPv6 into PORT/227/DCC).
 */
export function renderAddress(format: FormatName, original: string, host: string, port: number): string {
  checkPort(port);
  const lead = /^\s*/.exec(original)![0];
  const trail = original.length > lead.length ? /\s*$/.exec(original)![0] : '';
  const d = original.trim()[0] ?? '|';
  let core: string;
  switch (format) {
    case 'ftp-hostport':
    case 'pasv-227': {
      const v4 = needV4(format, host);
      core = [...v4, port >> 8, port & 0xff].join(',');
      break;
    }
    case 'eprt': {
      const canon = canonicalIp(host);
      if (canon === null) throw refuse(`"${host}" is not an IP address`);
      // Keep the family of the new address: IPv4 (also IPv4-mapped IPv6) as |1|, else |2|.
      if (parseIPv4(canon)) core = `${d}1${d}${canon}${d}${port}${d}`;
      else core = `${d}2${d}${host.replace(/^\[(.*)\]$/, '$1')}${d}${port}${d}`;
      break;
    }
    case 'epsv-229':
      core = `${d}${d}${d}${port}${d}`;
      break;
    case 'ip-uint32-port': {
      const v4 = needV4(format, host);
      core = `${((v4[0]! << 24) >>> 0) + (v4[1]! << 16) + (v4[2]! << 8) + v4[3]!} ${port}`;
      break;
    }
    case 'host-port': {
      if (ipFamily(host) === 0) throw refuse(`"${host}" is not an IP address`);
      core = `${host} ${port}`;
      break;
    }
  }
  return lead + core + trail;
}
