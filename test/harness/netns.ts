// Network-namespace topology for end-to-end tests:
//
//   internet 10.201.1.0/24            firewall (no IP forwarding)            intranet 10.201.2.0/24
//   client .10   outside .20  ──  ext0 10.201.1.1 │ danted │ int0 10.201.2.1  ──  inside .10  server .20
//
// Each role is its own namespace; the two L2 segments are bridges in a sixth "hub" namespace,
// so nothing is added to the host's own network namespace. The firewall namespace never
// forwards, and its nftables rules refuse anything initiated from the internet leg: the only
// way from the internet into the intranet is a session the inside opens through danted.
import { execFileSync } from 'node:child_process';
import { Proc, run, runOk, onExitSync, waitListening, type RunOptions, type RunResult, type SpawnOptions } from './procs.js';

export type Role = 'client' | 'outside' | 'firewall' | 'inside' | 'server';
export const ROLES: readonly Role[] = ['client', 'outside', 'firewall', 'inside', 'server'];

export interface TopologyAddresses {
  client: string;
  outside: string;
  /** Firewall's leg on the internet segment (danted `external:`). */
  fwExternal: string;
  /** Firewall's leg on the intranet segment (danted `internal:`). */
  fwInternal: string;
  inside: string;
  server: string;
}

export interface Topology {
  kind: 'netns' | 'loopback';
  /** True when roles are really separated (netns); false for the loopback fallback. */
  isolated: boolean;
  /** Namespace name per role (undefined in the loopback topology). */
  ns: Record<Role, string | undefined>;
  addr: TopologyAddresses;
  /** CIDRs of the two segments ('127.0.0.0/8' for both in loopback). */
  nets: { internet: string; intranet: string };
  /** Command + args that run `cmd` in the role's namespace (for your own spawn()). */
  exec(role: Role, cmd: string, args?: readonly string[]): { cmd: string; args: string[] };
  /** Spawn a tracked process in the role's namespace. */
  spawn(role: Role, cmd: string, args?: readonly string[], opts?: Omit<SpawnOptions, 'netns'>): Proc;
  /** Run to completion in the role's namespace (never throws on exit code). */
  run(role: Role, cmd: string, args?: readonly string[], opts?: Omit<RunOptions, 'netns'>): Promise<RunResult>;
  /** Wait until something listens on TCP `port` in the role's namespace. */
  waitListening(role: Role, port: number, opts?: { address?: string; timeoutMs?: number; proc?: Proc }): Promise<void>;
  /** Remove namespaces and kill anything still running in them. Idempotent. */
  destroy(): Promise<void>;
}

const ADDR: TopologyAddresses = {
  client: '10.201.1.10',
  outside: '10.201.1.20',
  fwExternal: '10.201.1.1',
  fwInternal: '10.201.2.1',
  inside: '10.201.2.10',
  server: '10.201.2.20',
};
const SHORT: Record<Role | 'hub', string> = { client: 'cli', outside: 'out', firewall: 'fw', inside: 'in', server: 'srv', hub: 'hub' };

let probeResult: boolean | undefined;

