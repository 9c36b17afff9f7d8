/**
 * Fault matrix: kill -9 of a publisher process mid-stream (MariaDB → evpub → Redis Streams, file
 * checkpoints), then a new process from the checkpoint: every change reaches a durable
 * subscriber, at least once, in order per key after dropping earlier duplicates.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { Connection } from 'mysql2/promise';
import { afterEach, describe, expect, it } from 'vitest';
import { sharedConnection, uniqueTable } from '../helpers/mariadb';
import { subscriber, tempDir } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { countDelivery, reportRow, RssSampler } from './matrix';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

const root = path.resolve(__dirname, '../..');
const samplers: RssSampler[] = [];

async function publisher(args: string[]): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(root, 'test/helpers/mysql-publisher.ts'), ...args],
    {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  samplers.push(new RssSampler(child.pid!));
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

describe('fault matrix: kill -9 of the publisher (mariadb)', () => {
  it('a new process resumes from the checkpoint: nothing lost', async () => {
    const began = Date.now();
    const redis = await requireService('redis');
    const conn: Connection = await sharedConnection();
    const table = uniqueTable();
    await conn.query(`CREATE TABLE \`${table}\` (id INT PRIMARY KEY, n INT NOT NULL)`);
    cleanups.push(async () => {
      await conn.query(`DROP TABLE IF EXISTS \`${table}\``);
      await conn.end();
    });
    const topic = `evpub/test/${uniqueName('mysql')}`;
    const streams = { redis: { mode: 'streams' } };
    const sub = await subscriber(redis, topic, streams);
    cleanups.push(() => sub.client.end());
    await sub.client.unsubscribe(topic);
    await sub.client.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });
    const dir = await tempDir('evpub-mysql-kill-');
    cleanups.push(() => dir.remove());

    const first = await publisher([redis, topic, table, dir.dir]);
    // 300 transactions of 10 inserts, then an update of every row: 6000 changes.
    let writing = true;
    const writer = (async () => {
      for (let t = 0; t < 300 && writing; t++) {
        const values = Array.from({ length: 10 }, (_, i) => `(${t * 10 + i + 1}, 0)`).join(', ');
        await conn.query(`INSERT INTO \`${table}\` VALUES ${values}`);
      }
      for (let t = 0; t < 300 && writing; t++) {
        await conn.query(`UPDATE \`${table}\` SET n = 1 WHERE id BETWEEN ? AND ?`, [t * 10 + 1, t * 10 + 10]);
      }
    })();
    cleanups.push(() => ((writing = false), writer));

    await waitFor(() => sub.got.length >= 800, '800 changes through the first publisher');
    first.kill('SIGKILL');
    await new Promise((resolve) => first.once('exit', resolve));
    const atKill = sub.got.length;
    await publisher([redis, topic, table, dir.dir]);
    await writer;
    await waitFor(
      () => new Set(sub.got.filter((m) => m.json.type !== undefined).map((m) => m.json.id)).size >= 6000,
      'all 6000 changes',
      30_000,
    );
    const ids = new Set(sub.got.map((m) => m.json.id));
    expect(ids.size).toBe(6000);
    // In order per key once earlier duplicates are dropped: each key's create, then its update.
    const lastIndex = new Map<unknown, number>();
    sub.got.forEach((m, i) => lastIndex.set(m.json.id, i));
    const perKey = new Map<string, number[]>();
    sub.got.forEach((m, i) => {
      if (lastIndex.get(m.json.id) !== i) return;
      const d = m.json.data as { key: string; after: { n: number } };
      perKey.set(d.key, [...(perKey.get(d.key) ?? []), d.after.n]);
    });
    expect(perKey.size).toBe(3000);
    for (const values of perKey.values()) expect(values).toEqual([0, 1]);
    const sent: string[] = [];
    for (let id = 1; id <= 3000; id++) sent.push(`${id}@0`, `${id}@1`);
    const row = reportRow({
      fault: 'kill -9 of the publisher, restart',
      source: 'mariadb',
      broker: 'redis streams',
      ...countDelivery(
        sent,
        sub.got.map((m) => {
          const d = m.json.data as { key: string; after: { n: number } };
          return `${d.key}@${d.after.n}`;
        }),
      ),
      maxRssMb: Math.max(...samplers.splice(0).map((r) => r.stop())),
      seconds: (Date.now() - began) / 1000,
    });
    expect(row.lost).toBe(0);
    process.stdout.write(
      `mysql kill -9: ${atKill} received before the kill, ${sub.got.length - 6000} duplicates after the restart\n`,
    );
  });
});
