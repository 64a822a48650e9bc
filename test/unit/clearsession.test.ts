// A client session over its own record layer (src/session/transport.ts), in memory and cut at
// random boundaries: frames are sealed, a carried connection's records pass as they are (clear),
// exactly from sealFromHere() on; clear bytes are accepted only where they belong; a bad session
// record ends the session, a bad connection record only its connection.
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { PortsideError, Result } from '../../src/errors.js';
import { CarriedConnection } from '../../src/relay/carried.js';
import { encodeFrame } from '../../src/session/encode.js';
import { FrameType } from '../../src/session/frame.js';
import { newKeyShare } from '../../src/session/seal.js';
import { Session, type SessionOptions } from '../../src/session/session.js';
import type { Stream } from '../../src/session/stream.js';
import { TransportOpener, TransportSealer } from '../../src/session/transport.js';
import { rng } from '../support/rng.js';

type Extra = Partial<Omit<SessionOptions, 'role' | 'onWrite' | 'clearData'>>;

/**
 * client ⇄ client-port with clearData, each direction sealed by a TransportSealer and opened by
 * a TransportOpener, delivered in random slices on later loop turns. `tamper` may change the
 * client → port wire bytes.
 */
function transportPair(o: { client?: Extra; port?: Extra; seed?: number; tamper?: (clear: ReadonlySet<Buffer> | undefined, bufs: Buffer[]) => void } = {}) {
  const r = rng(o.seed ?? 7);
  const kUp = randomBytes(16);
  const kDown = randomBytes(16);
  const closes: Record<'client' | 'port', Array<PortsideError | null>> = { client: [], port: [] };
  const wire: Buffer[] = [];
  /** What each client-side flush handed the socket, as buffers (identity kept). */
  const sent: Buffer[][] = [];
  const accepted: Stream[] = [];
  const mk = (role: 'client' | 'client-port', send: Buffer, extra: Extra | undefined, peer: () => Session) => {
    // This direction's two ends: our sealer, the peer's opener.
    const sealer = new TransportSealer(send);
    const opener = new TransportOpener(send);
    const deliver = (all: Buffer) => {
      let off = 0;
      while (off < all.length) {
        const n = 1 + Math.floor(r() * 30_000);
        try {
          opener.push(all.subarray(off, off + n), (b, clear) => peer().parse(b, clear));
        } catch (err) {
          peer().close(err as PortsideError);
          return;
        }
        off += n;
      }
    };
    return new Session({
      role,
      ...extra,
      clearData: true,
      onClose: (err) => closes[role === 'client' ? 'client' : 'port'].push(err),
      onWrite(chunks, clear) {
        const bufs = sealer.seal(chunks, clear);
        if (role === 'client') {
          o.tamper?.(clear, bufs);
          sent.push(bufs);
        }
        const all = Buffer.concat(bufs);
        wire.push(all);
        setImmediate(() => deliver(all));
      },
    });
  };
  const client: Session = mk('client', kUp, o.client, () => port);
  const port: Session = mk('client-port', kDown, { onStream: (s) => { accepted.push(s); port.answer(s, Result.OK); }, ...o.port }, () => client);
  client.established = port.established = true;
  return { client, port, closes, wire, sent, accepted };
}

const turns = async (n = 20) => { for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r)); };

/**
 * A stream client → port whose far end takes clear bytes and records each piece it is given
 * (`consume`: grant the window back at once). `first`: written before the far end exists.
 */
async function clearStream(p: ReturnType<typeof transportPair>, o: { consume?: boolean; first?: Buffer } = {}) {
  const s = p.client.open('0.0.0.0', 0, Buffer.alloc(32, 1));
  if (o.first) s.write(o.first);
  await turns(3);
  const far = p.accepted.at(-1)!;
  far.acceptsClear = true;
  const got: Array<{ b: Buffer; clear: boolean }> = [];
  far.ondata = (b, clear) => {
    got.push({ b: Buffer.from(b), clear: clear === true });
    if (o.consume !== false) far.consumed(b.length);
  };
  return { s, far, got };
}

