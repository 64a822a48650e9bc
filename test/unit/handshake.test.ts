import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ErrorCode, PortsideError, Result } from '../../src/errors.js';
import { deriveKeys, InsideTrial, NonceLog, OutsideTrial, TRIAL_VERSION } from '../../src/session/handshake.js';

const code = (fn: () => unknown): string => {
  try {
    fn();
    return 'none';
  } catch (e) {
    expect(e).toBeInstanceOf(PortsideError);
    return (e as PortsideError).code;
  }
};

/** One full trial exchange; returns what went over the wire. */
function exchange(insideKey: Buffer, outsideKey: Buffer, binding: Buffer, log?: NonceLog) {
  const inside = new InsideTrial(deriveKeys(insideKey).trial, binding);
  const outside = new OutsideTrial(deriveKeys(outsideKey).trial, binding, log);
  const req = inside.start();
  const rsp = outside.onRequest(req);
  const fin = inside.onResponse(rsp);
  outside.onFinish(fin);
  return { req, rsp, fin };
}

describe('trial exchange', () => {
  const key = randomBytes(32);
  const binding = randomBytes(32);

  it('the right key passes both ways, with the documented sizes', () => {
    const { req, rsp, fin } = exchange(key, key, binding, new NonceLog());
    expect(req.length).toBe(33);
    expect(req[0]).toBe(TRIAL_VERSION);
    expect(rsp.length).toBe(64);
    expect(fin.length).toBe(32);
  });

  it('the proofs are exactly HMAC-SHA256(K_trial, "portside trial v1 <who>" | nonce_i | nonce_o | binding)', () => {
    const kTrial = Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), 'portside trial v1', 32));
    expect(deriveKeys(key).trial.equals(kTrial)).toBe(true);
    const kPsk = Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), 'portside tls psk v1', 32));
    expect(deriveKeys(key).psk.equals(kPsk)).toBe(true);
    const { req, rsp, fin } = exchange(key, key, binding);
    const ni = req.subarray(1);
    const no = rsp.subarray(0, 32);
    const mac = (who: string) => createHmac('sha256', kTrial).update(`portside trial v1 ${who}`).update(ni).update(no).update(binding).digest();
    expect(rsp.subarray(32).equals(mac('outside'))).toBe(true);
    expect(fin.equals(mac('inside'))).toBe(true);
  });

  it('a wrong key fails on both sides with PS_ERR_AUTH_FAILED', () => {
    const other = randomBytes(32);
    // The inside relay catches an outside relay with the wrong key ...
    const inside = new InsideTrial(deriveKeys(key).trial, binding);
    const badOutside = new OutsideTrial(deriveKeys(other).trial, binding);
    expect(code(() => inside.onResponse(badOutside.onRequest(inside.start())))).toBe(ErrorCode.AUTH_FAILED);
    // ... and the outside relay catches an inside relay with the wrong key (a forged fin).
    const outside = new OutsideTrial(deriveKeys(key).trial, binding);
    const badInside = new InsideTrial(deriveKeys(other).trial, binding);
    const rsp = outside.onRequest(badInside.start());
    // The bad inside relay cannot verify rsp, so it can only send a guess:
    expect(code(() => outside.onFinish(randomBytes(32)))).toBe(ErrorCode.AUTH_FAILED);
    expect(code(() => badInside.onResponse(rsp))).toBe(ErrorCode.AUTH_FAILED);
    const err = (() => { try { outside.onFinish(randomBytes(32)); } catch (e) { return e as PortsideError; } })();
    expect(err?.result).toBe(Result.AUTH_FAILED);
  });

  it('a trial.fin recorded on another session fails (different binding and nonces)', () => {
    const recorded = exchange(key, key, binding);
    // A new session: new TLS channel, new nonces. The attacker replays the old req and fin.
    const outside = new OutsideTrial(deriveKeys(key).trial, randomBytes(32));
    outside.onRequest(recorded.req);
    expect(code(() => outside.onFinish(recorded.fin))).toBe(ErrorCode.AUTH_FAILED);
  });

  it('the same nonces on a different channel fail: the proof is bound to the channel', () => {
    // Even a responder that reused its nonce could not be fooled: binding alone changes the proof.
    const inside = new InsideTrial(deriveKeys(key).trial, binding);
    const relayed = new OutsideTrial(deriveKeys(key).trial, randomBytes(32));
    // A man in the middle relays trial messages between two TLS sessions.
    expect(code(() => inside.onResponse(relayed.onRequest(inside.start())))).toBe(ErrorCode.AUTH_FAILED);
  });

  it('a trial.rsp recorded on another session fails at the inside relay', () => {
    const recorded = exchange(key, key, binding);
    const inside = new InsideTrial(deriveKeys(key).trial, binding);
    inside.start();
    expect(code(() => inside.onResponse(recorded.rsp))).toBe(ErrorCode.AUTH_FAILED);
  });

  it('a replayed trial.req nonce with a NonceLog gives PS_ERR_AUTH_REPLAY', () => {
    const log = new NonceLog();
    const first = exchange(key, key, binding, log);
    const outside = new OutsideTrial(deriveKeys(key).trial, randomBytes(32), log);
    expect(code(() => outside.onRequest(first.req))).toBe(ErrorCode.AUTH_REPLAY);
  });

  it('the NonceLog forgets the oldest nonce beyond its size', () => {
    const log = new NonceLog(3);
    const n = [0, 1, 2, 3].map(() => randomBytes(32));
    for (const x of n) expect(log.add(x)).toBe(true);
    expect(log.add(n[3])).toBe(false);
    expect(log.add(n[0])).toBe(true); // forgotten: memory stays bounded
  });

  it('malformed lengths give PS_ERR_MALFORMED_FRAME', () => {
    const outside = new OutsideTrial(deriveKeys(key).trial, binding);
    for (const n of [0, 1, 32, 34, 200]) expect(code(() => outside.onRequest(Buffer.alloc(n, TRIAL_VERSION)))).toBe(ErrorCode.MALFORMED_FRAME);
    const inside = new InsideTrial(deriveKeys(key).trial, binding);
    inside.start();
    for (const n of [0, 32, 63, 65]) expect(code(() => inside.onResponse(Buffer.alloc(n)))).toBe(ErrorCode.MALFORMED_FRAME);
    const o2 = new OutsideTrial(deriveKeys(key).trial, binding);
    o2.onRequest(new InsideTrial(deriveKeys(key).trial, binding).start());
    for (const n of [0, 31, 33, 64]) expect(code(() => o2.onFinish(Buffer.alloc(n)))).toBe(ErrorCode.MALFORMED_FRAME);
  });

  it('a wrong version, or a fin before a req, fails authentication', () => {
    const outside = new OutsideTrial(deriveKeys(key).trial, binding);
    const req = new InsideTrial(deriveKeys(key).trial, binding).start();
    req[0] = 2;
    expect(code(() => outside.onRequest(req))).toBe(ErrorCode.AUTH_FAILED);
    expect(code(() => new OutsideTrial(deriveKeys(key).trial, binding).onFinish(Buffer.alloc(32)))).toBe(ErrorCode.AUTH_FAILED);
  });

  it('keys shorter than 16 bytes are refused with PS_ERR_KEY', () => {
    expect(code(() => deriveKeys(Buffer.alloc(15)))).toBe(ErrorCode.KEY);
    const d = deriveKeys(Buffer.alloc(16, 1));
    expect(d.psk.length).toBe(32);
    expect(d.psk.equals(d.trial)).toBe(false);
  });
});
