import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deriveKeys } from '../../src/session/handshake.js';
import { channelBinding, clientOptions, serverOptions } from '../../src/relay/tls.js';

/** Real loopback sockets on port 0: the TLS 1.3 PSK pair exactly as the relays build it. */
const keyA = deriveKeys(Buffer.alloc(32, 0xa1)).psk;
const keyB = deriveKeys(Buffer.alloc(32, 0xb2)).psk;

let server: tls.Server;
let port: number;
const accepted: tls.TLSSocket[] = [];
const clientErrors: Error[] = [];

beforeAll(async () => {
  server = tls.createServer(serverOptions((id) => (id === 'branch-a' ? keyA : null)));
  server.on('secureConnection', (s: tls.TLSSocket) => {
    accepted.push(s);
    s.on('error', () => {});
    s.on('data', (d) => s.write(d)); // echo
  });
  server.on('tlsClientError', (err: Error) => clientErrors.push(err));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  for (const s of accepted) s.destroy();
  await new Promise<void>((r) => server.close(() => r()));
});

/** Connect; resolves with the socket once secure, rejects on a TLS failure. */
function connect(identity: string, psk: Buffer): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, ...clientOptions(identity, psk) });
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
}

/** The server-side socket for a client socket, matched by port. */
async function serverSide(c: tls.TLSSocket): Promise<tls.TLSSocket> {
  for (;;) {
    const s = accepted.find((a) => a.remotePort === c.localPort);
    if (s) return s;
    await once(server, 'secureConnection');
  }
}

describe('TLS 1.3 with an external PSK', () => {
  it('connects with the same key: TLSv1.3, TLS_AES_128_GCM_SHA256, equal channel binding', async () => {
    const c = await connect('branch-a', keyA);
    const s = await serverSide(c);
    expect(c.getProtocol()).toBe('TLSv1.3');
    expect(s.getProtocol()).toBe('TLSv1.3');
    expect(c.getCipher().standardName).toBe('TLS_AES_128_GCM_SHA256');
    expect(s.getCipher().standardName).toBe('TLS_AES_128_GCM_SHA256');
    expect((s as tls.TLSSocket & { pskIdentity?: string }).pskIdentity).toBe('branch-a');
    const bc = channelBinding(c);
    const bs = channelBinding(s);
    expect(bc.length).toBe(32);
    expect(bc.equals(bs)).toBe(true);
    // No certificate is involved at all.
    expect(c.getPeerCertificate()).toEqual({});
    c.write('ping');
    const [echo] = await once(c, 'data');
    expect(echo.toString()).toBe('ping');
    c.destroy();
  });

  it('forward secrecy: the key exchange is psk_dhe_ke (an ephemeral X25519 share on top of the PSK)', async () => {
    const c = await connect('branch-a', keyA);
    // psk_ke would carry no key_share and leave no ephemeral key; psk_dhe_ke has one.
    const eph = c.getEphemeralKeyInfo() as { type?: string; name?: string; size?: number };
    expect(eph.type).toBe('ECDH');
    expect(eph.name).toBe('X25519');
    // The PSK was used (a resumption-style handshake), not a certificate.
    expect(c.isSessionReused()).toBe(true);
    c.destroy();
  });

  it('two connections have different channel bindings', async () => {
    const c1 = await connect('branch-a', keyA);
    const c2 = await connect('branch-a', keyA);
    const b1 = channelBinding(c1);
    const b2 = channelBinding(c2);
    expect(b1.equals(b2)).toBe(false);
    expect(channelBinding(await serverSide(c1)).equals(b1)).toBe(true);
    expect(channelBinding(await serverSide(c2)).equals(b2)).toBe(true);
    c1.destroy();
    c2.destroy();
  });

  it('a different key fails the handshake on both ends', async () => {
    const before = clientErrors.length;
    const serverFailed = once(server, 'tlsClientError');
    await expect(connect('branch-a', keyB)).rejects.toThrow(/alert|decrypt|handshake|psk/i);
    await serverFailed;
    expect(clientErrors.length).toBeGreaterThan(before);
  });

  it('an unknown identity fails the handshake', async () => {
    const serverFailed = once(server, 'tlsClientError');
    await expect(connect('branch-z', keyA)).rejects.toThrow();
    await serverFailed;
  });

  it('TLS 1.2 is refused', async () => {
    const serverFailed = once(server, 'tlsClientError');
    await expect(new Promise((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, ...clientOptions('branch-a', keyA), minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: 'PSK-AES128-GCM-SHA256' });
      s.once('secureConnect', () => resolve(s));
      s.once('error', reject);
    })).rejects.toThrow();
    await serverFailed;
  });
});
