/**
 * `npm run demo`: the whole topology on one machine, on loopback, with every step of the
 * patent's sequence printed as it happens:
 *
 *   client ──► outside relay (ESP) ◄══ session ══ firewall (SOCKS5) ══ inside relay (ISP) ──► server
 *
 * and then a client computer's agent (one encrypted session to the outside relay, a stream with keys
 * of its own per connection, the user's password judged by the firewall).
 *
 * The firewall here is an embedded SOCKS5 gateway; the tests use real Dante.
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { limitsSchema, type InsideConfig, type OutsideConfig } from './config.js';
import { createLogger } from './log.js';
import { InsideRelay } from './relay/inside.js';
import { OutsideRelay } from './relay/outside.js';
import { attachDynamicInside, attachDynamicOutside } from './relay/dynamic.js';
import { createSocks5Server } from './socks5/server.js';
import { runFtpDemo, startDemoFtpServer } from './demo-ftp.js';
import { runClientDemo } from './demo-client.js';

const color = process.stdout.isTTY ? (c: number, s: string) => `\x1b[${c}m${s}\x1b[0m` : (_c: number, s: string) => s;
const t0 = Date.now();
export function say(who: string, text: string): void {
  const ms = String(Date.now() - t0).padStart(5);
  const tag = who === 'inside' ? color(36, 'inside  ') : who === 'outside' ? color(35, 'outside ') : who === 'firewall' ? color(33, 'firewall') : who === 'agent' ? color(34, 'agent   ') : color(32, who.padEnd(8));
  process.stdout.write(`${color(90, ms + 'ms')} ${tag} ${text}\n`);
}

/** Turn the relays' structured log events into the patent's steps. */
function narrator(who: 'inside' | 'outside' | 'agent'): pino.DestinationStream {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (!line) continue;
        const e = JSON.parse(line) as Record<string, unknown>;
        const text = describe(e, who);
        if (text) say(who, text);
      }
      cb();
    },
  }) as unknown as pino.DestinationStream;
}

function describe(e: Record<string, unknown>, who: 'inside' | 'outside' | 'agent'): string | null {
  switch (e.event) {
    case 'clients.listening': return `client port on ${e.address}:${e.port} (auth: ${e.auth}); agents pin its certificate sha256:${String(e.fingerprint).slice(0, 16)}…`;
    case 'agent.ready': return `client agent ready (forward and local SOCKS5 port on 127.0.0.1)`;
    case 'agent.session_established': return `one session to the outside relay's client port (signed X25519 handshake, its certificate pinned): every connection will be a stream on it`;
    case 'client.session_established': return `an agent's session is up (INIT); it may carry many connections`;
    case 'firewall.established': return `the firewall authenticated '${e.user}' and connected to ${e.target}; holding its "established" (603-606)`;
    case 'client.connected': return `inside-connect.rsp OK → SOCKS5 success and our key share to the agent (607, 611)`;
    case 'client.passive_attached': return `the agent's data connection attached to the passive listener on port ${e.port}`;
    case 'agent.session_closed': case 'client.session_closed': return null;
    case 'agent.sealed': return `connection to ${e.target} sealed with its own keys (X25519 + HKDF → AES-128-GCM); the program is connected (607, 612)`;
    case 'outside.listening': return `listening for sessions on ${e.address}:${e.port}`;
    case 'session.dialing': return `connect.req → ${e.via} for ${e.outside}   (Fig. 8: session set-up)`;
    case 'session.connected': return `connect.rsp: ${e.via === 'direct line' ? 'connected' : 'the firewall relays us to the outside relay'}; TLS 1.3 starts (claim 6)`;
    case 'session.authenticated': return `trial.req/trial.rsp passed: peer proved the shared key, bound to this channel (Fig. 9, claim 10)`;
    case 'session.init_sent': return `init data sent: ${e.services} service(s) and the rules the outside needs (claims 4, 15)`;
    case 'service.listening': return `service '${e.service}' listening on ${e.address}:${e.port} → inside target ${e.target}`;
    case 'session.established': return `session established`;
    case 'stream.opening': return `client ${e.client} connected → inside-connect.req #${e.stream} (608)`;
    case 'stream.opened': return e.target ? `connected to server ${e.target} → inside-connect.rsp OK #${e.stream} (609-610)` : `inside-connect.rsp OK: client released (611-612)`;
    case 'stream.closed': return `stream #${e.stream} closed (${e.result})`;
    case 'stream.refused': return `stream #${e.stream} refused: ${e.result} ${e.reason ?? ''}`;
    case 'session.closed': return `session closed ${e.code ?? ''} ${e.result ?? ''}`;
    case 'notice.found': return `dynamic port notice in the data: ${e.notice} ${e.announced ?? ''} (616)`;
    case 'notice.rewritten': return `rewrote notice to ${e.rewritten} (623)`;
    case 'outside-connect.req': return `outside-connect.req #${e.stream} → connect to ${e.target} (617-618)`;
    case 'outside-connect.done': return who === 'outside'
      ? `connected to the client's listener ${e.target} → outside-connect.rsp ${e.result} (619-622)`
      : `outside-connect.rsp ${e.result}: the client's listener is reached (622)`;
    case 'outside-listen.done': return `listening for the client's data connection on ${e.address}:${e.port}`;
    case 'data.accepted': return `data connection from ${e.peer} accepted and carried (624-629)`;
    default:
      if (typeof e.code === 'string') return `${e.msg} [${e.code}]`;
      return null;
  }
}

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as net.AddressInfo).port;
}

