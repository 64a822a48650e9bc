// The outside relay's config read again (SIGHUP, OutsideRelay.reload()): real relays in one process
// on loopback. Inside relays added, removed or re-keyed, and the allow list, take effect at once.
import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadInsideConfig, loadOutsideConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { OutsideRelay } from '../../src/relay/outside.js';
import { InsideRelay } from '../../src/relay/inside.js';

type Line = { event?: string; name?: string; inside?: string; reason?: string; code?: string; service?: string };

describe('outside relay: reload', () => {
  let dir: string;
  let echo: net.Server;
  let echoPort: number;
  const lines: Line[] = [];
  const capture = (name: string) => createLogger('info', name, { write: (l: string) => { lines.push(JSON.parse(l)); } });
  const running: Array<{ stop(): unknown }> = [];
  const keyB = randomBytes(32).toString('base64');
  const keyC = randomBytes(32).toString('base64');

  const free = (): Promise<number> => new Promise((r) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => r(p)); });
  });
  const until = async (pred: () => boolean) => { while (!pred()) await new Promise((r) => setTimeout(r, 20)); };
  const outsideText = (insides: string, ports = '["1024-65535"]', extra = '') => [
    'listen: 127.0.0.1:0',
    `insides: ${insides}`,
    `allow: {hosts: [127.0.0.1], ports: ${ports}, from: ["127.0.0.0/8"]}`,
    extra,
  ].join('\n');
  const inside = (name: string, key: string, port: number, service: number) => {
    const r = new InsideRelay(loadInsideConfig(join(dir, `${name}.yaml`), [
      `name: ${name}`,
      `key: "${key}"`,
      `outside: 127.0.0.1:${port}`,
      `services: [{name: svc-${name}, listen: "127.0.0.1:${service}", target: "127.0.0.1:${echoPort}"}]`,
      'reconnect: {min_ms: 50, max_ms: 100}',
    ].join('\n')), capture(`inside-${name}`));
    running.push(r);
    r.start();
    return r;
  };
  const connects = (port: number) => new Promise<boolean>((r) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('error', () => r(false));
    s.once('connect', () => { s.destroy(); r(true); });
  });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ps-reload-'));
    echo = net.createServer((s) => { s.on('error', () => {}); s.pipe(s); });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    echoPort = (echo.address() as net.AddressInfo).port;
  });
  afterEach(async () => {
    for (const r of running.splice(0).reverse()) await r.stop();
    lines.length = 0;
  });
  afterAll(() => {
    echo?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('an inside relay added is let in; one re-keyed has its session ended and its old key refused; other keys changed are named for a restart', async () => {
    const outside = new OutsideRelay(loadOutsideConfig(join(dir, 'o.yaml'), outsideText(`[{name: b, key: "${keyB}"}]`)), capture('outside'));
    running.push(outside);
    const { port } = await outside.start();
    const b = inside('b', keyB, port, await free());
    await until(() => !!b.session?.established);

    const r1 = outside.reload(loadOutsideConfig(join(dir, 'o.yaml'), outsideText(`[{name: b, key: "${keyB}"}, {name: c, key: "${keyC}"}]`)));
    expect(r1).toMatchObject({ added: ['c'], removed: [], rekeyed: [], needRestart: [] });
    const c = inside('c', keyC, port, await free());
    await until(() => !!c.session?.established);
    expect(b.session?.established).toBe(true); // untouched

    const r2 = outside.reload(loadOutsideConfig(join(dir, 'o.yaml'), outsideText(`[{name: b, key: "${randomBytes(32).toString('base64')}"}, {name: c, key: "${keyC}"}]`, undefined, 'log_level: warn')));
    expect(r2).toMatchObject({ added: [], removed: [], rekeyed: ['b'], needRestart: ['log_level'] });
    expect(lines.find((l) => l.event === 'session.ended_by_config')).toMatchObject({ inside: 'b', reason: 'its key changed' });
    // b re-dials with the key it has, and is refused.
    await until(() => lines.some((l) => l.event === 'session.dial_failed' && l.name === 'inside-b'));
    expect(lines.find((l) => l.event === 'session.dial_failed' && l.name === 'inside-b')?.code).toBe('PS_ERR_AUTH_FAILED');
    expect(c.session?.established).toBe(true);
  }, 15_000);

  it('a service port the reloaded allow list refuses is closed; an inside relay removed has its session ended', async () => {
    const outside = new OutsideRelay(loadOutsideConfig(join(dir, 'o2.yaml'), outsideText(`[{name: b, key: "${keyB}"}]`)), capture('outside'));
    running.push(outside);
    const { port } = await outside.start();
    const svc = await free();
    const b = inside('b', keyB, port, svc);
    await until(() => lines.some((l) => l.event === 'service.ready'));
    expect(await connects(svc)).toBe(true);
    const r1 = outside.reload(loadOutsideConfig(join(dir, 'o2.yaml'), outsideText(`[{name: b, key: "${keyB}"}]`, `[${svc + 1}]`)));
    expect(r1.closed).toEqual([`svc-b`]);
    expect(await connects(svc)).toBe(false);
    expect(b.session?.established).toBe(true);
    const r2 = outside.reload(loadOutsideConfig(join(dir, 'o2.yaml'), outsideText(`[{name: c, key: "${keyC}"}]`)));
    expect(r2).toMatchObject({ added: ['c'], removed: ['b'] });
    expect(lines.find((l) => l.event === 'session.ended_by_config')?.reason).toMatch(/no longer in/);
    await until(() => lines.some((l) => l.event === 'session.closed' && l.name === 'inside-b'));
  }, 15_000);
});
