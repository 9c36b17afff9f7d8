/**
 * Fault: kill -9 of `evpub start` publishing from the transactional outbox, right after commits,
 * then a restart (PostgreSQL, MariaDB → Redis Streams, file checkpoints).
 *
 * The application commits transactions that each change its own table and write one or two
 * outbox rows (`outboxStatements`, models Account and Invoice). A first batch is written while
 * the publisher runs; once some events arrived and a checkpoint was saved, a second batch of
 * large transactions (150 rows each) is committed and the publisher is SIGKILLed the moment the
 * last commit returns (most of the batch not yet published), then started again. Asserted:
 * - every committed row is published (nothing lost), with its row's id as event id and the
 *   payload it describes; a repeat carries the same id and the same data;
 * - first deliveries come in commit order (one topic, one stream);
 * - the outbox table is empty.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { Client } from 'pg';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { outboxStatements, type OutboxRow } from '../../src/events/outbox';
import { createClient } from '../../src/pubsub/registry';
import { SHARED_URL, sharedConnection } from '../helpers/mariadb';
import { dropSlotWhenFree, PG_URL, sql } from '../helpers/postgres';
import { quietLogger } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { killCli, spawnCli, type CliProcess } from '../e2e/cli';

const FIRST = 60; // transactions while the publisher runs
const SECOND = 8; // large transactions committed right before the kill
const LARGE = 150; // outbox rows in each of them

let redisUrl: string;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  redisUrl = await requireService('redis');
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

/** One side of the case: its datasource settings and a way to commit one transaction. */
interface Source {
  datasource: Record<string, unknown>;
  /** Commits the application's change and the outbox rows in one transaction. */
  commit(n: number, rows: OutboxRow[]): Promise<void>;
  outboxRows(): Promise<number>;
}

async function postgresSource(outbox: string): Promise<Source> {
  await requireService('postgres');
  const slot = uniqueName('slot');
  const publication = uniqueName('pub');
  const app = uniqueName('app');
  await sql(`CREATE TABLE ${app} (id int PRIMARY KEY)`);
  const client = new Client({ connectionString: PG_URL });
  await client.connect();
  cleanups.push(async () => {
    await client.end();
    await dropSlotWhenFree(slot);
    await sql(`DROP PUBLICATION IF EXISTS ${publication}`);
    await sql(`DROP TABLE IF EXISTS ${app}, ${outbox}`);
  });
  return {
    datasource: {
      connector: 'postgres',
      url: PG_URL,
      slot,
      publication,
      heartbeatInterval: 500,
      statusInterval: 200,
      reconnectDelay: 100,
      outbox: { table: outbox },
    },
    async commit(n, rows) {
      await client.query('BEGIN');
      await client.query(`INSERT INTO ${app} VALUES ($1)`, [n]);
      for (const row of rows) {
        for (const s of outboxStatements('postgres', outbox, row)) await client.query(s.sql, s.params);
      }
      await client.query('COMMIT');
    },
    outboxRows: async () => (await sql(`SELECT * FROM ${outbox}`)).length,
  };
}

async function mariadbSource(outbox: string): Promise<Source> {
  const conn = await sharedConnection();
  const app = uniqueName('app');
  await conn.query(`CREATE TABLE \`${app}\` (id INT PRIMARY KEY)`);
  cleanups.push(async () => {
    await conn.query(`DROP TABLE IF EXISTS \`${app}\`, \`${outbox}\``);
    await conn.end();
  });
  return {
    datasource: {
      connector: 'mysql',
      url: SHARED_URL,
      heartbeat: 1000,
      reconnectDelay: 100,
      outbox: { table: outbox },
    },
    async commit(n, rows) {
      await conn.beginTransaction();
      await conn.query(`INSERT INTO \`${app}\` VALUES (?)`, [n]);
      for (const row of rows) {
        for (const s of outboxStatements('mysql', `\`${outbox}\``, row)) await conn.query(s.sql, s.params);
      }
      await conn.commit();
    },
    outboxRows: async () => {
      const [rows] = await conn.query(`SELECT * FROM \`${outbox}\``);
      return (rows as unknown[]).length;
    },
  };
}

