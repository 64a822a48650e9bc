/**
 * SOCKS5 (RFC 1928) with username/password (RFC 1929), both ends, as the client agent and the
 * outside relay's client port need them: step by step (the outside relay answers the password
 * only once the firewall has), with a deadline on every read, and any bytes read past the
 * handshake handed back to the caller.
 */
import type { Duplex, Readable } from 'node:stream';
import { ErrorCode, PortsideError, Result } from '../errors.js';

/** SOCKS5 reply codes (RFC 1928 §6) and the ones portside adds in the unassigned range. */
export const Rep = {
  SUCCEEDED: 0x00,
  GENERAL_FAILURE: 0x01,
  NOT_ALLOWED: 0x02,
  NETWORK_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  CONNECTION_REFUSED: 0x05,
  TTL_EXPIRED: 0x06,
  COMMAND_NOT_SUPPORTED: 0x07,
  ADDRESS_NOT_SUPPORTED: 0x08,
  /** portside: the firewall refused the request (its rules), as opposed to our own policy (0x02). */
  FIREWALL_REFUSED: 0x0a,
  /** portside: the outside relay could not reach the firewall for authentication. */
  FIREWALL_UNREACHABLE: 0x0b,
  /** portside: the outside relay is shutting down (draining) and takes no new connections on this session. */
  SHUTTING_DOWN: 0x0c,
} as const;

/**
 * portside's SOCKS5 command (private range, RFC 1928 leaves 0x80+ unassigned): CONNECT plus a
 * back-connect offer for active-mode dynamic ports (docs/client.md). After DST.ADDR/DST.PORT come
 * the agent's back-connect port (2 bytes), a token for this connection (16 bytes) and the SHA-256
 * of the agent's back-connect certificate (32 bytes).
 */
export const CMD_CONNECT_BACK = 0x81;
export const BACK_OFFER_LEN = 2 + 16 + 32;

export interface BackOffer { port: number; token: Buffer; fingerprint: string }

export function encodeBackOffer(o: BackOffer): Buffer {
  const b = Buffer.alloc(BACK_OFFER_LEN);
  b.writeUInt16BE(o.port, 0);
  o.token.copy(b, 2, 0, 16);
  Buffer.from(o.fingerprint, 'hex').copy(b, 18, 0, 32);
  return b;
}

export function decodeBackOffer(b: Buffer): BackOffer {
  return { port: b.readUInt16BE(0), token: Buffer.from(b.subarray(2, 18)), fingerprint: b.subarray(18, 50).toString('hex') };
}

/** Reads exactly what a handshake needs from a socket, with a deadline. */
export class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  private want: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  /** Why no more bytes will come; the error is made only if a read is refused by it (stack traces cost). */
  private endReason: (() => Error) | null = null;
  private endError: Error | null = null;
  /** Bytes read so far (0: the peer never spoke). */
  received = 0;
  private readonly onData = (b: Buffer) => {
    this.received += b.length;
    this.buf = this.buf.length ? Buffer.concat([this.buf, b]) : b;
    if (this.buf.length > 4096) this.fail(() => new PortsideError(ErrorCode.PROTOCOL, 'SOCKS5 handshake too long', Result.PROTOCOL_ERROR));
    this.serve();
  };
  private readonly onEnd = () => this.fail(() => new PortsideError(ErrorCode.CONNECT_FAILED, 'peer closed during the SOCKS5 handshake', Result.CONNECTION_REFUSED));
  private readonly onError = (e: Error) => this.fail(() => new PortsideError(ErrorCode.CONNECT_FAILED, `during the SOCKS5 handshake: ${e.message}`, Result.CONNECTION_REFUSED, { cause: e }));

  constructor(private readonly sock: Readable) {
    sock.on('data', this.onData);
    sock.on('end', this.onEnd);
    sock.on('close', this.onEnd);
    sock.on('error', this.onError);
  }

  read(n: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.want = { n, resolve, reject };
      this.serve();
    });
  }

  async byte(): Promise<number> {
    return (await this.read(1))[0]!;
  }

  private serve(): void {
    const w = this.want;
    if (!w) return;
    if (this.buf.length >= w.n) {
      this.want = null;
      const out = this.buf.subarray(0, w.n);
      this.buf = this.buf.subarray(w.n);
      w.resolve(out);
    } else if (this.endReason) {
      this.want = null;
      w.reject((this.endError ??= this.endReason()));
    }
  }

  private fail(reason: () => Error): void {
    this.endReason ??= reason;
    this.serve();
  }

  /** Bytes read past what the handshake asked for. */
  get pending(): number {
    return this.buf.length;
  }

  /** Stop reading; bytes that arrived past the handshake are pushed back onto the socket. */
  release(): void {
    const rest = this.take();
    if (rest.length) this.sock.unshift(rest);
  }

  /** Stop reading (the socket is left paused) and hand back the bytes read past the handshake. */
  take(): Buffer {
    this.sock.off('data', this.onData);
    this.sock.off('end', this.onEnd);
    this.sock.off('close', this.onEnd);
    this.sock.off('error', this.onError);
    this.sock.pause();
    const rest = this.buf;
    this.buf = Buffer.alloc(0);
    return rest;
  }
}

