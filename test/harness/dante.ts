// Real Dante SOCKS5 server (danted) as the firewall between inside and outside relays.
import { mkdtempSync, writeFileSync, readFileSync, chmodSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Proc, freePort, waitListening, runOk, run, onExitSync, execSyncQuiet } from './procs.js';

export interface DanteOptions {
  /** Address danted listens on for SOCKS clients (the firewall's inside address). */
  internalAddress: string;
  /** Port for SOCKS clients; a free one when omitted. */
  port?: number;
  /** Address danted dials out from (the firewall's outside address). */
  externalAddress: string;
  /** 'username' = RFC 1929 against system users (see createSystemUser). */
  socksmethod?: 'none' | 'username';
  /** Client networks allowed to connect to danted (default 0.0.0.0/0). */
  from?: string;
  /**
   * Destinations SOCKS clients may reach, in danted syntax, e.g. `10.201.1.20/32 port = 7000`.
   * Default: anything (`0.0.0.0/0`). Everything else is refused by an explicit block rule.
   */
  to?: string[];
  /** Run inside this network namespace. */
  netns?: string;
  /** Commands allowed (default connect bind udpassociate). */
  commands?: string;
  /** Extra lines appended to the config verbatim. */
  extraConfig?: string;
  startTimeoutMs?: number;
  /** Keep the temp dir (config, log) after stop() (default: removed). */
  keepFiles?: boolean;
}

export interface Dante {
  pid: number;
  address: string;
  port: number;
  dir: string;
  configFile: string;
  logFile: string;
  proc: Proc;
  /** Current content of danted's log file. */
  log(): string;
  stop(): Promise<void>;
}

/** danted.conf text for the options (each keyword on its own line: danted's parser is picky). */
export function danteConfig(opts: DanteOptions & { port: number; logFile: string }): string {
  const method = opts.socksmethod ?? 'none';
  const from = opts.from ?? '0.0.0.0/0';
  const tos = opts.to && opts.to.length ? opts.to : ['0.0.0.0/0'];
  const commands = opts.commands ?? 'connect bind udpassociate';
  const lines: string[] = [
    `logoutput: ${opts.logFile}`,
    `internal: ${opts.internalAddress} port = ${opts.port}`,
    `external: ${opts.externalAddress}`,
    'clientmethod: none',
    `socksmethod: ${method}`,
    // privileged root: username auth must read /etc/shadow.
    'user.privileged: root',
    'user.unprivileged: nobody',
    'client pass {',
    `  from: ${from} to: 0.0.0.0/0`,
    '  log: error connect disconnect',
    '}',
  ];
  for (const to of tos) {
    lines.push(
      'socks pass {',
      `  from: ${from} to: ${to}`,
      `  command: ${commands}`,
      '  log: error connect disconnect',
      ...(method === 'username' ? ['  socksmethod: username'] : []),
      '}',
    );
  }
  lines.push(
    'socks pass {',
    '  from: 0.0.0.0/0 to: 0.0.0.0/0',
    '  command: bindreply udpreply',
    '  log: error connect disconnect',
    '}',
    // Explicit so refusals are logged (danted blocks unmatched requests anyway).
    'socks block {',
    '  from: 0.0.0.0/0 to: 0.0.0.0/0',
    '  log: error connect',
    '}',
  );
  if (opts.extraConfig) lines.push(opts.extraConfig);
  return lines.join('\n') + '\n';
}

/**
 * Start danted in the foreground (no -D: -D daemonizes) as its own process group, and wait
 * until it listens. stop() signals the whole group: danted forks monitor/negotiate/request/io
 * children.
 */
export async function startDante(opts: DanteOptions): Promise<Dante> {
  const dir = mkdtempSync(join(tmpdir(), 'ps-dante-'));
  // danted drops to `nobody` for some work and keeps lock files in TMPDIR.
  chmodSync(dir, 0o755);
  const port = opts.port ?? (await freePort(opts.netns ? '127.0.0.1' : opts.internalAddress));
  const logFile = join(dir, 'dante.log');
  const configFile = join(dir, 'danted.conf');
  const pidFile = join(dir, 'danted.pid');
  writeFileSync(configFile, danteConfig({ ...opts, port, logFile }));
  const check = await run('danted', ['-V', '-f', configFile], { netns: opts.netns, env: { ...process.env, TMPDIR: dir } });
  if (check.code !== 0) {
    // danted reports config errors to its logoutput, not stderr.
    const why = `${check.stderr}${check.stdout}${existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''}`;
    const msg = `danted rejected its config:\n${why}\n${readFileSync(configFile, 'utf8')}`;
    rmSync(dir, { recursive: true, force: true });
    throw new Error(msg);
  }
  const proc = new Proc('danted', ['-f', configFile, '-p', pidFile], {
    netns: opts.netns,
    name: `danted${opts.netns ? `@${opts.netns}` : ''}`,
    env: { ...process.env, TMPDIR: dir },
  });
  const log = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  try {
    await waitListening(port, { netns: opts.netns, address: opts.internalAddress, timeoutMs: opts.startTimeoutMs ?? 10_000, proc });
  } catch (e) {
    await proc.stop(500);
    const msg = `${(e as Error).message}\ndanted log:\n${log()}`;
    if (!opts.keepFiles) rmSync(dir, { recursive: true, force: true });
    throw new Error(msg);
  }
  return {
    pid: proc.pid,
    address: opts.internalAddress,
    port,
    dir,
    configFile,
    logFile,
    proc,
    log,
    stop: async () => {
      await proc.stop(3_000);
      if (!opts.keepFiles) rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface SystemUser {
  name: string;
  password: string;
  remove(): Promise<void>;
}

/** Create a throw-away system user (no home, no shell) for danted's username method. */
export async function createSystemUser(name?: string, password?: string): Promise<SystemUser> {
  const user = name ?? `psu${process.pid.toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  const pass = password ?? `pw-${Math.random().toString(36).slice(2, 12)}`;
  await runOk('useradd', ['-M', '-N', '-s', '/usr/sbin/nologin', user]);
  const unregister = onExitSync(() => execSyncQuiet('userdel', [user]));
  await runOk('chpasswd', [], { input: `${user}:${pass}\n` });
  return {
    name: user,
    password: pass,
    remove: async () => {
      unregister();
      await run('userdel', [user]);
    },
  };
}
