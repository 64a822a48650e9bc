#!/usr/bin/env -S node --single-threaded-gc --max-semi-space-size=2
// --single-threaded-gc: on small machines V8's parallel GC helpers cost more in synchronisation
// than they save (about a quarter of the relay CPU per GiB in `npm run bench`).
// --max-semi-space-size=2: a relay allocates little per byte (reads land in reused blocks), so a
// young generation of 2 MiB instead of up to 16 costs no measurable throughput and keeps ~3 KiB
// per connection off the idle figure at 10 000 connections. Flags must be given when node starts.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { detectConfigKind, insideRelayConfigs, loadInsideConfig, loadOutsideConfig, readConfigFile, type LoadedInsideConfig } from './config.js';
import { ErrorCode, PortsideError } from './errors.js';
import { createLogger, type Logger } from './log.js';
import { metrics, serveMetrics } from './metrics.js';
import { insideSecrets, outsideSecrets, warnReadableSecrets } from './secrets.js';
import { parseRules } from './rules/index.js';
import { InsideRelay } from './relay/inside.js';
import { OutsideRelay } from './relay/outside.js';
import { attachDynamicInside, attachDynamicOutside, checkRulesFiles } from './relay/dynamic.js';
import { registerRunCommand } from './run.js';
import { keygenCert, registerClientCommands } from './agent/cli.js';
import { loadClientConfig } from './agent/config.js';
import { ClientPort } from './relay/clientport.js';
import { drain, isDraining, markDraining, type Drainable } from './relay/drain.js';

const program = new Command();
program
  .name('portside')
  .description('Carry TCP services and dynamic-port protocols across a firewall over one encrypted session.')
  .version('0.1.0');

program
  .command('keygen')
  .description('make a shared key for an inside/outside relay pair (32 random bytes, base64)')
  .option('--out <file>', 'write the key to FILE (mode 0600) instead of stdout')
  .option('--cert', "instead: a self-signed certificate for the outside relay's client port (prints its fingerprint)")
  .option('--out-cert <file>', 'with --cert: certificate file')
  .option('--out-key <file>', 'with --cert: private key file (mode 0600)')
  .action(async (o: { out?: string; cert?: boolean; outCert?: string; outKey?: string }) => {
    if (o.cert) return keygenCert(o);
    const key = randomBytes(32).toString('base64') + '\n';
    if (o.out) {
      writeFileSync(o.out, key, { mode: 0o600, flag: 'wx' });
      process.stderr.write(`wrote ${o.out}\n`);
    } else process.stdout.write(key);
  });

program
  .command('outside')
  .description('run the outside relay (ESP): accept sessions from inside relays, serve their services')
  .requiredOption('-c, --config <file>', 'outside relay config (YAML)')
  .action(async (o: { config: string }) => {
    const cfg = loadOutsideConfig(o.config);
    const log = createLogger(cfg.log_level, 'outside');
    warnReadableSecrets(outsideSecrets(cfg), log);
    const relay = new OutsideRelay(cfg, log);
    attachDynamicOutside(relay);
    await relay.start();
    const clients = ClientPort.forConfig(relay, log);
    await clients?.start();
    metrics.health = () => ({
      ok: !isDraining(),
      status: isDraining() ? 'draining' : 'ok',
      sessions: [...relay.peers.values()].filter((p) => p.session.established && !p.session.closed).map((p) => p.name),
      active: relay.active + (clients?.active ?? 0),
    });
    await serveMetrics(cfg.metrics, log);
    // SIGHUP: read the file again; inside relays and the allow list take effect at once (the users
    // file is re-read by itself when it changes).
    process.on('SIGHUP', () => {
      if (isDraining()) return;
      try {
        const r = relay.reload(loadOutsideConfig(o.config));
        log.info({ event: 'config.reloaded', added: r.added, removed: r.removed, rekeyed: r.rekeyed, closed: r.closed }, 'config reloaded: insides and allow');
        if (r.needRestart.length) log.warn({ event: 'config.reload_partial', code: ErrorCode.CONFIG, keys: r.needRestart }, `changed keys that take effect only after a restart: ${r.needRestart.join(', ')}`);
      } catch (err) {
        const e = err as PortsideError;
        log.warn({ event: 'config.reload_failed', code: e.code ?? ErrorCode.CONFIG, reason: e.message }, 'config not reloaded: the running one stays');
      }
    });
    onSignal(log, cfg.limits.shutdown_grace_ms, () => (clients ? [relay, clients] : [relay]), async () => { await clients?.stop(); await relay.stop(); });
  });

