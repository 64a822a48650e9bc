import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { OutsideRelay } from '../../src/relay/outside.js';
import { channelBinding, clientOptions } from '../../src/relay/tls.js';
import { FrameType, type Frame } from '../../src/session/frame.js';
import { deriveKeys, InsideTrial } from '../../src/session/handshake.js';
import { encodeJson } from '../../src/session/init.js';
import { Session } from '../../src/session/session.js';
import { logSink, outsideConfig } from '../support/outside.js';

/**
 * The outside relay's set-up over a real loopback TLS connection, driven by a hand-made inside
 * relay so the test controls the order of frames. Keep-alive pings may arrive at any moment,
 * also during the trial exchange: they must not break it.
 */
const SHARED = Buffer.alloc(32, 0x5a);

let relay: OutsideRelay | null = null;
afterEach(async () => { await relay?.stop(); relay = null; });

/** Run the inside half by hand; `beforeFin` may wait for something before TRIAL_FIN is sent. */
async function handshake(keepaliveMs: number, beforeFin: (pings: () => number) => Promise<void>) {
  const { lines, log } = logSink();
  relay = new OutsideRelay(outsideConfig(SHARED, { keepalive_interval_ms: keepaliveMs }), log);
  const addr: AddressInfo = await relay.start();
  const keys = deriveKeys(SHARED);
  const sock = tls.connect({ host: '127.0.0.1', port: addr.port, ...clientOptions('branch-a', keys.psk) });
  await once(sock, 'secureConnect');
  const trial = new InsideTrial(keys.trial, channelBinding(sock));
  const control: Frame[] = [];
  let pings = 0;
  let wake: (() => void) | null = null;
  const closed: Array<number | null> = [];
  const session = new Session({
    role: 'inside',
    onWrite: (chunks) => { for (const c of chunks) sock.write(c); },
    onControl: (f) => { control.push({ ...f, payload: Buffer.from(f.payload) }); wake?.(); },
    onClose: (_err, remote) => { closed.push(remote); wake?.(); },
  });
  sock.on('data', (d: Buffer) => {
    // Count the outside relay's keep-alive pings (the Session answers them itself).
    for (let i = 0; i + 12 <= d.length; i++) if (d[i] === FrameType.PING && d[i + 1] === 0 && d.readUInt32BE(i + 8) === 8) { pings++; break; }
    session.parse(d);
    wake?.();
  });
  sock.on('error', () => {});
  sock.on('close', () => { session.close(null); wake?.(); });
  const until = async (ok: () => boolean) => { while (!ok()) await new Promise<void>((r) => { wake = r; }); wake = null; };

  session.sendControl(FrameType.TRIAL_REQ, 0, trial.start());
  await until(() => control.length > 0 || session.closed);
  expect(control[0]?.type).toBe(FrameType.TRIAL_RSP);
  const fin = trial.onResponse(control[0].payload);
  await beforeFin(() => pings);
  session.sendControl(FrameType.TRIAL_FIN, 0, fin);
  session.sendControl(FrameType.INIT, 0, encodeJson({ v: 1, name: 'branch-a', services: [], rules: {} }));
  await until(() => control.some((f) => f.type === FrameType.INIT_ACK) || session.closed);
  sock.destroy();
  return { control, closed, lines, pings: () => pings, until };
}

describe('outside relay set-up over TLS', () => {
  it('a plain set-up reaches INIT_ACK and logs session.established', async () => {
    const r = await handshake(60_000, async () => {});
    expect(r.control.map((f) => f.type)).toContain(FrameType.INIT_ACK);
    expect(r.closed).toEqual([]);
    expect(r.lines.some((l) => l.event === 'session.authenticated')).toBe(true);
  });

  it('a keep-alive ping answered during the trial exchange does not end the session', async () => {
    // The outside relay pings every 5 ms; we answer (the Session does) before sending TRIAL_FIN.
    // Its PING ACK handling must not treat our ACK as an unexpected handshake frame.
    const r = await handshake(5, async (pings) => {
      while (pings() === 0) await new Promise<void>((res) => setImmediate(res));
    });
    expect(r.pings()).toBeGreaterThan(0);
    const rejected = r.lines.find((l) => l.event === 'session.rejected');
    expect(rejected?.reason, 'outside relay rejected the session').toBeUndefined();
    expect(r.control.map((f) => f.type)).toContain(FrameType.INIT_ACK);
  });
});
