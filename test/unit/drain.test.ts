// Graceful stop (src/relay/drain.ts, limits.shutdown_grace_ms): real outside and inside relays, a
// client port and an agent in one process on loopback, an echo target. A draining relay takes no
// new connection and lets the open ones finish.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadInsideConfig, loadOutsideConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { OutsideRelay } from '../../src/relay/outside.js';
import { InsideRelay } from '../../src/relay/inside.js';
import { ClientPort } from '../../src/relay/clientport.js';
import { ClientAgent } from '../../src/agent/agent.js';
import { loadClientConfig } from '../../src/agent/config.js';
import { makeSelfSignedCert } from '../../src/agent/cert.js';
import { hashUserLine } from '../../src/agent/users.js';
import { drain } from '../../src/relay/drain.js';
import { FrameType } from '../../src/session/frame.js';
import type { Session } from '../../src/session/session.js';

type Line = { event?: string; code?: string; open?: number; name?: string; reason?: string };

describe('graceful stop: drain (in process, loopback)', () => {
  let dir: string;
  let target: net.Server;
  let targetPort: number;
  let fingerprint: string;
  const lines: Line[] = [];
  const capture = (name: string) => createLogger('info', name, { write: (l: string) => { lines.push(JSON.parse(l)); } });
  let stopAll: (() => Promise<void>) | null = null;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ps-drain-'));
    target = net.createServer((s) => { s.on('error', () => {}); s.pipe(s); });
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', () => r()));
    targetPort = (target.address() as net.AddressInfo).port;
    const c = await makeSelfSignedCert();
    fingerprint = c.fingerprint;
    writeFileSync(join(dir, 'c.pem'), c.cert);
    writeFileSync(join(dir, 'c.key'), c.key);
    writeFileSync(join(dir, 'users.txt'), `${await hashUserLine('alice', 'right', { N: 1024, r: 8, p: 1 })}\n`);
  });

  afterEach(async () => {
    await stopAll?.();
    stopAll = null;
    lines.length = 0;
  });

  afterAll(() => {
    target?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Outside relay (with a client port), inside relay with one service to the echo target. */
  const topology = async (o: { second?: boolean; handoverMs?: number } = {}) => {
    const free = net.createServer();
    await new Promise<void>((r) => free.listen(0, '127.0.0.1', () => r()));
    const servicePort = (free.address() as net.AddressInfo).port;
    await new Promise((r) => free.close(r));
    const key = randomBytes(32).toString('base64');
    const outside = new OutsideRelay(loadOutsideConfig(join(dir, 'outside.yaml'), [
      'listen: 127.0.0.1:0',
      `insides: [{name: b, key: "${key}"}, {name: c, key: "${key}"}]`,
      'allow: {hosts: [127.0.0.1], ports: ["1024-65535"], from: ["127.0.0.0/8"]}',
      'clients: {listen: "127.0.0.1:0", cert_file: c.pem, key_file: c.key, auth: users, users_file: users.txt}',
      ...(o.handoverMs !== undefined ? [`limits: {service_handover_ms: ${o.handoverMs}}`] : []),
    ].join('\n')), capture('outside'));
    const sess = await outside.start();
    const clients = ClientPort.forConfig(outside, outside.log)!;
    const clientPort = (await clients.start()).port;
    const insideCfg = loadInsideConfig(join(dir, 'inside.yaml'), [
      'name: b',
      `key: "${key}"`,
      `outside: 127.0.0.1:${sess.port}`,
      `services: [{name: echo, listen: "127.0.0.1:${servicePort}", target: "127.0.0.1:${targetPort}"}]`,
      `reach: ["127.0.0.1:${targetPort}"]`,
    ].join('\n'));
    const inside = new InsideRelay(insideCfg, capture('inside'));
    const extra: InsideRelay[] = [];
    const extraOutside: OutsideRelay[] = [];
    const agent = new ClientAgent(loadClientConfig(join(dir, 'client.yaml'), [
      `outside: 127.0.0.1:${clientPort}`,
      `outside_fingerprint: "${fingerprint}"`,
      'username: alice',
      'password: right',
      'back_listen: "off"',
      `forwards: [{listen: "127.0.0.1:0", to: "127.0.0.1:${targetPort}"}]`,
    ].join('\n')), capture('client'));
    // A second inside relay that reaches the same target (for agents): where they go while b drains.
    const second = o.second ? new InsideRelay(loadInsideConfig(join(dir, 'inside-c.yaml'), [
      'name: c',
      `key: "${key}"`,
      `outside: 127.0.0.1:${sess.port}`,
      `reach: ["127.0.0.1:${targetPort}"]`,
    ].join('\n')), capture('inside-c')) : null;
    stopAll = async () => { await agent.stop(); inside.stop(); second?.stop(); for (const r of extra) r.stop(); await clients.stop(); await outside.stop(); for (const o2 of extraOutside) await o2.stop(); };
    inside.start();
    second?.start();
    while (!lines.some((l) => l.event === 'service.ready')) await new Promise((r) => setTimeout(r, 20));
    while (second && lines.filter((l) => l.event === 'session.established' && l.name === 'outside').length < 2) await new Promise((r) => setTimeout(r, 20));
    const forwardPort = (await agent.start()).forwards[0]!.port;
    /** Another process of inside relay b, as a restart would start it. */
    const successor = () => {
      const r = new InsideRelay(insideCfg, capture('inside-new'));
      extra.push(r);
      r.start();
      return r;
    };
    /** Another outside relay process at the same address, as a rolling update starts one. */
    const nextOutside = async () => {
      const o2 = new OutsideRelay(loadOutsideConfig(join(dir, 'outside2.yaml'), [
        `listen: 127.0.0.1:${sess.port}`,
        `insides: [{name: b, key: "${key}"}]`,
        'allow: {hosts: [127.0.0.1], ports: ["1024-65535"], from: ["127.0.0.0/8"]}',
      ].join('\n')), capture('outside-new'));
      extraOutside.push(o2);
      await o2.start();
      return o2;
    };
    return { outside, clients, inside, agent, servicePort, forwardPort, successor, nextOutside };
  };

  /**
   * Hold back `session`'s control frames of these types, as if they were still on their way;
   * release() sends them, in order, and ends the holding.
   */
  const holdBack = (session: Session, types: number[]) => {
    const send = session.sendControl.bind(session);
    const held: Array<() => void> = [];
    session.sendControl = (type, stream, payload, flags) => {
      if (types.includes(type)) held.push(() => send(type, stream, payload, flags));
      else send(type, stream, payload, flags);
    };
    return () => {
      session.sendControl = send;
      for (const f of held.splice(0)) f();
    };
  };

  const until = async (pred: () => boolean) => { while (!pred()) await new Promise((r) => setTimeout(r, 20)); };

  /** A connection that has had one echo. */
  const connected = async (port: number) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    const failed = new Promise<string>((r) => s.once('error', (e: NodeJS.ErrnoException) => r(e.code ?? e.message)));
    await new Promise<void>((r, j) => { s.once('connect', () => r()); s.once('error', j); });
    return { s, closed, failed };
  };
  const echo = (s: net.Socket, data: Buffer) => new Promise<Buffer>((resolve) => {
    const got: Buffer[] = [];
    let n = 0;
    const on = (b: Buffer) => { got.push(b); n += b.length; if (n >= data.length) { s.off('data', on); resolve(Buffer.concat(got)); } };
    s.on('data', on);
    s.write(data);
  });
  const refusedAt = (port: number) => new Promise<string>((r) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('error', (e: NodeJS.ErrnoException) => r(e.code ?? e.message));
    s.once('connect', () => { s.destroy(); r('connected'); });
  });

  it('outside relay: new clients are refused at once, an open connection goes on, and the drain ends when it does', async () => {
    const t = await topology();
    const c = await connected(t.servicePort);
    const before = randomBytes(50_000);
    expect((await echo(c.s, before)).equals(before)).toBe(true);
    let left: number | null = null;
    const drained = drain([t.outside, t.clients], 10_000, t.outside.log).then((n) => { left = n; });
    expect(await refusedAt(t.servicePort)).toBe('ECONNREFUSED');
    const during = randomBytes(200_000);
    expect((await echo(c.s, during)).equals(during)).toBe(true);
    expect(left).toBeNull();
    c.s.end();
    await drained;
    expect(left).toBe(0);
    expect(lines.find((l) => l.event === 'relay.draining')?.open).toBe(1);
    expect(lines.some((l) => l.event === 'relay.drained')).toBe(true);
  }, 15_000);

  it('outside relay replaced at the same address (rolling update): the inside relay opens a session to the new one at once, the old one finishes its connection', async () => {
    const t = await topology();
    const c = await connected(t.servicePort);
    await echo(c.s, Buffer.from('x'));
    const drained = drain([t.outside, t.clients], 10_000, t.outside.log);
    await until(() => lines.some((l) => l.event === 'session.outside_draining' && l.name === 'inside'));
    await t.nextOutside();
    await until(() => lines.some((l) => l.event === 'service.listening' && l.name === 'outside-new'));
    // New clients reach the service through the new outside relay; the old connection goes on.
    const next = await connected(t.servicePort);
    const fresh = randomBytes(50_000);
    expect((await echo(next.s, fresh)).equals(fresh)).toBe(true);
    const old = randomBytes(100_000);
    expect((await echo(c.s, old)).equals(old)).toBe(true);
    c.s.end();
    expect(await drained).toBe(0);
    // The old outside relay stops: its session ends, not dialled again; the new one stays.
    const mark = lines.length;
    await t.outside.stop();
    await until(() => lines.slice(mark).some((l) => l.event === 'session.closed' && l.name === 'inside'));
    expect(t.inside.session?.established).toBe(true);
    const after = await connected(t.servicePort);
    expect((await echo(after.s, fresh)).equals(fresh)).toBe(true);
    after.s.destroy();
    next.s.destroy();
  }, 15_000);

  it('inside relay: it tells the outside relay (DRAINING), whose service port holds new clients for a successor, then refuses them; the open connection goes on; a lost session is not dialled again', async () => {
    const t = await topology({ handoverMs: 300 });
    const c = await connected(t.servicePort);
    await echo(c.s, Buffer.from('x')); // carried end to end before the drain starts
    const drained = drain([t.inside], 10_000, t.inside.log);
    while (!lines.some((l) => l.event === 'session.draining' && l.name === 'outside')) await new Promise((r) => setTimeout(r, 20));
    // Within limits.service_handover_ms a client is held; no successor comes, so it is refused.
    const held = await connected(t.servicePort);
    held.s.write('hello');
    await held.closed;
    expect(await refusedAt(t.servicePort)).toBe('ECONNREFUSED');
    const data = randomBytes(100_000);
    expect((await echo(c.s, data)).equals(data)).toBe(true);
    c.s.end();
    expect(await drained).toBe(0);
    // The session ends (the outside relay stops): a draining inside relay does not dial again.
    const mark = lines.length;
    await t.outside.stop();
    while (!lines.slice(mark).some((l) => l.event === 'session.closed' && l.name === 'inside')) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 300));
    expect(lines.slice(mark).filter((l) => l.event === 'session.retry' || l.event === 'session.dialing')).toEqual([]);
  }, 15_000);

  it('inside relay: agents\' new connections go to another inside relay that reaches the destination while it drains', async () => {
    const t = await topology({ second: true });
    const via = () => lines.filter((l) => l.event === 'client.connected').map((l) => (l as { inside?: string }).inside);
    const first = await connected(t.forwardPort);
    await echo(first.s, Buffer.from('x'));
    expect(via()).toEqual(['b']); // b names the target as a service: it is preferred
    const drained = drain([t.inside], 10_000, t.inside.log);
    while (!lines.some((l) => l.event === 'session.draining' && l.name === 'outside')) await new Promise((r) => setTimeout(r, 20));
    const next = await connected(t.forwardPort);
    const data = randomBytes(50_000);
    expect((await echo(next.s, data)).equals(data)).toBe(true);
    expect(via()).toEqual(['b', 'c']);
    first.s.end();
    expect(await drained).toBe(0);
  }, 15_000);

  it('inside relay restarted under the same name while the old one drains: the new session takes the service, the old one carries its connection to the end', async () => {
    const t = await topology();
    const c = await connected(t.servicePort);
    await echo(c.s, Buffer.from('x'));
    const drained = drain([t.inside], 10_000, t.inside.log);
    while (!lines.some((l) => l.event === 'session.draining')) await new Promise((r) => setTimeout(r, 20));
    // A client that comes before the successor is held at the port, then served by it.
    const early = await connected(t.servicePort);
    const waited = echo(early.s, Buffer.from('held for the successor'));
    t.successor();
    while (!lines.some((l) => l.event === 'service.ready' && l.name === 'inside-new')) await new Promise((r) => setTimeout(r, 20));
    expect(lines.some((l) => l.event === 'session.succeeded')).toBe(true);
    expect(lines.some((l) => l.event === 'session.replaced')).toBe(false);
    expect((await waited).toString()).toBe('held for the successor');
    expect(lines.some((l) => (l as { handed_over?: boolean }).handed_over === true)).toBe(true);
    early.s.destroy();
    const next = await connected(t.servicePort);
    const fresh = randomBytes(50_000);
    expect((await echo(next.s, fresh)).equals(fresh)).toBe(true);
    const old = randomBytes(100_000);
    expect((await echo(c.s, old)).equals(old)).toBe(true);
    c.s.end();
    expect(await drained).toBe(0);
    // The old process stops (GOAWAY); the new session and its service stay.
    t.inside.stop();
    while (!lines.some((l) => l.event === 'session.closed' && l.name === 'outside')) await new Promise((r) => setTimeout(r, 20));
    const after = await connected(t.servicePort);
    expect((await echo(after.s, fresh)).equals(fresh)).toBe(true);
    after.s.destroy();
    next.s.destroy();
  }, 15_000);

  it('inside relay restarted after its old process has ended: the outside relay held its service port and clients for the successor', async () => {
    const t = await topology();
    expect(await drain([t.inside], 10_000, t.inside.log)).toBe(0);
    t.inside.stop();
    await until(() => lines.some((l) => l.event === 'session.closed' && l.name === 'outside'));
    // No session now, but the port is still held (limits.service_handover_ms): the client waits.
    const early = await connected(t.servicePort);
    const waited = echo(early.s, Buffer.from('held across the restart'));
    t.successor();
    expect((await waited).toString()).toBe('held across the restart');
    expect(lines.some((l) => (l as { handed_over?: boolean }).handed_over === true)).toBe(true);
    early.s.destroy();
  }, 15_000);

  it('inside relay: a connection the outside relay opened before it had the DRAINING frame is served, and the drain waits for it', async () => {
    const t = await topology();
    // Hold back the DRAINING frame and the ping behind it: to the outside relay the inside relay
    // is not draining yet, and with no open connection the drain waits for that ping's answer.
    const release = holdBack(t.inside.session!, [FrameType.DRAINING, FrameType.PING]);
    let left: number | null = null;
    const drained = drain([t.inside], 10_000, t.inside.log).then((n) => { left = n; });
    const late = await connected(t.servicePort);
    const data = randomBytes(50_000);
    expect((await echo(late.s, data)).equals(data)).toBe(true);
    expect(left).toBeNull();
    expect(lines.some((l) => l.event === 'stream.refused')).toBe(false);
    release();
    late.s.end();
    await drained;
    expect(left).toBe(0);
  }, 15_000);

  it('a drain with nothing open still waits for the other side to answer a ping sent behind DRAINING', async () => {
    const t = await topology();
    const release = holdBack(t.inside.session!, [FrameType.PING]);
    let left: number | null = null;
    const drained = drain([t.inside], 10_000, t.inside.log).then((n) => { left = n; });
    await new Promise((r) => setTimeout(r, 300));
    expect(left).toBeNull();
    release();
    await drained;
    expect(left).toBe(0);
  }, 15_000);

  it('closes what is still open when the grace runs out (relay.drain_timeout, PS_ERR_SHUTTING_DOWN)', async () => {
    const t = await topology();
    const c = await connected(t.servicePort);
    await echo(c.s, Buffer.from('x'));
    expect(await drain([t.outside, t.clients], 300, t.outside.log)).toBe(1);
    const timeout = lines.find((l) => l.event === 'relay.drain_timeout');
    expect(timeout?.code).toBe('PS_ERR_SHUTTING_DOWN');
    expect(timeout?.open).toBe(1);
    await t.outside.stop();
    await c.closed;
  }, 15_000);

  it('shutdown_grace_ms 0 closes at once, and says how many', async () => {
    const t = await topology();
    const c = await connected(t.servicePort);
    await echo(c.s, Buffer.from('x'));
    expect(await drain([t.outside, t.clients], 0, t.outside.log)).toBe(1);
    expect(lines.find((l) => l.event === 'relay.drain_timeout')).toMatchObject({ code: 'PS_ERR_SHUTTING_DOWN', open: 1 });
    expect(lines.some((l) => l.event === 'relay.draining')).toBe(false);
  }, 15_000);

  it('client port: it tells its agents (DRAINING); an agent\'s open connection goes on and its next one dials a new session', async () => {
    const t = await topology();
    const c = await connected(t.forwardPort);
    await echo(c.s, Buffer.from('x'));
    const drained = drain([t.clients], 10_000, t.outside.log);
    await until(() => lines.some((l) => l.event === 'agent.session_retiring'));
    // The next connection does not go on the retiring session: a new one is dialled, and the
    // closed client port refuses it.
    const next = await connected(t.forwardPort);
    next.s.write('hello');
    await next.closed;
    expect(lines.find((l) => l.name === 'client' && l.code)?.code).toBe('PS_ERR_OUTSIDE_UNREACHABLE');
    expect(lines.some((l) => l.code === 'PS_ERR_SHUTTING_DOWN')).toBe(false);
    const during = randomBytes(100_000);
    expect((await echo(c.s, during)).equals(during)).toBe(true);
    c.s.end();
    expect(await drained).toBe(0);
  }, 15_000);

  it('client port: a connection an agent opened before it had DRAINING is refused with a clear reason (0x0c), and the agent then retires that session', async () => {
    const t = await topology();
    const c = await connected(t.forwardPort);
    const first = randomBytes(30_000);
    expect((await echo(c.s, first)).equals(first)).toBe(true);
    // Hold DRAINING back at the client port: to the agent the relay is not stopping yet.
    for (const s of (t.clients as unknown as { sessions: Set<Session> }).sessions) holdBack(s, [FrameType.DRAINING]);
    let ended = false;
    const drained = drain([t.clients], 10_000, t.outside.log).then((n) => { ended = true; return n; });
    // The forward sent its bytes early; the refusal resets the program's connection.
    const late = await connected(t.forwardPort);
    late.s.write('hello');
    await late.closed;
    const refused = lines.find((l) => l.event === 'agent.failed' || (l.name === 'client' && l.code === 'PS_ERR_SHUTTING_DOWN'));
    expect(refused?.code).toBe('PS_ERR_SHUTTING_DOWN');
    expect(lines.some((l) => l.event === 'agent.session_retiring')).toBe(true);
    const during = randomBytes(100_000);
    expect((await echo(c.s, during)).equals(during)).toBe(true);
    expect(ended).toBe(false);
    c.s.end();
    expect(await drained).toBe(0);
    // Not the retiring session again: a new one is dialled (and the closed client port refuses it).
    const mark = lines.length;
    const next = await connected(t.forwardPort);
    next.s.write('hello');
    await next.closed;
    expect(lines.slice(mark).find((l) => l.name === 'client' && l.code)?.code).toBe('PS_ERR_OUTSIDE_UNREACHABLE');
  }, 15_000);

  it('client port: a connection through the agent\'s SOCKS5 side (the program waits for the answer) is tried once more on a new session', async () => {
    const t = await topology();
    const c = await connected(t.forwardPort); // the agent's session is up
    await echo(c.s, Buffer.from('x'));
    const drained = drain([t.clients], 10_000, t.outside.log);
    // The retry dials a new session; the draining client port no longer listens, so that fails:
    // without the retry the error would be the refusal itself (PS_ERR_SHUTTING_DOWN).
    await expect(t.agent.open('127.0.0.1', (target.address() as net.AddressInfo).port)).rejects.toMatchObject({ code: 'PS_ERR_OUTSIDE_UNREACHABLE' });
    expect(lines.some((l) => l.event === 'agent.session_retiring')).toBe(true);
    c.s.end();
    expect(await drained).toBe(0);
  }, 15_000);

  it('agent: its forwards close, its open connection goes on', async () => {
    const t = await topology();
    const c = await connected(t.forwardPort);
    await echo(c.s, Buffer.from('x'));
    const drained = drain([t.agent], 10_000, t.agent.log);
    expect(await refusedAt(t.forwardPort)).toBe('ECONNREFUSED');
    const data = randomBytes(100_000);
    expect((await echo(c.s, data)).equals(data)).toBe(true);
    c.s.end();
    expect(await drained).toBe(0);
  }, 15_000);
});
