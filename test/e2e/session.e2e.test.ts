// The session core end to end, with every component real: danted as the firewall, `portside
// outside` and `portside inside` as processes (dist/cli.js), a TCP target in the server
// namespace and load clients in the client namespace (test/harness/load-*.mjs). In the netns
// topology the firewall is the only way from the internet side into the intranet.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bestTopology, startEcho, tcpProbe, type Role, type Topology } from '../harness/netns.js';
import { startDante, type Dante } from '../harness/dante.js';
import { freePort, run, runOk, stopAll, type LogLine, type Proc } from '../harness/procs.js';
// @ts-expect-error plain .mjs helper without type declarations
import { streamSha } from '../harness/load-common.mjs';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'dist', 'cli.js');
const LOAD_TARGET = fileURLToPath(new URL('../harness/load-target.mjs', import.meta.url));
const LOAD_CLIENT = fileURLToPath(new URL('../harness/load-client.mjs', import.meta.url));
const MiB = 1024 * 1024;
const sha = streamSha as (seed: string, n: number, prefix?: Buffer) => string;

interface Conn {
  id: string;
  send: number;
  seed: string;
  reply: number;
  replySeed: string;
  mode: 'both' | 'after-eof';
}
interface ConnResult {
  id: string;
  ok: boolean;
  error: string | null;
  code: string | null;
  sent: number;
  sentSha: string | null;
  recv: number;
  recvSha: string;
  head: string;
  ended: boolean;
}

