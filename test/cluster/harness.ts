/**
 * The multi-process cluster harness (issue 14): N `evpub start` processes (the built CLI) with
 * one configuration, sharing its units through leases.
 *
 * Sources, one model each:
 * - PostgreSQL, three tables in two datasources: `pga` (tables a1, a2: one slot, one unit) and
 *   `pgb` (table b1: another slot and unit);
 * - MariaDB, one table (`my`, the binlog connector `mysql`);
 * - CouchDB, one database (`couch`, the express-pouchdb test server in a child process).
 * A model has one broker, so the models are split over the two sinks and counted per sink:
 * a1, my → a private Mosquitto (MQTT 5: the cluster headers arrive as user properties;
 * `max_queued_messages 0` so a burst is not dropped), a2, b1, couch → NATS JetStream on a stream
 * of the harness's own (`Nats-Msg-Id` = the event id: a takeover's replay is dropped by the
 * stream). The `pga` unit feeds both sinks.
 *
 * Writers (`startWriters`): every tick each table gets a new key at version 0, the key before
 * goes to version 1 and the one before that to version 2 (one transaction on PostgreSQL).
 * `stopWriters()` finishes the last keys' versions. CouchDB's changes feed shows a document at
 * its current revision, so an intermediate version read late is skipped: for CouchDB only the
 * last version of each key is owed, for the SQL sources every version.
 *
 * The consumer records every event (CloudEvents id, model, key, version, the `evpub-instance`
 * and `evpub-epoch` headers, the arrival time): MQTT through a subscriber on the private
 * broker, NATS through a core subscription on the subjects (every publish, the replays the
 * stream dropped included: "on the wire"), and at the end the stream itself (`readStream`).
 * `check()` counts per sink: missing versions, duplicates (an id twice) and whether each
 * duplicate comes from another owner's run than its first copy (a replay), and per-key order
 * within each owner's run (the events of one instance and epoch: versions strictly grow).
 *
 * Ownership comes from each process's log: its unit lines (`acquired`, `released`, `lost`,
 * `failed`, with the unit and epoch), parsed as they arrive (`owners()`, `ownerOf()`).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { connect as natsConnect, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { Connection } from 'mysql2/promise';
import { Client as PgClient } from 'pg';
import { startTestCouchServer, type TestCouchServer } from '../helpers/couchdb-server';
import { sharedConnection } from '../helpers/mariadb';
import { startMosquitto, type PrivateMosquitto } from '../helpers/mosquitto';
import { PgFixture, PG_URL, sql } from '../helpers/postgres';
import { subscriber } from '../helpers/publisher';
import { requireService, SERVICES, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { spawnCli, type CliProcess } from '../e2e/cli';
import { requireFreshBuild, tempDir } from '../faults/evpub-process';
import type { Client } from '../../src/pubsub/client';

export type LeaseStoreKind = 'postgres' | 'redis' | 'nats';
export type Sink = 'mqtt' | 'jetstream';

export interface HarnessOptions {
  /** Where the leases live. */
  leases: LeaseStoreKind;
  /** The checkpoint store (fenced saves). */
  checkpoints: 'postgres' | 'redis';
  /** Default '3s'. */
  leaseTtl?: string;
  /** ms between two checkpoint saves of a feed (publisher.checkpointInterval). */
  checkpointInterval?: number;
  /** Which sources (default all). */
  sources?: { pg?: boolean; mariadb?: boolean; couch?: boolean };
}

/** One event as the consumer got it. */
export interface Got {
  sink: Sink;
  id: string;
  model: string;
  key: string;
  version: number;
  instance: string;
  epoch: string;
  /** performance.now() at arrival. */
  at: number;
}

interface ModelSpec {
  model: string;
  datasource: string;
  unit: string;
  sink: Sink;
  kind: 'pg' | 'mariadb' | 'couch';
  /** Only the last version of a key is owed (CouchDB). */
  lastOnly: boolean;
}

/** A unit status line of a process's log. */
export interface UnitLine {
  unit: string;
  event: 'acquired' | 'released' | 'lost' | 'failed';
  instance: string;
  epoch: number;
  /** performance.now() when the harness read it. */
  at: number;
}

