import tls from 'node:tls';

/**
 * TLS 1.3 with an external PSK derived from the shared key (docs/protocol.md):
 * no certificates to manage, both sides authenticated by the key, and (EC)DHE on
 * top of the PSK (OpenSSL offers only psk_dhe_ke) gives forward secrecy.
 * TLS 1.3 PSK in OpenSSL works with the SHA-256 suites only.
 */
export const TLS_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256';
export const EXPORTER_LABEL = 'EXPORTER-portside-trial';

export function serverOptions(pskFor: (identity: string) => Buffer | null): tls.TlsOptions {
  return {
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    ciphers: TLS_CIPHERS,
    pskCallback: (socket, identity) => {
      const psk = pskFor(identity);
      if (psk) (socket as tls.TLSSocket & { pskIdentity?: string }).pskIdentity = identity;
      return psk;
    },
  };
}

export function clientOptions(identity: string, psk: Buffer): tls.ConnectionOptions {
  return {
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    ciphers: TLS_CIPHERS,
    pskCallback: () => ({ psk, identity }),
    // No certificate exists; the PSK authenticates the server.
    checkServerIdentity: () => undefined,
  };
}

/** Channel binding for the trial exchange. */
export function channelBinding(socket: tls.TLSSocket): Buffer {
  return socket.exportKeyingMaterial(32, EXPORTER_LABEL, Buffer.alloc(0));
}
