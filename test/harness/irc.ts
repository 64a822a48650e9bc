// Real IRC server (Debian's ngircd) in the foreground, stopped by PID, and scripted IRC clients
// (irc-client.mjs) driven over stdin, for the IRC DCC end-to-end test.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Proc, waitListening } from './procs.js';

export interface NgircdOptions {
  netns?: string;
  address: string;
  port: number;
  startTimeoutMs?: number;
}

export interface Ngircd {
  pid: number;
  address: string;
  port: number;
  proc: Proc;
  stop(): Promise<void>;
}

/** ngircd.conf for a throw-away server: no DNS, ident or PAM lookups; no flood-limit surprises. */
export function ngircdConfig(o: { address: string; port: number }): string {
  return [
    '[Global]',
    'Name = irc.portside.test',
    'Info = portside e2e test server',
    'AdminInfo1 = portside tests',
    'AdminInfo2 = nowhere',
    'AdminEMail = nobody@portside.test',
    `Listen = ${o.address}`,
    `Ports = ${o.port}`,
    'MotdPhrase = "portside e2e"',
    '[Limits]',
    'MaxConnectionsIP = 0',
    'PingTimeout = 600',
    'PongTimeout = 120',
    '[Options]',
    'DNS = no',
    'Ident = no',
    'PAM = no',
    '',
  ].join('\n');
}

/** Start ngircd in the foreground (`-n`) and wait until it listens. */
export async function startNgircd(o: NgircdOptions): Promise<Ngircd> {
  const dir = mkdtempSync(join(tmpdir(), 'ps-ngircd-'));
  const conf = join(dir, 'ngircd.conf');
  writeFileSync(conf, ngircdConfig(o));
  const proc = new Proc('ngircd', ['-n', '-f', conf], { netns: o.netns, name: 'ngircd' });
  try {
    await proc.waitForLine((l) => l.raw.includes('Now listening on'), o.startTimeoutMs ?? 10_000);
    await waitListening(o.port, { netns: o.netns, address: o.address, proc, timeoutMs: o.startTimeoutMs ?? 10_000 });
  } catch (e) {
    await proc.stop();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    pid: proc.pid,
    address: o.address,
    port: o.port,
    proc,
    stop: async () => {
      await proc.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const CLIENT = new URL('./irc-client.mjs', import.meta.url).pathname;

export interface IrcClientOptions {
  netns?: string;
  host: string;
  port: number;
  nick: string;
  /** Local address for the IRC and DCC connections. */
  bind?: string;
}

export type IrcCommand =
  | { op: 'say'; to: string; text: string }
  | { op: 'offer'; to: string; name: string; size: number; listen: string }
  | { op: 'offer'; to: string; name: string; size: number; announce: string; port: number }
  | { op: 'get'; host: string; port: number; size: number; bind?: string }
  | { op: 'quit' };

export interface IrcClient {
  proc: Proc;
  send(c: IrcCommand): void;
  /** Resolve with the first event `name` (seen or future) that matches. */
  wait(name: string, match?: (e: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  events(name?: string): Record<string, unknown>[];
  stop(): Promise<void>;
}

/** Start a scripted client (irc-client.mjs); resolves once the server has welcomed it (001). */
export async function startIrcClient(o: IrcClientOptions, timeoutMs = 15_000): Promise<IrcClient> {
  const args = [CLIENT, JSON.stringify({ host: o.host, port: o.port, nick: o.nick, bind: o.bind })];
  const proc = new Proc(process.execPath, args, { netns: o.netns, name: `irc-${o.nick}`, stdin: true });
  const client: IrcClient = {
    proc,
    send: (c) => proc.write(`${JSON.stringify(c)}\n`),
    wait: (name, match, t = 15_000) => proc.waitForEvent(name, t, match),
    events: (name) => proc.events(name),
    stop: async () => {
      await proc.stop();
    },
  };
  try {
    await client.wait('irc.registered', undefined, timeoutMs);
  } catch (e) {
    await proc.stop();
    throw e;
  }
  return client;
}
