/**
 * A Redis lease store without persistence (Redis's default: no append-only file) restarted:
 * its epoch counters are gone and start again at 1, while the checkpoint store still holds the
 * feed's last fence (epoch 4 here). The next owner's epoch-1 save is refused as FENCED; the unit
 * must come back to work under an epoch past 4 after that one refusal (the lease is released and
 * acquired again until its epoch passes the stored one, without starting the unit in between),
 * instead of being taken again and again under the refused epoch, republishing from the same
 * checkpoint without end (before the fix: 79 refusals in 20 s, all under epoch 1).
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub, type App } from '../../src/app/app';
import type { PublisherStatus } from '../../src/pipeline/status';
import { PgFixture, sql } from '../helpers/postgres';
import { quietLogger, subscriber } from '../helpers/publisher';
import { RedisLeaseStore } from '../../src/cluster/redis';
import { startRedisServer } from '../helpers/redis-server';
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
});

describe('a lease store that forgot its epochs', () => {
  it('FENCED saves under a reused epoch: the unit comes back under a greater one; every row arrives', async () => {
    const lease = await startRedisServer({ args: ['--appendonly', 'no'] });
    cleanups.push(() => lease.close());
    const f = new PgFixture();
    cleanups.push(() => f.drop());
    const table = await f.table();
    await f.slots(1);
    const root = uniqueName('amnesia');
    const sub = await subscriber(SERVICES.nats.url, `${root}/#`);
    cleanups.push(() => sub.client.end());
    const name = uniqueName('c');
    const prefix = `${uniqueName('cp')}:`;
    const make = (instance: string): { app: App; statuses: PublisherStatus[] } => {
      const app = evpub({
        logger: quietLogger(),
        brokers: { default: SERVICES.nats.url },
        checkpoints: { store: 'redis', url: SERVICES.redis.url, prefix },
        cluster: { store: 'redis', url: lease.url, name, leaseTtl: '3s', instance },
        stopTimeout: 5000,
      });
      app.dataSource('pg', {
        connector: 'postgres',
        url: f.url,
        slot: f.slot,
        publication: f.publication,
        heartbeatInterval: 200,
      });
      app.model(table, { dataSource: 'pg', topic: `${root}/{model}`, from: 'beginning' });
      const statuses: PublisherStatus[] = [];
      app.on('status', (s) => statuses.push(s));
      cleanups.push(() => app.stop());
      return { app, statuses };
    };
    let n = 0;
    const insert = async (count: number) => {
      for (let i = 0; i < count; i++, n++) await sql(`INSERT INTO ${table} VALUES ('k${n}', ${n})`);
    };
    const saved = (statuses: PublisherStatus[], from = 0) =>
      statuses.slice(from).some((s) => s.type === 'checkpoint');

    // Epoch 1 (a), then epoch 2 (b) saves the feed.
    const a = make('a');
    await a.app.start();
    await insert(5);
    await waitFor(() => sub.got.length >= 5 && saved(a.statuses), 'a publishes and saves');
    await a.app.stop();
    // Two more owners come and go (without saving): b's epoch is 4.
    const store = new RedisLeaseStore({ url: lease.url, cluster: name });
    for (const holder of ['x', 'y']) {
      const l = await store.acquire('pg', holder, 3000);
      await store.release(l!);
    }
    await store.close();
    const b = make('b');
    await b.app.start();
    await insert(5);
    await waitFor(() => sub.got.length >= 10 && saved(b.statuses), 'b publishes and saves');
    expect(b.app.status().cluster?.units[0]?.epoch).toBe(4);

    // The lease store restarts empty: the epoch counter begins at 1 again.
    await lease.stop();
    await lease.start();
    const restarted = b.statuses.length;
    // b's next renew finds its lease gone: the unit is lost, then taken again.
    await waitFor(
      () => b.statuses.slice(restarted).some((s) => s.type === 'unit' && s.event === 'lost'),
      'the unit lost',
    );
    const mark = b.statuses.length;
    await insert(5);
    await waitFor(
      () =>
        saved(b.statuses, mark) &&
        b.app.status().cluster?.state === 'ok' &&
        (b.app.status().cluster?.units[0]?.epoch ?? 0) > 4 &&
        Object.values(b.app.status().feeds).every((x) => x.state === 'streaming'),
      'the unit saving again after the restart',
      20_000,
    );
    await insert(5);
    const keys = () => new Set(sub.got.map((m) => String(m.json.subject)));
    await waitFor(() => keys().size === 20, 'all 20 rows');
    const fenced = b.statuses
      .slice(mark)
      .filter((s) => s.type === 'unit' && s.event === 'lost' && s.error?.code === 'EVPUB_FENCED');
    console.log(
      `lease store restarted empty: ${fenced.length} FENCED losses before the unit saved again; ` +
        `${sub.got.length} events for 20 rows`,
    );
    // One refusal: the next acquire stepped past epoch 4 without starting the unit in between.
    expect(fenced.length).toBe(1);
    expect(b.app.status().cluster?.units[0]?.epoch).toBe(5);
  }, 60_000);
});
