import { describe, expect, it } from 'vitest';
import { AddressRate, Refusals } from '../../src/relay/ratelimit.js';

describe('AddressRate (handshakes per address)', () => {
  it('allows a burst, then the rate, per address, never saving up beyond the burst', () => {
    let t = 0;
    const r = new AddressRate(2, 3, () => t);
    expect([1, 2, 3, 4].map(() => r.take('a'))).toEqual([true, true, true, false]);
    expect(r.take('b')).toBe(true); // another address has its own bucket
    t = 500; // half a second at 2 a second: one token back
    expect(r.take('a')).toBe(true);
    expect(r.take('a')).toBe(false);
    t = 10_000;
    expect([1, 2, 3, 4].map(() => r.take('a'))).toEqual([true, true, true, false]);
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

describe('Refusals (what to log of a flood)', () => {
  it('reports the first refusal from an address at once, then the rest together at most once per interval', () => {
    let t = 0;
    const r = new Refusals(10_000, () => t);
    expect(r.note('a')).toBe(1);
    expect(r.note('a')).toBe(0);
    expect(r.note('b')).toBe(1); // per address
    t = 9_999;
    expect(r.note('a')).toBe(0);
    t = 10_000;
    expect(r.note('a')).toBe(3);
    expect(r.note('a')).toBe(0);
  });
});
