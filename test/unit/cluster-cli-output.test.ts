/**
 * Cluster mode in the CLI's output: `evpub status`'s OWNER/EPOCH/SINCE columns, `evpub cluster`'s
 * tables, and the start log's one-line messages (with their levels) for unit and lease store
 * events.
 */
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { clusterTable } from '../../src/cli/cluster';
import { logStatus } from '../../src/cli/start';
import { statusTable } from '../../src/cli/status';
import type { ClusterApiView, FeedsView, FeedView } from '../../src/http/views';
import type { PublisherStatus } from '../../src/pipeline/status';

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
    canSnapshot: false,
    position: { committed: '7', saved: '7' },
    inFlight: 0,
    inFlightBytes: 0,
    counters: { received: 7, published: 7, deadLettered: 0, filtered: 0, retries: 0 },
    eventsPerSecond: 0,
    ...over,
  };
}

const since = '2026-12-06T12:00:01.234Z';

describe('evpub status in cluster mode', () => {
  const view: FeedsView = {
    state: 'running',
    startedAt: since,
    feeds: [
      feed('pga/orders', { unit: 'pga', owner: { instance: 'a', epoch: 4, since, mine: true } }),
      feed('pgb/items', {
        state: 'standby',
        unit: 'pgb',
        owner: { instance: 'b', epoch: 2, since, mine: false },
        position: { committed: null, saved: null },
      }),
      feed('pgc/users', { state: 'standby', unit: 'pgc', position: { committed: null, saved: null } }),
    ],
    brokers: [{ name: 'default', adapter: 'nats', state: 'connected', url: 'nats://127.0.0.1:4222' }],
    cluster: { instance: 'a', name: 'orders', store: 'redis', state: 'ok' },
  };

  it('has OWNER (this instance marked *), EPOCH and SINCE columns and standby feeds', () => {
    const lines = statusTable(view, { ready: true, reasons: [] }, false).split('\n');
    expect(lines[0]).toMatch(/^FEED\s+STATE\s+OWNER\s+EPOCH\s+SINCE\s+EVENTS\/S\s+PUBLISHED/);
    expect(lines[1]).toMatch(/^pga\/orders\s+streaming\s+a \*\s+4\s+2026-12-06T12:00:01Z\s+0\.0\s+7\s/);
    expect(lines[2]).toMatch(/^pgb\/items\s+standby\s+b\s+2\s+2026-12-06T12:00:01Z\s/);
    expect(lines[3]).toMatch(/^pgc\/users\s+standby\s+unowned\s+-\s+-\s/);
    expect(lines).toContain('cluster orders, this instance a (*), lease store redis: ok');
  });

  it('says when the lease store does not answer', () => {
    const down: FeedsView = {
      ...view,
      cluster: {
        ...view.cluster!,
        state: 'unreachable',
        error: { code: 'EVPUB_LEASE_FAILED', message: 'connect ECONNREFUSED' },
      },
    };
    const text = statusTable(
      down,
      { ready: false, reasons: ['the lease store (redis) does not answer'] },
      false,
    );
    expect(text).toContain('lease store redis: unreachable (EVPUB_LEASE_FAILED)');
    expect(text).toContain('not ready: the lease store (redis) does not answer');
  });

  it('has no cluster columns alone', () => {
    const alone: FeedsView = { ...view, feeds: [feed('pga/orders')], cluster: undefined };
    const text = statusTable(alone, { ready: true, reasons: [] }, false);
    expect(text).not.toContain('OWNER');
    expect(text).not.toContain('cluster');
  });
});