program
  .command('inside')
  .description('run the inside relay (ISP): dial out through the firewall and carry services')
  .requiredOption('-c, --config <file>', 'inside relay config (YAML)')
  .action(async (o: { config: string }) => {
    const cfg = loadInsideConfig(o.config);
    const log = createLogger(cfg.log_level, 'inside');
    warnReadableSecrets(insideSecrets(cfg), log);
    // One session per outside relay (claim 14), each with the policy the file sets for it.
    const start = (c: LoadedInsideConfig) => insideRelayConfigs(c).map((one) => {
      const relay = new InsideRelay(one, c.outsides.length > 1 ? log.child({ outside: one.outside }) : log);
      attachDynamicInside(relay);
      return relay;
    });
    let relays = start(cfg);
    for (const r of relays) r.start();
    /** Sessions of an earlier config, still finishing their connections. */
    const retiring = new Set<InsideRelay>();
    // SIGHUP: read the file again. The policy travels in a session's init data, so new sessions
    // carry the new one: the old sessions drain (the outside relays hand their services to the new
    // ones at once, session.succeeded) and end when their connections have.
    process.on('SIGHUP', () => {
      if (isDraining()) return;
      let next: LoadedInsideConfig;
      try {
        next = loadInsideConfig(o.config);
        checkRulesFiles(next);
      } catch (err) {
        const e = err as PortsideError;
        log.warn({ event: 'config.reload_failed', code: e.code ?? ErrorCode.CONFIG, reason: e.message }, 'config not reloaded: the running one stays');
        return;
      }
      const old = relays;
      for (const r of old) {
        r.quiesce();
        retiring.add(r);
      }
      relays = start(next);
      for (const r of relays) r.start();
      log.info({ event: 'config.reloaded', outsides: next.outsides.map((t) => t.address), services: next.services.map((s) => s.name) }, 'config reloaded: new sessions carry it; the old ones finish their connections');
      void drain(old, next.limits.shutdown_grace_ms, log, { reason: 'reload' }).then(() => {
        for (const r of old) {
          retiring.delete(r);
          r.stop();
        }
      });
    });
    // Ready while every session to an outside relay is up: without one, its services are gone.
    metrics.health = () => {
      const outsides = relays.map((r) => ({ address: r.cfg.outside, up: !!r.session?.established && !r.session.closed }));
      const up = outsides.filter((o) => o.up).length;
      const status = isDraining() ? 'draining' : up === outsides.length ? 'ok' : up === 0 ? 'no session' : 'partial';
      return { ok: status === 'ok', status, outsides, active: relays.reduce((n, r) => n + r.active, 0) };
    };
    await serveMetrics(cfg.metrics, log);
    onSignal(log, cfg.limits.shutdown_grace_ms, () => [...relays, ...retiring], async () => { for (const r of [...relays, ...retiring]) r.stop(); });
  });

program
  .command('check')
  .description('validate a config file (and the rules files it names), or rules files, without starting anything')
  .option('-c, --config <file>', 'config file to check')
  .option('-r, --rules <files...>', 'rules files to check')
  .action((o: { config?: string; rules?: string[] }) => {
    if (!o.config && !o.rules) throw new PortsideError('PS_ERR_CONFIG', 'give --config FILE and/or --rules FILE...');
    for (const f of o.rules ?? []) {
      const r = parseRules(readConfigFile(f), f);
      process.stdout.write(`${f}: ok (rules '${r.name}', ${r.notices.length} notices)\n`);
    }
    if (!o.config) return;
    const kind = detectConfigKind(readConfigFile(o.config));
    if (kind === 'outside') {
      const relay = new OutsideRelay(loadOutsideConfig(o.config), createLogger('silent'));
      ClientPort.forConfig(relay, relay.log); // reads the certificate, key and users file
    } else if (kind === 'client') loadClientConfig(o.config, undefined, { PORTSIDE_PASSWORD: '', ...process.env });
    else if (kind === 'inside') {
      const cfg = loadInsideConfig(o.config);
      checkRulesFiles(cfg);
    } else throw new PortsideError('PS_ERR_CONFIG', `${o.config}: neither an inside config (has 'outside:') nor an outside config (has 'insides:')`);
    process.stdout.write(`${o.config}: ok (${kind === 'client' ? 'client agent' : `${kind} relay`})\n`);
  });

registerRunCommand(program);
registerClientCommands(program, onSignal);

/** Signals this close together are one (onSignal). */
const SAME_SIGNAL_MS = 1000;

/**
 * SIGTERM/SIGINT: a graceful stop (drain.ts): no new connections, up to `graceMs` for the open
 * ones, then stop. A second signal stops at once, if it comes a second or more after the first:
 * one Ctrl-C often arrives twice at once (from the terminal to the process group, and from npm or
 * npx passing it on), and so does a kill sent to a process and its group.
 */
function onSignal(log: Logger, graceMs: number, parts: () => Drainable[], stop: () => Promise<void>): void {
  let stopping = 0;
  // The process may also end by itself once every handle is closed: exitCode holds the status.
  const exit = () => setTimeout(() => process.exit(), 200).unref();
  const handler = () => {
    if (stopping && Date.now() - stopping < SAME_SIGNAL_MS) return;
    if (stopping) {
      log.warn({ event: 'relay.stopping_now', code: ErrorCode.SHUTTING_DOWN, open: parts().reduce((n, p) => n + p.active, 0) }, 'second signal: closing every connection now');
      process.exitCode = 1;
      void stop().finally(exit);
      return;
    }
    stopping = Date.now();
    markDraining();
    drain(parts(), graceMs, log).then(stop).finally(exit);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}

program.parseAsync(process.argv).catch((err: unknown) => {
  const code = err instanceof PortsideError ? err.code : 'PS_ERR_INTERNAL';
  process.stderr.write(`portside: ${(err as Error).message} [${code}]\n`);
  process.exit(2);
});
