/**
 * Fault matrix: the CouchDB-compatible server (express-pouchdb in a child process,
 * test/helpers/couchdb-server.ts) killed with kill -9 and started again, and frozen (SIGSTOP)
 * so that the feed goes silent, while the couchdb connector follows `_changes`. The server
 * keeps nothing in memory across a restart: the test restores the database as a backup would,
 * and the connector drops the revisions it already passed. The connector runs under a recording
 * sink: the fault is the source's.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CouchDbConnector, initialize } from '../../src/connectors/couchdb';
import { createLogger } from '../../src/logger';
import { RecordingSink } from '../conformance/connector.suite';
import { startTestCouchServer, type Doc, type TestCouchServer } from '../helpers/couchdb-server';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { countDelivery, reportRow } from './matrix';

const logger = createLogger({ level: 'silent' });

async function connector(settings: Record<string, unknown>): Promise<CouchDbConnector> {
  const dataSource = { name: 'couch', settings, logger, connector: undefined as unknown };
  await initialize(dataSource);
  return dataSource.connector as CouchDbConnector;
}

describe('fault matrix: source restarted or frozen mid-stream (couchdb)', () => {
  let couch: TestCouchServer;

  beforeAll(async () => {
    couch = await startTestCouchServer();
  });

  afterAll(async () => {
    await couch?.close();
  });

  it('reconnects after kill -9 and a restart, and drops what a restored database replays', async () => {
    const began = Date.now();
    const db = 'faults';
    await couch.createDb(db);
    const c = await connector({ url: couch.url, heartbeat: 500, reconnectDelay: 50, maxReconnectDelay: 400 });
    const sink = new RecordingSink();
    await c.start({ models: [{ name: db, settings: {}, from: 'beginning' }], sink });
    try {
      let count = 0;
      for (const id of ['a', 'b', 'c']) {
        let rev: string | undefined;
        for (const n of [1, 2, 3]) {
          rev = await couch.put(db, { _id: id, ...(rev ? { _rev: rev } : {}), n });
          count += 1;
          await waitFor(() => sink.events.length === count, `event ${count}`); // no coalescing
        }
      }
      expect(sink.events.length).toBe(9);
      const latest = [2, 5, 8].map((i) => sink.events[i]!.after as Doc); // a, b, c at n: 3

      await couch.stop(); // kill -9: the feed breaks
      await waitFor(() => c.health().state === 'reconnecting', 'the connector to notice');
      const connectedBefore = sink.statuses.filter((s) => s.type === 'connected').length;
      await couch.start(); // empty: the database is gone until restored
      await waitFor(
        () => sink.statuses.some((s) => s.type === 'reconnecting' && s.error.includes('does not exist')),
        'a reconnect attempt to find the database missing',
      );
      await couch.createDb(db);
      await couch.restore(db, latest); // the same documents at the same revisions, new seqs 1..3
      await waitFor(
        () => sink.statuses.filter((s) => s.type === 'connected').length > connectedBefore,
        'the connector to reconnect',
      );
      await couch.put(db, { _id: 'd', n: 1 });
      await waitFor(() => sink.keys().includes('d'), 'the change made after the restart');
      expect(sink.keys()).toEqual(['a', 'a', 'a', 'b', 'b', 'b', 'c', 'c', 'c', 'd']);
      expect(c.health().state).toBe('streaming');
      expect(sink.statuses.filter((s) => s.type === 'reconnecting').length).toBeGreaterThan(0);
      expect(sink.failures).toEqual([]);
      const row = reportRow({
        fault: 'source restarted (kill -9, start, database restored)',
        source: 'couchdb',
        broker: '— (connector → sink)',
        ...countDelivery(
          ['a', 'b', 'c'].flatMap((id) => [1, 2, 3].map((n) => `${id}@${n}`)).concat('d@1'),
          sink.events.map((e) => `${e.key}@${String((e.after as Doc).n)}`),
        ),
        seconds: (Date.now() - began) / 1000,
        note: 'the restore replays 3 revisions, dropped',
      });
      expect(row.lost).toBe(0);
    } finally {
      await c.stop();
    }
  });

  it('reopens a feed that goes silent (no heartbeat) and misses nothing', async () => {
    const began = Date.now();
    const db = uniqueName('db');
    await couch.createDb(db);
    const c = await connector({
      url: couch.url,
      heartbeat: 200,
      requestTimeout: 1000,
      connectTimeout: 500,
      reconnectDelay: 50,
      maxReconnectDelay: 200,
    });
    const sink = new RecordingSink();
    await c.start({ models: [{ name: db, settings: {}, from: 'beginning' }], sink });
    try {
      await couch.put(db, { _id: 'before' });
      await waitFor(() => sink.events.length === 1, 'the first event');
      couch.freeze();
      try {
        await waitFor(
          () => sink.statuses.some((s) => s.type === 'reconnecting' && s.error.includes('heartbeat')),
          'the silence to be noticed',
        );
      } finally {
        couch.thaw();
      }
      await couch.put(db, { _id: 'after' });
      await waitFor(() => sink.events.length === 2, 'the event after the thaw');
      expect(sink.keys()).toEqual(['before', 'after']);
      const row = reportRow({
        fault: 'source frozen (SIGSTOP until the heartbeat is missed)',
        source: 'couchdb',
        broker: '— (connector → sink)',
        ...countDelivery(['before', 'after'], sink.keys()),
        seconds: (Date.now() - began) / 1000,
      });
      expect(row.lost).toBe(0);
    } finally {
      await c.stop();
    }
  });
});
