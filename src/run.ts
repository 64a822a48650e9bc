/**
 * `portside run -- PROGRAM ARGS…`: run an unmodified program with the socket hook
 * (hook/portside-hook.so, LD_PRELOAD) so its connect() calls to configured
 * destinations go to the portside agent's SOCKS5 server. See docs/hook.md.
 */
import { spawn } from 'node:child_process';
import { lookup } from 'node:dns/promises';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { constants as osConstants } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import { PortsideError } from './errors.js';

export type RouteAction = 'portside' | 'direct';
export interface HookRoute {
  /** Numeric match in the hook's syntax: `*`, `A.B.C.D/N`, `[V6/N]`, each with optional `:PORT` or `:LO-HI`. */
  match: string;
  action: RouteAction;
}

export const DEFAULT_SOCKS = '127.0.0.1:1080';

/** Where the built hook is: PORTSIDE_HOOK_PATH, else hook/portside-hook.so in this package. */
export function hookPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.PORTSIDE_HOOK_PATH) return env.PORTSIDE_HOOK_PATH;
  // dist/run.js (and src/run.ts under a TS loader) sit one level below the package root.
  return fileURLToPath(new URL('../hook/portside-hook.so', import.meta.url));
}

const PORT_RE = /^(\d{1,5})(?:-(\d{1,5}))?$/;

function checkPorts(p: string, what: string): void {
  const m = PORT_RE.exec(p);
  const lo = m ? Number(m[1]) : NaN;
  const hi = m?.[2] !== undefined ? Number(m[2]) : lo;
  if (!m || lo > 65535 || hi > 65535 || hi < lo) throw routeError(what, `bad port '${p}'`);
}

function routeError(what: string, why: string): PortsideError {
  return new PortsideError('PS_ERR_CONFIG', `route '${what}': ${why}`);
}

/** Split a match into host part, prefix and port, accepting the hook's forms. */
export function splitMatch(m: string): { host: string; prefix?: string; port?: string } {
  const s = m.trim();
  let host: string;
  let prefix: string | undefined;
  let port: string | undefined;
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close < 0) throw routeError(m, "missing ']'");
    host = s.slice(1, close);
    let rest = s.slice(close + 1);
    if (rest.startsWith('/')) {
      const c = rest.indexOf(':');
      prefix = rest.slice(1, c < 0 ? undefined : c);
      rest = c < 0 ? '' : rest.slice(c);
    }
    if (rest.startsWith(':')) port = rest.slice(1);
    else if (rest) throw routeError(m, `unexpected '${rest}'`);
    const slash = host.indexOf('/');
    if (slash >= 0) {
      if (prefix !== undefined) throw routeError(m, 'two prefixes');
      prefix = host.slice(slash + 1);
      host = host.slice(0, slash);
    }
  } else if ((s.match(/:/g) ?? []).length >= 2) {
    const slash = s.indexOf('/');
    host = slash < 0 ? s : s.slice(0, slash);
    if (slash >= 0) prefix = s.slice(slash + 1);
  } else {
    const c = s.indexOf(':');
    host = c < 0 ? s : s.slice(0, c);
    if (c >= 0) port = s.slice(c + 1);
    const slash = host.indexOf('/');
    if (slash >= 0) {
      prefix = host.slice(slash + 1);
      host = host.slice(0, slash);
    }
  }
  return { host, prefix, port };
}

/** Check a numeric match the way the hook will parse it; throws PS_ERR_CONFIG naming the route. */
export function checkNumericMatch(m: string): void {
  const { host, prefix, port } = splitMatch(m);
  if (port !== undefined) checkPorts(port, m);
  if (host === '*') {
    if (prefix !== undefined) throw routeError(m, "'*' takes no prefix");
    return;
  }
  const fam = net.isIP(host);
  if (!fam) throw routeError(m, `'${host}' is not an IP address or network`);
  if (prefix !== undefined) {
    const max = fam === 4 ? 32 : 128;
    if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max) throw routeError(m, `bad prefix length '/${prefix}'`);
  }
}

