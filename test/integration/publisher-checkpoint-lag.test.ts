/**
 * The file checkpoint keeps up with the broker's acks (the memory connector → the shared Redis,
 * file checkpoints in a temp dir), which bounds what a restart after kill -9 publishes again.
 *
 * - Every `checkpoint` status means the file holds that position now, and the position never
 *   passes what the broker accepted (the `published` count of the same moment).
 * - Once `app.status()` shows every event acked, at most two more saves follow (the one in
 *   flight and the latest: saves are coalesced) and the file holds the last position: a crash
 *   while idle after a burst replays nothing.
 */
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { FileCheckpointStore } from '../../src/checkpoints/file';
import { memoryStore } from '../../src/connectors/memory';
import { quietLogger, tempDir } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const EVENTS = 5000;

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

describe('publisher → Redis with file checkpoints', () => {
  it('the checkpoint file follows the acks; after a burst it holds the last position within one save', async () => {
    const url = await requireService('redis');
    const tmp = await tempDir('evpub-lag-');
    cleanups.push(() => tmp.remove());
    const storeName = uniqueName('s');
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: url },
      checkpoints: { store: 'file', path: tmp.dir },
    });
    cleanups.push(() => app.stop());
    const ds = app.dataSource('db', { connector: 'memory', store: storeName });
    app.model('m', { dataSource: ds, topic: `${uniqueName('evpub')}/{model}` });
    const file = new FileCheckpointStore({ path: tmp.dir }).fileOf('db/m');
    const onDisk = (): string => (JSON.parse(readFileSync(file, 'utf8')) as { position: string }).position;

    const saves: string[] = [];
    const problems: string[] = [];
    app.on('status', (s) => {
      if (s.type !== 'checkpoint') return;
      saves.push(s.position);
      const published = app.status().feeds['db/m']?.published ?? 0;
      if (Number(s.position) > published) problems.push(`saved ${s.position} with ${published} published`);
      if (onDisk() !== s.position) problems.push(`saved ${s.position} but the file holds ${onDisk()}`);
    });
    await app.start();
    await waitFor(() => app.status().feeds['db/m']?.saved === '0', "the start ('now') saved");

    for (let i = 1; i <= EVENTS; i++) ds.connector!.create('m', `k${i}`, { i });
    const last = String(memoryStore(storeName).head);
    expect(last).toBe(String(EVENTS));
    await waitFor(() => {
      const feed = app.status().feeds['db/m']!;
      return feed.published === EVENTS && feed.inFlight === 0;
    }, `all ${EVENTS} events acked`);
    expect(app.status().feeds['db/m']!.committed).toBe(last);
    const savesWhenAcked = saves.length;
    await waitFor(() => app.status().feeds['db/m']!.saved === last, 'the last position saved');
    expect(saves.length - savesWhenAcked).toBeLessThanOrEqual(2);
    expect(onDisk()).toBe(last);
    expect(problems).toEqual([]);
    await app.stop();
  });
});
