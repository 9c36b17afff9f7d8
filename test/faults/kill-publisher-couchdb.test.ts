/**
 * Fault matrix: kill -9 of the publisher mid-stream (CouchDB → Redis Streams), then a restart:
 * nothing is lost.
 *
 * The publisher is `evpub start --config <tmp>/evpub.config.json` in a child process: the
 * couchdb connector on the CouchDB test server, file checkpoints in the tmp dir, Redis in
 * streams mode (the broker keeps every entry; the test's durable consumer group cannot miss
 * one). 100 documents get 10 changes each (1,000 writes: a create, updates, and for every tenth
 * document a delete as its last change), written round-robin while the publisher runs. Once
 * the test received some events (and not yet every final revision), it SIGKILLs the publisher
 * and starts it again at once; the writes go on meanwhile.
 *
 * What is asserted, and why it holds:
 * - Every document's final revision arrives, and it is the LAST event seen for that document.
 *   The restarted publisher resumes after its last saved checkpoint (a position at most as far
 *   as what the broker confirmed), so whatever run 1 read but had not confirmed is read again.
 * - Within one publisher run, a document's revisions strictly increase (CouchDB's `_changes`
 *   serves a document at its current revision, and the connector drops revisions it already
 *   passed). Across the restart too they never go back: the replay re-reads `_changes`, which
 *   only ever shows a revision at least as new as any published before. Duplicates (the same
 *   revision again after the restart) are allowed: delivery is at-least-once, and the replayed
 *   event carries the same CloudEvents id.
 * - Not every one of the 1,000 writes is an event: `_changes` coalesces the revisions a
 *   document went through between two reads (docs/connectors/couchdb.md).
 *
 * Run 1's events are told from run 2's by the stream itself: after run 1's process is gone its
 * entries are exactly the first XLEN entries of the stream, and the consumer reads in order.
 *
 * The row counts each document's final revision as a change that must arrive (what `_changes`
 * guarantees); `duplicates` are events that repeat a (document, revision) already received.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '../../src/pubsub/registry';
import { startTestCouchServer, type TestCouchServer } from '../helpers/couchdb-server';
import { quietLogger } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { redisClientPorts, redisClientsGone } from '../helpers/redis-clients';
import { waitFor } from '../helpers/wait';
import { killCli, spawnCli, type CliProcess } from '../e2e/cli';
import { countDelivery, reportRow, RssSampler } from './matrix';

const DOCS = 100;
const CHANGES_PER_DOC = 10;
const KILL_AFTER = 100; // events received

interface Seen {
  id: string;
  key: string;
  op: string;
  rev: string;
}

const generation = (rev: string): number => Number(rev.slice(0, rev.indexOf('-')));

let couch: TestCouchServer;
let redisUrl: string;
let redis: Redis;
let dir: string;
const processes: CliProcess[] = [];

beforeAll(async () => {
  redisUrl = await requireService('redis');
  redis = new Redis(redisUrl);
  couch = await startTestCouchServer();
  dir = mkdtempSync(path.join(tmpdir(), 'evpub-kill-'));
});
afterAll(async () => {
  await Promise.all(processes.map((p) => killCli(p)));
  await couch?.close();
  redis?.disconnect();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Writes 10 changes to each of 100 documents, round by round, 20 documents at a time. */
async function writeChanges(finalRevs: Map<string, string>): Promise<void> {
  const ids = Array.from({ length: DOCS }, (_, i) => `agent-${String(i).padStart(3, '0')}`);
  for (let round = 0; round < CHANGES_PER_DOC; round++) {
    for (let i = 0; i < ids.length; i += 20) {
      await Promise.all(
        ids.slice(i, i + 20).map(async (id, j) => {
          const rev = finalRevs.get(id);
          const deleteNow = round === CHANGES_PER_DOC - 1 && (i + j) % 10 === 0;
          const next = deleteNow
            ? await couch.remove('accounts', id, rev!)
            : await couch.put('accounts', {
                _id: id,
                ...(rev ? { _rev: rev } : {}),
                round,
                region: 'Bangalore',
              });
          finalRevs.set(id, next);
        }),
      );
    }
  }
}

