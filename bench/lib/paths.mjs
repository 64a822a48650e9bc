// The table of paths the bench measures. To add a row, append an entry:
//   { name, label, needs: [binaries], async setup(ctx) → { port, pids, teardown? } }
// `port` is where the load generator connects (127.0.0.1); it must end up at
// ctx.targetPort. `pids` are the relay processes whose CPU and RSS are charged
// to the path (their descendants are included automatically). Start processes
// with ctx.start(): the runner stops everything started that way after the row,
// also when setup fails, so setup need not clean up after itself.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, mkdirSync, writeFileSync, copyFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, waitPort } from './proc.mjs';

const SSHD = '/usr/sbin/sshd'; // sshd re-execs itself and insists on an absolute path
const CIPHER = 'aes128-gcm@openssh.com';

async function startSshd(ctx) {
  mkdirSync('/run/sshd', { recursive: true }); // privilege separation directory
  const d = ctx.dir;
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(d, 'host_key')]);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(d, 'client_key')]);
  copyFileSync(join(d, 'client_key.pub'), join(d, 'authorized_keys'));
  chmodSync(join(d, 'authorized_keys'), 0o600);
  const port = await freePort();
  const cfg = join(d, 'sshd_config');
  writeFileSync(cfg, [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${join(d, 'host_key')}`,
    `PidFile ${join(d, 'sshd.pid')}`,
    `AuthorizedKeysFile ${join(d, 'authorized_keys')}`,
    'PermitRootLogin prohibit-password',
    'AllowUsers root@127.0.0.1', // root, by key, from loopback only
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'UsePAM no',
    'StrictModes no',
    'AllowTcpForwarding yes',
    'GatewayPorts no',
    'X11Forwarding no',
    'PermitTTY no',
    'MaxStartups 100:30:200',
    `Ciphers ${CIPHER}`,
    'LogLevel ERROR',
    '',
  ].join('\n'));
  const child = ctx.start(SSHD, ['-D', '-e', '-f', cfg], 'sshd');
  await waitPort(port, { child });
  return { port, pid: child.pid, key: join(d, 'client_key') };
}

function sshArgs(sshd, forward) {
  return [
    '-N', '-T', '-F', '/dev/null',
    '-c', CIPHER,
    '-i', sshd.key, '-p', String(sshd.port),
    '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-o', 'ExitOnForwardFailure=yes',
    '-o', 'Compression=no', '-o', 'LogLevel=ERROR',
    ...forward,
    'root@127.0.0.1',
  ];
}

/**
 * The node flags and environment the `portside` command's own shebang gives (src/cli.ts:
 * `#!/usr/bin/env -S [VAR=value…] node [flags…]`), so the bench runs what users run;
 * PORTSIDE_BENCH_NODE_FLAGS adds more (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof").
 */
function relayLaunch(cli) {
  const words = readFileSync(cli, 'utf8').split('\n', 1)[0].replace(/^#!\S*env -S /, '').split(/\s+/).filter(Boolean);
  const at = words.indexOf('node');
  if (at < 0) throw new Error(`${cli}: unexpected shebang`);
  const env = Object.fromEntries(words.slice(0, at).map((w) => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)]));
  const flags = [...words.slice(at + 1), ...(process.env.PORTSIDE_BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean)];
  return { env: { ...process.env, ...env }, flags };
}

/** Start `portside ARGS…` as a relay process of this run. */
function startRelay(ctx, cli, args, name, onLine) {
  const { env, flags } = relayLaunch(cli);
  return ctx.start(process.execPath, [...flags, cli, ...args], name, onLine, env);
}

function portsideCli(ctx) {
  const cli = join(ctx.root, 'dist', 'cli.js');
  if (!existsSync(cli)) throw new Error('dist/cli.js not found: the portside CLI is not built yet');
  return cli;
}

/**
 * outside + inside relays per CONTEXT.md; optional SOCKS5 firewall address.
 * `service` overrides the one service: { target (port), rules (e.g. 'ftp'), rulesDir },
 * or with { none: true, outsideExtra, insideExtra } there is no service (extra config
 * lines instead) and setup waits for `session.established`.
 */
export async function startPortside(ctx, firewall, service = {}) {
  const cli = portsideCli(ctx);
  const d = ctx.dir;
  const keyFile = join(d, 'bench.key');
  execFileSync(process.execPath, [cli, 'keygen', '--out', keyFile], { stdio: 'pipe' });
  const outsidePort = await freePort();
  const servicePort = await freePort();
  const lvl = ctx.options.portsideLogLevel;
  writeFileSync(join(d, 'outside.yaml'), [
    `listen: 127.0.0.1:${outsidePort}`,
    'insides:',
    '  - name: bench',
    `    key_file: ${keyFile}`,
    'allow:',
    '  hosts: [127.0.0.1]',
    '  ports: ["1024-65535"]',
    '  from: ["127.0.0.0/8"]',
    ...(service.outsideExtra ?? []),
    `log_level: ${lvl}`,
    '',
  ].join('\n'));
  writeFileSync(join(d, 'inside.yaml'), [
    'name: bench',
    `key_file: ${keyFile}`,
    `outside: 127.0.0.1:${outsidePort}`,
    ...(firewall ? ['firewall:', `  socks5: 127.0.0.1:${firewall}`] : []),
    ...(service.none ? [] : [
      'services:',
      '  - name: bench',
      `    listen: 127.0.0.1:${servicePort}`,
      `    target: 127.0.0.1:${service.target ?? ctx.targetPort}`,
    ]),
    ...(service.rules ? [`    rules: ${service.rules}`, `rules_dir: ${service.rulesDir ?? join(ctx.root, 'rules')}`] : []),
    ...(service.insideExtra ?? []),
    `log_level: ${lvl}`,
    '',
  ].join('\n'));

  // The inside relay re-dials with backoff, so a dial failure is not fatal:
  // remember the last problem for the timeout message instead.
  let lastProblem = '';
  const waiters = [];
  const waitEvent = (name, match, who) => new Promise((resolve, reject) => {
    waiters.push({ name, match, resolve, reject, who });
  });
  const onLine = (who) => (line) => {
    let ev;
    try { ev = JSON.parse(line); } catch { return; }
    for (const w of waiters) if (ev.event === w.name && w.match(ev)) w.resolve(ev);
    if (ev.event === 'session.dial_failed' || (ev.code && ev.level >= 50)) {
      lastProblem = `${who}: ${ev.event ?? 'error'} ${ev.code ?? ''} ${ev.msg ?? ''}`.trim();
    }
  };
  const exited = (who, c) => new Promise((_, reject) => c.on('exit', (code) => reject(new Error(
    `portside ${who} exited with code ${code}${lastProblem ? ` (${lastProblem})` : ''}; see ${ctx.logPath(who)}`))));
  const within = (p, ms, what) => {
    let timer;
    return Promise.race([p, new Promise((_, rej) => {
      timer = setTimeout(() => rej(new Error(`no ${what} event within ${ms / 1000} s${lastProblem ? ` (last: ${lastProblem})` : ''}`)), ms);
    })]).finally(() => clearTimeout(timer));
  };
  const outside = startRelay(ctx, cli, ['outside', '--config', join(d, 'outside.yaml')], 'outside', onLine('outside'));
  const outsideDied = exited('outside', outside);
  outsideDied.catch(() => {});
  const infoLogged = ['trace', 'debug', 'info'].includes(lvl);
  await within(Promise.race([
    infoLogged
      ? waitEvent('outside.listening', (ev) => Number(ev.port) === outsidePort)
      : waitPort(outsidePort, { child: outside, timeoutMs: 20000 }), // the log level hides the event
    outsideDied,
  ]), 20000, 'outside.listening');
  const inside = startRelay(ctx, cli, ['inside', '--config', join(d, 'inside.yaml')], 'inside', onLine('inside'));
  const insideDied = exited('inside', inside);
  insideDied.catch(() => {});
  await within(Promise.race([
    service.none
      ? waitEvent('session.established', () => true) // needs info; the client row forces it
      : infoLogged
        ? waitEvent('service.listening', (ev) => Number(ev.port) === servicePort)
        : waitPort(servicePort, { timeoutMs: 20000 }),
    outsideDied,
    insideDied,
  ]), 20000, service.none ? 'session.established' : 'service.listening');
  return { port: servicePort, pids: [outside.pid, inside.pid], outsidePid: outside.pid };
}

/** danted in the foreground; with `username`, SOCKS5 username/password against the system's users. */
async function startDante(ctx, username) {
  const d = ctx.dir;
  const dport = await freePort();
  writeFileSync(join(d, 'danted.conf'), [
    `logoutput: ${join(d, 'dante.log')}`,
    `internal: 127.0.0.1 port = ${dport}`,
    // Dante binds each outgoing connection's address before connecting: from 127.0.0.1, where
    // the idle rows hold ~30 000 ports (and their TIME_WAITs), bind() runs out of ports and
    // Dante answers "network unreachable". 127.0.0.2 (also loopback) has a port space of its own.
    'external: 127.0.0.2',
    'clientmethod: none',
    `socksmethod: ${username ? 'username' : 'none'}`,
    'user.privileged: root', // username checks read /etc/shadow
    'user.unprivileged: nobody',
    'client pass {',
    '  from: 127.0.0.0/8 to: 0.0.0.0/0',
    '  log: error',
    '}',
    'socks pass {',
    '  from: 127.0.0.0/8 to: 0.0.0.0/0',
    '  command: connect',
    '  log: error',
    ...(username ? ['  socksmethod: username'] : []),
    '}',
    '',
  ].join('\n'));
  // foreground (no -D), so the PID we hold is danted's own
  const dante = ctx.start('danted', ['-f', join(d, 'danted.conf'), '-p', join(d, 'danted.pid')], 'danted');
  await waitPort(dport, { child: dante });
  return { port: dport, pid: dante.pid };
}

/**
 * A throw-away system user (no home, no shell) for danted's username method; removed by
 * remove(), or at exit if the bench dies first. The only change the bench makes to the
 * machine besides /run/sshd, and only for the portside-client-dante row.
 */
async function createSystemUser() {
  const name = `psb${process.pid.toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  const password = `pw-${Math.random().toString(36).slice(2, 12)}`;
  execFileSync('useradd', ['-M', '-N', '-s', '/usr/sbin/nologin', name], { stdio: 'pipe' });
  let removed = false;
  const remove = () => {
    if (removed) return;
    removed = true;
    process.off('exit', remove);
    try { execFileSync('userdel', [name], { stdio: 'pipe' }); } catch { /* already gone */ }
  };
  process.on('exit', remove);
  try {
    // SHA-512 crypt (5000 rounds), not Debian 12's default yescrypt: danted checks the password
    // with crypt() on every connection, and yescrypt costs ~100 ms each here, which would measure
    // the password hash rather than the relays (bench/README.md).
    execFileSync('chpasswd', ['-c', 'SHA512', '-s', '5000'], { input: `${name}:${password}\n`, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    remove();
    throw e;
  }
  return { name, password, remove: async () => remove() };
}

/**
 * Issue 4's chain: `portside client` agent (a local forward) → the outside relay's client
 * port (one client session carrying every connection as a stream, each with a fresh X25519
 * exchange: per-connection keys; users-file or firewall authentication) → the relays' session
 * → inside relay (`reach:`) → target.
 */
async function startPortsideClient(ctx, firewall = null) {
  const cli = portsideCli(ctx);
  const d = ctx.dir;
  const run = (args, env) => execFileSync(process.execPath, [cli, ...args], { stdio: 'pipe', env: { ...process.env, ...env } }).toString().trim();
  const fingerprint = run(['keygen', '--cert', '--out-cert', join(d, 'client-port.pem'), '--out-key', join(d, 'client-port.key')]);
  const user = firewall?.user ?? 'bench';
  const password = firewall?.password ?? 'bench-' + Math.random().toString(36).slice(2);
  if (!firewall) run(['passwd', '--file', join(d, 'users'), user], { PORTSIDE_PASSWORD: password });
  const clientPort = await freePort();
  // the session events the setup waits for are logged at info
  const lvl = ['trace', 'debug', 'info'].includes(ctx.options.portsideLogLevel) ? ctx.options.portsideLogLevel : 'info';
  const ps = await startPortside({ ...ctx, options: { ...ctx.options, portsideLogLevel: lvl } }, null, {
    none: true,
    outsideExtra: [
      'clients:',
      `  listen: 127.0.0.1:${clientPort}`,
      `  cert_file: ${join(d, 'client-port.pem')}`,
      `  key_file: ${join(d, 'client-port.key')}`,
      ...(firewall
        ? ['  auth: firewall', '  firewall:', `    socks5: 127.0.0.1:${firewall.port}`]
        : ['  auth: users', `  users_file: ${join(d, 'users')}`]),
      '  allow:',
      `    destinations: ["127.0.0.1:${ctx.targetPort}"]`,
    ],
    insideExtra: ['reach: ["127.0.0.1/32"]'],
  });
  const forwardPort = await freePort();
  writeFileSync(join(d, 'client.yaml'), [
    `outside: 127.0.0.1:${clientPort}`,
    `outside_fingerprint: "${fingerprint}"`,
    `username: ${user}`,
    `password: ${password}`,
    'forwards:',
    `  - {listen: "127.0.0.1:${forwardPort}", to: "127.0.0.1:${ctx.targetPort}"}`,
    `log_level: ${ctx.options.portsideLogLevel}`,
    '',
  ].join('\n'), { mode: 0o600 }); // it holds the password
  const agent = startRelay(ctx, cli, ['client', '--config', join(d, 'client.yaml')], 'agent');
  await waitPort(forwardPort, { child: agent, timeoutMs: 20000 });
  return { port: forwardPort, pids: [agent.pid, ...ps.pids] };
}

export const paths = [
  {
    name: 'direct',
    label: 'direct',
    async setup(ctx) {
      return { port: ctx.targetPort, pids: [] };
    },
  },
  {
    name: 'node-relay',
    label: 'Node relay (pipe)',
    async setup(ctx) {
      let port;
      let resolve;
      const got = new Promise((r) => { resolve = r; });
      const child = ctx.start(process.execPath, [join(ctx.benchDir, 'lib', 'relay.mjs'), String(ctx.targetPort)], 'relay', (line) => {
        try { port = JSON.parse(line).port; resolve(); } catch { /* not ours */ }
      });
      await Promise.race([got, new Promise((_, rej) => child.on('exit', (c) => rej(new Error(`relay exited ${c}`))))]);
      return { port, pids: [child.pid] };
    },
  },
  {
    name: 'ssh-L',
    label: 'ssh -L (aes128-gcm)',
    needs: ['ssh', 'sshd', 'ssh-keygen'],
    async setup(ctx) {
      const sshd = await startSshd(ctx);
      const port = await freePort();
      const ssh = ctx.start('ssh', sshArgs(sshd, ['-L', `127.0.0.1:${port}:127.0.0.1:${ctx.targetPort}`]), 'ssh-L');
      await waitPort(port, { child: ssh });
      return { port, pids: [ssh.pid, sshd.pid] };
    },
  },
  {
    name: 'ssh-chain',
    label: 'ssh -L → sshd → ssh -R',
    needs: ['ssh', 'sshd', 'ssh-keygen'],
    async setup(ctx) {
      const sshd = await startSshd(ctx);
      const rport = await freePort();
      // "inside": registers a remote forward on sshd that leads to the target
      const r = ctx.start('ssh', sshArgs(sshd, ['-R', `127.0.0.1:${rport}:127.0.0.1:${ctx.targetPort}`]), 'ssh-R');
      await waitPort(rport, { child: r });
      // "client": reaches that forwarded port through sshd
      const port = await freePort();
      const l = ctx.start('ssh', sshArgs(sshd, ['-L', `127.0.0.1:${port}:127.0.0.1:${rport}`]), 'ssh-L');
      await waitPort(port, { child: l });
      return { port, pids: [l.pid, sshd.pid, r.pid] };
    },
  },
  {
    name: 'stunnel',
    label: 'stunnel pair (TLS 1.3)',
    needs: ['stunnel', 'openssl'],
    async setup(ctx) {
      const d = ctx.dir;
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
        '-nodes', '-keyout', join(d, 'key.pem'), '-out', join(d, 'cert.pem'), '-days', '2', '-subj', '/CN=localhost'],
      { stdio: 'pipe' });
      const sport = await freePort();
      const cport = await freePort();
      const common = (name) => [
        'foreground = yes',
        `pid = ${join(d, name + '.pid')}`,
        'debug = 3',
        `output = ${join(d, name + '.log')}`,
        '[bench]',
        'ciphersuites = TLS_AES_128_GCM_SHA256', // same cipher as the ssh rows
        'socket = l:TCP_NODELAY=1',
        'socket = r:TCP_NODELAY=1',
      ];
      writeFileSync(join(d, 'server.conf'), [...common('server'),
        `accept = 127.0.0.1:${sport}`, `connect = 127.0.0.1:${ctx.targetPort}`,
        `cert = ${join(d, 'cert.pem')}`, `key = ${join(d, 'key.pem')}`, ''].join('\n'));
      writeFileSync(join(d, 'client.conf'), ['client = yes', ...common('client'),
        `accept = 127.0.0.1:${cport}`, `connect = 127.0.0.1:${sport}`, ''].join('\n'));
      const server = ctx.start('stunnel', [join(d, 'server.conf')], 'stunnel-server');
      const client = ctx.start('stunnel', [join(d, 'client.conf')], 'stunnel-client');
      await waitPort(sport, { child: server });
      await waitPort(cport, { child: client });
      return { port: cport, pids: [client.pid, server.pid] };
    },
  },
  {
    name: 'portside',
    label: 'portside',
    async setup(ctx) {
      return startPortside(ctx, null);
    },
  },
  {
    name: 'portside-client',
    label: 'portside client agent → outside → inside',
    async setup(ctx) {
      return startPortsideClient(ctx);
    },
  },
  {
    name: 'portside-client-dante',
    label: 'portside client agent, firewall-delegated auth (incl. danted)',
    needs: ['danted', 'useradd', 'userdel', 'chpasswd'],
    async setup(ctx) {
      portsideCli(ctx);
      const user = await createSystemUser();
      try {
        const dante = await startDante(ctx, true);
        const ps = await startPortsideClient(ctx, { port: dante.port, user: user.name, password: user.password });
        return { port: ps.port, pids: [...ps.pids, dante.pid], teardown: user.remove };
      } catch (e) {
        user.remove();
        throw e;
      }
    },
  },
  {
    name: 'portside-dante',
    label: 'portside via Dante (incl. danted)',
    needs: ['danted'],
    async setup(ctx) {
      portsideCli(ctx); // fail early, before starting Dante
      const { port: dport, pid } = await startDante(ctx, false);
      const ps = await startPortside(ctx, dport);
      return { port: ps.port, pids: [...ps.pids, pid] };
    },
  },
];
