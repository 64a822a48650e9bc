// The client session's handshake (src/session/clientshake.ts): hello, signed reply and the keys
// both sides derive, replies read at every length, the hello's magic, and every way the reply can
// fail to prove the pinned relay (wrong certificate, wrong key, changed share, bad lengths).
import { beforeAll, describe, expect, it } from 'vitest';
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { certFingerprint, makeSelfSignedCert } from '../../src/agent/cert.js';
import { ErrorCode } from '../../src/errors.js';
import { ClientShakeError, HELLO_MAGIC, HELLO_SIZE, answerHello, encodeHello, parseHello, readReply } from '../../src/session/clientshake.js';
import { SHARE_SIZE, newKeyShare } from '../../src/session/seal.js';
import { TransportOpener, TransportSealer } from '../../src/session/transport.js';
import { codeOf as codeOfError } from '../support/errors.js';

interface Identity { der: Buffer; key: KeyObject; fingerprint: string }

const codeOf = (fn: () => unknown) => codeOfError(fn, ClientShakeError);

let relayId: Identity;
let otherId: Identity;

async function identity(): Promise<Identity> {
  const c = await makeSelfSignedCert();
  return { der: new X509Certificate(c.cert).raw, key: createPrivateKey(c.key), fingerprint: c.fingerprint };
}

beforeAll(async () => {
  relayId = await identity();
  otherId = await identity();
});

/** One handshake up to the relay's reply: the agent's share and hello, the relay's reply and keys. */
function shake(id: Identity = relayId, signer: KeyObject = id.key) {
  const agent = newKeyShare();
  const hello = encodeHello(agent);
  const relay = newKeyShare();
  const { reply, keys } = answerHello(hello, relay, id.der, signer);
  return { agent, hello, relay, reply, relayKeys: keys };
}

/** A reply header: cert length, certificate, share, sig length, signature, with any lengths. */
function craftReply(certLen: number, sigLen: number): Buffer {
  const b = Buffer.alloc(2 + certLen + SHARE_SIZE + 2 + sigLen, 0x30);
  b.writeUInt16BE(certLen, 0);
  b.writeUInt16BE(sigLen, 2 + certLen + SHARE_SIZE);
  return b;
}

describe('client handshake: keys', () => {
  it('hello, answerHello, readReply: both sides hold the same keys, swapped, and they carry transport records', () => {
    const { agent, hello, reply, relayKeys } = shake();
    expect(hello.length).toBe(HELLO_SIZE);
    expect(hello.subarray(0, HELLO_MAGIC.length).equals(HELLO_MAGIC)).toBe(true);
    const got = readReply(reply, hello, agent, relayId.fingerprint, certFingerprint);
    expect(got).not.toBeNull();
    const { keys, used, fingerprint } = got!;
    expect(used).toBe(reply.length);
    expect(fingerprint).toBe(relayId.fingerprint);
    expect(keys.send.length).toBe(16);
    expect(keys.send.equals(relayKeys.recv)).toBe(true);
    expect(keys.recv.equals(relayKeys.send)).toBe(true);
    expect(keys.send.equals(keys.recv)).toBe(false);
    // The early secret (for early records) is the same at both ends, and none of the keys.
    expect(keys.early).toHaveLength(32);
    expect(keys.early.equals(relayKeys.early)).toBe(true);
    expect(keys.early.subarray(0, 16).equals(keys.send) || keys.early.subarray(0, 16).equals(keys.recv)).toBe(false);
    // The keys work for the record layer in both directions.
    const up: Buffer[] = [];
    new TransportOpener(relayKeys.recv).push(Buffer.concat(new TransportSealer(keys.send).seal([Buffer.from('agent to relay')])), (b) => up.push(b));
    const down: Buffer[] = [];
    new TransportOpener(keys.recv).push(Buffer.concat(new TransportSealer(relayKeys.send).seal([Buffer.from('relay to agent')])), (b) => down.push(b));
    expect(Buffer.concat(up).toString()).toBe('agent to relay');
    expect(Buffer.concat(down).toString()).toBe('relay to agent');
  });

  it('readReply returns null for every strict prefix of the reply, and `used` is the reply length when more bytes follow', () => {
    const { agent, hello, reply, relayKeys } = shake();
    for (let n = 0; n < reply.length; n++) {
      expect(readReply(reply.subarray(0, n), hello, agent, relayId.fingerprint, certFingerprint), `prefix of ${n} bytes`).toBeNull();
    }
    const more = Buffer.concat([reply, Buffer.from([0, 0, 0, 5, 0, 0, 0, 0, 1, 2, 3])]);
    const got = readReply(more, hello, agent, relayId.fingerprint, certFingerprint)!;
    expect(got.used).toBe(reply.length);
    expect(got.keys.send.equals(relayKeys.recv)).toBe(true);
    expect(got.keys.recv.equals(relayKeys.send)).toBe(true);
  });

  it('two handshakes with the same certificate give different shares, replies and keys', () => {
    const a = shake();
    const b = shake();
    expect(a.agent.share.equals(b.agent.share)).toBe(false);
    expect(a.relay.share.equals(b.relay.share)).toBe(false);
    expect(a.reply.equals(b.reply)).toBe(false);
    const ka = readReply(a.reply, a.hello, a.agent, relayId.fingerprint, certFingerprint)!.keys;
    const kb = readReply(b.reply, b.hello, b.agent, relayId.fingerprint, certFingerprint)!.keys;
    expect(ka.send.equals(kb.send)).toBe(false);
    expect(ka.recv.equals(kb.recv)).toBe(false);
  });
});

