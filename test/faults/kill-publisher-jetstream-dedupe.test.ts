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
 * With core NATS, MQTT or Redis the same replay is delivered twice (kill-publisher-postgres:
 * duplicates counted there).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
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
const pg = new PgSource();
const tmp = tempDir('evpub-jsdedupe-');
const stream = uniqueName('EVPUBDD');
const processes: CliProcess[] = [];

beforeAll(async () => {
  natsUrl = await requireService('nats');
  await requireService('postgres');
  nc = await connect({ servers: new URL(natsUrl).host });
  await pg.create();
});
afterAll(async () => {
  await Promise.all(processes.map((p) => killCli(p)));
  if (nc) {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(stream).catch(() => undefined);
    await nc.close();
  }
  await pg.drop();
  tmp.remove();
});

async function writeChanges(): Promise<void> {
  for (let from = 1; from <= ROWS; from += PER_TX) await pg.insert(from, from + PER_TX - 1);
  for (let round = 1; round < VERSIONS; round++) {
    for (let from = 1; from <= ROWS; from += PER_TX) {
      await pg.query(`UPDATE ${pg.table} SET v = v + 1 WHERE id BETWEEN $1 AND $1 + ${PER_TX - 1}`, [from]);
    }
  }
}

async function storedCount(): Promise<number> {
  const jsm = await jetstreamManager(nc);
  try {
    return (await jsm.streams.info(stream)).state.messages;
  } catch {
    return 0; // not created yet
  }
}

interface Stored {
  seq: number;
  msgId: string | undefined;
  id: string;
  change: string;
}

/** Every message of the stream, in stream order. */
async function readStream(count: number): Promise<Stored[]> {
  const consumer = await jetstream(nc).consumers.get(stream);
  const out: Stored[] = [];
  const messages = await consumer.consume();
  for await (const m of messages) {
    const ce = m.json<{ id: string; data: { key: string; after: { v: number } } }>();
    out.push({
      seq: m.seq,
      msgId: m.headers?.get('Nats-Msg-Id'),
      id: ce.id,
      change: `${ce.data.key}@${ce.data.after.v}`,
    });
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

describe('fault matrix: kill -9 of the publisher (postgres → JetStream)', () => {
  it('after a restart every change is in the stream exactly once: the replay was de-duplicated', async () => {
    const topic = `evpub/test/${uniqueName('jsdd')}`;
    const config = path.join(tmp.dir, 'evpub.config.json');
    const checkpointFile = path.join(tmp.dir, 'checkpoints', `${encodeURIComponent('pg/rows')}.json`);
    writeFileSync(
      config,
      JSON.stringify({
        brokers: { default: { url: natsUrl, options: { nats: { jetstream: true, stream } } } },
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
    const writer = writeChanges();
    writer.catch(() => undefined);
    let stored = 0;
    await waitFor(async () => {
      stored = await storedCount();
      return stored >= KILL_AFTER && checkpoint() !== undefined;
    }, `${KILL_AFTER} messages in the stream and a saved checkpoint before the kill`);
    first.child.kill('SIGKILL');
    expect(await first.exited).toBe('SIGKILL');
    const resumeFrom = checkpoint()!;
    const run1 = await storedCount();

    const second = start();
    await second.waitForOutput('evpub started');
    await writer;
    const total = ROWS * VERSIONS;
    await waitFor(async () => (await storedCount()) >= total, `all ${total} changes in the stream`, 30_000);
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);

    // Nothing more arrived after the last change: no duplicate was stored late either.
    const count = await storedCount();
    const messages = await readStream(count);
    const changes = messages.map((m) => m.change);
    const expected: string[] = [];
    for (let id = 1; id <= ROWS; id++) for (let v = 0; v < VERSIONS; v++) expected.push(`${id}@${v}`);
    expect(new Set(changes).size, 'every change arrived').toBe(total);
    expect([...new Set(changes)].sort()).toEqual(expected.sort());
    expect(count, 'no change stored twice').toBe(total);
    for (const m of messages) expect(m.msgId, `Nats-Msg-Id of message ${m.seq}`).toBe(m.id);

    // What run 1 had stored past its checkpoint, run 2 published again: the stream dropped it.
    const from = point(resumeFrom);
    const replayed = messages.slice(0, run1).filter((m) => after(point(m.id), from)).length;
    expect(replayed, 'run 2 published again what run 1 stored past its checkpoint').toBeGreaterThan(0);
    console.log(
      `postgres → JetStream kill -9: ${total} changes, ${run1} stored before the kill (${stored} when killed), ` +
        `${replayed} of them past the checkpoint ${resumeFrom} published again by the restart and ` +
        `dropped by the stream; ${count} messages in the stream, 0 duplicates`,
    );
  });
});
