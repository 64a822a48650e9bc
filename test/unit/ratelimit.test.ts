import { describe, expect, it } from 'vitest';
import { AddressRate } from '../../src/relay/ratelimit.js';

describe('AddressRate (handshakes per address)', () => {
  it('allows a burst, then the rate, per address; refusals are reported at most once per interval', () => {
    let t = 0;
    const r = new AddressRate(2, 3, () => t);
    expect([1, 2, 3, 4].map(() => r.take('a'))).toEqual([true, true, true, false]);
    expect(r.take('b')).toBe(true); // another address has its own bucket
    expect(r.refusalsToReport('a')).toBe(1);
    expect(r.take('a')).toBe(false);
    expect(r.refusalsToReport('a')).toBe(0); // reported less than 10 s ago
    t = 500; // half a second at 2 a second: one token back
    expect(r.take('a')).toBe(true);
    expect(r.take('a')).toBe(false);
    t = 10_000;
    expect(r.refusalsToReport('a')).toBe(2);
    expect(r.take('a')).toBe(true); // refilled, never beyond the burst
    expect(r.take('a')).toBe(true);
    expect(r.take('a')).toBe(true);
    expect(r.take('a')).toBe(false);
  });

  it('tracks at most maxAddresses, forgetting the longest-tracked first', () => {
    const r = new AddressRate(1, 1, () => 0, 3);
    for (const a of ['a', 'b', 'c']) expect(r.take(a)).toBe(true);
    expect(r.take('a')).toBe(false);
    expect(r.take('d')).toBe(true); // 'a' is forgotten to make room
    expect(r.size).toBe(3);
    expect(r.take('b')).toBe(false); // still tracked, still empty
    expect(r.take('a')).toBe(true); // forgotten: a full bucket again
  });
});