const UNIT_EVENTS: UnitLine['event'][] = ['acquired', 'released', 'lost', 'failed'];

export interface Instance {
  name: string;
  proc: CliProcess;
  units: UnitLine[];
  alive: boolean;
}

export const VERSIONS = 3;

/** A row's or document's key: `id` (SQL tables) or `_id` (CouchDB). */
function keyOf(after: Record<string, unknown>): string {
  const key = after.id ?? after._id;
  return typeof key === 'string' ? key : '';
}

/** Who holds what, for messages: `i1: pga,my; i2: -`. */
export function spread(owners: Map<string, string[]>): string {
  return [...owners].map(([n, u]) => `${n}: ${u.join(',') || '-'}`).join('; ');
}

/** `waitFor` for a check that answers a value or undefined: resolves with the value. */
export async function until<T>(check: () => T | undefined, what: string, timeoutMs?: number): Promise<T> {
  return (await waitFor(check, what, timeoutMs))!;
}

export interface SinkReport {
  sink: Sink;
  received: number;
  distinct: number;
  duplicates: number;
  /** Duplicates whose first copy came from the same owner's run: never a replay. */
  sameRunDuplicates: number;
  missing: string[];
  orderViolations: string[];
}

export class ClusterHarness {
  readonly root = uniqueName('cl');
  readonly clusterName = uniqueName('c');
  readonly stream = uniqueName('EVPUBCL').toUpperCase();
  readonly instances: Instance[] = [];
  readonly got: Got[] = [];
  readonly models: ModelSpec[] = [];
  private readonly cleanups: (() => Promise<unknown>)[] = [];
  private readonly tmp = tempDir('evpub-cluster-');
  private configFile = '';
  private pga?: PgFixture;
  private pgb?: PgFixture;
  /** One connection per table: the writers run concurrently. */
  private readonly pgWriters = new Map<string, PgClient>();
  private my?: Connection;
  private myTable = '';
  private couch?: TestCouchServer;
  private couchDb = '';
  private couchRevs = new Map<string, string>();
  private mosquitto?: PrivateMosquitto;
  private mqtt?: Client;
  private nc?: NatsConnection;
  private natsSub?: Subscription;
  /** Per model: the number of keys written (keys 0..n-1), and whether their versions are done. */
  private readonly written = new Map<string, number>();
  private writing = false;
  /** performance.now() when the write of (model, key, version) began. */
  private readonly writeStarted = new Map<string, number>();
  private writers: Promise<void>[] = [];
  private readonly cpPrefix = `${uniqueName('cp')}:`;
  private readonly cpTable = uniqueName('cp');

  /** The PostgreSQL checkpoint store's table (checkpoints: 'postgres'). */
  get checkpointTable(): string {
    return this.cpTable;
  }

  /** The Redis checkpoint store's key prefix (checkpoints: 'redis'). */
  get checkpointPrefix(): string {
    return this.cpPrefix;
  }

  constructor(readonly options: HarnessOptions) {}

  get units(): string[] {
    return [...new Set(this.models.map((m) => m.unit))];
  }

