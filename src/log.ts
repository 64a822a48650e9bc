import pino from 'pino';

export type Logger = pino.Logger;

/**
 * Structured logs, one JSON object per line on stdout. Milestones carry an `event` field
 * (README, "Logs"); errors carry the stable `code` (docs/errors.md). Secrets are redacted by path.
 */
export function createLogger(level = 'info', name = 'portside', dest?: pino.DestinationStream): Logger {
  return pino(
    {
      name,
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: ['key', 'password', '*.password', '*.key', 'firewall.password'], censor: '[secret]' },
    },
    dest ?? pino.destination({ dest: 1, sync: false }),
  );
}
