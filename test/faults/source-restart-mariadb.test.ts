/**
 * Fault matrix: a private mariadbd (test/helpers/mariadb.ts; the shared server must never
 * restart) stopped and started again while the mysql connector streams its binlog: the
 * connector reconnects and resumes after the last row it pushed, so every row arrives once and
 * in order.
 *
 * - Connector level: the connector runs under a recording sink.
 * - End to end: an evpub app publishes to the shared Redis in streams mode while rows are
 *   written through the restart; the test's durable consumer group counts what arrives.
 */
import type { Connection } from 'mysql2/promise';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import type { EventConnector } from '../../src/connectors/contract';
import { createClient } from '../../src/pubsub/registry';
import { RecordingSink } from '../conformance/connector.suite';
import { mysqlConnector, startPrivateMariaDb, type PrivateMariaDb } from '../helpers/mariadb';
import { quietLogger, statusLog } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { countDelivery, reportRow } from './matrix';

describe('fault matrix: source restarted mid-stream (mariadb)', () => {
  let server: PrivateMariaDb;
  let conn: Connection;
  const running: EventConnector[] = [];

  beforeAll(async () => {
    server = await startPrivateMariaDb();
    conn = await server.connect();
    await conn.query('USE test');
  });

  afterAll(async () => {
    await Promise.all(running.map((c) => c.stop().catch(() => undefined)));
    await conn?.end().catch(() => undefined);
    await server?.close();
  });

  async function started(table: string, from: 'now' | { after: string }) {
    const connector = await mysqlConnector({ url: server.url });
    running.push(connector);
    const sink = new RecordingSink();
    await connector.start({ models: [{ name: 'm', settings: { table }, from }], sink });
    return { connector, sink };
  }

  it('survives a server restart mid-stream: reconnects and loses nothing', async () => {
    const began = Date.now();
    await conn.query('CREATE TABLE r (id INT PRIMARY KEY)');
    const { connector, sink } = await started('r', 'now');
    for (let i = 1; i <= 100; i++) await conn.query('INSERT INTO r VALUES (?)', [i]);
    await waitFor(() => sink.events.length >= 50, 'rows before the restart');
    await conn.end();
    await server.stop();
    await waitFor(() => sink.statuses.some((s) => s.type === 'reconnecting'), 'the connector to notice');
    await server.start();
    conn = await server.connect();
    await conn.query('USE test');
    for (let i = 101; i <= 200; i++) await conn.query('INSERT INTO r VALUES (?)', [i]);
    await waitFor(() => sink.events.length >= 200, 'all 200 rows', 30_000);
    expect(sink.keys()).toEqual(Array.from({ length: 200 }, (_, i) => String(i + 1)));
    expect(connector.health().state).toBe('streaming');
    const row = reportRow({
      fault: 'source restarted (mariadbd SIGTERM, start)',
      source: 'mariadb',
      broker: '— (connector → sink)',
      ...countDelivery(
        Array.from({ length: 200 }, (_, i) => String(i + 1)),
        sink.keys(),
      ),
      seconds: (Date.now() - began) / 1000,
    });
    expect(row.lost).toBe(0);
    await connector.stop();
  });

  it(
    'end to end: every row reaches the broker through the restart, in order',
    { timeout: 120_000 },
    async () => {
      const began = Date.now();
      const redisUrl = await requireService('redis');
      const table = uniqueName('e2e');
      await conn.query(`CREATE TABLE ${table} (id INT PRIMARY KEY, n INT NOT NULL)`);
      const topic = `evpub/test/${uniqueName('myrestart')}`;
      const consumer = createClient(redisUrl, { logger: quietLogger(), redis: { mode: 'streams' } });
      const seen: { id: string; key: string }[] = [];
      consumer.on('message', (_t, payload) => {
        const ce = JSON.parse(payload.toString()) as { id: string; data: { key: string } };
        seen.push({ id: ce.id, key: ce.data.key });
      });
      const app = evpub({
        logger: quietLogger(),
        brokers: { default: { url: redisUrl, options: { redis: { mode: 'streams' } } } },
        checkpoints: new MemoryCheckpointStore(),
      });
      const log = statusLog();
      app.on('status', log.listener);
      app.dataSource('my', { connector: 'mysql', url: server.url, reconnectDelay: 100, heartbeat: 1000 });
      app.model('rows', { dataSource: 'my', topic, from: 'now', settings: { table } });
      const reconnecting = () =>
        log.events.filter((e) => e.type === 'connector' && e.status.type === 'reconnecting').length;
      try {
        await consumer.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });
        await app.start();
        // 5,000 rows, 100 per transaction, each on a new connection; a batch that fails (the
        // server is down) is tried again until it passes (INSERT IGNORE: the restart may have
        // come after its commit).
        const ROWS = 5000;
        const writer = (async () => {
          for (let from = 1; from <= ROWS; from += 100) {
            const values = Array.from({ length: 100 }, (_, i) => `(${from + i}, 0)`).join(', ');
            await waitFor(
              async () => {
                try {
                  const c = await server.connect();
                  try {
                    await c.query(`INSERT IGNORE INTO test.${table} VALUES ${values}`);
                  } finally {
                    await c.end().catch(() => undefined);
                  }
                  return true;
                } catch {
                  return false;
                }
              },
              `rows ${from}.. inserted`,
              60_000,
            );
          }
        })();
        writer.catch(() => undefined);
        await waitFor(() => seen.length >= 1000, 'the first 1,000 events');
        const restartAt = seen.length;
        await server.stop();
        await waitFor(() => reconnecting() >= 1, 'the connector to notice');
        await server.start();
        await writer;
        const keys = Array.from({ length: ROWS }, (_, i) => String(i + 1));
        await waitFor(() => new Set(seen.map((s) => s.key)).size === ROWS, 'every row', 60_000);
        await app.stop();
        const row = reportRow({
          fault: 'source restarted (mariadbd SIGTERM, start)',
          source: 'mariadb',
          broker: 'redis streams',
          ...countDelivery(
            keys,
            seen.map((s) => s.key),
          ),
          seconds: (Date.now() - began) / 1000,
          note: `end to end, restart after ${restartAt} events, while writing`,
        });
        expect(row.lost).toBe(0);
        // In order: once earlier copies of a replayed event are dropped, rows arrive in id order.
        const lastIndex = new Map<string, number>();
        seen.forEach((s, i) => lastIndex.set(s.id, i));
        const order = seen.filter((s, i) => lastIndex.get(s.id) === i).map((s) => Number(s.key));
        expect(order).toEqual(keys.map(Number));
      } finally {
        await app.stop().catch(() => undefined);
        await consumer.end();
        const redis = new Redis(redisUrl);
        await redis.del(topic);
        redis.disconnect();
      }
    },
  );
});
