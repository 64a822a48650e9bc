/**
 * The client session's record layer (docs/protocol.md, "The client session"): a pure codec, no
 * sockets. It takes the place of TLS between an agent and the outside relay's client port.
 *
 * The session's bytes travel as transport records:
 *
 *   | sealed length u32 | clear length u32 | ciphertext (sealed length) | tag (16) | clear bytes |
 *
 * The ciphertext is AES-128-GCM under the direction's key, the nonce the record's sequence number
 * (96 bits, big-endian), the 8-byte header the AAD: so every frame header, every control frame and
 * the clear length itself are authenticated and in order. The clear bytes are the payload of the
 * DATA frame whose header ends the sealed part: bytes a carried connection has already sealed with
 * keys of its own (src/session/seal.ts). Encrypting them again would only cost CPU; they are
 * authenticated by their own records, and where they sit in the session by this one.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { ErrorCode, PortsideError, Result } from '../errors.js';
import { DEFAULT_MAX_FRAME } from './frame.js';
import { KEY_SIZE, TAG_SIZE, nonce } from './seal.js';

const CIPHER = 'aes-128-gcm';
export const TRANSPORT_HEADER = 8;
/** The most sealed plaintext in one record; the sealer splits longer runs. */
export const MAX_SEALED = DEFAULT_MAX_FRAME + 64;
/** The most clear bytes after one record: one DATA frame's payload. */
export const MAX_CLEAR = DEFAULT_MAX_FRAME;

/** A transport record that fails its tag, or a length out of range: the session ends. */
export class TransportError extends PortsideError {
  constructor(message: string) {
    super(ErrorCode.SESSION_AUTH, message, Result.PROTOCOL_ERROR);
  }
}

export interface TransportKeys { send: Buffer; recv: Buffer }

/** Session bytes in (frames, some marked clear), transport records out. */
export class TransportSealer {
  private seq = 0n;
  constructor(private readonly key: Buffer) {
    if (key.length !== KEY_SIZE) throw new TypeError('transport key must be 16 bytes');
  }

  /**
   * Seal a batch of session output in order. A buffer in `clear` goes out as it is, after the
   * record holding everything before it. Returns the buffers to write, in order.
   */
  seal(chunks: Buffer[], clear?: ReadonlySet<Buffer>): Buffer[] {
    const out: Buffer[] = [];
    let run: Buffer[] = [];
    let runBytes = 0;
    // Clear buffers back to back (one payload in pieces) follow one record together.
    let clearRun: Buffer[] = [];
    let clearBytes = 0;
    const flush = () => {
      if (!runBytes && !clearBytes) return;
      this.record(run, runBytes, clearBytes, out);
      for (const c of clearRun) out.push(c);
      run = [];
      runBytes = 0;
      clearRun = [];
      clearBytes = 0;
    };
    for (const c of chunks) {
      if (clear?.has(c)) {
        clearRun.push(c);
        clearBytes += c.length;
      } else if (c.length) {
        if (clearBytes) flush();
        run.push(c);
        runBytes += c.length;
      }
    }
    flush();
    return out;
  }

  /** One record per MAX_SEALED bytes of the run; the last one announces `clearLen`. */
  private record(pieces: Buffer[], total: number, clearLen: number, out: Buffer[]): void {
    let i = 0;
    let off = 0;
    do {
      const n = Math.min(total, MAX_SEALED);
      total -= n;
      const rec = Buffer.allocUnsafe(TRANSPORT_HEADER + n + TAG_SIZE);
      rec.writeUInt32BE(n, 0);
      rec.writeUInt32BE(total === 0 ? clearLen : 0, 4);
      const c = createCipheriv(CIPHER, this.key, nonce(this.seq++));
      c.setAAD(rec.subarray(0, TRANSPORT_HEADER));
      let at = TRANSPORT_HEADER;
      while (at < TRANSPORT_HEADER + n) {
        const p = pieces[i]!;
        const take = Math.min(p.length - off, TRANSPORT_HEADER + n - at);
        at += c.update(take === p.length ? p : p.subarray(off, off + take)).copy(rec, at);
        off += take;
        if (off === p.length) { i++; off = 0; }
      }
      c.final();
      c.getAuthTag().copy(rec, TRANSPORT_HEADER + n);
      out.push(rec);
    } while (total > 0);
  }
}

