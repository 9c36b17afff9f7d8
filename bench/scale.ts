/**
 * The scale curve of the change-capture benchmark: throughput and peak RSS of `evpub start` (as
 * users run it, from dist/, its defaults) against the size of what it captures, on one broker
 * (NATS core by default: the cheapest per event), beside the minimal relay (bench/cdc/relay.ts)
 * where a relay of one slot can do the same work.
 *
 *   npm run bench:scale                       # every series, full sizes (10–20 minutes)
 *   npm run bench:scale -- tables width       # some series
 *   BENCH_SCALE_QUICK=1 npm run bench:scale   # small sizes, ~2 minutes
 *
 * Series (each point a fresh process, its own slot(s) and tables, all dropped afterwards):
 *   tables       1, 10, 100 tables of narrow rows in one PostgreSQL datasource (one slot);
 *                BENCH_SCALE_ROWS rows in transactions of min(1000, rows/tables), one table each
 *                in turn. Relay beside the 1-table point.
 *   width        one table of narrow (10 columns, ~200 B), wide (50 columns, ~2 KB) and huge
 *                (one ~100 KB jsonb) rows; relay beside each. Huge: BENCH_SCALE_HUGE_ROWS rows
 *                in transactions of 10.
 *   bigtx        one transaction of BENCH_SCALE_BIG_TX (1,000,000) narrow rows: evpub publishes
 *                as it streams, so its RSS must stay bounded. Relay beside it.
 *   datasources  1, 4, 16 PostgreSQL datasources (one slot each) in one evpub process, one table
 *                each, written at the same time (rows/N each); the machine's CPU use beside.
 *   mariadb      the same evpub on MariaDB's binlog: 1 and 10 tables of narrow rows (each
 *                model reads the binlog on a connection of its own).
 * Per point: rows/s = rows / (last event received − first insert), peak RSS (sampled every
 * 50 ms), idle RSS (started, before the writes), the process's CPU ms per 1,000 rows and CPU %
 * of one core, and the whole machine's busy % (/proc/stat) over the point.
 *
 * Prints a table, writes bench/results/scale-<date>.json (scale-quick-<date>.json for a quick
 * run) and an SVG chart beside it. Interrupted (SIGINT/SIGTERM), it stops its processes and
 * drops every slot, publication, table and database it made before exiting.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { createConnection } from 'mysql2/promise';
import { LineProcess, RssSampler, Subscriber, cpuMs, relayScript } from './cdc/processes';
import { PG_URL } from './cdc/workload';
import {
  MARIADB_DDL,
  PER_TX,
  PG_DDL,
  mariadbWriter,
  pgWriter,
  type Shape,
  type Writer,
} from './cdc/scale-workload';
import { renderScaleChart } from './cdc/scale-chart';

const QUICK = process.env.BENCH_SCALE_QUICK === '1';
const num = (key: string, full: number, quick: number): number =>
  Number(process.env[key] ?? (QUICK ? quick : full));
const list = (key: string, full: string): number[] =>
  (process.env[key] ?? full)
    .split(',')
    .map(Number)
    .filter((n) => n > 0);
const ROWS = num('BENCH_SCALE_ROWS', 100_000, 10_000);
const HUGE_ROWS = num('BENCH_SCALE_HUGE_ROWS', 2_000, 200);
const BIG_TX = num('BENCH_SCALE_BIG_TX', 1_000_000, 100_000);
const TABLES = list('BENCH_SCALE_TABLES', '1,10,100');
const DATASOURCES = list('BENCH_SCALE_DATASOURCES', '1,4,16');
const MARIADB_TABLES = list('BENCH_SCALE_MARIADB_TABLES', QUICK ? '1' : '1,10');
const BROKER = process.env.BENCH_SCALE_BROKER ?? 'nats';
const BROKER_URL: Record<string, string> = { nats: 'nats://127.0.0.1:4222', redis: 'redis://127.0.0.1:6379' };
const MARIADB_URL = process.env.BENCH_MARIADB_URL ?? 'mysql://root@127.0.0.1:3306/test';
const SERIES = ['tables', 'width', 'bigtx', 'datasources', 'mariadb'] as const;
type Series = (typeof SERIES)[number];

const RESULTS = join(__dirname, 'results');
const MB = (bytes: number): number => Math.round(bytes / 2 ** 20);
const now = (): number => performance.timeOrigin + performance.now();
const log = (msg: string): void => void process.stderr.write(`[scale] ${msg}\n`);
const run = Date.now().toString(36);

/**
 * Everything the bench made and has not dropped yet: dropped at the end of each point, and by
 * `cleanupAll()` on an interruption or a failure.
 */
