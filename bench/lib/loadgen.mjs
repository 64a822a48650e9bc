// Load generator, forked by run.mjs so the bench's own event loop never limits
// it. Requests arrive over IPC: { id, op, ... } and are answered { id, result } or
// { id, error }.
import net from 'node:net';
import { once } from 'node:events';

const HOST = '127.0.0.1';
const CHUNK = 256 * 1024;
const payload = Buffer.alloc(CHUNK, 0x61);

function connect(port) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: HOST, noDelay: true });
    s.once('connect', () => { s.off('error', reject); resolve(s); });
    s.once('error', reject);
  });
}

/** Send `bytes` into a sink connection; resolve once the target confirms the count. */
async function sinkStream(port, bytes) {
  const s = await connect(port);
  let reply = Buffer.alloc(0);
  const confirmed = new Promise((resolve, reject) => {
    s.on('data', (d) => {
      reply = Buffer.concat([reply, d]);
      if (reply.length >= 8) resolve(Number(reply.readBigUInt64BE(0)));
    });
    s.once('close', () => reject(new Error(`connection closed before the target confirmed (${reply.length} reply bytes)`)));
    s.once('error', reject);
  });
  confirmed.catch(() => {});
  const head = Buffer.alloc(9);
  head[0] = 0x53; // 'S'
  head.writeBigUInt64BE(BigInt(bytes), 1);
  s.write(head);
  let sent = 0;
  while (sent < bytes) {
    const n = Math.min(CHUNK, bytes - sent);
    const ok = s.write(n === CHUNK ? payload : payload.subarray(0, n));
    sent += n;
    if (!ok) await Promise.race([once(s, 'drain'), confirmed]);
  }
  try {
    const got = await confirmed;
    if (got !== bytes) throw new Error(`target received ${got} of ${bytes} bytes`);
    return got;
  } finally {
    s.destroy();
  }
}

let stalled = null;

/** Open the stalled-reader stream and keep offering data until the path pushes back. */
async function openStall(port) {
  const s = await connect(port);
  s.on('error', () => {});
  s.write(Buffer.from('T'));
  let written = 0;
  let lastProgress = Date.now();
  let stop = false;
  (async () => {
    while (!stop && !s.destroyed) {
      written += CHUNK;
      lastProgress = Date.now();
      // one listener pair per wait, both removed after: events.once() on 'drain' and 'close'
      // would leave the loser's 'error' listener behind on every wait
      if (!s.write(payload)) await new Promise((r) => { const go = () => { s.off('drain', go); s.off('close', go); r(); }; s.on('drain', go); s.on('close', go); });
    }
  })().catch(() => {});
  // the stall is established once nothing more has been accepted for 500 ms
  while (Date.now() - lastProgress < 500) await new Promise((r) => setTimeout(r, 100));
  stalled = { s, stop: () => { stop = true; s.destroy(); } };
  return written;
}

const ops = {
  async stream({ port, bytes, streams = 1, stall = false }) {
    let stallAccepted = 0;
    if (stall) stallAccepted = await openStall(port);
    try {
      const per = Math.floor(bytes / streams);
      const t0 = process.hrtime.bigint();
      await Promise.all(Array.from({ length: streams }, () => sinkStream(port, per)));
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      return { seconds, bytes: per * streams, streams, stallAccepted };
    } finally {
      stalled?.stop();
      stalled = null;
    }
  },

  async pingpong({ port, warmup, n }) {
    const s = await connect(port);
    s.setNoDelay(true);
    const one = Buffer.from('p');
    const lat = new Float64Array(n);
    let i = 0;
    let t0 = 0n;
    await new Promise((resolve, reject) => {
      s.on('error', reject);
      s.on('close', () => reject(new Error(`connection closed after ${i} round trips`)));
      s.on('data', (d) => {
        // exactly one byte is ever outstanding, so one chunk = one reply
        const t = process.hrtime.bigint();
        if (d.length !== 1) return reject(new Error(`echo returned ${d.length} bytes`));
        if (i >= warmup) lat[i - warmup] = Number(t - t0) / 1000;
        i++;
        if (i < warmup + n) { t0 = process.hrtime.bigint(); s.write(one); } else resolve();
      });
      t0 = process.hrtime.bigint();
      s.write(one);
    }).finally(() => s.destroy());
    lat.sort();
    const q = (p) => lat[Math.min(n - 1, Math.floor(p * n))];
    let sum = 0;
    for (const v of lat) sum += v;
    return { n, p50: q(0.5), p90: q(0.9), p99: q(0.99), min: lat[0], max: lat[n - 1], mean: sum / n };
  },

  async cps({ port, seconds, warmupSeconds = 0 }) {
    // Untimed first, the same way: JIT-compiled relays (Node) reach their steady state.
    if (warmupSeconds > 0) await this.cps({ port, seconds: warmupSeconds });
    const one = Buffer.from('c');
    let count = 0;
    let errors = 0;
    let lastError = null;
    const t0 = process.hrtime.bigint();
    const deadline = t0 + BigInt(Math.round(seconds * 1e9));
    while (process.hrtime.bigint() < deadline) {
      try {
        await new Promise((resolve, reject) => {
          const s = net.connect({ port, host: HOST, noDelay: true });
          const timer = setTimeout(() => { s.destroy(); reject(new Error('connection timed out (5 s)')); }, 5000);
          s.once('connect', () => s.write(one));
          s.once('data', () => { clearTimeout(timer); s.destroy(); resolve(); });
          s.once('error', (e) => { clearTimeout(timer); reject(e); });
          s.once('close', () => { clearTimeout(timer); reject(new Error('closed before echo')); });
        });
        count++;
      } catch (e) {
        errors++;
        lastError = e.message;
        if (errors > 50 && errors > count) throw new Error(`too many failures: ${lastError}`);
      }
    }
    const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
    return { count, errors, lastError, seconds: elapsed, rate: count / elapsed };
  },

  idle: [],
  async idleOpen({ port, n, concurrency = 100 }) {
    let next = 0;
    let failed = 0;
    let lastError = null;
    const one = Buffer.from('i');
    const worker = async () => {
      while (next < n) {
        next++;
        try {
          const s = await connect(port);
          await new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error('no echo within 10 s')), 10000);
            s.once('data', () => { clearTimeout(timer); resolve(); });
            s.once('error', (e) => { clearTimeout(timer); reject(e); });
            s.once('close', () => { clearTimeout(timer); reject(new Error('closed before echo')); });
            s.write(one);
          });
          s.on('error', () => {});
          ops.idle.push(s);
        } catch (e) {
          failed++;
          lastError = e.message;
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return { opened: ops.idle.length, failed, lastError };
  },

  async idleClose() {
    const all = ops.idle.splice(0);
    const stillOpen = all.filter((s) => !s.destroyed && s.readyState === 'open').length;
    for (const s of all) s.destroy();
    return { closed: all.length, stillOpen };
  },
};

process.on('message', async (m) => {
  try {
    const result = await ops[m.op](m);
    process.send({ id: m.id, result });
  } catch (e) {
    process.send({ id: m.id, error: e?.message ?? String(e) });
  }
});
process.on('disconnect', () => process.exit(0));
