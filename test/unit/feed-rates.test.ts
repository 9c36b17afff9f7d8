/** FeedRates: events per second over the last minute, from the `published` counters. */
import { describe, expect, it } from 'vitest';
import { FeedRates } from '../../src/app/rates';

function published(feed: string, count: number) {
  const publishedOps = { create: count, update: 0, delete: 0, snapshot: 0, truncate: 0 };
  return {
    type: 'published' as const,
    feed,
    published: count,
    publishedOps,
    deadLettered: 0,
    filtered: 0,
    inFlight: 0,
  };
}

describe('FeedRates', () => {
  it('divides by the time since the start until a minute has passed, then by a minute', () => {
    let now = 1_000_000;
    const rates = new FeedRates(() => now);
    rates.onStatus({ type: 'started', feeds: ['a/b'] });
    expect(rates.rate('a/b')).toBe(0);
    now += 10_000;
    rates.onStatus(published('a/b', 100));
    expect(rates.rate('a/b')).toBe(10);
    expect(rates.rate('a/b', 150)).toBe(15); // the live count, ahead of the last sample
    now += 50_000;
    rates.onStatus(published('a/b', 700));
    expect(rates.rate('a/b')).toBeCloseTo(700 / 60);
    // A minute later with nothing published: the base is the last sample before the window.
    now += 61_000;
    expect(rates.rate('a/b')).toBe(0);
    now += 1_000;
    rates.onStatus(published('a/b', 760));
    expect(rates.rate('a/b')).toBe(1);
  });

  it('starts again at 0 on a new run and keeps feeds apart', () => {
    let now = 0;
    const rates = new FeedRates(() => now);
    rates.onStatus({ type: 'started', feeds: [] });
    now = 2000;
    rates.onStatus(published('x/1', 20));
    rates.onStatus(published('x/2', 2));
    expect([rates.rate('x/1'), rates.rate('x/2')]).toEqual([10, 1]);
    rates.onStatus({ type: 'started', feeds: [] });
    expect(rates.rate('x/1')).toBe(0);
  });
});
