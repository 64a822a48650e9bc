/** CLI commands of the client side: `portside client`, `portside passwd`, `keygen --cert` (docs/client.md). */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { ConfigError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { isDraining, type Drainable } from '../relay/drain.js';
import { metrics, serveMetrics } from '../metrics.js';
import { clientSecrets, warnReadableSecrets } from '../secrets.js';
import { ClientAgent } from './agent.js';
import { makeSelfSignedCert } from './cert.js';
import { loadClientConfig } from './config.js';
import { hashUserLine, parseUsers } from './users.js';

export function registerClientCommands(program: Command, onSignal: (log: Logger, graceMs: number, parts: () => Drainable[], stop: () => Promise<void>) => void): void {
  program
    .command('client')
    .description('run the client agent: local forwards and a local SOCKS5 server, carried through the outside relay')
    .requiredOption('-c, --config <file>', 'client agent config (YAML)')
    .action(async (o: { config: string }) => {
      const cfg = loadClientConfig(o.config);
      const log = createLogger(cfg.log_level, 'client');
      warnReadableSecrets(clientSecrets(cfg), log);
      const agent = new ClientAgent(cfg, log);
      await agent.start();
      // The session to the outside relay is dialled when needed: ready is listening and not stopping.
      metrics.health = () => ({ ok: !isDraining(), status: isDraining() ? 'draining' : 'ok', active: agent.active });
      await serveMetrics(cfg.metrics, log);
      onSignal(log, cfg.shutdown_grace_ms, () => [agent], async () => { await agent.stop(); });
    });

  program
    .command('passwd')
    .description("make a users-file line for the outside relay's clients.auth: users (password from PORTSIDE_PASSWORD or the first line of stdin)")
    .argument('<name>', 'user name')
    .option('--file <file>', 'add (or replace) the user in FILE instead of printing the line')
    .action(async (name: string, o: { file?: string }) => {
      const password = process.env.PORTSIDE_PASSWORD ?? (await readStdinLine());
      if (!password) throw new ConfigError('no password: set PORTSIDE_PASSWORD or give it on stdin');
      const line = await hashUserLine(name, password);
      if (!o.file) { process.stdout.write(line + '\n'); return; }
      const old = existsSync(o.file) ? readFileSync(o.file, 'utf8') : '';
      parseUsers(old, o.file); // refuse to extend a broken file
      const kept = old.split('\n').filter((l) => l.trim() && !l.startsWith(`${name}:`));
      // Written aside and renamed over: a running outside relay reads the file when it changes,
      // and must never see it half written.
      const tmp = `${o.file}.${process.pid}.tmp`;
      writeFileSync(tmp, [...kept, line].join('\n') + '\n', { mode: 0o600, flag: 'wx' });
      renameSync(tmp, o.file);
      process.stderr.write(`${o.file}: user '${name}' set (a running outside relay takes it within a second)\n`);
    });
}

/** `portside keygen --cert`: self-signed ECDSA P-256 certificate and key for the client port. */
export async function keygenCert(o: { outCert?: string; outKey?: string; name?: string }): Promise<void> {
  if (!o.outCert || !o.outKey) throw new ConfigError('keygen --cert needs --out-cert FILE and --out-key FILE');
  const c = await makeSelfSignedCert(o.name);
  writeFileSync(o.outKey, c.key, { mode: 0o600, flag: 'wx' });
  writeFileSync(o.outCert, c.cert, { mode: 0o644, flag: 'wx' });
  process.stderr.write(`wrote ${o.outCert} and ${o.outKey}\n`);
  // stdout: just the fingerprint, for scripts (client config outside_fingerprint).
  process.stdout.write(`sha256:${c.fingerprint}\n`);
}

function readStdinLine(): Promise<string> {
  return new Promise((resolve) => {
    let buf = '';
    if (process.stdin.isTTY) process.stderr.write('password: ');
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (d: string) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i >= 0) { process.stdin.pause(); resolve(buf.slice(0, i).replace(/\r$/, '')); }
    });
    process.stdin.on('end', () => resolve(buf.replace(/\r?\n$/, '')));
  });
}
