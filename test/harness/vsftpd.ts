// Real vsftpd (anonymous download and upload) as the FTP server behind the firewall.
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Proc, freePort, waitListening, runOk, onExitSync } from './procs.js';

export interface FtpFileSpec {
  /** Path relative to the FTP root, e.g. `big.bin` or `pub/a.txt`. */
  name: string;
  /** Random content of this many bytes (when `content` is not given). */
  size?: number;
  content?: string | Uint8Array;
}

export interface FtpFile {
  name: string;
  path: string;
  size: number;
  sha256: string;
}

export interface VsftpdOptions {
  listenAddress: string;
  /** Control port; a free one when omitted. */
  port?: number;
  netns?: string;
  pasvMinPort?: number;
  pasvMaxPort?: number;
  /** Files to create under the root before starting. */
  files?: FtpFileSpec[];
  /** Extra `key=value` lines. */
  extraConfig?: string;
  startTimeoutMs?: number;
  /** Keep the temp dir (root, uploads, log) after stop() (default: removed). */
  keepFiles?: boolean;
}

export interface Vsftpd {
  pid: number;
  address: string;
  port: number;
  /** Anonymous FTP root (read-only for FTP users). */
  root: string;
  /** Writable folder under root; FTP path `/upload/`. */
  uploadDir: string;
  files: Record<string, FtpFile>;
  pasvMinPort: number;
  pasvMaxPort: number;
  logFile: string;
  proc: Proc;
  log(): string;
  stop(): Promise<void>;
}

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Write `size` random bytes to `path`, hashing as we go (100 MiB without holding it in memory). */
export function writeRandomFile(path: string, size: number): string {
  const hash = createHash('sha256');
  const fd = openSync(path, 'w', 0o644);
  try {
    let left = size;
    while (left > 0) {
      const chunk = randomBytes(Math.min(left, 4 * 1024 * 1024));
      hash.update(chunk);
      writeSync(fd, chunk);
      left -= chunk.length;
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

export function vsftpdConfig(o: { listenAddress: string; port: number; root: string; pasvMin: number; pasvMax: number; logFile: string; extra?: string }): string {
  return [
    'listen=YES',
    'listen_ipv6=NO',
    `listen_address=${o.listenAddress}`,
    `listen_port=${o.port}`,
    'anonymous_enable=YES',
    `anon_root=${o.root}`,
    'no_anon_password=YES',
    'local_enable=NO',
    'write_enable=YES',
    'anon_upload_enable=YES',
    'anon_mkdir_write_enable=YES',
    // Uploaded files must be readable back (default anon_umask 077 makes them 0600 as ftp).
    'anon_umask=022',
    'pasv_enable=YES',
    `pasv_min_port=${o.pasvMin}`,
    `pasv_max_port=${o.pasvMax}`,
    'port_enable=YES',
    'connect_from_port_20=NO',
    'seccomp_sandbox=NO',
    'secure_chroot_dir=/var/run/vsftpd/empty',
    'background=NO',
    'xferlog_enable=YES',
    `vsftpd_log_file=${o.logFile}`,
    'dual_log_enable=NO',
    'log_ftp_protocol=YES',
    'use_localtime=NO',
    ...(o.extra ? [o.extra] : []),
  ].join('\n') + '\n';
}

/** Start vsftpd in the foreground (background=NO) and wait until it listens. */
export async function startVsftpd(opts: VsftpdOptions): Promise<Vsftpd> {
  const dir = mkdtempSync(join(tmpdir(), 'ps-vsftpd-'));
  chmodSync(dir, 0o755);
  const removeDir = () => {
    if (!opts.keepFiles) rmSync(dir, { recursive: true, force: true });
  };
  // Test files can be 100 MiB: never leave them behind, even when the run dies.
  const unregister = onExitSync(removeDir);
  const root = join(dir, 'root');
  // vsftpd refuses an anonymous root the ftp user could write to.
  mkdirSync(root, { mode: 0o755 });
  const uploadDir = join(root, 'upload');
  mkdirSync(uploadDir, { mode: 0o755 });
  const ftpUid = Number((await runOk('id', ['-u', 'ftp'])).stdout.trim());
  const ftpGid = Number((await runOk('id', ['-g', 'ftp'])).stdout.trim());
  chownSync(uploadDir, ftpUid, ftpGid);
  mkdirSync('/var/run/vsftpd/empty', { recursive: true });

  const files: Record<string, FtpFile> = {};
  for (const f of opts.files ?? []) {
    const path = join(root, f.name);
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    let sha256: string;
    let size: number;
    if (f.content !== undefined) {
      const buf = typeof f.content === 'string' ? Buffer.from(f.content) : Buffer.from(f.content);
      writeFileSync(path, buf, { mode: 0o644 });
      sha256 = createHash('sha256').update(buf).digest('hex');
      size = buf.length;
    } else {
      size = f.size ?? 1024;
      sha256 = writeRandomFile(path, size);
    }
    files[f.name] = { name: f.name, path, size, sha256 };
  }

  const port = opts.port ?? (await freePort(opts.netns ? '127.0.0.1' : opts.listenAddress));
  const pasvMin = opts.pasvMinPort ?? 40000 + Math.floor(Math.random() * 200) * 100;
  const pasvMax = opts.pasvMaxPort ?? pasvMin + 99;
  const logFile = join(dir, 'vsftpd.log');
  const configFile = join(dir, 'vsftpd.conf');
  writeFileSync(configFile, vsftpdConfig({ listenAddress: opts.listenAddress, port, root, pasvMin, pasvMax, logFile, extra: opts.extraConfig }));
  const proc = new Proc('vsftpd', [configFile], { netns: opts.netns, name: `vsftpd${opts.netns ? `@${opts.netns}` : ''}` });
  const log = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  try {
    await waitListening(port, { netns: opts.netns, address: opts.listenAddress, timeoutMs: opts.startTimeoutMs ?? 10_000, proc });
  } catch (e) {
    await proc.stop(500);
    const msg = `${(e as Error).message}\nvsftpd log:\n${log()}`;
    unregister();
    removeDir();
    throw new Error(msg);
  }
  return {
    pid: proc.pid,
    address: opts.listenAddress,
    port,
    root,
    uploadDir,
    files,
    pasvMinPort: pasvMin,
    pasvMaxPort: pasvMax,
    logFile,
    proc,
    log,
    stop: async () => {
      await proc.stop(3_000);
      unregister();
      removeDir();
    },
  };
}
