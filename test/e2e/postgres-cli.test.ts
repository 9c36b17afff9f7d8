/**
 * The command line for PostgreSQL, as child processes against the shared server: `evpub slots
 * list|drop` (a slot made by the test is listed, refused while in use, dropped), `evpub
 * snapshot <model>` (the checkpoint it saves makes the connector publish every row again; an
 * active slot is refused) and `--start`, whose log shows snapshot progress. A configuration
 * with a postgres datasource's settings validates. Every slot, publication and table made is
 * dropped, also on failure.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigFrom } from '../../src/app/config';
import type { PostgresConnector } from '../../src/connectors/postgres/index';
import { RecordingSink } from '../conformance/connector.suite';
import { PG_URL, PgFixture, sql } from '../helpers/postgres';
import { requireService } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { killCli, spawnCli, type CliProcess } from './cli';

let dir: string;
const cleanup: (() => Promise<unknown>)[] = [];
const processes: CliProcess[] = [];

beforeAll(async () => {
  await requireService('postgres');
  dir = mkdtempSync(path.join(tmpdir(), 'evpub-pgcli-'));
});
afterEach(async () => {
  await Promise.all(processes.splice(0).map((p) => killCli(p)));
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function fixture(): PgFixture {
  const f = new PgFixture();
  cleanup.push(() => f.drop());
  return f;
}

function track(c: PostgresConnector): PostgresConnector {
  cleanup.push(() => c.stop());
  return c;
}

/** Runs `evpub <args>` to the end: exit code and output. */
async function evpub(args: string[]): Promise<{ code: number | string; stdout: string; stderr: string }> {
  const p = spawnCli(args, { cwd: dir });
  processes.push(p);
  const code = await p.exited;
  return { code, stdout: p.stdout(), stderr: p.stderr() };
}

function writeConfig(f: PgFixture, model: string, table: string, broker = 'memory://local'): string {
  const file = path.join(dir, `${model}.config.json`);
  writeFileSync(
    file,
    JSON.stringify({
      brokers: { default: { url: broker } },
      checkpoints: { store: 'file', path: path.join(dir, `checkpoints-${model}`) },
      datasources: {
        pg: {
          connector: 'postgres',
          url: PG_URL,
          slot: f.slot,
          publication: f.publication,
          snapshot: 'never',
          snapshotChunk: 50,
          heartbeatInterval: 500,
          statusInterval: 200,
          reconnectDelay: 100,
          maxReconnectDelay: 1000,
          connectTimeout: 5000,
        },
      },
      models: { [model]: { dataSource: 'pg', topic: 'evpub/test/{model}', settings: { table } } },
    }),
  );
  return file;
}

