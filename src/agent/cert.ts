/**
 * The outside relay's client-port certificate: a self-signed ECDSA P-256 certificate. Agents do
 * not trust a CA; they pin the certificate's SHA-256 fingerprint (client config
 * `outside_fingerprint`), printed by `portside keygen --cert`.
 */
import { X509Certificate, createHash, webcrypto } from 'node:crypto';
import { ConfigError } from '../errors.js';

export async function makeSelfSignedCert(commonName = 'portside-outside', days = 3650): Promise<{ cert: string; key: string; fingerprint: string }> {
  // @peculiar/x509 2.x needs the reflect polyfill; loaded only here, for keygen.
  await import('reflect-metadata');
  const x509 = await import('@peculiar/x509');
  x509.cryptoProvider.set(webcrypto as unknown as Crypto);
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const now = Date.now();
  const c = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(8))).toString('hex').replace(/^[89a-f]/, '1'),
    name: `CN=${commonName}`,
    notBefore: new Date(now - 86_400_000),
    notAfter: new Date(now + days * 86_400_000),
    keys: keys as unknown as CryptoKeyPair,
    signingAlgorithm: alg,
  });
  const cert = c.toString('pem') + '\n';
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const key = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n?$/, '\n')}-----END PRIVATE KEY-----\n`;
  return { cert, key, fingerprint: certFingerprint(cert) };
}

/** SHA-256 of the certificate's DER, lower-case hex without separators. */
export function certFingerprint(pemOrDer: string | Buffer): string {
  const der = typeof pemOrDer === 'string' ? new X509Certificate(pemOrDer).raw : pemOrDer;
  return createHash('sha256').update(der).digest('hex');
}

/** Accept `sha256:HEX`, `AA:BB:…` or plain hex; return lower-case hex. */
export function normalizeFingerprint(s: string): string {
  const hex = s.trim().replace(/^sha256:/i, '').replace(/:/g, '').toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new ConfigError(`outside_fingerprint '${s}' is not a SHA-256 fingerprint (64 hex digits, colons allowed)`);
  return hex;
}
