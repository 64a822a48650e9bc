// A client session in memory (role client ⇄ client-port) carrying CarriedConnections: each
// connection sealed with keys of its own, a bad record resets only its own connection, and a
// reader that does not read holds no more than its window.
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { ErrorCode, PortsideError, Result } from '../../src/errors.js';
import { CarriedConnection } from '../../src/relay/carried.js';
import { FrameDecoder } from '../../src/session/decode.js';
import { FrameType } from '../../src/session/frame.js';
import { newKeyShare } from '../../src/session/seal.js';
import { Session } from '../../src/session/session.js';
import type { Stream } from '../../src/session/stream.js';

/** client ⇄ client-port over an in-memory wire; `tamper` may change client→port frames. */
function clientSessionPair(tamper?: (type: number, stream: number, payload: Buffer) => void) {
  const wire: Buffer[] = [];
  const accepted: Stream[] = [];
  const dec = new FrameDecoder(16 * 1024 * 1024);
  const port: Session = new Session({
    role: 'client-port',
    onWrite: (chunks) => { const b = Buffer.concat(chunks); wire.push(b); setImmediate(() => client.parse(b)); },
    onStream: (s) => { accepted.push(s); port.answer(s, Result.OK); },
  });
  const client: Session = new Session({
    role: 'client',
    onWrite: (chunks) => {
      const b = Buffer.concat(chunks);
      wire.push(b);
      if (tamper) {
        // Re-frame so a test can alter one frame's payload in flight.
        for (const f of dec.push(b)) {
          const payload = Buffer.from(f.payload);
          tamper(f.type, f.stream, payload);
          const h = Buffer.alloc(12);
          h[0] = f.type; h[1] = f.flags; h.writeUInt32BE(f.stream, 4); h.writeUInt32BE(payload.length, 8);
          const out = Buffer.concat([h, payload]);
          setImmediate(() => port.parse(out));
        }
      } else setImmediate(() => port.parse(b));
    },
  });
  client.established = port.established = true;
  return { client, port, accepted, wire };
}

/** Open one connection and do the key exchange the way the agent and the client port do. */
async function connect(p: ReturnType<typeof clientSessionPair>) {
  const a = newKeyShare();
  const near = new CarriedConnection(p.client.open('0.0.0.0', 0, a.share));
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  const s = p.accepted.at(-1)!;
  const far = new CarriedConnection(s);
  const b = newKeyShare();
  far.seal(b, s.extra!, 'client-port');
  near.seal(a, b.share, 'client');
  return { near, far, share: s.extra! };
}

function collect(c: CarriedConnection): Promise<Buffer> {
  const got: Buffer[] = [];
  c.on('data', (b: Buffer) => got.push(b));
  return new Promise((resolve, reject) => {
    c.on('end', () => resolve(Buffer.concat(got)));
    c.on('error', reject);
  });
}

