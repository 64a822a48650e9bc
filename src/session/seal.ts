/**
 * Per-connection keys for the client leg (patent 607 and 1326, claim 7; docs/protocol.md,
 * "The client leg"). A pure codec: no sockets.
 *
 * Each carried connection makes its own X25519 exchange: the agent's share rides in its
 * client-connect.req, the outside relay's share follows its SOCKS5 success reply. Both sides
 * derive, with HKDF-SHA256 over the shared secret and both shares, one AES-128-GCM key per
 * direction (as the relays' TLS suite; AES-256 costs about twice the CPU here). The connection's
 * bytes then travel as sealed records:
 *
 *   | length u32 (plaintext bytes, 1..MAX_RECORD) | ciphertext (length bytes) | tag (16) |
 *
 * The nonce is the record's sequence number (96 bits, big-endian), per direction, so a record
 * dropped, replayed or moved fails the tag. The length header is the AAD. In early mode the
 * agent's first records use an early key (from the client session's early secret), and a
 * record with KEY_CHANGE in its length changes to the connection's own key (docs/protocol.md,
 * "Early data").
 */
import { createCipheriv, createDecipheriv, createPrivateKey, createPublicKey, diffieHellman, randomBytes, type DecipherGCM, type KeyObject } from 'node:crypto';
import { hkdf } from './hkdf.js';
import { ErrorCode, PortsideError, Result } from '../errors.js';
import { DEFAULT_MAX_FRAME } from './frame.js';

export const SHARE_SIZE = 32;
export const KEY_SIZE = 16;
const CIPHER = 'aes-128-gcm';
export const TAG_SIZE = 16;
export const RECORD_HEADER = 4;
/**
 * Largest plaintext in one record: a sealed record with its header and tag fills one DATA frame
 * (256 KiB), so a record is one frame and one transport write. Also the most the opener buffers
 * before it can check a tag.
 */
export const MAX_RECORD = DEFAULT_MAX_FRAME - RECORD_HEADER - TAG_SIZE;
const INFO = Buffer.from('portside client stream v1');

/** A record that fails its tag, or a length out of range: the connection is not trustworthy. */
export class SealError extends PortsideError {
  constructor(message: string) {
    super(ErrorCode.STREAM_AUTH, message, Result.PROTOCOL_ERROR);
  }
}

export interface KeyShare { privateKey: KeyObject; share: Buffer }

/** A JWK `x` that Node ignores when importing a private key (it computes the public half from `d`). */
const UNUSED_X = 'A'.repeat(43);

/**
 * A fresh ephemeral X25519 key pair for one connection: 32 random bytes imported as the private
 * key, its public half exported as JWK (about 57 µs here).
 *
 * Not generateKeyPairSync: in Node 20 exporting a key it generated can deadlock the process. The
 * export holds the key's mutex while allocating; a GC at that moment finalises the generating job,
 * whose destructor takes the same mutex, and the main thread waits on itself for ever (it happened
 * here after some tens of thousands of keys; test/unit/seal.test.ts makes 100 000).
 * JWK, not DER: OpenSSL's DER encoder and decoder cost 70-140 µs each here, JWK about 5-12.
 */
export function newKeyShare(): KeyShare {
  const privateKey = createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: randomBytes(32).toString('base64url'), x: UNUSED_X }, format: 'jwk' });
  return { privateKey, share: Buffer.from(createPublicKey(privateKey).export({ format: 'jwk' }).x!, 'base64url') };
}

export interface StreamKeys { send: Buffer; recv: Buffer }

/** X25519 with a peer's 32-byte share; a bad or low-order share is a SealError. */
export function agree(own: KeyObject, peerShare: Buffer): Buffer {
  if (peerShare.length !== SHARE_SIZE) throw new SealError(`key share of ${peerShare.length} bytes, expected ${SHARE_SIZE}`);
  let secret: Buffer;
  try {
    const peer = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: peerShare.toString('base64url') }, format: 'jwk' });
    secret = diffieHellman({ privateKey: own, publicKey: peer });
  } catch (err) {
    throw new SealError(`bad key share: ${(err as Error).message}`);
  }
  // An all-zero secret means a low-order share: refuse it (RFC 7748 §6.1).
  if (secret.every((b) => b === 0)) throw new SealError('key share of low order');
  return secret;
}