function parseAction(a: string, what: string): RouteAction {
  const v = a.trim();
  // The hook cannot reach the firewall itself: a connection meant to go through the firewall
  // goes to the agent, whose own routes (the same client.yaml) send it on via the firewall.
  if (v === 'portside' || v === 'firewall') return 'portside';
  if (v === 'direct') return 'direct';
  throw routeError(what, `action must be portside, firewall or direct, not '${v}'`);
}

/** `--route MATCH=ACTION` (numeric match, as in PORTSIDE_ROUTES). */
export function parseRouteOption(spec: string): HookRoute {
  const eq = spec.lastIndexOf('=');
  if (eq < 0) throw routeError(spec, 'expected MATCH=ACTION, e.g. 10.0.0.0/8:21=portside');
  const match = spec.slice(0, eq).trim();
  const action = parseAction(spec.slice(eq + 1), spec);
  checkNumericMatch(match);
  return { match, action };
}

/**
 * A config route whose `match` is a host name or name pattern going to the agent (`via:
 * portside` or `firewall`): the name itself, for PORTSIDE_NAMES. The hook then answers the
 * program's getaddrinfo() for it with a stand-in address and connects by name, so the inside
 * relay resolves it where it means something (an intranet name need not resolve here). The
 * route's port, if any, does not narrow it: such a name goes to the agent on every port.
 * Null for an address route or a direct one.
 */
/** A host name or a name pattern with `*` (the hook's PORTSIDE_NAMES accepts these characters). */
const NAME_PATTERN = /^[A-Za-z0-9*._-]{1,255}$/;

export function remoteName(r: { match: string; via: string }): string | null {
  const action = parseAction(r.via, r.match);
  const { host, prefix, port } = splitMatch(String(r.match));
  if (action !== 'portside' || host === '*' || net.isIP(host)) return null;
  if (prefix !== undefined) throw routeError(r.match, 'a host name takes no prefix');
  if (port !== undefined) checkPorts(port, r.match);
  if (!NAME_PATTERN.test(host)) throw routeError(r.match, `'${host}' is not a host name or name pattern`);
  return host.toLowerCase();
}

/**
 * A config route `{match, via}`. A host name in `match` is resolved now (all its
 * addresses), since connect() carries addresses only: for a direct route (names going to the
 * agent are remoteName()s).
 */
export async function resolveConfigRoute(
  r: { match: string; via: string },
  resolve: (host: string) => Promise<string[]> = resolveAll,
): Promise<HookRoute[]> {
  const action = parseAction(r.via, r.match);
  const { host, prefix, port } = splitMatch(String(r.match));
  if (host === '*' || net.isIP(host)) {
    checkNumericMatch(r.match);
    return [{ match: r.match.trim(), action }];
  }
  if (prefix !== undefined) throw routeError(r.match, 'a host name takes no prefix');
  if (host.includes('*')) {
    // A program's connect() carries an address, never a name: a name pattern cannot apply.
    warn(`route '${r.match}' is a host name pattern: the hook sees addresses only, so portside run ignores it`);
    return [];
  }
  if (port !== undefined) checkPorts(port, r.match);
  let addrs: string[];
  try {
    addrs = await resolve(host);
  } catch (err) {
    throw new PortsideError('PS_ERR_CONFIG', `route '${r.match}': cannot resolve '${host}': ${(err as Error).message}`);
  }
  return addrs.map((a) => ({ match: (net.isIPv6(a) ? `[${a}]` : a) + (port !== undefined ? `:${port}` : ''), action }));
}

async function resolveAll(host: string): Promise<string[]> {
  return (await lookup(host, { all: true })).map((a) => a.address);
}

let warn = (msg: string): void => { process.stderr.write(`portside: warning: ${msg}\n`); };
/** For tests: collect warnings instead of printing them. */
export function setWarn(f: (msg: string) => void): void { warn = f; }

export function routesToEnv(routes: HookRoute[]): string {
  return routes.map((r) => `${r.match}=${r.action}`).join(';');
}

