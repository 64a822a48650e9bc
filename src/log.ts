import pino from 'pino';
import { metrics } from './metrics.js';

export type Logger = pino.Logger;

/**
 * Structured logs, one JSON object per line on stdout. Milestones carry an `event` field
 * (README, "Logs"); errors carry the stable `code` (docs/errors.md). Secrets are redacted by path.
 */
export function createLogger(level = 'info', name = 'portside', dest?: pino.DestinationStream): Logger {
  let out = dest ?? pino.destination({ dest: 1, sync: true });
  // Warnings are made even when the level hides them, so portside_errors_total counts every
  // failure; only the stream then drops them.
  const quiet = level === 'error' || level === 'fatal' || level === 'silent';
  if (quiet) out = pino.multistream(level === 'silent' ? [] : [{ level, stream: out }]);
  return pino(
    {
      name,
      level: quiet ? 'warn' : level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: ['key', 'password', '*.password', '*.key', 'firewall.password'], censor: '[secret]' },
      hooks: {
        // Every failure is logged once with its stable code: that count is portside_errors_total.
        logMethod(args, method, lvl) {
          if (lvl >= 40) {
            const code = (args[0] as { code?: unknown } | undefined)?.code;
            if (typeof code === 'string') metrics.errors.inc({ code });
          }
          method.apply(this, args);
        },
      },
    },
    // Written as they are made (pino.destination sync): a line per connection handed to a worker
    // thread cost more (a futex and an event-loop wake-up each) than writing it, and a crash
    // loses no lines.
    out,
  );
}

/**
 * One connection's fields on every line it logs, without a pino child per connection: a child
 * is made (its bindings serialised) at once, about 10 µs, and most connections log one line.
 */
export class Fields {
  constructor(readonly log: Logger, readonly fields: Record<string, unknown>) {}
  with(more: Record<string, unknown>): Fields {
    return new Fields(this.log, { ...this.fields, ...more });
  }
  debug(o: object, msg: string): void {
    if (this.log.isLevelEnabled('debug')) this.log.debug({ ...this.fields, ...o }, msg);
  }
  info(o: object, msg: string): void {
    this.log.info({ ...this.fields, ...o }, msg);
  }
  warn(o: object, msg: string): void {
    this.log.warn({ ...this.fields, ...o }, msg);
  }
}
