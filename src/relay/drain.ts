import { randomBytes } from 'node:crypto';
import { ErrorCode } from '../errors.js';
import type { Logger } from '../log.js';
import { Flag, type Frame } from '../session/frame.js';
import type { Session } from '../session/session.js';

/**
 * Something that carries connections and can stop taking new ones while those it has finish
 * (a relay, the client port, the agent).
 */
export interface Drainable {
  /** Take no new connections; those open go on. */
  quiesce(): void;
  /** Connections still open. */
  readonly active: number;
}

let draining = false;
/** Has this process begun a graceful stop (GET /healthz then answers 503)? */
export function isDraining(): boolean {
  return draining;
}
/** The process is stopping (its first SIGTERM/SIGINT). */
export function markDraining(): void {
  draining = true;
}

/** How often a draining process looks whether its last connection has ended. */
const POLL_MS = 100;

/**
 * A graceful stop (first SIGTERM/SIGINT, or the old sessions of a config reload): no new
 * connections, then wait until every open one has ended or `graceMs` has passed. Resolves how many
 * were still open (the caller's stop() then cuts them). A restart should not cut a transfer that
 * would have ended a second later. `fields` go on its log lines (e.g. `{reason: 'reload'}`).
 */
export async function drain(parts: Drainable[], graceMs: number, log: Logger, fields: Record<string, unknown> = {}): Promise<number> {
  for (const p of parts) p.quiesce();
  const open = () => parts.reduce((n, p) => n + p.active, 0);
  const t0 = Date.now();
  let left = open();
  if (left === 0) return 0;
  if (graceMs === 0) {
    log.warn({ ...fields, event: 'relay.drain_timeout', code: ErrorCode.SHUTTING_DOWN, open: left, grace_ms: 0 }, `closing ${left} open connections (shutdown_grace_ms is 0)`);
    return left;
  }
  log.info({ ...fields, event: 'relay.draining', open: left, grace_ms: graceMs }, `taking no new connections; waiting up to ${graceMs} ms for ${left} open (a second signal stops at once)`);
  while (left > 0 && Date.now() - t0 < graceMs) {
    await new Promise((r) => setTimeout(r, Math.min(POLL_MS, graceMs - (Date.now() - t0))));
    left = open();
  }
  if (left > 0) log.warn({ ...fields, event: 'relay.drain_timeout', code: ErrorCode.SHUTTING_DOWN, open: left, grace_ms: graceMs }, `closing ${left} connections still open after the shutdown grace`);
  else log.info({ ...fields, event: 'relay.drained', in_ms: Date.now() - t0 }, 'every connection has ended');
  return left;
}

/**
 * Sessions whose peer has not yet answered a ping sent when we began to drain. Until it has,
 * streams it opened before it knew may still be on their way (TCP keeps order: its answer comes
 * after them), so a drain with nothing open must not end yet: count these as open.
 */
export class Settling {
  private readonly tokens = new Map<Session, Buffer>();

  start(session: Session): void {
    if (session.closed) return;
    const token = randomBytes(8);
    this.tokens.set(session, token);
    session.ping(token);
  }

  /** A PING frame from `session`: the answer we wait for settles it. */
  answer(session: Session, f: Frame): void {
    const t = this.tokens.get(session);
    if (t && f.flags & Flag.ACK && f.payload.equals(t)) this.tokens.delete(session);
  }

  get size(): number {
    let n = 0;
    for (const [s] of this.tokens) {
      if (s.closed) this.tokens.delete(s);
      else n++;
    }
    return n;
  }
}