/** Transaction n's rows: an Account create, and every third one an Invoice too; `large` more Accounts. */
function rowsOf(n: number, large = 0): OutboxRow[] {
  const rows: OutboxRow[] = [
    ...Array.from({ length: large }, (_, i): OutboxRow => {
      const key = `a${n}.${i}`;
      return {
        id: randomUUID(),
        model: 'Account',
        op: 'update',
        key,
        before: { id: key },
        after: { id: key, n },
      };
    }),
    {
      id: randomUUID(),
      model: 'Account',
      op: 'create',
      key: `a${n}`,
      before: null,
      after: { id: `a${n}`, n },
    },
  ];
  if (n % 3 === 0) {
    rows.push({
      id: randomUUID(),
      model: 'Invoice',
      op: 'create',
      key: `i${n}`,
      before: null,
      after: { id: `i${n}`, n },
    });
  }
  return rows;
}

describe('fault: kill -9 of evpub start publishing from the outbox', () => {
  it.each([
    ['postgres', postgresSource],
    ['mariadb', mariadbSource],
  ] as const)('%s: everything committed is published after the restart', async (_name, make) => {
    const outbox = uniqueName('outbox');
    const source = await make(outbox);
    const dir = mkdtempSync(path.join(tmpdir(), 'evpub-outbox-kill-'));
    cleanups.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const topic = `evpub/test/${uniqueName('obkill')}`;
    const redis = new Redis(redisUrl);
    cleanups.push(async () => {
      await redis.del(topic);
      redis.disconnect();
    });
    const config = path.join(dir, 'evpub.config.json');
    writeFileSync(
      config,
      JSON.stringify({
        brokers: { default: { url: redisUrl, options: { redis: { mode: 'streams' } } } },
        checkpoints: { store: 'file', path: path.join(dir, 'checkpoints') },
        datasources: { db: source.datasource },
        models: {
          Account: { dataSource: 'db', topic, settings: { outbox: true } },
          Invoice: { dataSource: 'db', topic, settings: { outbox: true } },
        },
      }),
    );
    const processes: CliProcess[] = [];
    cleanups.push(() => Promise.all(processes.map((p) => killCli(p))));
    const start = async (): Promise<CliProcess> => {
      const p = spawnCli(['start', '--config', config], { cwd: dir, env: { EVPUB_LOG_LEVEL: 'info' } });
      processes.push(p);
      await p.waitForOutput('evpub started', 30_000);
      return p;
    };

    const consumer = createClient(redisUrl, { logger: quietLogger(), redis: { mode: 'streams' } });
    cleanups.push(() => consumer.end());
    const seen: { id: string; type: string; data: { after: unknown } }[] = [];
    consumer.on('message', (_t, payload) => {
      seen.push(JSON.parse(payload.toString()) as (typeof seen)[number]);
    });
    await consumer.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });

    const first = await start();
    const written: OutboxRow[] = [];
    for (let n = 1; n <= FIRST; n++) {
      const rows = rowsOf(n);
      await source.commit(n, rows);
      written.push(...rows);
    }
    const checkpointFile = path.join(dir, 'checkpoints', `${encodeURIComponent('db/Account')}.json`);
    const saved = (): boolean => {
      try {
        return (
          typeof (JSON.parse(readFileSync(checkpointFile, 'utf8')) as { position?: unknown }).position ===
          'string'
        );
      } catch {
        return false;
      }
    };
    await waitFor(() => seen.length >= 20 && saved(), 'some events and a saved checkpoint before the kill');
    for (let n = FIRST + 1; n <= FIRST + SECOND; n++) {
      const rows = rowsOf(n, LARGE);
      await source.commit(n, rows);
      written.push(...rows);
    }
    first.child.kill('SIGKILL'); // right after the last commit returned
    expect(await first.exited).toBe('SIGKILL');
    const atKill = seen.length;

    const second = await start();
    const wanted = new Set(written.map((r) => r.id));
    await waitFor(
      () => [...wanted].every((id) => seen.some((e) => e.id === id)),
      `all ${wanted.size} committed outbox rows published`,
      30_000,
    );
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);

    // Nothing lost, nothing else; repeats carry their row's id and data.
    const byId = new Map(written.map((r) => [r.id, r]));
    for (const e of seen) {
      const r = byId.get(e.id);
      expect(r, `event ${e.id} was written`).toBeDefined();
      expect(e.type).toBe(`evpub.${r!.model}.${r!.op}`);
      expect(e.data.after).toEqual(r!.after);
    }
    const firstSeen = [...new Set(seen.map((e) => e.id))];
    expect(firstSeen).toEqual(written.map((r) => r.id));
    expect(await source.outboxRows()).toBe(0);
    process.stdout.write(
      `outbox kill -9 (${_name}): ${written.length} rows, ${atKill} received before the kill, ${seen.length - written.length} repeats\n`,
    );
  });
});