const enum State { Header, Body, Clear }

/**
 * Transport records in (any chunking), session bytes out: `deliver(buf, false)` with a record's
 * opened plaintext (only after its tag checks), `deliver(view, true)` with clear bytes as views
 * into the input. Holds at most one record's ciphertext.
 */
export class TransportOpener {
  private seq = 0n;
  private state = State.Header;
  private readonly header = Buffer.alloc(TRANSPORT_HEADER);
  private have = 0;
  private sealedLen = 0;
  private clearLeft = 0;
  private body: Buffer | null = null;
  private failed = false;

  constructor(private readonly key: Buffer) {
    if (key.length !== KEY_SIZE) throw new TypeError('transport key must be 16 bytes');
  }

  /** Bytes held for a record not yet complete. */
  get buffered(): number {
    if (this.state === State.Clear) return 0;
    return this.state === State.Body ? TRANSPORT_HEADER + this.have : this.have;
  }

  /** Feed bytes. Throws TransportError (for good) on a bad record. */
  push(chunk: Buffer, deliver: (buf: Buffer, clear: boolean) => void): void {
    if (this.failed) throw new TransportError('session transport already failed');
    let off = 0;
    const end = chunk.length;
    try {
      while (off < end) {
        if (this.state === State.Header) {
          const n = Math.min(TRANSPORT_HEADER - this.have, end - off);
          chunk.copy(this.header, this.have, off, off + n);
          this.have += n;
          off += n;
          if (this.have < TRANSPORT_HEADER) break;
          this.have = 0;
          this.sealedLen = this.header.readUInt32BE(0);
          this.clearLeft = this.header.readUInt32BE(4);
          if (this.sealedLen > MAX_SEALED) throw new TransportError(`transport record of ${this.sealedLen} sealed bytes (at most ${MAX_SEALED})`);
          if (this.clearLeft > MAX_CLEAR) throw new TransportError(`transport record announces ${this.clearLeft} clear bytes (at most ${MAX_CLEAR})`);
          this.state = State.Body;
          continue;
        }
        if (this.state === State.Body) {
          const want = this.sealedLen + TAG_SIZE;
          let rec: Buffer;
          if (this.have === 0 && end - off >= want) {
            rec = chunk.subarray(off, off + want); // the whole record in this chunk: no copy
            off += want;
          } else {
            this.body ??= Buffer.allocUnsafe(want);
            const n = Math.min(want - this.have, end - off);
            chunk.copy(this.body, this.have, off, off + n);
            this.have += n;
            off += n;
            if (this.have < want) break;
            rec = this.body;
            this.body = null;
            this.have = 0;
          }
          const d = createDecipheriv(CIPHER, this.key, nonce(this.seq++));
          d.setAAD(this.header);
          d.setAuthTag(rec.subarray(this.sealedLen));
          const plain = this.sealedLen ? d.update(rec.subarray(0, this.sealedLen)) : null;
          try {
            d.final();
          } catch {
            throw new TransportError('session record failed its authentication tag');
          }
          this.state = this.clearLeft ? State.Clear : State.Header;
          if (plain?.length) deliver(plain, false);
          continue;
        }
        const n = Math.min(this.clearLeft, end - off);
        this.clearLeft -= n;
        if (this.clearLeft === 0) this.state = State.Header;
        const view = chunk.subarray(off, off + n);
        off += n;
        deliver(view, true);
      }
    } catch (err) {
      this.failed = true;
      this.body = null;
      throw err;
    }
  }
}
