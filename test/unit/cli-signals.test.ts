// Signals to `portside outside` / `portside inside` as processes (dist/cli.js) on loopback: the
// first SIGTERM drains (src/relay/drain.ts), a duplicate delivered at once (process and group,
// or npm passing on a Ctrl-C) is the same signal, and a second one a second later stops at once.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

const cli = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

type Line = { event?: string; code?: string; open?: number; port?: number; service?: string; reason?: string };

/** A relay process whose JSON log lines are collected. */
function relay(kind: 'outside' | 'inside', config: string) {
  const child = spawn(process.execPath, [cli, kind, '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Line[] = [];
  let rest = '';
  child.stdout!.on('data', (b: Buffer) => {
    const parts = (rest + b.toString()).split('\n');
    rest = parts.pop()!;
    for (const p of parts) if (p.trim()) lines.push(JSON.parse(p));
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const waitFor = async (event: string, ms = 10_000) => {
    const t0 = Date.now();
    for (;;) {
      const l = lines.find((x) => x.event === event);
      if (l) return l;
      if (Date.now() - t0 > ms) throw new Error(`${kind}: no ${event} in ${ms} ms: ${JSON.stringify(lines.slice(-5))}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { child, lines, exited, waitFor };
}

/** A port free on loopback now. */
const free = (): Promise<number> => new Promise((r) => {
  const s = net.createServer();
  s.listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => r(p)); });
});

describe('signals to a relay process', () => {
  let dir: string;
  let target: net.Server;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ps-signals-'));
    target = net.createServer((s) => { s.on('error', () => {}); s.pipe(s); });
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', () => r()));
  });
  afterEach(() => {
    for (const c of children.splice(0)) c.kill('SIGKILL');
  });
  afterAll(() => {
    target?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** An outside and an inside relay process; `outsides` replaces the inside relay's `outside:` line. */
  const pair = async (o: { outsides?: (sessionPort: number) => string } = {}) => {
    const [sessionPort, servicePort, outsideMetrics, insideMetrics] = [await free(), await free(), await free(), await free()];
    const key = randomBytes(32).toString('base64');
    writeFileSync(join(dir, 'outside.yaml'), [
      `listen: 127.0.0.1:${sessionPort}`,
      `insides: [{name: b, key: "${key}"}]`,
      'allow: {hosts: [127.0.0.1], ports: ["1024-65535"], from: ["127.0.0.0/8"]}',
      `metrics: 127.0.0.1:${outsideMetrics}`,
    ].join('\n'));
    writeFileSync(join(dir, 'inside.yaml'), [
      'name: b',
      `key: "${key}"`,
      o.outsides ? o.outsides(sessionPort) : `outside: 127.0.0.1:${sessionPort}`,
      `services: [{name: echo, listen: "127.0.0.1:${servicePort}", target: "127.0.0.1:${(target.address() as net.AddressInfo).port}"}]`,
      `metrics: 127.0.0.1:${insideMetrics}`,
    ].join('\n'));
    const outside = relay('outside', join(dir, 'outside.yaml'));
    children.push(outside.child);
    await outside.waitFor('outside.listening');
    const inside = relay('inside', join(dir, 'inside.yaml'));
    children.push(inside.child);
    await inside.waitFor('service.ready');
    await inside.waitFor('metrics.listening');
    return { outside, inside, sessionPort, servicePort, outsideMetrics, insideMetrics };
  };

  /** GET /healthz: the HTTP status and the JSON body. */
  const health = async (port: number) => {
    const r = await fetch(`http://127.0.0.1:${port}/healthz`);
    return { code: r.status, body: (await r.json()) as { status: string; sessions?: string[]; active?: number } };
  };

  const echoing = async (port: number) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.on('error', () => {});
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    const echo = (data: Buffer) => new Promise<boolean>((resolve) => {
      const got: Buffer[] = [];
      let n = 0;
      const on = (b: Buffer) => { got.push(b); n += b.length; if (n >= data.length) { s.off('data', on); resolve(Buffer.concat(got).equals(data)); } };
      s.on('data', on);
      s.write(data);
    });
    await new Promise<void>((r) => s.once('connect', () => r()));
    expect(await echo(randomBytes(1000))).toBe(true);
    return { s, closed, echo };
  };

  it('SIGTERM drains (GET /healthz 503), the same signal again within the second changes nothing; a second SIGTERM a second later closes the open connection and exits 1', async () => {
    const { outside, servicePort, outsideMetrics } = await pair();
    const c = await echoing(servicePort);
    expect(await health(outsideMetrics)).toEqual({ code: 200, body: { ok: true, status: 'ok', sessions: ['b'], active: 1 } });
    outside.child.kill('SIGTERM');
    const draining = await outside.waitFor('relay.draining');
    expect(draining.open).toBe(1);
    expect(await health(outsideMetrics)).toMatchObject({ code: 503, body: { status: 'draining' } });
    // The same signal again within the second (two sent at once may merge into one in the kernel).
    outside.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    expect(outside.lines.some((l) => l.event === 'relay.stopping_now')).toBe(false);
    expect(await c.echo(randomBytes(100_000))).toBe(true);
    await new Promise((r) => setTimeout(r, 900));
    outside.child.kill('SIGTERM');
    expect((await outside.waitFor('relay.stopping_now')).code).toBe('PS_ERR_SHUTTING_DOWN');
    expect(await outside.exited).toBe(1);
    await c.closed;
  }, 20_000);

  it('the inside relay exits 0 once its open connection has ended; GET /healthz says ok, then draining', async () => {
    const { inside, servicePort, insideMetrics } = await pair();
    const c = await echoing(servicePort);
    expect(await health(insideMetrics)).toMatchObject({ code: 200, body: { status: 'ok', active: 1 } });
    inside.child.kill('SIGINT');
    await inside.waitFor('relay.draining');
    expect(await health(insideMetrics)).toMatchObject({ code: 503, body: { status: 'draining' } });
    expect(await c.echo(randomBytes(100_000))).toBe(true);
    c.s.end();
    expect((await inside.waitFor('relay.drained')).event).toBe('relay.drained');
    expect(await inside.exited).toBe(0);
  }, 20_000);

  it('GET /healthz at an inside relay with no session answers 503 "no session"', async () => {
    const [metricsPort, nobody] = [await free(), await free()];
    writeFileSync(join(dir, 'alone.yaml'), ['name: b', `key: "${randomBytes(32).toString('base64')}"`, `outside: 127.0.0.1:${nobody}`, `metrics: 127.0.0.1:${metricsPort}`].join('\n'));
    const inside = relay('inside', join(dir, 'alone.yaml'));
    children.push(inside.child);
    await inside.waitFor('metrics.listening');
    expect(await health(metricsPort)).toMatchObject({ code: 503, body: { status: 'no session' } });
  }, 20_000);

  it('an inside relay with two outside relays, one of them down: a session to the other, GET /healthz 503 "partial"', async () => {
    const nobody = await free();
    const { inside, sessionPort, servicePort, insideMetrics } = await pair({ outsides: (p) => `outsides: [{address: "127.0.0.1:${p}"}, {address: "127.0.0.1:${nobody}"}]` });
    await echoing(servicePort);
    const h = await health(insideMetrics);
    expect(h.code).toBe(503);
    expect(h.body).toMatchObject({ status: 'partial', outsides: [{ address: `127.0.0.1:${sessionPort}`, up: true }, { address: `127.0.0.1:${nobody}`, up: false }] });
    // Each line of the inside relay says which outside relay it is about.
    const failed = inside.lines.filter((l) => l.event === 'session.dial_failed') as Array<Line & { outside?: string }>;
    expect(failed.length).toBeGreaterThan(0);
    expect(failed.every((l) => l.outside === `127.0.0.1:${nobody}`)).toBe(true);
  }, 20_000);

  it('SIGHUP: the inside relay reads its file again; new sessions carry the new services, the open connection finishes on the old one; a bad file changes nothing', async () => {
    const { outside, inside, servicePort } = await pair();
    const c = await echoing(servicePort);
    const added = await free();
    const file = join(dir, 'inside.yaml');
    const text = readFileSync(file, 'utf8');
    const t = (target.address() as net.AddressInfo).port;
    writeFileSync(file, text.replace(/services: \[(.*)\]/, `services: [$1, {name: echo2, listen: "127.0.0.1:${added}", target: "127.0.0.1:${t}"}]`));
    inside.child.kill('SIGHUP');
    expect((await inside.waitFor('config.reloaded')).event).toBe('config.reloaded');
    await outside.waitFor('session.succeeded');
    while (inside.lines.filter((l) => l.event === 'service.ready').length < 3) await new Promise((r) => setTimeout(r, 20));
    // The new service, the old one (on the new session), and the connection open since before.
    expect(await (await echoing(added)).echo(randomBytes(10_000))).toBe(true);
    expect(await (await echoing(servicePort)).echo(randomBytes(10_000))).toBe(true);
    expect(await c.echo(randomBytes(100_000))).toBe(true);
    c.s.end();
    expect(await inside.waitFor('relay.drained')).toMatchObject({ reason: 'reload' });
    // A file that does not parse: logged, and the running config stays.
    writeFileSync(file, 'name: [');
    inside.child.kill('SIGHUP');
    expect((await inside.waitFor('config.reload_failed')).code).toBe('PS_ERR_CONFIG');
    expect(await (await echoing(added)).echo(randomBytes(10_000))).toBe(true);
  }, 20_000);

  it('an inside relay restarted with SIGTERM and a new process at once (docs/operations.md): the new one takes over, the old one finishes its connection and exits 0, then the new one takes the metrics port', async () => {
    const { outside, inside, servicePort, insideMetrics } = await pair();
    const c = await echoing(servicePort);
    inside.child.kill('SIGTERM');
    await inside.waitFor('relay.draining');
    const next = relay('inside', join(dir, 'inside.yaml'));
    children.push(next.child);
    await outside.waitFor('session.succeeded');
    await next.waitFor('service.ready');
    expect((await next.waitFor('metrics.waiting')).code).toBe('PS_ERR_CONFIG');
    expect(await (await echoing(servicePort)).echo(randomBytes(10_000))).toBe(true);
    expect(await c.echo(randomBytes(100_000))).toBe(true);
    c.s.end();
    expect(await inside.exited).toBe(0);
    await next.waitFor('metrics.listening');
    expect(await health(insideMetrics)).toMatchObject({ code: 200, body: { status: 'ok' } });
  }, 20_000);

  it('an outside relay replaced by a new process at the same address: the inside relay moves its services to the new one at once, the old one finishes its connection and exits 0', async () => {
    const { outside, inside, servicePort } = await pair();
    const c = await echoing(servicePort);
    outside.child.kill('SIGTERM');
    await outside.waitFor('relay.draining');
    await inside.waitFor('session.outside_draining');
    const next = relay('outside', join(dir, 'outside.yaml'));
    children.push(next.child);
    await next.waitFor('service.listening');
    expect(await (await echoing(servicePort)).echo(randomBytes(10_000))).toBe(true);
    expect(await c.echo(randomBytes(100_000))).toBe(true);
    c.s.end();
    expect(await outside.exited).toBe(0);
    // The old session's end is not followed by a dial: the inside relay stays with the new one.
    await new Promise((r) => setTimeout(r, 300));
    expect(await (await echoing(servicePort)).echo(randomBytes(10_000))).toBe(true);
    expect(inside.lines.filter((l) => l.event === 'session.established')).toHaveLength(2);
  }, 20_000);
});
