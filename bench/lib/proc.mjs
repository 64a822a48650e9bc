// Process bookkeeping for the bench: every child we start is tracked by PID so
// it (and its descendants, e.g. sshd session processes, danted workers) can be
// killed on exit, Ctrl-C or error. Also /proc readers for CPU and RSS.
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, createWriteStream } from 'node:fs';
import net from 'node:net';

const tracked = new Set(); // root PIDs we spawned
const CLK_TCK = 100; // Linux USER_HZ; /proc/PID/stat times are in these ticks

export function childrenOf(pid) {
  const out = [];
  let tasks;
  try { tasks = readdirSync(`/proc/${pid}/task`); } catch { return out; }
  for (const t of tasks) {
    try {
      const s = readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim();
      if (s) for (const c of s.split(/\s+/)) out.push(Number(c));
    } catch { /* task gone */ }
  }
  return out;
}

/** pid plus all its live descendants. */
export function tree(pid) {
  const seen = new Set();
  const stack = [pid];
  while (stack.length) {
    const p = stack.pop();
    if (seen.has(p)) continue;
    seen.add(p);
    for (const c of childrenOf(p)) stack.push(c);
  }
  return [...seen].filter(alive);
}

/** Running (a zombie waiting to be reaped counts as gone). */
export function alive(pid) {
  try { process.kill(pid, 0); } catch { return false; }
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s[s.lastIndexOf(')') + 2] !== 'Z';
  } catch { return false; }
}

/** CPU seconds (utime+stime, all threads) of one process; 0 if gone. */
export function cpuSeconds(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm may contain spaces/parens: fields start after the last ')'
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK; // fields 14,15 (utime, stime)
  } catch { return 0; }
}

export function rssBytes(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch { return 0; }
}

/** Snapshot of per-PID CPU for the trees of the given root pids. */
export function cpuSnapshot(roots) {
  const m = new Map();
  for (const r of roots) for (const p of tree(r)) m.set(p, cpuSeconds(p));
  return m;
}

/** CPU used between two snapshots (processes that appear only later count fully). */
export function cpuDelta(before, roots) {
  let sum = 0;
  const after = cpuSnapshot(roots);
  for (const [p, c] of after) sum += c - (before.get(p) ?? 0);
  return sum;
}

export function rssOf(roots) {
  let sum = 0;
  for (const r of roots) for (const p of tree(r)) sum += rssBytes(p);
  return sum;
}

/**
 * Spawn a tracked child in its own process group. stdout/stderr go to logFile
 * (and to onLine per stdout line if given).
 */
export function start(cmd, args, { logFile, onLine, env, cwd } = {}) {
  const child = spawn(cmd, args, {
    detached: true, // own process group: lets us kill the whole group by PID
    stdio: ['ignore', 'pipe', 'pipe'],
    env: env ?? process.env,
    cwd,
  });
  if (child.pid) tracked.add(child.pid);
  const log = logFile ? createWriteStream(logFile, { flags: 'a' }) : null;
  let buf = '';
  child.stdout.on('data', (d) => {
    log?.write(d);
    if (onLine) {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) { onLine(buf.slice(0, i)); buf = buf.slice(i + 1); }
    }
  });
  child.stderr.on('data', (d) => log?.write(d));
  child.on('exit', () => { tracked.delete(child.pid); });
  child.on('error', () => {}); // reported through exit/timeouts by callers
  return child;
}

export function track(pid) { tracked.add(pid); }

/** Kill a root pid, its process group and its descendants. Synchronous. */
export function killTree(pid, sig = 'SIGTERM') {
  const all = tree(pid);
  try { process.kill(-pid, sig); } catch { /* no group */ }
  for (const p of all) { try { process.kill(p, sig); } catch { /* gone */ } }
}

/** TERM, wait up to ms, then KILL. */
export async function stop(pid, ms = 2000) {
  if (!pid) return;
  const all = tree(pid);
  killTree(pid, 'SIGTERM');
  const t0 = Date.now();
  while (Date.now() - t0 < ms && all.some(alive)) await new Promise((r) => setTimeout(r, 25));
  for (const p of all) if (alive(p)) { try { process.kill(p, 'SIGKILL'); } catch {} }
  try { process.kill(-pid, 'SIGKILL'); } catch {}
  const t1 = Date.now();
  while (Date.now() - t1 < 1000 && all.some(alive)) await new Promise((r) => setTimeout(r, 25));
  tracked.delete(pid);
}

export function killAllSync() {
  for (const p of [...tracked]) { killTree(p, 'SIGKILL'); tracked.delete(p); }
}

export function trackedPids() { return [...tracked]; }

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

/** Resolve once host:port accepts a TCP connection. */
export async function waitPort(port, { timeoutMs = 15000, host = '127.0.0.1', child } = {}) {
  const t0 = Date.now();
  for (;;) {
    if (child && child.exitCode !== null) throw new Error(`process exited (code ${child.exitCode}) before ${host}:${port} listened`);
    const ok = await new Promise((r) => {
      const s = net.connect(port, host);
      s.once('connect', () => { s.destroy(); r(true); });
      s.once('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timeout waiting for ${host}:${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function hardNofile() {
  const l = readFileSync('/proc/self/limits', 'utf8').split('\n').find((x) => x.startsWith('Max open files'));
  const [, soft, hard] = /Max open files\s+(\S+)\s+(\S+)/.exec(l);
  const n = (v) => (v === 'unlimited' ? Infinity : Number(v));
  return { soft: n(soft), hard: n(hard) };
}
