/**
 * The client session's handshake (docs/protocol.md, "The client session"): a pure codec, no
 * sockets. One round trip, after which both sides hold the transport keys (src/session/transport.ts).
 *
 *   agent → relay   hello: "PSC" 0x01 | agent share (32)
 *   relay → agent   reply: cert length u16 | certificate (DER) | relay share (32) | sig length u16 | signature
 *
 * The relay's share is fresh for each session (forward secrecy); the signature (ECDSA P-256,
 * SHA-256, by the key of the certificate the agent pins) covers the whole transcript, so the agent
 * knows whom it shares the keys with. The relay learns nothing about the agent here: agents prove
 * who they are by username and password, per connection (SOCKS5 inside the session).
 */
import { createHash, sign, verify, X509Certificate, type KeyObject } from 'node:crypto';
import { hkdf } from './hkdf.js';
import { ErrorCode, PortsideError, Result } from '../errors.js';
import { KEY_SIZE, SHARE_SIZE, agree, type KeyShare } from './seal.js';
import type { TransportKeys } from './transport.js';

export const HELLO_MAGIC = Buffer.from('PSC\x01', 'latin1');
export const HELLO_SIZE = HELLO_MAGIC.length + SHARE_SIZE;
/** Bounds on what the agent reads before the keys exist. */
export const MAX_CERT = 16 * 1024;
const MAX_SIG = 512;
const CONTEXT = Buffer.from('portside client session v1');
const INFO = Buffer.from('portside client session keys v1');
const EARLY_SECRET = 32;

/** The handshake failed: not our protocol, a bad share, a bad signature. */
export class ClientShakeError extends PortsideError {
  constructor(message: string, code: typeof ErrorCode.SESSION_AUTH | typeof ErrorCode.FINGERPRINT_MISMATCH = ErrorCode.SESSION_AUTH) {
    super(code, message, Result.AUTH_FAILED);
  }
}

export function encodeHello(own: KeyShare): Buffer {
  return Buffer.concat([HELLO_MAGIC, own.share]);
}

/** The agent's share from its hello; null while fewer than HELLO_SIZE bytes are there. */
export function parseHello(buf: Buffer): Buffer | null {
  if (buf.length < HELLO_MAGIC.length ? !HELLO_MAGIC.subarray(0, buf.length).equals(buf) : !buf.subarray(0, HELLO_MAGIC.length).equals(HELLO_MAGIC)) {
    throw new ClientShakeError('not a portside client session (bad hello)');
  }
  return buf.length >= HELLO_SIZE ? buf.subarray(HELLO_MAGIC.length, HELLO_SIZE) : null;
}

function transcript(hello: Buffer, cert: Buffer, relayShare: Buffer): Buffer {
  return createHash('sha256').update(CONTEXT).update(hello).update(cert).update(relayShare).digest();
}

/** The session's transport keys, and its secret for early records (src/session/seal.ts deriveEarlyKey). */
export interface ClientSessionKeys extends TransportKeys { early: Buffer }

function keysOf(secret: Buffer, th: Buffer, side: 'client' | 'client-port'): ClientSessionKeys {
  const okm = hkdf(secret, th, INFO, 2 * KEY_SIZE + EARLY_SECRET);
  const c2p = okm.subarray(0, KEY_SIZE);
  const p2c = okm.subarray(KEY_SIZE, 2 * KEY_SIZE);
  const early = okm.subarray(2 * KEY_SIZE);
  return side === 'client' ? { send: c2p, recv: p2c, early } : { send: p2c, recv: c2p, early };
}

/** The relay's side: its reply to a hello, and the session's keys. */
export function answerHello(hello: Buffer, own: KeyShare, certDer: Buffer, certKey: KeyObject): { reply: Buffer; keys: ClientSessionKeys } {
  const agentShare = parseHello(hello);
  if (!agentShare) throw new ClientShakeError('hello cut short');
  const secret = agreeOrFail(own, agentShare);
  const th = transcript(hello.subarray(0, HELLO_SIZE), certDer, own.share);
  const sig = sign('sha256', th, certKey);
  const reply = Buffer.alloc(2 + certDer.length + SHARE_SIZE + 2 + sig.length);
  let at = reply.writeUInt16BE(certDer.length, 0);
  at += certDer.copy(reply, at);
  at += own.share.copy(reply, at);
  at = reply.writeUInt16BE(sig.length, at);
  sig.copy(reply, at);
  return { reply, keys: keysOf(secret, th, 'client-port') };
}

/**
 * The agent's side: read the relay's reply (null while incomplete), check that its certificate
 * is the pinned one (`fingerprint(der)` equals `pinned`) and that it signed this handshake.
 * Returns the keys and how many bytes the reply took.
 */
export function readReply(buf: Buffer, hello: Buffer, own: KeyShare, pinned: string, fingerprint: (der: Buffer) => string): { keys: ClientSessionKeys; used: number; fingerprint: string } | null {
  if (buf.length < 2) return null;
  const certLen = buf.readUInt16BE(0);
  if (certLen === 0 || certLen > MAX_CERT) throw new ClientShakeError(`not a portside client port: it answered ${sentBy(buf)}`);
  if (buf.length < 3) return null;
  // A TLS record (alert or handshake: type, version 3.x) where a certificate (DER, 0x30) should start.
  if ((buf[0] === 0x15 || buf[0] === 0x16) && buf[1] === 0x03 && buf[2]! <= 0x04) {
    throw new ClientShakeError('not a portside client port: it answered with TLS (is `outside` the relays\' session port rather than the client port, `clients.listen`?)');
  }
  const sigAt = 2 + certLen + SHARE_SIZE;
  if (buf.length < sigAt + 2) return null;
  const sigLen = buf.readUInt16BE(sigAt);
  if (sigLen === 0 || sigLen > MAX_SIG) throw new ClientShakeError(`not a portside client port: its answer has a signature of ${sigLen} bytes`);
  const used = sigAt + 2 + sigLen;
  if (buf.length < used) return null;
  const der = buf.subarray(2, 2 + certLen);
  const got = fingerprint(der);
  if (got !== pinned) throw new ClientShakeError(`presented certificate sha256:${got}, not the pinned outside_fingerprint`, ErrorCode.FINGERPRINT_MISMATCH);
  const relayShare = buf.subarray(2 + certLen, sigAt);
  const th = transcript(hello, der, relayShare);
  let ok = false;
  try {
    ok = verify('sha256', th, new X509Certificate(der).publicKey, buf.subarray(sigAt + 2, used));
  } catch {
    ok = false;
  }
  if (!ok) throw new ClientShakeError('the outside relay did not sign the handshake with its certificate key');
  return { keys: keysOf(agreeOrFail(own, relayShare), th, 'client'), used, fingerprint: got };
}

/** What a peer sent, for an error message: its text if it is text (a banner), else its first bytes in hex. */
function sentBy(buf: Buffer): string {
  const head = buf.subarray(0, 40);
  const text = head.toString('latin1');
  return /^[\x20-\x7e]+[\r\n]*/.test(text) && /^[\x20-\x7e\r\n]*$/.test(text) ? `'${text.replace(/[\r\n].*$/s, '')}'` : `0x${head.subarray(0, 8).toString('hex')}…`;
}

function agreeOrFail(own: KeyShare, peer: Buffer): Buffer {
  try {
    return agree(own.privateKey, peer);
  } catch (err) {
    throw new ClientShakeError(`bad key share in the handshake: ${(err as Error).message}`);
  }
}
