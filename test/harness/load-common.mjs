// Deterministic "random-looking" byte streams for load tests: AES-128-CTR keystream keyed by a
// seed string, so a sender, a receiver and the test itself can all produce (or hash) the same
// bytes without storing them. Fast enough for hundreds of MiB on one core.
import { createCipheriv, createHash } from 'node:crypto';

const ZERO = Buffer.alloc(256 * 1024);

/** Generator of `n` bytes of the stream for `seed`, in chunks of at most `chunk` bytes. */
export function* keystream(seed, n, chunk = 64 * 1024) {
  const key = createHash('sha256').update(String(seed)).digest().subarray(0, 16);
  const c = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  let left = n;
  while (left > 0) {
    const len = Math.min(left, chunk, ZERO.length);
    yield c.update(ZERO.subarray(0, len));
    left -= len;
  }
}

/** SHA-256 (hex) of `prefix` followed by the stream for `seed` of length `n`. */
export function streamSha(seed, n, prefix) {
  const h = createHash('sha256');
  if (prefix) h.update(prefix);
  for (const b of keystream(seed, n, 256 * 1024)) h.update(b);
  return h.digest('hex');
}

/**
 * Write the stream to a socket with backpressure; resolves with its SHA-256 once all bytes
 * were handed to the socket, rejects if the socket fails first.
 */
export function writeStream(sock, seed, n, prefix) {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    if (prefix) {
      h.update(prefix);
      sock.write(prefix);
    }
    const gen = keystream(seed, n);
    let failed = false;
    const onErr = (e) => {
      failed = true;
      reject(e);
    };
    const onClose = () => {
      if (!failed) onErr(Object.assign(new Error('socket closed while writing'), { code: 'ECLOSED' }));
    };
    sock.once('error', onErr);
    sock.once('close', onClose);
    const pump = () => {
      for (;;) {
        if (failed || sock.destroyed) return;
        const { value, done } = gen.next();
        if (done) {
          sock.off('error', onErr);
          sock.off('close', onClose);
          resolve(h.digest('hex'));
          return;
        }
        h.update(value);
        if (!sock.write(value)) {
          sock.once('drain', pump);
          return;
        }
      }
    };
    pump();
  });
}
