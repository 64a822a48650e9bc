import { describe, expect, it } from 'vitest';
import { ErrorCode, PortsideError } from '../../src/errors.js';
import { decodeAddress, FrameDecoder } from '../../src/session/decode.js';
import { encodeAddress, encodeFrame } from '../../src/session/encode.js';
import { Flag, FrameType, HEADER_SIZE, type Frame } from '../../src/session/frame.js';
import { rng } from '../support/rng.js';

const int = (r: () => number, n: number) => Math.floor(r() * n);
const bytes = (r: () => number, n: number) => {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = int(r, 256);
  return b;
};

const TYPES = Object.values(FrameType);
const MAX = 4096;

interface Decoded {
  control: Array<{ type: number; flags: number; stream: number; payload: string }>;
  data: Map<number, Buffer>;
}
interface Pieces {
  control: Decoded['control'];
  data: Map<number, Buffer[]>;
}

/** Reference decoder: the whole input at once, the simplest possible reading of the format. */
function reference(buf: Buffer): Decoded {
  const out: Decoded = { control: [], data: new Map() };
  let off = 0;
  while (off < buf.length) {
    const type = buf[off];
    const flags = buf[off + 1];
    const stream = buf.readUInt32BE(off + 4);
    const len = buf.readUInt32BE(off + 8);
    const payload = buf.subarray(off + HEADER_SIZE, off + HEADER_SIZE + len);
    off += HEADER_SIZE + len;
    if (type === FrameType.DATA) { if (len) out.data.set(stream, Buffer.concat([out.data.get(stream) ?? Buffer.alloc(0), payload])); }
    else out.control.push({ type, flags, stream, payload: payload.toString('hex') });
  }
  return out;
}

function collect(frames: Frame[], into: Pieces): void {
  for (const f of frames) {
    if (f.type === FrameType.DATA) {
      let l = into.data.get(f.stream);
      if (!l) into.data.set(f.stream, (l = []));
      l.push(f.payload);
    } else into.control.push({ type: f.type, flags: f.flags, stream: f.stream, payload: Buffer.from(f.payload).toString('hex') });
  }
}

function randomFrames(r: () => number, count: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const type = TYPES[int(r, TYPES.length)];
    const len = r() < 0.1 ? 0 : r() < 0.05 ? MAX : int(r, type === FrameType.DATA ? MAX : 300);
    const flags = type === FrameType.PING && r() < 0.5 ? Flag.ACK : 0;
    parts.push(encodeFrame(type, flags, int(r, 8), bytes(r, len)));
  }
  return Buffer.concat(parts);
}

/** Feed `buf` in pieces whose sizes `next()` picks; check memory held stays bounded throughout. */
function feed(buf: Buffer, next: () => number): Decoded {
  const d = new FrameDecoder(MAX);
  const got: Pieces = { control: [], data: new Map() };
  let off = 0;
  let peak = 0;
  while (off < buf.length) {
    const n = Math.max(1, Math.min(next(), buf.length - off));
    // Copy so no frame can alias a later chunk's memory.
    collect(d.push(Buffer.from(buf.subarray(off, off + n))), got);
    peak = Math.max(peak, d.held);
    off += n;
  }
  expect(peak).toBeLessThanOrEqual(HEADER_SIZE + MAX);
  expect(d.held).toBe(0);
  return { control: got.control, data: new Map([...got.data].map(([k, v]) => [k, Buffer.concat(v)])) };
}

function expectSame(got: Decoded, want: Decoded): void {
  expect(got.control).toEqual(want.control);
  expect([...got.data.keys()].sort()).toEqual([...want.data.keys()].sort());
  for (const [k, v] of want.data) expect(got.data.get(k)!.equals(v)).toBe(true);
}