describe('evpub slots', () => {
  it('lists a slot (with its datasource from the config), refuses to drop it in use, drops it', async () => {
    const f = fixture();
    const t = await f.table();
    const config = writeConfig(f, 'slotlist', t);
    // The postgres datasource settings validate.
    expect(loadConfigFrom({ file: config }).config.datasources.pg!.connector).toBe('postgres');
    // The publication first, then the slot: pgoutput cannot decode changes made before the
    // publication existed (evpub makes them in that order too).
    await f.slots(1);

    const byUrl = await evpub(['slots', 'list', '--url', PG_URL]);
    expect(byUrl.code).toBe(0);
    const line = byUrl.stdout.split('\n').find((l) => l.startsWith(f.slot))!;
    expect(line).toMatch(
      new RegExp(`^${f.slot}\\s+pgoutput\\s+test\\s+no\\s+[0-9A-F]+/[0-9A-F]+\\s+[0-9A-F]+/[0-9A-F]+\\s+\\d`),
    );
    expect(byUrl.stdout.split('\n')[0]).toMatch(
      /^SLOT\s+PLUGIN\s+DATABASE\s+ACTIVE\s+RESTART LSN\s+CONFIRMED LSN\s+LAG\s+WAL\s+EVPUB/,
    );

    const json = await evpub(['slots', 'list', '-c', config, '--json']);
    expect(json.code).toBe(0);
    const mine = (JSON.parse(json.stdout) as Record<string, unknown>[]).find((s) => s.name === f.slot);
    expect(mine).toMatchObject({
      plugin: 'pgoutput',
      database: 'test',
      active: false,
      evpub: 'datasource pg',
      lagBytes: expect.any(Number) as number,
      confirmedFlush: expect.stringMatching(/^[0-9A-F]+\/[0-9A-F]+$/) as string,
      server: 'postgres://postgres@127.0.0.1:5432/test',
    });

    // In use: refused, with the way on.
    const c = track(await f.connector());
    await c.start({ models: [{ name: t, settings: {}, from: 'now' }], sink: new RecordingSink() });
    const busy = await evpub(['slots', 'drop', f.slot, '--url', PG_URL]);
    expect(busy.code, busy.stdout + busy.stderr).toBe(1);
    expect(busy.stderr).toMatch(
      new RegExp(
        `the slot "${f.slot}" .* is in use \\(pid \\d+, evpub [^:]+:\\d+\\): stop the process reading it`,
      ),
    );
    const listed = await evpub(['slots', 'list', '--url', PG_URL]);
    expect(listed.stdout.split('\n').find((l) => l.startsWith(f.slot))).toMatch(
      /yes \(pid \d+, evpub [^:]+:\d+\)/,
    );
    await c.stop();

    await waitFor(async () => {
      const rows = await sql<{ active: boolean }>(
        'SELECT active FROM pg_replication_slots WHERE slot_name = $1',
        [f.slot],
      );
      return rows[0]?.active === false;
    }, 'the slot to be released');
    const dropped = await evpub(['slots', 'drop', f.slot, '-c', config]);
    expect(dropped.code).toBe(0);
    expect(dropped.stdout).toMatch(`dropped the replication slot "${f.slot}"`);
    expect(dropped.stdout).toMatch('run `evpub snapshot slotlist` before `evpub start`');
    expect(await sql('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [f.slot])).toEqual([]);

    const missing = await evpub(['slots', 'drop', f.slot, '--url', PG_URL]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(`no logical replication slot "${f.slot}"`);
  });
});

describe('evpub snapshot', () => {
  it('saves a re-snapshot checkpoint: the connector publishes every row again, then streams', async () => {
    const f = fixture();
    const t = await f.table('id int PRIMARY KEY, value int');
    await sql(`INSERT INTO ${t} SELECT g, g FROM generate_series(1, 120) g`);
    const config = writeConfig(f, 'resnap', t);
    // A first run took the table (the slot exists, evpub reads it): the command refuses.
    const c = track(await f.connector());
    await c.start({ models: [{ name: t, settings: {}, from: 'now' }], sink: new RecordingSink() });
    const busy = await evpub(['snapshot', 'resnap', '-c', config]);
    expect(busy.code).toBe(1);
    expect(busy.stderr).toMatch(/is being read \(pid \d+\): stop evpub first/);
    await c.stop();
    await waitFor(async () => {
      const rows = await sql<{ active: boolean }>(
        'SELECT active FROM pg_replication_slots WHERE slot_name = $1',
        [f.slot],
      );
      return rows[0]?.active === false;
    }, 'the slot to be released');

    const ran = await evpub(['snapshot', 'resnap', '-c', config]);
    expect(ran.code).toBe(0);
    expect(ran.stdout).toMatch(/resnap: re-snapshot saved as its checkpoint/);
    const file = path.join(dir, 'checkpoints-resnap', `${encodeURIComponent('pg/resnap')}.json`);
    const position = (JSON.parse(readFileSync(file, 'utf8')) as { position: string }).position;
    expect(position).toMatch(/^[0-9A-F]+\/[0-9A-F]+#-1\|s:/);

    // What the next start does with that checkpoint (even after the slot was dropped).
    await sql('SELECT pg_drop_replication_slot($1)', [f.slot]);
    const d = track(await f.connector({ snapshotChunk: 50 }));
    const sink = new RecordingSink();
    await d.start({ models: [{ name: t, settings: {}, from: { after: position } }], sink });
    await sql(`INSERT INTO ${t} VALUES (1000, 1)`);
    await waitFor(() => sink.keys().includes('1000'), 'the insert after the snapshot');
    await waitFor(() => sink.events.filter((e) => e.op === 'snapshot').length >= 120, 'every row');
    // Rows 1..120 as snapshot events (row 1000 too when its chunk was read after the insert).
    const snapshotted = new Set(sink.events.filter((e) => e.op === 'snapshot').map((e) => e.key));
    for (let id = 1; id <= 120; id++) expect(snapshotted.has(String(id))).toBe(true);
  });

  it('--start runs the publisher and logs snapshot progress (rows, total, rate, time left)', async () => {
    const f = fixture();
    const t = await f.table('id int PRIMARY KEY, value int');
    await sql(`INSERT INTO ${t} SELECT g, g FROM generate_series(1, 300) g`);
    const config = writeConfig(f, 'progress', t);
    const p = spawnCli(['snapshot', 'progress', '-c', config, '--start'], {
      cwd: dir,
      env: { EVPUB_LOG_LEVEL: 'info' },
    });
    processes.push(p);
    await p.waitForOutput('"msg":"snapshot of progress: 300 / 300 rows (100%)');
    const lines = p
      .stdout()
      .split('\n')
      .filter((l) => l.includes('"snapshot of progress'))
      .map((l) => JSON.parse(l) as { level: number; msg: string; snapshot: Record<string, unknown> });
    expect(lines[0]!.msg).toBe('snapshot of progress: 50 / 300 rows (16%)');
    expect(lines.at(-1)!.snapshot).toMatchObject({
      datasource: 'pg',
      model: 'progress',
      done: 300,
      total: 300,
    });
    expect(lines.some((l) => /rows\/s, about \d+ s left$/.test(l.msg))).toBe(true);
    expect(lines.every((l) => l.level === 30)).toBe(true); // info
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
  });
});
