// The client port and the agent in one process on loopback, with a real outside relay, a real inside
// relay (direct line) and a TCP echo target: pinning, one client session, per-connection keys,
// users-file auth, errors.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadInsideConfig, loadOutsideConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { OutsideRelay } from '../../src/relay/outside.js';
import { InsideRelay } from '../../src/relay/inside.js';
import { attachDynamicInside, attachDynamicOutside } from '../../src/relay/dynamic.js';
import { ClientPort } from '../../src/relay/clientport.js';
import { ClientAgent, AgentError } from '../../src/agent/agent.js';
import { loadClientConfig } from '../../src/agent/config.js';
import { makeSelfSignedCert } from '../../src/agent/cert.js';
import { hashUserLine } from '../../src/agent/users.js';
import { Result } from '../../src/errors.js';
import { CarriedConnection } from '../../src/relay/carried.js';
import { sessionOverSocket } from '../../src/relay/link.js';
import { FrameType } from '../../src/session/frame.js';
import { newKeyShare } from '../../src/session/seal.js';
import { metrics } from '../../src/metrics.js';
import { seriesValue } from '../support/metrics.js';

const log = createLogger('silent');

describe('client port and agent (loopback, in process)', () => {
  let dir: string;
  let outside: OutsideRelay;
  let inside: InsideRelay;
  let port: ClientPort;
  let clientPort: number;
  let echo: net.Server;
  let echoPort: number;
  let fingerprint: string;
  let sessionPort: number;

  const agentFor = (o: { fingerprint?: string; user?: string; password?: string; port?: number; log?: typeof log } = {}) => new ClientAgent(loadClientConfig(join(dir, 'client.yaml'), [
    `outside: 127.0.0.1:${o.port ?? clientPort}`,
    `outside_fingerprint: "${o.fingerprint ?? fingerprint}"`,
    `username: ${o.user ?? 'alice'}`,
    `password: "${o.password ?? 'right'}"`,
    'connect_timeout_ms: 3000',
  ].join('\n')), o.log ?? log);

  const roundTrip = (s: net.Socket, data: Buffer) => new Promise<Buffer>((resolve, reject) => {
    const got: Buffer[] = [];
    let n = 0;
    s.on('data', (b: Buffer) => { got.push(b); n += b.length; if (n >= data.length) { s.destroy(); resolve(Buffer.concat(got)); } });
    s.on('error', reject);
    s.resume(); // open() hands the socket over paused
    s.write(data);
  });

  /** An outside relay with a users-file client port; `clients` lines are added to its section. */
  const outsideConfig = (file: string, key: string, clients: string[]) => loadOutsideConfig(join(dir, file), [
    'listen: 127.0.0.1:0',
    `insides: [{name: b, key: "${key}"}]`,
    'clients:',
    '  listen: 127.0.0.1:0',
    '  cert_file: c.pem',
    '  key_file: c.key',
    '  auth: users',
    '  users_file: users.txt',
    ...clients,
  ].join('\n'));

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ps-clientport-'));
    echo = net.createServer((s) => { s.on('error', () => {}); s.pipe(s); });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    echoPort = (echo.address() as net.AddressInfo).port;
    const c = await makeSelfSignedCert();
    fingerprint = c.fingerprint;
    writeFileSync(join(dir, 'c.pem'), c.cert);
    writeFileSync(join(dir, 'c.key'), c.key);
    writeFileSync(join(dir, 'users.txt'), `${await hashUserLine('alice', 'right', { N: 1024, r: 8, p: 1 })}\n`);
    const key = randomBytes(32).toString('base64');
    outside = new OutsideRelay(outsideConfig('outside.yaml', key, ['  allow:', '    destinations: ["127.0.0.0/8"]']), log);
    attachDynamicOutside(outside);
    const sess = await outside.start();
    sessionPort = sess.port;
    port = ClientPort.forConfig(outside, log)!;
    clientPort = (await port.start()).port;
    inside = new InsideRelay(loadInsideConfig(join(dir, 'inside.yaml'), [
      'name: b',
      `key: "${key}"`,
      `outside: 127.0.0.1:${sess.port}`,
      `reach: ["127.0.0.1:${echoPort}", "127.0.0.2"]`,
      'reach_rules: [ftp]',
      `rules_dir: ${join(process.cwd(), 'rules')}`,
    ].join('\n')), log);
    attachDynamicInside(inside);
    const up = new Promise((r) => inside.once('established', r));
    inside.start();
    await up;
  });

  afterAll(async () => {
    inside?.stop();
    await port?.stop();
    await outside?.stop();
    echo?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('carries a connection: users-file password, inside-connect, data both ways', async () => {
    const { sock, via } = await agentFor().open('127.0.0.1', echoPort);
    expect(via).toBe('portside');
    const data = randomBytes(300_000);
    expect((await roundTrip(sock, data)).equals(data)).toBe(true);
  });

  it('a forward sends the program\'s first bytes before the answer (early data) once the session has the relay\'s share; a refused destination resets the program', async () => {
    const events: Array<{ event?: string; early?: boolean; code?: string }> = [];
    const capture = createLogger('debug', 'client', { write: (line: string) => { events.push(JSON.parse(line)); } });
    const agent = new ClientAgent(loadClientConfig(join(dir, 'client-fwd.yaml'), [
      `outside: 127.0.0.1:${clientPort}`,
      `outside_fingerprint: "${fingerprint}"`,
      'username: alice',
      'password: "right"',
      'connect_timeout_ms: 3000',
      'forwards:',
      `  - {listen: "127.0.0.1:0", to: "127.0.0.1:${echoPort}"}`,
      '  - {listen: "127.0.0.1:0", to: "127.0.0.3:9"}',
    ].join('\n')), capture);
    const { forwards } = await agent.start();
    const viaForward = (p: number, data: Buffer) => new Promise<Buffer>((resolve, reject) => {
      const s = net.connect({ port: p, host: '127.0.0.1' });
      const got: Buffer[] = [];
      let n = 0;
      s.on('data', (b) => { got.push(b); n += b.length; if (n >= data.length) { s.destroy(); resolve(Buffer.concat(got)); } });
      s.on('error', reject);
      s.write(data); // at once, before anything comes back
    });
    try {
      for (let i = 0; i < 5; i++) {
        const data = randomBytes(i === 4 ? 2_000_000 : 1000);
        expect((await viaForward(forwards[0]!.port, data)).equals(data)).toBe(true);
      }
      const sealed = events.filter((e) => e.event === 'agent.sealed');
      expect(sealed).toHaveLength(5);
      expect(sealed.every((e) => e.early === true)).toBe(true); // the first too: the early secret comes with the handshake
      // No inside relay reaches 127.0.0.3: the program's connection is reset, the reason logged.
      await expect(viaForward(forwards[1]!.port, Buffer.from('hello'))).rejects.toMatchObject({ code: 'ECONNRESET' });
      expect(events.some((e) => e.event === 'agent.connect_failed' && e.code === 'PS_ERR_NO_ROUTE')).toBe(true);
    } finally {
      await agent.stop();
    }
  });

  it('one pinned session (signed X25519 handshake) carries every connection; each connection is sealed with keys of its own', async () => {
    const agent = agentFor();
    const t = await agent.connectOutside();
    expect(t.keys.send).toHaveLength(16);
    expect(t.keys.recv).toHaveLength(16);
    expect(t.keys.send.equals(t.keys.recv)).toBe(false);
    t.sock.destroy();
    const conns: CarriedConnection[] = [];
    for (let i = 0; i < 6; i++) {
      const { sock } = await agent.open('127.0.0.1', echoPort);
      expect(sock).toBeInstanceOf(CarriedConnection);
      const c = sock as unknown as CarriedConnection;
      expect(c.sealed).toBe(true);
      expect((await roundTrip(sock, Buffer.from('y'))).toString()).toBe('y');
      conns.push(c);
    }
    expect(new Set(conns.map((c) => c.stream.session)).size).toBe(1);
    expect(new Set(conns.map((c) => c.stream.id)).size).toBe(6);
    await agent.stop();
  });

  it('a connection without a key share is refused; the session and its other connections go on', async () => {
    const agent = agentFor();
    const { sock: t, keys } = await agent.connectOutside();
    const session = sessionOverSocket(t, { role: 'client' }, { intervalMs: 60_000, timeoutMs: 120_000 }, keys);
    t.resume();
    session.established = true;
    session.sendControl(FrameType.INIT, 0, Buffer.from('{"v":1}'));
    const bare = session.open('0.0.0.0', 0);
    const result = await new Promise<number>((r) => { bare.onopen = r; });
    expect(result).toBe(Result.PROTOCOL_ERROR);
    expect(session.closed).toBe(false);
    // A well-formed one on the same session is answered (here: a SOCKS5 greeting without the
    // username/password method, so the relay answers "no acceptable method" and ends it).
    const ok = session.open('0.0.0.0', 0, newKeyShare().share);
    ok.write(Buffer.of(5, 1, 0));
    const got: Buffer[] = [];
    ok.ondata = (b) => { got.push(Buffer.from(b)); ok.consumed(b.length); };
    const ended = new Promise<void>((r) => { ok.onend = r; });
    expect(await new Promise<number>((r) => { ok.onopen = r; })).toBe(Result.OK);
    await ended;
    expect(Buffer.concat(got)).toEqual(Buffer.of(5, 0xff));
    t.destroy();
  });

  it('a client session whose first frame is not INIT is ended with GOAWAY PROTOCOL_ERROR', async () => {
    const agent = agentFor();
    const { sock: t, keys } = await agent.connectOutside();
    const closed = new Promise<number | null>((resolve) => {
      const session = sessionOverSocket(t, { role: 'client', onClose: (_e, remote) => resolve(remote) }, { intervalMs: 60_000, timeoutMs: 120_000 }, keys);
      t.resume();
      session.established = true;
      session.open('0.0.0.0', 0, newKeyShare().share);
    });
    expect(await closed).toBe(Result.PROTOCOL_ERROR);
  });

  it('when the client session drops, its connections close and the next connection dials a new session', async () => {
    const agent = agentFor();
    const { sock } = await agent.open('127.0.0.1', echoPort);
    const first = (sock as unknown as CarriedConnection).stream.session;
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    sock.on('error', () => {});
    sock.resume();
    (agent as unknown as { session: { sock: import('node:net').Socket } }).session.sock.destroy();
    await closed;
    expect(first.closed).toBe(true);
    const again = await agent.open('127.0.0.1', echoPort);
    expect((again.sock as unknown as CarriedConnection).stream.session).not.toBe(first);
    expect((await roundTrip(again.sock, Buffer.from('z'))).toString()).toBe('z');
    await agent.stop();
  });

  it('refuses agent sessions beyond clients.max_sessions, at once, and logs it', async () => {
    const small = new OutsideRelay(outsideConfig('outside-small.yaml', randomBytes(32).toString('base64'), ['  max_sessions: 1']), log);
    const lines: Array<Record<string, unknown>> = [];
    const cp = ClientPort.forConfig(small, createLogger('info', 'outside', { write: (l: string) => { lines.push(JSON.parse(l)); } }))!;
    const p = (await cp.start()).port;
    try {
      const first = await agentFor({ port: p }).connectOutside();
      const err = await agentFor({ port: p }).connectOutside().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AgentError);
      expect((err as AgentError).code).toBe('PS_ERR_OUTSIDE_UNREACHABLE');
      expect(lines.filter((l) => l.event === 'client.rejected')).toEqual([
        expect.objectContaining({ code: 'PS_ERR_LIMIT', refused: 1, reason: 'clients.max_sessions (1) reached' }),
      ]);
      first.sock.destroy();
    } finally {
      await cp.stop();
    }
  });

  it('reach_rules sends a rules file to the outside relay without a service naming it', () => {
    const peer = outside.peers.get('b')!;
    expect(peer.init.services).toEqual([]);
    expect(Object.keys(peer.init.rules)).toEqual(['ftp']);
  });

  it('a peer that is not an agent is refused at the handshake: another protocol with PS_ERR_SESSION_AUTH, a silent one with PS_ERR_HANDSHAKE_TIMEOUT', async () => {
    const lines: Array<{ event?: string; code?: string }> = [];
    const dest = new Writable({ write(c, _e, cb) { for (const l of String(c).split('\n')) if (l) lines.push(JSON.parse(l)); cb(); } });
    const cp = ClientPort.forConfig(new OutsideRelay(outsideConfig('outside-shake.yaml', randomBytes(32).toString('base64'), ['  handshake_timeout_ms: 300']), log), createLogger('info', 'test', dest))!;
    const p = (await cp.start()).port;
    const closedAfter = (first: Buffer | null) => new Promise<void>((resolve) => {
      const s = net.connect(p, '127.0.0.1', () => { if (first) s.write(first); });
      s.on('error', () => {});
      s.on('close', () => resolve());
      s.resume();
    });
    try {
      await closedAfter(Buffer.from('160301020001', 'hex')); // the start of a TLS ClientHello
      await closedAfter(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
      await closedAfter(null);
      const codes = lines.filter((l) => l.event === 'client.rejected').map((l) => l.code);
      expect(codes).toEqual(['PS_ERR_SESSION_AUTH', 'PS_ERR_SESSION_AUTH', 'PS_ERR_HANDSHAKE_TIMEOUT']);
      // The port still serves agents.
      const ok = await agentFor({ port: p }).connectOutside();
      expect(ok.keys.send).toHaveLength(16);
      ok.sock.destroy();
    } finally {
      await cp.stop();
    }
  });

  it('a session record changed in flight ends that session with PS_ERR_SESSION_AUTH at both ends; the agent\'s next connection dials a new one', async () => {
    const lines: Array<{ event?: string; code?: string }> = [];
    const capture = () => new Writable({ write(c, _e, cb) { for (const l of String(c).split('\n')) if (l) lines.push(JSON.parse(l)); cb(); } });
    const cp = ClientPort.forConfig(outside, createLogger('info', 'port', capture()))!;
    const p = (await cp.start()).port;
    // A TCP proxy between agent and client port that can change one byte going up.
    let flip = false;
    const proxy = net.createServer((a) => {
      const b = net.connect(p, '127.0.0.1');
      a.on('data', (d: Buffer) => {
        if (flip) { flip = false; d = Buffer.from(d); d[d.length - 1] ^= 0x01; }
        b.write(d);
      });
      b.pipe(a);
      a.on('error', () => b.destroy());
      b.on('error', () => a.destroy());
      a.on('close', () => b.destroy());
      b.on('close', () => a.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
    const agent = new ClientAgent(loadClientConfig(join(dir, 'client.yaml'), [
      `outside: 127.0.0.1:${(proxy.address() as net.AddressInfo).port}`,
      `outside_fingerprint: "${fingerprint}"`,
      'username: alice',
      'password: "right"',
    ].join('\n')), createLogger('info', 'agent', capture()));
    try {
      const first = await agent.open('127.0.0.1', echoPort);
      const closed = new Promise<void>((r) => first.sock.once('close', () => r()));
      first.sock.on('error', () => {});
      first.sock.resume();
      const session = (agent as unknown as { session: { session: import('../../src/session/session.js').Session } }).session.session;
      flip = true;
      session.ping(); // one small record, its tag's last byte changed
      await closed;
      expect(session.closed).toBe(true);
      expect(lines.filter((l) => l.event === 'client.session_closed').map((l) => l.code)).toEqual(['PS_ERR_SESSION_AUTH']);
      // The agent reads the relay's GOAWAY or the close, and says so.
      expect(lines.some((l) => l.event === 'agent.session_closed' && typeof l.code === 'string')).toBe(true);
      const again = await agent.open('127.0.0.1', echoPort);
      expect((await roundTrip(again.sock, Buffer.from('after'))).toString()).toBe('after');
    } finally {
      await agent.stop();
      proxy.close();
      await cp.stop();
    }
  });

  it('an agent pointed at the relays\' session port (TLS) instead of the client port is told what to check', async () => {
    const err = await agentFor({ port: sessionPort }).open('127.0.0.1', echoPort).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentError);
    expect((err as AgentError).code).toBe('PS_ERR_OUTSIDE_UNREACHABLE');
    expect((err as AgentError).message).toContain('closed the connection without answering our handshake');
    expect((err as AgentError).message).toContain('clients.listen');
    expect((err as AgentError).message).not.toContain('within'); // the close, not the deadline
  });

  it('refuses an outside relay whose certificate does not match the pinned fingerprint', async () => {
    const wrong = (BigInt(`0x${fingerprint}`) ^ 1n).toString(16).padStart(64, '0');
    const err = await agentFor({ fingerprint: wrong }).open('127.0.0.1', echoPort).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentError);
    expect((err as AgentError).code).toBe('PS_ERR_FINGERPRINT_MISMATCH');
    expect((err as AgentError).message).toContain(fingerprint);
    // A pre-connected (warm) connection is pinned too: the next try is refused again.
    const agent = agentFor({ fingerprint: wrong });
    for (let i = 0; i < 2; i++) expect(await agent.open('127.0.0.1', echoPort).catch((e: AgentError) => e.code)).toBe('PS_ERR_FINGERPRINT_MISMATCH');
  });

  it('each failure has its own code: wrong password, forbidden, no inside relay, refused target, unreachable relay', async () => {
    const code = async (p: Promise<unknown>) => ((await p.then(() => null, (e: unknown) => e)) as AgentError | null)?.code;
    expect(await code(agentFor({ password: 'wrong' }).open('127.0.0.1', echoPort))).toBe('PS_ERR_CLIENT_AUTH');
    expect(await code(agentFor().open('192.0.2.1', 80))).toBe('PS_ERR_NOT_ALLOWED');
    // Allowed by the outside relay's policy, but no inside relay reaches it.
    expect(await code(agentFor().open('127.0.0.1', 1))).toBe('PS_ERR_NO_ROUTE');
    // Reached, but nothing listens there: the inside relay's connect fails.
    expect(await code(agentFor().open('127.0.0.2', 1))).toBe('PS_ERR_CONNECT_FAILED');
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
    const deadPort = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    expect(await code(agentFor({ port: deadPort }).open('127.0.0.1', echoPort))).toBe('PS_ERR_OUTSIDE_UNREACHABLE');
  });

  it('counts sessions, carried connections by path and session bytes in the metrics, read over HTTP', async () => {
    const served = await metrics.serve('127.0.0.1:0');
    const scrape = async () => (await fetch(`http://127.0.0.1:${served.port}/metrics`)).text();
    const delta = (a: string, b: string, series: string) => seriesValue(b, series) - seriesValue(a, series);
    const agent = agentFor();
    try {
      const before = await scrape();
      const data = randomBytes(100_000);
      for (let i = 0; i < 2; i++) {
        const { sock } = await agent.open('127.0.0.1', echoPort);
        expect((await roundTrip(sock, data)).equals(data)).toBe(true);
      }
      const after = await scrape();
      // One process holds all three here: each counts its own step of the same two connections.
      expect(delta(before, after, 'portside_connections_total{path="agent"}')).toBe(2);
      expect(delta(before, after, 'portside_connections_total{path="client"}')).toBe(2);
      expect(delta(before, after, 'portside_connections_total{path="inside"}')).toBe(2);
      expect(seriesValue(after, 'portside_sessions{role="inside"}')).toBe(1);
      expect(seriesValue(after, 'portside_sessions{role="outside"}')).toBe(1);
      expect(seriesValue(after, 'portside_sessions{role="client"}')).toBeGreaterThanOrEqual(1);
      expect(seriesValue(after, 'portside_sessions{role="client-port"}')).toBeGreaterThanOrEqual(1);
      // Each byte crosses both sessions both ways (echo): at least 8 × 100 000 out.
      expect(delta(before, after, 'portside_session_bytes_out_total')).toBeGreaterThan(8 * 100_000);
    } finally {
      await agent.stop();
      served.server.close();
    }
  });

  it('locks an agent session after clients.max_auth_failures (5) refused passwords: each refusal is told as such, later connections get PS_ERR_LIMIT unjudged, and a connection already open goes on', async () => {
    const agent = agentFor();
    const code = async () => ((await agent.open('127.0.0.1', echoPort).then(() => null, (e: unknown) => e)) as AgentError | null)?.code;
    const echoOnce = (s: net.Socket, data: Buffer) => new Promise<Buffer>((resolve, reject) => {
      const got: Buffer[] = [];
      let n = 0;
      const onData = (b: Buffer) => { got.push(b); n += b.length; if (n >= data.length) { s.off('data', onData); resolve(Buffer.concat(got)); } };
      s.on('data', onData);
      s.once('error', reject);
      s.resume();
      s.write(data);
    });
    try {
      const { sock: open } = await agent.open('127.0.0.1', echoPort);
      const one = randomBytes(50_000);
      expect((await echoOnce(open, one)).equals(one)).toBe(true);
      // As if the user's password changed at the relay: the agent keeps sending the old one.
      const cfg = agent.cfg as { password: string };
      cfg.password = 'guess';
      for (let i = 1; i <= 5; i++) expect(await code()).toBe('PS_ERR_CLIENT_AUTH');
      expect(await code()).toBe('PS_ERR_LIMIT');
      cfg.password = 'right';
      expect(await code()).toBe('PS_ERR_LIMIT'); // not judged at all on this session any more
      const two = randomBytes(50_000);
      expect((await echoOnce(open, two)).equals(two)).toBe(true);
      open.destroy();
    } finally {
      await agent.stop();
    }
    // A new session starts with a clean count.
    expect(await agentFor().open('127.0.0.1', echoPort).then(({ sock }) => { sock.destroy(); return 'ok'; })).toBe('ok');
  });

  it('logs each carried connection at the client port twice, as an access log: client.connected, then client.closed with the bytes each way and how long', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const second = ClientPort.forConfig(outside, createLogger('info', 'outside', { write: (l: string) => { lines.push(JSON.parse(l)); } }))!;
    const { port: p } = await second.start();
    const agent = agentFor({ port: p });
    try {
      const { sock } = await agent.open('127.0.0.1', echoPort);
      const data = randomBytes(100_000);
      expect((await roundTrip(sock, data)).equals(data)).toBe(true);
      await vi.waitFor(() => expect(lines.some((l) => l.event === 'client.closed')).toBe(true), { timeout: 3000 });
      const connected = lines.find((l) => l.event === 'client.connected')!;
      const closed = lines.find((l) => l.event === 'client.closed')!;
      expect(connected).toMatchObject({ user: 'alice', target: `127.0.0.1:${echoPort}`, inside: 'b' });
      expect(closed).toMatchObject({ user: 'alice', target: `127.0.0.1:${echoPort}`, inside: 'b', stream: connected.stream, bytes_up: 100_000, bytes_down: 100_000 });
      expect(closed.duration_ms).toBeGreaterThanOrEqual(0);
    } finally {
      await agent.stop();
      await second.stop();
    }
  });

  it('refuses handshakes beyond clients.handshake_rate/handshake_burst from one address at once, and logs the refusals once, not once each', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const limited = new ClientPort(outside, { ...port.cfg, handshake_rate: 0.01, handshake_burst: 3 }, dir, createLogger('info', 'outside', { write: (l: string) => { lines.push(JSON.parse(l)); } }));
    const { port: p } = await limited.start();
    const socks = Array.from({ length: 6 }, () => net.connect(p, '127.0.0.1'));
    const closed = socks.map((s) => new Promise<boolean>((resolve) => {
      s.on('error', () => {});
      s.once('close', () => resolve(true));
      setTimeout(() => resolve(false), 1500);
    }));
    try {
      expect((await Promise.all(closed)).filter(Boolean)).toHaveLength(3);
      const rejected = lines.filter((l) => l.event === 'client.rejected');
      expect(rejected).toHaveLength(1);
      expect(rejected[0]).toMatchObject({ code: 'PS_ERR_LIMIT', remote: '127.0.0.1', refused: 1 });
      expect(rejected[0]!.reason).toMatch(/more than clients\.handshake_rate \(0\.01\/s, burst 3\) from this address/);
    } finally {
      for (const s of socks) s.destroy();
      await limited.stop();
    }
  });

  it('takes a changed users file without a restart: new users in, removed ones out; a broken file leaves the users as they were', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const file = join(dir, 'users-live.txt');
    writeFileSync(file, `${await hashUserLine('alice', 'right', { N: 1024, r: 8, p: 1 })}\n`);
    const live = new ClientPort(outside, { ...port.cfg, users_file: 'users-live.txt' }, dir, createLogger('info', 'outside', { write: (l: string) => { lines.push(JSON.parse(l)); } }));
    const { port: p } = await live.start();
    const code = async (a: ClientAgent) => {
      try {
        const r = await a.open('127.0.0.1', echoPort).then(({ sock }) => roundTrip(sock, Buffer.from('hi')), (e: AgentError) => e.code);
        return typeof r === 'string' ? r : r.toString();
      } finally {
        await a.stop();
      }
    };
    const reloads = () => lines.filter((l) => l.event === 'client.users_reloaded' || l.event === 'client.users_reload_failed').length;
    try {
      expect(await code(agentFor({ port: p }))).toBe('hi');
      expect(await code(agentFor({ port: p, user: 'bob', password: 'pw' }))).toBe('PS_ERR_CLIENT_AUTH');
      // Replace the file (as an editor does): bob in, alice out.
      writeFileSync(`${file}.new`, `${await hashUserLine('bob', 'pw', { N: 1024, r: 8, p: 1 })}\n`);
      renameSync(`${file}.new`, file);
      await vi.waitFor(() => expect(reloads()).toBe(1), { timeout: 5000 });
      expect(lines.find((l) => l.event === 'client.users_reloaded')).toMatchObject({ users: 1 });
      expect(await code(agentFor({ port: p, user: 'bob', password: 'pw' }))).toBe('hi');
      // alice's password was verified (and remembered) before: she is refused all the same.
      expect(await code(agentFor({ port: p }))).toBe('PS_ERR_CLIENT_AUTH');
      writeFileSync(`${file}.new`, 'bob:plain-password\n');
      renameSync(`${file}.new`, file);
      await vi.waitFor(() => expect(reloads()).toBe(2), { timeout: 5000 });
      expect(lines.find((l) => l.event === 'client.users_reload_failed')).toMatchObject({ code: 'PS_ERR_CONFIG' });
      expect(String(lines.find((l) => l.event === 'client.users_reload_failed')!.reason)).toMatch(/users-live\.txt:1: expected name:scrypt/);
      expect(await code(agentFor({ port: p, user: 'bob', password: 'pw' }))).toBe('hi');
    } finally {
      await live.stop();
    }
  });

  it('sets up sequential connections with per-connection keys (cost printed)', async () => {
    const agent = agentFor();
    const n = 300;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) {
      const { sock } = await agent.open('127.0.0.1', echoPort);
      expect((await roundTrip(sock, Buffer.from('x'))).toString()).toBe('x');
    }
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    process.stdout.write(`client port: ${n} sequential connections (stream + X25519 per connection + SOCKS5 + inside-connect + 1-byte echo) in ${ms.toFixed(0)} ms = ${(n / (ms / 1000)).toFixed(0)}/s\n`);
    expect(ms).toBeGreaterThan(0);
  });
});
