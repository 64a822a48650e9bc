// `portside run` with the socket hook, end to end on loopback without the agent: a SOCKS5
// server stands in for it (src/socks5/server.ts, recording CONNECTs). Real unmodified curl,
// bash's /dev/tcp, and hook/test-connect (exact connect() semantics) run under
// `node dist/cli.js run`.
import { execFile, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSocks5Server } from '../../dist/socks5/server.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const cli = `${root}dist/cli.js`;
const testConnect = `${root}hook/test-connect`;

interface Ran { code: number; stdout: string; stderr: string }

/** `node dist/cli.js run ARGS` (async: the servers live in this process). */
function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, 'run', ...args], { env: { ...process.env, ...env }, timeout: 60_000, maxBuffer: 64 << 20, encoding: 'buffer' },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
        resolve({ code, stdout: stdout.toString('latin1'), stderr: stderr.toString() });
      });
  });
}

interface FtpServer { on(e: string, f: (...a: never[]) => void): void; listen(): Promise<void>; close(): Promise<void> }

/** An anonymous FTP server (ftp-srv) on 127.0.0.2 serving dir; passive data ports on 127.0.0.2 too. */
async function startFtp(dir: string): Promise<{ port: number; close(): Promise<void> }> {
  const bunyan = (await import('bunyan')).default as unknown as { createLogger(o: object): unknown };
  const { FtpSrv } = (await import('ftp-srv')) as unknown as { FtpSrv: new (o: object) => FtpServer };
  const probe = net.createServer();
  const port = await listen(probe, '127.0.0.2');
  await new Promise((r) => probe.close(r));
  const srv = new FtpSrv({
    url: `ftp://127.0.0.2:${port}`, pasv_url: '127.0.0.2', pasv_min: 40500, pasv_max: 40600, anonymous: true,
    log: bunyan.createLogger({ name: 'ftp-srv', level: 'fatal' }),
  });
  srv.on('login', (_d: unknown, resolve: (v: { root: string }) => void) => resolve({ root: dir }));
  await srv.listen();
  return { port, close: () => srv.close() };
}

function listen(server: net.Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve((server.address() as net.AddressInfo).port));
  });
}

/** A loopback port with nothing listening (bound, then closed). */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  const port = await listen(s, '127.0.0.1');
  await new Promise((r) => s.close(r));
  return port;
}