/** Root, and `ip netns add` + veth + nft work here (probed once with a throw-away namespace). */
export async function canUseNetns(): Promise<boolean> {
  if (probeResult !== undefined) return probeResult;
  if (process.getuid?.() !== 0) return (probeResult = false);
  const ns = `ps-probe-${process.pid}`;
  try {
    await runOk('ip', ['netns', 'add', ns]);
  } catch {
    return (probeResult = false);
  }
  try {
    await runOk('ip', ['-n', ns, 'link', 'add', 'pa', 'type', 'veth', 'peer', 'name', 'pb']);
    await runOk('ip', ['netns', 'exec', ns, 'nft', 'add table inet probe']);
    probeResult = true;
  } catch {
    probeResult = false;
  } finally {
    await run('ip', ['netns', 'del', ns]);
  }
  return probeResult;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function killNsPidsSync(ns: string): void {
  try {
    const out = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    for (const p of out.split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  } catch {
    /* namespace already gone */
  }
}

function delNsSync(ns: string): void {
  killNsPidsSync(ns);
  try {
    execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  } catch {
    /* already gone */
  }
}

/** Delete `ps-…-PID-N-role` namespaces left by test processes that no longer exist. */
export function cleanupStaleNamespaces(): string[] {
  let list = '';
  try {
    list = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const line of list.split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const m = /^ps-(?:.+-)?(\d+)-\d+-(cli|out|fw|in|srv|hub)$/.exec(name);
    if (m && !pidAlive(Number(m[1]))) {
      delNsSync(name);
      removed.push(name);
    }
  }
  return removed;
}

let counter = 0;

/**
 * Build the five-namespace topology. `label` (optional, short) goes into the names:
 * `ps-[label-]PID-N-{cli,out,fw,in,srv,hub}`. Destroyed by destroy(), on failure, and on exit.
 */
export async function createTopology(label?: string): Promise<Topology> {
  cleanupStaleNamespaces();
  const base = `ps-${label ? `${label.replace(/^ps-/, '').replace(/[^a-zA-Z0-9]/g, '')}-` : ''}${process.pid}-${++counter}`;
  const ns = {} as Record<Role, string>;
  for (const r of ROLES) ns[r] = `${base}-${SHORT[r]}`;
  const hub = `${base}-hub`;
  const all = [...ROLES.map((r) => ns[r]), hub];
  let destroyed = false;
  const destroySync = () => {
    if (destroyed) return;
    destroyed = true;
    for (const n of all) delNsSync(n);
  };
  const unregister = onExitSync(destroySync);

  const ip = (...args: string[]) => runOk('ip', args);
  const inNs = (n: string, cmd: string, ...args: string[]) => runOk('ip', ['netns', 'exec', n, cmd, ...args]);
  try {
    for (const n of all) await ip('netns', 'add', n);
    for (const n of all) await ip('-n', n, 'link', 'set', 'lo', 'up');
    await ip('-n', hub, 'link', 'add', 'brnet', 'type', 'bridge');
    await ip('-n', hub, 'link', 'add', 'brintra', 'type', 'bridge');
    await ip('-n', hub, 'link', 'set', 'brnet', 'up');
    await ip('-n', hub, 'link', 'set', 'brintra', 'up');
    // The veth is created straight inside the two namespaces: the host never sees it.
    const legs: Array<{ role: Role; ifname: string; bridge: string; port: string; addr: string }> = [
      { role: 'client', ifname: 'eth0', bridge: 'brnet', port: 'pcli', addr: ADDR.client },
      { role: 'outside', ifname: 'eth0', bridge: 'brnet', port: 'pout', addr: ADDR.outside },
      { role: 'firewall', ifname: 'ext0', bridge: 'brnet', port: 'pfwext', addr: ADDR.fwExternal },
      { role: 'firewall', ifname: 'int0', bridge: 'brintra', port: 'pfwint', addr: ADDR.fwInternal },
      { role: 'inside', ifname: 'eth0', bridge: 'brintra', port: 'pin', addr: ADDR.inside },
      { role: 'server', ifname: 'eth0', bridge: 'brintra', port: 'psrv', addr: ADDR.server },
    ];
    for (const l of legs) {
      await ip('link', 'add', l.ifname, 'netns', ns[l.role], 'type', 'veth', 'peer', 'name', l.port, 'netns', hub);
      await ip('-n', hub, 'link', 'set', l.port, 'master', l.bridge);
      await ip('-n', hub, 'link', 'set', l.port, 'up');
      await ip('-n', ns[l.role], 'addr', 'add', `${l.addr}/24`, 'dev', l.ifname);
      await ip('-n', ns[l.role], 'link', 'set', l.ifname, 'up');
    }
    // Routes point at the firewall, so only its policy (not a missing route) keeps the sides apart.
    for (const r of ['client', 'outside'] as const) await ip('-n', ns[r], 'route', 'add', '10.201.2.0/24', 'via', ADDR.fwExternal);
    for (const r of ['inside', 'server'] as const) await ip('-n', ns[r], 'route', 'add', '10.201.1.0/24', 'via', ADDR.fwInternal);
    await inNs(ns.firewall, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=0');
    await inNs(ns.firewall, 'sysctl', '-q', '-w', 'net.ipv4.conf.all.forwarding=0');
    const rules = [
      'table inet ps_fw {',
      '  chain input {',
      '    type filter hook input priority 0; policy accept;',
      '    ct state established,related accept',
      // Nothing may be opened from the internet leg: not danted, not the intranet address.
      '    iifname "ext0" meta l4proto tcp reject with tcp reset',
      '    iifname "ext0" drop',
      '  }',
      '  chain forward {',
      '    type filter hook forward priority 0; policy drop;',
      '  }',
      '}',
    ].join('\n');
    await runOk('ip', ['netns', 'exec', ns.firewall, 'nft', '-f', '-'], { input: rules });
  } catch (e) {
    destroySync();
    unregister();
    throw e;
  }

  const exec = (role: Role, cmd: string, args: readonly string[] = []) => ({ cmd: 'ip', args: ['netns', 'exec', ns[role], cmd, ...args] });
  return {
    kind: 'netns',
    isolated: true,
    ns: { ...ns },
    addr: { ...ADDR },
    nets: { internet: '10.201.1.0/24', intranet: '10.201.2.0/24' },
    exec,
    spawn: (role, cmd, args = [], opts = {}) => new Proc(cmd, args, { name: `${cmd}@${role}`, ...opts, netns: ns[role] }),
    run: (role, cmd, args = [], opts = {}) => run(cmd, args, { ...opts, netns: ns[role] }),
    waitListening: (role, port, opts = {}) => waitListening(port, { ...opts, netns: ns[role] }),
    destroy: async () => {
      destroySync();
      unregister();
    },
  };
}

/** Same shape as createTopology() for hosts without netns: every role is 127.0.0.1 on the host. */
export function loopbackTopology(): Topology {
  const lo = '127.0.0.1';
  const none = { client: undefined, outside: undefined, firewall: undefined, inside: undefined, server: undefined };
  return {
    kind: 'loopback',
    isolated: false,
    ns: none,
    addr: { client: lo, outside: lo, fwExternal: lo, fwInternal: lo, inside: lo, server: lo },
    nets: { internet: '127.0.0.0/8', intranet: '127.0.0.0/8' },
    exec: (_role, cmd, args = []) => ({ cmd, args: [...args] }),
    spawn: (role, cmd, args = [], opts = {}) => new Proc(cmd, args, { name: `${cmd}@${role}`, ...opts }),
    run: (_role, cmd, args = [], opts = {}) => run(cmd, args, opts),
    waitListening: (_role, port, opts = {}) => waitListening(port, opts),
    destroy: async () => {},
  };
}

/**
 * The netns topology when allowed here, else the loopback one.
 * PS_TOPOLOGY=loopback forces the fallback (to try tests written once on both).
 */
export async function bestTopology(label?: string): Promise<Topology> {
  if (process.env.PS_TOPOLOGY === 'loopback') return loopbackTopology();
  return (await canUseNetns()) ? createTopology(label) : loopbackTopology();
}

export interface ProbeOptions {
  host: string;
  port: number;
  /** Payload to send (default "ping\n"). */
  send?: string;
  /** Text to wait for (default: the payload, echoed). */
  until?: string;
  socks?: { host: string; port: number; userId?: string; password?: string };
  timeoutMs?: number;
}

export interface ProbeResult {
  ok: boolean;
  /** 'connect' (incl. SOCKS refusal/auth failure), 'io', 'timeout' or 'done'. */
  stage?: string;
  error?: string;
  code?: string;
  received?: string;
}

const PROBE = new URL('./tcp-probe.mjs', import.meta.url).pathname;

/** Open a TCP connection from `role`'s namespace (optionally via SOCKS5) and report what happened. */
export async function tcpProbe(topo: Topology, role: Role, o: ProbeOptions): Promise<ProbeResult> {
  const r = await topo.run(role, process.execPath, [PROBE, JSON.stringify(o)], { timeoutMs: (o.timeoutMs ?? 5000) + 10_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as ProbeResult;
  } catch {
    return { ok: false, stage: 'probe', error: `probe exited ${r.code}: ${r.stdout}${r.stderr}` };
  }
}

const ECHO = new URL('./tcp-echo.mjs', import.meta.url).pathname;

/**
 * Start the echo server (test/harness/tcp-echo.mjs) in `role`'s namespace on `address:port`
 * (port 0 = any); resolves once it listens, with the port it got.
 */
export async function startEcho(topo: Topology, role: Role, address: string, port = 0): Promise<{ proc: Proc; port: number; stop(): Promise<void> }> {
  const proc = topo.spawn(role, process.execPath, [ECHO, address, String(port)], { name: `echo@${role}` });
  const ev = await proc.waitForEvent('echo.listening', 10_000);
  return {
    proc,
    port: Number(ev.port),
    stop: async () => {
      await proc.stop();
    },
  };
}
