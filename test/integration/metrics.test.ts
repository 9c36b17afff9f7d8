/**
 * The Prometheus metrics of an app (src/metrics): the memory connector → the memory broker,
 * scraped as text and read back as Prometheus exposition.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { evpub, type App } from '../../src/app/app';
import { createMetrics, type Metrics } from '../../src/metrics/index';
import { parseExposition, scrapeUntil, type Exposition } from '../helpers/prometheus';
import { quietLogger, subscriber } from '../helpers/publisher';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function makeApp(publisher: Record<string, unknown> = {}) {
  const broker = `memory://${uniqueName('b')}`;
  const app: App = evpub({
    logger: quietLogger(),
    brokers: { default: broker },
    checkpoints: { store: 'memory' },
    publisher: { checkpointInterval: 10, ...publisher },
  });
  const ds = app.dataSource('local', { connector: 'memory', store: uniqueName('store') });
  app.model('accounts', { dataSource: ds, topic: '{datasource}/{model}/{key}' });
  cleanups.push(() => app.stop());
  const metrics = createMetrics(app);
  cleanups.push(() => metrics.close());
  return { app, ds, broker, metrics };
}

async function scrape(metrics: Metrics): Promise<Exposition> {
  return parseExposition(await metrics.text());
}

const FEED = { datasource: 'local', model: 'accounts' };
/** Published events of the feed, every operation. */
const published = (e: Exposition): number | undefined => {
  const samples = e.all('evpub_events_published_total').filter((s) => s.labels.model === FEED.model);
  return samples.length === 0 ? undefined : samples.reduce((n, s) => n + s.value, 0);
};

