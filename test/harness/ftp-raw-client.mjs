// A raw FTP client for end-to-end tests, run inside the client's network namespace (the test
// process itself cannot open sockets there). It speaks FTP over a plain socket so a test can send
// what no real client would: a bounce PORT, a notice split byte by byte, an over-long notice line.
// Prints one JSON line with everything it saw, exits 0 when the scenario ran to its end.
//
//   node test/harness/ftp-raw-client.mjs '{"scenario":"bounce","host":"10.201.1.20","port":2121,...}'
//
// Scenarios (all log in as anonymous and switch to TYPE I first):
//   bounce   send each of `refuse` (bounce PORT/EPRT lines), then NOOP and PWD, then a PASV RETR
//            of `file` on the same control connection.
//   split    listen on `listenHost`, send `EPRT |1|listenHost|port|` (and, with `alsoPort`, a
//            PORT line) one byte per write `delayMs` apart, then RETR `file` on that listener.
//   longline open control connections A and B; on B send `longLine` (a notice start longer than
//            max-line); report how B ended; then NOOP and a PASV RETR of `file` on A.
import net from 'node:net';
import { createHash } from 'node:crypto';

const o = JSON.parse(process.argv[2] ?? '{}');
const timeoutMs = o.timeoutMs ?? 60_000;
const out = { ok: false, scenario: o.scenario, transcript: [] };

function finish(extra = {}) {
  Object.assign(out, extra);
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(out.ok ? 0 : 1);
}
setTimeout(() => finish({ error: `scenario did not finish within ${timeoutMs} ms` }), timeoutMs).unref();

const pause = (ms) => new Promise((r) => setTimeout(r, ms));

/** One FTP control connection: send lines, read (multi-line) replies, see how it ended. */
class Control {
  constructor(label, sock) {
    this.label = label;
    this.sock = sock;
    this.buf = '';
    this.lines = [];
    this.waiter = null;
    this.ended = null; // { how: 'end' | 'error', code?: string }
    sock.setNoDelay(true);
    sock.setEncoding('latin1');
    sock.on('data', (d) => {
      this.buf += d;
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i).replace(/\r$/, '');
        this.buf = this.buf.slice(i + 1);
        out.transcript.push(`${label}< ${line}`);
        this.lines.push(line);
      }
      this.wake();
    });
    const endedP = new Promise((resolve) => {
      sock.on('end', () => { this.ended ??= { how: 'end' }; resolve(); this.wake(); });
      sock.on('error', (e) => { this.ended ??= { how: 'error', code: e.code ?? e.message }; resolve(); this.wake(); });
      sock.on('close', () => { this.ended ??= { how: 'close' }; resolve(); this.wake(); });
    });
    this.endedP = endedP;
  }

  static connect(label, host, port) {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port });
      s.once('connect', () => resolve(new Control(label, s)));
      s.once('error', reject);
    });
  }

  wake() {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** Next complete reply: `ddd text` or a `ddd-` ... `ddd text` block. */
  async reply() {
    for (;;) {
      const first = this.lines[0];
      if (first !== undefined) {
        const m = /^(\d{3})([ -])/.exec(first);
        if (!m) throw new Error(`${this.label}: not an FTP reply: ${first}`);
        if (m[2] === ' ') return { code: Number(m[1]), text: this.lines.shift(), lines: [first] };
        const endIdx = this.lines.findIndex((l, i) => i > 0 && l.startsWith(`${m[1]} `));
        if (endIdx > 0) {
          const lines = this.lines.splice(0, endIdx + 1);
          return { code: Number(m[1]), text: lines[lines.length - 1], lines };
        }
      }
      if (this.ended) throw new Error(`${this.label}: connection ended (${JSON.stringify(this.ended)}) while waiting for a reply`);
      await new Promise((r) => { this.waiter = r; });
    }
  }

  send(line) {
    out.transcript.push(`${this.label}> ${line.length > 120 ? `${line.slice(0, 60)}...(${line.length} bytes)` : line}`);
    this.sock.write(`${line}\r\n`, 'latin1');
  }

  async cmd(line, ...expect) {
    this.send(line);
    const r = await this.reply();
    if (expect.length && !expect.includes(r.code)) throw new Error(`${this.label}: ${line.split(' ')[0]} answered ${r.text}`);
    return r;
  }

  /** Send a line one byte per write, `delayMs` apart: every byte its own TCP segment. */
  async sendBytewise(line, delayMs) {
    out.transcript.push(`${this.label}> ${line} (byte by byte)`);
    for (const b of Buffer.from(`${line}\r\n`, 'latin1')) {
      this.sock.write(Buffer.from([b]));
      await pause(delayMs);
    }
  }

  async login() {
    const hello = await this.reply();
    if (hello.code !== 220) throw new Error(`${this.label}: greeting ${hello.text}`);
    const u = await this.cmd('USER anonymous', 230, 331);
    if (u.code === 331) await this.cmd('PASS raw@portside.test', 230);
    await this.cmd('TYPE I', 200);
  }
}

