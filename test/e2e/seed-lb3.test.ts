/**
 * The seed's own publisher (test/fixtures/seed-lb3/server.js) run as it was written, on
 * LoopBack 3 (`loopback` 3.x, juggler 3), with `connector: 'evpub/connectors/couchdb'` and
 * `evpub/pubsub` in place of strong-pubsub: a document created, updated and deleted in the
 * CouchDB database `accounts` (the embedded CouchDB-compatible test server) arrives on the
 * shared Mosquitto's `/v1/subutest` as `{"model":"accounts","message":{...}}`, read by
 * `mosquitto_sub`. The seed's topic is shared: the test picks its messages by the unique `_id`.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCouchServer, type Doc, type TestCouchServer } from '../helpers/couchdb-server';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { ROOT } from './cli';
import {
  collectLines,
  ensureBuilt,
  evpubNodePath,
  mosquittoSub,
  SEED_TOPIC,
  waitForLine,
  type Lines,
} from './seed-loopback';

const SERVER = path.join(ROOT, 'test/fixtures/seed-lb3/server.js');

let couch: TestCouchServer;
let nodePath: Awaited<ReturnType<typeof evpubNodePath>>;
const children: Lines[] = [];
beforeAll(async () => {
  await requireService('mosquitto');
  ensureBuilt();
  nodePath = await evpubNodePath();
  couch = await startTestCouchServer();
  await couch.createDb('accounts');
}, 200_000);
afterAll(async () => {
  for (const child of children) child.proc.kill('SIGKILL');
  await couch?.close();
  await nodePath?.remove();
});

async function doc(id: string): Promise<Doc> {
  const res = await fetch(`${couch.url}accounts/${encodeURIComponent(id)}`);
  return (await res.json()) as Doc;
}

describe("the seed's server.js on LoopBack 3 with evpub/connectors/couchdb", () => {
  it('create, update and delete in CouchDB accounts arrive on /v1/subutest in the seed envelope', async () => {
    const mosq = await mosquittoSub(SEED_TOPIC);
    children.push(mosq);
    const server = collectLines(process.execPath, [SERVER], {
      CLOUDANT_URL: couch.url,
      NODE_PATH: nodePath.dir,
    });
    children.push(server);
    await waitForLine(server, 'accounts', 'the model to be active ("accounts")');
    expect(server.lines[0]).toMatch(/^Web server listening at: http:\/\/localhost:\d+\/$/);

    const id = uniqueName('bond');
    const mine = (line: string): boolean => line.includes(`"_id":"${id}"`);
    const rev1 = await couch.put('accounts', {
      _id: id,
      name: 'James Bond',
      type: 'Demo',
      region: 'Bangalore',
    });
    const created = await doc(id);
    await waitFor(() => mosq.lines.filter(mine).length === 1, 'the created document on mosquitto_sub');

    const rev2 = await couch.put('accounts', { ...created, region: 'London' });
    const updated = await doc(id);
    await waitFor(() => mosq.lines.filter(mine).length === 2, 'the updated document on mosquitto_sub');

    const rev3 = await couch.remove('accounts', id, rev2);
    await waitFor(() => mosq.lines.filter(mine).length === 3, 'the deletion on mosquitto_sub');

    expect(created).toEqual({ _id: id, _rev: rev1, name: 'James Bond', type: 'Demo', region: 'Bangalore' });
    expect(updated._rev).toBe(rev2);
    expect(mosq.lines.filter(mine)).toEqual([
      JSON.stringify({ model: 'accounts', message: created }),
      JSON.stringify({ model: 'accounts', message: updated }),
      // CouchDB's tombstone, as the seed's feed (include_docs) gave it.
      JSON.stringify({ model: 'accounts', message: { _id: id, _rev: rev3, _deleted: true } }),
    ]);
    // The seed's handler logged each message and body; no error reached its 'error' listener.
    expect(server.lines.some((l) => l.includes(`_id: '${id}'`))).toBe(true);
    expect(server.lines.join('\n')).not.toMatch(/Error/);
    expect(server.err()).toBe('');
  });
});