/** Race a promise against a deadline. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      t = setTimeout(() => reject(new PortsideError(ErrorCode.TIMEOUT, `${what} timed out after ${ms} ms`, Result.TIMEOUT)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

export function encodeAddr(host: string, port: number): Buffer {
  let a: Buffer;
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  if (v4) a = Buffer.from([1, ...v4.slice(1).map(Number)]);
  else if (host.includes(':')) a = Buffer.concat([Buffer.of(4), ipv6Bytes(host)]);
  else {
    const h = Buffer.from(host, 'utf8');
    if (h.length > 255) throw new PortsideError(ErrorCode.PROTOCOL, 'host name longer than 255 bytes', Result.PROTOCOL_ERROR);
    a = Buffer.concat([Buffer.of(3, h.length), h]);
  }
  const p = Buffer.alloc(2);
  p.writeUInt16BE(port);
  return Buffer.concat([a, p]);
}

function ipv6Bytes(s: string): Buffer {
  const [head, tail] = s.split('::') as [string, string | undefined];
  const parse = (t: string | undefined) => (t ? t.split(':') : []).flatMap((g) => {
    if (g.includes('.')) {
      const b = g.split('.').map(Number);
      return [(b[0]! << 8) | b[1]!, (b[2]! << 8) | b[3]!];
    }
    return [parseInt(g, 16)];
  });
  const h = parse(head);
  const t = parse(tail);
  const groups = s.includes('::') ? [...h, ...new Array(8 - h.length - t.length).fill(0), ...t] : h;
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

/** Read ATYP + address + port. */
export async function readAddr(r: ByteReader): Promise<{ host: string; port: number }> {
  const atyp = await r.byte();
  let host: string;
  if (atyp === 1) host = [...(await r.read(4))].join('.');
  else if (atyp === 3) host = (await r.read(await r.byte())).toString('utf8');
  else if (atyp === 4) {
    const b = await r.read(16);
    host = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2).toString(16)).join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
  } else throw new PortsideError(ErrorCode.PROTOCOL, `SOCKS5 address type ${atyp} not supported`, Result.PROTOCOL_ERROR);
  const port = (await r.read(2)).readUInt16BE(0);
  return { host, port };
}

export function reply(rep: number, host = '0.0.0.0', port = 0): Buffer {
  return Buffer.concat([Buffer.of(5, rep, 0), encodeAddr(host, port)]);
}

// ------------------------------------------------------------------ server side

