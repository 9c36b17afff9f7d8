/** `evpub status`'s table: colours only when asked (a terminal), the state and error of each feed. */
import { describe, expect, it } from 'vitest';
import { statusTable } from '../../src/cli/status';
import type { FeedsView, FeedView } from '../../src/http/views';

function feed(id: string, over: Partial<FeedView> = {}): FeedView {
  const [datasource, model] = id.split('/') as [string, string];
  return {
    id,
    datasource,
    model,
    broker: 'default',
    topic: '{datasource}/{model}',
    envelope: 'cloudevents',
    state: 'streaming',
    canSnapshot: true,
    position: { committed: '0/16B3748', saved: '0/16B3748' },
    inFlight: 0,
    inFlightBytes: 0,
    counters: { received: 10, published: 10, deadLettered: 0, filtered: 0, retries: 0 },
    eventsPerSecond: 2.5,
    ...over,
  };
}

const view: FeedsView = {
  state: 'running',
  startedAt: '2026-01-01T00:00:00.000Z',
  feeds: [
    feed('pg/orders'),
    feed('pg/customers', {
      state: 'failed',
      error: { code: 'EVPUB_SOURCE_FAILED', message: 'slot dropped' },
    }),
    feed('db/items', { state: 'snapshotting', snapshot: { done: 250, total: 1000 } }),
  ],
  brokers: [{ name: 'default', adapter: 'redis', state: 'connected', url: 'redis://127.0.0.1:6379' }],
};

describe('statusTable', () => {
  it('is plain text without colour, one aligned line per feed, its error and why not ready', () => {
    const text = statusTable(view, { ready: false, reasons: ['feed pg/customers is failed'] }, false);
    expect(text).not.toContain('\u001b[');
    const lines = text.split('\n');
    expect(lines[0]).toMatch(/^FEED\s+STATE\s+EVENTS\/S\s+PUBLISHED\s+DEAD\s+IN FLIGHT\s+COMMITTED$/);
    expect(lines[1]).toMatch(/^pg\/orders\s+streaming\s+2\.5\s+10\s+0\s+0\s+0\/16B3748$/);
    expect(lines[2]).toMatch(/^pg\/customers\s+failed\s/);
    expect(lines[3]).toBe('  EVPUB_SOURCE_FAILED: slot dropped');
    expect(lines[4]).toMatch(/^db\/items\s+snapshotting 25%\s/);
    expect(lines[1]!.indexOf('streaming')).toBe(lines[2]!.indexOf('failed'));
    expect(text).toContain('broker default (redis): connected');
    expect(text).toContain('not ready: feed pg/customers is failed');
  });

  it('colours states on a terminal', () => {
    const text = statusTable(view, { ready: true, reasons: [] }, true);
    expect(text).toContain('\u001b[32mstreaming\u001b[39m');
    expect(text).toContain('\u001b[31mfailed\u001b[39m');
    expect(text).toContain('\u001b[32mready\u001b[39m');
  });
});
