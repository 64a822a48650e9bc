import { describe, expect, it } from 'vitest';
import net from 'node:net';
import { createLogger } from '../../src/log.js';
import { metrics, serveMetrics } from '../../src/metrics.js';
import { ConfigError } from '../../src/errors.js';
import { seriesValue } from '../support/metrics.js';

const now = () => metrics.registry.metrics();

describe('metrics', () => {
  it('counts every warning and error logged with a code, by code; info lines and lines without a code are not failures', async () => {
    const log = createLogger('info', 'test', { write: () => {} });
    const before = await now();
    log.warn({ event: 'x', code: 'PS_ERR_TEST_A' }, 'a');
    log.error({ event: 'x', code: 'PS_ERR_TEST_A' }, 'a again');
    log.info({ event: 'x', code: 'PS_ERR_TEST_B' }, 'not a failure');
    log.warn({ event: 'x' }, 'no code');
    const after = await now();
    expect(seriesValue(after, 'portside_errors_total{code="PS_ERR_TEST_A"}') - seriesValue(before, 'portside_errors_total{code="PS_ERR_TEST_A"}')).toBe(2);
    expect(seriesValue(after, 'portside_errors_total{code="PS_ERR_TEST_B"}')).toBe(0);
  });

  it('counts warnings also at log_level error and silent, where they are not written; error lines are written at error', async () => {
    for (const level of ['error', 'silent']) {
      const written: string[] = [];
      const log = createLogger(level, 'test', { write: (l: string) => { written.push(l); } });
      const code = `PS_ERR_TEST_${level.toUpperCase()}`;
      const before = await now();
      log.warn({ event: 'x', code }, 'hidden');
      log.info({ event: 'x', code }, 'hidden, not a failure');
      log.error({ event: 'x', code }, 'shown at error');
      const after = await now();
      expect(seriesValue(after, `portside_errors_total{code="${code}"}`) - seriesValue(before, `portside_errors_total{code="${code}"}`)).toBe(2);
      expect(written.map((l) => JSON.parse(l).msg)).toEqual(level === 'error' ? ['shown at error'] : []);
      expect(log.isLevelEnabled('info')).toBe(false);
    }
  });

  it('reads sessions at scrape time: established ones by role, their open streams, and bytes that do not fall when a session closes', async () => {
    const a = { role: 'outside', established: true, streamCount: 3, bytesIn: 1000, bytesOut: 2000 };
    const b = { role: 'outside', established: false, streamCount: 0, bytesIn: 10, bytesOut: 20 };
    const c = { role: 'client', established: true, streamCount: 2, bytesIn: 5, bytesOut: 7 };
    const before = await now();
    const untrack = [a, b, c].map((s) => metrics.track(s));
    let t = await now();
    expect(seriesValue(t, 'portside_sessions{role="outside"}')).toBe(1);
    expect(seriesValue(t, 'portside_sessions{role="client"}')).toBe(1);
    expect(seriesValue(t, 'portside_streams') - seriesValue(before, 'portside_streams')).toBe(5);
    expect(seriesValue(t, 'portside_session_bytes_in_total') - seriesValue(before, 'portside_session_bytes_in_total')).toBe(1015);
    a.bytesOut += 500; // live sessions are read as they are now
    untrack[0]!();
    untrack[0]!(); // twice: counted once
    t = await now();
    expect(seriesValue(t, 'portside_sessions{role="outside"}')).toBe(0);
    expect(seriesValue(t, 'portside_session_bytes_out_total') - seriesValue(before, 'portside_session_bytes_out_total')).toBe(2527);
    untrack[1]!();
    untrack[2]!();
    t = await now();
    expect(seriesValue(t, 'portside_streams') - seriesValue(before, 'portside_streams')).toBe(0);
    expect(seriesValue(t, 'portside_session_bytes_out_total') - seriesValue(before, 'portside_session_bytes_out_total')).toBe(2527);
  });

  it('serves GET /metrics over HTTP (loopback, port 0) with process figures; anything else is 404', async () => {
    const m = await metrics.serve('127.0.0.1:0');
    try {
      const r = await fetch(`http://127.0.0.1:${m.port}/metrics`);
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      const text = await r.text();
      expect(text).toContain('# TYPE portside_connections_total counter');
      expect(text).toContain('# TYPE portside_session_bytes_in_total counter');
      expect(text).toMatch(/^process_cpu_seconds_total \d/m);
      expect((await fetch(`http://127.0.0.1:${m.port}/`)).status).toBe(404);
      expect((await fetch(`http://127.0.0.1:${m.port}/metrics`, { method: 'POST' })).status).toBe(404);
    } finally {
      m.server.close();
    }
  });

  it('an address it cannot listen on is a config error that names it', async () => {
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const err = await metrics.serve(`127.0.0.1:${port}`).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).code).toBe('PS_ERR_CONFIG');
      expect((err as Error).message).toBe(`metrics: cannot listen on 127.0.0.1:${port}: EADDRINUSE`);
    } finally {
      taken.close();
    }
  });

  it('serveMetrics: an address in use (the process it replaces, draining) is taken once it is free; meanwhile a warning', async () => {
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
    const port = (taken.address() as net.AddressInfo).port;
    const lines: Array<{ event?: string; code?: string }> = [];
    const log = createLogger('info', 'test', { write: (l: string) => { lines.push(JSON.parse(l)); } });
    const close = await serveMetrics(`127.0.0.1:${port}`, log, 50);
    expect(lines.find((l) => l.event === 'metrics.waiting')?.code).toBe('PS_ERR_CONFIG');
    await new Promise<void>((r) => taken.close(() => r()));
    while (!lines.some((l) => l.event === 'metrics.listening')) await new Promise((r) => setTimeout(r, 20));
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(res.status).toBe(200);
    close();
  });
});
