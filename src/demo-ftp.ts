/**
 * The demo's second act: FTP in passive and active mode through the relays, with the
 * dynamic port notices found, announced connections opened and notices rewritten.
 * The FTP server is an embedded one (ftp-srv); the client is the machine's own curl.
 */
import { execFile, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { say } from './demo.js';

export async function runFtpDemo(ftpServicePort: number, root: string): Promise<void> {
  if (spawnSync('curl', ['--version']).status !== 0) {
    say('client', 'curl not found: skipping the FTP part (install curl to see active and passive FTP carried)');
    return;
  }
  const file = randomBytes(2 * 1024 * 1024);
  writeFileSync(join(root, 'report.bin'), file);
  const want = createHash('sha256').update(file).digest('hex');
  {
    for (const [mode, args] of [
      ['passive (EPSV)', []],
      ['passive (PASV)', ['--disable-epsv']],
      ['active (EPRT)', ['-P', '127.0.0.1']],
      ['active (PORT)', ['-P', '127.0.0.1', '--disable-eprt']],
    ] as const) {
      say('client', `curl, ${mode}: downloading ftp://127.0.0.1:${ftpServicePort}/report.bin (2 MiB)`);
      // Asynchronously: the relays run in this very process.
      const r = await new Promise<{ status: number; stdout: Buffer; stderr: Buffer }>((resolve) => {
        execFile('curl', ['-sS', '--max-time', '20', ...args, `ftp://127.0.0.1:${ftpServicePort}/report.bin`], { encoding: 'buffer', maxBuffer: 64 << 20 },
          (err, stdout, stderr) => resolve({ status: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
      });
      const got = createHash('sha256').update(r.stdout).digest('hex');
      if (r.status === 0 && got === want) say('client', `curl ${mode}: SHA-256 matches ${want.slice(0, 16)}…`);
      else {
        say('client', `curl ${mode} FAILED: exit ${r.status} ${r.stderr.toString().trim()}`);
        process.exitCode = 1;
      }
    }
  }
}

/** An FTP server on the intranet side for the demo. */
export async function startDemoFtpServer(): Promise<{ port: number; root: string; close(): void }> {
  const bunyan = (await import('bunyan')).default as unknown as { createLogger(o: object): unknown };
  const { FtpSrv } = (await import('ftp-srv')) as unknown as { FtpSrv: new (o: object) => FtpServer };
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as net.AddressInfo).port;
  probe.close();
  const root = mkdtempSync(join(tmpdir(), 'portside-ftp-'));
  const srv = new FtpSrv({
    url: `ftp://127.0.0.1:${port}`,
    pasv_url: '127.0.0.1',
    pasv_min: 40200,
    pasv_max: 40300,
    anonymous: true,
    greeting: 'portside demo FTP server',
    log: bunyan.createLogger({ name: 'ftp-srv', level: 'fatal' }),
  });
  srv.on('login', (_d: unknown, resolve: (v: { root: string }) => void) => resolve({ root }));
  await srv.listen();
  return { port, root, close: () => { void srv.close(); rmSync(root, { recursive: true, force: true }); } };
}

interface FtpServer { on(e: string, f: (...a: never[]) => void): void; listen(): Promise<void>; close(): Promise<void> }
