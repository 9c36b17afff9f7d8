/**
 * Fault matrix: kill -9 of `evpub start` reading PostgreSQL mid-burst (→ NATS JetStream), then
 * a restart: every change arrives and the stream holds none twice.
 *
 * The publisher is `evpub start` in a child process: the postgres connector on the shared server
 * (its own table, slot and publication), file checkpoints saved at most every 2 s
 * (`publisher.checkpointInterval`, so that run 1 dies with confirmed events past its checkpoint:
 * the restart is sure to publish some of them again), NATS in JetStream mode on a stream of its
 * own. 400 rows go through 4 versions (1,600 changes in transactions of 100 rows), written while
 * the publisher runs; once some are in the stream and a checkpoint was saved, the publisher is
 * SIGKILLed and started again.
 *
 * What is asserted, and why it holds:
 * - Every change arrives: the slot and the checkpoint only advance past what JetStream acked.
 * - The stream holds each change exactly once, although run 2 published again what run 1 had
 *   stored past its checkpoint (counted and printed): evpub sends the event id (`<commit
 *   LSN>:<index>`, the same on a replay) as `Nats-Msg-Id`, and the stream drops a second
 *   publish of an id within its duplicate window (2 minutes).
 * The same run on core NATS (a subscriber connected throughout) receives the replay twice: the
 * second case checks that every change arrived and that duplicates did (counted and printed),
 * each with the id of its first copy, as on MQTT or Redis (kill-publisher-postgres).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { connect, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { killCli, spawnCli, type CliProcess } from '../e2e/cli';
import { PgSource, parseLsn, tempDir } from './evpub-process';

const ROWS = 400;
const VERSIONS = 4;
const PER_TX = 100;
const KILL_AFTER = 400; // messages in the stream

let natsUrl: string;
let nc: NatsConnection;
const sources: PgSource[] = [];
const dirs: { remove(): void }[] = [];
const streams: string[] = [];
const processes: CliProcess[] = [];

beforeAll(async () => {
  natsUrl = await requireService('nats');
  await requireService('postgres');
  nc = await connect({ servers: new URL(natsUrl).host });
});
afterAll(async () => {
  await Promise.all(processes.map((p) => killCli(p)));
  if (nc) {
    const jsm = await jetstreamManager(nc);
    for (const name of streams) await jsm.streams.delete(name).catch(() => undefined);
    await nc.close();
  }
  for (const pg of sources) await pg.drop();
  for (const d of dirs) d.remove();
});

async function writeChanges(pg: PgSource): Promise<void> {
  for (let from = 1; from <= ROWS; from += PER_TX) await pg.insert(from, from + PER_TX - 1);
  for (let round = 1; round < VERSIONS; round++) {
    for (let from = 1; from <= ROWS; from += PER_TX) {
      await pg.query(`UPDATE ${pg.table} SET v = v + 1 WHERE id BETWEEN $1 AND $1 + ${PER_TX - 1}`, [from]);
    }
  }
}

async function storedCount(stream: string): Promise<number> {
  const jsm = await jetstreamManager(nc);
  try {
    return (await jsm.streams.info(stream)).state.messages;
  } catch {
    return 0; // not created yet
  }
}

interface Received {
  seq: number;
  msgId: string | undefined;
  id: string;
  change: string;
}

function received(seq: number, data: { json<T>(): T }, msgId: string | undefined): Received {
  const ce = data.json<{ id: string; data: { key: string; after: { v: number } } }>();
  return { seq, msgId, id: ce.id, change: `${ce.data.key}@${ce.data.after.v}` };
}

/** Every message of the stream, in stream order. */
async function readStream(stream: string, count: number): Promise<Received[]> {
  const consumer = await jetstream(nc).consumers.get(stream);
  const out: Received[] = [];
  const messages = await consumer.consume();
  for await (const m of messages) {
    out.push(received(m.seq, m, m.headers?.get('Nats-Msg-Id')));
    if (out.length >= count) break;
  }
  await messages.close();
  return out;
}

