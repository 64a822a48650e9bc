import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { hkdf } from './hkdf.js';
import { AuthError, ErrorCode, MalformedFrameError } from '../errors.js';

/**
 * The trial exchange (patent Fig. 9, claim 10), made replay-proof.
 *
 * The patent has each side send r and E_K(r) on its own, so a recorded pair can be replayed.
 * Here each side proves knowledge of K over BOTH challenges and the TLS channel it runs on
 * (an exporter value, RFC 8446 7.5): a proof recorded on one session is worthless on another.
 *
 *   inside  → outside  TRIAL_REQ  version(1) | nonce_i(32)
 *   outside → inside   TRIAL_RSP  nonce_o(32) | proof_o(32)
 *   inside  → outside  TRIAL_FIN  proof_i(32)
 *   proof_x = HMAC-SHA256(K_trial, "portside trial v1 " | x | nonce_i | nonce_o | binding)
 */
export const TRIAL_VERSION = 1;
const NONCE = 32;

export interface DerivedKeys {
  /** TLS 1.3 external PSK (ciphersuite-bound by TLS itself). */
  psk: Buffer;
  /** Key for the trial exchange proofs. */
  trial: Buffer;
}

/** Both keys come from the one shared key through HKDF, so neither use weakens the other. */
export function deriveKeys(shared: Buffer): DerivedKeys {
  if (shared.length < 16) throw new AuthError('shared key shorter than 16 bytes', ErrorCode.KEY);
  const k = (info: string) => hkdf(shared, Buffer.alloc(0), info, 32);
  return { psk: k('portside tls psk v1'), trial: k('portside trial v1') };
}

function proof(key: Buffer, who: 'inside' | 'outside', ni: Buffer, no: Buffer, binding: Buffer): Buffer {
  return createHmac('sha256', key).update(`portside trial v1 ${who}`).update(ni).update(no).update(binding).digest();
}

function same(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Inside relay's half: start() then onResponse(). */
export class InsideTrial {
  private readonly nonce = randomBytes(NONCE);
  constructor(private readonly key: Buffer, private readonly binding: Buffer) {}

  start(): Buffer {
    return Buffer.concat([Buffer.of(TRIAL_VERSION), this.nonce]);
  }

  /** Verify the outside relay's proof; returns the TRIAL_FIN payload. */
  onResponse(payload: Buffer): Buffer {
    if (payload.length !== 2 * NONCE) throw new MalformedFrameError('trial.rsp must be 64 bytes');
    const no = payload.subarray(0, NONCE);
    const got = payload.subarray(NONCE);
    if (!same(got, proof(this.key, 'outside', this.nonce, no, this.binding))) {
      throw new AuthError('the outside relay failed the trial: wrong key, or a response recorded from another session');
    }
    return proof(this.key, 'inside', this.nonce, no, this.binding);
  }
}

/** Outside relay's half: onRequest() then onFinish(). */
export class OutsideTrial {
  private readonly nonce = randomBytes(NONCE);
  private nonceI: Buffer | null = null;
  constructor(private readonly key: Buffer, private readonly binding: Buffer, private readonly seen?: NonceLog) {}

  onRequest(payload: Buffer): Buffer {
    if (payload.length !== 1 + NONCE) throw new MalformedFrameError('trial.req must be 33 bytes');
    if (payload[0] !== TRIAL_VERSION) throw new AuthError(`unsupported trial version ${payload[0]}`);
    const ni = Buffer.from(payload.subarray(1));
    if (this.seen && !this.seen.add(ni)) throw new AuthError('trial.req nonce seen before: a replayed trial', ErrorCode.AUTH_REPLAY);
    this.nonceI = ni;
    return Buffer.concat([this.nonce, proof(this.key, 'outside', ni, this.nonce, this.binding)]);
  }

  onFinish(payload: Buffer): void {
    if (!this.nonceI) throw new AuthError('trial.fin before trial.req');
    if (payload.length !== 32) throw new MalformedFrameError('trial.fin must be 32 bytes');
    if (!same(payload, proof(this.key, 'inside', this.nonceI, this.nonce, this.binding))) {
      throw new AuthError('the inside relay failed the trial: wrong key, or a proof recorded from another session');
    }
  }
}

/** Bounded memory of recent inside nonces, so a replayed trial.req is named as such. */
export class NonceLog {
  private readonly set = new Set<string>();
  constructor(private readonly max = 4096) {}
  add(nonce: Buffer): boolean {
    const k = nonce.toString('base64');
    if (this.set.has(k)) return false;
    this.set.add(k);
    if (this.set.size > this.max) this.set.delete(this.set.values().next().value as string);
    return true;
  }
}