class Tracker {
  readonly procs = new Set<LineProcess>();
  readonly subscribers = new Set<Subscriber>();
  readonly slots = new Set<string>();
  readonly publications = new Set<string>();
  readonly pgTables = new Set<string>();
  readonly mariadbDatabases = new Set<string>();
  /** Set by `cleanupAll()`: a point still running must not make anything more. */
  private closing = false;

  /** Records a name about to be made; throws once cleanup began, so that nothing is made after it. */
  add(set: Set<string>, name: string): void {
    if (this.closing) throw new Error('interrupted');
    set.add(name);
  }

  addProc(proc: LineProcess): void {
    this.procs.add(proc);
    if (this.closing) void proc.stop(5_000);
  }

  async pg<T>(fn: (db: Client) => Promise<T>): Promise<T> {
    const db = new Client({ connectionString: PG_URL });
    await db.connect();
    try {
      return await fn(db);
    } finally {
      await db.end();
    }
  }

  /** Drops the slots (ending their walsender if one still holds it), publications and tables. */
  async dropPg(slots: string[], publications: string[], tables: string[]): Promise<void> {
    await this.pg(async (db) => {
      for (const slot of slots) {
        for (let i = 0; i < 50; i++) {
          const { rows } = await db.query<{ active_pid: number | null }>(
            'SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1',
            [slot],
          );
          if (rows.length === 0) break;
          if (rows[0]!.active_pid === null) {
            await db.query('SELECT pg_drop_replication_slot($1)', [slot]).catch(() => undefined);
            continue;
          }
          if (i > 10) await db.query('SELECT pg_terminate_backend($1)', [rows[0]!.active_pid]);
          await new Promise((r) => setTimeout(r, 100));
        }
        this.slots.delete(slot);
      }
      for (const p of publications) {
        await db.query(`DROP PUBLICATION IF EXISTS ${p}`);
        this.publications.delete(p);
      }
      for (const t of tables) {
        await db.query(`DROP TABLE IF EXISTS ${t}`);
        this.pgTables.delete(t);
      }
    });
  }

  async dropMariadb(database: string): Promise<void> {
    const db = await createConnection(MARIADB_URL);
    try {
      await db.query(`DROP DATABASE IF EXISTS \`${database}\``);
    } finally {
      await db.end();
    }
    this.mariadbDatabases.delete(database);
  }

  async cleanupAll(): Promise<void> {
    this.closing = true;
    await Promise.all([
      ...[...this.procs].map((p) => p.stop(5_000).catch(() => undefined)),
      ...[...this.subscribers].map((s) => s.kill().catch(() => undefined)),
    ]);
    await this.dropPg([...this.slots], [...this.publications], [...this.pgTables]).catch((err: Error) =>
      log(`cleanup (PostgreSQL): ${err.message}`),
    );
    for (const d of [...this.mariadbDatabases])
      await this.dropMariadb(d).catch((err: Error) => log(`cleanup (MariaDB): ${err.message}`));
  }
}

const tracker = new Tracker();

/** Busy and total jiffies of the whole machine (/proc/stat), to report its CPU use over a point. */
function machineCpu(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = fields.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - fields[3]! - fields[4]!, total };
}

type System = 'relay' | 'evpub';

