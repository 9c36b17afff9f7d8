/**
 * One PostgreSQL transaction of 1,000,000 small rows (INSERT ... SELECT generate_series)
 * published through `evpub start` to MQTT (see big-transaction.ts): every row arrives and the
 * publisher's RSS stays bounded (printed; asserted only as a generous ceiling, 400 MB).
 *
 * The walsender sends the transaction once it committed, as fast as evpub reads it; evpub reads
 * while its window (`publisher.maxInFlight`) has room and otherwise pauses the replication
 * socket, so the rest of the transaction waits in PostgreSQL (and TCP), not in evpub's heap.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killCli, type CliProcess } from '../e2e/cli';
import type { PrivateMosquitto } from '../helpers/mosquitto';
import { requireService } from '../helpers/services';
import { IdCounter, measureBigTransaction, startBroker } from './big-transaction';
import { PgSource, requireFreshBuild, startEvpub, tempDir } from './evpub-process';

const ROWS = 1_000_000;
const RSS_CEILING_MB = 400;

const source = new PgSource();
const dir = tempDir('evpub-fault-bigtx-pg-');
const counter = new IdCounter(ROWS);
let broker: PrivateMosquitto | undefined;
let publisher: CliProcess | undefined;

beforeAll(async () => {
  requireFreshBuild();
  await requireService('postgres');
  await source.create();
  broker = await startBroker();
});

afterAll(async () => {
  if (publisher) await killCli(publisher);
  await counter.end().catch(() => undefined);
  await broker?.close();
  await source.drop();
  dir.remove();
});

describe('fault matrix: a PostgreSQL transaction of 1,000,000 rows', () => {
  it('is published completely with the publisher RSS bounded', async () => {
    const started = Date.now();
    await counter.subscribe(broker!.url);
    publisher = await startEvpub(dir.dir, {
      brokers: { default: { url: broker!.url } },
      checkpoints: { store: 'file', path: 'checkpoints' },
      datasources: { pg: source.datasource() },
      models: {
        rows: {
          dataSource: 'pg',
          topic: counter.template,
          from: 'beginning',
          settings: { table: source.table },
        },
      },
    });
    const row = await measureBigTransaction({
      publisher,
      counter,
      insert: () => source.insert(1, ROWS), // one transaction
      started,
      fault: 'one transaction of 1,000,000 rows',
      source: 'postgres',
      timeoutMs: 480_000,
    });
    expect(await publisher.exited).toBe(0);
    expect(counter.strays).toBe(0);
    expect(row.lost).toBe(0);
    expect(row.maxRssMb).toBeLessThanOrEqual(RSS_CEILING_MB);
  }, 600_000);
});
