// The client session's record layer (src/session/transport.ts): batches of sealed and clear bytes
// fed to the opener at random chunk boundaries, the wire format against a hand-made AES-128-GCM
// reference, long runs split into several records, every way a record can be bad, and how much the
// opener holds.
import { describe, expect, it } from 'vitest';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { ErrorCode } from '../../src/errors.js';
import { TAG_SIZE } from '../../src/session/seal.js';
import { MAX_CLEAR, MAX_SEALED, TRANSPORT_HEADER, TransportError, TransportOpener, TransportSealer } from '../../src/session/transport.js';
import { rng } from '../support/rng.js';
import { codeOf as codeOfError } from '../support/errors.js';

const codeOf = (fn: () => unknown) => codeOfError(fn, TransportError);

interface Delivered { bytes: Buffer; clear: boolean }

/** Push `wire` to the opener in slices of the sizes `next()` picks; collect copies of what it delivers. */
function feed(opener: TransportOpener, wire: Buffer, next: () => number, got: Delivered[] = []): Delivered[] {
  for (let at = 0; at < wire.length;) {
    const n = Math.max(1, next());
    opener.push(wire.subarray(at, at + n), (buf, clear) => got.push({ bytes: Buffer.from(buf), clear }));
    at += n;
  }
  return got;
}

/** One byte per byte of the stream: 1 where it is clear. */
function clearMask(parts: { length: number; clear: boolean }[]): Buffer {
  return Buffer.concat(parts.map((p) => Buffer.alloc(p.length, p.clear ? 1 : 0)));
}

function randomBuf(r: () => number, n: number): Buffer {
  const b = Buffer.alloc(n, Math.floor(r() * 256));
  for (let j = 0; j < n; j += 53) b[j] = Math.floor(r() * 256);
  return b;
}

/** The nonce the header comment documents: the 64-bit sequence number big-endian in the last 8 of 12 bytes. */
function refNonce(seq: number): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64BE(BigInt(seq), 4);
  return n;
}

/** A sealer's output for [sealed `text`, clear `clearText`] as one buffer, and the parts. */
function sealOne(sealer: TransportSealer, text: string, clearText?: string): { wire: Buffer; clear: Buffer | null } {
  const sealed = Buffer.from(text);
  const clear = clearText === undefined ? null : Buffer.from(clearText);
  const out = sealer.seal(clear ? [sealed, clear] : [sealed], clear ? new Set([clear]) : undefined);
  return { wire: Buffer.concat(out), clear };
}