/** Poll until `proc` has logged `event` (matching `match`) at least `n` times. */
async function waitForCount(proc: Proc, event: string, n: number, timeoutMs: number, match?: (j: Record<string, unknown>) => boolean): Promise<Record<string, unknown>[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const evs = proc.events(event).filter((j) => !match || match(j));
    if (evs.length >= n) return evs;
    if (Date.now() > deadline) throw new Error(`${proc.name}: ${evs.length}/${n} '${event}' events within ${timeoutMs} ms\n${proc.tail()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Wait for an event logged after the moment `before` was taken (a snapshot of proc.lines). */
function waitForEventAfter(proc: Proc, before: Set<LogLine>, event: string, timeoutMs: number, match?: (j: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
  return proc
    .waitForLine((l) => !before.has(l) && l.json?.event === event && (!match || match(l.json)), timeoutMs)
    .then((l) => l.json!);
}

describe('session end to end through a real SOCKS5 firewall', () => {
  let topo: Topology;
  let work: string;
  let dante: Dante;
  let target: Proc;
  let targetPort: number;
  let outside: Proc;
  let inside: Proc;
  let outsideCfg: string;
  let insideCfg: string;
  const port: Record<'outside' | 'data' | 'refused' | 'unusedTarget' | 'svcB' | 'svcC' | 'svcD' | 'fwOther' | 'silent', number> = {} as never;
  const keys: Record<string, string> = {};
  /** Every process spawned here, so PS_E2E_LOGS=DIR can keep their output for a post-mortem. */
  const spawned: Proc[] = [];
  const track = (p: Proc) => (spawned.push(p), p);

  const yaml = (o: unknown) => JSON.stringify(o, null, 2); // JSON is YAML

  function startOutside(): Proc {
    return track(topo.spawn('outside', process.execPath, [CLI, 'outside', '--config', outsideCfg], { name: 'outside' }));
  }

  function writeInside(
    name: string,
    opts: { keyName?: string; socks?: string; outside?: string; limits?: Record<string, number>; services: Array<{ name: string; listen: string; target: string }> },
  ): string {
    const file = join(work, `inside-${name}.yaml`);
    writeFileSync(
      file,
      yaml({
        name,
        key_file: `${opts.keyName ?? name}.key`,
        outside: opts.outside ?? `${topo.addr.outside}:${port.outside}`,
        firewall: { socks5: opts.socks ?? `${dante.address}:${dante.port}` },
        services: opts.services,
        reconnect: { min_ms: 200, max_ms: 1000 },
        ...(opts.limits ? { limits: opts.limits } : {}),
        log_level: 'info',
      }),
    );
    return file;
  }

  function startInside(file: string, name: string): Proc {
    return track(topo.spawn('inside', process.execPath, [CLI, 'inside', '--config', file], { name }));
  }

  /** Run the load client in the client namespace against `svcPort` on the outside relay. */
  async function load(svcPort: number, conns: Conn[], timeoutMs: number, progressEvery?: number, onStart?: (p: Proc) => void): Promise<ConnResult[]> {
    const p = topo.spawn('client', process.execPath, [LOAD_CLIENT, JSON.stringify({ host: topo.addr.outside, port: svcPort, timeoutMs, progressEvery, conns })], {
      name: 'load-client',
    });
    track(p);
    onStart?.(p);
    const exit = await p.exited;
    expect(exit.code, p.tail()).toBe(0);
    expect(p.events('load.done')[0]?.count).toBe(conns.length);
    return p.events('load.conn') as unknown as ConnResult[];
  }

  const targetDone = (id: string) => target.waitForEvent('target.done', 30_000, (j) => j.id === id);

  beforeAll(async () => {
    if (!existsSync(CLI)) await runOk('npm', ['run', 'build'], { cwd: ROOT, timeoutMs: 120_000 });
    work = mkdtempSync(join(tmpdir(), 'ps-session-e2e-'));
    topo = await bestTopology('se');
    // Namespaces are ours alone: fixed ports there; free host ports on the loopback fallback.
    const fixed = { outside: 7000, data: 18080, refused: 18081, unusedTarget: 9001, svcB: 18090, svcC: 18091, svcD: 18092, fwOther: 7999, silent: 7001 };
    for (const k of Object.keys(fixed) as Array<keyof typeof fixed>) port[k] = topo.isolated ? fixed[k] : await freePort();

    for (const n of ['branch-a', 'branch-b', 'branch-c', 'not-branch-c', 'branch-d']) {
      keys[n] = randomBytes(32).toString('base64');
      writeFileSync(join(work, `${n}.key`), keys[n] + '\n', { mode: 0o600 });
    }

    target = track(topo.spawn('server', process.execPath, [LOAD_TARGET, topo.addr.server, '0'], { name: 'target' }));
    targetPort = Number((await target.waitForEvent('target.listening', 15_000)).port);

    dante = await startDante({ netns: topo.ns.firewall, internalAddress: topo.addr.fwInternal, externalAddress: topo.addr.fwExternal });

    outsideCfg = join(work, 'outside.yaml');
    writeFileSync(
      outsideCfg,
      yaml({
        listen: `${topo.addr.outside}:${port.outside}`,
        insides: ['branch-a', 'branch-b', 'branch-c'].map((name) => ({ name, key_file: `${name}.key` })),
        allow: { hosts: [topo.addr.outside], ports: ['1024-65535'], from: [topo.nets.internet] },
        log_level: 'info',
      }),
    );
    outside = startOutside();
    await outside.waitForEvent('outside.listening', 20_000);

    insideCfg = writeInside('branch-a', {
      services: [
        { name: 'data', listen: `${topo.addr.outside}:${port.data}`, target: `${topo.addr.server}:${targetPort}` },
        { name: 'refused', listen: `${topo.addr.outside}:${port.refused}`, target: `${topo.addr.server}:${port.unusedTarget}` },
      ],
    });
    inside = startInside(insideCfg, 'inside-a');
    await inside.waitForEvent('session.established', 30_000);
    await outside.waitForEvent('session.established', 30_000, (j) => j.inside === 'branch-a');
    await outside.waitForEvent('service.listening', 10_000, (j) => j.service === 'data');
    await outside.waitForEvent('service.listening', 10_000, (j) => j.service === 'refused');
  }, 120_000);

  afterAll(async () => {
    await stopAll();
    const keep = process.env.PS_E2E_LOGS;
    if (keep) {
      mkdirSync(keep, { recursive: true });
      for (const [i, p] of spawned.entries()) writeFileSync(join(keep, `${i}-${p.name}.log`), p.output() + '\n');
      if (dante) writeFileSync(join(keep, 'danted.log'), dante.log());
    }
    await dante?.stop();
    await topo?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('the session runs through danted, and (netns) the firewall is the only way in', async () => {
    // The outside relay saw the session come from the firewall's external address.
    const est = outside.events('session.established').find((j) => j.inside === 'branch-a')!;
    expect(String(est.remote)).toContain(topo.addr.fwExternal);
    expect(dante.log()).toMatch(/pass\(\d+\): tcp\/connect/);
    expect(inside.events('session.connected')[0]?.via).toContain(`${dante.address}:${dante.port}`);
    if (!topo.isolated) return;
    const echo = await startEcho(topo, 'server', topo.addr.server);
    try {
      const fromInside = await tcpProbe(topo, 'inside', { host: topo.addr.server, port: echo.port, send: 'hi\n', timeoutMs: 3000 });
      expect(fromInside.ok).toBe(true);
      const probes = await Promise.all(
        (['outside', 'client'] as Role[]).flatMap((role) => [
          tcpProbe(topo, role, { host: topo.addr.server, port: echo.port, timeoutMs: 2000 }),
          tcpProbe(topo, role, { host: topo.addr.server, port: targetPort, timeoutMs: 2000 }),
        ]),
      );
      for (const r of probes) {
        expect(r.ok).toBe(false);
        expect(['connect', 'timeout']).toContain(r.stage);
      }
    } finally {
      await echo.stop();
    }
  });

  it('carries 256 MiB each way at the same time over one service connection, SHA-256 checked', async () => {
    const n = 256 * MiB;
    const c: Conn = { id: 'big', send: n, seed: 'big-client', reply: n, replySeed: 'big-server', mode: 'both' };
    const [r] = await load(port.data, [c], 170_000);
    expect(r!.error).toBeNull();
    expect(r!.ok).toBe(true);
    expect(r!.sent).toBe(n);
    expect(r!.recv).toBe(n);
    const wantUp = sha(c.seed, n);
    const wantDown = sha(c.replySeed, n);
    expect(r!.sentSha).toBe(wantUp);
    expect(r!.recvSha).toBe(wantDown);
    const t = await targetDone('big');
    expect(t.recv).toBe(n);
    expect(t.recvSha).toBe(wantUp);
    expect(t.sentSha).toBe(wantDown);
  }, 180_000);

  it('carries 200 concurrent streams with data both ways, every one verified', async () => {
    const conns: Conn[] = Array.from({ length: 200 }, (_, i) => ({
      id: `many-${i}`,
      // Sizes from 0 to ~400 KiB, different each way, so streams finish at different times.
      send: i === 0 ? 0 : 1 + ((i * 7919) % (400 * 1024)),
      seed: `many-c-${i}`,
      reply: i === 1 ? 0 : 1 + ((i * 104729) % (400 * 1024)),
      replySeed: `many-s-${i}`,
      mode: 'both',
    }));
    const results = await load(port.data, conns, 120_000);
    expect(results).toHaveLength(200);
    const byId = new Map(results.map((r) => [r.id, r]));
    for (const c of conns) {
      const r = byId.get(c.id)!;
      expect(r, c.id).toBeDefined();
      expect(r.error, c.id).toBeNull();
      expect(r.ok, c.id).toBe(true);
      expect(r.recv, c.id).toBe(c.reply);
      expect(r.sentSha, c.id).toBe(sha(c.seed, c.send));
      expect(r.recvSha, c.id).toBe(sha(c.replySeed, c.reply));
    }
    const done = await Promise.all(conns.map((c) => targetDone(c.id)));
    for (const [i, t] of done.entries()) {
      expect(t.recv).toBe(conns[i]!.send);
      expect(t.recvSha).toBe(sha(conns[i]!.seed, conns[i]!.send));
    }
    // The outside relay carried them all on the one session: no second session was made.
    expect(outside.events('session.established').filter((j) => j.inside === 'branch-a')).toHaveLength(1);
  }, 150_000);

  it('honours half-close: a client that shut its write side still gets the whole reply', async () => {
    // The target answers only after reading EOF: "<sha256 of what it got>\n" + the payload.
    const conns: Conn[] = [
      { id: 'half-big', send: 8 * MiB, seed: 'half-c', reply: 32 * MiB, replySeed: 'half-s', mode: 'after-eof' },
      { id: 'half-empty', send: 0, seed: 'half-c0', reply: 3 * MiB + 17, replySeed: 'half-s0', mode: 'after-eof' },
      ...Array.from({ length: 8 }, (_, i): Conn => ({ id: `half-${i}`, send: 1000 * (i + 1), seed: `half-c-${i}`, reply: 200_000 * (i + 1), replySeed: `half-s-${i}`, mode: 'after-eof' })),
    ];
    const results = await load(port.data, conns, 90_000);
    for (const c of conns) {
      const r = results.find((x) => x.id === c.id)!;
      expect(r.error, c.id).toBeNull();
      expect(r.ended, c.id).toBe(true);
      const sentSha = sha(c.seed, c.send);
      expect(r.sentSha, c.id).toBe(sentSha);
      // The first line proves the target read our whole upload up to our FIN.
      expect(r.head.split('\n')[0], c.id).toBe(sentSha);
      const prefix = Buffer.from(`${sentSha}\n`);
      expect(r.recv, c.id).toBe(prefix.length + c.reply);
      expect(r.recvSha, c.id).toBe(sha(c.replySeed, c.reply, prefix));
    }
  }, 120_000);

  it('a refused target closes the client connection, logs CONNECTION_REFUSED, and other streams still work', async () => {
    const before = new Set(inside.lines);
    const refusedConns: Conn[] = Array.from({ length: 3 }, (_, i) => ({ id: `refused-${i}`, send: 0, seed: 'x', reply: 1000, replySeed: 'y', mode: 'both' }));
    const goodConns: Conn[] = Array.from({ length: 5 }, (_, i) => ({ id: `beside-${i}`, send: 2 * MiB, seed: `beside-c-${i}`, reply: 2 * MiB, replySeed: `beside-s-${i}`, mode: 'both' }));
    const [refused, good] = await Promise.all([load(port.refused, refusedConns, 30_000), load(port.data, goodConns, 60_000)]);
    for (const r of refused) {
      // Closed by the relay: no data, no hang (the client's own timeout did not fire).
      expect(r.recv, r.id).toBe(0);
      expect(r.code, r.id).not.toBe('TIMEOUT');
      expect(r.error !== null || r.ended, r.id).toBe(true);
    }
    expect(good).toHaveLength(goodConns.length);
    for (const c of goodConns) {
      const r = good.find((x) => x.id === c.id)!;
      expect(r.error, c.id).toBeNull();
      expect(r.ok, c.id).toBe(true);
      expect(r.recvSha, c.id).toBe(sha(c.replySeed, c.reply));
      expect(r.sentSha, c.id).toBe(sha(c.seed, c.send));
    }
    const refusedTarget = `${topo.addr.server}:${port.unusedTarget}`;
    const ev = await waitForEventAfter(inside, before, 'stream.refused', 10_000, (j) => j.target === refusedTarget);
    expect(ev.result).toBe('CONNECTION_REFUSED');
    expect(ev.code).toMatch(/^PS_ERR_/);
    await waitForCount(inside, 'stream.refused', 3, 10_000, (j) => j.target === refusedTarget && j.result === 'CONNECTION_REFUSED');
    await outside.waitForEvent('stream.refused', 10_000, (j) => j.service === 'refused' && j.result === 'CONNECTION_REFUSED');
    // The session itself survived the refusals.
    expect(inside.events('session.closed')).toHaveLength(0);
  }, 90_000);

  it('a firewall that refuses the session: PS_ERR_FIREWALL_REFUSED, retries, no service opened', async () => {
    // This danted lets the inside reach only some other port on the outside host.
    const strict = await startDante({
      netns: topo.ns.firewall,
      internalAddress: topo.addr.fwInternal,
      externalAddress: topo.addr.fwExternal,
      to: [`${topo.addr.outside}/32 port = ${port.fwOther}`],
    });
    try {
      const file = writeInside('branch-b', {
        socks: `${strict.address}:${strict.port}`,
        services: [{ name: 'b-svc', listen: `${topo.addr.outside}:${port.svcB}`, target: `${topo.addr.server}:${targetPort}` }],
      });
      const b = startInside(file, 'inside-b');
      const failed = await waitForCount(b, 'session.dial_failed', 2, 30_000);
      for (const f of failed) {
        expect(f.code).toBe('PS_ERR_FIREWALL_REFUSED');
        // danted's own verdict (SOCKS5 reply 0x02), not a network failure.
        expect(String(f.reason)).toMatch(/NotAllowed/);
      }
      const dialing = await waitForCount(b, 'session.dialing', 2, 30_000);
      expect(dialing.length).toBeGreaterThanOrEqual(2);
      expect(b.events('session.retry').length).toBeGreaterThanOrEqual(1);
      expect(b.running).toBe(true);
      expect(b.events('session.established')).toHaveLength(0);
      expect(strict.log()).toMatch(/block\(\d+\): tcp\/connect/);
      // No session, so the outside relay opened nothing for branch-b.
      expect(outside.events('session.established').some((j) => j.inside === 'branch-b')).toBe(false);
      expect(outside.events('service.listening').some((j) => j.service === 'b-svc')).toBe(false);
      const ss = await topo.run('outside', 'ss', ['-Hltn', `sport = :${port.svcB}`]);
      expect(ss.stdout.trim()).toBe('');
      await b.stop();
    } finally {
      await strict.stop();
    }
  }, 90_000);

  it('a wrong key: both sides log PS_ERR_AUTH_FAILED and no session is made', async () => {
    const outBefore = new Set(outside.lines);
    const file = writeInside('branch-c', {
      keyName: 'not-branch-c',
      services: [{ name: 'c-svc', listen: `${topo.addr.outside}:${port.svcC}`, target: `${topo.addr.server}:${targetPort}` }],
    });
    const c = startInside(file, 'inside-c');
    const failed = await c.waitForEvent('session.dial_failed', 30_000);
    expect(failed.code).toBe('PS_ERR_AUTH_FAILED');
    const rejected = await waitForEventAfter(outside, outBefore, 'session.rejected', 30_000);
    expect(rejected.code).toBe('PS_ERR_AUTH_FAILED');
    // It keeps trying, and keeps failing the same way.
    await waitForCount(c, 'session.dial_failed', 2, 30_000);
    expect(c.events('session.dial_failed').every((j) => j.code === 'PS_ERR_AUTH_FAILED')).toBe(true);
    expect(c.events('session.established')).toHaveLength(0);
    expect(c.events('session.authenticated')).toHaveLength(0);
    expect(outside.events('session.established').some((j) => j.inside === 'branch-c')).toBe(false);
    expect(outside.events('service.listening').some((j) => j.service === 'c-svc')).toBe(false);
    // No key material in any log line.
    for (const k of [keys['branch-c']!, keys['not-branch-c']!]) {
      expect(c.output()).not.toContain(k);
      expect(outside.output()).not.toContain(k);
    }
    await c.stop();
    // branch-a's session was not disturbed.
    expect(inside.events('session.closed')).toHaveLength(0);
  }, 90_000);

  it('an outside end that accepts but never answers: PS_ERR_HANDSHAKE_TIMEOUT, and the inside keeps re-dialling', async () => {
    // A TCP listener that reads and says nothing (a black hole behind the firewall).
    const silent = track(
      topo.spawn(
        'outside',
        process.execPath,
        ['-e', `require('net').createServer((s) => { s.on('error', () => {}); console.log(JSON.stringify({ event: 'silent.accepted' })); }).listen(${port.silent}, '${topo.addr.outside}', () => console.log(JSON.stringify({ event: 'silent.listening' })))`],
        { name: 'silent' },
      ),
    );
    await silent.waitForEvent('silent.listening', 15_000);
    const file = writeInside('branch-d', {
      outside: `${topo.addr.outside}:${port.silent}`,
      limits: { handshake_timeout_ms: 1000 },
      services: [{ name: 'd-svc', listen: `${topo.addr.outside}:${port.svcD}`, target: `${topo.addr.server}:${targetPort}` }],
    });
    const d = startInside(file, 'inside-d');
    const failed = await waitForCount(d, 'session.dial_failed', 2, 30_000);
    for (const f of failed) expect(f.code).toBe('PS_ERR_HANDSHAKE_TIMEOUT');
    expect((await waitForCount(d, 'session.dialing', 3, 30_000)).length).toBeGreaterThanOrEqual(3);
    expect(silent.events('silent.accepted').length).toBeGreaterThanOrEqual(2);
    expect(d.events('session.established')).toHaveLength(0);
    await d.stop();
    await silent.stop();
  }, 90_000);

  it('the session dropping mid-transfer fails the stream loudly, then comes back and works', async () => {
    const n = 512 * MiB;
    const c: Conn = { id: 'drop', send: n, seed: 'drop-c', reply: n, replySeed: 'drop-s', mode: 'both' };
    const inBefore = new Set(inside.lines);
    let client: Proc | undefined;
    const running = load(port.data, [c], 120_000, 8 * MiB, (p) => (client = p));
    await client!.waitForEvent('load.progress', 60_000, (j) => Number(j.recv) >= 16 * MiB);
    const killed = outside;
    killed.signal('SIGKILL');
    await killed.exited;
    const [r] = await running;
    // Not a silent success: an error, or fewer bytes than promised, and the stream did end.
    expect(r!.code).not.toBe('TIMEOUT');
    expect(r!.ok && r!.recv === n).toBe(false);
    expect(r!.error !== null || r!.recv < n).toBe(true);
    expect(r!.recv).toBeLessThan(n);
    // The target's side of the stream failed too (reset), it never finished cleanly.
    await target.waitForEvent('target.error', 30_000, (j) => j.id === 'drop');
    expect(target.events('target.done').some((j) => j.id === 'drop')).toBe(false);

    await waitForEventAfter(inside, inBefore, 'session.closed', 30_000);
    const closedAt = new Set(inside.lines);
    await waitForEventAfter(inside, closedAt, 'session.dialing', 30_000);
    expect(inside.running).toBe(true);

    outside = startOutside();
    await outside.waitForEvent('outside.listening', 20_000);
    await waitForEventAfter(inside, closedAt, 'session.established', 60_000);
    await outside.waitForEvent('session.established', 30_000, (j) => j.inside === 'branch-a');
    await outside.waitForEvent('service.listening', 10_000, (j) => j.service === 'data');

    const again: Conn = { id: 'after-drop', send: 4 * MiB, seed: 'again-c', reply: 4 * MiB, replySeed: 'again-s', mode: 'both' };
    const [r2] = await load(port.data, [again], 60_000);
    expect(r2!.error).toBeNull();
    expect(r2!.ok).toBe(true);
    expect(r2!.recvSha).toBe(sha(again.replySeed, again.reply));
    const t = await targetDone('after-drop');
    expect(t.recvSha).toBe(sha(again.seed, again.send));
  }, 170_000);

  it('SIGTERM at the outside relay: the transfer under way finishes whole, a new client is refused, the relay exits 0 when it is done', async () => {
    const n = 64 * MiB;
    const c: Conn = { id: 'drain', send: n, seed: 'drain-c', reply: n, replySeed: 'drain-s', mode: 'both' };
    let client: Proc | undefined;
    const running = load(port.data, [c], 120_000, 4 * MiB, (p) => (client = p));
    await client!.waitForEvent('load.progress', 60_000, (j) => Number(j.recv) >= 4 * MiB);
    const inBefore = new Set(inside.lines);
    const stopping = outside;
    stopping.signal('SIGTERM');
    const draining = await stopping.waitForEvent('relay.draining', 10_000);
    expect(Number(draining.open)).toBeGreaterThanOrEqual(1);
    expect(draining.grace_ms).toBe(10_000);
    const late = await tcpProbe(topo, 'client', { host: topo.addr.outside, port: port.data, timeoutMs: 2000 });
    expect(late.ok).toBe(false);
    const [r] = await running;
    expect(r!.error).toBeNull();
    expect(r!.recvSha).toBe(sha(c.replySeed, c.reply));
    expect((await targetDone('drain')).recvSha).toBe(sha(c.seed, c.send));
    expect((await stopping.exited).code).toBe(0);
    expect(stopping.events('relay.drained')).toHaveLength(1);
    expect(stopping.events('relay.drain_timeout')).toHaveLength(0);

    // The inside relay dials again; a new outside relay takes its session back.
    await waitForEventAfter(inside, inBefore, 'session.closed', 30_000);
    const closedAt = new Set(inside.lines);
    outside = startOutside();
    await outside.waitForEvent('outside.listening', 20_000);
    await waitForEventAfter(inside, closedAt, 'session.established', 60_000);
    await outside.waitForEvent('service.listening', 10_000, (j) => j.service === 'data');
  }, 170_000);

  it('`portside check` refuses a bad config naming the line, and accepts good ones', async () => {
    const bad = join(work, 'bad-outside.yaml');
    writeFileSync(bad, ['# an outside relay', 'insides:', '  - name: branch-a', '    key_file: branch-a.key', 'listen: nowhere-without-port', ''].join('\n'));
    const r = await run(process.execPath, [CLI, 'check', '--config', bad]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`${bad}:5:`);
    expect(r.stderr).toContain('listen');
    expect(r.stderr).toContain('PS_ERR_CONFIG');

    const badYaml = join(work, 'bad-yaml.yaml');
    writeFileSync(badYaml, ['name: branch-a', 'key_file: branch-a.key', 'outside: "10.0.0.1:7000', 'services: []', ''].join('\n'));
    const y = await run(process.execPath, [CLI, 'check', '--config', badYaml]);
    expect(y.code).not.toBe(0);
    expect(y.stderr).toMatch(new RegExp(`${badYaml.replace(/[.]/g, '\\.')}:\\d+:`));

    for (const good of [outsideCfg, insideCfg]) {
      const g = await run(process.execPath, [CLI, 'check', '--config', good]);
      expect(g.code, g.stderr).toBe(0);
      expect(g.stdout).toContain('ok');
    }
  }, 60_000);
});
