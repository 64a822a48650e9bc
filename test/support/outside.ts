import { Writable } from 'node:stream';
import { limitsSchema, type OutsideConfig } from '../../src/config.js';
import { createLogger, type Logger } from '../../src/log.js';

/** An outside relay config for in-process tests: one inside relay 'branch-a' with `key`. */
export function outsideConfig(key: Buffer, limits: Partial<OutsideConfig['limits']> = {}): OutsideConfig {
  return {
    file: 'test.yaml',
    listen: '127.0.0.1:0',
    insides: [{ name: 'branch-a', key: key.toString('base64') }],
    keys: new Map([['branch-a', key]]),
    allow: { hosts: ['127.0.0.1'], ports: ['1024-65535'], from: ['127.0.0.0/8'] },
    limits: limitsSchema.parse({ keepalive_timeout_ms: 60_000, max_streams: 100, ...limits }),
    log_level: 'info',
  } as OutsideConfig;
}

/** A logger whose JSON lines are collected for assertions. */
export function logSink(): { lines: Array<Record<string, unknown>>; log: Logger } {
  const lines: Array<Record<string, unknown>> = [];
  const dest = new Writable({
    write(chunk, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { lines, log: createLogger('info', 'outside', dest as never) };
}
