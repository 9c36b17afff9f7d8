/**
 * One MariaDB transaction of 200,000 small rows (INSERT ... SELECT from the sequence engine's
 * seq_1_to_200000) published through `evpub start` to MQTT (see big-transaction.ts): every row
 * arrives and the publisher's RSS stays bounded (printed; asserted only as a generous ceiling,
 * 400 MB).
 *
 * The binlog holds the transaction as one event group of rows events (each at most
 * binlog_row_event_max_size); evpub pauses the binlog connection while its window is full, so
 * the rest of the transaction waits in the server (and TCP), not in evpub's heap.
 */
import type { Connection } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killCli, type CliProcess } from '../e2e/cli';
import { SHARED_URL, sharedConnection, uniqueTable } from '../helpers/mariadb';
import type { PrivateMosquitto } from '../helpers/mosquitto';
import { IdCounter, measureBigTransaction, startBroker } from './big-transaction';
import { requireFreshBuild, startEvpub, tempDir } from './evpub-process';

const ROWS = 200_000;
const RSS_CEILING_MB = 400;

const table = uniqueTable();
const dir = tempDir('evpub-fault-bigtx-my-');
const counter = new IdCounter(ROWS);
let conn: Connection | undefined;
let broker: PrivateMosquitto | undefined;
let publisher: CliProcess | undefined;

beforeAll(async () => {
  requireFreshBuild();
  conn = await sharedConnection();
  await conn.query(`CREATE TABLE \`${table}\` (id INT PRIMARY KEY, v INT NOT NULL)`);
  broker = await startBroker();
});

afterAll(async () => {
  if (publisher) await killCli(publisher);
  await counter.end().catch(() => undefined);
  await broker?.close();
  await conn?.query(`DROP TABLE IF EXISTS \`${table}\``);
  await conn?.end();
  dir.remove();
});

describe('fault matrix: a MariaDB transaction of 200,000 rows', () => {
  it('is published completely with the publisher RSS bounded', async () => {
    const started = Date.now();
    await counter.subscribe(broker!.url);
    publisher = await startEvpub(dir.dir, {
      brokers: { default: { url: broker!.url } },
      checkpoints: { store: 'file', path: 'checkpoints' },
      datasources: { my: { connector: 'mysql', url: SHARED_URL, heartbeat: 1000, reconnectDelay: 100 } },
      models: { rows: { dataSource: 'my', topic: counter.template, from: 'now', settings: { table } } },
    });
    const row = await measureBigTransaction({
      publisher,
      counter,
      insert: () => conn!.query(`INSERT INTO \`${table}\` SELECT seq, 0 FROM seq_1_to_${ROWS}`), // one transaction
      started,
      fault: 'one transaction of 200,000 rows',
      source: 'mariadb',
      timeoutMs: 300_000,
    });
    expect(await publisher.exited).toBe(0);
    expect(counter.strays).toBe(0);
    expect(row.lost).toBe(0);
    expect(row.maxRssMb).toBeLessThanOrEqual(RSS_CEILING_MB);
  }, 600_000);
});