/**
 * The two directions' keys. `side` says which share is ours: the agent is 'client', the
 * outside relay 'client-port'. Both sides compute the same pair, swapped.
 */
export function deriveStreamKeys(own: KeyShare, peerShare: Buffer, side: 'client' | 'client-port'): StreamKeys {
  const secret = agree(own.privateKey, peerShare);
  const [clientShare, portShare] = side === 'client' ? [own.share, peerShare] : [peerShare, own.share];
  const okm = hkdf(secret, Buffer.concat([clientShare, portShare]), INFO, 2 * KEY_SIZE);
  const c2p = okm.subarray(0, KEY_SIZE);
  const p2c = okm.subarray(KEY_SIZE);
  return side === 'client' ? { send: c2p, recv: p2c } : { send: p2c, recv: c2p };
}

const EARLY_INFO = Buffer.from('portside client early v1');

/**
 * The key for a connection's early records (agent → outside relay, before the relay's share for
 * the connection has arrived): HKDF of the client session's early secret (from its handshake,
 * src/session/clientshake.ts) with the agent's share for this connection as salt. No key exchange
 * of its own: it is as forward-secret as the session.
 */
export function deriveEarlyKey(sessionSecret: Buffer, agentShare: Buffer): Buffer {
  if (agentShare.length !== SHARE_SIZE) throw new SealError(`key share of ${agentShare.length} bytes, expected ${SHARE_SIZE}`);
  return hkdf(sessionSecret, agentShare, EARLY_INFO, KEY_SIZE);
}

/** After the agent's share in client-connect.req: early mode, its SOCKS5 messages follow (docs/protocol.md, "Early data"). */
export const EARLY_MODE = 0x01;

/** Set in a record's length field: this record and those after it are under the next key, from sequence 0. */
export const KEY_CHANGE = 0x8000_0000;

/** A record's AES-GCM nonce: its sequence number, 96 bits big-endian (here and in src/session/transport.ts). */
export function nonce(seq: bigint): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64BE(seq, 4);
  return n;
}

/** Plaintext in, sealed records out. */
export class Sealer {
  private seq = 0n;
  private changed = false;
  /** `headroom`: free bytes left in front of each record (same memory), for a frame header. */
  constructor(private key: Buffer, readonly headroom = 0) {}

  /** Seal from the next record on under `key` (from sequence 0); that record says so (KEY_CHANGE). */
  rekey(key: Buffer): void {
    this.key = key;
    this.seq = 0n;
    this.changed = true;
  }

  /**
   * Seal buf (or the pieces of a list, taken as one run of bytes) as one record per MAX_RECORD
   * bytes, each record a list of buffers: its length header, the cipher's output, its tag. Nothing
   * is gathered: each record costs one allocation of its size (the cipher's output), not two and a
   * copy (Stream.writev() sends such a list as one DATA frame).
   */
  sealv(input: Buffer | Buffer[]): Buffer[][] {
    const pieces = Array.isArray(input) ? input : [input];
    let left = 0;
    for (const p of pieces) left += p.length;
    const out: Buffer[][] = [];
    let i = 0;
    let off = 0;
    while (left > 0) {
      const n = Math.min(left, MAX_RECORD);
      left -= n;
      const head = Buffer.allocUnsafe(RECORD_HEADER); // from Node's pool
      head.writeUInt32BE(this.changed ? (n | KEY_CHANGE) >>> 0 : n, 0);
      this.changed = false;
      const c = createCipheriv(CIPHER, this.key, nonce(this.seq++));
      c.setAAD(head);
      const rec = [head];
      for (let at = 0; at < n;) {
        const p = pieces[i]!;
        const take = Math.min(p.length - off, n - at);
        rec.push(c.update(take === p.length ? p : p.subarray(off, off + take)));
        at += take;
        off += take;
        if (off === p.length) { i++; off = 0; }
      }
      c.final();
      rec.push(c.getAuthTag());
      out.push(rec);
    }
    return out;
  }

  /** As sealv(), each record gathered into one buffer (with `headroom` free bytes in front). */
  seal(input: Buffer | Buffer[]): Buffer[] {
    return this.sealv(input).map((rec) => {
      let n = 0;
      for (const b of rec) n += b.length;
      const o = Buffer.allocUnsafe(this.headroom + n).subarray(this.headroom);
      let at = 0;
      for (const b of rec) at += b.copy(o, at);
      return o;
    });
  }
}