describe('fault matrix: kill -9 of the publisher (couchdb)', () => {
  it('after a restart every document reaches its final revision, in order, nothing lost', async () => {
    await couch.createDb('accounts');
    const topic = `${uniqueName('kill')}/accounts`;
    const checkpoints = path.join(dir, 'checkpoints');
    const config = path.join(dir, 'evpub.config.json');
    writeFileSync(
      config,
      JSON.stringify({
        brokers: { default: { url: redisUrl, options: { redis: { mode: 'streams' } } } },
        checkpoints: { store: 'file', path: checkpoints },
        datasources: { couch: { connector: 'couchdb', url: couch.url } },
        models: { accounts: { dataSource: 'couch', topic, from: 'beginning' } },
      }),
    );
    const samplers: RssSampler[] = [];
    const start = (): CliProcess => {
      const p = spawnCli(['start', '--config', config], { cwd: dir, env: { EVPUB_LOG_LEVEL: 'info' } });
      processes.push(p);
      samplers.push(new RssSampler(p.pid));
      return p;
    };
    const began = Date.now();

    // The test's consumer: a durable group on the stream, from its first entry.
    const consumer = createClient(redisUrl, { logger: quietLogger(), redis: { mode: 'streams' } });
    const seen: Seen[] = [];
    consumer.on('message', (_t, payload) => {
      const ce = JSON.parse(payload.toString()) as {
        id: string;
        subject: string;
        data: { op: string; source: { rev: string } };
      };
      seen.push({ id: ce.id, key: ce.subject, op: ce.data.op, rev: ce.data.source.rev });
    });
    try {
      await consumer.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });

      const first = start();
      await first.waitForOutput('evpub started');
      const finalRevs = new Map<string, string>();
      let writing = true;
      const writer = writeChanges(finalRevs).finally(() => (writing = false));
      writer.catch(() => undefined);

      await waitFor(() => seen.length >= KILL_AFTER, `${KILL_AFTER} events before the kill`);
      const seenAtKill = new Set(seen.map((s) => `${s.key} ${s.rev}`));
      const redisPorts = redisClientPorts(first.pid);
      first.child.kill('SIGKILL');
      expect(await first.exited).toBe('SIGKILL');
      // What the dead process had sent is in the stream before "run 1" is counted.
      await redisClientsGone(redis, redisPorts);
      const writingAtKill = writing;
      const run1 = await redis.xlen(topic);
      const checkpointFile = path.join(checkpoints, `${encodeURIComponent('couch/accounts')}.json`);
      expect(existsSync(checkpointFile)).toBe(true);
      const resumeFrom = (JSON.parse(readFileSync(checkpointFile, 'utf8')) as { position: string }).position;

      const second = start();
      await second.waitForOutput('evpub started');
      await writer;
      // "Some but not all": run 1 was killed before every final revision was out.
      const finalAll = [...finalRevs].map(([id, rev]) => `${id} ${rev}`);
      expect(finalAll.every((f) => seenAtKill.has(f))).toBe(false);

      const isFinal = (): boolean => {
        const last = new Map<string, string>();
        for (const s of seen) last.set(s.key, s.rev);
        return [...finalRevs].every(([id, rev]) => last.get(id) === rev);
      };
      await waitFor(isFinal, 'every document at its final revision', 30_000);
      // A graceful stop drains; then the consumer reads what is left of the stream.
      second.child.kill('SIGTERM');
      expect(await second.exited).toBe(0);
      const total = await redis.xlen(topic);
      await waitFor(() => seen.length === total, `all ${total} stream entries consumed`);

      expect(isFinal()).toBe(true);
      for (const [id, rev] of finalRevs) {
        const mine = seen.filter((s) => s.key === id);
        expect(mine.at(-1)!.rev, id).toBe(rev);
        const gens = mine.map((s) => generation(s.rev));
        expect(gens, `${id}: revisions never go back`).toEqual([...gens].sort((a, b) => a - b));
        const run1Gens = seen
          .slice(0, run1)
          .filter((s) => s.key === id)
          .map((s) => generation(s.rev));
        const run2Gens = seen
          .slice(run1)
          .filter((s) => s.key === id)
          .map((s) => generation(s.rev));
        for (const run of [run1Gens, run2Gens]) {
          run
            .slice(1)
            .forEach((g, i) => expect(g, `${id}: increasing within a run`).toBeGreaterThan(run[i]!));
        }
      }
      // Every tenth document ends with its delete, the others with an update.
      for (let i = 0; i < DOCS; i++) {
        const id = `agent-${String(i).padStart(3, '0')}`;
        expect(seen.filter((s) => s.key === id).at(-1)!.op, id).toBe(i % 10 === 0 ? 'delete' : 'update');
      }
      // The same revision always carries the same id (what consumers de-duplicate on).
      const idOf = new Map<string, string>();
      for (const s of seen) {
        const k = `${s.key} ${s.rev}`;
        expect(idOf.get(k) ?? s.id).toBe(s.id);
        idOf.set(k, s.id);
      }
      const duplicates = seen.length - idOf.size;
      const row = reportRow({
        fault: 'kill -9 of the publisher, restart',
        source: 'couchdb',
        broker: 'redis streams',
        ...countDelivery(
          [...finalRevs].map(([id, rev]) => `${id} ${rev}`),
          seen.map((s) => `${s.key} ${s.rev}`),
        ),
        duplicates,
        maxRssMb: Math.max(...samplers.map((r) => r.stop())),
        seconds: (Date.now() - began) / 1000,
        note: '1,000 writes to 100 documents; sent = final revisions',
      });
      expect(row.lost).toBe(0);
      console.log(
        `kill -9: 1000 writes -> ${seen.length} events (${run1} before the kill, ${total - run1} after; ` +
          `${duplicates} duplicates); writes still running at the kill: ${writingAtKill}; ` +
          `restart resumed after seq ${resumeFrom}`,
      );
      expect(Number(resumeFrom)).toBeGreaterThan(0);
    } finally {
      await consumer.end();
      await redis.del(topic);
    }
  });
});
