// FTP through portside end to end, with nothing simulated: real vsftpd on the intranet, real
// Dante as the only way through the firewall, `portside outside` and `portside inside` as built
// (dist/cli.js), and real unmodified curl and lftp on the internet side. Issue 3, "Tests (real
// components)": both active forms (EPRT, PORT) and both passive forms (EPSV, PASV), downloads and
// uploads of 1 MiB and 100 MiB verified by SHA-256, listings, ten transfers at once, the bounce
// attack refused, a notice split byte by byte, an over-long notice line, and the server never
// seeing an address from outside the intranet.
//
//   client ns ── curl/lftp ──> outside ns: portside outside (service ftp on :2121)
//                                 ^ session (TLS 1.3 PSK) through danted in the firewall ns
//   inside ns: portside inside ──┘ ──> server ns: vsftpd :21
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bestTopology, type Topology } from '../harness/netns.js';
import { startDante, type Dante } from '../harness/dante.js';
import { startVsftpd, sha256File, writeRandomFile, type Vsftpd } from '../harness/vsftpd.js';
import { freePort, runOk, stopAll, type Proc } from '../harness/procs.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(REPO, 'dist', 'cli.js');
const RULES_DIR = join(REPO, 'rules');
const RAW_CLIENT = fileURLToPath(new URL('../harness/ftp-raw-client.mjs', import.meta.url));
const MiB = 1024 * 1024;

type Mode = 'epsv' | 'pasv' | 'eprt' | 'port';