/** Greeting: returns the offered methods. */
export async function readGreeting(r: ByteReader): Promise<number[]> {
  const v = await r.byte();
  if (v !== 5) throw new PortsideError(ErrorCode.PROTOCOL, `not SOCKS5 (version byte ${v})`, Result.PROTOCOL_ERROR);
  return [...(await r.read(await r.byte()))];
}

/** RFC 1929 sub-negotiation. */
export async function readUserPass(r: ByteReader): Promise<{ username: string; password: string }> {
  const v = await r.byte();
  if (v !== 1) throw new PortsideError(ErrorCode.PROTOCOL, `bad RFC 1929 version ${v}`, Result.PROTOCOL_ERROR);
  const username = (await r.read(await r.byte())).toString('utf8');
  const password = (await r.read(await r.byte())).toString('utf8');
  return { username, password };
}

/** CONNECT request; other commands come back as cmd !== 1 for the caller to refuse. */
export async function readRequest(r: ByteReader): Promise<{ cmd: number; host: string; port: number }> {
  const [v, cmd] = await r.read(3);
  if (v !== 5) throw new PortsideError(ErrorCode.PROTOCOL, `bad SOCKS5 request version ${v}`, Result.PROTOCOL_ERROR);
  const a = await readAddr(r);
  return { cmd: cmd!, ...a };
}

// ------------------------------------------------------------------ client side

export function userPassMessage(username: string, password: string): Buffer {
  const u = Buffer.from(username, 'utf8');
  const p = Buffer.from(password, 'utf8');
  if (u.length > 255 || p.length > 255) throw new PortsideError(ErrorCode.CONFIG, 'username and password must be at most 255 bytes', Result.GENERAL_FAILURE);
  return Buffer.concat([Buffer.of(1, u.length), u, Buffer.of(p.length), p]);
}

/**
 * Client handshake up to the password verdict. Returns false when the server refused the
 * password (RFC 1929 status ≠ 0) or offers no method we can use.
 */
export async function clientAuth(sock: Duplex, r: ByteReader, cred?: { username: string; password: string }): Promise<'ok' | 'auth-failed' | 'no-method'> {
  sock.write(cred ? Buffer.of(5, 2, 0, 2) : Buffer.of(5, 1, 0));
  const [v, method] = await r.read(2);
  if (v !== 5) throw new PortsideError(ErrorCode.PROTOCOL, `not a SOCKS5 server (version ${v})`, Result.PROTOCOL_ERROR);
  if (method === 0) return 'ok';
  if (method !== 2 || !cred) return 'no-method';
  sock.write(userPassMessage(cred.username, cred.password));
  const [, status] = await r.read(2);
  return status === 0 ? 'ok' : 'auth-failed';
}

/**
 * Username/password and CONNECT in one flight (only the username/password method offered):
 * one round trip to the server instead of three. The verdict, and the reply code when accepted.
 */
export async function clientAuthConnect(sock: Duplex, r: ByteReader, cred: { username: string; password: string }, host: string, port: number): Promise<{ verdict: 'ok' | 'auth-failed' | 'no-method'; rep: number }> {
  sock.write(Buffer.concat([Buffer.of(5, 1, 2), userPassMessage(cred.username, cred.password), Buffer.of(5, 1, 0), encodeAddr(host, port)]));
  const [v, method] = await r.read(2);
  if (v !== 5) throw new PortsideError(ErrorCode.PROTOCOL, `not a SOCKS5 server (version ${v})`, Result.PROTOCOL_ERROR);
  if (method !== 2) return { verdict: 'no-method', rep: Rep.GENERAL_FAILURE };
  const [, status] = await r.read(2);
  if (status !== 0) return { verdict: 'auth-failed', rep: Rep.GENERAL_FAILURE };
  const [v2, rep] = await r.read(3);
  if (v2 !== 5) throw new PortsideError(ErrorCode.PROTOCOL, `bad SOCKS5 reply version ${v2}`, Result.PROTOCOL_ERROR);
  await readAddr(r);
  return { verdict: 'ok', rep: rep! };
}