describe('transport records: round trip', () => {
  it('round-trips random batches of sealed and clear chunks fed at random chunk boundaries, clear bytes in their places', () => {
    for (let seed = 1; seed <= 25; seed++) {
      const r = rng(seed);
      const key = randomBytes(16);
      const sealer = new TransportSealer(key);
      const opener = new TransportOpener(key);
      const input: { bytes: Buffer; clear: boolean }[] = [];
      const wire: Buffer[] = [];
      for (let batch = 0; batch < 15; batch++) {
        const chunks: Buffer[] = [];
        const clear = new Set<Buffer>();
        const count = 1 + Math.floor(r() * 6);
        // Usually sealed bytes come first (a frame header), but a batch may open with clear bytes.
        const clearFirst = r() < 0.25;
        // Clear chunks back to back are one DATA payload in pieces: together at most MAX_CLEAR.
        let clearRun = 0;
        for (let i = 0; i < count; i++) {
          const isClear = (i === 0 && clearFirst) || (i > 0 && r() < 0.4);
          const big = r() < 0.05;
          const n = isClear
            ? Math.min(big ? MAX_CLEAR : Math.floor(r() * 5000), MAX_CLEAR - clearRun)
            : (big ? MAX_SEALED + Math.floor(r() * 2 * MAX_SEALED) : Math.floor(r() * 3000));
          clearRun = isClear ? clearRun + n : 0;
          const b = randomBuf(r, n);
          chunks.push(b);
          if (isClear) clear.add(b);
          input.push({ bytes: b, clear: isClear });
        }
        wire.push(...sealer.seal(chunks, clear));
      }
      const all = Buffer.concat(wire);
      const got = feed(opener, all, () => {
        const p = r();
        return p < 0.3 ? 1 : p < 0.7 ? Math.floor(r() * 30) : Math.floor(r() * 80_000);
      });
      expect(Buffer.concat(got.map((g) => g.bytes)).equals(Buffer.concat(input.map((i) => i.bytes)))).toBe(true);
      // The bytes delivered as clear are exactly the clear inputs, in order and in the same places.
      expect(Buffer.concat(got.filter((g) => g.clear).map((g) => g.bytes)).equals(Buffer.concat(input.filter((i) => i.clear).map((i) => i.bytes)))).toBe(true);
      expect(clearMask(got.map((g) => ({ length: g.bytes.length, clear: g.clear }))).equals(clearMask(input.map((i) => ({ length: i.bytes.length, clear: i.clear }))))).toBe(true);
      expect(opener.buffered).toBe(0);
    }
  });

  it('a batch that starts with clear bytes, and two clear chunks in a row, round-trip (one empty sealed record before both)', () => {
    const key = randomBytes(16);
    const c1 = Buffer.from('clear one');
    const c2 = Buffer.from('clear two');
    const s = Buffer.from('sealed');
    const out = new TransportSealer(key).seal([c1, c2, s], new Set([c1, c2]));
    // Record (0 sealed, 18 clear), c1, c2 (one payload in pieces), record (6 sealed, 0 clear).
    expect(out.map((b) => b.length)).toEqual([TRANSPORT_HEADER + TAG_SIZE, c1.length, c2.length, TRANSPORT_HEADER + s.length + TAG_SIZE]);
    expect(out[0]!.readUInt32BE(0)).toBe(0);
    expect(out[0]!.readUInt32BE(4)).toBe(c1.length + c2.length);
    expect(out[1]).toBe(c1); // the clear buffers go out as they are
    expect(out[2]).toBe(c2);
    const got: Delivered[] = [];
    const opener = new TransportOpener(key);
    for (const b of out) opener.push(b, (buf, clear) => got.push({ bytes: Buffer.from(buf), clear }));
    expect(got.map((g) => [g.bytes.toString(), g.clear])).toEqual([['clear one', true], ['clear two', true], ['sealed', false]]);
  });

  it('delivers no sealed bytes of a record before its tag checks', () => {
    const key = randomBytes(16);
    const { wire } = sealOne(new TransportSealer(key), 'hello world');
    const opener = new TransportOpener(key);
    const got: Delivered[] = [];
    feed(opener, wire.subarray(0, wire.length - 1), () => 1, got);
    expect(got).toEqual([]);
    expect(opener.buffered).toBe(wire.length - 1); // header and body, all but the tag's last byte
    feed(opener, wire.subarray(wire.length - 1), () => 1, got);
    expect(got.map((g) => [g.bytes.toString(), g.clear])).toEqual([['hello world', false]]);
    expect(opener.buffered).toBe(0);
  });

  it('refuses a key that is not 16 bytes', () => {
    expect(() => new TransportSealer(Buffer.alloc(32))).toThrow(TypeError);
    expect(() => new TransportOpener(Buffer.alloc(15))).toThrow(TypeError);
  });
});

