#!/usr/bin/env node
// A scripted IRC client for end-to-end tests (plain node:net, no IRC library), with DCC SEND.
// Usage: node irc-client.mjs '{"host":"10.0.0.1","port":6667,"nick":"alice","bind":"10.0.0.9"}'
// Reads commands from stdin, one JSON object per line; prints events, one JSON object per line:
//   {"op":"say","to":"bob","text":"hi"}                                   → PRIVMSG
//   {"op":"offer","to":"bob","name":"f.bin","size":N,"listen":"10.0.0.9"} → listens on listen:0,
//       announces that address in DCC SEND, sends N random bytes to whoever connects first
//   {"op":"offer","to":"bob","name":"x","size":N,"announce":"1.2.3.4","port":5000}
//       → only sends the offer line, announcing any address (no listener)
//   {"op":"get","host":"10.0.0.2","port":40001,"size":N,"bind":"10.0.0.9"} → DCC receive
//   {"op":"quit"}
// Events: irc.connected, irc.registered, irc.privmsg, dcc.offer, dcc.listening, dcc.peer, dcc.sent,
// dcc.received, irc.closed, error.
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';

const opts = JSON.parse(process.argv[2] ?? '{}');
const emit = (event, o = {}) => process.stdout.write(`${JSON.stringify({ event, nick: opts.nick, ...o })}\n`);
const sha = (b) => createHash('sha256').update(b).digest('hex');
const ipToUint32 = (ip) => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
const uint32ToIp = (n) => [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');

const irc = net.connect({ host: opts.host, port: opts.port, localAddress: opts.bind });
irc.setEncoding('latin1');
const send = (line) => irc.write(`${line}\r\n`, 'latin1');
irc.on('connect', () => {
  emit('irc.connected', { local: irc.localAddress, remote: irc.remoteAddress });
  send(`NICK ${opts.nick}`);
  send(`USER ${opts.nick} 0 * :portside test ${opts.nick}`);
});
irc.on('error', (e) => emit('error', { where: 'irc', message: e.message, code: e.code }));
irc.on('close', () => {
  emit('irc.closed');
  process.exit(0);
});

let buf = '';
irc.on('data', (chunk) => {
  buf += chunk;
  let i;
  while ((i = buf.indexOf('\n')) >= 0) {
    const line = buf.slice(0, i).replace(/\r$/, '');
    buf = buf.slice(i + 1);
    onLine(line);
  }
});

function onLine(line) {
  const m = /^(?::(\S+) )?(\S+)(?: (.*))?$/.exec(line);
  if (!m) return;
  const [, prefix = '', cmd, rest = ''] = m;
  if (cmd === 'PING') return send(`PONG ${rest}`);
  if (cmd === '001') return emit('irc.registered', { server: prefix });
  if (cmd === 'PRIVMSG') {
    const sp = rest.indexOf(' ');
    const target = rest.slice(0, sp);
    const text = rest.slice(sp + 1).replace(/^:/, '');
    const from = prefix.split('!')[0];
    const userHost = prefix.split('@')[1] ?? '';
    emit('irc.privmsg', { from, host: userHost, target, text });
    const d = /^\x01DCC SEND ("[^"]*"|\S+) (\d+) (\d+)(?: (\d+))?\x01$/.exec(text);
    if (d) emit('dcc.offer', { from, name: d[1].replace(/^"|"$/g, ''), ip: uint32ToIp(Number(d[2])), ipNumber: d[2], port: Number(d[3]), size: d[4] === undefined ? null : Number(d[4]), raw: text });
  }
}

const offerLine = (to, name, ip, port, size) => `PRIVMSG ${to} :\x01DCC SEND ${name} ${ipToUint32(ip)} ${port} ${size}\x01`;

function offer(c) {
  if (c.announce) return send(offerLine(c.to, c.name, c.announce, c.port, c.size));
  const data = randomBytes(c.size);
  const srv = net.createServer((sock) => {
    srv.close(); // one receiver per offer, like a DCC client
    emit('dcc.peer', { name: c.name, remote: sock.remoteAddress, remotePort: sock.remotePort });
    let acked = 0;
    // The receiver acknowledges with 32-bit big-endian byte counts; read them so they never block it.
    sock.on('data', (b) => { if (b.length >= 4) acked = b.readUInt32BE(b.length - 4); });
    sock.on('error', (e) => emit('error', { where: 'dcc-send', message: e.message, code: e.code }));
    sock.on('close', () => emit('dcc.sent', { name: c.name, bytes: data.length, acked }));
    sock.end(data);
  });
  srv.on('error', (e) => emit('error', { where: 'dcc-listen', message: e.message, code: e.code }));
  srv.listen(0, c.listen, () => {
    const { address, port } = srv.address();
    emit('dcc.listening', { name: c.name, host: address, port, size: data.length, sha256: sha(data) });
    send(offerLine(c.to, c.name, address, port, data.length));
  });
}

function get(c) {
  const sock = net.connect({ host: c.host, port: c.port, localAddress: c.bind });
  const hash = createHash('sha256');
  let got = 0;
  let local;
  const ack = Buffer.alloc(4);
  sock.on('connect', () => {
    local = sock.localAddress; // gone once the socket is closed
    emit('dcc.connected', { local, remote: sock.remoteAddress, remotePort: sock.remotePort });
  });
  sock.on('data', (b) => {
    hash.update(b);
    got += b.length;
    ack.writeUInt32BE(got % 2 ** 32);
    sock.write(ack);
  });
  sock.on('error', (e) => emit('error', { where: 'dcc-get', message: e.message, code: e.code }));
  sock.on('close', () => emit('dcc.received', { bytes: got, complete: got === c.size, sha256: hash.digest('hex'), local }));
}

createInterface({ input: process.stdin }).on('line', (l) => {
  if (!l.trim()) return;
  const c = JSON.parse(l);
  if (c.op === 'say') send(`PRIVMSG ${c.to} :${c.text}`);
  else if (c.op === 'offer') offer(c);
  else if (c.op === 'get') get(c);
  else if (c.op === 'quit') send('QUIT :bye');
  else emit('error', { where: 'stdin', message: `unknown op ${c.op}` });
});
