/**
 * kill -9 of a publisher process in the middle of a MySQL snapshot (MariaDB → evpub → Redis
 * Streams, file checkpoints), then a new process from the checkpoint: the snapshot goes on after
 * the checkpoint's cursor (no row at or before it is read again), nothing is missing, and the
 * changes made while no publisher ran are the last word on their rows.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { Connection } from 'mysql2/promise';
import { afterEach, describe, expect, it } from 'vitest';
import { FileCheckpointStore } from '../../src/checkpoints/file';
import { decodePosition } from '../../src/connectors/mysql/position';
import { ensureSignalTable, sharedConnection, uniqueTable } from '../helpers/mariadb';
import { subscriber, tempDir } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

const root = path.resolve(__dirname, '../..');

async function publisher(args: string[]): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(root, 'test/helpers/mysql-publisher.ts'), ...args],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
  await waitFor(() => {
    if (child.exitCode !== null) throw new Error(`the publisher exited (${child.exitCode}): ${err}`);
    return out.includes('ready');
  }, 'the publisher to be ready');
  return child;
}

describe('mysql snapshot: kill -9 of the publisher mid-snapshot', () => {
  it('a new process resumes the snapshot after the checkpointed chunk: no early chunk again, nothing missing', async () => {
    const rows = 20_000;
    const redis = await requireService('redis');
    const conn: Connection = await sharedConnection();
    await ensureSignalTable(conn);
    const table = uniqueTable();
    await conn.query(`CREATE TABLE \`${table}\` (id INT PRIMARY KEY, n INT NOT NULL)`);
    await conn.query(`INSERT INTO \`${table}\` SELECT seq, 0 FROM seq_1_to_${rows}`);
    cleanups.push(async () => {
      await conn.query(`DROP TABLE IF EXISTS \`${table}\``);
      await conn.end();
    });
    const topic = `evpub/test/${uniqueName('mysql')}`;
    const sub = await subscriber(redis, topic, { redis: { mode: 'streams' } });
    cleanups.push(() => sub.client.end());
    await sub.client.unsubscribe(topic);
    await sub.client.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });
    const dir = await tempDir('evpub-mysql-snapshot-kill-');
    cleanups.push(() => dir.remove());
    const args = [redis, topic, table, dir.dir, JSON.stringify({ snapshot: 'initial', snapshotChunk: 200 })];
    const store = new FileCheckpointStore({ path: dir.dir });
    const cursorOf = async (): Promise<number> => {
      const position = await store.load('my/m').catch(() => undefined);
      const key = position ? decodePosition(position).snapshot?.key : undefined;
      return key ? Number(key[0]) : 0;
    };

    const first = await publisher(args);
    // Killed once the checkpoint is a few chunks into the table (the first chunks are done).
    await waitFor(async () => (await cursorOf()) >= 3_000, 'a checkpoint past row 3,000', 60_000);
    first.kill('SIGKILL');
    await new Promise((resolve) => first.once('exit', resolve));
    const resumeAfter = await cursorOf();
    expect(resumeAfter).toBeLessThan(rows);
    const atKill = sub.got.length;
    await conn.query(`UPDATE \`${table}\` SET n = 1 WHERE id IN (1, ${rows})`); // read, and not yet read

    await publisher(args);
    type Data = { op: string; key: string; after: { n: number } | null };
    const data = () => sub.got.map((m) => m.json.data as Data);
    await waitFor(
      () => data().some((d, i) => i >= atKill && d.op === 'snapshot' && d.key === String(rows)),
      'the last row from the second process',
      60_000,
    );
    await waitFor(() => data().filter((d) => d.op === 'update').length >= 2, 'both updates');
    const second = data().slice(atKill);
    const read2 = second.filter((d) => d.op === 'snapshot').map((d) => Number(d.key));
    // The second process reads on after the checkpoint's cursor: every row after it once, none before.
    expect(read2).toEqual(Array.from({ length: rows - resumeAfter }, (_, i) => resumeAfter + 1 + i));
    const read1 = new Set(
      data()
        .slice(0, atKill)
        .filter((d) => d.op === 'snapshot')
        .map((d) => Number(d.key)),
    );
    for (let id = 1; id <= rows; id++) {
      if (!read1.has(id) && id <= resumeAfter) throw new Error(`row ${id} was never read`);
    }
    expect(second.filter((d) => d.op === 'update').map((d) => d.key)).toEqual(['1', String(rows)]);
    const last = (key: string) =>
      data()
        .filter((d) => d.key === key)
        .at(-1)!;
    expect(last('1').after!.n).toBe(1);
    expect(last(String(rows)).after!.n).toBe(1);
    const twice = read2.filter((k) => read1.has(k)).length;
    process.stdout.write(
      `mysql snapshot kill -9: ${atKill} events before the kill, checkpoint after row ${resumeAfter}, ${twice} rows read again\n`,
    );
  });
});