/**
 * Sealed records in (any chunking), plaintext out. Plaintext of a record is released only
 * after its tag checks; at most one record (MAX_RECORD + 20 bytes) is held.
 */
export class Opener {
  private seq = 0n;
  private header = Buffer.alloc(RECORD_HEADER);
  private headerHave = 0;
  /** Bytes of ciphertext+tag still wanted for the current record (0: reading a header). */
  private want = 0;
  private length = 0;
  private decipher: DecipherGCM | null = null;
  private plain: Buffer[] = [];
  private tag = Buffer.alloc(TAG_SIZE);
  private tagHave = 0;
  private failed = false;

  /**
   * `headroom`: free bytes left in front of each plaintext released (same memory), for a frame
   * header. `next`: the key a record marked KEY_CHANGE switches to (early records, then the
   * connection's own key); without it such a record is refused.
   */
  constructor(private key: Buffer, readonly headroom = 0, private next: Buffer | null = null) {}

  /** Bytes held for a record not yet complete. */
  get buffered(): number {
    return this.want ? RECORD_HEADER + this.length + TAG_SIZE - this.want : this.headerHave;
  }

  /** Feed bytes; returns the plaintext of every record completed, one buffer each. Throws SealError (for good). */
  push(chunk: Buffer, out: Buffer[] = []): Buffer[] {
    for (const p of this.pushv(chunk)) {
      if (p.length === 1 && !this.headroom) out.push(p[0]!);
      else {
        let n = 0;
        for (const b of p) n += b.length;
        const o = Buffer.allocUnsafe(this.headroom + n);
        let at = this.headroom;
        for (const b of p) at += b.copy(o, at);
        out.push(o.subarray(this.headroom));
      }
    }
    return out;
  }

  /**
   * As push(), each record's plaintext as the list of pieces the decipher gave (one per input
   * chunk it spanned): nothing gathered.
   */
  pushv(chunk: Buffer, out: Buffer[][] = []): Buffer[][] {
    if (this.failed) throw new SealError('sealed stream already failed');
    let off = 0;
    try {
      while (off < chunk.length) {
        if (this.want === 0) {
          const n = Math.min(RECORD_HEADER - this.headerHave, chunk.length - off);
          chunk.copy(this.header, this.headerHave, off, off + n);
          this.headerHave += n;
          off += n;
          if (this.headerHave < RECORD_HEADER) break;
          this.headerHave = 0;
          this.length = this.header.readUInt32BE(0);
          if (this.length & KEY_CHANGE) {
            if (!this.next) throw new SealError('sealed record announces a key change that was not agreed');
            this.key = this.next;
            this.next = null;
            this.seq = 0n;
            this.length = (this.length & ~KEY_CHANGE) >>> 0;
          }
          if (this.length === 0 || this.length > MAX_RECORD) throw new SealError(`sealed record of ${this.length} bytes (1..${MAX_RECORD} allowed)`);
          this.want = this.length + TAG_SIZE;
          this.tagHave = 0;
          this.decipher = createDecipheriv(CIPHER, this.key, nonce(this.seq++));
          this.decipher.setAAD(this.header);
          continue;
        }
        // Ciphertext first, then the tag.
        const ctLeft = this.want - TAG_SIZE;
        if (ctLeft > 0) {
          const n = Math.min(ctLeft, chunk.length - off);
          this.plain.push(this.decipher!.update(chunk.subarray(off, off + n)));
          this.want -= n;
          off += n;
          continue;
        }
        const n = Math.min(TAG_SIZE - this.tagHave, chunk.length - off);
        chunk.copy(this.tag, this.tagHave, off, off + n);
        this.tagHave += n;
        this.want -= n;
        off += n;
        if (this.want > 0) break;
        this.decipher!.setAuthTag(this.tag);
        try {
          this.decipher!.final();
        } catch {
          throw new SealError('sealed record failed its authentication tag');
        }
        this.decipher = null;
        out.push(this.plain);
        this.plain = [];
      }
    } catch (err) {
      this.failed = true;
      this.plain = [];
      throw err;
    }
    return out;
  }
}
