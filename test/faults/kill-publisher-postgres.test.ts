/**
 * Fault matrix: kill -9 of `evpub start` reading PostgreSQL mid-stream (→ Redis Streams), then
 * a restart: nothing is lost.
 *
 * The publisher is `evpub start --config <tmp>/evpub.config.json` in a child process: the
 * postgres connector on the shared server (its own table, slot and publication, dropped after),
 * file checkpoints in the tmp dir, Redis in streams mode (the test's durable consumer group
 * cannot miss an entry). 500 rows each go through 6 versions (an insert, then 5 updates of
 * `v`), 3,000 changes in 30 transactions of 100 rows, written while the publisher runs. After
 * some events arrived the test SIGKILLs the publisher and starts it again at once.
 *
 * What is asserted, and why it holds:
 * - Every change (row, version) arrives at least once: the slot is acknowledged only up to
 *   what the broker accepted and the checkpoint holds, so the restarted publisher is sent
 *   again whatever run 1 had read but not confirmed.
 * - Within one run, a row's versions strictly increase (the slot sends changes in commit
 *   order); the last event of every row is its final version.
 * - A replayed change carries the same CloudEvents id (`<commit LSN>:<index>`).
 * Run 1's entries are the first XLEN entries of the stream once its process is gone.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '../../src/pubsub/registry';
import { dropSlotWhenFree, PG_URL, sql } from '../helpers/postgres';
import { quietLogger } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { redisClientPorts, redisClientsGone } from '../helpers/redis-clients';
import { waitFor } from '../helpers/wait';
import { killCli, spawnCli, type CliProcess } from '../e2e/cli';
import { countDelivery, reportRow, RssSampler } from './matrix';

const ROWS = 500;
const VERSIONS = 6;
const PER_TX = 100;
const KILL_AFTER = 600; // events received

interface Seen {
  id: string;
  key: string;
  v: number;
}

let redisUrl: string;
let redis: Redis;
let dir: string;
const processes: CliProcess[] = [];
const table = uniqueName('kill');
const slot = uniqueName('slot');
const publication = uniqueName('pub');

beforeAll(async () => {
  redisUrl = await requireService('redis');
  await requireService('postgres');
  redis = new Redis(redisUrl);
  dir = mkdtempSync(path.join(tmpdir(), 'evpub-pgkill-'));
  await sql(`CREATE TABLE ${table} (id int PRIMARY KEY, v int NOT NULL)`);
});
afterAll(async () => {
  await Promise.all(processes.map((p) => killCli(p)));
  await dropSlotWhenFree(slot);
  await sql(`DROP PUBLICATION IF EXISTS ${publication}`);
  await sql(`DROP TABLE IF EXISTS ${table}`);
  redis?.disconnect();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** 500 inserts then 5 rounds of updates, 100 rows per transaction. */
async function writeChanges(): Promise<void> {
  for (let from = 1; from <= ROWS; from += PER_TX)
    await sql(`INSERT INTO ${table} SELECT g, 0 FROM generate_series($1::int, $1 + ${PER_TX - 1}) g`, [from]);
  for (let round = 1; round < VERSIONS; round++) {
    for (let from = 1; from <= ROWS; from += PER_TX) {
      await sql(`UPDATE ${table} SET v = v + 1 WHERE id BETWEEN $1 AND $1 + ${PER_TX - 1}`, [from]);
    }
  }
}

