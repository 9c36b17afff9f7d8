/**
 * Events per second of each feed over the last minute, for the status and the HTTP API.
 *
 * Fed by the `published` status events (at most one a second per feed, carrying the feed's
 * running count), never per event: a feed keeps the samples of the last minute plus the last
 * one before it, a few dozen numbers. The rate is what was published since the start of the
 * window (the count of the last sample before it, or 0 at the start of the run) divided by the
 * window's length (a minute, or the time since the run started when that is shorter).
 */
import type { PublisherStatus } from '../pipeline/status';

export const RATE_WINDOW_MS = 60_000;

interface Sample {
  at: number;
  count: number;
}

export class FeedRates {
  private readonly samples = new Map<string, Sample[]>();
  private startedAt: number;

  constructor(private readonly now: () => number = Date.now) {
    this.startedAt = now();
  }

  /** Reads a status event: `started` begins a run (counts restart at 0), `published` a sample. */
  onStatus(status: PublisherStatus): void {
    if (status.type === 'started') {
      this.samples.clear();
      this.startedAt = this.now();
    } else if (status.type === 'published') {
      const at = this.now();
      const list = this.samples.get(status.feed) ?? [];
      list.push({ at, count: status.published });
      this.prune(list, at);
      this.samples.set(status.feed, list);
    }
  }

  /** Drops the samples older than the window, but the last one before it (the baseline). */
  private prune(list: Sample[], now: number): void {
    const from = now - RATE_WINDOW_MS;
    let i = 0;
    while (i + 1 < list.length && list[i + 1]!.at <= from) i++;
    if (i > 0) list.splice(0, i);
  }

  /**
   * Events published per second over the last minute. `current` is the feed's count now, when
   * the caller has it (the pipeline's counters): the last sample may be up to a second behind.
   */
  rate(feedId: string, current?: number): number {
    const list = this.samples.get(feedId) ?? [];
    const now = this.now();
    this.prune(list, now);
    const from = now - RATE_WINDOW_MS;
    const last = current ?? list[list.length - 1]?.count ?? 0;
    const base = list[0] && list[0].at <= from ? list[0].count : 0;
    const span = Math.max(1000, Math.min(RATE_WINDOW_MS, now - this.startedAt));
    const rate = (last - base) / (span / 1000);
    return Math.round(rate * 100) / 100;
  }
}