describe('metrics', () => {
  it('counts published events by operation, serves valid exposition with the process metrics', async () => {
    const { app, ds, broker, metrics } = makeApp();
    const sub = await subscriber(broker);
    cleanups.push(() => sub.client.end());
    await app.start();
    const n = 250;
    for (let i = 0; i < n; i++) ds.connector!.create('accounts', `k${i}`, { i });
    for (let i = 0; i < 40; i++) ds.connector!.update('accounts', `k${i}`, { i, again: true });
    for (let i = 0; i < 15; i++) ds.connector!.delete('accounts', `k${i}`);
    const all = n + 40 + 15;
    await waitFor(() => sub.got.length === all, `${all} messages`);
    // Confirmed before the subscriber got them; read now, with no wait for a status event.
    const m = await scrapeUntil(
      () => metrics.text(),
      (e) => published(e) === all,
      'published counter',
    );
    expect(metrics.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    // One series per operation, each with its own count; they add up to every event published.
    const labels = { ...FEED, broker: 'default' };
    expect(m.all('evpub_events_published_total')).toEqual(
      [
        ['create', n],
        ['update', 40],
        ['delete', 15],
        ['snapshot', 0],
        ['truncate', 0],
      ].map(([op, value]) => ({ name: 'evpub_events_published_total', labels: { ...labels, op }, value })),
    );
    expect(m.types.get('evpub_events_published_total')).toBe('counter');
    expect(m.value('evpub_events_received_total', FEED)).toBe(all);
    expect(m.value('evpub_dead_letters_total')).toBeUndefined();
    expect(m.value('evpub_broker_connected', { broker: 'default', adapter: 'memory' })).toBe(1);
    expect(m.value('evpub_connector_streaming', { datasource: 'local', connector: 'memory' })).toBe(1);
    expect(m.value('evpub_feed_failed', FEED)).toBe(0);
    expect(m.value('evpub_in_flight_events', FEED)).toBeGreaterThanOrEqual(0);
    expect(m.value('evpub_in_flight_bytes', FEED)).toBeGreaterThanOrEqual(0);
    // prom-client's default process metrics, in this app's own registry.
    expect(m.value('process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(m.value('process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(m.all('nodejs_heap_size_total_bytes').length).toBe(1);

    // The checkpoint of the last event was saved: its age is a small number of seconds.
    const saved = await waitFor(async () => {
      const e = await scrape(metrics);
      return e.value('evpub_checkpoint_age_seconds', FEED);
    }, 'checkpoint age');
    expect(saved).toBeGreaterThanOrEqual(0);
    expect(saved).toBeLessThan(60);
  });

  it('counts dead letters by reason code', async () => {
    const { app, ds, metrics } = makeApp({ maxEventBytes: 400 });
    await app.start();
    ds.connector!.create('accounts', 'small', { v: 1 });
    ds.connector!.create('accounts', 'big', { v: 'x'.repeat(2000) });
    ds.connector!.create('accounts', 'big2', { v: 'y'.repeat(2000) });
    ds.connector!.create('accounts', 'small2', { v: 2 });
    const m = await scrapeUntil(
      () => metrics.text(),
      (e) => published(e) === 2 && e.value('evpub_events_dead_lettered_total', FEED) === 2,
      'two published, two dead letters confirmed',
    );
    expect(m.all('evpub_dead_letters_total')).toEqual([
      {
        name: 'evpub_dead_letters_total',
        labels: { ...FEED, code: 'EVPUB_PAYLOAD_TOO_LARGE' },
        value: 2,
      },
    ]);
    expect(m.value('evpub_events_received_total', FEED)).toBe(4);
  });

  it('shows a failed feed and counts its error by code; counts backpressure pauses', async () => {
    const { app, ds, metrics } = makeApp({ maxEventBytes: 400, deadLetterLimit: 1, maxInFlight: 2 });
    await app.start();
    for (let i = 0; i < 20; i++) ds.connector!.create('accounts', `k${i}`, { i });
    const before = await scrapeUntil(
      () => metrics.text(),
      (e) => published(e) === 20,
      'twenty published',
    );
    // A window of 2 and 20 events read at once: the feed held its source back.
    expect(
      before.value('evpub_backpressure_pauses_total', { ...FEED, reason: 'window-full' }),
    ).toBeGreaterThan(0);
    expect(before.value('evpub_feed_failed', FEED)).toBe(0);
    // Two dead letters in a row with one code, more than deadLetterLimit: the feed fails.
    ds.connector!.create('accounts', 'big1', { v: 'x'.repeat(2000) });
    ds.connector!.create('accounts', 'big2', { v: 'x'.repeat(2000) });
    const m = await scrapeUntil(
      () => metrics.text(),
      (e) => e.value('evpub_feed_failed', FEED) === 1,
      'the feed failed',
    );
    expect(
      m.value('evpub_errors_total', { ...FEED, kind: 'feed-failed', code: 'EVPUB_PAYLOAD_TOO_LARGE' }),
    ).toBe(1);
  });

  it('keeps two apps in one process apart, and counters across a restart', async () => {
    const a = makeApp();
    const b = makeApp();
    await a.app.start();
    await b.app.start();
    for (let i = 0; i < 3; i++) a.ds.connector!.create('accounts', `a${i}`, { i });
    for (let i = 0; i < 7; i++) b.ds.connector!.create('accounts', `b${i}`, { i });
    const created = async (m: Metrics) =>
      (await scrape(m)).value('evpub_events_published_total', { ...FEED, op: 'create' });
    await waitFor(async () => (await created(a.metrics)) === 3, 'app a: 3');
    await waitFor(async () => (await created(b.metrics)) === 7, 'app b: 7');

    // Stopped: the counter keeps its value; started again, the new run adds to it.
    await a.app.stop();
    expect(await created(a.metrics)).toBe(3);
    await a.app.start();
    a.ds.connector!.create('accounts', 'a-again', { i: 9 });
    a.ds.connector!.delete('accounts', 'a-again');
    await waitFor(async () => (await created(a.metrics)) === 4, 'app a: 3 + 1 after a restart');
    await waitFor(
      async () =>
        (await scrape(a.metrics)).value('evpub_events_published_total', { ...FEED, op: 'delete' }) === 1,
      'app a: its delete',
    );
    expect(await created(b.metrics)).toBe(7);
  });

  it('takes no end-to-end latency sample from a source without commit times', async () => {
    // The memory connector's events carry the time they were written, not a commit time: a
    // sample would measure evpub's own delay. (test/integration/metrics-postgres.test.ts has
    // the samples of a source with commit times.)
    const { app, ds, metrics } = makeApp();
    let counts = 0;
    app.on('status', (s) => {
      if (s.type === 'published') counts++;
    });
    await app.start();
    let i = 0;
    // The pipeline emits its counts (where a sample would be) at most once a second per feed.
    await waitFor(() => {
      ds.connector!.create('accounts', `k${i++}`, { i });
      return counts >= 2;
    }, 'the counts emitted twice');
    const m = await scrape(metrics);
    expect(m.types.get('evpub_end_to_end_latency_seconds')).toBe('histogram');
    expect(m.value('evpub_end_to_end_latency_seconds_count', FEED)).toBeUndefined();
  });

  it('close() detaches from the app', async () => {
    const { app, ds, metrics } = makeApp({ maxEventBytes: 400 });
    await app.start();
    expect(app.listenerCount('status')).toBe(1);
    metrics.close();
    metrics.close(); // idempotent
    expect(app.listenerCount('status')).toBe(0);
    ds.connector!.create('accounts', 'big', { v: 'x'.repeat(2000) });
    await waitFor(() => app.status().feeds['local/accounts']?.deadLettered === 1, 'dead letter');
    const m = parseExposition(await metrics.text());
    expect(m.samples).toEqual([]);
  });
});

describe('the Grafana dashboard (docs/grafana-dashboard.json)', () => {
  it('reads only metrics evpub serves', async () => {
    const dashboard = JSON.parse(
      readFileSync(path.join(__dirname, '../../docs/grafana-dashboard.json'), 'utf8'),
    ) as { panels: { targets: { expr: string }[] }[] };
    const names = new Set<string>();
    for (const panel of dashboard.panels) {
      for (const target of panel.targets) {
        for (const m of target.expr.matchAll(/\b((?:evpub|process|nodejs)_[a-z_]+)/g)) {
          names.add(m[1]!.replace(/_(bucket|sum|count)$/, ''));
        }
      }
    }
    expect(names.size).toBeGreaterThan(15);
    const { app, metrics } = makeApp();
    await app.start();
    const m = await scrape(metrics);
    // The cluster panels' metrics exist in cluster mode only: test/http/cluster-api.test.ts checks them.
    const missing = [...names].filter((name) => !/^evpub_(cluster|unit)_/.test(name) && !m.types.has(name));
    expect(missing).toEqual([]);
  });
});