describe('frame codec: random frames, random chunk boundaries', () => {
  it('matches the reference decoder over 200 seeded splittings', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const r = rng(seed);
      const wire = randomFrames(r, 1 + int(r, 40));
      const want = reference(wire);
      const maxPiece = [1, 7, 13, 100, 5000, 1 << 20][seed % 6];
      expectSame(feed(wire, () => 1 + int(r, maxPiece)), want);
    }
  });

  it('matches the reference decoder fed byte by byte', () => {
    for (let seed = 1000; seed < 1010; seed++) {
      const r = rng(seed);
      const wire = randomFrames(r, 30);
      expectSame(feed(wire, () => 1), reference(wire));
    }
  });

  it('matches the reference decoder fed the whole input at once', () => {
    const r = rng(77);
    const wire = randomFrames(r, 500);
    expectSame(feed(wire, () => wire.length), reference(wire));
  });

  it('emits a DATA piece as a view without waiting for the whole payload', () => {
    const d = new FrameDecoder(MAX);
    const wire = encodeFrame(FrameType.DATA, 0, 5, Buffer.alloc(1000, 0xab));
    const first = d.push(wire.subarray(0, HEADER_SIZE + 10));
    expect(first).toHaveLength(1);
    expect(first[0]).toMatchObject({ type: FrameType.DATA, stream: 5 });
    expect(first[0].payload.length).toBe(10);
    expect(d.held).toBe(0); // DATA is never buffered by the decoder
    const rest = d.push(wire.subarray(HEADER_SIZE + 10));
    expect(rest.map((f) => f.payload.length)).toEqual([990]);
  });

  it('empty DATA frames produce nothing; empty control frames are complete', () => {
    const d = new FrameDecoder(MAX);
    const out = d.push(Buffer.concat([encodeFrame(FrameType.DATA, 0, 3), encodeFrame(FrameType.FIN, 0, 3)]));
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ type: FrameType.FIN, stream: 3 });
    expect(out[0].payload.length).toBe(0);
  });

  it('writes the header exactly as docs/protocol.md says (big-endian, reserved zero)', () => {
    const f = encodeFrame(FrameType.WINDOW_UPDATE, 0x01, 0x01020304, Buffer.of(9, 8, 7));
    expect([...f]).toEqual([0x20, 0x01, 0, 0, 1, 2, 3, 4, 0, 0, 0, 3, 9, 8, 7]);
  });
});

const ALLOWED = new Set<string>([ErrorCode.UNKNOWN_COMMAND, ErrorCode.FRAME_TOO_LARGE, ErrorCode.MALFORMED_FRAME]);

function garbageOutcome(d: FrameDecoder, input: Buffer, r: () => number): 'ok' | string {
  let off = 0;
  try {
    while (off < input.length) {
      const n = 1 + int(r, 64);
      d.push(input.subarray(off, off + n));
      expect(d.held).toBeLessThanOrEqual(HEADER_SIZE + MAX);
      off += n;
    }
    return 'ok';
  } catch (err) {
    expect(err).toBeInstanceOf(PortsideError);
    const code = (err as PortsideError).code;
    expect(ALLOWED.has(code), `unexpected code ${code}`).toBe(true);
    return code;
  }
}