  /** Creates the sources, the sinks and the configuration; subscribes the consumer. */
  async setup(): Promise<void> {
    requireFreshBuild();
    await requireService('postgres');
    await requireService('redis');
    await requireService('nats');
    const want = { pg: true, mariadb: true, couch: true, ...this.options.sources };
    const datasources: Record<string, unknown> = {};
    const modelsConfig: Record<string, unknown> = {};
    const add = (spec: ModelSpec, settings: Record<string, unknown>): void => {
      this.models.push(spec);
      modelsConfig[spec.model] = {
        dataSource: spec.datasource,
        broker: spec.sink,
        topic: `${this.root}/{model}`,
        from: 'beginning',
        settings,
      };
    };
    if (want.pg) {
      const pga = (this.pga = new PgFixture());
      const pgb = (this.pgb = new PgFixture());
      this.cleanups.push(
        () => pga.drop(),
        () => pgb.drop(),
      );
      const a1 = await pga.table('id text PRIMARY KEY, value int', 'cla');
      const a2 = await pga.table('id text PRIMARY KEY, value int', 'cla');
      const b1 = await pgb.table('id text PRIMARY KEY, value int', 'clb');
      await pga.slots(1);
      await pgb.slots(1);
      for (const [name, f] of [
        ['pga', pga],
        ['pgb', pgb],
      ] as const) {
        datasources[name] = {
          connector: 'postgres',
          url: f.url,
          slot: f.slot,
          publication: f.publication,
          statusInterval: 200,
          heartbeatInterval: 500,
          reconnectDelay: 100,
        };
      }
      add(
        { model: a1, datasource: 'pga', unit: 'pga', sink: 'mqtt', kind: 'pg', lastOnly: false },
        { table: a1 },
      );
      add(
        { model: a2, datasource: 'pga', unit: 'pga', sink: 'jetstream', kind: 'pg', lastOnly: false },
        { table: a2 },
      );
      add(
        { model: b1, datasource: 'pgb', unit: 'pgb', sink: 'jetstream', kind: 'pg', lastOnly: false },
        { table: b1 },
      );
      for (const table of [a1, a2, b1]) {
        const writer = new PgClient({ connectionString: PG_URL });
        await writer.connect();
        this.pgWriters.set(table, writer);
        this.cleanups.push(() => writer.end());
      }
    }
    if (want.mariadb) {
      const conn = (this.my = await sharedConnection());
      const table = (this.myTable = uniqueName('clm'));
      await conn.query(`CREATE TABLE \`${table}\` (id VARCHAR(64) PRIMARY KEY, value INT NOT NULL)`);
      this.cleanups.push(async () => {
        await conn.query(`DROP TABLE IF EXISTS \`${table}\``);
        await conn.end();
      });
      datasources.my = {
        connector: 'mysql',
        url: SERVICES.mariadb.url,
        reconnectDelay: 100,
        heartbeat: 1000,
      };
      add(
        { model: table, datasource: 'my', unit: 'my', sink: 'mqtt', kind: 'mariadb', lastOnly: false },
        { table },
      );
    }
    if (want.couch) {
      const couch = (this.couch = await startTestCouchServer());
      this.cleanups.push(() => couch.close());
      this.couchDb = uniqueName('cld');
      await couch.createDb(this.couchDb);
      datasources.couch = { connector: 'couchdb', url: couch.url };
      add(
        {
          model: this.couchDb,
          datasource: 'couch',
          unit: 'couch',
          sink: 'jetstream',
          kind: 'couch',
          lastOnly: true,
        },
        { database: this.couchDb },
      );
    }
    for (const m of this.models) this.written.set(m.model, 0);

    // Sinks and the consumer.
    const mosquitto = (this.mosquitto = await startMosquitto());
    this.cleanups.push(() => mosquitto.close());
    const sub = await subscriber(mosquitto.url, `${this.root}/#`);
    this.mqtt = sub.client;
    this.cleanups.push(() => sub.client.end());
    // The helper's list; read it through a getter so the consumer records with its own clock.
    const mqttGot = sub.got;
    let seenMqtt = 0;
    const pollMqtt = setInterval(() => {
      for (; seenMqtt < mqttGot.length; seenMqtt++) {
        const m = mqttGot[seenMqtt]!;
        this.record('mqtt', m.topic.split('/').pop()!, m.json, m.headers ?? {});
      }
    }, 5);
    this.cleanups.push(async () => clearInterval(pollMqtt));
    const nc = (this.nc = await natsConnect({ servers: new URL(SERVICES.nats.url).host }));
    this.cleanups.push(async () => {
      const jsm = await jetstreamManager(nc);
      await jsm.streams.delete(this.stream).catch(() => undefined);
      await nc.close();
    });
    // The stream made before evpub starts, so it captures from the first publish.
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({
      name: this.stream,
      subjects: [`${this.root}.>`],
      duplicate_window: 120_000_000_000,
    });
    this.natsSub = nc.subscribe(`${this.root}.>`, {
      callback: (err, m) => {
        if (err) return;
        const headers: Record<string, string> = {};
        for (const [k, v] of m.headers ?? []) headers[k] = v.join(', ');
        this.record('jetstream', m.subject.split('.').pop()!, m.json(), headers);
      },
    });
    await nc.flush();

    const checkpoints =
      this.options.checkpoints === 'redis'
        ? { store: 'redis', url: SERVICES.redis.url, prefix: this.cpPrefix }
        : { store: 'postgres', url: PG_URL, table: this.cpTable };
    if (this.options.checkpoints === 'postgres')
      this.cleanups.push(() => sql(`DROP TABLE IF EXISTS ${this.cpTable}, ${this.cpTable}_owners`));
    else this.cleanups.push(() => this.redisDel(`${this.cpPrefix}*`));
    const leaseUrl = { postgres: PG_URL, redis: SERVICES.redis.url, nats: SERVICES.nats.url }[
      this.options.leases
    ];
    if (this.options.leases === 'redis')
      this.cleanups.push(() => this.redisDel(`evpub:{${this.clusterName}}*`));
    if (this.options.leases === 'postgres') {
      this.cleanups.push(() =>
        sql('DELETE FROM evpub_leases WHERE cluster = $1', [this.clusterName]).catch(() => undefined),
      );
      this.cleanups.push(() =>
        sql('DELETE FROM evpub_members WHERE cluster = $1', [this.clusterName]).catch(() => undefined),
      );
    }
    const config = {
      brokers: {
        mqtt: { url: mosquitto.url },
        jetstream: {
          url: SERVICES.nats.url,
          options: { nats: { jetstream: true, stream: this.stream, duplicateWindow: 120_000 } },
        },
      },
      checkpoints,
      cluster: {
        store: this.options.leases,
        url: leaseUrl,
        name: this.clusterName,
        leaseTtl: this.options.leaseTtl ?? '3s',
      },
      publisher: { checkpointInterval: this.options.checkpointInterval ?? 200 },
      datasources,
      models: modelsConfig,
    };
    this.configFile = path.join(this.tmp.dir, 'evpub.config.json');
    writeFileSync(this.configFile, JSON.stringify(config, null, 2));
  }

