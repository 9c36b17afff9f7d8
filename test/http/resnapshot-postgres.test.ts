/**
 * Re-snapshot of a running PostgreSQL feed (POST /api/feeds/:datasource/:model/snapshot, `evpub
 * feeds snapshot`), against the real PostgreSQL and Redis: every row arrives again as a
 * `snapshot` event (or, changed meanwhile, as the stream's newer change) while inserts, updates
 * and a delete go on streaming, the last event per key is the table's row (never a stale
 * snapshot row after a change, even when the feed was paused with a chunk read), a second request while it runs answers "already running" (HTTP and CLI),
 * and the route's statuses (202, 401, 404, 409 for a connector that cannot and for a table
 * without a primary key). A stop of the app
 * mid-snapshot resumes it after its cursor on the next start.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import { decodePosition } from '../../src/connectors/postgres/position';
import { spawnCli } from '../e2e/cli';
import { PgFixture, sql } from '../helpers/postgres';
import { quietLogger, subscriber, type Received } from '../helpers/publisher';
import { requireService, SERVICES, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

beforeAll(async () => {
  await requireService('postgres');
  await requireService('redis');
});

type Data = { op: string; key: string; after: { id: number; v: number } | null };
const dataOf = (got: Received[]): Data[] => got.map((m) => m.json.data as Data);

describe('re-snapshot of a PostgreSQL feed', () => {
  it('publishes every row again beside the stream; the last event per key is the table', async () => {
    const rows = 300;
    const fixture = new PgFixture();
    cleanups.push(() => fixture.drop());
    const table = await fixture.table('id int PRIMARY KEY, v int NOT NULL');
    const noKey = await fixture.table('id int, v int');
    await sql(`INSERT INTO ${table} SELECT g, 0 FROM generate_series(1, ${rows}) g`);
    const token = uniqueName('tok');
    const root = uniqueName('resnap');
    const events = await subscriber(SERVICES.redis.url, `${root}/#`);
    cleanups.push(() => events.client.end());
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: SERVICES.redis.url },
      checkpoints: { store: 'memory' },
      http: { port: 0, token },
    });
    cleanups.push(() => app.stop());
    app.dataSource('pg', {
      connector: 'postgres',
      url: fixture.url,
      slot: fixture.slot,
      publication: fixture.publication,
      snapshotChunk: 25,
      statusInterval: 200,
      heartbeatInterval: 200,
    });
    app.model({ name: 'items' }, { dataSource: 'pg', topic: `${root}/{key}`, settings: { table } });
    app.model(
      { name: 'loose' },
      { dataSource: 'pg', topic: `${root}/loose/{key}`, settings: { table: noKey } },
    );
    app.dataSource('local', { connector: 'memory', store: uniqueName('s') });
    app.model('accounts', { dataSource: 'local', topic: `${root}/local/{key}` });
    const states = new Set<string>();
    app.on('status', (s) => {
      if (s.type === 'connector' && s.status.type === 'snapshot')
        states.add(app.status().feeds['pg/items']!.state);
    });
    await app.start();
    const { url } = await app.listen();
    const post = async (path: string, auth = true) => {
      const res = await fetch(url + path, {
        method: 'POST',
        headers: auth ? { authorization: `Bearer ${token}` } : {},
      });
      return {
        status: res.status,
        json: (await res.json()) as {
          started?: boolean;
          snapshot?: { done: number; total?: number };
          feed?: { state: string; canSnapshot: boolean };
          message?: string;
        },
      };
    };

    await sql(`INSERT INTO ${table} VALUES (1001, 0)`);
    await waitFor(() => dataOf(events.got).some((d) => d.key === '1001'), 'a streamed insert');
    expect(dataOf(events.got).map((d) => d.op)).toEqual(['create']); // no initial snapshot

    expect((await post('/api/feeds/pg/items/snapshot', false)).status).toBe(401);
    const unknown = await post('/api/feeds/pg/nope/snapshot');
    expect(unknown).toMatchObject({ status: 404, json: { message: 'no feed "pg/nope"' } });
    const memory = await post('/api/feeds/local/accounts/snapshot');
    expect(memory.status).toBe(409);
    expect(memory.json.message).toContain('the memory connector (datasource local) cannot re-snapshot');
    const loose = await post('/api/feeds/pg/loose/snapshot');
    expect(loose.status).toBe(409);
    expect(loose.json.message).toContain('a snapshot needs a primary key');
    const list = (await (
      await fetch(`${url}/api/feeds`, { headers: { authorization: `Bearer ${token}` } })
    ).json()) as { feeds: { id: string; canSnapshot: boolean }[] };
    expect(list.feeds.map((f) => [f.id, f.canSnapshot])).toEqual([
      ['pg/items', true],
      ['pg/loose', true],
      ['local/accounts', false],
    ]);

    // Paused, the snapshot cannot get past its first row: the second request surely finds it running.
    app.pause('pg/items');
    const first = await post('/api/feeds/pg/items/snapshot');
    expect(first).toMatchObject({ status: 202, json: { started: true, snapshot: { done: 0 } } });
    const second = await post('/api/feeds/pg/items/snapshot');
    expect(second).toMatchObject({ status: 202, json: { started: false } });
    const cli = spawnCli(['feeds', 'snapshot', 'pg/items', '--url', url, '--token', token]);
    expect(await cli.exited, cli.stderr()).toBe(0);
    expect(cli.stdout()).toMatch(
      /^pg\/items: a snapshot is already running \(\d+( \/ 301)? rows\) \(state paused\)$/m,
    );
    const cannot = spawnCli(['feeds', 'snapshot', 'local/accounts', '--url', url, '--token', token]);
    expect(await cannot.exited).toBe(1);
    expect(cannot.stderr()).toContain('cannot re-snapshot');

    // Changes while it is held, then while it runs.
    await sql(`UPDATE ${table} SET v = 1 WHERE id <= 40`);
    app.resume('pg/items');
    await sql(`UPDATE ${table} SET v = 2 WHERE id IN (100, 250, 300)`);
    await sql(`DELETE FROM ${table} WHERE id = 200`);
    await sql(`INSERT INTO ${table} VALUES (1002, 5)`);
    await sql(`UPDATE ${table} SET v = 3 WHERE id = 1001`);
    await waitFor(() => app.status().feeds['pg/items']!.state === 'streaming', 'the snapshot to end');
    // A change after the snapshot: once it arrived, everything before it did.
    await sql(`INSERT INTO ${table} VALUES (5000, 9)`);
    await waitFor(() => dataOf(events.got).some((d) => d.key === '5000'), 'the insert after the snapshot');

    const got = dataOf(events.got);
    const snapshotted = new Set(got.filter((d) => d.op === 'snapshot').map((d) => Number(d.key)));
    // A row the stream changed while its chunk was out may come as that change only (its
    // snapshot row would be older); every other row comes again as a snapshot event.
    const changed = new Set([...Array.from({ length: 40 }, (_, i) => i + 1), 100, 200, 250, 300, 1001]);
    for (let id = 1; id <= rows; id++) {
      if (!changed.has(id) && !snapshotted.has(id)) throw new Error(`row ${id} was not snapshotted again`);
    }
    // The streamed changes all arrived, as changes (not only through the snapshot).
    expect(got.filter((d) => d.op === 'update')).toHaveLength(40 + 3 + 1);
    expect(got.filter((d) => d.op === 'delete').map((d) => d.key)).toEqual(['200']);
    const table_ = await sql<{ id: number; v: number }>(`SELECT id, v FROM ${table}`);
    const last = new Map<string, Data>();
    for (const d of got) last.set(d.key, d);
    expect(last.get('200')!.op).toBe('delete');
    for (const row of table_) expect(last.get(String(row.id))?.after, `row ${row.id}`).toEqual(row);
    expect(states.has('snapshotting')).toBe(true);
    expect(app.status().feeds['pg/items']!.snapshot).toBeUndefined();
  });

  it('a stop mid-snapshot resumes after the cursor on the next start', async () => {
    const rows = 2_000;
    const fixture = new PgFixture();
    cleanups.push(() => fixture.drop());
    const table = await fixture.table('id int PRIMARY KEY, v int NOT NULL');
    await sql(`INSERT INTO ${table} SELECT g, 0 FROM generate_series(1, ${rows}) g`);
    const store = new MemoryCheckpointStore();
    const broker = `memory://${uniqueName('b')}`;
    const topic = `evpub/test/${uniqueName('resnap')}`;
    const app = () => {
      const a = evpub({
        logger: quietLogger(),
        brokers: { default: broker },
        checkpoints: store,
        publisher: { maxInFlight: 50 },
      });
      a.dataSource('pg', {
        connector: 'postgres',
        url: fixture.url,
        slot: fixture.slot,
        publication: fixture.publication,
        snapshotChunk: 50,
      });
      a.model({ name: 'items' }, { dataSource: 'pg', topic, settings: { table } });
      return a;
    };

    const sub1 = await subscriber(broker, topic);
    cleanups.push(() => sub1.client.end());
    const firstApp = app();
    cleanups.push(() => firstApp.stop());
    await firstApp.start();
    let stopping: Promise<void> | undefined;
    sub1.client.on('message', () => {
      if (sub1.got.length >= 500) stopping ??= firstApp.stop();
    });
    expect(await firstApp.resnapshot('pg/items')).toEqual({ started: true, done: 0 });
    await waitFor(() => stopping !== undefined, 'the first run to be stopping');
    await stopping;
    const checkpoint = await store.load('pg/items');
    const cursor = decodePosition(checkpoint!).snapshot!.cursor!;
    const resumeAfter = Number(cursor[0]);
    expect(resumeAfter).toBeGreaterThanOrEqual(450);
    expect(resumeAfter).toBeLessThan(rows);
    const read1 = new Set(dataOf(sub1.got).map((d) => Number(d.key)));
    await sub1.client.end();

    const sub2 = await subscriber(broker, topic);
    cleanups.push(() => sub2.client.end());
    const secondApp = app();
    cleanups.push(() => secondApp.stop());
    await secondApp.start();
    await waitFor(
      () => dataOf(sub2.got).some((d) => d.key === String(rows)),
      'the snapshot to finish in the second run',
    );
    const read2 = dataOf(sub2.got).map((d) => Number(d.key));
    expect(dataOf(sub2.got).every((d) => d.op === 'snapshot')).toBe(true);
    // Read on after the checkpoint's cursor, not from the first row again.
    expect(read2).toEqual(Array.from({ length: rows - resumeAfter }, (_, i) => resumeAfter + 1 + i));
    for (let id = 1; id <= rows; id++) {
      if (!read1.has(id) && !read2.includes(id)) throw new Error(`row ${id} was never read`);
    }
    await waitFor(() => secondApp.status().feeds['pg/items']!.state === 'streaming', 'streaming again');
    // Resolved as not running any more: a new request starts another one.
    expect((await secondApp.resnapshot('pg/items')).started).toBe(true);
  });
});
