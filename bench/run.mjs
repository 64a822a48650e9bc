#!/usr/bin/env node
// portside benchmark: see bench/README.md. Plain ESM, no build step.
import { fork, execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir, cpus, release } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as proc from './lib/proc.mjs';
import { paths } from './lib/paths.mjs';
import { measureFtp, renderFtp } from './lib/ftp.mjs';

const benchDir = dirname(fileURLToPath(import.meta.url));
const root = dirname(benchDir);
const GiB = 2 ** 30;
const MiB = 2 ** 20;

// ---------- options ----------
// sections that are not rows of the paths table but are chosen the same way
const SECTIONS = ['ftp'];
const names = [...paths.map((p) => p.name), ...SECTIONS];
const HELP = `usage: node bench/run.mjs [options]      (npm run bench -- [options])
  --quick              128 MiB streams, 2 000 idle connections, fewer samples
  --only a,b           run only these paths (names: ${names.join(', ')})
  --skip a,b           skip these paths (\`ftp\` is the FTP section: vsftpd + curl RETR)
  --size MiB           bytes per throughput run (default 1024, quick 128)
  --samples N          single-stream throughput runs per path (default 3, quick 2)
  --conns N            idle connections for the memory figure (default 10000, quick 2000)
  --pings N            ping-pong round trips after warm-up (default 5000, quick 2000)
  --warmup N           untimed ping-pong round trips first (default 2000, quick 1000)
  --cps-seconds S      duration of the sequential-connections test (default 5, quick 2)
  --portside-log-level L   log_level written to the portside configs (default info)
  --out DIR            where latest.md/latest.json go (default bench/results)
  --keep               keep the temp dir with configs and logs of every process
  --help`;

function parseArgs(argv) {
  const o = { quick: false, only: null, skip: [], keep: false, portsideLogLevel: 'info', out: join(benchDir, 'results') };
  const num = (i) => { const v = Number(argv[i]); if (!Number.isFinite(v) || v <= 0) throw new Error(`bad value for ${argv[i - 1]}: ${argv[i]}`); return v; };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case '--quick': o.quick = true; break;
      case '--only': o.only = argv[++i].split(','); break;
      case '--skip': o.skip = argv[++i].split(','); break;
      case '--size': o.sizeMiB = num(++i); break;
      case '--samples': o.samples = num(++i); break;
      case '--conns': o.conns = num(++i); break;
      case '--pings': o.pings = num(++i); break;
      case '--warmup': o.warmup = num(++i); break;
      case '--cps-seconds': o.cpsSeconds = num(++i); break;
      case '--portside-log-level': o.portsideLogLevel = argv[++i]; break;
      case '--out': o.out = argv[++i]; break;
      case '--keep': o.keep = true; break;
      case '--help': case '-h': console.log(HELP); process.exit(0);
      default: throw new Error(`unknown option ${a}\n${HELP}`);
    }
  }
  o.bytes = Math.round((o.sizeMiB ?? (o.quick ? 128 : 1024)) * MiB);
  o.samples ??= o.quick ? 2 : 3;
  o.multiSamples = o.quick ? 1 : 2;
  o.conns ??= o.quick ? 2000 : 10000;
  o.pings ??= o.quick ? 2000 : 5000;
  // Long enough for the Node processes to settle on fresh relays (bench/README, "ping-pong").
  o.warmup ??= o.quick ? 1000 : 2000;
  o.cpsWarmup = o.quick ? 1 : 2;
  o.cpsSeconds ??= o.quick ? 2 : 5;
  for (const n of [...(o.only ?? []), ...o.skip]) {
    if (!names.includes(n)) throw new Error(`unknown path ${n}; known: ${names.join(', ')}`);
  }
  return o;
}

// ---------- open-files limit: idle connections need many descriptors ----------
const lim = proc.hardNofile();
if (lim.soft < lim.hard && !process.env.PORTSIDE_BENCH_REEXEC) {
  // children inherit the limit, so raise it once for the whole tree by re-exec
  const r = spawnSync('bash', ['-c', `ulimit -n ${lim.hard === Infinity ? 1048576 : lim.hard} && exec "$0" "$@"`, process.execPath, ...process.argv.slice(1)],
    { stdio: 'inherit', env: { ...process.env, PORTSIDE_BENCH_REEXEC: '1' } });
  process.exit(r.status ?? 1);
}