describe('fault matrix: kill -9 of the publisher (postgres)', () => {
  it('after a restart every change arrived, in order per row within a run', async () => {
    const topic = `evpub/test/${uniqueName('pgkill')}`;
    const config = path.join(dir, 'evpub.config.json');
    writeFileSync(
      config,
      JSON.stringify({
        brokers: { default: { url: redisUrl, options: { redis: { mode: 'streams' } } } },
        checkpoints: { store: 'file', path: path.join(dir, 'checkpoints') },
        datasources: {
          pg: {
            connector: 'postgres',
            url: PG_URL,
            slot,
            publication,
            statusInterval: 200,
            heartbeatInterval: 500,
            reconnectDelay: 100,
          },
        },
        models: { rows: { dataSource: 'pg', topic, from: 'beginning', settings: { table } } },
      }),
    );
    const samplers: RssSampler[] = [];
    const start = (): CliProcess => {
      const p = spawnCli(['start', '--config', config], { cwd: dir, env: { EVPUB_LOG_LEVEL: 'info' } });
      processes.push(p);
      samplers.push(new RssSampler(p.pid));
      return p;
    };
    const began = Date.now();

    const consumer = createClient(redisUrl, { logger: quietLogger(), redis: { mode: 'streams' } });
    const seen: Seen[] = [];
    consumer.on('message', (_t, payload) => {
      const ce = JSON.parse(payload.toString()) as {
        id: string;
        data: { key: string; after: { v: number } };
      };
      seen.push({ id: ce.id, key: ce.data.key, v: ce.data.after.v });
    });
    try {
      await consumer.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });
      const first = start();
      await first.waitForOutput('evpub started');
      let writing = true;
      const writer = writeChanges().finally(() => (writing = false));
      writer.catch(() => undefined);

      // Kill once some events arrived and a checkpoint was saved (so the restart resumes
      // mid-stream, not from the start). Any saved checkpoint is past at least one event; waiting
      // for it to change as well raced with a burst that finished between two polls.
      const checkpointFile = path.join(dir, 'checkpoints', `${encodeURIComponent('pg/rows')}.json`);
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
      const complete = (): boolean => {
        const last = new Map<string, number>();
        for (const s of seen) last.set(s.key, s.v);
        return last.size === ROWS && [...last.values()].every((v) => v === VERSIONS - 1);
      };
      await waitFor(complete, 'every row at its final version', 30_000);
      second.child.kill('SIGTERM');
      expect(await second.exited).toBe(0);
      const total = await redis.xlen(topic);
      await waitFor(() => seen.length === total, `all ${total} stream entries consumed`);

      // Every change at least once.
      const changes = new Set(seen.map((s) => `${s.key}@${s.v}`));
      for (let id = 1; id <= ROWS; id++)
        for (let v = 0; v < VERSIONS; v++) expect(changes.has(`${id}@${v}`), `${id}@${v}`).toBe(true);
      // Per row, strictly increasing within a run; the last event is the final version.
      for (const run of [seen.slice(0, run1), seen.slice(run1)]) {
        const last = new Map<string, number>();
        for (const s of run) {
          const prev = last.get(s.key);
          if (prev !== undefined) expect(s.v, `row ${s.key}`).toBeGreaterThan(prev);
          last.set(s.key, s.v);
        }
      }
      expect(complete()).toBe(true);
      // A replayed change carries the id it had.
      const idOf = new Map<string, string>();
      for (const s of seen) {
        const k = `${s.key}@${s.v}`;
        expect(idOf.get(k) ?? s.id).toBe(s.id);
        idOf.set(k, s.id);
      }
      const sent: string[] = [];
      for (let id = 1; id <= ROWS; id++) for (let v = 0; v < VERSIONS; v++) sent.push(`${id}@${v}`);
      const row = reportRow({
        fault: 'kill -9 of the publisher, restart',
        source: 'postgres',
        broker: 'redis streams',
        ...countDelivery(
          sent,
          seen.map((s) => `${s.key}@${s.v}`),
        ),
        maxRssMb: Math.max(...samplers.map((r) => r.stop())),
        seconds: (Date.now() - began) / 1000,
      });
      expect(row.lost).toBe(0);
      console.log(
        `postgres kill -9: 3000 changes -> ${seen.length} events (${run1} before the kill, ${total - run1} after; ` +
          `${seen.length - idOf.size} duplicates); writes still running at the kill: ${writingAtKill}; ` +
          `resumed after ${resumeFrom}`,
      );
    } finally {
      await consumer.end();
      await redis.del(topic);
    }
  });
});