/** `<commitLsn>:<index>` (event id) or `<commitLsn>#<index>` (position) as a comparable pair. */
function point(text: string): [bigint, number] {
  const [lsn, index] = text.split(/[:#]/);
  return [parseLsn(lsn!), Number(index)];
}

function after(a: [bigint, number], b: [bigint, number]): boolean {
  return a[0] > b[0] || (a[0] === b[0] && a[1] > b[1]);
}

const TOTAL = ROWS * VERSIONS;

function allChanges(): string[] {
  const out: string[] = [];
  for (let id = 1; id <= ROWS; id++) for (let v = 0; v < VERSIONS; v++) out.push(`${id}@${v}`);
  return out.sort();
}

/**
 * Runs evpub on a fresh source into `nats` options, kills it once `arrived()` reached KILL_AFTER
 * and a checkpoint was saved, starts it again and waits until `done()`; then stops it.
 * Returns where run 2 resumed from and what had arrived at the kill.
 */
async function killAndRestart(
  nats: Record<string, unknown>,
  topic: string,
  arrived: () => Promise<number>,
  done: () => Promise<boolean>,
): Promise<{ resumeFrom: string; atKill: number }> {
  const pg = new PgSource();
  sources.push(pg);
  await pg.create();
  const tmp = tempDir('evpub-jsdedupe-');
  dirs.push(tmp);
  const config = path.join(tmp.dir, 'evpub.config.json');
  const checkpointFile = path.join(tmp.dir, 'checkpoints', `${encodeURIComponent('pg/rows')}.json`);
  writeFileSync(
    config,
    JSON.stringify({
      brokers: { default: { url: natsUrl, options: { nats } } },
      checkpoints: { store: 'file', path: path.join(tmp.dir, 'checkpoints') },
      publisher: { checkpointInterval: 2000 },
      datasources: { pg: pg.datasource() },
      models: { rows: { dataSource: 'pg', topic, from: 'beginning', settings: { table: pg.table } } },
    }),
  );
  const start = (): CliProcess => {
    const p = spawnCli(['start', '--config', config], { cwd: tmp.dir, env: { EVPUB_LOG_LEVEL: 'info' } });
    processes.push(p);
    return p;
  };
  const checkpoint = (): string | undefined => {
    try {
      return (JSON.parse(readFileSync(checkpointFile, 'utf8')) as { position: string }).position;
    } catch {
      return undefined; // not saved yet (or being replaced)
    }
  };

  const first = start();
  await first.waitForOutput('evpub started');
  const writer = writeChanges(pg);
  writer.catch(() => undefined);
  await waitFor(
    async () => (await arrived()) >= KILL_AFTER && checkpoint() !== undefined,
    `${KILL_AFTER} messages and a saved checkpoint before the kill`,
  );
  first.child.kill('SIGKILL');
  expect(await first.exited).toBe('SIGKILL');
  const resumeFrom = checkpoint()!;
  const atKill = await arrived();

  const second = start();
  await second.waitForOutput('evpub started');
  await writer;
  await waitFor(done, `all ${TOTAL} changes`, 30_000);
  second.child.kill('SIGTERM');
  expect(await second.exited).toBe(0);
  return { resumeFrom, atKill };
}

describe('fault matrix: kill -9 of the publisher (postgres → NATS)', () => {
  it('JetStream: after a restart every change is in the stream exactly once: the replay was de-duplicated', async () => {
    const stream = uniqueName('EVPUBDD');
    streams.push(stream);
    const { resumeFrom, atKill: run1 } = await killAndRestart(
      { jetstream: true, stream },
      `evpub/test/${uniqueName('jsdd')}`,
      () => storedCount(stream),
      async () => (await storedCount(stream)) >= TOTAL,
    );

    const count = await storedCount(stream);
    const messages = await readStream(stream, count);
    const changes = messages.map((m) => m.change);
    expect([...new Set(changes)].sort(), 'every change arrived').toEqual(allChanges());
    expect(count, 'no change stored twice').toBe(TOTAL);
    for (const m of messages) expect(m.msgId, `Nats-Msg-Id of message ${m.seq}`).toBe(m.id);

    // What run 1 had stored past its checkpoint, run 2 published again: the stream dropped it.
    const from = point(resumeFrom);
    const replayed = messages.slice(0, run1).filter((m) => after(point(m.id), from)).length;
    expect(replayed, 'run 2 published again what run 1 stored past its checkpoint').toBeGreaterThan(0);
    console.log(
      `postgres → JetStream kill -9: ${TOTAL} changes, ${run1} stored before the kill, ${replayed} of them ` +
        `past the checkpoint ${resumeFrom}: published again by the restart and dropped by the stream; ` +
        `${count} messages in the stream, 0 duplicates`,
    );
  });

  it('core NATS: the same replay reaches a subscriber twice, with the same ids', async () => {
    const topic = `evpub/test/${uniqueName('coredd')}`;
    const got: Received[] = [];
    const sub: Subscription = nc.subscribe(topic.replace(/\//g, '.'), {
      callback: (err, m) => {
        if (!err) got.push(received(got.length + 1, m, m.headers?.get('Nats-Msg-Id')));
      },
    });
    await nc.flush();
    try {
      const distinct = (): number => new Set(got.map((m) => m.change)).size;
      const { resumeFrom, atKill } = await killAndRestart(
        {},
        topic,
        () => Promise.resolve(got.length),
        () => Promise.resolve(distinct() >= TOTAL),
      );
      await nc.flush();
      expect([...new Set(got.map((m) => m.change))].sort(), 'every change arrived').toEqual(allChanges());
      const duplicates = got.length - TOTAL;
      expect(duplicates, 'the replay arrived again').toBeGreaterThan(0);
      const idOf = new Map<string, string>();
      for (const m of got) {
        expect(idOf.get(m.change) ?? m.id, `the id of ${m.change}`).toBe(m.id);
        idOf.set(m.change, m.id);
      }
      console.log(
        `postgres → core NATS kill -9: ${TOTAL} changes, ${atKill} received before the kill, resumed after ` +
          `${resumeFrom}: ${got.length} received, ${duplicates} duplicates (same ids)`,
      );
    } finally {
      sub.unsubscribe();
    }
  });
});