describe('carried connections on a client session', () => {
  it('each connection has its own key share; data both ways arrives whole and never crosses the wire in the clear', async () => {
    const p = clientSessionPair();
    const one = await connect(p);
    const two = await connect(p);
    expect(one.share.equals(two.share)).toBe(false);
    const marker = Buffer.from('portside-plaintext-marker-'.repeat(4));
    const up = Buffer.concat([marker, randomBytes(700_000), marker]);
    const down = Buffer.concat([randomBytes(300_000), marker]);
    const gotUp = collect(one.far);
    const gotDown = collect(one.near);
    const gotTwo = collect(two.far);
    one.near.end(up);
    one.far.end(down);
    two.near.end(marker);
    expect((await gotUp).equals(up)).toBe(true);
    expect((await gotDown).equals(down)).toBe(true);
    expect((await gotTwo).equals(marker)).toBe(true);
    expect(Buffer.concat(p.wire).includes(marker.subarray(0, 24))).toBe(false);
  });

  it('a tampered record resets only its own connection with PS_ERR_STREAM_AUTH; the other keeps flowing', async () => {
    let victim = -1;
    const p = clientSessionPair((type, stream, payload) => {
      if (type === FrameType.DATA && stream === victim && payload.length > 20) payload[10] ^= 0xff;
    });
    const bad = await connect(p);
    const good = await connect(p);
    victim = bad.near.stream.id;
    const failures: PortsideError[] = [];
    bad.far.onfailure = (e) => failures.push(e);
    const badErr = new Promise<Error>((r) => bad.far.on('error', r));
    const nearClosed = new Promise<void>((r) => bad.near.on('close', () => r()));
    bad.near.on('error', () => {});
    bad.near.write(Buffer.alloc(1000, 7));
    const err = await badErr;
    expect((err as PortsideError).code).toBe(ErrorCode.STREAM_AUTH);
    expect(failures.map((f) => f.code)).toEqual([ErrorCode.STREAM_AUTH]);
    await nearClosed; // the reset reached the agent's side
    const got = collect(good.far);
    const data = randomBytes(200_000);
    good.near.end(data);
    expect((await got).equals(data)).toBe(true);
    expect(p.client.closed).toBe(false);
  });

  it('a reader that does not read holds about one window; reading resumes the flow', async () => {
    const p = clientSessionPair();
    const c = await connect(p);
    c.far.pause();
    const total = 6 * 1024 * 1024;
    let writerBlocked = false;
    const chunk = Buffer.alloc(64 * 1024, 1);
    for (let sent = 0; sent < total; sent += chunk.length) if (!c.near.write(chunk)) writerBlocked = true;
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    expect(writerBlocked).toBe(true);
    // Held at the far end: its readable buffer plus what is in flight, within one window and a record.
    expect(c.far.readableLength).toBeLessThanOrEqual(p.port.windowSize + 128 * 1024);
    expect(c.far.stream.recvWindow).toBeGreaterThanOrEqual(0);
    const got = collect(c.far);
    c.near.end();
    c.far.resume();
    expect((await got).length).toBe(total);
  });

  it("bridge(): the outside relay's direct path to the inside relay's stream, both ways, with FIN, and a bad record resetting both", async () => {
    // The relay session: outside ⇄ inside in memory; the inside end collects what arrives.
    let insideEnd: Session;
    const remote: Stream[] = [];
    const outsideEnd: Session = new Session({
      role: 'outside',
      onWrite: (chunks) => { const b = Buffer.concat(chunks); setImmediate(() => insideEnd.parse(b)); },
    });
    insideEnd = new Session({
      role: 'inside',
      onWrite: (chunks) => { const b = Buffer.concat(chunks); setImmediate(() => outsideEnd.parse(b)); },
      onStream: (st) => { remote.push(st); insideEnd.answer(st, Result.OK); },
    });
    outsideEnd.established = insideEnd.established = true;
    const collectStream = (st: Stream) => new Promise<Buffer>((resolve) => {
      const got: Buffer[] = [];
      st.ondata = (b) => { got.push(Buffer.from(b)); st.consumed(b.length); };
      st.onend = () => resolve(Buffer.concat(got));
    });

    const p = clientSessionPair();
    const c = await connect(p);
    const toInside = outsideEnd.open('10.0.0.1', 80);
    await new Promise<void>((r) => { toInside.onopen = () => r(); });
    const target = remote.at(-1)!;
    const done: Array<[number, string]> = [];
    c.far.bridge(toInside, (r, m) => done.push([r, m]));
    const up = randomBytes(900_000);
    const down = randomBytes(500_000);
    const atTarget = collectStream(target);
    const atAgent = collect(c.near);
    c.near.end(up);
    target.write(down);
    target.end();
    expect((await atTarget).equals(up)).toBe(true);
    expect((await atAgent).equals(down)).toBe(true);
    for (let i = 0; i < 20 && !done.length; i++) await new Promise((r) => setImmediate(r));
    expect(done).toEqual([[Result.OK, 'closed']]);
    expect(c.far.destroyed).toBe(true);

    // A bad record on a bridged connection: both streams reset, PS_ERR_STREAM_AUTH reported.
    let victim = -1;
    const q = clientSessionPair((type, stream, payload) => {
      if (type === FrameType.DATA && stream === victim && payload.length > 20) payload[10] ^= 0xff;
    });
    const d = await connect(q);
    victim = d.near.stream.id;
    const toInside2 = outsideEnd.open('10.0.0.1', 80);
    await new Promise<void>((r) => { toInside2.onopen = () => r(); });
    const target2 = remote.at(-1)!;
    const targetReset = new Promise<number>((r) => { target2.onreset = (res) => r(res); });
    const failures: string[] = [];
    d.far.onfailure = (e) => failures.push(e.code);
    d.far.bridge(toInside2, () => {});
    d.near.on('error', () => {});
    d.near.write(Buffer.alloc(5000, 1));
    expect(await targetReset).toBe(Result.CANCELLED);
    expect(failures).toEqual([ErrorCode.STREAM_AUTH]);
    expect(q.client.closed).toBe(false);
  });
});