/** Numeric HOST:PORT for PORTSIDE_SOCKS; a host name is resolved (first address). */
export async function resolveSocks(hostPort: string): Promise<string> {
  const s = hostPort.trim();
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) {
    throw new PortsideError('PS_ERR_CONFIG', `agent SOCKS5 address '${hostPort}': expected HOST:PORT`);
  }
  let host = m[1];
  if (!net.isIP(host)) {
    try {
      host = (await lookup(host)).address;
    } catch (err) {
      throw new PortsideError('PS_ERR_CONFIG', `agent SOCKS5 address '${hostPort}': ${(err as Error).message}`);
    }
  }
  return net.isIPv6(host) ? `[${host}]:${m[2]}` : `${host}:${m[2]}`;
}

/** The parts of a client config `portside run` uses: `socks5:` and `routes:`. */
export function readClientConfig(file: string): { socks?: string; routes: { match: string; via: string }[] } {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new PortsideError('PS_ERR_CONFIG', `${file}: ${(err as Error).message}`);
  }
  if (doc === null || typeof doc !== 'object') throw new PortsideError('PS_ERR_CONFIG', `${file}: not a YAML mapping`);
  const d = doc as Record<string, unknown>;
  let socks: string | undefined;
  const s = d.socks5;
  if (typeof s === 'string') socks = s;
  else if (typeof s === 'number') socks = `127.0.0.1:${s}`;
  else if (s && typeof s === 'object' && typeof (s as { listen?: unknown }).listen === 'string') socks = (s as { listen: string }).listen;
  else if (s !== undefined) throw new PortsideError('PS_ERR_CONFIG', `${file}: socks5: expected HOST:PORT`);
  const routes: { match: string; via: string }[] = [];
  if (d.routes !== undefined) {
    if (!Array.isArray(d.routes)) throw new PortsideError('PS_ERR_CONFIG', `${file}: routes: expected a list of {match, via}`);
    d.routes.forEach((r: unknown, i: number) => {
      const o = r as { match?: unknown; via?: unknown } | null;
      if (!o || typeof o !== 'object' || (typeof o.match !== 'string' && typeof o.match !== 'number') || typeof o.via !== 'string') {
        throw new PortsideError('PS_ERR_CONFIG', `${file}: routes[${i}]: expected {match: ADDRESS[/N][:PORT], via: portside|firewall|direct}`);
      }
      routes.push({ match: String(o.match), via: o.via });
    });
  }
  return { socks, routes };
}

export interface RunOptions {
  socks?: string;
  route?: string[];
  /** Host names or patterns the relays resolve (PORTSIDE_NAMES). */
  name?: string[];
  config?: string;
  debug?: boolean;
}

/** Everything `portside run` puts into the program's environment. */
export async function buildRunEnv(o: RunOptions, env: NodeJS.ProcessEnv = process.env): Promise<NodeJS.ProcessEnv> {
  const hook = hookPath(env);
  if (!existsSync(hook)) {
    throw new PortsideError(
      'PS_ERR_HOOK',
      `the socket hook is not built (${hook} is missing): run \`npm run build:hook\` in the portside package (needs cc and make)`,
    );
  }
  const cfg = o.config ? readClientConfig(o.config) : undefined;
  if (cfg && !cfg.socks && !o.socks) {
    throw new PortsideError('PS_ERR_CONFIG', `${o.config}: no socks5: address; portside run needs the agent's local SOCKS5 server (or give --socks)`);
  }
  const routes: HookRoute[] = (o.route ?? []).map(parseRouteOption);
  for (const n of o.name ?? []) {
    if (!NAME_PATTERN.test(n)) throw new PortsideError('PS_ERR_CONFIG', `--name '${n}': expected a host name or pattern such as *.intra`);
  }
  const names: string[] = (o.name ?? []).map((n) => n.toLowerCase());
  for (const r of cfg?.routes ?? []) {
    const name = remoteName(r);
    if (name !== null) names.push(name);
    else routes.push(...(await resolveConfigRoute(r)));
  }
  // With a client config, what no route matches goes to the agent, as in the agent itself;
  // with nothing configured at all, everything goes to the agent, whose routes then decide.
  if (cfg || routes.length === 0) routes.push({ match: '*', action: 'portside' });
  const socks = await resolveSocks(o.socks ?? cfg?.socks ?? DEFAULT_SOCKS);
  const preload = env.LD_PRELOAD ? `${hook} ${env.LD_PRELOAD}` : hook;
  const out: NodeJS.ProcessEnv = {
    ...env,
    LD_PRELOAD: preload,
    PORTSIDE_SOCKS: socks,
    PORTSIDE_ROUTES: routesToEnv(routes),
  };
  if (names.length) out.PORTSIDE_NAMES = [...new Set(names)].join(';');
  if (o.debug) out.PORTSIDE_HOOK_DEBUG = '1';
  return out;
}

