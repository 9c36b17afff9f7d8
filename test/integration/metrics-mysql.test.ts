/**
 * The MySQL/MariaDB binlog lag on /metrics (`evpub_source_lag_bytes` / `_seconds` with the
 * model's label) and in the feed's view, against a private mariadbd: nobody else writes to its
 * binlog, so a caught-up reader is exactly 0 bytes behind. Its binlogs are the smallest the
 * server allows (4 KiB), so what the paused feed has not read spans several files. While the
 * feed is paused the rows written are unread binlog: the lag grows by at least their bytes;
 * after resume it is back to 0.
 */
import type { RowDataPacket } from 'mysql2';
import type { Connection } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import type { FeedView } from '../../src/http/views';
import { startPrivateMariaDb, type PrivateMariaDb } from '../helpers/mariadb';
import { parseExposition, scrapeUntil } from '../helpers/prometheus';
import { quietLogger } from '../helpers/publisher';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

let server: PrivateMariaDb;
let conn: Connection;

beforeAll(async () => {
  server = await startPrivateMariaDb({ args: ['--max-binlog-size=4096'] });
  conn = await server.connect();
  await conn.query('USE test');
}, 60_000);

afterAll(async () => {
  await conn?.end().catch(() => undefined);
  await server?.close();
});

describe('metrics: mysql binlog lag', () => {
  it(
    'grows while the feed is paused and rows are written, back to 0 after resume',
    { timeout: 60_000 },
    async () => {
      const table = uniqueName('lag');
      await conn.query(`CREATE TABLE ${table} (id INT PRIMARY KEY, v TEXT)`);
      const app = evpub({
        logger: quietLogger(),
        brokers: { default: `memory://${uniqueName('b')}` },
        checkpoints: { store: 'memory' },
        http: { port: 0 },
      });
      app.dataSource('my', {
        connector: 'mysql',
        url: server.url,
        statusInterval: 200,
        heartbeat: 1000,
        reconnectDelay: 100,
      });
      app.model(table, { dataSource: 'my', topic: `lag/${table}/{key}` });
      try {
        await app.start();
        const { url } = await app.listen();
        const text = async () => (await fetch(`${url}/metrics`)).text();
        const labels = { datasource: 'my', model: table };
        const bytes = (m: ReturnType<typeof parseExposition>) => m.value('evpub_source_lag_bytes', labels);
        const seconds = (m: ReturnType<typeof parseExposition>) =>
          m.value('evpub_source_lag_seconds', labels);

        const idle = await scrapeUntil(text, (m) => bytes(m) === 0, 'a caught-up reader: 0 bytes behind');
        expect(seconds(idle)).toBe(0);

        expect(app.pause(`my/${table}`)).toBe(true);
        const value = 'x'.repeat(500);
        const write = async (from: number, n: number) => {
          for (let i = from; i < from + n; i++)
            await conn.query(`INSERT INTO ${table} VALUES (?, ?)`, [i, value]);
        };
        await write(0, 20); // 10 kB of values: more than two 4 KiB binlogs
        const behind = await scrapeUntil(
          text,
          (m) => (bytes(m) ?? 0) >= 20 * value.length && (seconds(m) ?? 0) > 0,
          'the paused reader behind by at least the rows written',
        );
        const [logs] = await conn.query<RowDataPacket[]>('SHOW BINARY LOGS');
        expect(logs.length).toBeGreaterThan(2); // the unread part spans files
        const total = logs.reduce((sum, l) => sum + Number(l.File_size), 0);
        expect(bytes(behind)).toBeLessThanOrEqual(total);

        await write(20, 20);
        const further = await scrapeUntil(
          text,
          (m) => (bytes(m) ?? 0) >= bytes(behind)! + 20 * value.length,
          'the lag growing with the rows written while paused',
        );
        expect(seconds(further)).toBeGreaterThan(0);
        // The feed's view says the same.
        const view = (await (await fetch(`${url}/api/feeds/my/${table}`)).json()) as FeedView;
        expect(view.lag?.bytes).toBeGreaterThanOrEqual(40 * value.length);
        expect(typeof view.lag?.at).toBe('string');

        expect(app.resume(`my/${table}`)).toBe(true);
        await waitFor(() => app.status().feeds[`my/${table}`]?.published === 40, 'the 40 rows published');
        const back = await scrapeUntil(text, (m) => bytes(m) === 0, 'the reader caught up again');
        expect(seconds(back)).toBe(0);

        // Stopping closes every connection, the lag report's too.
        await app.stop();
        await waitFor(async () => {
          const [rows] = await conn.query<RowDataPacket[]>(
            "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND USER = 'root'",
          );
          return Number(rows[0]!.n) === 0;
        }, "evpub's connections closed");
      } finally {
        await app.stop();
      }
    },
  );
});
