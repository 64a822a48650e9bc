// ByteReader (src/agent/socks.ts): reads exactly what a SOCKS5 handshake asks for; a peer that
// ends or fails early rejects the read waiting with a coded error; bytes past the handshake are
// handed back.
import { describe, expect, it } from 'vitest';
import { PassThrough, Readable } from 'node:stream';
import { ByteReader } from '../../src/agent/socks.js';

describe('ByteReader', () => {
  it('reads across chunks, and hands back what came past the handshake', async () => {
    const src = new PassThrough();
    const r = new ByteReader(src);
    const first = r.read(3);
    src.write(Buffer.of(1, 2));
    src.write(Buffer.of(3, 4, 5));
    expect([...(await first)]).toEqual([1, 2, 3]);
    expect(r.pending).toBe(2);
    expect([...r.take()]).toEqual([4, 5]);
  });

  it('an end after everything was read is no error; a read the end leaves short is PS_ERR_CONNECT_FAILED', async () => {
    const r = new ByteReader(Readable.from([Buffer.of(5, 1, 2)]));
    expect([...(await r.read(3))]).toEqual([5, 1, 2]);
    await new Promise((res) => setImmediate(res));
    await expect(r.read(1)).rejects.toMatchObject({ code: 'PS_ERR_CONNECT_FAILED', message: 'peer closed during the SOCKS5 handshake' });
  });

  it('a read waiting when the peer fails is rejected with the cause; a read still waiting past 4 KiB is PS_ERR_PROTOCOL', async () => {
    const src = new PassThrough();
    const r = new ByteReader(src);
    const waiting = r.read(10);
    src.destroy(new Error('boom'));
    await expect(waiting).rejects.toMatchObject({ code: 'PS_ERR_CONNECT_FAILED', message: 'during the SOCKS5 handshake: boom' });
    const big = new PassThrough();
    const r2 = new ByteReader(big);
    const w2 = r2.read(5000);
    big.write(Buffer.alloc(4097));
    await expect(w2).rejects.toMatchObject({ code: 'PS_ERR_PROTOCOL' });
  });
});