/** Does a SOCKS5 server without authentication answer at hostPort? (greeting only) */
function agentAnswers(hostPort: string, timeoutMs = 1000): Promise<boolean> {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(hostPort)!;
  return new Promise((resolve) => {
    const s = net.connect({ host: m[1], port: Number(m[2]) });
    let got = Buffer.alloc(0);
    const done = (ok: boolean) => { s.destroy(); resolve(ok); };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('connect', () => s.write(Buffer.of(5, 1, 0)));
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= 2) done(got[0] === 5 && got[1] === 0);
    });
    s.once('error', () => done(false));
    s.once('close', () => done(false));
  });
}

/** Spawn the program with the hook; resolves with the exit status to use. */
export async function runProgram(program: string, args: string[], o: RunOptions): Promise<number> {
  const env = await buildRunEnv(o);
  if (env.PORTSIDE_ROUTES!.includes('=portside') && !(await agentAnswers(env.PORTSIDE_SOCKS!))) {
    warn(`no agent answers at ${env.PORTSIDE_SOCKS} (start \`portside client\` with socks5: there); connections routed to portside will be refused`);
  }
  const child = spawn(program, args, { stdio: 'inherit', env });
  // The terminal already sends SIGINT/SIGQUIT to the whole group, the program included:
  // we only outlive them. SIGTERM/SIGHUP aimed at us are passed on.
  const handlers = [
    ['SIGINT', () => {}],
    ['SIGQUIT', () => {}],
    ['SIGTERM', () => { child.kill('SIGTERM'); }],
    ['SIGHUP', () => { child.kill('SIGHUP'); }],
  ] as const;
  for (const [s, h] of handlers) process.on(s, h);
  return new Promise((resolve, reject) => {
    child.once('error', (err: NodeJS.ErrnoException) => {
      for (const [s, h] of handlers) process.off(s, h);
      if (err.code === 'ENOENT') {
        process.stderr.write(`portside: ${program}: command not found\n`);
        resolve(127);
      } else if (err.code === 'EACCES') {
        process.stderr.write(`portside: ${program}: permission denied\n`);
        resolve(126);
      } else reject(err);
    });
    child.once('exit', (code, signal) => {
      for (const [s, h] of handlers) process.off(s, h);
      if (signal) resolve(128 + ((osConstants.signals as Record<string, number>)[signal] ?? 1));
      else resolve(code ?? 1);
    });
  });
}

export function registerRunCommand(program: Command): void {
  // Needed so options after PROGRAM belong to PROGRAM (`portside run curl -v URL`).
  program.enablePositionalOptions();
  program
    .command('run')
    .description('run an unmodified program with its connect() calls to configured destinations sent to the portside agent')
    .argument('<program>', 'program to run')
    .argument('[args...]', "the program's arguments")
    .option('--socks <host:port>', `the agent's SOCKS5 address (default: config socks5:, else ${DEFAULT_SOCKS})`)
    .option(
      '--route <match=action>',
      'route, first match wins: ADDR[/N][:PORT]=portside|direct, [V6ADDR/N]:PORT=..., *=...; repeatable, before config routes; unmatched: direct (with --config: the agent)',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option(
      '--name <pattern>',
      'a host name or pattern (*.intra) resolved by the relays, not here: the program gets a stand-in address and connects by name through the agent; repeatable, besides config routes naming hosts',
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option('-c, --config <file>', 'client config (YAML): its socks5: and routes: are used')
    .option('--debug', 'the hook reports each decision on stderr (PORTSIDE_HOOK_DEBUG=1)')
    .passThroughOptions()
    .action(async (prog: string, args: string[], o: RunOptions) => {
      const status = await runProgram(prog, args, o);
      process.exit(status);
    });
}
