/** Snapshot progress lines: rows done / total, rate, time left. */
import { describe, expect, it } from 'vitest';
import { formatDuration, SnapshotMeter } from '../../src/cli/progress';

describe('SnapshotMeter', () => {
  it('measures the rate from the first report and estimates the time left', () => {
    let now = 0;
    const meter = new SnapshotMeter(() => now);
    const first = meter.report({ datasource: 'pg', model: 'accounts', done: 1000, total: 100_000 });
    expect(first.message).toBe('snapshot of accounts: 1,000 / 100,000 rows (1%)');
    now = 2000;
    const second = meter.report({ datasource: 'pg', model: 'accounts', done: 5000, total: 100_000 });
    expect(second.rate).toBe(2000);
    expect(second.secondsLeft).toBe(47.5);
    expect(second.message).toBe(
      'snapshot of accounts: 5,000 / 100,000 rows (5%), 2,000 rows/s, about 48 s left',
    );
    now = 4000;
    expect(meter.report({ datasource: 'pg', model: 'other', done: 10 }).message).toBe(
      'snapshot of other: 10 rows',
    );
  });

  it('formats durations', () => {
    expect(formatDuration(59.4)).toBe('59 s');
    expect(formatDuration(125)).toBe('2 min 5 s');
    expect(formatDuration(7260)).toBe('2 h 1 min');
  });
});