describe('client session transport: clear DATA', () => {
  it('bytes written before sealFromHere() travel sealed, those after it as they are, split exactly there, in order', async () => {
    const p = transportPair();
    const before = Buffer.from('SECRET-SET-UP-'.repeat(50));
    const after = randomBytes(300_000); // stands for sealed records: more than one frame
    const { s, got } = await clearStream(p, { first: before.subarray(0, 400) });
    s.write(before.subarray(400));
    s.sealFromHere();
    s.write(after);
    await turns();
    const sealedPart = Buffer.concat(got.filter((g) => !g.clear).map((g) => g.b));
    const clearPart = Buffer.concat(got.filter((g) => g.clear).map((g) => g.b));
    expect(sealedPart).toEqual(before.subarray(400)); // the first 400 came before ondata was set
    expect(clearPart).toEqual(after);
    // Nothing sealed comes after the first clear byte.
    const firstClear = got.findIndex((g) => g.clear);
    expect(got.slice(firstClear).every((g) => g.clear)).toBe(true);
    // On the wire: the set-up bytes never in the clear, the pre-sealed ones verbatim.
    const onWire = Buffer.concat(p.wire);
    expect(onWire.includes(Buffer.from('SECRET-SET-UP-'))).toBe(false);
    expect(onWire.includes(after.subarray(1000, 1100))).toBe(true);
  });

  it('bytes queued (window full) when sealFromHere() is called still travel sealed', async () => {
    const p = transportPair({ client: { window: 1000 }, port: { window: 1000 } });
    const { s, far, got } = await clearStream(p);
    s.write(Buffer.alloc(3000, 0x61)); // 1000 go, 2000 wait for window
    expect(s.bufferedBytes).toBe(2000);
    s.sealFromHere();
    s.write(Buffer.alloc(500, 0x62));
    for (let i = 0; i < 20 && got.reduce((a, g) => a + g.b.length, 0) < 3500; i++) {
      far.consumed(0);
      await turns(5);
    }
    const sealed = got.filter((g) => !g.clear).reduce((a, g) => a + g.b.length, 0);
    const clear = got.filter((g) => g.clear).reduce((a, g) => a + g.b.length, 0);
    expect(sealed).toBe(3000);
    expect(clear).toBe(500);
  });

  it('writev(): a record\'s pieces go as one DATA frame, clear, when the window takes it whole; joined when it does not', async () => {
    const p = transportPair({ client: { window: 100_000 }, port: { window: 100_000 } });
    const { s, far, got } = await clearStream(p, { consume: false });
    s.sealFromHere();
    const rec = [Buffer.from('HEAD'), randomBytes(60_000), Buffer.from('TAG-TAG-TAG-TAG!')];
    const sentBefore = p.sent.length;
    expect(s.writev(rec)).toBe(true);
    await turns();
    // One transport record (the frame header) followed by the three pieces themselves, in one write.
    expect(p.sent.slice(sentBefore)).toHaveLength(1);
    const out = p.sent[sentBefore]!;
    expect(out).toHaveLength(4);
    rec.forEach((piece, i) => expect(out[i + 1]).toBe(piece));
    expect(Buffer.concat(got.map((g) => g.b))).toEqual(Buffer.concat(rec));
    expect(got.every((g) => g.clear)).toBe(true);
    // 60 020 of the 100 000 window are used: the next record does not fit whole, and is joined.
    got.length = 0;
    const rec2 = [Buffer.from('HEAD'), randomBytes(60_000), Buffer.from('TAG-TAG-TAG-TAG!')];
    expect(s.writev(rec2)).toBe(false);
    far.consumed(60_020 + 60_020);
    await turns();
    expect(p.sent.flat().includes(rec2[1]!)).toBe(false); // joined into a buffer of its own
    expect(Buffer.concat(got.map((g) => g.b))).toEqual(Buffer.concat(rec2));
    expect(got.every((g) => g.clear)).toBe(true);
  });

  it('clear bytes for a stream that takes only sealed ones end the session with PS_ERR_PROTOCOL', async () => {
    const p = transportPair();
    const s = p.client.open('0.0.0.0', 0, Buffer.alloc(32, 1));
    await turns(3);
    p.accepted[0]!.ondata = () => {}; // acceptsClear left false
    s.sealFromHere();
    s.write(Buffer.from('records'));
    await turns();
    expect(p.port.closed).toBe(true);
    expect(p.closes.port[0]?.code).toBe('PS_ERR_PROTOCOL');
  });

  it('parse(chunk, true) outside a DATA payload is PS_ERR_MALFORMED_FRAME; on a session without the transport PS_ERR_PROTOCOL', () => {
    const errs: Array<PortsideError | null> = [];
    const a = new Session({ role: 'client-port', clearData: true, onWrite: () => {}, onClose: (e) => errs.push(e) });
    a.established = true;
    a.parse(encodeFrame(FrameType.PING, 0, 0, Buffer.alloc(8)).subarray(0, 5), true);
    expect(errs[0]?.code).toBe('PS_ERR_MALFORMED_FRAME');
    const b = new Session({ role: 'client-port', onWrite: () => {}, onClose: (e) => errs.push(e) });
    b.parse(Buffer.from('x'), true);
    expect(errs[1]?.code).toBe('PS_ERR_PROTOCOL');
  });
});

