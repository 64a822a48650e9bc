import { HEADER_SIZE } from './frame.js';

/**
 * Write a frame header into `target` at `offset`. The data path writes headers into a shared
 * slab (see Session) so a DATA frame costs no allocation of its own.
 */
export function writeHeader(target: Buffer, offset: number, type: number, flags: number, stream: number, length: number): void {
  target[offset] = type;
  target[offset + 1] = flags;
  target[offset + 2] = 0;
  target[offset + 3] = 0;
  target.writeUInt32BE(stream >>> 0, offset + 4);
  target.writeUInt32BE(length >>> 0, offset + 8);
}

/** A whole frame in one new buffer: for control frames, where allocation does not matter. */
export function encodeFrame(type: number, flags: number, stream: number, payload?: Uint8Array): Buffer {
  const len = payload ? payload.length : 0;
  const out = Buffer.allocUnsafe(HEADER_SIZE + len);
  writeHeader(out, 0, type, flags, stream, len);
  if (payload && len) out.set(payload, HEADER_SIZE);
  return out;
}

/** Address payload: port u16 | host length u8 | host (UTF-8: an IP literal or a DNS name). */
export function encodeAddress(host: string, port: number): Buffer {
  const h = Buffer.from(host, 'utf8');
  if (h.length > 255) throw new RangeError('host name longer than 255 bytes');
  const out = Buffer.allocUnsafe(3 + h.length);
  out.writeUInt16BE(port, 0);
  out[2] = h.length;
  h.copy(out, 3);
  return out;
}
