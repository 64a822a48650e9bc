import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { OutsideRelay } from '../../src/relay/outside.js';
import { logSink, outsideConfig } from '../support/outside.js';

/**
 * Unauthenticated peers at the outside relay: a cap on how many may wait at once and a short
 * deadline, each refusal logged with its code, over real loopback sockets.
 */
const SHARED = Buffer.alloc(32, 0x33);

function config(maxPending: number, timeoutMs: number) {
  return outsideConfig(SHARED, { handshake_timeout_ms: timeoutMs, max_pending_handshakes: maxPending });
}

const open: net.Socket[] = [];
let relay: OutsideRelay | null = null;
afterEach(async () => {
  for (const s of open.splice(0)) s.destroy();
  await relay?.stop();
  relay = null;
});

async function connect(port: number): Promise<net.Socket> {
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});
  open.push(s);
  await once(s, 'connect');
  return s;
}

async function until(pred: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('unauthenticated peers at the outside relay', () => {
  it('closes connections beyond max_pending_handshakes at once, with PS_ERR_HANDSHAKE_LIMIT', async () => {
    const { lines, log } = logSink();
    relay = new OutsideRelay(config(2, 30_000), log);
    const { port } = (await relay.start()) as AddressInfo;
    const a = await connect(port);
    const b = await connect(port);
    const c = await connect(port);
    await once(c, 'close');
    await until(() => lines.some((l) => l.code === 'PS_ERR_HANDSHAKE_LIMIT'));
    expect(a.destroyed).toBe(false);
    expect(b.destroyed).toBe(false);
    // Freeing a place lets the next peer wait again.
    a.destroy();
    await new Promise((r) => setTimeout(r, 100));
    const d = await connect(port);
    await new Promise((r) => setTimeout(r, 200));
    expect(d.destroyed).toBe(false);
    expect(lines.filter((l) => l.code === 'PS_ERR_HANDSHAKE_LIMIT')).toHaveLength(1);
  });

  it('closes handshakes beyond limits.handshake_burst from one address at once, logged once with the count', async () => {
    const { lines, log } = logSink();
    relay = new OutsideRelay(outsideConfig(SHARED, { handshake_rate: 0.01, handshake_burst: 3 }), log);
    const { port } = (await relay.start()) as AddressInfo;
    const socks = [];
    for (let i = 0; i < 6; i++) socks.push(await connect(port));
    await Promise.all(socks.slice(3).map((s) => (s.destroyed ? null : once(s, 'close'))));
    await new Promise((r) => setTimeout(r, 200));
    expect(socks.map((s) => s.destroyed)).toEqual([false, false, false, true, true, true]);
    const rejected = lines.filter((l) => l.event === 'session.rejected');
    expect(rejected).toHaveLength(1);
    expect(rejected[0]).toMatchObject({ code: 'PS_ERR_HANDSHAKE_LIMIT', remote: '127.0.0.1', refused: 1 });
    expect(String(rejected[0]!.reason)).toMatch(/limits\.handshake_rate/);
  });

  it('closes a peer that does not authenticate within handshake_timeout_ms, with PS_ERR_HANDSHAKE_TIMEOUT', async () => {
    const { lines, log } = logSink();
    relay = new OutsideRelay(config(8, 300), log);
    const { port } = (await relay.start()) as AddressInfo;
    const silent = await connect(port);
    await once(silent, 'close');
    await until(() => lines.some((l) => l.code === 'PS_ERR_HANDSHAKE_TIMEOUT'));
    const rejected = lines.find((l) => l.code === 'PS_ERR_HANDSHAKE_TIMEOUT')!;
    expect(rejected.event).toBe('session.rejected');
  });

  it('logs garbage instead of a TLS ClientHello as a rejected session and keeps serving', async () => {
    const { lines, log } = logSink();
    relay = new OutsideRelay(config(8, 5000), log);
    const { port } = (await relay.start()) as AddressInfo;
    const s = await connect(port);
    s.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await once(s, 'close');
    await until(() => lines.some((l) => l.event === 'session.rejected' && typeof l.code === 'string'));
    const again = await connect(port);
    expect(again.destroyed).toBe(false);
  });
});