describe('client handshake: the hello', () => {
  it('parseHello returns null for every strict prefix of a good hello, and the share for the whole of it', () => {
    const agent = newKeyShare();
    const hello = encodeHello(agent);
    for (let n = 0; n < HELLO_SIZE; n++) expect(parseHello(hello.subarray(0, n)), `prefix of ${n} bytes`).toBeNull();
    expect(parseHello(hello)!.equals(agent.share)).toBe(true);
    expect(parseHello(Buffer.concat([hello, Buffer.from('next')]))!.equals(agent.share)).toBe(true);
  });

  it('a wrong magic is PS_ERR_SESSION_AUTH, from its first wrong byte (a TLS ClientHello, HTTP, a changed version)', () => {
    expect(codeOf(() => parseHello(Buffer.from([0x16])))).toBe(ErrorCode.SESSION_AUTH);
    expect(codeOf(() => parseHello(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])))).toBe(ErrorCode.SESSION_AUTH);
    expect(codeOf(() => parseHello(Buffer.from('GET / HTTP/1.1\r\n')))).toBe(ErrorCode.SESSION_AUTH);
    const hello = encodeHello(newKeyShare());
    for (let i = 0; i < HELLO_MAGIC.length; i++) {
      const bad = Buffer.from(hello);
      bad[i]! ^= 0x01;
      expect(codeOf(() => parseHello(bad.subarray(0, i + 1))), `byte ${i} of a prefix`).toBe(ErrorCode.SESSION_AUTH);
      expect(codeOf(() => parseHello(bad)), `byte ${i}`).toBe(ErrorCode.SESSION_AUTH);
    }
  });

  it('answerHello refuses a hello cut short and an all-zero (low-order) agent share with PS_ERR_SESSION_AUTH', () => {
    const hello = encodeHello(newKeyShare());
    expect(codeOf(() => answerHello(hello.subarray(0, HELLO_SIZE - 1), newKeyShare(), relayId.der, relayId.key))).toBe(ErrorCode.SESSION_AUTH);
    const zero = Buffer.concat([HELLO_MAGIC, Buffer.alloc(SHARE_SIZE)]);
    expect(codeOf(() => answerHello(zero, newKeyShare(), relayId.der, relayId.key))).toBe(ErrorCode.SESSION_AUTH);
  });
});

