/**
 * kill -9 of `evpub start` in the middle of a re-snapshot asked over its API (`evpub feeds
 * snapshot`), PostgreSQL → Redis: the restarted publisher goes on with the snapshot after the
 * checkpointed cursor, not from the first row, and every row is published.
 *
 * The publisher is the built CLI in a child process (file checkpoints in a tmp dir); the
 * re-snapshot is asked with the CLI against its management API; the kill comes once 2,000 of
 * the 20,000 rows arrived (chunks of 20: hundreds of chunks are still to read).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileCheckpointStore } from '../../src/checkpoints/file';
import { decodePosition } from '../../src/connectors/postgres/position';
import { killCli, spawnCli, type CliProcess } from '../e2e/cli';
import { subscriber } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { PgSource, problems, requireFreshBuild, startEvpub, tempDir } from './evpub-process';

const ROWS = 20_000;
const KILL_AFTER = 2_000;

let redisUrl: string;
const source = new PgSource();
const tmp = tempDir('evpub-resnap-kill-');
const processes: CliProcess[] = [];

beforeAll(async () => {
  requireFreshBuild();
  redisUrl = await requireService('redis');
  await requireService('postgres');
  await source.create();
  await source.insert(1, ROWS);
});

afterAll(async () => {
  for (const p of processes) await killCli(p);
  await source.drop();
  tmp.remove();
});

function apiOf(proc: CliProcess): string {
  const m = /management API listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(proc.stdout());
  if (!m) throw new Error(`no API address in the output:\n${proc.stdout()}`);
  return m[1]!;
}

describe('kill -9 of the publisher mid re-snapshot (postgres)', () => {
  it('the next process resumes the snapshot after the checkpointed cursor', async () => {
    const topic = `evpub/test/${uniqueName('resnap')}`;
    const sub = await subscriber(redisUrl, topic);
    const config = {
      brokers: { default: { url: redisUrl } },
      checkpoints: { store: 'file', path: tmp.dir },
      datasources: { pg: { ...source.datasource(), snapshotChunk: 20 } },
      models: { items: { dataSource: 'pg', topic, settings: { table: source.table } } },
    };
    type Data = { op: string; key: string };
    const dataOf = (from: number) => sub.got.slice(from).map((m) => m.json.data as Data);

    const first = await startEvpub(tmp.dir, config);
    processes.push(first);
    const cli = spawnCli(['feeds', 'snapshot', 'pg/items', '--url', apiOf(first)]);
    expect(await cli.exited, cli.stderr()).toBe(0);
    expect(cli.stdout()).toContain('pg/items: re-snapshot started');
    await waitFor(() => sub.got.length >= KILL_AFTER, `${KILL_AFTER} snapshot rows`, 60_000);
    await killCli(first);
    // What the killed process had handed to Redis is delivered within moments.
    let count = -1;
    await waitFor(async () => {
      const stable = sub.got.length === count;
      count = sub.got.length;
      await new Promise((resolve) => setTimeout(resolve, 300));
      return stable;
    }, 'the first run to be delivered');
    const run1 = dataOf(0);
    expect(run1.length).toBeLessThan(ROWS);
    const checkpoint = await new FileCheckpointStore({ path: tmp.dir }).load('pg/items');
    const cursor = decodePosition(checkpoint!).snapshot?.cursor;
    expect(cursor, `checkpoint ${checkpoint}`).toBeTruthy();
    const resumeAfter = Number(cursor![0]);
    expect(resumeAfter).toBeGreaterThan(0);
    expect(resumeAfter).toBeLessThanOrEqual(run1.length);

    const second = await startEvpub(tmp.dir, config);
    processes.push(second);
    await waitFor(
      () => dataOf(count).some((d) => d.key === String(ROWS)),
      'the snapshot to finish in the second run',
      60_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n${problems(second)}`);
    });
    const run2 = dataOf(count);
    expect(run2.every((d) => d.op === 'snapshot')).toBe(true);
    // Read on after the checkpoint's cursor: not from the first row again.
    expect(run2.map((d) => Number(d.key))).toEqual(
      Array.from({ length: ROWS - resumeAfter }, (_, i) => resumeAfter + 1 + i),
    );
    const read1 = new Set(run1.map((d) => Number(d.key)));
    for (let id = 1; id <= resumeAfter; id++) {
      if (!read1.has(id)) throw new Error(`row ${id} was never published`);
    }
    await killCli(second);
    await sub.client.end();
    process.stdout.write(
      `re-snapshot kill -9: first run ${run1.length} rows, resumed after row ${resumeAfter}, ${run1.length - resumeAfter} rows published twice\n`,
    );
  });
});
