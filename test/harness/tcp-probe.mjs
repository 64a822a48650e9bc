// One-shot TCP probe, meant to run inside a network namespace (the test process itself cannot
// open sockets there): connect directly or through a SOCKS5 server, send a payload, read until
// `until` (default: the payload itself, as an echo would send it) came back or the peer closed,
// print one JSON line {ok, stage?, error?, code?, received}, exit 0 / 1. ok = connected and the
// awaited text arrived.
//
//   node test/harness/tcp-probe.mjs '{"host":"10.201.1.20","port":7000,"send":"hello",
//        "socks":{"host":"10.201.2.1","port":1080,"userId":"u","password":"p"},"timeoutMs":3000}'
import net from 'node:net';
import { SocksClient } from 'socks';

const o = JSON.parse(process.argv[2] ?? '{}');
const timeoutMs = o.timeoutMs ?? 5000;
const payload = Buffer.from(o.send ?? 'ping\n');
const until = o.until ?? payload.toString('utf8');

function done(result) {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(result.ok ? 0 : 1);
}

const timer = setTimeout(() => done({ ok: false, stage: 'timeout', error: `no result within ${timeoutMs} ms` }), timeoutMs);

async function connect() {
  if (!o.socks) {
    return await new Promise((resolve, reject) => {
      const s = net.connect({ host: o.host, port: o.port });
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
  }
  const { socket } = await SocksClient.createConnection({
    proxy: {
      host: o.socks.host,
      port: o.socks.port,
      type: 5,
      ...(o.socks.userId !== undefined ? { userId: o.socks.userId, password: o.socks.password } : {}),
    },
    command: 'connect',
    destination: { host: o.host, port: o.port },
    timeout: timeoutMs,
  });
  return socket;
}

let socket;
try {
  socket = await connect();
} catch (e) {
  clearTimeout(timer);
  done({ ok: false, stage: 'connect', error: String(e?.message ?? e), code: e?.code });
}
const chunks = [];
let got = 0;
socket.on('data', (d) => {
  chunks.push(d);
  got += d.length;
  if (Buffer.concat(chunks).toString('utf8').includes(until)) finish();
});
socket.on('end', finish);
socket.on('error', (e) => {
  clearTimeout(timer);
  done({ ok: false, stage: 'io', error: String(e.message), code: e.code });
});
socket.write(payload);
function finish() {
  clearTimeout(timer);
  const received = Buffer.concat(chunks).toString('utf8');
  socket.destroy();
  done({ ok: received.includes(until), stage: 'done', received, bytes: got });
}
