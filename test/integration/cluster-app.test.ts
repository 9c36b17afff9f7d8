/**
 * Cluster mode in one process (the multi-process tests are in test/cluster/): two apps with one
 * configuration share two PostgreSQL datasources (one unit each: a slot) through leases in
 * Redis, with fenced checkpoints in Redis. Each instance takes one unit; when one stops
 * (graceful: drain, checkpoint, release) the other takes its unit over at once and resumes from
 * the checkpoint: every row arrives once, stamped with the publishing instance.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub, type App } from '../../src/app/app';
import type { PublisherStatus } from '../../src/pipeline/status';
import { PgFixture, sql } from '../helpers/postgres';
import { sharedConnection, uniqueTable } from '../helpers/mariadb';
import { quietLogger, subscriber } from '../helpers/publisher';
import { requireService, SERVICES, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

beforeAll(async () => {
  await requireService('postgres');
  await requireService('redis');
  await requireService('nats');
  await requireService('mariadb');
});

interface Setup {
  make(instance: string): App;
  tables: string[];
  root: string;
  statuses: Map<string, PublisherStatus[]>;
}

async function setup(): Promise<Setup> {
  const a = new PgFixture();
  const b = new PgFixture();
  cleanups.push(
    () => a.drop(),
    () => b.drop(),
  );
  const t1 = await a.table();
  const t2 = await a.table();
  const t3 = await b.table();
  await a.slots(1);
  await b.slots(1);
  const root = uniqueName('evpub');
  const cluster = uniqueName('c').replace(/[^A-Za-z0-9_-]/g, '_');
  const prefix = `${uniqueName('cp')}:`;
  const statuses = new Map<string, PublisherStatus[]>();
  const make = (instance: string): App => {
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: SERVICES.nats.url },
      checkpoints: { store: 'redis', url: SERVICES.redis.url, prefix },
      cluster: { store: 'redis', url: SERVICES.redis.url, name: cluster, leaseTtl: '3s', instance },
      stopTimeout: 5000,
    });
    const seen: PublisherStatus[] = [];
    statuses.set(instance, seen);
    app.on('status', (s) => seen.push(s));
    for (const [ds, f] of [
      ['pga', a],
      ['pgb', b],
    ] as const) {
      app.dataSource(ds, {
        connector: 'postgres',
        url: f.url,
        slot: f.slot,
        publication: f.publication,
        heartbeatInterval: 200,
      });
    }
    for (const [t, ds] of [
      [t1, 'pga'],
      [t2, 'pga'],
      [t3, 'pgb'],
    ] as const) {
      app.model(t, { dataSource: ds, topic: `${root}/{model}`, from: 'beginning' });
    }
    cleanups.push(() => app.stop());
    return app;
  };
  return { make, tables: [t1, t2, t3], root, statuses };
}

describe('cluster mode, two apps in one process', () => {
  it('spreads the units, hands them over on stop, and every row arrives once', async () => {
    const s = await setup();
    const sub = await subscriber(SERVICES.nats.url, `${s.root}/#`);
    cleanups.push(() => sub.client.end());
    const a = s.make('a');
    await a.start();
    // Alone, a takes both units.
    await waitFor(
      () => Object.values(a.status().feeds).every((f) => f.owner?.instance === 'a'),
      'a owns all',
    );
    const b = s.make('b');
    await b.start();
    await waitFor(
      () => {
        const units = a.status().cluster?.units ?? [];
        return (
          units.filter((u) => u.owner === 'a').length === 1 &&
          units.filter((u) => u.owner === 'b').length === 1
        );
      },
      'one unit each',
      10_000,
    );
    let n = 0;
    const insert = async (count: number) => {
      for (let i = 0; i < count; i++, n++) {
        await sql(`INSERT INTO ${s.tables[n % 3]} VALUES ('k${n}', ${n})`);
      }
    };
    await insert(30);
    await waitFor(() => sub.got.length >= 30, '30 events');
    const instances = new Set(sub.got.map((m) => m.headers?.['evpub-instance']));
    expect(instances).toEqual(new Set(['a', 'b']));

    const stoppedAt = performance.now();
    await a.stop();
    await waitFor(
      () => Object.values(b.status().feeds).every((f) => f.state === 'streaming'),
      'b streams all',
    );
    const handover = performance.now() - stoppedAt;
    console.log(`handover after a graceful stop: ${handover.toFixed(0)} ms`);
    await insert(30);
    await waitFor(() => sub.got.length >= 60, '60 events');
    await new Promise((r) => setTimeout(r, 500));
    const keys = sub.got.map((m) => String(m.json.subject));
    expect(keys.length).toBe(60);
    expect(new Set(keys).size).toBe(60);
    expect(sub.got.slice(30).every((m) => m.headers?.['evpub-instance'] === 'b')).toBe(true);
    const acquired = s.statuses.get('b')!.filter((x) => x.type === 'unit' && x.event === 'acquired');
    expect(acquired.length).toBe(2);
  }, 60_000);
});

describe('cluster mode, MariaDB with a configured serverId', () => {
  it('one unit per model: two instances read one each with stable server ids, then one takes both', async () => {
    const conn = await sharedConnection();
    cleanups.push(() => conn.end());
    const tables = [uniqueTable(), uniqueTable()];
    for (const t of tables) {
      await conn.query(`CREATE TABLE \`${t}\` (id VARCHAR(32) PRIMARY KEY, v INT)`);
      cleanups.push(() => conn.query(`DROP TABLE IF EXISTS \`${t}\``));
    }
    const root = uniqueName('evpub');
    const cluster = uniqueName('c').replace(/[^A-Za-z0-9_-]/g, '_');
    const prefix = `${uniqueName('cp')}:`;
    const serverId = 4_000_000 + Math.floor(Math.random() * 1_000_000);
    const sub = await subscriber(SERVICES.nats.url, `${root}/#`);
    cleanups.push(() => sub.client.end());
    const make = (instance: string): App => {
      const app = evpub({
        logger: quietLogger(),
        brokers: { default: SERVICES.nats.url },
        checkpoints: { store: 'redis', url: SERVICES.redis.url, prefix },
        cluster: { store: 'redis', url: SERVICES.redis.url, name: cluster, leaseTtl: '3s', instance },
        stopTimeout: 5000,
      });
      app.dataSource('my', {
        connector: 'mysql',
        url: 'mysql://root@127.0.0.1:3306/test',
        serverId,
        reconnectDelay: 100,
      });
      for (const t of tables) app.model(t, { dataSource: 'my', topic: `${root}/{model}` });
      cleanups.push(() => app.stop());
      return app;
    };
    const a = make('a');
    await a.start();
    const b = make('b');
    await b.start();
    await waitFor(
      () => {
        const units = a.status().cluster?.units ?? [];
        return units.length === 2 && new Set(units.map((u) => u.owner)).size === 2;
      },
      'one unit each',
      10_000,
    );
    expect((a.status().cluster?.units ?? []).map((u) => u.unit).sort()).toEqual(
      tables.map((t) => `my/${t}`).sort(),
    );
    let n = 0;
    const insert = async (count: number) => {
      for (let i = 0; i < count; i++, n++) {
        await conn.query(`INSERT INTO \`${tables[n % 2]}\` VALUES ('k${n}', ${n})`);
      }
    };
    await insert(20);
    await waitFor(() => sub.got.length >= 20, '20 events');
    expect(new Set(sub.got.map((m) => m.headers?.['evpub-instance']))).toEqual(new Set(['a', 'b']));
    await a.stop();
    await waitFor(
      () => Object.values(b.status().feeds).every((f) => f.state === 'streaming'),
      'b streams both',
    );
    await insert(20);
    await waitFor(() => sub.got.length >= 40, '40 events');
    await new Promise((r) => setTimeout(r, 500));
    const keys = sub.got.map((m) => String(m.json.subject));
    expect(keys.length).toBe(40);
    expect(new Set(keys).size).toBe(40);
  }, 60_000);
});
