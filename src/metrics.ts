/**
 * Prometheus metrics (docs/configuration.md, "metrics"): served over HTTP at `metrics: HOST:PORT`
 * when the config has it, counted always (a counter costs well under a microsecond; nothing is
 * counted per byte: bytes come from the sessions' own counters when scraped).
 */
import http from 'node:http';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { ConfigError, ErrorCode } from './errors.js';
import { splitHostPort } from './config.js';
import type { Logger } from './log.js';

/** What metrics read from a live session at scrape time (src/session/session.ts has these). */
export interface TrackedSession {
  readonly role: string;
  established: boolean;
  readonly streamCount: number;
  bytesIn: number;
  bytesOut: number;
}

/** What GET /healthz answers: 200 when `ok`, else 503; the object is the JSON body. */
export interface Health { ok: boolean; status: string; [k: string]: unknown }

export class Metrics {
  readonly registry = new Registry();
  /** Set by the command that runs (src/cli.ts); unset, the process is healthy while it runs. */
  health: (() => Health) | null = null;
  /** Carried connections set up, by path: `service` and `client` (outside relay), `inside`, `agent`. Failures are in `errors`. */
  readonly connections = new Counter({
    name: 'portside_connections_total',
    help: 'Carried connections set up, by path (service, client: at the outside relay; inside; agent)',
    labelNames: ['path'] as const,
    registers: [this.registry],
  });
  /** Every warning or error logged with a code. */
  readonly errors = new Counter({
    name: 'portside_errors_total',
    help: 'Warnings and errors logged, by their stable code (docs/errors.md)',
    labelNames: ['code'] as const,
    registers: [this.registry],
  });
  /** Sessions on sockets now (relay/link.ts adds each and removes it when it closes). */
  private readonly live = new Set<TrackedSession>();
  /** Bytes of sessions already closed: the byte counters must not fall when one ends. */
  private readonly closed = { in: 0, out: 0 };
  private defaults = false;

  constructor() {
    const live = this.live;
    const closed = this.closed;
    new Gauge({
      name: 'portside_sessions',
      help: 'Sessions established now, by our role in them (outside, inside, client-port: the outside relay\'s side of an agent\'s session, client: the agent\'s)',
      labelNames: ['role'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const s of live) if (s.established) this.inc({ role: s.role });
      },
    });
    new Gauge({
      name: 'portside_streams',
      help: 'Carried connections (session streams) open now',
      registers: [this.registry],
      collect() {
        let n = 0;
        for (const s of live) n += s.streamCount;
        this.set(n);
      },
    });
    for (const dir of ['in', 'out'] as const) {
      new Counter({
        name: `portside_session_bytes_${dir}_total`,
        help: `Bytes ${dir === 'in' ? 'received' : 'sent'} on sessions (frames and their payloads), since start`,
        registers: [this.registry],
        // Read from the sessions' own counters at scrape time, not counted per frame.
        collect() {
          let n = closed[dir];
          for (const s of live) n += dir === 'in' ? s.bytesIn : s.bytesOut;
          this.reset();
          this.inc(n);
        },
      });
    }
  }

  /** Count a session from now until the returned function is called (when it closes). */
  track(s: TrackedSession): () => void {
    this.live.add(s);
    return () => {
      if (!this.live.delete(s)) return;
      this.closed.in += s.bytesIn;
      this.closed.out += s.bytesOut;
    };
  }

  /** Serve GET /metrics at `address` (HOST:PORT, port 0 for any). */
  async serve(address: string): Promise<{ server: http.Server; address: string; port: number }> {
    const { host, port } = splitHostPort(address);
    // Process figures (CPU, memory, event-loop delay, GC) only when someone may read them: the
    // event-loop monitor wakes the process every 10 ms.
    if (!this.defaults) {
      this.defaults = true;
      collectDefaultMetrics({ register: this.registry });
    }
    const server = http.createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      if (req.method === 'GET' && path === '/healthz') {
        const h = this.health?.() ?? { ok: true, status: 'ok' };
        res.writeHead(h.ok ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(h) + '\n');
        return;
      }
      if (req.method !== 'GET' || path !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('portside: metrics are at GET /metrics, health at GET /healthz\n');
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => reject(Object.assign(new ConfigError(`metrics: cannot listen on ${address}: ${err.code ?? err.message}`), { errno: err.code })));
      server.listen(port, host, () => resolve());
    });
    const a = server.address() as { address: string; port: number };
    return { server, address: a.address, port: a.port };
  }
}

/** The process's metrics: one registry, whichever relays run in it (tests run several). */
export const metrics = new Metrics();

/** Start the metrics endpoint when the config names one (`metrics: HOST:PORT`), and log where. */
export async function serveMetrics(address: string | undefined, log: Logger, retryMs = 1000): Promise<() => void> {
  if (!address) return () => {};
  let server: http.Server | null = null;
  let timer: NodeJS.Timeout | undefined;
  const up = (m: { server: http.Server; address: string; port: number }) => {
    server = m.server;
    log.info({ event: 'metrics.listening', address: m.address, port: m.port }, 'Prometheus metrics at GET /metrics, health at GET /healthz');
  };
  const close = () => { clearInterval(timer); server?.close(); };
  try {
    up(await metrics.serve(address));
  } catch (err) {
    // In use: most likely the process this one replaces, still draining (docs/operations.md).
    // Take the port when it is free; anything else is a config error.
    if ((err as { errno?: string }).errno !== 'EADDRINUSE') throw err;
    log.warn({ event: 'metrics.waiting', code: ErrorCode.CONFIG, address }, `metrics: ${address} is in use (by the process this one replaces, while it drains?); trying again every ${retryMs} ms`);
    timer = setInterval(() => {
      metrics.serve(address).then((m) => { clearInterval(timer); up(m); }, () => {});
    }, retryMs);
    timer.unref();
  }
  return close;
}
