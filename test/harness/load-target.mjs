// TCP target for session load tests (run in the server namespace). Each connection starts with
// one JSON header line from the client: {"id", "seed", "reply", "mode"}. Everything after the
// header is hashed (SHA-256). mode "both": at once send `reply` bytes of the stream for `seed`
// while reading; mode "after-eof": wait for the client's EOF (half-close), then send
// "<sha256 of what was received>\n" followed by `reply` bytes. Then end our side.
// Prints {"event":"target.listening","address","port"} and per connection
// {"event":"target.done","id","recv","recvSha","sent","sentSha"} or {"event":"target.error",...}.
//
//   node test/harness/load-target.mjs HOST PORT
import net from 'node:net';
import { createHash } from 'node:crypto';
import { writeStream } from './load-common.mjs';

const [host = '127.0.0.1', portArg = '0'] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
  let header = null;
  let head = Buffer.alloc(0);
  const h = createHash('sha256');
  let recv = 0;
  let sent = 0;
  let sentSha = null;
  let readDone = false;
  let reported = false;
  let recvSha = null;
  const report = () => {
    if (reported || !readDone || sentSha === null) return;
    reported = true;
    out({ event: 'target.done', id: header?.id, recv, recvSha, sent, sentSha });
  };
  const fail = (e) => {
    if (reported) return;
    reported = true;
    out({ event: 'target.error', id: header?.id, recv, error: String(e?.message ?? e), code: e?.code });
    s.destroy();
  };
  s.on('error', fail);
  s.on('close', () => {
    if (!reported) fail(Object.assign(new Error('closed early'), { code: 'ECLOSED' }));
  });
  const reply = async (prefix) => {
    try {
      sentSha = await writeStream(s, header.seed, header.reply, prefix);
      sent = header.reply + (prefix ? prefix.length : 0);
      s.end();
      report();
    } catch (e) {
      fail(e);
    }
  };
  s.on('data', (d) => {
    if (!header) {
      head = Buffer.concat([head, d]);
      const nl = head.indexOf(10);
      if (nl < 0) {
        if (head.length > 65536) fail(new Error('no header'));
        return;
      }
      try {
        header = JSON.parse(head.subarray(0, nl).toString('utf8'));
      } catch {
        return fail(new Error('bad header'));
      }
      d = head.subarray(nl + 1);
      if (header.mode === 'both') void reply(null);
    }
    recv += d.length;
    h.update(d);
  });
  s.on('end', () => {
    if (!header) return fail(new Error('EOF before header'));
    readDone = true;
    recvSha = h.digest('hex');
    if (header.mode === 'after-eof') void reply(Buffer.from(recvSha + '\n'));
    else report();
  });
});
server.listen(Number(portArg), host, () => {
  const a = server.address();
  out({ event: 'target.listening', address: a.address, port: a.port });
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
