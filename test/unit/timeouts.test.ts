// Carried connections' timeouts (limits.idle_timeout_ms, limits.half_close_timeout_ms): real outside
// and inside relays in one process on loopback, a service to a TCP target that echoes and never
// closes its side.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadInsideConfig, loadOutsideConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { OutsideRelay } from '../../src/relay/outside.js';
import { InsideRelay } from '../../src/relay/inside.js';
import { attachDynamicInside, attachDynamicOutside } from '../../src/relay/dynamic.js';

type Line = { event?: string; code?: string; reason?: string; name?: string };

describe('carried connection timeouts (in process, loopback)', () => {
  let dir: string;
  let target: net.Server;
  let targetPort: number;
  const lines: Line[] = [];
  const capture = (name: string) => createLogger('info', name, { write: (l: string) => { lines.push(JSON.parse(l)); } });
  let stopPair: (() => Promise<void>) | null = null;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ps-timeouts-'));
    // Echoes, and never ends its side: a FIN from the client stays unanswered.
    target = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      s.on('data', (b) => s.write(b));
    });
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', () => r()));
    targetPort = (target.address() as net.AddressInfo).port;
  });

  afterEach(async () => {
    await stopPair?.();
    stopPair = null;
    lines.length = 0;
  });

  afterAll(() => {
    target?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Outside and inside relay with `limits` lines, one service to the target; resolves its port. */
  const pair = async (limits: string[], rules?: string, outsideLimits = limits): Promise<number> => {
    const free = net.createServer();
    await new Promise<void>((r) => free.listen(0, '127.0.0.1', () => r()));
    const servicePort = (free.address() as net.AddressInfo).port;
    await new Promise((r) => free.close(r));
    const key = randomBytes(32).toString('base64');
    const outside = new OutsideRelay(loadOutsideConfig(join(dir, 'outside.yaml'), [
      'listen: 127.0.0.1:0',
      `insides: [{name: b, key: "${key}"}]`,
      'allow: {hosts: [127.0.0.1], ports: ["1024-65535"], from: ["127.0.0.0/8"]}',
      'limits:', ...outsideLimits,
    ].join('\n')), capture('outside'));
    const sess = await outside.start();
    const inside = new InsideRelay(loadInsideConfig(join(dir, 'inside.yaml'), [
      'name: b',
      `key: "${key}"`,
      `outside: 127.0.0.1:${sess.port}`,
      `services: [{name: echo, listen: "127.0.0.1:${servicePort}", target: "127.0.0.1:${targetPort}"${rules ? `, rules: ${rules}` : ''}}]`,
      `rules_dir: ${join(process.cwd(), 'rules')}`,
      'limits:', ...limits,
    ].join('\n')), capture('inside'));
    if (rules) {
      attachDynamicOutside(outside);
      attachDynamicInside(inside);
    }
    stopPair = async () => { inside.stop(); await outside.stop(); };
    inside.start();
    // The service listener opens once INIT_ACK has been sent.
    while (!lines.some((l) => l.event === 'service.ready')) await new Promise((r) => setTimeout(r, 20));
    return servicePort;
  };

  /** A client of the service that has had one echo; resolves its socket and a promise of its close. */
  const connected = async (servicePort: number) => {
    const s = net.connect({ port: servicePort, host: '127.0.0.1', allowHalfOpen: true });
    s.on('error', () => {});
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.write('x');
    await new Promise<void>((r) => s.once('data', () => r()));
    return { s, closed };
  };

  it('closes a connection with no bytes for idle_timeout_ms (PS_ERR_IDLE_TIMEOUT), while a busy one stays open', async () => {
    // No half-close limit here: only the idle one can close anything.
    const port = await pair(['  idle_timeout_ms: 700', '  half_close_timeout_ms: 0']);
    const idle = await connected(port);
    const busy = await connected(port);
    let echoed = 0;
    busy.s.on('data', (b) => { echoed += b.length; });
    let busyClosed = false;
    void busy.closed.then(() => { busyClosed = true; });
    let sent = 0;
    const ticker = setInterval(() => { busy.s.write('y'); sent++; }, 40);
    await idle.closed;
    // Keep the busy one going well past the idle limit after the idle one went.
    await new Promise((r) => setTimeout(r, 900));
    clearInterval(ticker);
    expect(busyClosed).toBe(false);
    while (echoed < sent) await new Promise((r) => setTimeout(r, 20));
    expect(echoed).toBe(sent);
    busy.s.destroy();
    const t = lines.filter((l) => l.event === 'stream.timeout');
    expect(t.length).toBeGreaterThanOrEqual(1);
    expect(t.every((l) => l.code === 'PS_ERR_IDLE_TIMEOUT')).toBe(true);
    expect(t.some((l) => /idle_timeout_ms/.test(l.reason ?? ''))).toBe(true);
  }, 15_000);

  it('closes a half-closed connection whose server never ends after half_close_timeout_ms', async () => {
    // No idle limit here: without the half-close one the connection would stay open for ever.
    const port = await pair(['  idle_timeout_ms: 0', '  half_close_timeout_ms: 250']);
    const c = await connected(port);
    c.s.end(); // our FIN; the target never sends its own
    await c.closed;
    const t = lines.filter((l) => l.event === 'stream.timeout');
    expect(t.length).toBeGreaterThanOrEqual(1);
    expect(t[0]!.code).toBe('PS_ERR_IDLE_TIMEOUT');
    expect(t[0]!.reason).toMatch(/half_close_timeout_ms/);
  }, 15_000);

  it('closes a half-closed control connection of a service with rules (FTP) whose server never ends, and its inside relay says so', async () => {
    // Only the inside relay's limit can close it (the outside relay's is off): its own timer is what is tested.
    const port = await pair(['  idle_timeout_ms: 0', '  half_close_timeout_ms: 250'], 'ftp', ['  idle_timeout_ms: 0', '  half_close_timeout_ms: 0']);
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    s.on('error', () => {});
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.write('NOOP\r\n');
    await new Promise<void>((r) => s.once('data', () => r()));
    s.end(); // our FIN; the target never sends its own
    await closed;
    const t = lines.filter((l) => l.event === 'stream.timeout');
    expect(t.length).toBeGreaterThanOrEqual(1);
    expect(t.some((l) => l.name === 'inside' && l.code === 'PS_ERR_IDLE_TIMEOUT' && /half_close_timeout_ms/.test(l.reason ?? ''))).toBe(true);
  }, 15_000);
});