describe('client handshake: a reply that does not prove the pinned relay', () => {
  it('a certificate other than the pinned one: PS_ERR_FINGERPRINT_MISMATCH', () => {
    const { agent, hello, reply } = shake();
    expect(codeOf(() => readReply(reply, hello, agent, otherId.fingerprint, certFingerprint))).toBe(ErrorCode.FINGERPRINT_MISMATCH);
    const other = shake(otherId);
    expect(codeOf(() => readReply(other.reply, other.hello, other.agent, relayId.fingerprint, certFingerprint))).toBe(ErrorCode.FINGERPRINT_MISMATCH);
  });

  it('the pinned certificate, signed by another key: PS_ERR_SESSION_AUTH', () => {
    const { agent, hello, reply } = shake(relayId, otherId.key);
    expect(codeOf(() => readReply(reply, hello, agent, relayId.fingerprint, certFingerprint))).toBe(ErrorCode.SESSION_AUTH);
  });

  it('the relay share swapped after signing, a flipped signature bit, or a reply to another hello: PS_ERR_SESSION_AUTH', () => {
    const { agent, hello, reply } = shake();
    const shareAt = 2 + relayId.der.length;
    const swapped = Buffer.from(reply);
    newKeyShare().share.copy(swapped, shareAt);
    expect(codeOf(() => readReply(swapped, hello, agent, relayId.fingerprint, certFingerprint))).toBe(ErrorCode.SESSION_AUTH);
    const flipped = Buffer.from(reply);
    flipped[reply.length - 5]! ^= 0x01;
    expect(codeOf(() => readReply(flipped, hello, agent, relayId.fingerprint, certFingerprint))).toBe(ErrorCode.SESSION_AUTH);
    // A genuine reply, but to another agent's hello: the signature covers the hello.
    const elsewhere = shake();
    expect(codeOf(() => readReply(elsewhere.reply, hello, agent, relayId.fingerprint, certFingerprint))).toBe(ErrorCode.SESSION_AUTH);
  });

  it('an all-zero (low-order) relay share, even signed: PS_ERR_SESSION_AUTH', () => {
    const agent = newKeyShare();
    const hello = encodeHello(agent);
    // answerHello signs and sends `own.share` as it is: a relay that sends a low-order share.
    const { reply } = answerHello(hello, { privateKey: newKeyShare().privateKey, share: Buffer.alloc(SHARE_SIZE) }, relayId.der, relayId.key);
    expect(codeOf(() => readReply(reply, hello, agent, relayId.fingerprint, certFingerprint))).toBe(ErrorCode.SESSION_AUTH);
  });

  it('a TLS server or a server with a banner (SSH) is named in the error, not waited for', () => {
    const { agent, hello } = shake();
    const read = (b: Buffer) => () => readReply(b, hello, agent, relayId.fingerprint, certFingerprint);
    const tlsAlert = Buffer.from('150303000202', 'hex'); // what a TLS server answers to our hello
    expect(codeOf(read(tlsAlert))).toBe(ErrorCode.SESSION_AUTH);
    expect(() => read(tlsAlert)()).toThrow(/answered with TLS .*clients\.listen/);
    expect(() => read(Buffer.from('SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n'))()).toThrow("not a portside client port: it answered 'SSH-2.0-OpenSSH_9.2p1 Debian-2'");
    expect(() => read(Buffer.from('ffee0102030405060708', 'hex'))()).toThrow('it answered 0xffee010203040506…');
  });

  it('a certificate length of 0 or over 16 KiB, or a signature length of 0 or over 512: PS_ERR_SESSION_AUTH from the length alone', () => {
    const { agent, hello } = shake();
    const read = (b: Buffer) => () => readReply(b, hello, agent, relayId.fingerprint, certFingerprint);
    expect(codeOf(read(Buffer.from([0, 0])))).toBe(ErrorCode.SESSION_AUTH);
    expect(codeOf(read(Buffer.from([0x40, 0x01])))).toBe(ErrorCode.SESSION_AUTH); // 16 KiB + 1
    expect(codeOf(read(Buffer.from([0xff, 0xff])))).toBe(ErrorCode.SESSION_AUTH);
    expect(read(Buffer.from([0x40, 0x00]))()).toBeNull(); // 16 KiB exactly: wait for it
    const sigAt = 2 + 100 + SHARE_SIZE;
    expect(codeOf(read(craftReply(100, 0)))).toBe(ErrorCode.SESSION_AUTH);
    expect(codeOf(read(craftReply(100, 513).subarray(0, sigAt + 2)))).toBe(ErrorCode.SESSION_AUTH);
    // A bad certificate of a good length fails on the pin, before any parsing.
    expect(codeOf(read(craftReply(100, 72)))).toBe(ErrorCode.FINGERPRINT_MISMATCH);
  });
});