describe('frame codec: garbage', () => {
  it('random bytes never crash: either frames or a typed PortsideError', () => {
    const seen = new Map<string, number>();
    for (let seed = 1; seed <= 3000; seed++) {
      const r = rng(seed);
      const input = bytes(r, 1 + int(r, 300));
      // Often start with a known type so the decoder gets past the first byte.
      if (seed % 2 === 0) input[0] = TYPES[int(r, TYPES.length)];
      if (seed % 4 === 0 && input.length >= HEADER_SIZE) { input[2] = 0; input[3] = 0; }
      const o = garbageOutcome(new FrameDecoder(MAX), input, r);
      seen.set(o, (seen.get(o) ?? 0) + 1);
    }
    // Each kind of failure was actually exercised.
    for (const c of ALLOWED) expect(seen.get(c) ?? 0).toBeGreaterThan(0);
  });

  it('mutated valid streams never crash', () => {
    for (let seed = 1; seed <= 1000; seed++) {
      const r = rng(seed + 50_000);
      const wire = randomFrames(r, 5);
      for (let k = 0; k < 3; k++) wire[int(r, wire.length)] = int(r, 256);
      garbageOutcome(new FrameDecoder(MAX), wire, r);
    }
  });

  it('unknown command, reserved bits and oversize each give their own code', () => {
    const hdr = (t: number, res: number, len: number) => {
      const b = Buffer.alloc(HEADER_SIZE);
      b[0] = t;
      b[2] = res;
      b.writeUInt32BE(len, 8);
      return b;
    };
    const code = (b: Buffer) => { try { new FrameDecoder(MAX).push(b); return 'none'; } catch (e) { return (e as PortsideError).code; } };
    expect(code(hdr(0x7f, 0, 0))).toBe(ErrorCode.UNKNOWN_COMMAND);
    expect(code(hdr(0x00, 0, 0))).toBe(ErrorCode.UNKNOWN_COMMAND);
    expect(code(hdr(FrameType.PING, 1, 0))).toBe(ErrorCode.MALFORMED_FRAME);
    expect(code(hdr(FrameType.DATA, 0, MAX + 1))).toBe(ErrorCode.FRAME_TOO_LARGE);
    expect(code(hdr(FrameType.DATA, 0, MAX))).toBe('none');
  });

  it('rejects an oversized frame from its header alone, holding at most a header', () => {
    for (const type of [FrameType.DATA, FrameType.INIT, FrameType.GOAWAY]) {
      const d = new FrameDecoder(MAX);
      const h = Buffer.alloc(HEADER_SIZE);
      h[0] = type;
      h.writeUInt32BE(0xffffffff, 8);
      // The first 11 bytes are held (no decision possible yet) ...
      for (let i = 0; i < HEADER_SIZE - 1; i++) {
        d.push(h.subarray(i, i + 1));
        expect(d.held).toBe(i + 1);
      }
      // ... the 12th decides: no payload byte was ever needed.
      let err: unknown;
      try { d.push(h.subarray(HEADER_SIZE - 1)); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(PortsideError);
      expect((err as PortsideError).code).toBe(ErrorCode.FRAME_TOO_LARGE);
      expect(d.held).toBeLessThanOrEqual(HEADER_SIZE);
    }
  });

  it('a large control frame arriving slowly is held up to its own length, no more', () => {
    const d = new FrameDecoder(MAX);
    const wire = encodeFrame(FrameType.INIT, 0, 0, Buffer.alloc(MAX, 1));
    let peak = 0;
    let frames = 0;
    for (let off = 0; off < wire.length; off += 100) {
      frames += d.push(wire.subarray(off, off + 100)).length;
      peak = Math.max(peak, d.held);
    }
    expect(frames).toBe(1);
    expect(peak).toBeLessThanOrEqual(MAX);
    expect(d.held).toBe(0);
  });
});

describe('address encoding', () => {
  it('round-trips IPv4, IPv6 and DNS names', () => {
    for (const [h, p] of [['127.0.0.1', 80], ['::1', 65535], ['intranet.example', 1]] as const) {
      const a = encodeAddress(h, p);
      expect(a.readUInt16BE(0)).toBe(p);
      expect(a[2]).toBe(Buffer.byteLength(h));
      expect(decodeAddress(a)).toEqual({ host: h, port: p });
    }
  });
  it('rejects short, empty-host and length-mismatched addresses with PS_ERR_MALFORMED_FRAME', () => {
    for (const b of [Buffer.of(0, 80), Buffer.of(0, 80, 0), Buffer.of(0, 80, 5, 0x61), Buffer.concat([encodeAddress('a', 1), Buffer.of(1)])]) {
      expect(() => decodeAddress(b)).toThrow(expect.objectContaining({ code: ErrorCode.MALFORMED_FRAME }));
    }
    expect(() => encodeAddress('x'.repeat(256), 1)).toThrow(RangeError);
  });
});
