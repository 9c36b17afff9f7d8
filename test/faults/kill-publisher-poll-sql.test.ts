/**
 * Fault matrix: kill -9 of `evpub start` polling a PostgreSQL table (the `poll` connector, by
 * `updated_at`), then a restart: nothing is lost.
 *
 * The publisher is `evpub start --config <tmp>/evpub.config.json` in a child process: file
 * checkpoints in the tmp dir, Redis in streams mode (the test's durable consumer group cannot
 * miss an entry). 3,000 rows are inserted 20 per statement while the publisher runs (each row
 * with a later timestamp than the one before, one statement after the other, so commit order
 * is cursor order).
 * After 1,000 events and a saved checkpoint the test SIGKILLs the publisher and starts it again.
 *
 * What is asserted, and why it holds:
 * - Every row arrives at least once: the cursor saved is at most the last row the broker
 *   accepted, and the restart polls from it again.
 * - Within one run, rows arrive in cursor order (the poll reads `ORDER BY updated_at, id`).
 * - A replayed row carries the same CloudEvents id.
 * Inserts only: a poll sees a row as it is when read, so two updates between two polls would
 * arrive as one (docs/connectors/poll.md); distinct rows cannot be coalesced.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '../../src/pubsub/registry';
import { createPollTable, openTestDb, tick, type PollTable, type TestDb } from '../helpers/poll-tables';
import { quietLogger } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { redisClientPorts, redisClientsGone } from '../helpers/redis-clients';
import { waitFor } from '../helpers/wait';
import { killCli, spawnCli, type CliProcess } from '../e2e/cli';
import { countDelivery, reportRow, RssSampler } from './matrix';

const ROWS = 3000;
const PER_INSERT = 20; // rows per INSERT statement (one transaction)
const KILL_AFTER = 1000; // events received

interface Seen {
  id: string;
  key: string;
}

let redisUrl: string;
let redis: Redis;
let db: TestDb;
let table: PollTable;
let dir: string;
const processes: CliProcess[] = [];

beforeAll(async () => {
  redisUrl = await requireService('redis');
  redis = new Redis(redisUrl);
  db = await openTestDb('postgres');
  table = await createPollTable(db);
  dir = mkdtempSync(path.join(tmpdir(), 'evpub-pollkill-'));
});
afterAll(async () => {
  await Promise.all(processes.map((p) => killCli(p)));
  if (table) await db.exec(`DROP TABLE IF EXISTS ${table.name}`);
  await db?.close();
  redis?.disconnect();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const keyOf = (i: number): string => `r${String(i).padStart(5, '0')}`;

describe('fault matrix: kill -9 of the publisher (sql poll)', () => {
  it('after a restart every row arrived, in cursor order within a run', async () => {
    const began = Date.now();
    const topic = `evpub/test/${uniqueName('pollkill')}`;
    const config = path.join(dir, 'evpub.config.json');
    writeFileSync(
      config,
      JSON.stringify({
        brokers: { default: { url: redisUrl, options: { redis: { mode: 'streams' } } } },
        checkpoints: { store: 'file', path: path.join(dir, 'checkpoints') },
        datasources: { sql: { connector: 'poll', url: db.url, interval: 20 } },
        models: {
          rows: {
            dataSource: 'sql',
            topic,
            from: 'beginning',
            settings: { table: table.name, cursorColumn: 'updated_at', createdColumn: 'created_at' },
          },
        },
      }),
    );
    const samplers: RssSampler[] = [];
    const start = (): CliProcess => {
      const p = spawnCli(['start', '--config', config], { cwd: dir, env: { EVPUB_LOG_LEVEL: 'info' } });
      processes.push(p);
      samplers.push(new RssSampler(p.pid));
      return p;
    };

    const consumer = createClient(redisUrl, { logger: quietLogger(), redis: { mode: 'streams' } });
    const seen: Seen[] = [];
    consumer.on('message', (_t, payload) => {
      const ce = JSON.parse(payload.toString()) as { id: string; data: { key: string } };
      seen.push({ id: ce.id, key: ce.data.key });
    });
    try {
      await consumer.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });
      const first = start();
      await first.waitForOutput('evpub started');
      let writing = true;
      const writer = (async () => {
        for (let i = 0; i < ROWS; i += PER_INSERT) {
          const rows = Array.from({ length: PER_INSERT }, (_, j) => {
            const at = tick();
            return [keyOf(i + j), i + j, at, at];
          });
          await db.exec(
            `INSERT INTO ${table.name} (id, value, created_at, updated_at) VALUES ${rows.map(() => '(?, ?, ?, ?)').join(', ')}`,
            rows.flat(),
          );
        }
      })().finally(() => (writing = false));
      writer.catch(() => undefined);

      const checkpointFile = path.join(dir, 'checkpoints', `${encodeURIComponent('sql/rows')}.json`);
      const checkpoint = (): string | undefined => {
        try {
          return (JSON.parse(readFileSync(checkpointFile, 'utf8')) as { position: string }).position;
        } catch {
          return undefined; // not saved yet (or being replaced)
        }
      };
      await waitFor(
        () => seen.length >= KILL_AFTER && checkpoint() !== undefined,
        `${KILL_AFTER} events and a saved checkpoint before the kill`,
      );
      const redisPorts = redisClientPorts(first.pid);
      first.child.kill('SIGKILL');
      expect(await first.exited).toBe('SIGKILL');
      // What the dead process had sent is in the stream before "run 1" is counted.
      await redisClientsGone(redis, redisPorts);
      const writingAtKill = writing;
      const run1 = await redis.xlen(topic);
      const resumeFrom = checkpoint();

      const second = start();
      await second.waitForOutput('evpub started');
      await writer;
      const keys = Array.from({ length: ROWS }, (_, i) => keyOf(i));
      await waitFor(() => new Set(seen.map((s) => s.key)).size === ROWS, 'every row', 30_000);
      second.child.kill('SIGTERM');
      expect(await second.exited).toBe(0);
      const total = await redis.xlen(topic);
      await waitFor(() => seen.length === total, `all ${total} stream entries consumed`);

      const got = new Set(seen.map((s) => s.key));
      for (const k of keys) expect(got.has(k), k).toBe(true);
      // Within a run, in cursor order (the keys were inserted in increasing order).
      for (const run of [seen.slice(0, run1), seen.slice(run1)]) {
        const order = run.map((s) => s.key);
        expect(order, 'cursor order within a run').toEqual([...order].sort());
      }
      // A replayed row carries the id it had.
      const idOf = new Map<string, string>();
      for (const s of seen) {
        expect(idOf.get(s.key) ?? s.id, s.key).toBe(s.id);
        idOf.set(s.key, s.id);
      }
      const row = reportRow({
        fault: 'kill -9 of the publisher, restart',
        source: 'sql poll (postgres)',
        broker: 'redis streams',
        ...countDelivery(
          keys,
          seen.map((s) => s.key),
        ),
        maxRssMb: Math.max(...samplers.map((r) => r.stop())),
        seconds: (Date.now() - began) / 1000,
      });
      expect(row.lost).toBe(0);
      console.log(
        `poll kill -9: ${ROWS} rows -> ${seen.length} events (${run1} before the kill); ` +
          `writes still running at the kill: ${writingAtKill}; resumed after ${resumeFrom}`,
      );
    } finally {
      await consumer.end();
      await redis.del(topic);
    }
  });
});
