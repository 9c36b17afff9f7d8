/**
 * The lease store going away, seen from two instances in one process (the scenario of
 * store-outage*.test.ts, run against each lease store on a private server the test may stop).
 *
 * Two PostgreSQL datasources on the shared server (one slot each: two units), fenced checkpoints
 * in the shared Redis, events to the shared NATS, and the leases on the private server. Rows are
 * inserted without pause the whole time. Once each instance owns one unit and publishes, the
 * lease store is stopped for twice the TTL, then started again on the same port and data.
 *
 * What a user relies on, asserted:
 * - no event of a pre-outage lease arrives later than (stop + TTL + a delivery margin): a holder's
 *   deadline is at most TTL − TTL/5 after its last successful renew, which was sent before the
 *   store stopped; nothing at all arrives between that bound and the restart;
 * - each instance reports its unit lost, `status().cluster.state` is `unreachable`, and `/ready`'s
 *   view says not ready, naming the lease store;
 * - once the store is back, both units are acquired again with a greater epoch, both instances
 *   are ready, and every inserted row arrives (duplicates from the replay are counted, printed).
 */
import { performance } from 'node:perf_hooks';
import { Client as PgClient } from 'pg';
import { expect } from 'vitest';
import { evpub, type App } from '../../src/app/app';
import { readyView } from '../../src/http/views';
import type { PublisherStatus } from '../../src/pipeline/status';
import { createClient } from '../../src/pubsub/registry';
import { PG_URL, PgFixture } from '../helpers/postgres';
import { quietLogger } from '../helpers/publisher';
import { SERVICES, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

export const TTL_MS = 3000;
/** Time from the subscriber's view of a publish to its receipt: loopback NATS, generous. */
export const DELIVERY_MARGIN_MS = 250;

/** A lease server the test owns: stopped and started again on the same port and data. */
export interface LeaseServer {
  url: string;
  stop(): Promise<void>;
  start(): Promise<void>;
}

interface Got {
  /** performance.now() at receipt. */
  at: number;
  table: string;
  key: string;
  instance: string;
  epoch: number;
}

type Cleanup = () => Promise<unknown>;

export async function runStoreOutage(
  store: 'redis' | 'postgres' | 'nats',
  server: LeaseServer,
  cleanups: Cleanup[],
): Promise<void> {
  // Two datasources: two units (a slot each).
  const fixtures = [new PgFixture(), new PgFixture()];
  const tables: string[] = [];
  for (const f of fixtures) {
    cleanups.push(() => f.drop());
    tables.push(await f.table());
    await f.slots(1);
  }
  const unitOfTable = new Map([
    [tables[0]!, 'pga'],
    [tables[1]!, 'pgb'],
  ]);
  const root = uniqueName('outage');
  const clusterName = uniqueName('c');
  const prefix = `${uniqueName('cp')}:`;
  const statuses = new Map<string, PublisherStatus[]>();

  const make = (instance: string): App => {
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: SERVICES.nats.url },
      checkpoints: { store: 'redis', url: SERVICES.redis.url, prefix },
      cluster: { store, url: server.url, name: clusterName, leaseTtl: `${TTL_MS}ms`, instance },
      stopTimeout: 5000,
    });
    const seen: PublisherStatus[] = [];
    statuses.set(instance, seen);
    app.on('status', (s) => seen.push(s));
    fixtures.forEach((f, i) =>
      app.dataSource(i === 0 ? 'pga' : 'pgb', {
        connector: 'postgres',
        url: f.url,
        slot: f.slot,
        publication: f.publication,
        heartbeatInterval: 200,
      }),
    );
    tables.forEach((t, i) =>
      app.model(t, { dataSource: i === 0 ? 'pga' : 'pgb', topic: `${root}/{model}`, from: 'beginning' }),
    );
    cleanups.push(() => app.stop());
    return app;
  };

  // The subscriber: every event with its receipt time and the lease it was published under.
  const got: Got[] = [];
  const sub = createClient(SERVICES.nats.url, { logger: quietLogger() });
  cleanups.push(() => sub.end());
  sub.on('message', (topic, payload, meta) => {
    const json = JSON.parse(payload.toString('utf8')) as { subject?: string };
    const table = tables.find((t) => topic.endsWith(t)) ?? topic;
    got.push({
      at: performance.now(),
      table,
      key: String(json.subject),
      instance: meta.headers?.['evpub-instance'] ?? '?',
      epoch: Number(meta.headers?.['evpub-epoch'] ?? NaN),
    });
  });
  await sub.subscribe(`${root}/#`);

  const apps = { a: make('a'), b: make('b') };
  await apps.a.start();
  await apps.b.start();
  const owners = (app: App) =>
    new Map((app.status().cluster?.units ?? []).map((u) => [u.unit, { owner: u.owner, epoch: u.epoch }]));
  await waitFor(
    () => {
      const a = [...owners(apps.a).values()].filter((u) => u.owner === 'a').length;
      const b = [...owners(apps.b).values()].filter((u) => u.owner === 'b').length;
      return a === 1 && b === 1;
    },
    'one unit each',
    15_000,
  );

  // Rows, without pause, into both tables.
  const inserted: string[] = [];
  const pg = new PgClient({ connectionString: PG_URL });
  await pg.connect();
  cleanups.push(() => pg.end());
  let inserting = true;
  const inserter = (async () => {
    for (let n = 0; inserting; n++) {
      for (const t of tables) {
        const key = `${t}:k${n}`;
        await pg.query(`INSERT INTO ${t} VALUES ($1, $2)`, [key, n]);
        inserted.push(key);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  cleanups.push(async () => {
    inserting = false;
    await inserter.catch(() => undefined);
  });
  await waitFor(
    () => new Set(got.map((g) => g.instance)).size === 2 && got.length >= 40,
    'events from both instances',
  );
  const before = new Map<string, number>();
  for (const [unit, u] of owners(apps.a)) before.set(unit, u.epoch ?? 0);
  for (const [unit, u] of owners(apps.b)) if (u.owner === 'b') before.set(unit, u.epoch ?? 0);

  // The outage.
  await server.stop();
  const stoppedAt = performance.now();
  const bound = stoppedAt + TTL_MS + DELIVERY_MARGIN_MS;
  for (const [name, app] of Object.entries(apps)) {
    await waitFor(
      () =>
        app.status().cluster?.state === 'unreachable' &&
        statuses.get(name)!.some((s) => s.type === 'unit' && s.event === 'lost'),
      `${name}: lease store unreachable and its unit lost`,
      4 * TTL_MS,
    );
  }
  // Down for twice the TTL (the scenario's length, not a wait for a condition).
  await new Promise((r) => setTimeout(r, Math.max(0, stoppedAt + 2 * TTL_MS - performance.now())));
  for (const [name, app] of Object.entries(apps)) {
    expect(app.status().cluster?.state, name).toBe('unreachable');
    const ready = readyView(app);
    expect(ready.ready, name).toBe(false);
    expect(ready.reasons.join('\n'), name).toContain(`the lease store (${store}) does not answer`);
    expect(
      Object.values(app.status().feeds).every((f) => f.state === 'standby'),
      `${name}: no feed runs`,
    ).toBe(true);
  }
  const restartAt = performance.now();
  await server.start();

  // Back: both units acquired again, under greater epochs; both instances ready.
  await waitFor(
    () => {
      const units = [...owners(apps.a).entries()];
      return (
        units.length === 2 &&
        units.every(([unit, u]) => u.owner !== undefined && (u.epoch ?? 0) > before.get(unit)!) &&
        Object.values(apps).every((app) => readyView(app).ready)
      );
    },
    'both units acquired again, both instances ready',
    6 * TTL_MS,
  );
  const backAfter = performance.now() - restartAt;
  await new Promise((r) => setTimeout(r, 500));
  inserting = false;
  await inserter;
  const keys = () => new Set(got.map((g) => g.key));
  await waitFor(() => inserted.every((k) => keys().has(k)), 'every row', 30_000);

  const stale = got.filter((g) => g.at > bound && g.epoch <= before.get(unitOfTable.get(g.table)!)!);
  const between = got.filter((g) => g.at > bound && g.at < restartAt);
  const lastOld = Math.max(...got.filter((g) => g.at < restartAt).map((g) => g.at)) - stoppedAt;
  const duplicates = got.length - keys().size;
  console.log(
    `${store} lease store down ${(restartAt - stoppedAt).toFixed(0)} ms: last event ${lastOld.toFixed(0)} ms ` +
      `after the stop (bound ${TTL_MS + DELIVERY_MARGIN_MS} ms); units back ${backAfter.toFixed(0)} ms after ` +
      `the restart; ${inserted.length} rows, ${got.length} events, ${duplicates} duplicates`,
  );
  expect(stale, 'events of a pre-outage lease after its deadline').toEqual([]);
  expect(between, 'events while no lease was valid').toEqual([]);
  expect(
    inserted.filter((k) => !keys().has(k)),
    'missing rows',
  ).toEqual([]);
  for (const name of Object.keys(apps)) {
    const lost = statuses.get(name)!.filter((s) => s.type === 'unit' && s.event === 'lost');
    expect(lost.length, `${name}: lost units`).toBeGreaterThanOrEqual(1);
    expect(statuses.get(name)!.some((s) => s.type === 'cluster' && s.state === 'ok')).toBe(true);
  }
  // After the restart every event carries a new lease.
  const after = got.filter((g) => g.at > restartAt);
  expect(after.length).toBeGreaterThan(0);
  for (const g of after) expect(g.epoch).toBeGreaterThan(before.get(unitOfTable.get(g.table)!)!);
}