/** keyed by host:port */
function kv(out: string): Record<string, string> {
  return Object.fromEntries(out.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

describe('portside run: socket hook (LD_PRELOAD) end to end', () => {
  const events: { event: string; host?: string; port?: number }[] = [];
  const servers: net.Server[] = [];
  const sockets = new Set<net.Socket>();
  let socksPort: number;
  let codesPort: number;
  let silentPort: number;
  let httpPort: number;
  let echoPort: number;
  let refusedPort: number;
  const big = randomBytes(3 << 20);
  const bigSha = createHash('sha256').update(big).digest('hex');
  const connectsTo = (host: string, port: number) => events.filter((e) => e.event === 'connect' && e.host === host && e.port === port).length;

  beforeAll(async () => {
    execFileSync('make', ['-s', '--no-print-directory', '-C', `${root}hook`], { stdio: 'inherit' });
    const track = (s: net.Server) => { servers.push(s); s.on('connection', (c: net.Socket) => { sockets.add(c); c.on('close', () => sockets.delete(c)); }); return s; };

    // The agent stand-in; refuses (rule set, reply 02) anything to port 9.
    socksPort = await listen(track(createSocks5Server({ allow: (_h, p) => p !== 9, onEvent: (e) => events.push(e) })), '127.0.0.1');

    // A SOCKS5 server answering every CONNECT with reply code (destination port % 256):
    // checks the hook's reply-to-errno mapping.
    codesPort = await listen(track(net.createServer((c) => {
      c.on('error', () => {});
      let buf = Buffer.alloc(0);
      c.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length === 3) c.write(Buffer.of(5, 0));
        if (buf.length === 3 + 10) c.end(Buffer.of(5, buf.readUInt16BE(3 + 8) & 0xff, 0, 1, 0, 0, 0, 0, 0, 0));
      });
    })), '127.0.0.1');

    // One that accepts and never answers: the hook's own deadline must fire.
    silentPort = await listen(track(net.createServer((c) => { c.on('error', () => {}); })), '127.0.0.1');

    // Targets: dual-stack HTTP (body says who connected) and TCP echo.
    const web = http.createServer((req, res) => {
      if (req.url === '/big') { res.setHeader('content-length', big.length); res.end(big); return; }
      res.end(`hello from ${req.socket.remoteAddress}\n`);
    });
    web.keepAliveTimeout = 100;
    httpPort = await listen(track(web), '::');
    echoPort = await listen(track(net.createServer((c) => { c.on('error', () => {}); c.pipe(c); })), '::');
    refusedPort = await closedPort();
  });

  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  });

  const base = () => ['--socks', `127.0.0.1:${socksPort}`, '--route', '127.0.0.2=portside', '--route', '[::1]=portside', '--route', '*=direct'];

  it('sends a routed curl through the SOCKS5 server; the transfer is intact', async () => {
    const before = connectsTo('127.0.0.2', httpPort);
    const r = await run([...base(), '--', 'curl', '-sS', '--fail', `http://127.0.0.2:${httpPort}/big`]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(createHash('sha256').update(Buffer.from(r.stdout, 'latin1')).digest('hex')).toBe(bigSha);
    expect(connectsTo('127.0.0.2', httpPort)).toBe(before + 1);
  });

  it('takes the non-blocking path with curl and reports the original destination through getpeername', async () => {
    const r = await run([...base(), '--debug', '--', 'curl', '-sS', '-v', '-w', 'remote=%{remote_ip} %{remote_port}\n', `http://127.0.0.2:${httpPort}/`]);
    expect(r.code).toBe(0);
    // The SOCKS server made the connection to the target, so the target saw it, not curl.
    expect(r.stdout).toContain('hello from ::ffff:127.0.0.1');
    // curl takes both from getpeername(): without the hook's answer it would show the agent.
    expect(r.stderr).toContain(`Connected to 127.0.0.2 (127.0.0.2) port ${httpPort}`);
    expect(r.stdout).toContain(`remote=127.0.0.2 ${httpPort}`);
    expect(r.stderr).toMatch(new RegExp(`portside-hook\\[\\d+\\]: fd \\d+: 127\\.0\\.0\\.2:${httpPort} via portside \\(non-blocking: EINPROGRESS\\)`));
  });

  it('carries an IPv6 destination (::1) over the IPv4 agent address', async () => {
    const before = events.filter((e) => e.event === 'connect' && e.port === httpPort && e.host !== '127.0.0.2').length;
    const r = await run([...base(), '--', 'curl', '-sS', '-v', '-w', 'remote=%{remote_ip} %{remote_port}\n', `http://[::1]:${httpPort}/`]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('hello from ::1');
    expect(r.stdout).toContain(`remote=::1 ${httpPort}`);
    expect(r.stderr).toContain(`Connected to ::1 (::1) port ${httpPort}`);
    const v6 = events.filter((e) => e.event === 'connect' && e.port === httpPort && e.host !== '127.0.0.2');
    expect(v6.length).toBe(before + 1);
    expect(net.isIPv6(v6.at(-1)!.host!)).toBe(true);
    expect(v6.at(-1)!.host!.replace(/^(0:)+/, '::')).toBe('::1'); // ATYP 4 with the full address
  });

  it('leaves a destination routed direct alone', async () => {
    const n = events.length;
    const r = await run([...base(), '--debug', '--', 'curl', '-sS', '-w', 'remote=%{remote_ip} %{remote_port}\n', `http://127.0.0.3:${httpPort}/`]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('hello from ::ffff:127.0.0.1'); // curl itself, straight to the target
    expect(r.stdout).toContain(`remote=127.0.0.3 ${httpPort}`);
    expect(r.stderr).toMatch(new RegExp(`fd \\d+: 127\\.0\\.0\\.3:${httpPort} direct`));
    expect(events.length).toBe(n);
  });

  it('gives curl an ordinary connection failure (exit 7) for a refused destination', async () => {
    // The target port is closed: the SOCKS server answers 05.
    const a = await run([...base(), '--', 'curl', '-sS', `http://127.0.0.2:${refusedPort}/`]);
    expect(a.code).toBe(7);
    expect(a.stderr).toMatch(/Failed to connect to 127\.0\.0\.2 port \d+/);
    // Its rule set says no (port 9): reply 02.
    const b = await run([...base(), '--', 'curl', '-sS', 'http://127.0.0.2:9/']);
    expect(b.code).toBe(7);
    expect(b.stderr).toContain('Failed to connect to 127.0.0.2 port 9');
    expect(events).toContainEqual({ event: 'connect.refused', host: '127.0.0.2', port: 9 });
  });

  it('works for a blocking connect (bash /dev/tcp) against an echo target', async () => {
    const before = connectsTo('127.0.0.2', echoPort);
    const r = await run([...base(), '--', 'bash', '-c', `exec 3<>/dev/tcp/127.0.0.2/${echoPort}; echo through-portside >&3; head -n1 <&3`]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('through-portside\n');
    expect(connectsTo('127.0.0.2', echoPort)).toBe(before + 1);
  });

  it('keeps the connect() contract: blocking, non-blocking (EINPROGRESS, SO_ERROR, EISCONN), V6ONLY, dup', async () => {
    const tc = (mode: string, addr: string) => run([...base(), '--', testConnect, mode, addr, String(echoPort)]);
    const block = await tc('block', '127.0.0.2');
    expect(block.code).toBe(0);
    expect(kv(block.stdout)).toEqual({ connect: '0 0', still_blocking: 'yes', peer: `127.0.0.2:${echoPort}`, echo: 'blocking hello' });

    const nb = await tc('nonblock', '127.0.0.2');
    expect(nb.code).toBe(0);
    expect(kv(nb.stdout)).toEqual({
      connect: '-1 EINPROGRESS', writable: 'yes', so_error: '0', again: '-1 EISCONN',
      peer: `127.0.0.2:${echoPort}`, echo: 'nonblocking hello',
    });

    const nb6 = await tc('nonblock', '::1');
    expect(kv(nb6.stdout)).toMatchObject({ connect: '-1 EINPROGRESS', so_error: '0', peer: `[::1]:${echoPort}`, echo: 'nonblocking hello' });

    // An IPv6-only socket still reaches the IPv4 agent (the hook clears V6ONLY before connecting).
    const v6only = await tc('v6only', '::1');
    expect(v6only.code).toBe(0);
    expect(kv(v6only.stdout)).toMatchObject({ connect: '0 0', peer: `[::1]:${echoPort}`, echo: 'v6only hello' });

    const dup = await tc('dup', '127.0.0.2');
    expect(dup.code).toBe(0);
    expect(kv(dup.stdout)).toMatchObject({
      dup_peer: `127.0.0.2:${echoPort}`, after_close_peer: `127.0.0.2:${echoPort}`, echo: 'dup hello', unconnected_peer: 'error:ENOTCONN',
    });
  });

  it('answers gethostbyname() and gethostbyname_r() for a --name with a stand-in, and connect() to it sends the name', async () => {
    for (const mode of ['byname', 'byname_r']) {
      const before = connectsTo('localhost', echoPort);
      const r = await run(['--socks', `127.0.0.1:${socksPort}`, '--name', 'localhost', '--route', '*=direct', '--', testConnect, mode, 'localhost', String(echoPort)]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const out = kv(r.stdout);
      expect(out.resolved, 'a stand-in from 224.0.0.0/8, not a local answer').toMatch(/^224\./);
      expect(out).toMatchObject({ connect: '0 0', peer: `${out.resolved}:${echoPort}`, echo: 'blocking hello' });
      expect(connectsTo('localhost', echoPort), 'a SOCKS5 CONNECT for the name itself').toBe(before + 1);
    }
    // Without --name the program's own resolver answers, and the route list decides.
    const local = await run([...base(), '--', testConnect, 'byname', 'localhost', String(echoPort)]);
    expect(kv(local.stdout)).toMatchObject({ resolved: '127.0.0.1', echo: 'blocking hello' });
  });

  it('maps SOCKS5 reply codes to the errno a program expects', async () => {
    const expected: Record<number, string> = {
      1: 'ECONNREFUSED', 2: 'ECONNREFUSED', 3: 'ENETUNREACH', 4: 'EHOSTUNREACH', 5: 'ECONNREFUSED', 6: 'ETIMEDOUT',
    };
    const cases = Object.entries(expected).flatMap(([rep, errno]) => ['block', 'nonblock'].map((mode) => ({ rep, errno, mode })));
    const results = await Promise.all(cases.map(({ rep, mode }) =>
      // Destination port 256*k + rep makes the test server answer with reply code rep.
      run(['--socks', `127.0.0.1:${codesPort}`, '--route', '127.0.0.2=portside', '--', testConnect, mode, '127.0.0.2', String(256 * 100 + Number(rep))])));
    cases.forEach(({ rep, errno, mode }, i) => {
      expect(results[i].code, `reply ${rep} ${mode}`).toBe(1);
      expect(kv(results[i].stdout).connect, `reply ${rep} ${mode}`).toBe(`-1 ${errno}`);
    });
  });

  it('times out a silent agent with ETIMEDOUT, and refuses when no agent listens', async () => {
    const silent = await run(['--socks', `127.0.0.1:${silentPort}`, '--route', '127.0.0.2=portside', '--', testConnect, 'block', '127.0.0.2', String(echoPort)],
      { PORTSIDE_CONNECT_TIMEOUT: '1' });
    expect(kv(silent.stdout).connect).toBe('-1 ETIMEDOUT');

    const none = await closedPort();
    const r = await run(['--socks', `127.0.0.1:${none}`, '--route', '127.0.0.2=portside', '--', 'curl', '-sS', `http://127.0.0.2:${httpPort}/`]);
    expect(r.code).toBe(7);
    expect(r.stderr).toContain(`portside: warning: no agent answers at 127.0.0.1:${none}`);
    expect(r.stderr).toContain('Failed to connect to 127.0.0.2');
  });

  describe('FTP under the hook (control connection through SOCKS5)', () => {
    let ftp: { port: number; close(): Promise<void> };
    let dir: string;
    const file = randomBytes(1 << 20);
    const fileSha = createHash('sha256').update(file).digest('hex');
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'portside-hook-ftp-'));
      writeFileSync(join(dir, 'f.bin'), file);
      ftp = await startFtp(dir);
    });
    afterAll(async () => {
      await ftp.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const dataConnects = () => events.filter((e) => e.event === 'connect' && e.host === '127.0.0.2' && e.port! >= 40500 && e.port! <= 40600).length;

    for (const [mode, args, passive] of [
      ['passive (EPSV)', [], true],
      ['passive (PASV)', ['--disable-epsv'], true],
      ['active (EPRT)', ['-P', '-'], false],
      ['active (PORT)', ['-P', '-', '--disable-eprt'], false],
    ] as const) {
      it(`curl ${mode}`, async () => {
        const control = connectsTo('127.0.0.2', ftp.port);
        const data = dataConnects();
        const r = await run([...base(), '--', 'curl', '-sS', '--max-time', '30', ...args, `ftp://127.0.0.2:${ftp.port}/f.bin`]);
        expect(r.stderr).toBe('');
        expect(r.code).toBe(0);
        expect(createHash('sha256').update(Buffer.from(r.stdout, 'latin1')).digest('hex')).toBe(fileSha);
        expect(connectsTo('127.0.0.2', ftp.port)).toBe(control + 1);
        // Passive: the data connect() is routed too. Active: curl's own listener took it.
        expect(dataConnects()).toBe(data + (passive ? 1 : 0));
      });
    }

    for (const passive of [true, false]) {
      it(`lftp ${passive ? 'passive' : 'active'}`, async () => {
        const out = join(dir, `lftp-${passive}.bin`);
        const data = dataConnects();
        const r = await run([...base(), '--', 'lftp', '-c',
          `set ftp:passive-mode ${passive ? 'on' : 'off'}; set net:max-retries 1; set net:timeout 20; get ftp://127.0.0.2:${ftp.port}/f.bin -o ${out}`]);
        expect(r.code, r.stderr).toBe(0);
        expect(createHash('sha256').update(readFileSync(out)).digest('hex')).toBe(fileSha);
        expect(dataConnects()).toBe(data + (passive ? 1 : 0));
      });
    }
  });

  it("passes the program's exit status and stays silent without --debug", async () => {
    const r = await run([...base(), '--', 'sh', '-c', 'exit 3']);
    expect(r.code).toBe(3);
    expect(r.stderr).toBe('');
    const missing = await run([...base(), '--', 'no-such-program-portside']);
    expect(missing.code).toBe(127);
    expect(missing.stderr).toContain('no-such-program-portside: command not found');
  });
});