describe('FTP through portside: vsftpd behind Dante, curl and lftp outside', () => {
  let topo: Topology;
  let work: string;
  let dante: Dante;
  let ftp: Vsftpd;
  let outside: Proc;
  let inside: Proc;
  let sessionPort: number;
  let ftpPort: number;
  let upSmall: { path: string; sha256: string };
  let upBig: { path: string; sha256: string };

  const ftpUrl = (path = '') => `ftp://${topo.addr.outside}:${ftpPort}/${path}`;

  /** curl's flags for each data-connection mode. */
  const modeArgs = (m: Mode): string[] => {
    switch (m) {
      case 'epsv': return [];
      case 'pasv': return ['--disable-epsv'];
      case 'eprt': return ['-P', topo.addr.client];
      case 'port': return ['-P', topo.addr.client, '--disable-eprt'];
    }
  };

  let seq = 0;
  const tmpName = (tag: string) => join(work, `${tag}-${++seq}`);

  /** Download with real curl from the client namespace; returns the SHA-256 of what arrived. */
  async function curlGet(file: string, mode: Mode, maxTime = 120): Promise<{ code: number; stderr: string; sha?: string; size?: number }> {
    const out = tmpName('dl');
    const r = await topo.run('client', 'curl', ['-sS', '--fail', '--max-time', String(maxTime), ...modeArgs(mode), '-o', out, ftpUrl(file)], {
      timeoutMs: (maxTime + 20) * 1000,
    });
    const res = { code: r.code, stderr: r.stderr, sha: existsSync(out) ? sha256File(out) : undefined, size: existsSync(out) ? statSync(out).size : undefined };
    rmSync(out, { force: true });
    return res;
  }

  /** Upload with curl -T into upload/; returns curl's exit code. */
  async function curlPut(src: string, name: string, mode: Mode, maxTime = 120): Promise<{ code: number; stderr: string }> {
    const r = await topo.run('client', 'curl', ['-sS', '--fail', '--max-time', String(maxTime), ...modeArgs(mode), '-T', src, ftpUrl(`upload/${name}`)], {
      timeoutMs: (maxTime + 20) * 1000,
    });
    return { code: r.code, stderr: r.stderr };
  }

  /** Run lftp (real, unmodified) from the client namespace with `commands` after logging in. */
  async function lftp(passive: boolean, commands: string[], maxTime = 90) {
    const script = [
      'set cmd:fail-exit yes',
      'set ftp:ssl-allow no',
      'set net:max-retries 1',
      'set net:timeout 30',
      `set ftp:passive-mode ${passive ? 'on' : 'off'}`,
      `open -u anonymous,lftp@portside.test ftp://${topo.addr.outside}:${ftpPort}`,
      ...commands,
    ].join('; ');
    return topo.run('client', 'lftp', ['-c', script], { timeoutMs: maxTime * 1000 });
  }

  /** The raw FTP client script (test/harness/ftp-raw-client.mjs) in the client namespace. */
  async function rawClient(params: Record<string, unknown>): Promise<Record<string, any>> {
    const args = { host: topo.addr.outside, port: ftpPort, timeoutMs: 60_000, ...params };
    const r = await topo.run('client', process.execPath, [RAW_CLIENT, JSON.stringify(args)], { timeoutMs: 80_000 });
    const last = r.stdout.trim().split('\n').pop() ?? '';
    let res: Record<string, any>;
    try {
      res = JSON.parse(last);
    } catch {
      throw new Error(`raw FTP client printed no result (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
    }
    return res;
  }

  /** Log position, to look only at what a test caused. */
  const mark = () => ({ inside: inside.lines.length, outside: outside.lines.length, vsftpd: ftp.log().length });
  type Mark = ReturnType<typeof mark>;
  const eventsSince = (p: Proc, from: number, event: string) =>
    p.lines.slice(from).filter((l) => l.json?.event === event).map((l) => l.json!);
  /** Wait (pino writes asynchronously) until `p` logged `event` after `from`, matching `pred`. */
  async function waitSince(p: Proc, from: number, event: string, pred: (j: Record<string, unknown>) => boolean = () => true, timeoutMs = 10_000) {
    const found = eventsSince(p, from, event).find(pred);
    if (found) return found;
    return p.waitForEvent(event, timeoutMs, pred, true);
  }
  /** Poll `cond` (log lines arrive asynchronously); no timing is asserted, only the outcome. */
  async function waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${inside.tail()}\n${outside.tail()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  /** FTP commands vsftpd received (log_ftp_protocol) after `from`, as [client, command]. */
  const vsftpdCommands = (from = 0): Array<{ client: string; command: string }> =>
    [...ftp.log().slice(from).matchAll(/FTP command: Client "([^"]+)", "([^"]*)"/g)].map((m) => ({ client: m[1]!, command: m[2]! }));

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} missing: run \`npm run build\` first`);
    work = mkdtempSync(join(tmpdir(), 'ps-ftp-e2e-'));
    topo = await bestTopology('ftp');
    sessionPort = topo.isolated ? 7000 : await freePort();
    ftpPort = topo.isolated ? 2121 : await freePort();

    // The firewall lets the intranet reach exactly one thing outside: the outside relay's session port.
    dante = await startDante({
      netns: topo.ns.firewall,
      internalAddress: topo.addr.fwInternal,
      externalAddress: topo.addr.fwExternal,
      to: [`${topo.addr.outside}/32 port = ${sessionPort}`],
    });
    ftp = await startVsftpd({
      netns: topo.ns.server,
      listenAddress: topo.addr.server,
      port: topo.isolated ? 21 : undefined,
      files: [
        { name: 'small.bin', size: 1 * MiB },
        { name: 'big.bin', size: 100 * MiB },
        { name: 'pub/readme.txt', content: 'served through portside\n' },
      ],
    });
    upSmall = { path: join(work, 'up-small.bin'), sha256: '' };
    upSmall.sha256 = writeRandomFile(upSmall.path, 1 * MiB);
    upBig = { path: join(work, 'up-big.bin'), sha256: '' };
    upBig.sha256 = writeRandomFile(upBig.path, 100 * MiB);

    await runOk(process.execPath, [CLI, 'keygen', '--out', join(work, 'branch.key')]);
    writeFileSync(join(work, 'outside.yaml'), [
      `listen: ${topo.addr.outside}:${sessionPort}`,
      'insides:',
      '  - name: branch',
      '    key_file: branch.key',
      'allow:',
      `  hosts: [${topo.addr.outside}]`,
      `  ports: ["${ftpPort}"]`,
      `  from: ["${topo.nets.internet}"]`,
      'log_level: info',
    ].join('\n') + '\n');
    writeFileSync(join(work, 'inside.yaml'), [
      'name: branch',
      'key_file: branch.key',
      `outside: ${topo.addr.outside}:${sessionPort}`,
      'firewall:',
      `  socks5: ${dante.address}:${dante.port}`,
      'services:',
      '  - name: ftp',
      `    listen: ${topo.addr.outside}:${ftpPort}`,
      `    target: ${topo.addr.server}:${ftp.port}`,
      '    rules: ftp',
      `rules_dir: ${RULES_DIR}`,
      'log_level: info',
    ].join('\n') + '\n');
    const check = await runOk(process.execPath, [CLI, 'check', '--config', join(work, 'inside.yaml')]);
    expect(check.stdout).toContain('ok (inside relay)');

    outside = topo.spawn('outside', process.execPath, [CLI, 'outside', '--config', join(work, 'outside.yaml')], { name: 'portside-outside', cwd: work });
    await outside.waitForEvent('outside.listening', 15_000);
    inside = topo.spawn('inside', process.execPath, [CLI, 'inside', '--config', join(work, 'inside.yaml')], { name: 'portside-inside', cwd: work });
    await inside.waitForEvent('session.established', 20_000);
    await outside.waitForEvent('service.listening', 10_000, (j) => j.service === 'ftp');
    await inside.waitForEvent('service.ready', 10_000, (j) => j.service === 'ftp' && j.port === ftpPort);
    await topo.waitListening('outside', ftpPort, { address: topo.addr.outside, proc: outside });
  }, 180_000);

  afterAll(async () => {
    await ftp?.stop();
    await dante?.stop();
    await stopAll();
    await topo?.destroy();
    if (work) rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('the session runs through Dante and the FTP server is reachable only through portside', async () => {
    const passes = dante.log().split('\n').filter((l) => /pass\(\d+\): tcp\/connect/.test(l));
    expect(passes.some((l) => l.includes(`${topo.addr.outside}.${sessionPort}`)), dante.log()).toBe(true);
    if (!topo.isolated) return;
    // Not around it: the client cannot open the FTP server directly.
    const direct = await topo.run('client', 'curl', ['-sS', '--max-time', '3', `ftp://${topo.addr.server}:${ftp.port}/`]);
    expect([7, 28], direct.stderr).toContain(direct.code); // could not connect / timed out
    // ...while through portside the same server answers.
    const via = await topo.run('client', 'curl', ['-sS', '--fail', '--max-time', '20', ftpUrl('pub/readme.txt')]);
    expect(via.code, via.stderr).toBe(0);
    expect(via.stdout).toBe('served through portside\n');
  });

  describe('curl downloads, SHA-256 verified', () => {
    const cases: Array<{ mode: Mode; big: boolean }> = [
      { mode: 'epsv', big: true },
      { mode: 'pasv', big: true },
      { mode: 'eprt', big: true },
      { mode: 'port', big: true },
    ];
    for (const { mode, big } of cases) {
      it(`${mode.toUpperCase()}: 1 MiB${big ? ' and 100 MiB' : ''}`, async () => {
        const m = mark();
        const small = await curlGet('small.bin', mode);
        expect(small.code, small.stderr).toBe(0);
        expect(small.sha).toBe(ftp.files['small.bin']!.sha256);
        if (big) {
          const b = await curlGet('big.bin', mode, 150);
          expect(b.code, b.stderr).toBe(0);
          expect(b.size).toBe(100 * MiB);
          expect(b.sha).toBe(ftp.files['big.bin']!.sha256);
        }
        const cmds = vsftpdCommands(m.vsftpd).map((c) => c.command);
        if (mode === 'epsv' || mode === 'pasv') {
          // The reply the client got was rewritten to the outside relay's listener.
          const notice = mode === 'epsv' ? 'EPSV' : 'PASV';
          expect(cmds).toContain(notice);
          const rw = await waitSince(inside, m.inside, 'notice.rewritten');
          expect(String(rw.rewritten)).toMatch(new RegExp(`^${topo.addr.outside.replace(/\./g, '\\.')}:\\d+$`));
          const found = await waitSince(inside, m.inside, 'notice.found', (j) => j.notice === notice);
          expect(found.direction).toBe('s2c');
          const listen = await waitSince(outside, m.outside, 'outside-listen.done');
          expect(listen.address).toBe(topo.addr.outside);
          await waitSince(outside, m.outside, 'data.accepted');
        } else {
          // The client's own address went to the outside relay, the server got the inside relay's.
          const notice = mode === 'eprt' ? 'EPRT' : 'PORT';
          const found = await waitSince(inside, m.inside, 'notice.found', (j) => j.notice === notice);
          expect(String(found.announced)).toMatch(new RegExp(`^${topo.addr.client.replace(/\./g, '\\.')}:\\d+$`));
          const rw = await waitSince(inside, m.inside, 'notice.rewritten');
          expect(String(rw.rewritten)).toMatch(new RegExp(`^${topo.addr.inside.replace(/\./g, '\\.')}:\\d+$`));
          await waitSince(outside, m.outside, 'outside-connect.done', (j) => j.result === 'OK');
          await waitSince(inside, m.inside, 'data.accepted');
          const sent = cmds.filter((c) => c.startsWith(notice));
          expect(sent.length).toBeGreaterThanOrEqual(big ? 2 : 1);
          const inAddr = mode === 'eprt' ? `EPRT |1|${topo.addr.inside}|` : `PORT ${topo.addr.inside.split('.').join(',')},`;
          for (const c of sent) expect(c.startsWith(inAddr), c).toBe(true);
        }
      }, 240_000);
    }
  });

  describe('lftp', () => {
    for (const passive of [true, false]) {
      it(`${passive ? 'passive' : 'active'} mode: download and ls`, async () => {
        const out = tmpName('lftp');
        const m = mark();
        const r = await lftp(passive, [`get small.bin -o ${out}`, 'ls', 'cls -1 upload pub']);
        expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
        expect(sha256File(out)).toBe(ftp.files['small.bin']!.sha256);
        rmSync(out, { force: true });
        // `ls` prints the server's LIST lines; cls -1 only names.
        expect(r.stdout).toMatch(/ small\.bin\s*$/m);
        expect(r.stdout).toMatch(/ big\.bin\s*$/m);
        expect(r.stdout).toMatch(/ upload\s*$/m);
        expect(r.stdout).toContain('pub/readme.txt');
        const cmds = vsftpdCommands(m.vsftpd).map((c) => c.command);
        if (passive) expect(cmds.some((c) => c === 'PASV' || c === 'EPSV')).toBe(true);
        else {
          const active = cmds.filter((c) => /^(PORT|EPRT) /.test(c));
          expect(active.length).toBeGreaterThanOrEqual(3); // get, ls, cls
          expect(cmds.some((c) => c === 'PASV' || c === 'EPSV')).toBe(false);
        }
      }, 120_000);
    }
  });

  describe('curl uploads into upload/, verified on the server', () => {
    for (const mode of ['epsv', 'eprt'] as const) {
      it(`${mode === 'epsv' ? 'passive' : 'active'} (${mode.toUpperCase()}): 1 MiB and 100 MiB`, async () => {
        const m = mark();
        const s = await curlPut(upSmall.path, `small-${mode}.bin`, mode);
        expect(s.code, s.stderr).toBe(0);
        expect(sha256File(join(ftp.uploadDir, `small-${mode}.bin`))).toBe(upSmall.sha256);
        const b = await curlPut(upBig.path, `big-${mode}.bin`, mode, 150);
        expect(b.code, b.stderr).toBe(0);
        const stored = join(ftp.uploadDir, `big-${mode}.bin`);
        expect(statSync(stored).size).toBe(100 * MiB);
        expect(sha256File(stored)).toBe(upBig.sha256);
        rmSync(stored, { force: true });
        const stors = vsftpdCommands(m.vsftpd).filter((c) => c.command.startsWith('STOR '));
        expect(stors.map((c) => c.command)).toEqual([`STOR small-${mode}.bin`, `STOR big-${mode}.bin`]);
        expect(vsftpdCommands(m.vsftpd).some((c) => c.command.startsWith(mode === 'epsv' ? 'EPSV' : 'EPRT'))).toBe(true);
      }, 240_000);
    }
  });

  it('directory listing with curl shows the files (passive and active)', async () => {
    for (const mode of ['epsv', 'port'] as const) {
      const r = await topo.run('client', 'curl', ['-sS', '--fail', '--max-time', '30', ...modeArgs(mode), ftpUrl('')], { timeoutMs: 50_000 });
      expect(r.code, r.stderr).toBe(0);
      const names = r.stdout.split('\n').map((l) => l.trim().split(/\s+/).pop()).filter(Boolean);
      expect(names).toEqual(expect.arrayContaining(['small.bin', 'big.bin', 'pub', 'upload']));
      const nlst = await topo.run('client', 'curl', ['-sS', '--fail', '--max-time', '30', '--list-only', ...modeArgs(mode), ftpUrl('pub/')], { timeoutMs: 50_000 });
      expect(nlst.code, nlst.stderr).toBe(0);
      expect(nlst.stdout.split(/\r?\n/).filter(Boolean)).toEqual(['readme.txt']);
    }
  }, 120_000);

  it('ten transfers at once on separate control connections, mixed modes', async () => {
    const m = mark();
    const modes: Mode[] = ['epsv', 'pasv', 'eprt', 'port', 'epsv', 'pasv', 'eprt', 'port'];
    const curls = modes.map((mode) => curlGet('small.bin', mode, 90));
    const lftps = [true, false].map(async (passive) => {
      const out = tmpName('lftp10');
      const r = await lftp(passive, [`get small.bin -o ${out}`]);
      const sha = existsSync(out) ? sha256File(out) : undefined;
      rmSync(out, { force: true });
      return { code: r.code, stderr: r.stderr, sha };
    });
    const results = await Promise.all([...curls, ...lftps]);
    expect(results).toHaveLength(10);
    for (const r of results) {
      expect(r.code, r.stderr).toBe(0);
      expect(r.sha).toBe(ftp.files['small.bin']!.sha256);
    }
    // Ten control connections reached vsftpd (each from the inside relay).
    const connects = [...ftp.log().slice(m.vsftpd).matchAll(/CONNECT: Client "([^"]+)"/g)].map((x) => x[1]);
    expect(connects.length).toBeGreaterThanOrEqual(10);
    if (topo.isolated) expect(new Set(connects)).toEqual(new Set([topo.addr.inside]));
    const retrs = vsftpdCommands(m.vsftpd).filter((c) => c.command === 'RETR small.bin');
    expect(retrs).toHaveLength(10);
  }, 180_000);

  it('a bounce PORT/EPRT is refused with the rule\'s 501 and the control connection keeps working', async () => {
    const m = mark();
    const third = topo.isolated ? topo.addr.server : '10.201.1.99';
    const other = '10.201.1.99';
    const refuse = [
      `PORT ${third.split('.').join(',')},0,21`,       // make the server connect to its own FTP port
      `EPRT |1|${other}|8080|`,                        // a third host on the client's network
      'PORT 999,1,1,1,1,1',                            // not an address at all
    ];
    const r = await rawClient({ scenario: 'bounce', refuse, file: 'small.bin' });
    expect(r.ok, JSON.stringify(r, null, 1)).toBe(true);
    expect(r.refused.map((x: { reply: string }) => x.reply)).toEqual([
      '501 portside: PORT refused.',
      '501 portside: EPRT refused.',
      '501 portside: PORT refused.',
    ]);
    expect(r.noop).toMatch(/^200 /);
    expect(r.pwd).toMatch(/^257 "\/"/);
    expect(r.retr.sha256).toBe(ftp.files['small.bin']!.sha256);
    expect(r.retr.pasv.host).toBe(topo.addr.outside);
    expect(r.quit).toMatch(/^221 /);
    // Each refusal is logged once with its code, by the relay that refused it: the outside relay
    // when ftp.rules' `ESP part { check on }` has it re-run the checks ([0115]; the line then never
    // crosses the firewall), else the inside relay.
    const refusals = () => [...eventsSince(inside, m.inside, 'notice.refused'), ...eventsSince(outside, m.outside, 'notice.refused')];
    await waitFor(() => refusals().length >= 3, 'three notice.refused log lines');
    const rs = refusals();
    expect(rs, JSON.stringify(rs)).toHaveLength(3);
    for (const x of rs) expect(x.code).toBe('PS_ERR_RULE_REFUSED');
    const said = rs.map((x) => `${x.announced ?? ''} ${x.reason ?? ''}`);
    expect(said.some((t) => t.includes(third)), said.join('\n')).toBe(true);
    expect(said.some((t) => t.includes(other)), said.join('\n')).toBe(true);
    if (/ESP part\s*\{\s*check on/.test(readFileSync(join(RULES_DIR, 'ftp.rules'), 'utf8'))) {
      // docs/rules.md: with `check on` a refused notice never crosses the firewall.
      expect(eventsSince(outside, m.outside, 'notice.refused')).toHaveLength(3);
      expect(eventsSince(inside, m.inside, 'notice.found').map((j) => j.notice)).toEqual(['PASV']);
    }
    // Refused notices started nothing at the inside relay either.
    expect(eventsSince(inside, m.inside, 'notice.rewritten').map((j) => j.rewritten)).toEqual([`${r.retr.pasv.host}:${r.retr.pasv.port}`]);
    // Nothing refused reached the server: it saw NOOP, PWD, PASV and RETR but no PORT/EPRT at all.
    const cmds = vsftpdCommands(m.vsftpd).map((c) => c.command);
    expect(cmds).toEqual(expect.arrayContaining(['NOOP', 'PWD', 'PASV', 'RETR small.bin']));
    expect(cmds.filter((c) => /^(PORT|EPRT)/i.test(c))).toEqual([]);
    // And the outside relay was never asked to connect to the third host.
    const connects = eventsSince(outside, m.outside, 'outside-connect.req');
    expect(connects).toEqual([]);
  }, 120_000);

  it('a notice split byte by byte (EPRT and PORT) is found, rewritten, and the file arrives', async () => {
    const m = mark();
    const r = await rawClient({ scenario: 'split', listenHost: topo.addr.client, file: 'small.bin', delayMs: 3, alsoPort: true });
    expect(r.ok, JSON.stringify(r, null, 1)).toBe(true);
    expect(r.transfers).toHaveLength(2);
    for (const t of r.transfers) {
      expect(t.reply).toMatch(/^200 /);
      expect(t.bytes).toBe(1 * MiB);
      expect(t.sha256).toBe(ftp.files['small.bin']!.sha256);
      // The data connection came from the outside relay, on the client's own network.
      expect(t.dataFrom).toBe(topo.addr.outside);
    }
    for (const t of r.transfers) {
      const f = await waitSince(inside, m.inside, 'notice.found', (j) => j.notice === t.kind);
      expect(f.announced).toBe(`${topo.addr.client}:${t.listenPort}`);
    }
    const cmds = vsftpdCommands(m.vsftpd).map((c) => c.command);
    const eprt = cmds.find((c) => c.startsWith('EPRT '));
    const port = cmds.find((c) => c.startsWith('PORT '));
    expect(eprt).toMatch(new RegExp(`^EPRT \\|1\\|${topo.addr.inside.replace(/\./g, '\\.')}\\|\\d+\\|$`));
    expect(port).toMatch(new RegExp(`^PORT ${topo.addr.inside.split('.').join(',')},\\d+,\\d+$`));
  }, 120_000);

  it('an over-long notice line resets that control connection only (PS_ERR_LINE_TOO_LONG)', async () => {
    const maxLine = Number(/max-line\s+(\d+)/.exec(readFileSync(join(RULES_DIR, 'ftp.rules'), 'utf8'))![1]);
    expect(maxLine).toBeGreaterThan(0);
    const m = mark();
    const longLine = `PORT ${'1,'.repeat(maxLine)}1`;
    expect(longLine.length).toBeGreaterThan(maxLine);
    const r = await rawClient({ scenario: 'longline', longLine, file: 'small.bin' });
    expect(r.ok, JSON.stringify(r, null, 1)).toBe(true);
    // B was reset without any reply to the line; A, open at the same time, kept working.
    expect(r.bEnded).toEqual({ how: 'error', code: 'ECONNRESET' });
    expect(r.bAfter).toEqual([]);
    expect(r.noop).toMatch(/^200 /);
    expect(r.retr.sha256).toBe(ftp.files['small.bin']!.sha256);
    // Logged by whichever relay inspected it first (the outside one with `ESP part { check on }`).
    const tooLong = () => [inside, outside].flatMap((p) => eventsSince(p, p === inside ? m.inside : m.outside, 'notice.refused')).filter((j) => j.code === 'PS_ERR_LINE_TOO_LONG');
    await waitFor(() => tooLong().length > 0, 'a PS_ERR_LINE_TOO_LONG log line');
    expect(String(tooLong()[0]!.reason)).toMatch(/max-line/);
    // The server never got the line (nor any part of it).
    expect(vsftpdCommands(m.vsftpd).filter((c) => c.command.startsWith('PORT'))).toEqual([]);
    // The session survived: a fresh client still gets a file.
    const after = await curlGet('small.bin', 'eprt');
    expect(after.code, after.stderr).toBe(0);
    expect(after.sha).toBe(ftp.files['small.bin']!.sha256);
    expect(eventsSince(inside, m.inside, 'session.closed')).toEqual([]);
  }, 120_000);

  it('the FTP server only ever saw intranet addresses (the inside relay\'s) in PORT and EPRT', () => {
    const all = vsftpdCommands();
    const active = all.filter((c) => /^(PORT|EPRT) /i.test(c.command));
    // Every active-mode test above went through here: curl EPRT/PORT, lftp, uploads, raw client.
    expect(active.length).toBeGreaterThanOrEqual(15);
    for (const { client, command } of active) {
      expect(client).toBe(topo.addr.inside);
      const host = command.startsWith('EPRT')
        ? command.split(command[5]!)[2]
        : command.slice(5).split(',').slice(0, 4).join('.');
      expect(host, command).toBe(topo.addr.inside);
    }
    if (topo.isolated) {
      // Nothing from the internet side appears anywhere in the server's log, not even in replies.
      const log = ftp.log();
      for (const a of [topo.addr.client, topo.addr.outside, topo.addr.fwExternal, '10.201.1.99']) expect(log).not.toContain(`"${a}"`);
      expect(log).not.toMatch(/10,201,1,\d+/);
      expect(log).not.toMatch(/\|10\.201\.1\.\d+\|/);
      // Every control connection the server saw came from the inside relay.
      const clients = new Set([...log.matchAll(/Client "([^"]+)"/g)].map((x) => x[1]));
      expect(clients).toEqual(new Set([topo.addr.inside]));
    }
  });
});