  private async redisDel(pattern: string): Promise<void> {
    const { Redis } = await import('ioredis');
    const r = new Redis(SERVICES.redis.url);
    try {
      const keys = await r.keys(pattern);
      if (keys.length > 0) await r.del(...keys);
    } finally {
      r.disconnect();
    }
  }

  private record(sink: Sink, model: string, json: unknown, headers: Record<string, string>): void {
    const ce = json as { id?: string; data?: { after?: Record<string, unknown> } };
    const after = ce.data?.after ?? {};
    const key = keyOf(after);
    this.got.push({
      sink,
      id: String(ce.id),
      model,
      key,
      version: Number(after.value),
      instance: headers['evpub-instance'] ?? '',
      epoch: headers['evpub-epoch'] ?? '',
      at: performance.now(),
    });
  }

  // -------------------------------------------------------------------------------------------
  // Processes

  /** Starts `evpub start` as instance `name`; resolves once it printed "evpub started". */
  async start(name: string): Promise<Instance> {
    const file = path.join(this.tmp.dir, `evpub.${name}.json`);
    const base = JSON.parse((await import('node:fs')).readFileSync(this.configFile, 'utf8')) as {
      cluster: Record<string, unknown>;
    };
    base.cluster.instance = name;
    writeFileSync(file, JSON.stringify(base, null, 2));
    const proc = spawnCli(['start', '--config', file], {
      cwd: this.tmp.dir,
      built: true,
      env: { EVPUB_LOG_LEVEL: 'info', EVPUB_HTTP_PORT: '0' },
    });
    const inst: Instance = { name, proc, units: [], alive: true };
    this.instances.push(inst);
    void proc.exited.then(() => (inst.alive = false));
    let buffer = '';
    proc.child.stdout!.on('data', (chunk: Buffer) => {
      buffer += chunk.toString();
      const lines = buffer.split('\n');
      buffer = lines.pop()!;
      for (const line of lines) {
        // The start log's unit lines: `{ unit, event, instance, epoch, feeds, msg: "unit ... acquired ..." }`.
        if (!line.includes('"unit":') || !line.includes('"event":')) continue;
        try {
          const l = JSON.parse(line) as Partial<UnitLine>;
          if (
            typeof l.unit === 'string' &&
            typeof l.epoch === 'number' &&
            l.event &&
            UNIT_EVENTS.includes(l.event)
          )
            inst.units.push({
              unit: l.unit,
              event: l.event,
              instance: l.instance ?? name,
              epoch: l.epoch,
              at: performance.now(),
            });
        } catch {
          // not a JSON line
        }
      }
    });
    await proc.waitForOutput('evpub started', 60_000);
    return inst;
  }

