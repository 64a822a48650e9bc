// The client side end to end (issue 4), nothing simulated: real Dante with `socksmethod: username`
// and real system users as the firewall that authenticates the client (patent steps 603-606), the
// relays and the client agent as built (dist/cli.js), real vsftpd and an HTTP server on the
// intranet, real unmodified curl in the client namespace talking to the agent's SOCKS5 port.
//
//   client ns: curl ─ portside client ══ one session, keys per connection ══> outside ns: portside outside
//                                                                      │ (relays user/password to danted's
//                                                                      │  external leg, holds "established")
//   inside ns: portside inside ─ session through danted ───────────────┘
//   server ns: vsftpd :21, HTTP :8080
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bestTopology, startEcho, tcpProbe, type Topology } from '../harness/netns.js';
import { createSystemUser, startDante, type Dante, type SystemUser } from '../harness/dante.js';
import { startVsftpd, sha256File, writeRandomFile, type Vsftpd } from '../harness/vsftpd.js';
import { freePort, runOk, stopAll, type Proc } from '../harness/procs.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(REPO, 'dist', 'cli.js');
const RULES_DIR = join(REPO, 'rules');
const MiB = 1024 * 1024;

describe('client agent: curl through portside client, firewall-delegated authentication', () => {
  let topo: Topology;
  let work: string;
  const netnsDirs: string[] = [];
  let dante: Dante;
  let ftp: Vsftpd;
  let http: Proc;
  let outside: Proc;
  let inside: Proc;
  let agent: Proc;
  const users: SystemUser[] = [];
  let alice: SystemUser;
  let bob: SystemUser;
  let fingerprint: string;
  let httpPort: number;
  let clientPort: number;
  let socksPort: number;
  let forwardPort: number;
  let direct: { port: number };
  let fwPort: number;
  const files: Record<string, string> = {};

  const agentEnv = (password: string) => ({ ...process.env, PORTSIDE_PASSWORD: password });

  function clientYaml(name: string, o: { socks: number; outside?: string; user: string; forwards?: string[]; routes?: string[] }): string {
    const file = join(work, `${name}.yaml`);
    writeFileSync(file, [
      `outside: ${o.outside ?? `${topo.addr.outside}:${clientPort}`}`,
      `outside_fingerprint: "${fingerprint}"`,
      `username: ${o.user}`,
      `socks5: 127.0.0.1:${o.socks}`,
      ...(o.forwards ? ['forwards:', ...o.forwards] : []),
      ...(o.routes ? ['routes:', ...o.routes] : []),
      'connect_timeout_ms: 8000',
      'log_level: debug',
    ].join('\n') + '\n');
    return file;
  }

  async function startAgent(name: string, file: string, password: string): Promise<Proc> {
    const p = topo.spawn('client', process.execPath, [CLI, 'client', '--config', file], { name, cwd: work, env: agentEnv(password) });
    await p.waitForEvent('agent.ready', 15_000);
    return p;
  }

  /** curl through a SOCKS5 port in the client namespace; SHA-256 of what arrived. */
  async function curl(url: string, args: string[] = [], maxTime = 60): Promise<{ code: number; stderr: string; sha?: string }> {
    const out = join(work, `dl-${Math.random().toString(36).slice(2)}`);
    const r = await topo.run('client', 'curl', ['-sS', '--fail', '--max-time', String(maxTime), ...args, '-o', out, url], { timeoutMs: (maxTime + 15) * 1000 });
    const sha = existsSync(out) ? sha256File(out) : undefined;
    rmSync(out, { force: true });
    return { code: r.code, stderr: r.stderr, sha };
  }
  /** The (before+1)-th `event` line of p, once it has arrived. */
  async function nextEvent(p: Proc, event: string, before: number): Promise<Record<string, unknown>> {
    await p.waitForLine(() => p.events(event).length > before, 10_000);
    return p.events(event)[before]!;
  }
  const viaAgent = (port = socksPort) => ['--socks5-hostname', `127.0.0.1:${port}`];

  beforeAll(async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} missing: run \`npm run build\` first`);
    work = mkdtempSync(join(tmpdir(), 'ps-client-e2e-'));
    topo = await bestTopology('cli');
    if (!topo.isolated) throw new Error('this test needs network namespaces (root, ip netns)');
    const sessionPort = 7000;
    clientPort = 7100;
    socksPort = await freePort();
    forwardPort = socksPort + 1;
    httpPort = 8080;

    // Three real system users: one for the inside relay's own session dial, two clients.
    for (let i = 0; i < 3; i++) users.push(await createSystemUser());
    const [relayUser] = users as [SystemUser, SystemUser, SystemUser];
    alice = users[1]!;
    bob = users[2]!;

    // An intranet name: resolvable only by the firewall and the inside relay (ip netns exec
    // mounts /etc/netns/NS/hosts over /etc/hosts), not on the client machine.
    for (const role of ['firewall', 'inside'] as const) {
      const d = `/etc/netns/${topo.ns[role]}`;
      mkdirSync(d, { recursive: true });
      netnsDirs.push(d);
      writeFileSync(join(d, 'hosts'), `127.0.0.1 localhost\n::1 localhost\n${topo.addr.server} www.intra ftp.intra\n`);
    }

    // Dante answers on both legs: the intranet (the inside relay's session) and the internet
    // (the outside relay asking it to authenticate clients, 603-605). Its outgoing connections
    // go out of the leg the route says.
    fwPort = 1080;
    dante = await startDante({
      netns: topo.ns.firewall,
      // Both legs (danted's `internal:` on 0.0.0.0); nftables below still closes the internet leg to all but the outside relay.
      internalAddress: '0.0.0.0',
      externalAddress: topo.addr.fwExternal,
      port: fwPort,
      socksmethod: 'username',
      to: [`${topo.addr.outside}/32 port = ${sessionPort}`, `${topo.nets.intranet} port = 21`, `${topo.nets.intranet} port = ${httpPort}`],
    });
    // The firewall lets the outside relay (only it) reach its SOCKS port from the internet leg.
    await runOk('ip', ['netns', 'exec', topo.ns.firewall!, 'nft', 'insert', 'rule', 'inet', 'ps_fw', 'input',
      'iifname', 'ext0', 'ip', 'saddr', topo.addr.outside, 'tcp', 'dport', String(fwPort), 'accept']);

    ftp = await startVsftpd({ netns: topo.ns.server, listenAddress: topo.addr.server, port: 21, files: [{ name: 'small.bin', size: 1 * MiB }, { name: 'mid.bin', size: 20 * MiB }] });
    const www = join(work, 'www');
    mkdirSync(www);
    files.one = writeRandomFile(join(www, 'one.bin'), 4 * MiB);
    files.big = writeRandomFile(join(www, 'big.bin'), 96 * MiB);
    http = topo.spawn('server', 'python3', ['-m', 'http.server', String(httpPort), '--bind', topo.addr.server, '--directory', www], { name: 'http@server' });
    await topo.waitListening('server', httpPort, { address: topo.addr.server, proc: http });
    direct = await startEcho(topo, 'outside', topo.addr.outside, 8000);

    await runOk(process.execPath, [CLI, 'keygen', '--out', join(work, 'branch.key')]);
    const kg = await runOk(process.execPath, [CLI, 'keygen', '--cert', '--out-cert', join(work, 'client-port.pem'), '--out-key', join(work, 'client-port.key')]);
    fingerprint = kg.stdout.trim();
    expect(fingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);

    writeFileSync(join(work, 'outside.yaml'), [
      `listen: ${topo.addr.outside}:${sessionPort}`,
      'insides:',
      '  - name: branch',
      '    key_file: branch.key',
      'allow:',
      `  hosts: [${topo.addr.outside}]`,
      '  ports: ["2121"]',
      `  from: ["${topo.nets.internet}"]`,
      'clients:',
      `  listen: ${topo.addr.outside}:${clientPort}`,
      '  cert_file: client-port.pem',
      '  key_file: client-port.key',
      '  auth: firewall',
      '  firewall:',
      `    socks5: ${topo.addr.fwExternal}:${fwPort}`,
      '  allow:',
      `    destinations: ["${topo.addr.server}:21", "${topo.addr.server}:${httpPort}", "www.intra:${httpPort}", "ftp.intra:21"]`,
      'log_level: debug',
    ].join('\n') + '\n');
    writeFileSync(join(work, 'inside.yaml'), [
      'name: branch',
      'key_file: branch.key',
      `outside: ${topo.addr.outside}:${sessionPort}`,
      'firewall:',
      `  socks5: ${topo.addr.fwInternal}:${fwPort}`,
      `  username: ${relayUser.name}`,
      `  password: "${relayUser.password}"`,
      'services:',
      '  - name: ftp',
      `    listen: ${topo.addr.outside}:2121`,
      `    target: ${topo.addr.server}:21`,
      '    rules: ftp',
      `reach: ["${topo.nets.intranet}", "*.intra"]`,
      `rules_dir: ${RULES_DIR}`,
      'log_level: info',
    ].join('\n') + '\n');
    const aliceCfg = clientYaml('alice', {
      socks: socksPort,
      user: alice.name,
      forwards: [`  - {listen: "127.0.0.1:${forwardPort}", to: "${topo.addr.server}:${httpPort}"}`],
      routes: [`  - {match: "${topo.addr.outside}:8000", via: direct}`],
    });
    for (const f of ['outside.yaml', 'inside.yaml']) expect((await runOk(process.execPath, [CLI, 'check', '--config', join(work, f)])).stdout).toContain('ok');
    expect((await runOk(process.execPath, [CLI, 'check', '--config', aliceCfg], { env: agentEnv('x') })).stdout).toContain('ok (client agent)');

    outside = topo.spawn('outside', process.execPath, [CLI, 'outside', '--config', join(work, 'outside.yaml')], { name: 'portside-outside', cwd: work });
    await outside.waitForEvent('clients.listening', 15_000);
    inside = topo.spawn('inside', process.execPath, [CLI, 'inside', '--config', join(work, 'inside.yaml')], { name: 'portside-inside', cwd: work });
    await inside.waitForEvent('session.established', 20_000);
    await outside.waitForEvent('session.established', 10_000);
    agent = await startAgent('agent-alice', aliceCfg, alice.password);
  }, 180_000);

  afterAll(async () => {
    await ftp?.stop();
    await dante?.stop();
    await stopAll();
    for (const u of users) await u.remove();
    await topo?.destroy();
    for (const d of netnsDirs) rmSync(d, { recursive: true, force: true });
    if (work) rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('curl through the agent SOCKS5 port reaches an intranet HTTP server; the firewall authenticated the user', async () => {
    const r = await curl(`http://${topo.addr.server}:${httpPort}/one.bin`, viaAgent());
    expect(r.code, `${r.stderr}\n${agent.tail()}\n${outside.tail()}`).toBe(0);
    expect(r.sha).toBe(files.one);
    const ev = await outside.waitForEvent('client.connected', 10_000, (j) => j.target === `${topo.addr.server}:${httpPort}`);
    expect(ev.user).toBe(alice.name);
    // Dante saw the outside relay authenticate as alice and connect to the server (604).
    expect(dante.log()).toContain(alice.name);
    expect(outside.events('firewall.established').length).toBeGreaterThan(0);
  });

  it('a forward carries a connection to the intranet; on a session that has the relay\'s share, curl\'s request leaves as early data', async () => {
    for (let i = 0; i < 2; i++) {
      const r = await curl(`http://127.0.0.1:${forwardPort}/one.bin`);
      expect(r.code, r.stderr).toBe(0);
      expect(r.sha).toBe(files.one);
    }
    const sealed = agent.events('agent.sealed').filter((e) => e.target === `${topo.addr.server}:${httpPort}`);
    expect(sealed.some((e) => e.early === true), agent.tail()).toBe(true);
  });

  it('FTP passive mode (EPSV and PASV) through the agent, data attached to the outside relay listener', async () => {
    for (const extra of [[], ['--disable-epsv']]) {
      const r = await curl(`ftp://${topo.addr.server}/mid.bin`, [...viaAgent(), ...extra]);
      expect(r.code, `${r.stderr}\n${agent.tail()}\n${outside.tail()}\n${inside.tail()}`).toBe(0);
      expect(r.sha).toBe(ftp.files['mid.bin']!.sha256);
    }
    expect(outside.events('client.passive_attached').length).toBeGreaterThanOrEqual(2);
    const small = await curl(`ftp://${topo.addr.server}/small.bin`, viaAgent());
    expect(small.sha).toBe(ftp.files['small.bin']!.sha256);
  });

  it('FTP active mode (PORT) through the agent SOCKS5 port: the outside relay connects back through the agent to curl\'s listener', async () => {
    const before = agent.events('agent.back_connected').length;
    const r = await curl(`ftp://${topo.addr.server}/mid.bin`, [...viaAgent(), '-P', topo.addr.client, '--disable-eprt']);
    expect(r.code, `${r.stderr}\n${agent.tail()}\n${outside.tail()}\n${inside.tail()}`).toBe(0);
    expect(r.sha).toBe(ftp.files['mid.bin']!.sha256);
    // 619-622: the outside relay dialled the agent's back-connect port, the agent handed the
    // connection to curl's own listener on the client machine's address.
    const ev = await nextEvent(agent, 'agent.back_connected', before);
    expect(ev.target).toMatch(new RegExp(`^${topo.addr.client.replace(/\./g, '\\.')}:\\d+$`));
    expect(outside.events('outside-connect.done').some((e) => e.via === 'agent' && e.result === 'OK')).toBe(true);
  });

  async function hooked(program: string[], maxTime = 60, runArgs: string[] = []): Promise<{ code: number; stderr: string; sha?: string; out: string }> {
    const out = join(work, `hook-${Math.random().toString(36).slice(2)}`);
    const r = await topo.run('client', process.execPath, [CLI, 'run', '--socks', `127.0.0.1:${socksPort}`, ...runArgs, '--', ...program.map((a) => a.replace('@OUT@', out))], { timeoutMs: (maxTime + 15) * 1000 });
    const sha = existsSync(out) ? sha256File(out) : undefined;
    rmSync(out, { force: true });
    return { code: r.code, stderr: r.stderr, sha, out };
  }

  it('FTP active mode under the hook: `portside run -- curl -P -`, the program\'s own listener receives the data (PORT and EPRT)', async () => {
    for (const extra of [['--disable-eprt'], []]) {
      const before = agent.events('agent.back_connected').length;
      const r = await hooked(['curl', '-sS', '--fail', '--max-time', '60', '-P', '-', ...extra, '-o', '@OUT@', `ftp://${topo.addr.server}/mid.bin`]);
      expect(r.code, `${r.stderr}\n${agent.tail()}\n${outside.tail()}\n${inside.tail()}`).toBe(0);
      expect(r.sha).toBe(ftp.files['mid.bin']!.sha256);
      // curl announced the local end of its (hooked) control connection: the loopback.
      const ev = await nextEvent(agent, 'agent.back_connected', before);
      expect(ev.target).toMatch(/^127\.0\.0\.1:\d+$/);
    }
  });

  it('an intranet name the client machine cannot resolve: `portside run --name \'*.intra\' --` curl and lftp get a stand-in address and the inside relay resolves the name', async () => {
    const plain = await topo.run('client', 'curl', ['-sS', '--max-time', '10', '-o', '/dev/null', `http://www.intra:${httpPort}/one.bin`], { timeoutMs: 20_000 });
    expect(plain.code, plain.stderr).toBe(6); // curl: could not resolve host
    const r = await hooked(['curl', '-sS', '--fail', '--max-time', '60', '-w', '%{remote_ip}', '-o', '@OUT@', `http://www.intra:${httpPort}/one.bin`], 60, ['--name', '*.intra']);
    expect(r.code, `${r.stderr}\n${agent.tail()}\n${outside.tail()}\n${inside.tail()}`).toBe(0);
    expect(r.sha).toBe(files.one);
    const ev = await outside.waitForEvent('client.connected', 10_000, (j) => j.target === `www.intra:${httpPort}`);
    expect(ev.user).toBe(alice.name);
    // lftp resolves in a child process and connects in its parent: the name table is shared.
    const l = await hooked(['lftp', '-c', `set net:max-retries 1; set net:timeout 20; get ftp://ftp.intra/small.bin -o @OUT@`], 60, ['--name', '*.intra']);
    expect(l.code, `${l.stderr}\n${agent.tail()}\n${outside.tail()}\n${inside.tail()}`).toBe(0);
    expect(l.sha).toBe(ftp.files['small.bin']!.sha256);
  });

  it('FTP active mode under the hook with lftp', async () => {
    const before = agent.events('agent.back_connected').length;
    const r = await hooked(['lftp', '-c', `set ftp:passive-mode off; set net:max-retries 1; set net:timeout 20; get ftp://${topo.addr.server}/small.bin -o @OUT@`]);
    expect(r.code, `${r.stderr}\n${agent.tail()}\n${outside.tail()}`).toBe(0);
    expect(r.sha).toBe(ftp.files['small.bin']!.sha256);
    expect(agent.events('agent.back_connected').length).toBeGreaterThan(before);
  });

  it('a back-connect to an address that is not the agent machine\'s own is refused by the agent; the control connection survives', async () => {
    // curl announces another host's address (the outside relay's) in PORT: the agent refuses to
    // connect there, the server's data connection never happens, curl fails cleanly.
    const before = agent.events('agent.back_refused').length;
    const r = await curl(`ftp://${topo.addr.server}/small.bin`, [...viaAgent(), '-P', topo.addr.outside, '--disable-eprt'], 30);
    expect(r.code).not.toBe(0);
    const ev = await nextEvent(agent, 'agent.back_refused', before);
    expect(ev.reason).toBe('not an address of this machine');
    expect(ev.target).toMatch(new RegExp(`^${topo.addr.outside.replace(/\./g, '\\.')}:`));
  });

  it('a wrong password is refused by the firewall while another user transfers', async () => {
    const bad = await startAgent('agent-bob', clientYaml('bob', { socks: socksPort + 2, user: bob.name }), 'not-the-password');
    const bigDone = curl(`http://${topo.addr.server}:${httpPort}/big.bin`, viaAgent(), 120);
    await outside.waitForEvent('client.connected', 10_000, (j) => j.user === alice.name, true);
    const refused = await curl(`http://${topo.addr.server}:${httpPort}/one.bin`, viaAgent(socksPort + 2));
    // curl's verdict for a SOCKS5 server that refuses the connection (reply 2).
    expect(refused.code).toBe(97);
    const ev = await bad.waitForEvent('agent.connect_failed', 10_000);
    expect(ev.code).toBe('PS_ERR_FIREWALL_AUTH');
    expect(String(ev.reason)).toMatch(/firewall refused user/);
    await outside.waitForEvent('client.refused', 10_000, (j) => j.code === 'PS_ERR_FIREWALL_AUTH' && j.user === bob.name);
    const big = await bigDone;
    expect(big.code, big.stderr).toBe(0);
    expect(big.sha).toBe(files.big);
    // Bob with the right password works (same firewall, same relays).
    await bad.stop();
    const good = await startAgent('agent-bob2', clientYaml('bob2', { socks: socksPort + 3, user: bob.name }), bob.password);
    const ok = await curl(`http://${topo.addr.server}:${httpPort}/one.bin`, viaAgent(socksPort + 3));
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.sha).toBe(files.one);
    await good.stop();
  });

  it('a destination the policy forbids is refused with its own code', async () => {
    const r = await curl(`http://${topo.addr.server}:22/`, viaAgent(), 20);
    expect(r.code).toBe(97);
    const ev = await agent.waitForEvent('agent.connect_failed', 10_000, (j) => j.target === `${topo.addr.server}:22`);
    expect(ev.code).toBe('PS_ERR_NOT_ALLOWED');
    await outside.waitForEvent('client.refused', 10_000, (j) => j.code === 'PS_ERR_NOT_ALLOWED');
  });

  it('a destination routed direct bypasses portside', async () => {
    const before = outside.lines.length;
    const r = await tcpProbe(topo, 'client', { host: topo.addr.outside, port: direct.port, send: 'direct\n', socks: { host: '127.0.0.1', port: socksPort }, timeoutMs: 5000 });
    expect(r.ok, JSON.stringify(r)).toBe(true);
    // The target saw the client machine itself, not the outside relay.
    expect(r.received).toContain(`peer=${topo.addr.client}`);
    expect(outside.lines.slice(before).some((l) => l.json?.part === 'clients')).toBe(false);
  });

  it('an unreachable outside relay is a clear error, quickly, and nothing hangs', async () => {
    const p = await startAgent('agent-nowhere', clientYaml('nowhere', { socks: socksPort + 4, user: alice.name, outside: `${topo.addr.outside}:${clientPort + 1}` }), alice.password);
    const r = await curl(`http://${topo.addr.server}:${httpPort}/one.bin`, viaAgent(socksPort + 4), 20);
    expect(r.code).toBe(97);
    const ev = await p.waitForEvent('agent.connect_failed', 10_000);
    expect(ev.code).toBe('PS_ERR_OUTSIDE_UNREACHABLE');
    await p.stop();
  });

  it('the relays kept no user database: passwords appear in no log', async () => {
    for (const p of [outside, inside, agent]) expect(p.output()).not.toContain(alice.password);
    expect(readFileSync(join(work, 'outside.yaml'), 'utf8')).not.toContain(alice.name);
  });
});