let opts;
try { opts = parseArgs(process.argv.slice(2)); } catch (e) { console.error(e.message); process.exit(2); }

// ---------- never leave processes behind ----------
let exiting = false;
process.on('exit', () => proc.killAllSync());
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    if (exiting) return;
    exiting = true;
    console.error(`\n${sig}: stopping every process the bench started`);
    proc.killAllSync();
    process.exit(130);
  });
}
process.on('uncaughtException', (e) => { console.error('bench crashed:', e); proc.killAllSync(); process.exit(1); });
process.on('unhandledRejection', (e) => { console.error('bench crashed:', e); proc.killAllSync(); process.exit(1); });

const log = (...a) => console.error('[bench]', ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// each idle connection costs a relay process up to 2 descriptors (accepted + dialled)
const maxIdle = Math.floor((lim.hard - 256) / 2);
const idleConns = Math.min(opts.conns, maxIdle);
if (idleConns < opts.conns) log(`open-files hard limit is ${lim.hard}: measuring idle memory at ${idleConns} connections instead of ${opts.conns}`);

// ---------- helper processes: target and load generator ----------
function forkHelper(file) {
  const child = fork(join(benchDir, 'lib', file), [], { detached: true, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  proc.track(child.pid);
  return child;
}

class LoadGen {
  constructor() { this.start(); }
  start() {
    this.child = forkHelper('loadgen.mjs');
    this.pending = new Map();
    this.nextId = 1;
    this.child.on('message', (m) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.error) p.reject(new Error(m.error)); else p.resolve(m.result);
    });
    this.child.on('exit', () => {
      for (const p of this.pending.values()) p.reject(new Error('load generator exited'));
      this.pending.clear();
    });
  }
  async call(op, args, timeoutMs) {
    const id = this.nextId++;
    let timer;
    try {
      return await new Promise((resolve, reject) => {
        this.pending.set(id, { resolve, reject });
        this.child.send({ id, op, ...args });
        timer = setTimeout(() => reject(new Error(`${op} timed out after ${Math.round(timeoutMs / 1000)} s`)), timeoutMs);
      });
    } catch (e) {
      if (/timed out/.test(e.message)) await this.restart(); // drop its stuck connections
      throw e;
    } finally {
      clearTimeout(timer);
      this.pending.delete(id);
    }
  }
  async restart() { await this.stop(); this.start(); }
  async stop() { await proc.stop(this.child.pid, 1000); }
}

function hasBinary(b) {
  return spawnSync('bash', ['-c', `command -v ${b}`], { stdio: 'ignore' }).status === 0 || existsSync(`/usr/sbin/${b}`);
}

// ---------- one path ----------
async function measurePath(path, targetPort, tmp) {
  const r = { name: path.name, label: path.label, metrics: {}, errors: {} };
  let { ctx, started } = rowContext(join(tmp, path.name), targetPort);
  let setup;
  const lg = new LoadGen();
  const start = () => Promise.race([
    path.setup(ctx),
    sleep(45000).then(() => { throw new Error('setup timed out after 45 s'); }),
  ]);
  try {
    const missing = (path.needs ?? []).filter((b) => !hasBinary(b));
    if (missing.length) throw new Error(`not installed: ${missing.join(', ')}`);
    setup = await start();
    let pids = setup.pids;
    r.pids = pids;
    const attempt = async (metric, fn) => {
      try { r.metrics[metric] = await fn(); } catch (e) { r.errors[metric] = e.message; log(`${path.name} ${metric}: ${e.message}`); }
    };
    const streamTimeout = (bytes) => 30000 + (bytes / (20 * MiB)) * 1000; // fails below ~20 MB/s

    // idle memory per carried connection: measured first, on freshly started
    // relays, so garbage left by the other tests cannot shrink or inflate the delta
    await attempt('idle', async () => {
      await sleep(1000);
      const before = proc.rssOf(pids);
      const o = await lg.call('idleOpen', { port: setup.port, n: idleConns }, 180000);
      await sleep(1000);
      const after = proc.rssOf(pids);
      const c = await lg.call('idleClose', {}, 60000);
      await sleep(1000); // let the relays finish closing before the next test
      if (o.opened === 0) throw new Error(`no connection could be opened (${o.lastError})`);
      const res = { conns: o.opened, stillOpen: c.stillOpen, failed: o.failed, rssBefore: before, rssAfter: after, bytesPerConn: pids.length ? (after - before) / c.stillOpen : null };
      if (o.failed) res.note = `${o.failed} of ${idleConns} failed: ${o.lastError}`;
      return res;
    });
    // The rest on freshly started processes again: one that has just carried 10 000 connections
    // is not the one the other figures are about (right after them, the ssh chain's ping-pong
    // added +560 µs over direct, against +220 µs on fresh processes).
    await setup.teardown?.();
    await stopStarted(path.name, started);
    setup = undefined;
    ({ ctx, started } = rowContext(join(tmp, `${path.name}-2`), targetPort));
    setup = await start();
    pids = setup.pids;
    r.pids = pids;
    // 1-byte ping-pong
    await attempt('pingpong', () => lg.call('pingpong', { port: setup.port, warmup: opts.warmup, n: opts.pings }, 120000));
    // sequential connections per second
    await attempt('cps', () => lg.call('cps', { port: setup.port, seconds: opts.cpsSeconds, warmupSeconds: opts.cpsWarmup }, (opts.cpsSeconds + opts.cpsWarmup + 60) * 1000));
    // one stream: throughput and relay CPU
    await attempt('single', async () => {
      const runs = [];
      let cpu = 0;
      let bytes = 0;
      for (let i = 0; i < opts.samples; i++) {
        const before = proc.cpuSnapshot(pids);
        const x = await lg.call('stream', { port: setup.port, bytes: opts.bytes, streams: 1 }, streamTimeout(opts.bytes));
        cpu += proc.cpuDelta(before, pids);
        bytes += x.bytes;
        runs.push((x.bytes * 8) / x.seconds / 1e9);
      }
      return { gbps: median(runs), runs, cpuSeconds: cpu, bytes, cpuPerGiB: pids.length ? cpu / (bytes / GiB) : null };
    });
    // 8 streams, then 8 streams beside a 9th whose reader never reads
    await attempt('multi', async () => {
      const clean = [];
      const stalled = [];
      let stallAccepted = 0;
      for (let i = 0; i < opts.multiSamples; i++) {
        const a = await lg.call('stream', { port: setup.port, bytes: opts.bytes, streams: 8 }, streamTimeout(opts.bytes));
        clean.push((a.bytes * 8) / a.seconds / 1e9);
        const b = await lg.call('stream', { port: setup.port, bytes: opts.bytes, streams: 8, stall: true }, streamTimeout(opts.bytes) + 30000);
        stalled.push((b.bytes * 8) / b.seconds / 1e9);
        stallAccepted = b.stallAccepted;
      }
      const c = median(clean);
      const s = median(stalled);
      return { cleanGbps: c, stalledGbps: s, stallCost: 1 - s / c, clean, stalled, stallAcceptedBytes: stallAccepted };
    });
  } catch (e) {
    r.error = e.message;
    log(`${path.name}: ${e.message}`);
  } finally {
    await lg.stop();
    try { await setup?.teardown?.(); } catch (e) { log(`${path.name} teardown: ${e.message}`); }
    await stopStarted(path.name, started);
  }
  return r;
}

/** A fresh dir and a start() whose processes are stopped by stopStarted(). */
function rowContext(dir, targetPort) {
  mkdirSync(dir, { recursive: true });
  const started = [];
  const ctx = {
    root, benchDir, dir, targetPort, options: opts,
    logPath: (name) => join(dir, `${name}.log`),
    start(cmd, args, name, onLine, env) {
      const c = proc.start(cmd, args, { logFile: join(dir, `${name}.log`), onLine, cwd: dir, env });
      started.push(c.pid);
      return c;
    },
  };
  return { ctx, started };
}

async function stopStarted(name, started) {
  for (const pid of [...started].reverse()) await proc.stop(pid); // last started (e.g. inside relay) first
  const left = started.flatMap((p) => proc.tree(p));
  if (left.length) log(`${name}: processes still alive after teardown: ${left.join(' ')}`);
}

/** The FTP section (lib/ftp.mjs): its own vsftpd and relays, stopped afterwards. */
async function runFtp(tmp) {
  const { ctx, started } = rowContext(join(tmp, 'ftp'), null);
  try {
    const missing = ['vsftpd', 'curl'].filter((b) => !hasBinary(b));
    if (missing.length) throw new Error(`not installed: ${missing.join(', ')}`);
    return await measureFtp(ctx, { log, median });
  } catch (e) {
    log(`ftp: ${e.message}`);
    return { bytes: opts.bytes, samples: opts.samples, error: e.message, modes: [] };
  } finally {
    await stopStarted('ftp', started);
  }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// ---------- report ----------
const METRICS = [
  { title: 'One-stream throughput', unit: 'Gbit/s', better: 'higher', get: (r) => r.metrics.single?.gbps, err: 'single', fmt: (v) => v.toFixed(2) },
  { title: 'Relay CPU per GiB (one stream)', unit: 'CPU-s/GiB', better: 'lower', get: (r) => r.metrics.single?.cpuPerGiB, err: 'single', fmt: (v) => v.toFixed(2), none: 'no relay' },
  { title: '1-byte ping-pong p50', unit: 'µs', better: 'lower', get: (r) => r.metrics.pingpong?.p50, err: 'pingpong', fmt: (v) => v.toFixed(1), added: true },
  { title: '1-byte ping-pong p99', unit: 'µs', better: 'lower', get: (r) => r.metrics.pingpong?.p99, err: 'pingpong', fmt: (v) => v.toFixed(1), added: true },
  { title: 'Sequential connections per second (connect, 1-byte echo, close)', unit: 'conn/s', better: 'higher', get: (r) => r.metrics.cps?.rate, err: 'cps', fmt: (v) => v.toFixed(0) },
  { title: 'Idle memory per carried connection (RSS of the relay processes)', unit: 'KiB/conn', better: 'lower', get: (r) => (r.metrics.idle?.bytesPerConn == null ? undefined : r.metrics.idle.bytesPerConn / 1024), err: 'idle', fmt: (v) => v.toFixed(2), none: 'no relay', extra: (r) => r.metrics.idle ? `${r.metrics.idle.stillOpen} conns${r.metrics.idle.note ? '; ' + r.metrics.idle.note : ''}` : '' },
  { title: '8 streams, aggregate', unit: 'Gbit/s', better: 'higher', get: (r) => r.metrics.multi?.cleanGbps, err: 'multi', fmt: (v) => v.toFixed(2) },
  { title: '8 streams beside a 9th with a stalled reader, aggregate of the 8', unit: 'Gbit/s', better: 'higher', get: (r) => r.metrics.multi?.stalledGbps, err: 'multi', fmt: (v) => v.toFixed(2), extra: (r) => r.metrics.multi ? `${fmtChange(-r.metrics.multi.stallCost)} vs the same 8 without the stall` : '' },
];

function ratio(v, base) {
  if (v == null || base == null || base == null || base === 0) return '—';
  return `${(v / base).toFixed(2)}×`;
}

function renderMarkdown(results, meta, ftp) {
  const direct = results.find((r) => r.name === 'direct');
  const sshL = results.find((r) => r.name === 'ssh-L');
  const sshChain = results.find((r) => r.name === 'ssh-chain');
  const out = [];
  out.push('# portside benchmark', '');
  out.push(`${meta.date} · ${meta.cpus} × ${meta.cpuModel} · Linux ${meta.kernel} · Node ${meta.node} · ${meta.quick ? '**quick** run' : 'full run'}`);
  out.push(`Streams: ${(meta.bytes / MiB).toFixed(0)} MiB per run, ${meta.samples} one-stream sample(s) (median); ping-pong ${meta.pings} round trips after ${meta.warmup} warm-up; sequential connections for ${meta.cpsSeconds} s after ${meta.cpsWarmup ?? 0} s untimed; idle memory at ${meta.idleConns} connections, then every other figure on freshly started relays. All on loopback.`, '');
  for (const m of results.length ? METRICS : []) { // none when only the FTP section runs
    out.push(`## ${m.title} (${m.unit}, ${m.better} is better)`, '');
    const hasExtra = !!m.extra;
    out.push(`| path | ${m.unit} | × direct | × ssh -L | × ssh chain |${m.added ? ' added over direct |' : ''}${hasExtra ? ' note |' : ''}`);
    out.push(`|---|---:|---:|---:|---:|${m.added ? '---:|' : ''}${hasExtra ? '---|' : ''}`);
    for (const r of results) {
      const v = m.get(r);
      const e = r.error ? `setup failed: ${r.error}` : r.errors[m.err];
      let cells;
      if (e) cells = [`**error**: ${oneLine(e)}`, '', '', '', ...(m.added ? [''] : [])];
      else if (v == null) cells = [m.none ?? '—', '—', '—', '—', ...(m.added ? ['—'] : [])];
      else {
        cells = [m.fmt(v), ratio(v, direct && m.get(direct)), ratio(v, sshL && m.get(sshL)), ratio(v, sshChain && m.get(sshChain))];
        if (m.added) { const d = direct && m.get(direct); cells.push(d == null ? '—' : `${(v - d).toFixed(1)} µs`); }
      }
      if (hasExtra) cells.push(e ? '' : m.extra(r));
      out.push(`| ${r.label} | ${cells.join(' | ')} |`);
    }
    out.push('');
  }
  if (meta.keyExchange) {
    const k = meta.keyExchange;
    out.push('## Per-connection keys of the client leg (in process)', '');
    out.push(`One connection's X25519 exchange and key derivation (src/session/seal.ts), ${k.n} times: **${k.perSideUs.toFixed(0)} µs of CPU per side** (key share ${k.shareUs.toFixed(0)} µs, agreement and HKDF ${k.deriveUs.toFixed(0)} µs); sealing and opening 1 GiB in ${(k.recordKiB ?? 64).toFixed(0)} KiB records: ${k.sealCpuPerGiB.toFixed(2)} + ${k.openCpuPerGiB.toFixed(2)} CPU-s/GiB.`, '');
  }
  if (ftp) {
    const ps = results.find((r) => r.name === 'portside');
    const raw = ps?.metrics.single?.gbps ?? null;
    const note = !ps ? 'the `portside` row was skipped, so no ratio' : `the \`portside\` row's one-stream test failed: ${oneLine(ps.error ?? ps.errors.single ?? '?')}`;
    if (ftp.error && !ftp.modes.length) out.push(`## FTP ${(ftp.bytes / MiB).toFixed(0)} MiB RETR`, '', `**error**: ${oneLine(ftp.error)}`, '');
    else out.push(renderFtp(ftp, raw, note));
  }
  const failed = results.filter((r) => r.error || Object.keys(r.errors).length);
  const ftpFailed = ftp ? (ftp.modes.length ? ftp.modes.filter((m) => m.error) : [{ label: 'all modes', error: ftp.error }]).filter((m) => m.error) : [];
  if (failed.length || ftpFailed.length) {
    out.push('## Errors', '');
    for (const r of failed) {
      if (r.error) out.push(`- **${r.label}**: ${oneLine(r.error)}`);
      for (const [k, v] of Object.entries(r.errors)) out.push(`- **${r.label}** (${k}): ${oneLine(v)}`);
    }
    for (const m of ftpFailed) out.push(`- **FTP ${m.label}**: ${oneLine(m.error)}`);
    out.push('');
  }
  return out.join('\n');
}

const fmtChange = (x) => `${x >= 0 ? '+' : '−'}${Math.abs(x * 100).toFixed(1)} %`;
const oneLine = (s) => String(s).replace(/\s+/g, ' ').replace(/\|/g, '\\|').slice(0, 200);

// ---------- main ----------
async function main() {
  const tmp = mkdtempSync(join(tmpdir(), 'portside-bench-'));
  const selected = paths.filter((p) => (!opts.only || opts.only.includes(p.name)) && !opts.skip.includes(p.name));
  const ftpOn = (!opts.only || opts.only.includes('ftp')) && !opts.skip.includes('ftp');
  log(`temp dir ${tmp}; paths: ${selected.map((p) => p.name).join(', ')}${ftpOn ? '; then the FTP section' : ''}`);
  const target = forkHelper('target.mjs');
  const targetPort = await new Promise((resolve, reject) => {
    target.once('message', (m) => resolve(m.port));
    target.once('exit', (c) => reject(new Error(`target exited ${c}`)));
  });
  const results = [];
  for (const p of selected) {
    log(`--- ${p.name}`);
    const t0 = Date.now();
    results.push(await measurePath(p, targetPort, tmp));
    log(`${p.name} done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  await proc.stop(target.pid, 1000);
  let ftp = null;
  if (ftpOn) {
    log('--- ftp');
    const t0 = Date.now();
    ftp = await runFtp(tmp);
    log(`ftp done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }

  const keyExchange = results.some((r) => r.name.startsWith('portside-client')) ? await measureKeyExchange() : null;
  const meta = {
    keyExchange,
    date: new Date().toISOString(),
    cpus: cpus().length, cpuModel: cpus()[0]?.model ?? '?', kernel: release(), node: process.versions.node,
    quick: opts.quick, bytes: opts.bytes, samples: opts.samples, pings: opts.pings, warmup: opts.warmup, cpsWarmup: opts.cpsWarmup,
    cpsSeconds: opts.cpsSeconds, idleConns, requestedIdleConns: opts.conns,
    nofile: lim, ssh: safe(() => execFileSync('ssh', ['-V'], { stdio: ['ignore', 'pipe', 'pipe'] }).toString().trim() || undefined) ?? safe(() => spawnSync('ssh', ['-V']).stderr.toString().trim()),
  };
  const md = renderMarkdown(results, meta, ftp);
  mkdirSync(opts.out, { recursive: true });
  writeFileSync(join(opts.out, 'latest.md'), md + '\n');
  writeFileSync(join(opts.out, 'latest.json'), JSON.stringify({ meta, results, ftp }, null, 2) + '\n');
  console.log(md);
  log(`wrote ${join(opts.out, 'latest.md')} and latest.json`);

  const left = proc.trackedPids().flatMap((p) => proc.tree(p));
  if (left.length) log(`WARNING: processes still alive: ${left.join(' ')} (killing)`);
  proc.killAllSync();
  if (opts.keep) log(`kept ${tmp}`); else rmSync(tmp, { recursive: true, force: true });
}

function safe(f) { try { return f(); } catch { return undefined; } }

/** What the client leg's per-connection keys cost, measured in this process on the built code. */
async function measureKeyExchange() {
  const seal = await import(pathToFileURL(join(root, 'dist', 'session', 'seal.js')).href);
  const n = 2000;
  const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e3; }; // ms
  for (let i = 0; i < 200; i++) seal.deriveStreamKeys(seal.newKeyShare(), seal.newKeyShare().share, 'client');
  let t = cpu();
  const shares = [];
  for (let i = 0; i < n; i++) shares.push(seal.newKeyShare());
  const shareUs = ((cpu() - t) * 1000) / n;
  t = cpu();
  for (let i = 1; i < n; i++) seal.deriveStreamKeys(shares[i], shares[i - 1].share, 'client');
  const deriveUs = ((cpu() - t) * 1000) / (n - 1);
  const keys = seal.deriveStreamKeys(shares[0], shares[1].share, 'client');
  const sealer = new seal.Sealer(keys.send, 12);
  const opener = new seal.Opener(keys.send);
  const block = Buffer.alloc(seal.MAX_RECORD, 7); // one record per frame, as the relays seal bulk
  let sealMs = 0;
  let openMs = 0;
  for (let i = 0; i < Math.ceil(GiB / block.length); i++) { // 1 GiB, sealed and opened in turn (wall time: one busy thread)
    const t0 = performance.now();
    const recs = sealer.seal(block);
    const t1 = performance.now();
    for (const r of recs) opener.push(r);
    openMs += performance.now() - t1;
    sealMs += t1 - t0;
  }
  const sealCpuPerGiB = sealMs / 1000;
  const openCpuPerGiB = openMs / 1000;
  return { n, shareUs, deriveUs, perSideUs: shareUs + deriveUs, sealCpuPerGiB, openCpuPerGiB, recordKiB: block.length / 1024 };
}

main().catch((e) => { console.error('bench failed:', e); proc.killAllSync(); process.exit(1); });
