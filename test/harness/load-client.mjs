// Load client for session tests (run in the client namespace). Opens every connection in
// `conns` at once; each sends a JSON header line for load-target.mjs, then `send` bytes of the
// stream for `seed` while reading, then shuts its write side (end()), and reads until the
// peer ends or the connection fails. Prints per connection
// {"event":"load.conn","id","ok","error","code","sent","sentSha","recv","recvSha","head","ended"}
// (ok = no error and the peer ended cleanly; the test checks sizes and hashes), progress events
// {"event":"load.progress","id","recv"} every `progressEvery` received bytes, and at last
// {"event":"load.done","count"}.
//
//   node test/harness/load-client.mjs '{"host","port","timeoutMs","progressEvery",
//        "conns":[{"id","send","seed","reply","replySeed","mode"}]}'
import net from 'node:net';
import { createHash } from 'node:crypto';
import { writeStream } from './load-common.mjs';

const o = JSON.parse(process.argv[2] ?? '{}');
const out = (x) => process.stdout.write(JSON.stringify(x) + '\n');
const results = [];

function one(c) {
  return new Promise((resolve) => {
    const s = net.connect({ host: o.host, port: o.port, allowHalfOpen: true, noDelay: true });
    const h = createHash('sha256');
    let recv = 0;
    let nextProgress = o.progressEvery ?? Infinity;
    let head = Buffer.alloc(0);
    let sentSha = null;
    let sent = 0;
    let error = null;
    let code = null;
    let ended = false;
    let settled = false;
    const settle = () => {
      if (settled) return;
      settled = true;
      const r = { event: 'load.conn', id: c.id, ok: !error && ended, error, code, sent, sentSha, recv, recvSha: h.digest('hex'), head: head.toString('latin1'), ended };
      out(r);
      resolve(r);
    };
    const timer = setTimeout(() => {
      error ??= `timeout after ${o.timeoutMs} ms`;
      code ??= 'TIMEOUT';
      s.destroy();
      settle();
    }, o.timeoutMs ?? 60_000);
    s.on('data', (d) => {
      if (head.length < 128) head = Buffer.concat([head, d.subarray(0, 128 - head.length)]);
      recv += d.length;
      h.update(d);
      if (recv >= nextProgress) {
        out({ event: 'load.progress', id: c.id, recv });
        nextProgress += o.progressEvery;
      }
    });
    s.on('end', () => {
      ended = true;
    });
    s.on('error', (e) => {
      error ??= e.message;
      code ??= e.code ?? null;
    });
    s.on('close', () => {
      clearTimeout(timer);
      settle();
    });
    s.once('connect', async () => {
      try {
        const hdr = Buffer.from(JSON.stringify({ id: c.id, seed: c.replySeed, reply: c.reply, mode: c.mode }) + '\n');
        s.write(hdr);
        sentSha = await writeStream(s, c.seed, c.send);
        sent = c.send;
        s.end();
      } catch (e) {
        error ??= String(e?.message ?? e);
        code ??= e?.code ?? null;
      }
    });
  });
}

const all = await Promise.all(o.conns.map(one));
results.push(...all);
out({ event: 'load.done', count: results.length });
process.exit(0);