describe('transport records: wire format', () => {
  it('matches a hand-made AES-128-GCM reference: header lengths, nonce = sequence number, header as AAD, clear bytes after the tag', () => {
    const key = randomBytes(16);
    const sealer = new TransportSealer(key);
    for (let seq = 0; seq < 3; seq++) {
      const plain = Buffer.from(`frame header and control frames of record ${seq}`);
      const clear = Buffer.from(`already sealed payload ${seq}`);
      const wire = Buffer.concat(sealer.seal([plain, clear], new Set([clear])));
      const header = wire.subarray(0, TRANSPORT_HEADER);
      expect(header.readUInt32BE(0)).toBe(plain.length);
      expect(header.readUInt32BE(4)).toBe(clear.length);
      const ct = wire.subarray(TRANSPORT_HEADER, TRANSPORT_HEADER + plain.length);
      const tag = wire.subarray(TRANSPORT_HEADER + plain.length, TRANSPORT_HEADER + plain.length + TAG_SIZE);
      expect(wire.subarray(TRANSPORT_HEADER + plain.length + TAG_SIZE).equals(clear)).toBe(true);
      expect(wire.length).toBe(TRANSPORT_HEADER + plain.length + TAG_SIZE + clear.length);
      // Decrypt by hand.
      const d = createDecipheriv('aes-128-gcm', key, refNonce(seq));
      d.setAAD(header);
      d.setAuthTag(tag);
      expect(Buffer.concat([d.update(ct), d.final()]).equals(plain)).toBe(true);
      // And encrypt by hand: the same bytes.
      const c = createCipheriv('aes-128-gcm', key, refNonce(seq));
      c.setAAD(header);
      expect(Buffer.concat([c.update(plain), c.final()]).equals(ct)).toBe(true);
      expect(c.getAuthTag().equals(tag)).toBe(true);
    }
  });

  it('the ciphertext is not the plaintext', () => {
    const plain = Buffer.alloc(1000, 0x41);
    const wire = Buffer.concat(new TransportSealer(randomBytes(16)).seal([plain]));
    expect(wire.includes(Buffer.alloc(32, 0x41))).toBe(false);
  });
});

describe('transport records: long sealed runs', () => {
  it('splits a run longer than MAX_SEALED into records of MAX_SEALED, the last one announcing the clear bytes, and round-trips', () => {
    const r = rng(7);
    const key = randomBytes(16);
    const run = [randomBuf(r, MAX_SEALED - 10), randomBuf(r, MAX_SEALED + 30), randomBuf(r, 80)];
    const clear = randomBuf(r, 1234);
    const out = new TransportSealer(key).seal([...run, clear], new Set([clear]));
    const total = run.reduce((n, b) => n + b.length, 0); // 2 * MAX_SEALED + 100
    expect(out.map((b) => b.length)).toEqual([
      TRANSPORT_HEADER + MAX_SEALED + TAG_SIZE,
      TRANSPORT_HEADER + MAX_SEALED + TAG_SIZE,
      TRANSPORT_HEADER + (total - 2 * MAX_SEALED) + TAG_SIZE,
      clear.length,
    ]);
    expect(out.slice(0, 3).map((b) => [b.readUInt32BE(0), b.readUInt32BE(4)])).toEqual([[MAX_SEALED, 0], [MAX_SEALED, 0], [100, clear.length]]);
    for (let seed = 1; seed <= 5; seed++) {
      const rr = rng(seed);
      const got = feed(new TransportOpener(key), Buffer.concat(out), () => (rr() < 0.3 ? 1 : Math.floor(rr() * 100_000)));
      expect(Buffer.concat(got.filter((g) => !g.clear).map((g) => g.bytes)).equals(Buffer.concat(run))).toBe(true);
      expect(Buffer.concat(got.filter((g) => g.clear).map((g) => g.bytes)).equals(clear)).toBe(true);
      expect(got.at(-1)!.clear).toBe(true);
    }
  });

  it('a run of exactly MAX_SEALED is one record', () => {
    const key = randomBytes(16);
    const out = new TransportSealer(key).seal([Buffer.alloc(MAX_SEALED, 7)]);
    expect(out.map((b) => b.length)).toEqual([TRANSPORT_HEADER + MAX_SEALED + TAG_SIZE]);
    const got = feed(new TransportOpener(key), out[0]!, () => 65_536);
    expect(Buffer.concat(got.map((g) => g.bytes)).equals(Buffer.alloc(MAX_SEALED, 7))).toBe(true);
  });
});