interface Point {
  series: Series;
  /** The point's label on the chart and in the table. */
  label: string;
  system: System;
  database: 'postgres' | 'mariadb';
  shape: Shape;
  /** Tables per datasource. */
  tables: number;
  datasources: number;
  rows: number;
  /** Rows per transaction (one INSERT ... SELECT each). */
  perTx: number;
}

interface PointResult extends Omit<Point, 'series'> {
  received: number;
  complete: boolean;
  perSec: number;
  /** Big transaction: rows / (last event − the commit). */
  sinceCommitPerSec?: number;
  /**
   * Big transaction: the highest RSS in the first and in the second half of the point's time
   * (first insert to last event): bounded when the second is not above the first.
   */
  rssHalvesMb?: [number, number];
  messageBytes: number;
  idleRssMb: number;
  peakRssMb: number;
  cpuMsPerKRows: number;
  /** The process's CPU time over the wall time of the point, in % of one core. */
  cpuPct: number;
  /** The whole machine's busy time over the point, in % of all its cores. */
  machineBusyPct: number;
  error?: string;
}

/** Runs one point: its tables, the system, the subscriber, the writes; drops everything after. */
async function measure(point: Point): Promise<PointResult> {
  const id = `${run}_${point.series}_${point.label}_${point.system}`
    .toLowerCase()
    .replace(/[^a-z0-9_]/g, '_');
  const topic = `bench/scale_${id}`;
  const dir = mkdtempSync(join(tmpdir(), 'evpub-scale-'));
  const slots: string[] = [];
  const publications: string[] = [];
  const pgTables: string[] = [];
  let mariadbDb: string | undefined;
  const writers: Writer[] = [];
  let sub: Subscriber | undefined;
  let proc: LineProcess | undefined;
  let sampler: RssSampler | undefined;
  try {
    // Tables, per datasource.
    const tablesOf: string[][] = [];
    if (point.database === 'postgres') {
      await tracker.pg(async (db) => {
        for (let d = 0; d < point.datasources; d++) {
          const names: string[] = [];
          for (let t = 0; t < point.tables; t++) {
            const name = `bsc_${id}_d${d}_t${t}`.slice(0, 63);
            tracker.add(tracker.pgTables, name);
            pgTables.push(name);
            await db.query(PG_DDL(name, point.shape));
            names.push(name);
          }
          tablesOf.push(names);
        }
      });
    } else {
      mariadbDb = `bsc_${id}`.slice(0, 64);
      const db = await createConnection(MARIADB_URL);
      try {
        tracker.add(tracker.mariadbDatabases, mariadbDb);
        await db.query(`CREATE DATABASE \`${mariadbDb}\``);
        const names: string[] = [];
        for (let t = 0; t < point.tables; t++) {
          const name = `t${t}`;
          await db.query(`CREATE TABLE \`${mariadbDb}\`.${MARIADB_DDL(name).slice('CREATE TABLE '.length)}`);
          names.push(name);
        }
        tablesOf.push(names);
      } finally {
        await db.end();
      }
    }
    const dbUrl = mariadbDb ? MARIADB_URL.replace(/\/[^/]*$/, `/${mariadbDb}`) : PG_URL;

    sub = await Subscriber.start(BROKER_URL[BROKER]!, topic, {});
    tracker.subscribers.add(sub);
    if (point.system === 'relay') {
      const slot = `bsc_${id}`.slice(0, 63);
      await tracker.pg(async (db) => {
        tracker.add(tracker.publications, slot);
        publications.push(slot);
        await db.query(`CREATE PUBLICATION ${slot} FOR TABLE ${tablesOf.flat().join(', ')}`);
        tracker.add(tracker.slots, slot);
        slots.push(slot);
        await db.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
      });
      proc = new LineProcess('relay', process.execPath, [
        relayScript(),
        PG_URL,
        slot,
        slot,
        BROKER,
        BROKER_URL[BROKER]!,
        topic,
      ]);
      tracker.addProc(proc);
      await proc.line((l) => l === 'ready', 60_000, 'ready');
    } else {
      const datasources: Record<string, unknown> = {};
      const models: Record<string, unknown> = {};
      for (const [d, names] of tablesOf.entries()) {
        if (point.database === 'postgres') {
          const slot = `bsc_${id}_d${d}`.slice(0, 63);
          tracker.add(tracker.slots, slot);
          tracker.add(tracker.publications, slot);
          slots.push(slot);
          publications.push(slot);
          datasources[`db${d}`] = { connector: 'postgres', url: PG_URL, slot, publication: slot };
        } else datasources[`db${d}`] = { connector: 'mysql', url: dbUrl };
        for (const table of names)
          models[`m${d}_${table}`] = {
            dataSource: `db${d}`,
            topic,
            ...(point.database === 'mariadb' ? { from: 'now' } : {}),
            settings: { table },
          };
      }
      const config = {
        brokers: { default: { url: BROKER_URL[BROKER] } },
        datasources,
        models,
        checkpoints: { store: 'file', path: join(dir, 'checkpoints') },
      };
      const file = join(dir, 'evpub.config.json');
      writeFileSync(file, JSON.stringify(config, null, 2));
      proc = new LineProcess(
        'evpub',
        process.execPath,
        [
          // BENCH_EVPUB_FLAGS: node flags for evpub alone (e.g. --cpu-prof), as in bench/cdc.ts.
          ...(process.env.BENCH_EVPUB_FLAGS ?? '').split(' ').filter(Boolean),
          join(__dirname, '..', 'dist', 'cli', 'index.js'),
          'start',
          '--config',
          file,
        ],
        { EVPUB_LOG_LEVEL: 'info', EVPUB_HTTP_PORT: '0' },
      );
      tracker.addProc(proc);
      await proc.line((l) => l.includes('"msg":"started"'), 120_000, 'started');
    }

    // One writer (connection) per datasource, all writing at the same time.
    for (let d = 0; d < tablesOf.length; d++) {
      writers.push(
        point.database === 'postgres' ? await pgWriter(PG_URL, point.shape) : await mariadbWriter(dbUrl),
      );
    }
    sampler = new RssSampler(proc.pid);
    await new Promise((r) => setTimeout(r, 500));
    const idleRssMb = MB(sampler.peak());
    const timeoutMs = 180_000 + point.rows * (point.shape === 'huge' ? 50 : 2);
    const result = await sub.expect(point.rows, timeoutMs);
    sampler.reset();
    const cpu0 = cpuMs(proc.pid);
    const machine0 = machineCpu();
    const t0 = now();
    const perWriter = Math.floor(point.rows / writers.length);
    await Promise.all(writers.map((w, i) => w.burst(tablesOf[i]!, perWriter, point.perTx)));
    const committedAt = now();
    const r = await result();
    const t1 = now();
    const cpu = cpuMs(proc.pid) - cpu0;
    const machine1 = machineCpu();
    const series = sampler.series(t0);
    const mid = (r.lastAt - t0) / 2;
    const halfMax = (keep: (at: number) => boolean): number =>
      Math.max(0, ...series.filter(([at]) => keep(at)).map(([, mb]) => mb));
    return {
      ...point,
      received: r.count,
      complete: r.complete,
      perSec: r.count > 0 ? Math.round(r.count / ((r.lastAt - t0) / 1000)) : 0,
      ...(point.series === 'bigtx'
        ? {
            sinceCommitPerSec: r.count > 0 ? Math.round(r.count / ((r.lastAt - committedAt) / 1000)) : 0,
            rssHalvesMb: [halfMax((at) => at < mid), halfMax((at) => at >= mid)] as [number, number],
          }
        : {}),
      messageBytes: r.count > 0 ? Math.round(r.bytes / r.count) : 0,
      idleRssMb,
      peakRssMb: MB(sampler.peak()),
      cpuMsPerKRows: +((cpu / Math.max(1, r.count)) * 1000).toFixed(1),
      cpuPct: Math.round((cpu / (t1 - t0)) * 100),
      machineBusyPct: Math.round(
        ((machine1.busy - machine0.busy) / Math.max(1, machine1.total - machine0.total)) * 100,
      ),
    };
  } finally {
    sampler?.stop();
    for (const w of writers) await w.end().catch(() => undefined);
    if (proc) {
      await proc.stop();
      tracker.procs.delete(proc);
    }
    if (sub) {
      await sub.end();
      tracker.subscribers.delete(sub);
    }
    await tracker.dropPg(slots, publications, pgTables);
    if (mariadbDb) await tracker.dropMariadb(mariadbDb);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The points of each series, in the order they run (the relay just before evpub where it runs). */
function plan(series: Series[]): Point[] {
  const base = {
    database: 'postgres' as const,
    shape: 'narrow' as Shape,
    tables: 1,
    datasources: 1,
    rows: ROWS,
  };
  const both = (p: Omit<Point, 'system'>): Point[] => [
    { ...p, system: 'relay' },
    { ...p, system: 'evpub' },
  ];
  const points: Point[] = [];
  for (const s of series) {
    if (s === 'tables')
      for (const tables of TABLES) {
        const p: Omit<Point, 'system'> = {
          ...base,
          series: s,
          label: `${tables} table${tables > 1 ? 's' : ''}`,
          tables,
          perTx: Math.max(1, Math.min(1000, Math.floor(ROWS / tables))),
        };
        points.push(...(tables === 1 ? both(p) : [{ ...p, system: 'evpub' as const }]));
      }
    if (s === 'width')
      for (const shape of ['narrow', 'wide', 'huge'] as const)
        points.push(
          ...both({
            ...base,
            series: s,
            label: { narrow: '10 col ~200 B', wide: '50 col ~2 KB', huge: 'jsonb ~100 KB' }[shape],
            shape,
            rows: shape === 'huge' ? HUGE_ROWS : ROWS,
            perTx: PER_TX[shape],
          }),
        );
    if (s === 'bigtx')
      points.push(
        ...both({
          ...base,
          series: s,
          label: `1 tx of ${BIG_TX.toLocaleString('en-US')}`,
          rows: BIG_TX,
          perTx: BIG_TX,
        }),
      );
    if (s === 'datasources')
      for (const n of DATASOURCES)
        points.push({
          ...base,
          series: s,
          system: 'evpub',
          label: `${n} slot${n > 1 ? 's' : ''}`,
          datasources: n,
          rows: Math.floor(ROWS / n) * n,
          perTx: Math.max(1, Math.min(1000, Math.floor(ROWS / n))),
        });
    if (s === 'mariadb')
      for (const tables of MARIADB_TABLES)
        points.push({
          ...base,
          series: s,
          system: 'evpub',
          database: 'mariadb',
          label: `MariaDB ${tables} table${tables > 1 ? 's' : ''}`,
          tables,
          perTx: Math.max(1, Math.min(1000, Math.floor(ROWS / tables))),
        });
  }
  return points;
}

/** Free replication slots and walsenders on the server (shared: other users may hold some). */
async function freeSlots(): Promise<number> {
  return tracker.pg(async (db) => {
    const { rows } = await db.query<{ free: number }>(`SELECT least(
      current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots),
      current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication))::int AS free`);
    return rows[0]!.free;
  });
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const unknown = args.filter((a) => !(SERIES as readonly string[]).includes(a));
  if (unknown.length > 0)
    throw new Error(`unknown series ${unknown.join(', ')}: one of ${SERIES.join(', ')}`);
  if (!BROKER_URL[BROKER]) throw new Error(`BENCH_SCALE_BROKER: nats or redis (got ${BROKER})`);
  const series = args.length > 0 ? (args as Series[]) : [...SERIES];
  let interrupted = false;
  const stop = (why: string, code: number): void => {
    if (interrupted) return;
    interrupted = true;
    log(`${why}: stopping, dropping what the bench made`);
    void tracker.cleanupAll().finally(() => process.exit(code));
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
    process.once(signal, () => stop(signal, 130));
  // A point's pending waits reject when cleanup stops its processes: ignored then; before, a failure.
  process.on('unhandledRejection', (err) => {
    if (interrupted) return;
    log(`unexpected: ${String((err as Error)?.stack ?? err)}`);
    stop('failure', 1);
  });
  const started = new Date();
  const results: (PointResult & { series: Series })[] = [];
  for (const point of plan(series)) {
    if (interrupted) break;
    if (point.database === 'postgres' && point.system === 'evpub' && point.datasources > 1) {
      const free = await freeSlots();
      if (free < point.datasources + 2) {
        log(`${point.label}: skipped, the server has ${free} free replication slots / walsenders`);
        results.push({ ...emptyResult(point), error: `skipped: ${free} free replication slots` });
        continue;
      }
    }
    log(`${point.series} ${point.label}: ${point.system}, ${point.rows} rows`);
    try {
      results.push({ ...(await measure(point)), series: point.series });
    } catch (err) {
      if (interrupted) break;
      log(`${point.label} ${point.system}: ${(err as Error).message}`);
      results.push({ ...emptyResult(point), error: (err as Error).message.split('\n')[0]!.slice(0, 200) });
    }
  }
  if (interrupted) return;
  print(results);
  const report = {
    date: started.toISOString(),
    quick: QUICK,
    machine: {
      cpus: `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}`,
      memoryGb: Math.round(totalmem() / 2 ** 30),
      node: process.version,
      note: 'PostgreSQL (or MariaDB), the broker, evpub (or the relay) and the subscriber share these cores',
    },
    settings: {
      broker: BROKER,
      rows: ROWS,
      hugeRows: HUGE_ROWS,
      bigTx: BIG_TX,
      tables: TABLES,
      datasources: DATASOURCES,
      mariadbTables: MARIADB_TABLES,
    },
    results,
  };
  mkdirSync(RESULTS, { recursive: true });
  const stem = join(RESULTS, `scale-${QUICK ? 'quick-' : ''}${started.toISOString().slice(0, 10)}`);
  writeFileSync(`${stem}.json`, JSON.stringify(report, null, 2) + '\n');
  writeFileSync(`${stem}.svg`, renderScaleChart(report));
  console.log(`results: ${stem}.json, chart: ${stem}.svg`);
}

function emptyResult(point: Point): PointResult & { series: Series } {
  return {
    ...point,
    received: 0,
    complete: false,
    perSec: 0,
    messageBytes: 0,
    idleRssMb: 0,
    peakRssMb: 0,
    cpuMsPerKRows: 0,
    cpuPct: 0,
    machineBusyPct: 0,
  };
}

function print(results: (PointResult & { series: Series })[]): void {
  const ones = new Map<string, number>();
  console.table(
    results.map((r) => {
      const relay = results.find(
        (x) => x.series === r.series && x.label === r.label && x.system === 'relay' && !x.error,
      );
      if (r.series === 'datasources' && r.datasources === 1 && !r.error) ones.set(r.series, r.perSec);
      const one = ones.get(r.series);
      return {
        series: r.series,
        point: r.label,
        system: r.system,
        rows: r.rows,
        'rows/s': r.perSec,
        'evpub/relay':
          r.system === 'evpub' && relay ? +(r.perSec / Math.max(1, relay.perSec)).toFixed(2) : '',
        'vs 1 slot':
          r.series === 'datasources' && one && r.datasources > 1 ? +(r.perSec / one).toFixed(2) : '',
        'rows/s after commit': r.sinceCommitPerSec ?? '',
        'RSS MB 1st/2nd half': r.rssHalvesMb ? r.rssHalvesMb.join(' / ') : '',
        'msg B': r.messageBytes,
        'idle RSS MB': r.idleRssMb,
        'peak RSS MB': r.peakRssMb,
        'CPU ms/1k': r.cpuMsPerKRows,
        'CPU % 1 core': r.cpuPct,
        'machine busy %': r.machineBusyPct,
        note: r.error ? r.error.slice(0, 80) : r.complete ? '' : `received ${r.received}`,
      };
    }),
  );
}

main().catch(async (err: unknown) => {
  console.error(err);
  await tracker.cleanupAll();
  process.exit(1);
});