/** Read a whole data connection; resolves with its size and SHA-256. */
function drain(sock) {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    let bytes = 0;
    sock.on('data', (d) => { h.update(d); bytes += d.length; });
    sock.on('end', () => resolve({ bytes, sha256: h.digest('hex') }));
    sock.on('error', reject);
  });
}

/** PASV then RETR on `c`, connecting where the 227 says. */
async function pasvRetr(c, file) {
  const r = await c.cmd('PASV', 227);
  const m = /\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)/.exec(r.text);
  if (!m) throw new Error(`unreadable 227: ${r.text}`);
  const host = m.slice(1, 5).join('.');
  const port = Number(m[5]) * 256 + Number(m[6]);
  const data = net.connect({ host, port });
  await new Promise((resolve, reject) => { data.once('connect', resolve); data.once('error', reject); });
  const got = drain(data);
  await c.cmd(`RETR ${file}`, 150, 125);
  const res = await got;
  const done = await c.reply();
  if (done.code !== 226) throw new Error(`RETR ended with ${done.text}`);
  return { pasv: { host, port, reply: r.text }, ...res };
}

async function bounce() {
  const c = await Control.connect('C', o.host, o.port);
  await c.login();
  const refused = [];
  for (const line of o.refuse ?? []) {
    const r = await c.cmd(line);
    refused.push({ sent: line, reply: r.text, code: r.code });
  }
  const noop = await c.cmd('NOOP');
  const pwd = await c.cmd('PWD');
  const retr = await pasvRetr(c, o.file);
  const quit = await c.cmd('QUIT');
  return { refused, noop: noop.text, pwd: pwd.text, retr, quit: quit.text };
}

async function split() {
  const c = await Control.connect('C', o.host, o.port);
  await c.login();
  const transfers = [];
  const kinds = o.alsoPort ? ['EPRT', 'PORT'] : ['EPRT'];
  for (const kind of kinds) {
    const srv = net.createServer();
    await new Promise((resolve, reject) => { srv.once('error', reject); srv.listen(0, o.listenHost, resolve); });
    const port = srv.address().port;
    const accepted = new Promise((resolve) => srv.once('connection', (s) => resolve(s)));
    const line = kind === 'EPRT'
      ? `EPRT |1|${o.listenHost}|${port}|`
      : `PORT ${o.listenHost.split('.').join(',')},${port >> 8},${port & 255}`;
    await c.sendBytewise(line, o.delayMs ?? 3);
    const r = await c.reply();
    if (r.code !== 200) throw new Error(`${kind} answered ${r.text}`);
    c.send(`RETR ${o.file}`);
    const sock = await accepted;
    const from = sock.remoteAddress;
    const got = drain(sock);
    const start = await c.reply();
    if (start.code !== 150 && start.code !== 125) throw new Error(`RETR answered ${start.text}`);
    const res = await got;
    const done = await c.reply();
    if (done.code !== 226) throw new Error(`RETR ended with ${done.text}`);
    srv.close();
    transfers.push({ kind, line, listenPort: port, reply: r.text, dataFrom: from, ...res });
  }
  await c.cmd('QUIT');
  return { transfers };
}

async function longline() {
  const a = await Control.connect('A', o.host, o.port);
  const b = await Control.connect('B', o.host, o.port);
  await a.login();
  await b.login();
  b.send(o.longLine);
  await b.endedP;
  // Whatever B still received after the long line (it must not be an answer to it).
  const bAfter = [...b.lines];
  const noop = await a.cmd('NOOP');
  const retr = await pasvRetr(a, o.file);
  await a.cmd('QUIT');
  return { bEnded: b.ended, bAfter, noop: noop.text, retr };
}

const scenarios = { bounce, split, longline };
try {
  const f = scenarios[o.scenario];
  if (!f) throw new Error(`unknown scenario ${o.scenario}`);
  finish({ ok: true, ...(await f()) });
} catch (e) {
  finish({ error: String(e?.stack ?? e) });
}