describe('transport records: bad records', () => {
  it('a flipped bit in the ciphertext or in the tag: PS_ERR_SESSION_AUTH, and the opener stays failed', () => {
    const key = randomBytes(16);
    const sealer = new TransportSealer(key);
    const { wire } = sealOne(sealer, 'some control frames', 'clear');
    const next = sealOne(sealer, 'more').wire;
    const n = wire.readUInt32BE(0);
    for (const at of [TRANSPORT_HEADER, TRANSPORT_HEADER + 5, TRANSPORT_HEADER + n - 1, TRANSPORT_HEADER + n, TRANSPORT_HEADER + n + TAG_SIZE - 1]) {
      for (const bit of [0x01, 0x80]) {
        const bad = Buffer.from(wire);
        bad[at]! ^= bit;
        const opener = new TransportOpener(key);
        const got: Delivered[] = [];
        expect(codeOf(() => feed(opener, bad, () => 3, got))).toBe(ErrorCode.SESSION_AUTH);
        expect(got).toEqual([]);
        expect(codeOf(() => opener.push(next, () => {}))).toBe(ErrorCode.SESSION_AUTH);
        expect(codeOf(() => opener.push(Buffer.alloc(0), () => {}))).toBe(ErrorCode.SESSION_AUTH);
      }
    }
  });

  it('a flipped bit anywhere in the header (sealed length or clear length): PS_ERR_SESSION_AUTH', () => {
    const key = randomBytes(16);
    const { wire } = sealOne(new TransportSealer(key), 'frames', 'clear bytes');
    // A sealed length made larger only fails once the bytes it announces have arrived: follow the
    // record with enough more bytes for the largest length the opener accepts.
    const tail = Buffer.alloc(MAX_SEALED + TAG_SIZE + TRANSPORT_HEADER);
    for (let bit = 0; bit < 64; bit++) {
      const bad = Buffer.from(wire);
      bad[bit >> 3]! ^= 0x80 >> (bit & 7);
      const opener = new TransportOpener(key);
      const got: Delivered[] = [];
      expect(codeOf(() => feed(opener, Buffer.concat([bad, tail]), () => 4096, got)), `header bit ${bit}`).toBe(ErrorCode.SESSION_AUTH);
      expect(got.filter((g) => !g.clear)).toEqual([]);
      expect(codeOf(() => opener.push(wire, () => {}))).toBe(ErrorCode.SESSION_AUTH);
    }
  });

  it('a replayed record and records swapped in order: PS_ERR_SESSION_AUTH, and the opener stays failed', () => {
    const key = randomBytes(16);
    const sealer = new TransportSealer(key);
    const r1 = sealOne(sealer, 'one', 'c1').wire;
    const r2 = sealOne(sealer, 'two').wire;
    const r3 = sealOne(sealer, 'three').wire;
    const replay = new TransportOpener(key);
    const got: string[] = [];
    replay.push(r1, (b) => got.push(b.toString()));
    expect(got).toEqual(['one', 'c1']);
    expect(codeOf(() => replay.push(r1, () => {}))).toBe(ErrorCode.SESSION_AUTH);
    expect(codeOf(() => replay.push(r2, () => {}))).toBe(ErrorCode.SESSION_AUTH); // failed for good
    const swapped = new TransportOpener(key);
    swapped.push(r1, () => {});
    expect(codeOf(() => swapped.push(r3, () => {}))).toBe(ErrorCode.SESSION_AUTH);
    expect(codeOf(() => swapped.push(r2, () => {}))).toBe(ErrorCode.SESSION_AUTH);
    expect(codeOf(() => new TransportOpener(key).push(r2, () => {}))).toBe(ErrorCode.SESSION_AUTH);
  });

  it('the wrong key: PS_ERR_SESSION_AUTH', () => {
    const { wire } = sealOne(new TransportSealer(randomBytes(16)), 'hello', 'x');
    const opener = new TransportOpener(randomBytes(16));
    expect(codeOf(() => opener.push(wire, () => {}))).toBe(ErrorCode.SESSION_AUTH);
    expect(codeOf(() => opener.push(wire, () => {}))).toBe(ErrorCode.SESSION_AUTH);
  });

  it('a header announcing more than MAX_SEALED sealed or MAX_CLEAR clear bytes is refused from the header alone', () => {
    const key = randomBytes(16);
    for (const [sealed, clear] of [[MAX_SEALED + 1, 0], [0xffff_ffff, 0], [0, MAX_CLEAR + 1], [10, 0xffff_ffff]] as const) {
      const header = Buffer.alloc(TRANSPORT_HEADER);
      header.writeUInt32BE(sealed, 0);
      header.writeUInt32BE(clear, 4);
      const opener = new TransportOpener(key);
      // Byte by byte: nothing is wrong until the 8th byte, which fails at once.
      for (let i = 0; i < TRANSPORT_HEADER - 1; i++) opener.push(header.subarray(i, i + 1), () => {});
      expect(opener.buffered).toBe(TRANSPORT_HEADER - 1);
      expect(codeOf(() => opener.push(header.subarray(TRANSPORT_HEADER - 1), () => {}))).toBe(ErrorCode.SESSION_AUTH);
      expect(codeOf(() => opener.push(Buffer.alloc(1), () => {}))).toBe(ErrorCode.SESSION_AUTH);
    }
    // At the limits the header is accepted and the opener waits for the body.
    const header = Buffer.alloc(TRANSPORT_HEADER);
    header.writeUInt32BE(MAX_SEALED, 0);
    header.writeUInt32BE(MAX_CLEAR, 4);
    const opener = new TransportOpener(key);
    expect(codeOf(() => opener.push(header, () => {}))).toBeUndefined();
  });

  it('a flipped bit inside the clear bytes is not detected here: those bytes are delivered changed, without an error', () => {
    // By design: the clear bytes are a DATA frame's payload that the carried connection has already
    // sealed with its own per-connection keys (src/session/seal.ts); its Opener detects the change.
    // The transport authenticates only how many there are and where they sit (the clear length is in
    // the header, the AAD), so it neither encrypts nor checks them again.
    const key = randomBytes(16);
    const { wire, clear } = sealOne(new TransportSealer(key), 'DATA frame header', 'sealed by the connection');
    const bad = Buffer.from(wire);
    bad[wire.length - clear!.length + 3]! ^= 0x10;
    const got: Delivered[] = [];
    expect(codeOf(() => feed(new TransportOpener(key), bad, () => 5, got))).toBeUndefined();
    expect(Buffer.concat(got.filter((g) => !g.clear).map((g) => g.bytes)).toString()).toBe('DATA frame header');
    const gotClear = Buffer.concat(got.filter((g) => g.clear).map((g) => g.bytes));
    expect(gotClear.length).toBe(clear!.length);
    expect(gotClear.equals(clear!)).toBe(false);
    gotClear[3]! ^= 0x10;
    expect(gotClear.equals(clear!)).toBe(true);
  });
});

