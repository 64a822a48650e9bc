// A client session in memory (role client ⇄ client-port) carrying CarriedConnections: each
// connection sealed with keys of its own, a bad record resets only its own connection, and a
// reader that does not read holds no more than its window.
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { ErrorCode, PortsideError, Result } from '../../src/errors.js';
import { CarriedConnection } from '../../src/relay/carried.js';
import { FrameDecoder } from '../../src/session/decode.js';
import { FrameType } from '../../src/session/frame.js';
import { deriveEarlyKey, newKeyShare, type Sealer } from '../../src/session/seal.js';
import { Session } from '../../src/session/session.js';
import type { Stream } from '../../src/session/stream.js';

/** client ⇄ client-port over an in-memory wire; `tamper` may change client→port frames. */
function clientSessionPair(tamper?: (type: number, stream: number, payload: Buffer) => void) {
  const wire: Buffer[] = [];
  const accepted: Stream[] = [];
  /** `down`: may change port→client bytes in flight (whole frame batches). */
  const hooks: { down: ((b: Buffer) => void) | null; onStream: ((s: Stream) => void) | null } = { down: null, onStream: null };
  const dec = new FrameDecoder(16 * 1024 * 1024);
  const port: Session = new Session({
    role: 'client-port',
    onWrite: (chunks) => { const b = Buffer.concat(chunks); wire.push(b); hooks.down?.(b); setImmediate(() => client.parse(b)); },
    onStream: (s) => { accepted.push(s); hooks.onStream?.(s); port.answer(s, Result.OK); },
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
  return { client, port, accepted, wire, hooks };
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

/** A real loopback socket pair: `app` is the local program, `local` the agent's accepted end. */
async function socketPair(): Promise<{ app: net.Socket; local: net.Socket }> {
  const srv = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
  const app = net.connect({ port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  const local = await accepted;
  srv.close();
  return { app, local };
}

function readAll(s: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    s.on('data', (b: Buffer) => got.push(b));
    s.on('end', () => resolve(Buffer.concat(got)));
    s.on('error', reject);
  });
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

  it('a connection whose peer ends it inside a sealed record is reset with PS_ERR_STREAM_AUTH, not ended as if complete', async () => {
    const p = clientSessionPair();
    const c = await connect(p);
    const sealer = (c.near as unknown as { sealer: Sealer }).sealer;
    const whole = sealer.seal(Buffer.alloc(1000, 3))[0]!;
    const failed = new Promise<string>((resolve) => {
      c.far.on('error', (e: PortsideError) => resolve(e.code));
      c.far.on('end', () => resolve('ended cleanly'));
      c.far.resume();
    });
    const told = new Promise<number>((resolve) => c.near.on('error', (e: PortsideError) => resolve(e.result)));
    c.near.stream.write(whole.subarray(0, 500)); // half a record, then FIN
    c.near.stream.end();
    expect(await failed).toBe(ErrorCode.STREAM_AUTH);
    expect(await told).toBe(Result.PROTOCOL_ERROR); // the peer learns why
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

  it('a connection set up while the session is busy (its transport full) still seals, and flows once the transport drains', async () => {
    const p = clientSessionPair();
    const a = newKeyShare();
    p.client.setBlocked(true); // the session's socket is full: stream writes return false
    const near = new CarriedConnection(p.client.open('0.0.0.0', 0, a.share));
    near.write(Buffer.from('request in the clear'));
    for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
    const s = p.accepted.at(-1)!;
    const far = new CarriedConnection(s);
    const b = newKeyShare();
    far.seal(b, s.extra!, 'client-port');
    expect(() => near.seal(a, b.share, 'client')).not.toThrow();
    const got = collect(far);
    near.end(Buffer.from('sealed data'));
    p.client.setBlocked(false);
    far.end();
    expect((await got).toString()).toBe('sealed data'); // the clear request came before `far` listened
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

  it('early mode: the program\'s bytes leave before the answer under the early key, then under the connection\'s own key, in order, both ways', async () => {
    const { app, local } = await socketPair();
    const p = clientSessionPair();
    const sessionSecret = randomBytes(32); // the client session's early secret (its handshake)
    const a = newKeyShare();
    const b = newKeyShare();
    let far: CarriedConnection | null = null;
    p.hooks.onStream = (s) => {
      far = new CarriedConnection(s);
      far.openEarly(b, s.extra!, sessionSecret);
    };
    const near = new CarriedConnection(p.client.open('0.0.0.0', 0, a.share));
    near.sealEarly(deriveEarlyKey(sessionSecret, a.share));
    near.carry(local); // before any answer
    const early = randomBytes(700_000);
    app.write(early);
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(far).not.toBeNull();
    // The outside relay answers (its share) and seals its direction; the agent reads the answer.
    far!.seal(b, a.share, 'client-port');
    near.seal(a, b.share, 'client');
    const late = randomBytes(900_000);
    const down = randomBytes(600_000);
    const atFar = collect(far!);
    const atApp = readAll(app);
    app.end(late);
    far!.end(down);
    expect((await atFar).equals(Buffer.concat([early, late]))).toBe(true);
    expect((await atApp).equals(down)).toBe(true);
  });

  it("carry(): the agent's direct path between a local socket and the sealed stream, both ways, bytes that came before it first, and a bad record resetting the socket", async () => {

    const p = clientSessionPair();
    const c = await connect(p);
    const early = randomBytes(3000);
    c.far.write(early); // arrives before carry(): it must reach the program first
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    const { app, local } = await socketPair();
    c.near.carry(local);
    const up = randomBytes(3_000_000);
    const down = randomBytes(2_000_000);
    const atFar = collect(c.far);
    const atApp = readAll(app);
    app.end(up);
    c.far.end(down);
    expect((await atFar).equals(up)).toBe(true);
    expect((await atApp).equals(Buffer.concat([early, down]))).toBe(true);
    await new Promise<void>((r) => (c.near.destroyed ? r() : c.near.once('close', () => r())));
    expect(c.near.stream.result).toBe(Result.OK);

    // A bad record: the program's socket is reset, the failure is PS_ERR_STREAM_AUTH.
    let victim = -1;
    const q = clientSessionPair();
    const d = await connect(q);
    victim = d.far.stream.id;
    const { app: app2, local: local2 } = await socketPair();
    const failures: string[] = [];
    d.near.onfailure = (e) => failures.push(e.code);
    d.near.carry(local2);
    const appErr = new Promise<string>((r) => { app2.on('error', (e: NodeJS.ErrnoException) => r(e.code ?? '')); app2.on('close', () => r('closed')); });
    app2.resume();
    // Flip a ciphertext byte of the next record on its way to the agent.
    q.hooks.down = (b) => {
      for (let at = 0; at + 12 <= b.length; at += 12 + b.readUInt32BE(at + 8)) {
        if (b[at] === FrameType.DATA && b.readUInt32BE(at + 4) === victim && b.readUInt32BE(at + 8) > 40) b[at + 30] ^= 0xff;
      }
    };
    const farReset = new Promise<number>((r) => d.far.on('error', (e: PortsideError) => r(e.result)));
    d.far.write(Buffer.alloc(5000, 7));
    expect(await appErr).toBe('ECONNRESET');
    expect(await farReset).toBe(Result.PROTOCOL_ERROR); // the outside relay learns why
    expect(failures).toEqual([ErrorCode.STREAM_AUTH]);
    expect(q.client.closed).toBe(false);
  });
});
