/**
 * Token buckets per peer address, for the handshakes anyone who reaches a port may start (each
 * costs the outside relay a signature and a key exchange). Pure: the clock is injected.
 */
export class AddressRate {
  private readonly buckets = new Map<string, { tokens: number; at: number; refused: number; warnedAt: number }>();

  /** `rate` tokens a second per address, at most `burst` saved up; at most `maxAddresses` tracked. */
  constructor(
    private readonly rate: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
    private readonly maxAddresses = 10_000,
  ) {}

  private bucket(address: string, t: number): { tokens: number; at: number; refused: number; warnedAt: number } {
    let b = this.buckets.get(address);
    if (!b) {
      // Forget the longest-tracked address first: a full bucket is the same as none.
      if (this.buckets.size >= this.maxAddresses) this.buckets.delete(this.buckets.keys().next().value as string);
      b = { tokens: this.burst, at: t, refused: 0, warnedAt: -Infinity };
      this.buckets.set(address, b);
    }
    return b;
  }

  /** Take one token for `address`; false when its bucket is empty (and the refusal is counted). */
  take(address: string): boolean {
    const t = this.now();
    const b = this.bucket(address, t);
    b.tokens = Math.min(this.burst, b.tokens + ((t - b.at) / 1000) * this.rate);
    b.at = t;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return true;
    }
    b.refused++;
    return false;
  }

  /** Count a refusal for `address` made for another reason (a limit elsewhere), to report with the rest. */
  refused(address: string): void {
    this.bucket(address, this.now()).refused++;
  }

  /**
   * Refusals for `address` to report now, once per `everyMs` (a flood must not become a flood of
   * log lines): the count since the last report, or 0 when it is not yet time.
   */
  refusalsToReport(address: string, everyMs = 10_000): number {
    const b = this.buckets.get(address);
    if (!b || b.refused === 0 || this.now() - b.warnedAt < everyMs) return 0;
    const n = b.refused;
    b.refused = 0;
    b.warnedAt = this.now();
    return n;
  }

  get size(): number {
    return this.buckets.size;
  }
}
