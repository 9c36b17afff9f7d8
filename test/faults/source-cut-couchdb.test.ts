/**
 * Fault matrix: the publisher's connection to CouchDB (the express-pouchdb test server) cut by a
 * TCP proxy mid-stream (the `_changes` feed and every request destroyed, new ones refused until
 * the proxy listens again), while 100 documents get 10 revisions each, written to the server
 * directly. An evpub app in this process publishes to the shared Redis in streams mode; the
 * test's durable consumer group counts what arrives.
 *
 * What is asserted, and why it holds:
 * - Every document's final revision arrives, and it is the last event of that document: after
 *   the reconnect the feed resumes from the last position pushed, and `_changes` serves each
 *   document at its current revision.
 * - A document's revisions never go back. `_changes` coalesces the revisions a document went
 *   through between two reads, so the row counts each document's final revision as the change
 *   that must arrive.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import { createClient } from '../../src/pubsub/registry';
import { startTestCouchServer, type TestCouchServer } from '../helpers/couchdb-server';
import { quietLogger, statusLog } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy';
import { waitFor } from '../helpers/wait';
import { countDelivery, reportRow } from './matrix';

const DOCS = 100;
const REVISIONS = 10;
const CUT_AFTER = 200; // events received

let couch: TestCouchServer;
let proxy: TcpProxy;
let redisUrl: string;

beforeAll(async () => {
  redisUrl = await requireService('redis');
  couch = await startTestCouchServer();
  const u = new URL(couch.url);
  proxy = await startTcpProxy({ host: u.hostname, port: Number(u.port) });
});
afterAll(async () => {
  await proxy?.close();
  await couch?.close();
});

const generation = (rev: string): number => Number(rev.slice(0, rev.indexOf('-')));

describe('fault matrix: the connection to the source cut mid-stream (couchdb)', () => {
  it('every document reaches its final revision after the reconnect', { timeout: 120_000 }, async () => {
    const began = Date.now();
    const db = uniqueName('db');
    await couch.createDb(db);
    const topic = `evpub/test/${uniqueName('couchcut')}`;
    const consumer = createClient(redisUrl, { logger: quietLogger(), redis: { mode: 'streams' } });
    const seen: { id: string; key: string; rev: string }[] = [];
    consumer.on('message', (_t, payload) => {
      const ce = JSON.parse(payload.toString()) as {
        id: string;
        subject: string;
        data: { source: { rev: string } };
      };
      seen.push({ id: ce.id, key: ce.subject, rev: ce.data.source.rev });
    });
    const through = new URL(couch.url);
    through.port = String(proxy.port);
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: { url: redisUrl, options: { redis: { mode: 'streams' } } } },
      checkpoints: new MemoryCheckpointStore(),
    });
    const log = statusLog();
    app.on('status', log.listener);
    app.dataSource('couch', {
      connector: 'couchdb',
      url: through.toString(),
      heartbeat: 500,
      reconnectDelay: 50,
      maxReconnectDelay: 400,
    });
    app.model('docs', { dataSource: 'couch', topic, from: 'beginning', settings: { database: db } });
    const reconnecting = () =>
      log.events.filter((e) => e.type === 'connector' && e.status.type === 'reconnecting').length;
    try {
      await consumer.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });
      await app.start();
      const finalRevs = new Map<string, string>();
      const ids = Array.from({ length: DOCS }, (_, i) => `doc-${String(i).padStart(3, '0')}`);
      const writer = (async () => {
        for (let round = 0; round < REVISIONS; round++) {
          await Promise.all(
            ids.map(async (id) => {
              const rev = finalRevs.get(id);
              finalRevs.set(id, await couch.put(db, { _id: id, ...(rev ? { _rev: rev } : {}), round }));
            }),
          );
        }
      })();
      writer.catch(() => undefined);

      await waitFor(() => seen.length >= CUT_AFTER, `${CUT_AFTER} events before the cut`);
      await proxy.stop();
      const cutAt = seen.length;
      await waitFor(() => reconnecting() >= 2, 'two reconnect attempts while cut');
      await writer; // the writes go on meanwhile (straight to the server)
      await proxy.start();
      const isFinal = (): boolean => {
        const last = new Map<string, string>();
        for (const s of seen) last.set(s.key, s.rev);
        return [...finalRevs].every(([id, rev]) => last.get(id) === rev);
      };
      await waitFor(isFinal, 'every document at its final revision', 60_000);
      await app.stop();

      const row = reportRow({
        fault: 'source connection cut (tcp proxy)',
        source: 'couchdb',
        broker: 'redis streams',
        ...countDelivery(
          [...finalRevs].map(([id, rev]) => `${id} ${rev}`),
          seen.map((s) => `${s.key} ${s.rev}`),
        ),
        duplicates: seen.length - new Set(seen.map((s) => `${s.key} ${s.rev}`)).size,
        seconds: (Date.now() - began) / 1000,
        note: `1,000 writes to 100 documents, sent = final revisions; cut after ${cutAt} events`,
      });
      expect(row.lost).toBe(0);
      for (const [id, rev] of finalRevs) {
        const mine = seen.filter((s) => s.key === id);
        expect(mine.at(-1)!.rev, id).toBe(rev);
        const gens = mine.map((s) => generation(s.rev));
        expect(gens, `${id}: revisions never go back`).toEqual([...gens].sort((a, b) => a - b));
      }
    } finally {
      await app.stop().catch(() => undefined);
      await consumer.end();
      const redis = new Redis(redisUrl);
      await redis.del(topic);
      redis.disconnect();
    }
  });
});