describe('transport records: memory', () => {
  it('the opener never holds more than one record while a big record trickles in', () => {
    const r = rng(42);
    const key = randomBytes(16);
    const run = randomBuf(r, 3 * MAX_SEALED + 17);
    const clear = randomBuf(r, MAX_CLEAR);
    const wire = Buffer.concat(new TransportSealer(key).seal([run, clear], new Set([clear])));
    const opener = new TransportOpener(key);
    const limit = TRANSPORT_HEADER + MAX_SEALED + TAG_SIZE;
    let most = 0;
    const got: Delivered[] = [];
    for (let at = 0; at < wire.length;) {
      const n = 1 + Math.floor(r() * (r() < 0.5 ? 16 : 2048));
      opener.push(wire.subarray(at, at + n), (buf, c) => got.push({ bytes: Buffer.from(buf), clear: c }));
      at += n;
      expect(opener.buffered).toBeLessThanOrEqual(limit);
      most = Math.max(most, opener.buffered);
    }
    // It did hold nearly a whole record at some point: all but the last slice (at most 2048 bytes).
    expect(most).toBeGreaterThanOrEqual(MAX_SEALED + TAG_SIZE - 2048);
    expect(opener.buffered).toBe(0);
    expect(Buffer.concat(got.filter((g) => !g.clear).map((g) => g.bytes)).equals(run)).toBe(true);
    expect(Buffer.concat(got.filter((g) => g.clear).map((g) => g.bytes)).equals(clear)).toBe(true);
  });
});
