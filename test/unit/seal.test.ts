// Per-connection keys of the client leg (src/session/seal.ts): key agreement, sealed records fed
// at random chunk boundaries against a simple reference, and every way a record can be bad.
import { describe, expect, it } from 'vitest';
import { createCipheriv, randomBytes } from 'node:crypto';
import { ErrorCode } from '../../src/errors.js';
import { KEY_CHANGE, MAX_RECORD, Opener, SHARE_SIZE, SealError, Sealer, TAG_SIZE, deriveEarlyKey, deriveStreamKeys, newKeyShare } from '../../src/session/seal.js';
import { rng } from '../support/rng.js';
import { codeOf as codeOfError } from '../support/errors.js';

function keys() {
  const a = newKeyShare();
  const b = newKeyShare();
  return { client: deriveStreamKeys(a, b.share, 'client'), port: deriveStreamKeys(b, a.share, 'client-port'), a, b };
}

const codeOf = (fn: () => unknown) => codeOfError(fn, SealError);

describe('per-connection key agreement', () => {
  it('both sides derive the same keys, swapped, and each exchange gives new ones', () => {
    const k1 = keys();
    expect(k1.a.share.length).toBe(SHARE_SIZE);
    expect(k1.client.send.length).toBe(16);
    expect(k1.client.send.equals(k1.port.recv)).toBe(true);
    expect(k1.client.recv.equals(k1.port.send)).toBe(true);
    expect(k1.client.send.equals(k1.client.recv)).toBe(false);
    const k2 = keys();
    expect(k2.client.send.equals(k1.client.send)).toBe(false);
    expect(k2.a.share.equals(k1.a.share)).toBe(false);
  });

  it('refuses a short share and a low-order (all-zero) share with PS_ERR_STREAM_AUTH', () => {
    const a = newKeyShare();
    expect(codeOf(() => deriveStreamKeys(a, Buffer.alloc(31), 'client'))).toBe(ErrorCode.STREAM_AUTH);
    expect(codeOf(() => deriveStreamKeys(a, Buffer.alloc(32), 'client'))).toBe(ErrorCode.STREAM_AUTH);
  });
});