async function main(): Promise<void> {
  process.stdout.write('portside demo: client → outside relay ⇐ firewall ⇐ inside relay → server, all on 127.0.0.1\n\n');
  const key = randomBytes(32);

  // The intranet server: answers each connection with the SHA-256 of what it received.
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    const h = createHash('sha256');
    let n = 0;
    s.on('data', (b: Buffer) => { h.update(b); n += b.length; });
    s.on('end', () => {
      if (n === 0) say('server', 'a connection closed without data (the firewall checking the destination, 604)');
      else say('server', `received ${n} bytes; replying with their SHA-256`);
      s.end(h.digest('hex'));
    });
  });
  const serverPort = await listen(server);
  say('server', `intranet TCP server on 127.0.0.1:${serverPort}`);

  // The firewall knows its users (it authenticates the client agent's user too, 603-606).
  const user = { name: 'alice', password: randomBytes(9).toString('base64url') };
  const relayUser = { name: 'portside-inside', password: randomBytes(9).toString('base64url') };
  const firewall = createSocks5Server({
    users: new Map([[relayUser.name, relayUser.password], [user.name, user.password]]),
    onEvent: (e) => say('firewall', e.event === 'auth.ok' || e.event === 'auth.refused' ? `${e.event} user '${e.user}'` : `${e.event} ${e.host ?? ''}:${e.port ?? ''}`),
  });
  const fwPort = await listen(firewall);
  say('firewall', `SOCKS5 circuit gateway on 127.0.0.1:${fwPort} (the only way out of the intranet)`);

  const ftp = await startDemoFtpServer();
  say('server', `intranet FTP server on 127.0.0.1:${ftp.port}`);

  const freePort = async () => { const p = net.createServer(); const n = await listen(p); p.close(); return n; };
  const servicePort = await freePort();
  const ftpServicePort = await freePort();

  const outsideCfg: OutsideConfig = {
    file: 'demo', listen: '127.0.0.1:0', insides: [{ name: 'branch-a', key: 'x' }], keys: new Map([['branch-a', key]]),
    allow: { hosts: ['127.0.0.1'], ports: ['1024-65535'], from: ['127.0.0.0/8'] },
    limits: limitsSchema.parse({}),
    log_level: 'debug',
  };
  const outside = new OutsideRelay(outsideCfg, createLogger('debug', 'outside', narrator('outside')));
  attachDynamicOutside(outside);
  const addr = await outside.start();

  const insideCfg: InsideConfig = {
    file: 'demo', name: 'branch-a', sharedKey: key, key: 'x', outside: `127.0.0.1:${addr.port}`,
    firewall: { socks5: `127.0.0.1:${fwPort}`, username: relayUser.name, password: relayUser.password },
    services: [
      { name: 'hash', listen: `127.0.0.1:${servicePort}`, target: `127.0.0.1:${serverPort}` },
      { name: 'ftp', listen: `127.0.0.1:${ftpServicePort}`, target: `127.0.0.1:${ftp.port}`, rules: 'ftp' },
    ],
    reach_rules: [], rules_dir: new URL('../rules', import.meta.url).pathname, reconnect: { min_ms: 500, max_ms: 5000 },
    limits: outsideCfg.limits, log_level: 'debug',
  };
  const inside = new InsideRelay(insideCfg, createLogger('debug', 'inside', narrator('inside')));
  attachDynamicInside(inside);
  const established = new Promise((r) => inside.once('established', r));
  inside.start();
  await established;
  await new Promise((r) => setTimeout(r, 50));

  // A client on the internet side uses the service.
  const payload = randomBytes(8 * 1024 * 1024);
  const want = createHash('sha256').update(payload).digest('hex');
  say('client', `connecting to the service at 127.0.0.1:${servicePort}; sending 8 MiB (data-transfer.req, 613-615)`);
  const got = await new Promise<string>((resolve, reject) => {
    const c = net.connect(servicePort, '127.0.0.1');
    let reply = '';
    c.on('data', (b) => (reply += b.toString()));
    c.on('end', () => resolve(reply));
    c.on('error', reject);
    c.end(payload);
  });
  say('client', got === want ? `reply matches: SHA-256 ${want.slice(0, 16)}… (half-close carried end to end)` : `MISMATCH: ${got} != ${want}`);
  if (got !== want) process.exitCode = 1;

  process.stdout.write('\nFTP through the same session: the inside relay watches the control connection for dynamic port notices\n');
  await runFtpDemo(ftpServicePort, ftp.root).catch((err) => {
    say('client', `FTP demo failed: ${(err as Error).message}`);
    process.exitCode = 1;
  });

  process.stdout.write('\nA client computer: the client agent carries a program\'s connections; the firewall checks the user (601-612)\n');
  await runClientDemo({ outside, firewallPort: fwPort, user, serverPort, ftpPort: ftp.port, ftpRoot: ftp.root, narrator }).catch((err) => {
    say('program', `client agent demo failed: ${(err as Error).message}`);
    process.exitCode = 1;
  });

  inside.stop();
  await outside.stop();
  server.close();
  firewall.close();
  ftp.close();
  process.stdout.write(process.exitCode ? '\ndemo FAILED\n' : '\ndemo finished: every step above crossed the firewall through one encrypted session.\n');
  setTimeout(() => process.exit(), 300).unref();
}

main().catch((err) => {
  process.stderr.write(`demo failed: ${(err as Error).stack}\n`);
  process.exit(1);
});
