/**
 * Poison events on MQTT 5: a private Mosquitto whose ACL denies one topic answers its publish
 * with PUBACK reason 0x87 (Not authorized). The event is dead-lettered and the feed goes on;
 * a broker that refuses every event fails the feed after `publisher.deadLetterLimit` dead
 * letters instead of emptying the source into the dead-letter topic.
 *
 * MQTT 3.1.1 has no refusal in PUBACK: Mosquitto acknowledges a denied publish and drops it,
 * so nothing can be detected there (the README says so); it is not a case here.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors';
import { evpub } from '../../src/index';
import type { PublisherStatus } from '../../src/pipeline/status';
import { startMosquitto, type PrivateMosquitto } from '../helpers/mosquitto';
import { PgFixture, sql } from '../helpers/postgres';
import { quietLogger, subscriber } from '../helpers/publisher';
import { waitFor } from '../helpers/wait';
import { poisonCase, poisonRoot } from './poison.suite';

const root = poisonRoot();
const deniedRoot = poisonRoot();
let broker: PrivateMosquitto;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'evpub-acl-'));
  const acl = path.join(dir, 'acl');
  // Anonymous clients (the lines before any `user`): everything but one topic, and nothing to
  // publish under the second root (a connection not authorized for any of its events).
  writeFileSync(
    acl,
    ['topic readwrite #', `topic deny ${root}/orders/vip`, `topic deny ${deniedRoot}/orders/#`].join('\n') +
      '\n',
  );
  broker = await startMosquitto({ extraConfig: [`acl_file ${acl}`] });
});
afterAll(async () => {
  await broker?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('poison events on MQTT 5', () => {
  it('a publish the ACL denies (PUBACK 0x87) is dead-lettered; the rows after it all arrive', async () => {
    await poisonCase(root, { label: 'mqtt 5 (ACL)', url: broker.url, code: ErrorCode.NOT_AUTHORIZED });
  });

  it('an event over the max_packet_size the broker advertises: dead-lettered before sending; the rows after it arrive', async () => {
    const small = await startMosquitto({ extraConfig: ['max_packet_size 10000'] });
    try {
      await poisonCase(poisonRoot(), {
        label: 'mqtt 5 (max_packet_size)',
        url: small.url,
        poisonBytes: 20_000,
        code: ErrorCode.PAYLOAD_TOO_LARGE,
      });
    } finally {
      await small.close();
    }
  });

  it('every event refused: the feed fails after deadLetterLimit dead letters; after the fix a restart publishes the rest', async () => {
    const fixture = new PgFixture();
    const table = await fixture.table('id text PRIMARY KEY, n int');
    const dead = await subscriber(broker.url, `${deniedRoot}/dead-letter`);
    const fixed = await subscriber(broker.url, `${deniedRoot}/fixed/+`);
    const checkpoints = path.join(dir, `checkpoints-${deniedRoot}`);
    const publisherApp = (topic: string) => {
      const statuses: PublisherStatus[] = [];
      const app = evpub({
        logger: quietLogger(),
        brokers: { default: broker.url },
        checkpoints: { store: 'file', path: checkpoints },
        publisher: { deadLetter: { topic: `${deniedRoot}/dead-letter` }, deadLetterLimit: 5, maxInFlight: 1 },
      });
      app.on('status', (s) => statuses.push(s));
      app.dataSource('pg', {
        connector: 'postgres',
        url: fixture.url,
        slot: fixture.slot,
        publication: fixture.publication,
      });
      app.model({ name: 'orders' }, { dataSource: 'pg', topic, from: 'beginning', settings: { table } });
      return { app, statuses };
    };
    const first = publisherApp(`${deniedRoot}/orders/{key}`);
    let second: ReturnType<typeof publisherApp> | undefined;
    try {
      await first.app.start();
      for (let i = 1; i <= 20; i++) await sql(`INSERT INTO ${table} VALUES ($1, $2)`, [`k${i}`, i]);
      await waitFor(
        () => first.statuses.some((s) => s.type === 'feed-failed'),
        'the feed to fail once deadLetterLimit dead letters went out',
      );
      const failed = first.statuses.find((s) => s.type === 'feed-failed');
      expect(failed).toMatchObject({ feed: 'pg/orders', error: { code: ErrorCode.NOT_AUTHORIZED } });
      expect(failed?.type === 'feed-failed' && failed.error.message).toMatch(/5 events in a row/);
      // Exactly the limit went to the dead-letter topic: k1..k5, in order, nothing more.
      await waitFor(() => dead.got.length >= 5, 'five dead letters');
      await first.app.stop();
      const keys = dead.got.map((m) => (m.json.event as { key: string }).key);
      expect(keys).toEqual(['k1', 'k2', 'k3', 'k4', 'k5']);

      // The cause fixed (here: a topic the broker allows), a restart resumes after the fifth
      // dead letter: k6..k20 arrive, none of k1..k5 again, nothing was committed past them.
      second = publisherApp(`${deniedRoot}/fixed/{key}`);
      await second.app.start();
      await waitFor(() => fixed.got.length >= 15, `k6..k20 after the restart (have ${fixed.got.length})`);
      const after = fixed.got.map((m) => m.topic.slice(`${deniedRoot}/fixed/`.length));
      expect(after).toEqual(Array.from({ length: 15 }, (_, i) => `k${i + 6}`));
    } finally {
      await first.app.stop().catch(() => undefined);
      await second?.app.stop().catch(() => undefined);
      await dead.client.end();
      await fixed.client.end();
      await fixture.drop();
    }
  });
});
