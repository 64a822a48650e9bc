// The FTP section (issue 3, Performance): a real vsftpd on loopback, started by the
// bench, and real curl RETRs of one generated file to /dev/null, direct and through
// portside (outside + inside relays, the service with `rules: ftp`), each in passive
// (EPSV) and active (EPRT, `-P 127.0.0.1`) mode. Relay CPU is charged to the
// portside modes as in the other rows. A failing mode becomes an error row; the
// others carry on.
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync, existsSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as proc from './proc.mjs';
import { startPortside } from './paths.mjs';

const GiB = 2 ** 30;
const FILE = 'bench.bin';

export const MODES = [
  { name: 'direct-passive', label: 'direct, passive (EPSV)', via: 'direct', active: false },
  { name: 'direct-active', label: 'direct, active (EPRT)', via: 'direct', active: true },
  { name: 'portside-passive', label: 'portside, passive (EPSV)', via: 'portside', active: false },
  { name: 'portside-active', label: 'portside, active (EPRT)', via: 'portside', active: true },
];

/**
 * The file vsftpd serves. Its content does not matter to any hop (nothing
 * compresses), so one random 4 MiB block is repeated: quick to make, and a real
 * file on disk (not sparse), as a server would send it.
 */
function writeFile(path, bytes) {
  const block = randomBytes(4 * 2 ** 20);
  const fd = openSync(path, 'w', 0o644);
  try {
    for (let left = bytes; left > 0; left -= block.length) writeSync(fd, block, 0, Math.min(left, block.length));
  } finally {
    closeSync(fd);
  }
}

/** Start vsftpd (config as test/harness/vsftpd.ts, read-only anonymous) in the foreground. */
async function startVsftpd(ctx, rootDir) {
  mkdirSync('/var/run/vsftpd/empty', { recursive: true }); // secure_chroot_dir must exist
  const port = await proc.freePort();
  // Above the ephemeral range (Linux default 32768-60999): after the idle rows' tens of thousands
  // of connections, ports there may still be in TIME_WAIT, and vsftpd answers a PASV/EPSV it
  // cannot bind with 500.
  const pasvMin = 61000 + Math.floor(Math.random() * 44) * 100;
  const logFile = ctx.logPath('vsftpd-xfer');
  const cfg = join(ctx.dir, 'vsftpd.conf');
  writeFileSync(cfg, [
    'listen=YES',
    'listen_ipv6=NO',
    'listen_address=127.0.0.1',
    `listen_port=${port}`,
    'anonymous_enable=YES',
    `anon_root=${rootDir}`,
    'no_anon_password=YES',
    'local_enable=NO',
    'write_enable=NO',
    'pasv_enable=YES',
    `pasv_min_port=${pasvMin}`,
    `pasv_max_port=${pasvMin + 99}`,
    'port_enable=YES',
    'connect_from_port_20=NO',
    'seccomp_sandbox=NO',
    'secure_chroot_dir=/var/run/vsftpd/empty',
    'background=NO',
    'xferlog_enable=YES',
    `vsftpd_log_file=${logFile}`,
    'dual_log_enable=NO',
    'use_localtime=NO',
    '',
  ].join('\n'));
  // background=NO: the PID we hold is the listener; its per-session children are
  // its descendants, so stopping the row stops them too
  const child = ctx.start('vsftpd', [cfg], 'vsftpd');
  try {
    await proc.waitPort(port, { child, timeoutMs: 10000 });
  } catch (e) {
    const l = existsSync(ctx.logPath('vsftpd')) ? readFileSync(ctx.logPath('vsftpd'), 'utf8').trim() : '';
    throw new Error(`vsftpd: ${e.message}${l ? `: ${l.slice(-300)}` : ''}`);
  }
  return { port, pid: child.pid };
}

/** One curl RETR to /dev/null; resolves { bytes, seconds }. */
function curlRetr(ctx, port, active, bytes) {
  const maxTime = Math.ceil(30 + bytes / (20 * 2 ** 20)); // fails below ~20 MB/s, like the stream tests
  const args = ['-s', '-S', '--fail', '--max-time', String(maxTime), '-o', '/dev/null',
    '-w', '%{size_download} %{time_total}\\n',
    ...(active ? ['-P', '127.0.0.1'] : []),
    `ftp://127.0.0.1:${port}/${FILE}`];
  let out = '';
  // tracked for the exit handlers, but not added to the row's list: it ends by itself
  const c = proc.start('curl', args, { logFile: ctx.logPath('curl'), onLine: (line) => { out += line; } });
  let err = '';
  c.stderr.on('data', (d) => { err += d; });
  return new Promise((resolve, reject) => {
    c.on('error', (e) => reject(new Error(`curl: ${e.message}`)));
    c.on('close', (code) => { // 'close': after stdout has been read to the end
      const [size, total] = out.trim().split(/\s+/).map(Number);
      if (code !== 0) return reject(new Error(`curl exit ${code}: ${err.trim() || '(no message)'}`));
      if (size !== bytes) return reject(new Error(`curl received ${size} of ${bytes} bytes`));
      if (!(total > 0)) return reject(new Error(`curl reported no time (${out.trim()})`));
      resolve({ bytes: size, seconds: total });
    });
  });
}

/**
 * Run the FTP section. `ctx` is a row context from run.mjs (dir, start, logPath,
 * options, root); every process it starts is stopped by the caller afterwards.
 * Returns { bytes, modes: [{ name, label, gbps?, runs?, cpuPerGiB?, error? }], error? }.
 */
