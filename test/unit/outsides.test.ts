// One inside relay, several outside relays (patent claim 14, [0114]): real relays in one process on
// loopback, one inside config with `outsides:` split by insideRelayConfigs() as `portside inside`
// does. Each outside relay opens the services its entry names; one going away leaves the other.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { insideRelayConfigs, loadInsideConfig, loadOutsideConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { OutsideRelay } from '../../src/relay/outside.js';
import { InsideRelay } from '../../src/relay/inside.js';

type Line = { event?: string; service?: string; name?: string; outside?: string };

describe('one inside relay, two outside relays', () => {
  let dir: string;
  let echo: net.Server;
  const lines: Line[] = [];
  const capture = (name: string) => createLogger('info', name, { write: (l: string) => { lines.push(JSON.parse(l)); } });
  let outsideA: OutsideRelay;
  let outsideB: OutsideRelay;
  let insides: InsideRelay[] = [];
  const port: Record<'web' | 'files' | 'mail', number> = { web: 0, files: 0, mail: 0 };

  const free = (): Promise<number> => new Promise((r) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => r(p)); });
  });
  const echoes = (p: number) => new Promise<boolean>((resolve) => {
    const data = randomBytes(64 * 1024);
    const s = net.connect({ port: p, host: '127.0.0.1' });
    const got: Buffer[] = [];
    let n = 0;
    s.on('data', (b: Buffer) => { got.push(b); n += b.length; if (n >= data.length) { s.destroy(); resolve(Buffer.concat(got).equals(data)); } });
    s.on('error', () => resolve(false));
    s.on('close', () => resolve(false));
    s.write(data);
  });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ps-outsides-'));
    echo = net.createServer((s) => { s.on('error', () => {}); s.pipe(s); });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    const target = `127.0.0.1:${(echo.address() as net.AddressInfo).port}`;
    // Each outside relay has its own key with this inside relay.
    const keyA = randomBytes(32).toString('base64');
    const keyB = randomBytes(32).toString('base64');
    const outside = (name: string, key: string) => new OutsideRelay(loadOutsideConfig(join(dir, `${name}.yaml`), [
      'listen: 127.0.0.1:0',
      `insides: [{name: branch, key: "${key}"}]`,
      'allow: {hosts: [127.0.0.1], ports: ["1024-65535"], from: ["127.0.0.0/8"]}',
    ].join('\n')), capture(name));
    outsideA = outside('outside-a', keyA);
    outsideB = outside('outside-b', keyB);
    const [a, b] = [await outsideA.start(), await outsideB.start()];
    // On one loopback the services of the two outside relays need ports of their own.
    for (const k of ['web', 'files', 'mail'] as const) port[k] = await free();
    const cfg = loadInsideConfig(join(dir, 'inside.yaml'), [
      'name: branch',
      'outsides:',
      `  - address: 127.0.0.1:${a.port}`,
      `    key: "${keyA}"`,
      '    services: [web, files]',
      `  - address: 127.0.0.1:${b.port}`,
      `    key: "${keyB}"`,
      '    services: [mail]',
      'services:',
      `  - {name: web, listen: "127.0.0.1:${port.web}", target: "${target}"}`,
      `  - {name: files, listen: "127.0.0.1:${port.files}", target: "${target}"}`,
      `  - {name: mail, listen: "127.0.0.1:${port.mail}", target: "${target}"}`,
    ].join('\n'));
    const log = capture('inside');
    insides = insideRelayConfigs(cfg).map((c) => new InsideRelay(c, log.child({ outside: c.outside })));
    for (const r of insides) r.start();
    while (lines.filter((l) => l.event === 'service.ready').length < 3) await new Promise((r) => setTimeout(r, 20));
  });

  afterAll(async () => {
    for (const r of insides) r.stop();
    await outsideA?.stop();
    await outsideB?.stop();
    echo?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('each outside relay opens only the services its entry names, and carries them', async () => {
    const at = (name: string) => lines.filter((l) => l.event === 'service.listening' && l.name === name).map((l) => l.service).sort();
    expect(at('outside-a')).toEqual(['files', 'web']);
    expect(at('outside-b')).toEqual(['mail']);
    expect(await echoes(port.web)).toBe(true);
    expect(await echoes(port.files)).toBe(true);
    expect(await echoes(port.mail)).toBe(true);
    // The inside relay's lines say which outside relay each session is with.
    const est = lines.filter((l) => l.event === 'session.established' && l.name === 'inside').map((l) => l.outside);
    expect(new Set(est)).toEqual(new Set(insides.map((r) => r.cfg.outside)));
  });

  it('one outside relay going away leaves the session with the other', async () => {
    await outsideA.stop();
    while (!lines.some((l) => l.event === 'session.closed' && l.name === 'inside' && l.outside === insides[0]!.cfg.outside)) await new Promise((r) => setTimeout(r, 20));
    expect(await echoes(port.mail)).toBe(true);
    expect(insides[1]!.session?.established).toBe(true);
    expect(insides[0]!.session).toBeNull();
  });
});