describe('evpub cluster', () => {
  const view: ClusterApiView = {
    instance: 'a',
    name: 'orders',
    store: 'postgres',
    state: 'ok',
    members: [
      {
        instance: 'b',
        info: { host: 'h2', pid: 22, units: { pgb: { epoch: 2, since } } },
        expiresAt: since,
      },
      {
        instance: 'a',
        info: { host: 'h1', pid: 11, api: 'http://127.0.0.1:7401', units: { pga: { epoch: 4, since } } },
        expiresAt: since,
      },
    ],
    units: [
      { unit: 'pga', feeds: ['pga/orders', 'pga/lines'], owner: 'a', epoch: 4, since, mine: true },
      { unit: 'pgb', feeds: ['pgb/items'], owner: 'b', epoch: 2, since, mine: false },
      { unit: 'pgc', feeds: ['pgc/users'], mine: false },
    ],
  };

  it('lists the instances with their units, then every unit with its owner or unowned', () => {
    const lines = clusterTable(view, false).split('\n');
    expect(lines[0]).toBe('cluster orders: 2 live instances, 3 units, lease store postgres');
    expect(lines[2]).toMatch(/^INSTANCE\s+HOST\s+PID\s+API\s+UNITS$/);
    expect(lines[3]).toMatch(
      /^a \*\s+h1\s+11\s+http:\/\/127\.0\.0\.1:7401\s+pga \(epoch 4, since 2026-12-06T12:00:01Z\)$/,
    );
    expect(lines[4]).toMatch(/^b\s+h2\s+22\s+-\s+pgb \(epoch 2, since 2026-12-06T12:00:01Z\)$/);
    expect(lines[6]).toMatch(/^UNIT\s+OWNER\s+EPOCH\s+SINCE\s+FEEDS$/);
    expect(lines[7]).toMatch(/^pga\s+a \*\s+4\s+2026-12-06T12:00:01Z\s+pga\/orders, pga\/lines$/);
    expect(lines[8]).toMatch(/^pgb\s+b\s+2\s+2026-12-06T12:00:01Z\s+pgb\/items$/);
    expect(lines[9]).toMatch(/^pgc\s+unowned\s+-\s+-\s+pgc\/users$/);
    expect(lines).toContain('lease store postgres: ok');
  });

  it('says why the lease store is unreachable', () => {
    const down = {
      ...view,
      state: 'unreachable' as const,
      error: { code: 'EVPUB_LEASE_FAILED', message: 'timeout' },
    };
    expect(clusterTable(down, false)).toContain(
      'lease store postgres: unreachable: EVPUB_LEASE_FAILED timeout',
    );
  });
});

describe('evpub start: the log of cluster events', () => {
  function log(statuses: PublisherStatus[]): { level: number; msg: string; unit?: string; epoch?: number }[] {
    const lines: string[] = [];
    const stream = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const logger = pino({ level: 'info' }, stream);
    for (const s of statuses) logStatus(logger, s);
    return lines.map((l) => JSON.parse(l) as { level: number; msg: string });
  }
  const unit = (event: 'acquired' | 'released' | 'lost' | 'failed', error?: boolean): PublisherStatus => ({
    type: 'unit',
    unit: 'pga',
    event,
    instance: 'a',
    epoch: 5,
    feeds: ['pga/orders', 'pga/lines'],
    ...(error ? { error: { code: 'EVPUB_LEASE_LOST', message: 'taken by b' } } : {}),
  });

  it('one readable line per unit change: acquired and released info, lost warn, failed error', () => {
    const lines = log([unit('acquired'), unit('released'), unit('lost', true), unit('failed', true)]);
    expect(lines.map((l) => l.level)).toEqual([30, 30, 40, 50]);
    expect(lines[0]!.msg).toBe('unit pga acquired (epoch 5): publishing pga/orders, pga/lines');
    expect(lines[0]).toMatchObject({
      unit: 'pga',
      epoch: 5,
      instance: 'a',
      feeds: ['pga/orders', 'pga/lines'],
    });
    expect(lines[1]!.msg).toContain('unit pga released (epoch 5)');
    expect(lines[2]!.msg).toBe(
      'unit pga lost (epoch 5), nothing more is published here for pga/orders, pga/lines: EVPUB_LEASE_LOST taken by b',
    );
    expect(lines[3]!.msg).toContain('unit pga could not start (epoch 5)');
  });

  it('the lease store unreachable is a warning, answering again info', () => {
    const lines = log([
      {
        type: 'cluster',
        state: 'unreachable',
        error: { code: 'EVPUB_LEASE_FAILED', message: 'ECONNREFUSED' },
      },
      { type: 'cluster', state: 'ok' },
    ]);
    expect(lines.map((l) => l.level)).toEqual([40, 30]);
    expect(lines[0]!.msg).toMatch(
      /^cluster: the lease store does not answer \(EVPUB_LEASE_FAILED: ECONNREFUSED\)/,
    );
    expect(lines[1]!.msg).toBe('cluster: the lease store answers');
  });
});
