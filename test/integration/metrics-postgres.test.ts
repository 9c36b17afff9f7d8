/**
 * The PostgreSQL metrics: the WAL a slot retains, asked at scrape time. The app publishes to
 * the shared Mosquitto through a TCP proxy; with the proxy stopped nothing is confirmed, so the
 * slot cannot advance past the rows the test writes and retains at least their WAL: the gauge
 * is positive for a reason the test controls, not by timing. The broker gauge shows the cut.
 * With a small window the connector stops reading too: its lag in seconds grows, and goes back
 * to about 0 once everything is published and the source is idle.
 */
import { createServer, type Socket } from 'node:net';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { createMetrics } from '../../src/metrics/index';
import { SlotProbe } from '../../src/metrics/postgres-slots';
import { PgFixture, sql } from '../helpers/postgres';
import { parseExposition, scrapeUntil } from '../helpers/prometheus';
import { quietLogger } from '../helpers/publisher';
import { requireService, SERVICES } from '../helpers/services';
import { startTcpProxy } from '../helpers/tcp-proxy';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

beforeAll(async () => {
  await requireService('postgres');
  await requireService('mosquitto');
});

describe('metrics: postgres', () => {
  it(
    'reports the WAL a slot retains and the lag while the broker confirms nothing',
    { timeout: 90_000 },
    async () => {
      const f = new PgFixture();
      cleanups.push(() => f.drop());
      const table = await f.table('id int PRIMARY KEY, v text');
      const mqtt = new URL(SERVICES.mosquitto.url);
      const proxy = await startTcpProxy({ host: mqtt.hostname, port: Number(mqtt.port) });
      cleanups.push(() => proxy.close());

      const app = evpub({
        logger: quietLogger(),
        brokers: { default: `mqtt://127.0.0.1:${proxy.port}` },
        checkpoints: { store: 'memory' },
        publisher: { maxInFlight: 100 },
        stopTimeout: 2000,
      });
      app.dataSource('pg', {
        connector: 'postgres',
        url: f.url,
        slot: f.slot,
        publication: f.publication,
        statusInterval: 200,
        heartbeatInterval: 200,
      });
      app.model(table, { dataSource: 'pg', topic: `evpub/test/${table}/{key}` });
      cleanups.push(() => app.stop());
      const metrics = createMetrics(app, { slotTimeoutMs: 5000 });
      cleanups.push(() => metrics.close());
      await app.start();

      const scrape = async () => parseExposition(await metrics.text());
      const slotLabels = { datasource: 'pg', slot: f.slot };
      const text = () => metrics.text();
      const first = await scrapeUntil(
        text,
        (m) => m.value('evpub_postgres_slot_wal_retained_bytes', slotLabels) !== undefined,
        'the slot gauge',
      );
      expect(first.value('evpub_postgres_slot_wal_retained_bytes', slotLabels)).toBeGreaterThanOrEqual(0);

      // The broker is cut: what the test writes now stays unconfirmed, and so does the slot.
      await proxy.stop();
      const rows = 2000;
      const value = 'x'.repeat(200);
      await sql(`INSERT INTO ${table} SELECT g, $1 FROM generate_series(1, ${rows}) g`, [value]);
      const written = rows * value.length;

      const cut = await scrapeUntil(
        text,
        (m) =>
          (m.value('evpub_postgres_slot_wal_retained_bytes', slotLabels) ?? 0) >= written &&
          m.value('evpub_broker_connected', { broker: 'default' }) === 0,
        `at least ${written} bytes retained and the broker disconnected`,
      );
      expect(cut.types.get('evpub_postgres_slot_wal_retained_bytes')).toBe('gauge');
      const pg = { datasource: 'pg', model: '' };
      const feed = { datasource: 'pg', model: table };
      expect(cut.value('evpub_events_published_total', { ...feed, op: 'create' })).toBe(0);
      // The connector's own lag report (its timer, not the scrape) says the same.
      await waitFor(
        async () => ((await scrape()).value('evpub_source_lag_bytes', pg) ?? 0) >= written,
        'the connector reports the lag',
      );
      // Its window full, the connector stopped reading: it falls behind by the second.
      await waitFor(
        async () => ((await scrape()).value('evpub_source_lag_seconds', pg) ?? 0) >= 1.5,
        'the lag in seconds grows while the connector cannot read',
      );

      // Back: every row is published; the broker gauge says so.
      await proxy.start();
      const back = await scrapeUntil(
        text,
        (m) => m.value('evpub_events_published_total', { ...feed, op: 'create' }) === rows,
        `${rows} published after the broker came back`,
      );
      expect(back.value('evpub_broker_connected', { broker: 'default' })).toBe(1);
      expect(back.value('evpub_connector_streaming', { datasource: 'pg', connector: 'postgres' })).toBe(1);
      // PostgreSQL gives commit times: the confirmations were sampled, each at least as long as
      // the cut held the rows back at the end.
      expect(back.value('evpub_end_to_end_latency_seconds_count', feed)).toBeGreaterThanOrEqual(1);

      // Updates and deletes: counted by operation, adding up to every event published.
      await sql(`UPDATE ${table} SET v = 'y' WHERE id <= 30`);
      await sql(`DELETE FROM ${table} WHERE id <= 12`);
      const ops = await scrapeUntil(
        text,
        (m) =>
          m.value('evpub_events_published_total', { ...feed, op: 'update' }) === 30 &&
          m.value('evpub_events_published_total', { ...feed, op: 'delete' }) === 12,
        '30 updates and 12 deletes published',
      );
      expect(ops.value('evpub_events_published_total', { ...feed, op: 'create' })).toBe(rows);
      const total = ops
        .all('evpub_events_published_total')
        .filter((s) => s.labels.model === table)
        .reduce((n, s) => n + s.value, 0);
      expect(total).toBe(rows + 30 + 12);

      // Caught up and idle (heartbeats only): the lag goes back to about 0 and stays there.
      await waitFor(
        async () => ((await scrape()).value('evpub_source_lag_seconds', pg) ?? Infinity) <= 0.5,
        'the lag in seconds back to about 0',
      );
      for (let i = 0; i < 5; i++) {
        await new Promise((resolve) => setTimeout(resolve, 400));
        expect((await scrape()).value('evpub_source_lag_seconds', pg)).toBeLessThanOrEqual(1);
      }
    },
  );

  it('never holds a scrape longer than its timeout when the database does not answer', async () => {
    // A server that accepts connections and never says a word: a hung database.
    const sockets = new Set<Socket>();
    const server = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          for (const s of sockets) s.destroy();
          server.close(() => resolve());
        }),
    );
    const port = (server.address() as { port: number }).port;
    const probe = new SlotProbe(
      'hung',
      {
        connector: 'postgres',
        url: `postgres://postgres:secret@127.0.0.1:${port}/test`,
        connectTimeout: 60_000,
      },
      { timeoutMs: 200, logger: quietLogger() },
    );
    cleanups.push(() => probe.close());
    expect(probe.slot).toBe('evpub_hung');
    const began = Date.now();
    expect(await probe.read()).toBeUndefined();
    expect(await probe.read()).toBeUndefined(); // the first query still in flight: not a second one
    expect(Date.now() - began).toBeLessThan(2000);
    expect(sockets.size).toBe(1);
  });
});
