/**
 * A token bucket: the per-endpoint rate limit of the webhook connector (`rateLimit: {
 * perSecond, burst }`). The bucket holds up to `burst` tokens and gains `perSecond` tokens a
 * second; each request takes one. A request that finds the bucket empty is refused (429) with
 * the whole seconds until a token is back, for `Retry-After`. Time comes from `now` (ms), so the
 * bucket needs no timer.
 */
export class TokenBucket {
  private tokens: number;
  private updated: number;

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = burst;
    this.updated = now();
  }

  /** Takes a token: 0 when one was there, otherwise the seconds (≥ 1) until one is. */
  take(): number {
    const now = this.now();
    const elapsed = Math.max(0, now - this.updated) / 1000;
    this.tokens = Math.min(this.burst, this.tokens + elapsed * this.perSecond);
    this.updated = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - this.tokens) / this.perSecond));
  }
}
