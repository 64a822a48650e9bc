// Tests of the e2e harness itself: namespaces, real danted, real vsftpd, curl in namespaces.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { bestTopology, startEcho, tcpProbe, type Topology } from '../harness/netns.js';
import { startDante, createSystemUser, type Dante, type SystemUser } from '../harness/dante.js';
import { startVsftpd, sha256File, type Vsftpd } from '../harness/vsftpd.js';
import { stopAll, liveProcs, pidGone } from '../harness/procs.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('e2e harness', () => {
  let topo: Topology;
  let work: string;
  const pids: number[] = [];
  let echoPort: number;
  let otherPort: number;
  let serverEchoPort: number;
  let dante: Dante | undefined;
  let ftp: Vsftpd | undefined;
  let user: SystemUser | undefined;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'ps-harness-test-'));
    topo = await bestTopology('h');
    // Echo services print the peer address first, so a test can tell who dialled.
    const echos = await Promise.all([
      startEcho(topo, 'outside', topo.addr.outside),
      startEcho(topo, 'outside', topo.addr.outside),
      startEcho(topo, 'server', topo.addr.server),
    ]);
    [echoPort, otherPort, serverEchoPort] = echos.map((e) => e.port) as [number, number, number];
    for (const e of echos) pids.push(e.proc.pid);
  });

  afterAll(async () => {
    await user?.remove();
    await stopAll();
    await topo?.destroy();
    rmSync(work, { recursive: true, force: true });
  });

  it('builds separate namespaces with the firewall not forwarding', async () => {
    if (topo.kind === 'loopback') {
      expect(Object.values(topo.addr).every((a) => a === '127.0.0.1')).toBe(true);
      return;
    }
    const list = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const n of Object.values(topo.ns)) expect(list).toContain(n!);
    const fwd = await topo.run('firewall', 'sysctl', ['-n', 'net.ipv4.ip_forward']);
    expect(fwd.stdout.trim()).toBe('0');
    const addrs = await topo.run('firewall', 'ip', ['-4', '-o', 'addr', 'show']);
    expect(addrs.stdout).toContain(topo.addr.fwExternal);
    expect(addrs.stdout).toContain(topo.addr.fwInternal);
    // The host namespace got no interface of ours.
    const hostLinks = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
    expect(hostLinks).not.toMatch(/pfw(ext|int)|brintra|brnet/);
  });

  it('inside reaches the server on the intranet; outside cannot reach it directly', async () => {
    const ok = await tcpProbe(topo, 'inside', { host: topo.addr.server, port: serverEchoPort, send: 'hi\n', timeoutMs: 3000 });
    expect(ok.ok).toBe(true);
    expect(ok.received).toContain(`peer=${topo.addr.inside}`);
    if (!topo.isolated) return;
    const [direct, fwIn, cli] = await Promise.all([
      tcpProbe(topo, 'outside', { host: topo.addr.server, port: serverEchoPort, timeoutMs: 1500 }),
      // Nor can the internet open anything on the firewall itself (its intranet address included).
      tcpProbe(topo, 'outside', { host: topo.addr.fwInternal, port: serverEchoPort, timeoutMs: 1500 }),
      tcpProbe(topo, 'client', { host: topo.addr.server, port: serverEchoPort, timeoutMs: 1500 }),
    ]);
    for (const r of [direct, fwIn, cli]) {
      expect(r.ok).toBe(false);
      expect(['connect', 'timeout']).toContain(r.stage);
    }
  });

  it('danted in the firewall relays inside -> outside and is not reachable from the internet', async () => {
    dante = await startDante({ netns: topo.ns.firewall, internalAddress: topo.addr.fwInternal, externalAddress: topo.addr.fwExternal });
    pids.push(dante.pid);
    const socks = { host: dante.address, port: dante.port };
    const r = await tcpProbe(topo, 'inside', { host: topo.addr.outside, port: echoPort, send: 'through the firewall\n', socks, timeoutMs: 5000 });
    expect(r.ok).toBe(true);
    // The outside saw the firewall's external address, not the inside host.
    expect(r.received).toContain(`peer=${topo.addr.fwExternal}`);
    expect(r.received).toContain('through the firewall');
    expect(dante.log()).toMatch(/pass\(\d+\): tcp\/connect/);
    if (topo.isolated) {
      const fromOutside = await tcpProbe(topo, 'outside', { host: topo.addr.fwInternal, port: dante.port, timeoutMs: 2000 });
      expect(fromOutside.ok).toBe(false);
      expect(fromOutside.stage).toBe('connect');
    }
    await dante.stop();
    expect(pidGone(dante.pid)).toBe(true);
    dante = undefined;
  });

  it('danted with a to: restriction refuses other destinations', async () => {
    const d = await startDante({
      netns: topo.ns.firewall,
      internalAddress: topo.addr.fwInternal,
      externalAddress: topo.addr.fwExternal,
      to: [`${topo.addr.outside}/32 port = ${echoPort}`],
    });
    pids.push(d.pid);
    const socks = { host: d.address, port: d.port };
    const allowed = await tcpProbe(topo, 'inside', { host: topo.addr.outside, port: echoPort, socks, timeoutMs: 5000 });
    expect(allowed.ok).toBe(true);
    const refused = await tcpProbe(topo, 'inside', { host: topo.addr.outside, port: otherPort, socks, timeoutMs: 5000 });
    expect(refused.ok).toBe(false);
    expect(refused.stage).toBe('connect');
    expect(refused.error).toMatch(/not allowed|ruleset|Socks5 proxy rejected/i);
    expect(d.log()).toMatch(/block\(\d+\): tcp\/connect/);
    await d.stop();
    expect(pidGone(d.pid)).toBe(true);
  });

  it('danted with socksmethod username checks system users', async () => {
    user = await createSystemUser();
    const d = await startDante({
      netns: topo.ns.firewall,
      internalAddress: topo.addr.fwInternal,
      externalAddress: topo.addr.fwExternal,
      socksmethod: 'username',
    });
    pids.push(d.pid);
    const good = await tcpProbe(topo, 'inside', {
      host: topo.addr.outside,
      port: echoPort,
      socks: { host: d.address, port: d.port, userId: user.name, password: user.password },
      timeoutMs: 5000,
    });
    expect(good.ok).toBe(true);
    const bad = await tcpProbe(topo, 'inside', {
      host: topo.addr.outside,
      port: echoPort,
      socks: { host: d.address, port: d.port, userId: user.name, password: 'wrong-password' },
      timeoutMs: 5000,
    });
    expect(bad.ok).toBe(false);
    expect(bad.stage).toBe('connect');
    const none = await tcpProbe(topo, 'inside', { host: topo.addr.outside, port: echoPort, socks: { host: d.address, port: d.port }, timeoutMs: 5000 });
    expect(none.ok).toBe(false);
    // curl's own verdict for a refused SOCKS5 password is exit code 97.
    const curl = await topo.run('inside', 'curl', [
      '-sS',
      '--max-time',
      '5',
      '--socks5',
      `${d.address}:${d.port}`,
      '--proxy-user',
      `${user.name}:wrong-password`,
      `http://${topo.addr.outside}:${echoPort}/`,
    ]);
    expect(curl.code).toBe(97);
    await d.stop();
    await user.remove();
    user = undefined;
    expect(execFileSync('getent', ['passwd'], { encoding: 'utf8' })).not.toContain('psu');
  });

  describe('vsftpd in the server namespace', () => {
    beforeAll(async () => {
      ftp = await startVsftpd({
        netns: topo.ns.server,
        listenAddress: topo.addr.server,
        files: [
          { name: 'small.bin', size: 1024 * 1024 },
          { name: 'big.bin', size: 100 * 1024 * 1024 },
          { name: 'pub/hello.txt', content: 'hello from vsftpd\n' },
        ],
      });
      pids.push(ftp.pid);
    });
    afterAll(async () => {
      await ftp?.stop();
    });

    const url = (path: string) => `ftp://${ftp!.address}:${ftp!.port}/${path}`;
    async function fetchFile(path: string, extra: string[]): Promise<{ code: number; stderr: string; sha?: string }> {
      const out = join(work, `dl-${Math.random().toString(36).slice(2)}`);
      const r = await topo.run('inside', 'curl', ['-sS', '--fail', '--max-time', '30', ...extra, '-o', out, url(path)], { timeoutMs: 40_000 });
      return { code: r.code, stderr: r.stderr, sha: existsSync(out) ? sha256File(out) : undefined };
    }

    it('serves files in passive mode (EPSV)', async () => {
      const small = await fetchFile('small.bin', []);
      expect(small.code, small.stderr).toBe(0);
      expect(small.sha).toBe(ftp!.files['small.bin']!.sha256);
      const big = await fetchFile('big.bin', []);
      expect(big.code, big.stderr).toBe(0);
      expect(big.sha).toBe(ftp!.files['big.bin']!.sha256);
      expect(ftp!.files['big.bin']!.size).toBe(100 * 1024 * 1024);
      const hello = await fetchFile('pub/hello.txt', []);
      expect(hello.sha).toBe(sha(Buffer.from('hello from vsftpd\n')));
      expect(ftp!.log()).toMatch(/"EPSV"|"PASV"/);
    });

    it('serves files in active mode with EPRT and with PORT', async () => {
      const eprt = await fetchFile('small.bin', ['-P', topo.addr.inside]);
      expect(eprt.code, eprt.stderr).toBe(0);
      expect(eprt.sha).toBe(ftp!.files['small.bin']!.sha256);
      expect(ftp!.log()).toMatch(/"EPRT \|1\|/);
      const port = await fetchFile('small.bin', ['-P', topo.addr.inside, '--disable-eprt']);
      expect(port.code, port.stderr).toBe(0);
      expect(port.sha).toBe(ftp!.files['small.bin']!.sha256);
      expect(ftp!.log()).toMatch(/"PORT \d+,\d+,\d+,\d+,\d+,\d+"/);
    });

    it('accepts anonymous uploads into upload/', async () => {
      const data = randomBytes(256 * 1024);
      const src = join(work, 'up.bin');
      writeFileSync(src, data);
      const r = await topo.run('inside', 'curl', ['-sS', '--fail', '--max-time', '20', '-T', src, url('upload/up.bin')]);
      expect(r.code, r.stderr).toBe(0);
      const stored = join(ftp!.uploadDir, 'up.bin');
      expect(sha256File(stored)).toBe(sha(data));
      // anon_umask=022: the upload can be downloaded again.
      const back = await fetchFile('upload/up.bin', []);
      expect(back.code, back.stderr).toBe(0);
      expect(back.sha).toBe(sha(data));
      // The root itself is not writable.
      const denied = await topo.run('inside', 'curl', ['-sS', '--fail', '--max-time', '20', '-T', src, url('up.bin')]);
      expect(denied.code).not.toBe(0);
    });
  });

  it('leaves no process and no namespace behind', async () => {
    const root = ftp?.root;
    await ftp?.stop();
    ftp = undefined;
    await stopAll();
    expect(liveProcs()).toHaveLength(0);
    const names = Object.values(topo.ns).filter(Boolean) as string[];
    await topo.destroy();
    for (const pid of pids) expect(pidGone(pid), `pid ${pid}`).toBe(true);
    const list = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const n of names) expect(list).not.toContain(n);
    if (root) expect(existsSync(root)).toBe(false);
  });
});
