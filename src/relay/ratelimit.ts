/**
 * Per peer address, for what anyone who reaches a port may do: token buckets for the handshakes
 * they start (each costs the outside relay a signature and a key exchange), and a tally of their
 * refused connections, so a flood is logged as a line per address now and then, not a line each.
 * Pure: the clock is injected. Each keeps at most `maxAddresses`, forgetting the longest-tracked
 * first (a full bucket, or a tally just reported, is the same as none).
 */
class PerAddress<T> {
  private readonly map = new Map<string, T>();
  constructor(private readonly make: () => T, private readonly maxAddresses: number) {}
  get(address: string): T {
    let v = this.map.get(address);
    if (!v) {
      if (this.map.size >= this.maxAddresses) this.map.delete(this.map.keys().next().value as string);
      this.map.set(address, (v = this.make()));
    }
    return v;
  }
  get size(): number {
    return this.map.size;
  }
}

export class AddressRate {
  private readonly buckets: PerAddress<{ tokens: number; at: number }>;

  /** `rate` tokens a second per address, at most `burst` saved up. */
  constructor(private readonly rate: number, private readonly burst: number, private readonly now: () => number = Date.now, maxAddresses = 10_000) {
    this.buckets = new PerAddress(() => ({ tokens: burst, at: now() }), maxAddresses);
  }

  /** Take one token for `address`; false when its bucket is empty. */
  take(address: string): boolean {
    const b = this.buckets.get(address);
    const t = this.now();
    b.tokens = Math.min(this.burst, b.tokens + ((t - b.at) / 1000) * this.rate);
    b.at = t;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  get size(): number {
    return this.buckets.size;
  }
}

export class Refusals {
  private readonly tally: PerAddress<{ count: number; reportedAt: number }>;

  /** Report at most once per `everyMs` per address. */
  constructor(private readonly everyMs = 10_000, private readonly now: () => number = Date.now, maxAddresses = 10_000) {
    this.tally = new PerAddress(() => ({ count: 0, reportedAt: -Infinity }), maxAddresses);
  }

  /** Count a refused connection from `address`; returns how many to report now (this one and those not yet reported), or 0. */
  note(address: string): number {
    const r = this.tally.get(address);
    r.count++;
    const t = this.now();
    if (t - r.reportedAt < this.everyMs) return 0;
    const n = r.count;
    r.count = 0;
    r.reportedAt = t;
    return n;
  }
}