  /** The units each live instance holds now (by its log). */
  owners(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const inst of this.instances) {
      if (!inst.alive) continue;
      const held = new Set<string>();
      for (const u of inst.units) {
        if (u.event === 'acquired') held.add(u.unit);
        else held.delete(u.unit);
      }
      out.set(inst.name, [...held]);
    }
    return out;
  }

  /** The units some instance reported `lost` (a lease not renewed in time, a fenced save). */
  lostUnits(): Set<string> {
    return new Set(
      this.instances.flatMap((i) => i.units.filter((u) => u.event === 'lost').map((u) => u.unit)),
    );
  }

  /** The live instance holding `unit` (by the logs), if any. */
  ownerOf(unit: string): Instance | undefined {
    const owners = this.owners();
    return this.instances.find((i) => i.alive && owners.get(i.name)?.includes(unit));
  }

  /** Waits until every unit is held by exactly one live instance; returns the owners. */
  async settled(timeoutMs = 30_000): Promise<Map<string, string[]>> {
    return until(
      () => {
        const owners = this.owners();
        const held = [...owners.values()].flat();
        return held.length === this.units.length && new Set(held).size === held.length ? owners : undefined;
      },
      'every unit held once',
      timeoutMs,
    );
  }

  /**
   * Waits until every unit is held once and no live instance holds more than its fair share
   * (ceil(units / live instances)), nor, when `even`, fewer than floor(units / live instances);
   * returns the owners.
   */
  async balanced(timeoutMs = 30_000, even = false): Promise<Map<string, string[]>> {
    let last = new Map<string, string[]>();
    return until(
      () => {
        const owners = (last = this.owners());
        const held = [...owners.values()].flat();
        const share = Math.ceil(this.units.length / owners.size);
        const ok =
          held.length === this.units.length &&
          new Set(held).size === held.length &&
          [...owners.values()].every((u) => u.length <= share) &&
          (!even ||
            [...owners.values()].every((u) => u.length >= Math.floor(this.units.length / owners.size)));
        return ok ? owners : undefined;
      },
      `every unit held once, none beyond its fair share${even ? ', none below the floor' : ''}`,
      timeoutMs,
    ).catch((err: Error) => {
      throw new Error(`${err.message}: ${spread(last)}`);
    });
  }

  /** The first event of `unit`'s models, arrived after `since`, from another instance than `not`. */
  firstEventAfter(unit: string, since: number, not?: string): Got | undefined {
    const models = new Set(this.models.filter((m) => m.unit === unit).map((m) => m.model));
    return this.got.find((g) => g.at > since && models.has(g.model) && g.instance !== not);
  }

  /** Sends `signal` to an instance. */
  signal(inst: Instance, signal: NodeJS.Signals): void {
    inst.proc.child.kill(signal);
  }

  // -------------------------------------------------------------------------------------------
  // Writers

  /** Starts writing into every table (a tick every `tickMs`). */
  startWriters(tickMs = 60): void {
    this.writing = true;
    this.writers = this.models.map((m) => this.writeLoop(m, tickMs));
  }

  /** Stops the writers, then writes the last keys' remaining versions. */
  async stopWriters(): Promise<void> {
    this.writing = false;
    await Promise.all(this.writers);
    for (const m of this.models) {
      const n = this.written.get(m.model)!;
      // Ticks n and n+1 without a new key: keys n-1 and n-2 get their last versions.
      for (let i = n; i < n + VERSIONS - 1; i++) await this.tick(m, i, false);
    }
  }

  private async writeLoop(m: ModelSpec, tickMs: number): Promise<void> {
    while (this.writing) {
      const i = this.written.get(m.model)!;
      await this.tick(m, i, true);
      this.written.set(m.model, i + 1);
      await new Promise((r) => setTimeout(r, tickMs));
    }
  }

  /** Tick `i`: key i at version 0 (when `insert`), key i-v at version v. */
  private async tick(m: ModelSpec, i: number, insert: boolean): Promise<void> {
    const updates: [string, number][] = [];
    for (let v = 1; v < VERSIONS; v++) if (i - v >= 0) updates.push([`k${i - v}`, v]);
    const startedAt = performance.now();
    if (insert) this.writeStarted.set(`${m.model}|k${i}|0`, startedAt);
    for (const [k, v] of updates) this.writeStarted.set(`${m.model}|${k}|${v}`, startedAt);
    if (m.kind === 'pg') {
      const statements = [
        ...(insert ? [`INSERT INTO ${m.model} VALUES ('k${i}', 0)`] : []),
        ...updates.map(([k, v]) => `UPDATE ${m.model} SET value = ${v} WHERE id = '${k}'`),
      ];
      if (statements.length > 0) await this.pgWriters.get(m.model)!.query(statements.join('; '));
    } else if (m.kind === 'mariadb') {
      if (insert) await this.my!.query(`INSERT INTO \`${m.model}\` VALUES ('k${i}', 0)`);
      for (const [k, v] of updates)
        await this.my!.query(`UPDATE \`${m.model}\` SET value = ? WHERE id = ?`, [v, k]);
    } else {
      const db = this.couchDb;
      if (insert) this.couchRevs.set(`k${i}`, await this.couch!.put(db, { _id: `k${i}`, value: 0 }));
      for (const [k, v] of updates) {
        this.couchRevs.set(k, await this.couch!.put(db, { _id: k, _rev: this.couchRevs.get(k)!, value: v }));
      }
    }
  }

  /** When the write of an event's change began (performance.now()); undefined if unknown. */
  writeStartedOf(g: Got): number | undefined {
    return this.writeStarted.get(`${g.model}|${g.key}|${g.version}`);
  }

  /** Every (model, key, version) owed. */
  owed(): { model: string; key: string; version: number; sink: Sink }[] {
    const out: { model: string; key: string; version: number; sink: Sink }[] = [];
    for (const m of this.models) {
      const n = this.written.get(m.model)!;
      for (let i = 0; i < n; i++) {
        for (let v = m.lastOnly ? VERSIONS - 1 : 0; v < VERSIONS; v++)
          out.push({ model: m.model, key: `k${i}`, version: v, sink: m.sink });
      }
    }
    return out;
  }

  /** Waits until every owed version arrived on its sink's live consumer. */
  async allArrived(timeoutMs = 45_000): Promise<void> {
    const owed = this.owed();
    await waitFor(
      () => {
        const have = new Set(this.got.map((g) => `${g.model}|${g.key}|${g.version}`));
        return owed.every((o) => have.has(`${o.model}|${o.key}|${o.version}`));
      },
      `all ${owed.length} owed changes`,
      timeoutMs,
    ).catch((err: Error) => {
      const have = new Set(this.got.map((g) => `${g.model}|${g.key}|${g.version}`));
      const missing = owed.filter((o) => !have.has(`${o.model}|${o.key}|${o.version}`));
      throw new Error(
        `${err.message}: ${missing.length} missing, e.g. ${JSON.stringify(missing.slice(0, 5))}\nowners ${JSON.stringify([...this.owners()])}`,
      );
    });
  }

  /** The JetStream stream's messages: (id, model, key, version, headers), in stream order. */
  async readStream(): Promise<Got[]> {
    const jsm = await jetstreamManager(this.nc!);
    const count = (await jsm.streams.info(this.stream)).state.messages;
    const out: Got[] = [];
    if (count === 0) return out;
    const consumer = await jetstream(this.nc!).consumers.get(this.stream);
    const messages = await consumer.consume();
    for await (const m of messages) {
      const ce = m.json<{ id: string; data?: { after?: Record<string, unknown> } }>();
      const after = ce.data?.after ?? {};
      out.push({
        sink: 'jetstream',
        id: ce.id,
        model: m.subject.split('.').pop()!,
        key: keyOf(after),
        version: Number(after.value),
        instance: m.headers?.get('evpub-instance') ?? '',
        epoch: m.headers?.get('evpub-epoch') ?? '',
        at: 0,
      });
      if (out.length >= count) break;
    }
    await messages.close();
    return out;
  }

  /**
   * Counts for one sink's events (in arrival order): missing owed versions, duplicates (an id
   * seen before) and those within one owner's run, per-key order violations within a run.
   */
  report(sink: Sink, events: Got[]): SinkReport {
    const owed = this.owed().filter((o) => o.sink === sink);
    const have = new Set(events.map((g) => `${g.model}|${g.key}|${g.version}`));
    const missing = owed
      .filter((o) => !have.has(`${o.model}|${o.key}|${o.version}`))
      .map((o) => `${o.model}/${o.key}@${o.version}`);
    const firstRun = new Map<string, string>();
    let duplicates = 0;
    let sameRunDuplicates = 0;
    const last = new Map<string, number>();
    const orderViolations: string[] = [];
    for (const g of events) {
      const run = `${g.instance}#${g.epoch}`;
      const first = firstRun.get(g.id);
      if (first !== undefined) {
        duplicates++;
        if (first === run) sameRunDuplicates++;
        continue; // a replayed copy: not a new step of the key
      }
      firstRun.set(g.id, run);
      const k = `${run}|${g.model}|${g.key}`;
      const prev = last.get(k);
      if (prev !== undefined && g.version <= prev) orderViolations.push(`${k}: ${prev} then ${g.version}`);
      last.set(k, g.version);
    }
    return {
      sink,
      received: events.length,
      distinct: firstRun.size,
      duplicates,
      sameRunDuplicates,
      missing,
      orderViolations,
    };
  }

  /** Every process's problems (warn+ lines), for failure messages. */
  logs(max = 15): string {
    return this.instances
      .map((i) => {
        const lines = (i.proc.stdout() + i.proc.stderr())
          .split('\n')
          .filter((l) => /"level":(4|5|6)0/.test(l) || (l !== '' && !l.startsWith('{')));
        return `--- ${i.name} (${i.alive ? 'alive' : 'gone'})\n${lines.slice(-max).join('\n')}`;
      })
      .join('\n');
  }

  /** Kills every process left, removes the sources, sinks, keys and temp files. */
  async close(): Promise<void> {
    this.writing = false;
    await Promise.all(this.writers).catch(() => undefined);
    for (const inst of this.instances) {
      if (inst.proc.child.exitCode === null && inst.proc.child.signalCode === null) {
        inst.proc.child.kill('SIGCONT');
        inst.proc.child.kill('SIGKILL');
      }
      await inst.proc.exited;
    }
    const keep = process.env.EVPUB_CLUSTER_LOGS;
    if (keep) {
      // Every process's log, for a run to look into: EVPUB_CLUSTER_LOGS=<dir>.
      mkdirSync(keep, { recursive: true });
      for (const inst of this.instances) {
        writeFileSync(
          path.join(keep, `${this.clusterName}-${inst.name}.log`),
          inst.proc.stdout() + inst.proc.stderr(),
        );
      }
      const got = this.got.map((g) => JSON.stringify({ ...g, written: this.writeStartedOf(g) })).join('\n');
      writeFileSync(path.join(keep, `${this.clusterName}-events.jsonl`), got);
    }
    this.natsSub?.unsubscribe();
    for (const c of this.cleanups.splice(0).reverse()) await c().catch(() => undefined);
    this.tmp.remove();
  }
}