export async function measureFtp(ctx, { log, median }) {
  const opts = ctx.options;
  const bytes = opts.bytes;
  const res = { bytes, samples: opts.samples, modes: MODES.map((m) => ({ ...m })) };
  const failAll = (via, msg) => { for (const m of res.modes) if (m.via === via && !m.gbps && !m.error) m.error = msg; };
  // the served file lives apart from the row dir (which --keep keeps): it is
  // always removed, and the ftp user must be able to traverse to it
  const data = mkdtempSync(join(tmpdir(), 'portside-bench-ftp-'));
  const removeData = () => rmSync(data, { recursive: true, force: true });
  process.on('exit', removeData);
  try {
    chmodSync(data, 0o755); // vsftpd refuses an anonymous root the ftp user can write to: 0755, root-owned
    const t0 = Date.now();
    writeFile(join(data, FILE), bytes);
    log(`ftp: wrote ${(bytes / 2 ** 20).toFixed(0)} MiB in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    let ftpd;
    try { ftpd = await startVsftpd(ctx, data); } catch (e) { failAll('direct', e.message); failAll('portside', e.message); res.error = e.message; return res; }

    let portside = null;
    for (const m of res.modes) {
      if (m.via === 'portside' && !portside) {
        try {
          portside = await startPortside(ctx, null, { target: ftpd.port, rules: 'ftp', rulesDir: join(ctx.root, 'rules') });
        } catch (e) {
          failAll('portside', `portside setup failed: ${e.message}`);
          log(`ftp: portside setup failed: ${e.message}`);
          break;
        }
      }
      const port = m.via === 'portside' ? portside.port : ftpd.port;
      const pids = m.via === 'portside' ? portside.pids : [];
      try {
        const runs = [];
        let cpu = 0;
        let carried = 0;
        for (let i = 0; i < opts.samples; i++) {
          const before = proc.cpuSnapshot(pids);
          const x = await curlRetr(ctx, port, m.active, bytes);
          cpu += proc.cpuDelta(before, pids);
          carried += x.bytes;
          runs.push((x.bytes * 8) / x.seconds / 1e9);
        }
        m.runs = runs;
        m.gbps = median(runs);
        m.cpuPerGiB = pids.length ? cpu / (carried / GiB) : null;
        log(`ftp ${m.name}: ${m.gbps.toFixed(2)} Gbit/s${m.cpuPerGiB == null ? '' : `, ${m.cpuPerGiB.toFixed(2)} CPU-s/GiB`}`);
      } catch (e) {
        m.error = e.message;
        log(`ftp ${m.name}: ${e.message}`);
      }
    }
    return res;
  } finally {
    removeData();
    process.off('exit', removeData);
  }
}

const fmtSize = (b) => (b % GiB === 0 ? `${b / GiB} GiB` : `${(b / 2 ** 20).toFixed(0)} MiB`);
const oneLine = (s) => String(s).replace(/\s+/g, ' ').replace(/\|/g, '\\|').slice(0, 200);

/** Markdown for the FTP section; `rawGbps` is the `portside` row's one-stream figure (or null). */
export function renderFtp(ftp, rawGbps, rawNote) {
  const out = [];
  out.push(`## FTP ${fmtSize(ftp.bytes)} RETR (Gbit/s, higher is better)`, '');
  out.push(`Real vsftpd on 127.0.0.1, \`curl -o /dev/null\`, ${ftp.samples} sample(s) per mode (median; curl's size_download / time_total, i.e. from connect and login to the last byte). Portside: outside + inside relays, the service with \`rules: ftp\`. Relay CPU is the outside + inside relays' user + system time per GiB carried.`);
  out.push(`× portside raw TCP: against the \`portside\` row's one-stream throughput in this run${rawGbps == null ? ` (${rawNote})` : ` (${rawGbps.toFixed(2)} Gbit/s)`}.`, '');
  out.push('| mode | Gbit/s | × direct (same mode) | × portside raw TCP | relay CPU-s/GiB |');
  out.push('|---|---:|---:|---:|---:|');
  const r = (v, b) => (v == null || b == null || b === 0 ? '—' : `${(v / b).toFixed(2)}×`);
  for (const m of ftp.modes) {
    if (m.error) { out.push(`| ${m.label} | **error**: ${oneLine(m.error)} | | | |`); continue; }
    const direct = ftp.modes.find((d) => d.via === 'direct' && d.active === m.active);
    out.push(`| ${m.label} | ${m.gbps.toFixed(2)} | ${m.via === 'direct' ? '—' : r(m.gbps, direct?.gbps)} | ${m.via === 'direct' ? '—' : r(m.gbps, rawGbps)} | ${m.cpuPerGiB == null ? 'no relay' : m.cpuPerGiB.toFixed(2)} |`);
  }
  out.push('');
  if (rawGbps != null) {
    const aims = ftp.modes.filter((m) => m.via === 'portside' && m.gbps != null)
      .map((m) => `${m.active ? 'active' : 'passive'} ${(m.gbps / rawGbps).toFixed(2)}× (${m.gbps / rawGbps >= 0.8 ? 'met' : 'not met'})`);
    if (aims.length) out.push(`Aim (issue 3): portside FTP ≥ 0.8× portside raw TCP: ${aims.join(', ')}.`, '');
  }
  return out.join('\n');
}