describe('client session transport: carried connections', () => {
  /** A carried connection opened by the agent and accepted by the relay, not sealed yet; `seal*` do each side. */
  async function open(p: ReturnType<typeof transportPair>) {
    const a = newKeyShare();
    const near = new CarriedConnection(p.client.open('0.0.0.0', 0, a.share));
    await turns(3);
    const s = p.accepted.at(-1)!;
    const far = new CarriedConnection(s);
    const b = newKeyShare();
    return { near, far, sealFar: () => far.seal(b, s.extra!, 'client-port'), sealNear: () => near.seal(a, b.share, 'client') };
  }
  async function connect(p: ReturnType<typeof transportPair>) {
    const c = await open(p);
    c.sealFar();
    c.sealNear();
    return c;
  }
  const collect = (c: CarriedConnection) => new Promise<Buffer>((resolve, reject) => {
    const got: Buffer[] = [];
    c.on('data', (b: Buffer) => got.push(b));
    c.on('end', () => resolve(Buffer.concat(got)));
    c.on('error', reject);
  });

  it('records that arrive before the receiver has the keys are held, never read as set-up bytes, and opened once it has them', async () => {
    const { near, far, sealNear, sealFar } = await open(transportPair());
    // The agent has the relay's share first and sends at once; the relay seals later.
    sealNear();
    const got = collect(far);
    near.end(Buffer.from('sent before the relay had its keys'));
    await turns();
    expect(far.read()).toBeNull(); // nothing reached the set-up reader
    sealFar();
    expect((await got).toString()).toBe('sent before the relay had its keys');
  });

  it('connections flow both ways; no byte of theirs is on the wire in the clear', async () => {
    const p = transportPair();
    const x = await connect(p);
    const y = await connect(p);
    const msgX = Buffer.from('PLAINTEXT-X-'.repeat(30_000));
    const msgY = Buffer.from('PLAINTEXT-Y-'.repeat(20_000));
    const gotX = collect(x.far);
    const gotY = collect(y.near);
    x.near.end(msgX);
    y.far.end(msgY);
    expect(await gotX).toEqual(msgX);
    expect(await gotY).toEqual(msgY);
    const onWire = Buffer.concat(p.wire);
    expect(onWire.includes(Buffer.from('PLAINTEXT-'))).toBe(false);
    expect(p.client.closed || p.port.closed).toBe(false);
  });

  it('a changed byte in a connection\'s clear record resets that connection (PS_ERR_STREAM_AUTH); a changed sealed byte ends the session (PS_ERR_SESSION_AUTH)', async () => {
    let mode: 'none' | 'clear' | 'sealed' = 'none';
    const p = transportPair({
      tamper: (clear, bufs) => {
        if (mode === 'none') return;
        for (const b of bufs) {
          if (mode === 'clear' && clear?.has(b)) { b[b.length >> 1] ^= 1; mode = 'none'; return; }
          if (mode === 'sealed' && !clear?.has(b)) { b[b.length - 1] ^= 1; mode = 'none'; return; }
        }
      },
    });
    const x = await connect(p);
    const y = await connect(p);
    const failures: string[] = [];
    x.far.onfailure = (e) => failures.push(e.code);
    x.far.on('error', () => {});
    x.near.on('error', () => {}); // reset by the port (PROTOCOL_ERROR)
    const gotY = collect(y.far);
    mode = 'clear';
    x.near.write(Buffer.from('tampered'));
    y.near.end(Buffer.from('untouched'));
    expect(await gotY).toEqual(Buffer.from('untouched'));
    await turns();
    expect(failures).toEqual(['PS_ERR_STREAM_AUTH']);
    expect(p.port.closed).toBe(false);
    mode = 'sealed';
    p.client.ping();
    await turns();
    expect(p.port.closed).toBe(true);
    expect(p.closes.port[0]?.code).toBe('PS_ERR_SESSION_AUTH');
  });
});
