/**
 * The demo's third act: a client computer. The client agent holds one encrypted session to the
 * outside relay's client port and carries each program connection as a stream with keys of its
 * own; the outside relay lets the firewall judge the user's password (Fig. 6, 601-612).
 */
import { execFile, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pino from 'pino';
import { ClientAgent } from './agent/agent.js';
import { makeSelfSignedCert } from './agent/cert.js';
import { loadClientConfig } from './agent/config.js';
import { clientsSchema } from './config.js';
import { say } from './demo.js';
import { createLogger } from './log.js';
import { ClientPort } from './relay/clientport.js';
import type { OutsideRelay } from './relay/outside.js';

export interface ClientDemo {
  outside: OutsideRelay;
  /** Where the outside relay asks the firewall to judge passwords. */
  firewallPort: number;
  user: { name: string; password: string };
  /** The intranet hash server and FTP server. */
  serverPort: number;
  ftpPort: number;
  ftpRoot: string;
  narrator(who: 'agent' | 'outside'): pino.DestinationStream;
}

export async function runClientDemo(d: ClientDemo): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'portside-demo-client-'));
  try {
    const cert = await makeSelfSignedCert();
    writeFileSync(join(dir, 'client-port.pem'), cert.cert);
    writeFileSync(join(dir, 'client-port.key'), cert.key);
    // The config's defaults for everything not given, as a clients: section in outside.yaml would get.
    const clients = clientsSchema.parse({
      listen: '127.0.0.1:0', cert_file: join(dir, 'client-port.pem'), key_file: join(dir, 'client-port.key'),
      auth: 'firewall', firewall: { socks5: `127.0.0.1:${d.firewallPort}` },
    });
    const port = new ClientPort(d.outside, clients, dir, createLogger('debug', 'outside', d.narrator('outside')));
    const { port: clientPort } = await port.start();
    const agent = new ClientAgent(loadClientConfig(join(dir, 'client.yaml'), [
      `outside: 127.0.0.1:${clientPort}`,
      `outside_fingerprint: "${cert.fingerprint}"`,
      `username: ${d.user.name}`,
      `password: "${d.user.password}"`,
      'socks5: 127.0.0.1:0',
      'forwards:',
      `  - {listen: "127.0.0.1:0", to: "127.0.0.1:${d.serverPort}"}`,
      'back_listen: "off"',
    ].join('\n')), createLogger('debug', 'agent', d.narrator('agent')));
    const { socks5, forwards } = await agent.start();

    const payload = randomBytes(4 * 1024 * 1024);
    const want = createHash('sha256').update(payload).digest('hex');
    say('program', `connects to the agent's forward 127.0.0.1:${forwards[0].port} (→ intranet server); sends 4 MiB (601-602)`);
    const got = await new Promise<string>((resolve, reject) => {
      const c = net.connect(forwards[0].port, '127.0.0.1');
      let reply = '';
      c.on('data', (b) => (reply += b.toString()));
      c.on('end', () => resolve(reply));
      c.on('error', reject);
      c.end(payload);
    });
    say('program', got === want ? `reply matches: SHA-256 ${want.slice(0, 16)}…` : `MISMATCH: ${got} != ${want}`);
    if (got !== want) process.exitCode = 1;

    if (spawnSync('curl', ['--version']).status === 0 && socks5) {
      const file = randomBytes(1024 * 1024);
      writeFileSync(join(d.ftpRoot, 'via-agent.bin'), file);
      const fileSha = createHash('sha256').update(file).digest('hex');
      say('program', `curl --socks5-hostname 127.0.0.1:${socks5.port} ftp://127.0.0.1:${d.ftpPort}/via-agent.bin (passive): control and data connection each a stream with keys of its own`);
      const r = await new Promise<{ status: number; stdout: Buffer; stderr: Buffer }>((resolve) => {
        execFile('curl', ['-sS', '--max-time', '20', '--socks5-hostname', `127.0.0.1:${socks5.port}`, `ftp://127.0.0.1:${d.ftpPort}/via-agent.bin`], { encoding: 'buffer', maxBuffer: 16 << 20 },
          (err, stdout, stderr) => resolve({ status: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
      });
      const sha = createHash('sha256').update(r.stdout).digest('hex');
      if (r.status === 0 && sha === fileSha) say('program', `curl through the agent: SHA-256 matches ${fileSha.slice(0, 16)}…`);
      else {
        say('program', `curl through the agent FAILED: exit ${r.status} ${r.stderr.toString().trim()}`);
        process.exitCode = 1;
      }
    }
    await agent.stop();
    await port.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
