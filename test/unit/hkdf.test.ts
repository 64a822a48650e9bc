import { hkdfSync, randomBytes, randomInt } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { hkdf } from '../../src/session/hkdf.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('hkdf (HKDF-SHA256 with plain HMACs)', () => {
  it('gives RFC 5869 test case 1', () => {
    const okm = hkdf(hex('0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b'), hex('000102030405060708090a0b0c'), hex('f0f1f2f3f4f5f6f7f8f9'), 42);
    expect(okm.toString('hex')).toBe('3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865');
  });

  it('gives RFC 5869 test case 3 (no salt, no info)', () => {
    const okm = hkdf(hex('0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b'), Buffer.alloc(0), Buffer.alloc(0), 42);
    expect(okm.toString('hex')).toBe('8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8');
  });

  it("equals Node's hkdfSync for random keys, salts, labels and lengths", () => {
    for (let i = 0; i < 300; i++) {
      const ikm = randomBytes(randomInt(1, 80));
      const salt = randomBytes(randomInt(0, 80));
      const info = i % 2 ? randomBytes(randomInt(0, 40)) : `portside label ${i}`;
      const len = randomInt(1, 200);
      expect(hkdf(ikm, salt, info, len).equals(Buffer.from(hkdfSync('sha256', ikm, salt, info, len)))).toBe(true);
    }
  });

  it('refuses a length RFC 5869 does not allow', () => {
    expect(() => hkdf(randomBytes(32), Buffer.alloc(0), 'x', 255 * 32 + 1)).toThrow(RangeError);
  });
});
