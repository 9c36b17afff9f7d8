/**
 * The SQL poll connector against a SQLite file, the shared PostgreSQL and the shared MariaDB:
 * rows sharing a timestamp across batches and polls, resume from the cursor, ops, and a real
 * evpub app whose checkpoint is the cursor.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import type { EventConnector, ModelFeed } from '../../src/connectors/contract';
import { initialize } from '../../src/connectors/poll/index';
import type { StartFrom } from '../../src/events/change-event';
import { createLogger } from '../../src/logger';
import { RecordingSink } from '../conformance/connector.suite';
import { createPollTable, openTestDb, tick, type Dialect, type TestDb } from '../helpers/poll-tables';
import { quietLogger, subscriber } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const running: EventConnector[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((c) => c.stop()));
});

async function poller(url: string, model: ModelFeed, sink = new RecordingSink()) {
  const ds = {
    name: 'p',
    settings: { url, interval: 20 },
    logger: createLogger({ level: 'silent' }),
    connector: undefined as unknown,
  };
  await initialize(ds);
  const connector = ds.connector as EventConnector;
  running.push(connector);
  await connector.start({ models: [model], sink });
  return { connector, sink };
}

for (const dialect of ['sqlite', 'postgres', 'mysql'] as Dialect[]) {
  describe(`poll connector: ${dialect}`, () => {
    let db: TestDb;
    beforeAll(async () => {
      db = await openTestDb(dialect);
    });
    afterAll(async () => {
      await db?.close();
    });

    const feed = (table: string, from: StartFrom, extra: Record<string, unknown> = {}): ModelFeed => ({
      name: table,
      from,
      settings: {
        cursorColumn: 'updated_at',
        createdColumn: 'created_at',
        deletedColumn: 'deleted',
        batchSize: 2,
        ...extra,
      },
    });

    it('reads rows sharing one timestamp across batches and polls exactly once, in key order', async () => {
      const t = await createPollTable(db);
      const same = tick();
      for (const id of ['a', 'b', 'c']) await t.insert(id, 1, same);
      const { sink } = await poller(db.url, feed(t.name, 'beginning'));
      await waitFor(() => sink.events.length >= 3, 'the first three');
      // Later rows with the very same timestamp (and greater keys) come in a later poll.
      for (const id of ['d', 'e']) await t.insert(id, 2, same);
      await t.insert('f', 3);
      await waitFor(() => sink.events.length >= 6, 'all six');
      expect(sink.keys()).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
      expect(sink.events.every((e) => e.op === 'create')).toBe(true);
      // Polled again and again: nothing twice.
      await t.insert('g', 4);
      await waitFor(() => sink.events.length >= 7, 'g');
      expect(sink.keys()).toEqual(['a', 'b', 'c', 'd', 'e', 'f', 'g']);
      expect(new Set(sink.events.map((e) => e.position)).size).toBe(7);
    });

    it('resumes from the cursor after stop/start: nothing lost, nothing repeated', async () => {
      const t = await createPollTable(db);
      for (let i = 0; i < 5; i++) await t.insert(`k${i}`, i);
      const first = await poller(db.url, feed(t.name, 'beginning'));
      await waitFor(() => first.sink.events.length >= 5, 'five');
      const last = first.sink.events.at(-1)!.position!;
      expect(JSON.parse(last)).toMatchObject({ id: 'k4' });
      await first.connector.stop();
      // While stopped: an update, a soft delete and new rows, two of them sharing a timestamp.
      await t.update('k1', 10);
      await t.softDelete('k2');
      const same = tick();
      await t.insert('n2', 20, same);
      await t.insert('n1', 21, same);
      const second = await poller(db.url, feed(t.name, { after: last }));
      await waitFor(() => second.sink.events.length >= 4, 'the four changes made while stopped');
      expect(second.sink.events.map((e) => [e.op, e.key])).toEqual([
        ['update', 'k1'],
        ['delete', 'k2'],
        ['create', 'n1'],
        ['create', 'n2'],
      ]);
      expect(second.sink.events[0]!.after).toMatchObject({ id: 'k1', value: 10 });
      expect(second.sink.events[1]!.before).toMatchObject({ id: 'k2', deleted: 1 });
      await t.insert('n3', 22);
      await waitFor(() => second.sink.keys().includes('n3'), 'n3');
      expect(second.sink.keys()).toEqual(['k1', 'k2', 'n1', 'n2', 'n3']);
    });

    it('polls by the key alone for an append-only table', async () => {
      const t = await createPollTable(db);
      for (const id of ['x1', 'x2', 'x3']) await t.insert(id, 1);
      const { sink } = await poller(db.url, { name: t.name, from: 'beginning', settings: { batchSize: 2 } });
      await waitFor(() => sink.events.length >= 3, 'three');
      await t.insert('x4', 1);
      await waitFor(() => sink.events.length >= 4, 'x4');
      expect(sink.keys()).toEqual(['x1', 'x2', 'x3', 'x4']);
      expect(JSON.parse(sink.events[3]!.position!)).toEqual({ id: 'x4' });
    });
  });
}

describe('poll connector in an app (SQLite → Redis)', () => {
  it('publishes rows and resumes from the checkpointed cursor after an app restart', async () => {
    const redis = await requireService('redis');
    const db = await openTestDb('sqlite');
    try {
      const t = await createPollTable(db);
      const topic = `${uniqueName('evpub')}/rows`;
      const sub = await subscriber(redis, topic);
      const checkpoints = new MemoryCheckpointStore();
      const make = () => {
        const app = evpub({ logger: quietLogger(), brokers: { default: redis }, checkpoints });
        app.dataSource('sql', { connector: 'poll', url: db.url, interval: 20 });
        app.model('rows', {
          dataSource: 'sql',
          topic,
          from: 'beginning',
          settings: { table: t.name, cursorColumn: 'updated_at', createdColumn: 'created_at' },
        });
        return app;
      };
      await t.insert('a', 1);
      await t.insert('b', 2);
      const first = make();
      await first.start();
      await waitFor(() => sub.got.length >= 2, 'a and b');
      await waitFor(
        async () => JSON.parse((await checkpoints.load('sql/rows')) ?? '{}').id === 'b',
        'the checkpoint',
      );
      await first.stop();
      await t.update('a', 3);
      await t.insert('c', 4);
      const second = make();
      await second.start();
      await waitFor(() => sub.got.length >= 4, 'the changes made while stopped');
      await second.stop();
      await sub.client.end();
      const data = sub.got.map((m) => m.json.data as { op: string; key: string });
      expect(data.map((d) => [d.op, d.key])).toEqual([
        ['create', 'a'],
        ['create', 'b'],
        ['update', 'a'],
        ['create', 'c'],
      ]);
    } finally {
      await db.close();
    }
  });
});