describe('sealed records', () => {
  it('round-trips random writes fed at random chunk boundaries, byte for byte', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const r = rng(seed);
      const { client, port } = keys();
      const sealer = new Sealer(client.send);
      const opener = new Opener(port.recv);
      const sent: Buffer[] = [];
      const wire: Buffer[] = [];
      for (let i = 0; i < 30; i++) {
        const n = 1 + Math.floor(r() * (r() < 0.2 ? 3 * MAX_RECORD : 3000));
        const b = Buffer.alloc(n, i);
        for (let j = 0; j < n; j += 97) b[j] = Math.floor(r() * 256);
        sent.push(b);
        wire.push(...sealer.seal(b));
      }
      const all = Buffer.concat(wire);
      const got: Buffer[] = [];
      for (let off = 0; off < all.length;) {
        const n = 1 + Math.floor(r() * (r() < 0.5 ? 20 : 70_000));
        opener.push(all.subarray(off, off + n), got);
        off += n;
      }
      expect(Buffer.concat(got).equals(Buffer.concat(sent))).toBe(true);
      expect(opener.buffered).toBe(0);
    }
  });

  it('a list of pieces seals as the same records as their concatenation, at random piece boundaries', () => {
    for (let seed = 1; seed <= 10; seed++) {
      const r = rng(seed);
      const { client } = keys();
      const plain = Buffer.alloc(Math.floor(r() * 3 * MAX_RECORD) + 1);
      for (let j = 0; j < plain.length; j += 89) plain[j] = Math.floor(r() * 256);
      const pieces: Buffer[] = [];
      for (let at = 0; at < plain.length;) {
        const n = Math.min(plain.length - at, 1 + Math.floor(r() * (r() < 0.3 ? MAX_RECORD : 20_000)));
        pieces.push(plain.subarray(at, at + n));
        at += n;
      }
      const whole = Buffer.concat(new Sealer(client.send).seal(plain));
      expect(Buffer.concat(new Sealer(client.send).seal(pieces)).equals(whole)).toBe(true);
    }
  });

  it('sealv() gives the same records as seal(), as pieces (header, cipher output, tag); pushv() the same plaintext as push(), in pieces', () => {
    for (let seed = 1; seed <= 10; seed++) {
      const r = rng(seed);
      const { client } = keys();
      const plain = Buffer.alloc(Math.floor(r() * 3 * MAX_RECORD) + 1);
      for (let j = 0; j < plain.length; j += 97) plain[j] = Math.floor(r() * 256);
      const pieces: Buffer[] = [];
      for (let at = 0; at < plain.length;) {
        const n = Math.min(plain.length - at, 1 + Math.floor(r() * 40_000));
        pieces.push(plain.subarray(at, at + n));
        at += n;
      }
      const records = new Sealer(client.send).seal(pieces);
      const recv = new Sealer(client.send).sealv(pieces);
      expect(recv).toHaveLength(records.length);
      recv.forEach((rec, i) => {
        expect(rec[0]).toHaveLength(4);
        expect(rec.at(-1)).toHaveLength(TAG_SIZE);
        expect(Buffer.concat(rec).equals(records[i]!)).toBe(true);
      });
      // Opened at random chunk boundaries: pushv's pieces join to what push gives, record by record.
      const wire = Buffer.concat(records);
      const a = new Opener(client.send);
      const b = new Opener(client.send);
      const viaPush: Buffer[] = [];
      const viaPushv: Buffer[][] = [];
      for (let at = 0; at < wire.length;) {
        const n = Math.min(wire.length - at, 1 + Math.floor(r() * 60_000));
        a.push(wire.subarray(at, at + n), viaPush);
        b.pushv(wire.subarray(at, at + n), viaPushv);
        at += n;
      }
      expect(viaPushv.map((p) => Buffer.concat(p))).toEqual(viaPush);
      expect(Buffer.concat(viaPush).equals(plain)).toBe(true);
    }
  });

  it('early records, then a KEY_CHANGE record: the opener switches to the agreed key from sequence 0, at random chunk boundaries', () => {
    for (let seed = 1; seed <= 10; seed++) {
      const r = rng(seed);
      const sessionSecret = randomBytes(32); // the client session's early secret (its handshake)
      const agent = newKeyShare(); // the agent's share for this connection
      const early = deriveEarlyKey(sessionSecret, agent.share);
      expect(early).toHaveLength(16);
      expect(deriveEarlyKey(sessionSecret, newKeyShare().share).equals(early)).toBe(false); // per connection
      expect(deriveEarlyKey(randomBytes(32), agent.share).equals(early)).toBe(false); // per session
      const { client, port } = keys();
      const sealer = new Sealer(early);
      const sent: Buffer[] = [];
      const wire: Buffer[] = [];
      const put = (n: number) => {
        const b = Buffer.alloc(n);
        for (let j = 0; j < n; j += 61) b[j] = Math.floor(r() * 256);
        sent.push(b);
        wire.push(...sealer.seal(b));
      };
      for (let i = 0; i < 1 + Math.floor(r() * 4); i++) put(1 + Math.floor(r() * 100_000));
      sealer.rekey(client.send);
      for (let i = 0; i < 1 + Math.floor(r() * 4); i++) put(1 + Math.floor(r() * 100_000));
      const all = Buffer.concat(wire);
      const opener = new Opener(early, 0, port.recv);
      const got: Buffer[] = [];
      for (let at = 0; at < all.length;) {
        const n = 1 + Math.floor(r() * 40_000);
        opener.push(all.subarray(at, at + n), got);
        at += n;
      }
      expect(Buffer.concat(got).equals(Buffer.concat(sent))).toBe(true);
    }
  });

  it('a KEY_CHANGE nobody agreed, a second one, or the old key after it: PS_ERR_STREAM_AUTH', () => {
    const { client, port } = keys();
    const other = keys().client;
    const one = (sealer: Sealer, text: string) => sealer.seal(Buffer.from(text))[0]!;
    const changing = () => new Opener(port.recv, 0, other.send);
    const a = new Sealer(client.send);
    a.rekey(other.send);
    const flagged = one(a, 'x');
    expect((flagged.readUInt32BE(0) & KEY_CHANGE) >>> 0).toBe(KEY_CHANGE);
    expect(codeOf(() => new Opener(port.recv).push(flagged))).toBe(ErrorCode.STREAM_AUTH);
    // Agreed once: a second change is refused.
    const b = new Sealer(client.send);
    b.rekey(other.send);
    const first = one(b, 'y');
    b.rekey(other.send);
    const second = one(b, 'z');
    const o1 = changing();
    expect(o1.push(first).map(String)).toEqual(['y']);
    expect(codeOf(() => o1.push(second))).toBe(ErrorCode.STREAM_AUTH);
    // After the change, a record under the old key fails its tag.
    const c = new Sealer(client.send);
    const old = one(c, 'old');
    c.rekey(other.send);
    const o2 = changing();
    expect(o2.push(one(c, 'new')).map(String)).toEqual(['new']);
    expect(codeOf(() => o2.push(old))).toBe(ErrorCode.STREAM_AUTH);
  });

  it('a record is never larger than MAX_RECORD, and the ciphertext is not the plaintext', () => {
    const { client } = keys();
    const plain = Buffer.alloc(2 * MAX_RECORD + 5, 0x41);
    const recs = new Sealer(client.send).seal(plain);
    expect(recs.map((r) => r.length)).toEqual([MAX_RECORD + 4 + TAG_SIZE, MAX_RECORD + 4 + TAG_SIZE, 5 + 4 + TAG_SIZE]);
    expect(Buffer.concat(recs).includes(Buffer.alloc(64, 0x41))).toBe(false);
  });

  it('releases nothing of a record before its tag checks', () => {
    const { client, port } = keys();
    const rec = new Sealer(client.send).seal(Buffer.from('hello world'))[0];
    const opener = new Opener(port.recv);
    expect(opener.push(rec.subarray(0, rec.length - 1))).toEqual([]);
    expect(opener.buffered).toBe(rec.length - 1);
    expect(opener.push(rec.subarray(rec.length - 1)).map(String)).toEqual(['hello world']);
  });

  it('a flipped bit, a replayed record, a reordered record, the wrong key: PS_ERR_STREAM_AUTH, and the opener stays failed', () => {
    const { client, port } = keys();
    const sealer = new Sealer(client.send);
    const [r1, r2] = [sealer.seal(Buffer.from('one'))[0], sealer.seal(Buffer.from('two'))[0]];
    const flipped = Buffer.from(r1);
    flipped[6] ^= 1;
    expect(codeOf(() => new Opener(port.recv).push(flipped))).toBe(ErrorCode.STREAM_AUTH);
    const replay = new Opener(port.recv);
    replay.push(r1);
    expect(codeOf(() => replay.push(r1))).toBe(ErrorCode.STREAM_AUTH);
    expect(codeOf(() => replay.push(r2))).toBe(ErrorCode.STREAM_AUTH); // failed for good
    expect(codeOf(() => new Opener(port.recv).push(r2))).toBe(ErrorCode.STREAM_AUTH);
    expect(codeOf(() => new Opener(port.send).push(r1))).toBe(ErrorCode.STREAM_AUTH);
  });

  it('refuses a zero or oversized length from the header alone, holding no more than a header', () => {
    const { port } = keys();
    const zero = Buffer.alloc(4);
    expect(codeOf(() => new Opener(port.recv).push(zero))).toBe(ErrorCode.STREAM_AUTH);
    const big = Buffer.alloc(4);
    big.writeUInt32BE(MAX_RECORD + 1, 0);
    const o = new Opener(port.recv);
    expect(codeOf(() => o.push(big))).toBe(ErrorCode.STREAM_AUTH);
  });

  it('matches a reference AES-128-GCM encryption of each record', () => {
    const { client } = keys();
    const sealer = new Sealer(client.send);
    for (let seq = 0; seq < 3; seq++) {
      const plain = Buffer.from(`record ${seq}`);
      const rec = sealer.seal(plain)[0];
      const nonce = Buffer.alloc(12);
      nonce.writeUInt32BE(seq, 8);
      const c = createCipheriv('aes-128-gcm', client.send, nonce);
      c.setAAD(rec.subarray(0, 4));
      const ct = Buffer.concat([c.update(plain), c.final()]);
      expect(rec.readUInt32BE(0)).toBe(plain.length);
      expect(rec.subarray(4, 4 + plain.length).equals(ct)).toBe(true);
      expect(rec.subarray(4 + plain.length).equals(c.getAuthTag())).toBe(true);
    }
  });

  it('with headroom, every record and every plaintext has free bytes in front of it, and round-trips at random chunking', () => {
    const r = rng(99);
    const { client, port } = keys();
    const sealer = new Sealer(client.send, 12);
    const opener = new Opener(port.recv, 12);
    const sent: Buffer[] = [];
    const wire: Buffer[] = [];
    for (let i = 0; i < 20; i++) {
      const b = Buffer.alloc(1 + Math.floor(r() * 150_000), i + 1);
      sent.push(b);
      for (const rec of sealer.seal(b)) {
        expect(rec.byteOffset).toBeGreaterThanOrEqual(12);
        wire.push(rec);
      }
    }
    const all = Buffer.concat(wire);
    const got: Buffer[] = [];
    for (let off = 0; off < all.length;) {
      const n = 1 + Math.floor(r() * 40_000);
      opener.push(all.subarray(off, off + n), got);
      off += n;
    }
    for (const g of got) expect(g.byteOffset).toBeGreaterThanOrEqual(12);
    expect(Buffer.concat(got).equals(Buffer.concat(sent))).toBe(true);
  });
});
