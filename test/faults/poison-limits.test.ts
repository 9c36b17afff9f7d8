/**
 * What the publisher does around a refused event, beyond the plain poison case:
 * - `publisher.maxAttempts`: an event the broker keeps refusing transiently (RabbitMQ nacks
 *   every publish to a full `reject-publish` queue) goes to the dead-letter topic after N
 *   attempts instead of stalling the feed forever;
 * - `publisher.deadLetter.broker`: the dead letters of a broker that refuses go to another one;
 * - a dead letter that is refused too fails the feed (nothing is dropped), and `evpub start`
 *   exits 3 once every feed failed.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import amqp from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors';
import { evpub } from '../../src/index';
import { spawnCli } from '../e2e/cli';
import { startMosquitto, type PrivateMosquitto } from '../helpers/mosquitto';
import { PgFixture, sql } from '../helpers/postgres';
import { quietLogger, subscriber } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { countDelivery, reportRow } from './matrix';
import { poisonCase, poisonRoot } from './poison.suite';

const toOther = poisonRoot();
const deadRefused = poisonRoot();
let broker: PrivateMosquitto;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'evpub-poison-'));
  const acl = path.join(dir, 'acl');
  writeFileSync(
    acl,
    [
      'topic readwrite #',
      `topic deny ${toOther}/orders/vip`,
      `topic deny ${deadRefused}/orders/vip`,
      `topic deny ${deadRefused}/dead-letter`,
    ].join('\n') + '\n',
  );
  broker = await startMosquitto({ extraConfig: [`acl_file ${acl}`] });
});
afterAll(async () => {
  await broker?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('around a refused event', () => {
  it('maxAttempts: an event RabbitMQ keeps nacking is dead-lettered after 3 attempts; the rest arrive', async () => {
    const started = Date.now();
    const amqpUrl = await requireService('rabbitmq');
    const root = poisonRoot();
    const exchange = uniqueName('evpub_poison');
    // A queue that takes nothing (max-length 0, reject-publish) bound to the vip key only:
    // RabbitMQ answers every publish routed to it with basic.nack, a transient refusal.
    const conn = await amqp.connect(amqpUrl);
    const ch = await conn.createChannel();
    await ch.assertExchange(exchange, 'topic', { durable: true });
    const full = uniqueName('full');
    await ch.assertQueue(full, { arguments: { 'x-max-length': 0, 'x-overflow': 'reject-publish' } });
    await ch.bindQueue(full, exchange, `${root}.orders.vip`);
    const options = { amqp: { exchange } };
    const events = await subscriber(amqpUrl, `${root}/orders/+`, options);
    const dead = await subscriber(amqpUrl, `${root}/dead-letter`, options);
    const fixture = new PgFixture();
    const table = await fixture.table('id text PRIMARY KEY, n int');
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: { url: amqpUrl, options } },
      checkpoints: { store: 'memory' },
      publisher: { deadLetter: { topic: `${root}/dead-letter` }, maxAttempts: 3 },
    });
    app.dataSource('pg', {
      connector: 'postgres',
      url: fixture.url,
      slot: fixture.slot,
      publication: fixture.publication,
    });
    app.model({ name: 'orders' }, { dataSource: 'pg', topic: `${root}/orders/{key}`, settings: { table } });
    try {
      await app.start();
      const sent: string[] = [];
      for (let i = 1; i <= 20; i++) {
        if (i === 11) await sql(`INSERT INTO ${table} VALUES ('vip', 0)`);
        await sql(`INSERT INTO ${table} VALUES ($1, $2)`, [`k${i}`, i]);
        sent.push(`k${i}`);
      }
      await waitFor(() => dead.got.length >= 1, 'the nacked event on the dead-letter topic', 30_000);
      // RabbitMQ still routes a message to the queues that took it when another refused it, so
      // the subscriber sees the vip row (once per attempt): only the other rows are counted.
      const keys = (): string[] =>
        events.got.map((m) => m.topic.slice(`${root}/orders/`.length)).filter((k) => k !== 'vip');
      await waitFor(() => countDelivery(sent, keys()).lost === 0, 'every other row');
      expect(dead.got[0]!.json).toMatchObject({
        code: ErrorCode.PUBLISH_FAILED,
        attempts: 3,
        event: { key: 'vip' },
        topic: `${root}/orders/vip`,
      });
      expect(dead.got[0]!.json.reason).toMatch(/given up after 3 attempts/);
      // The last copy of each row is in source order (retries re-publish what followed the nacked one).
      const last = [...new Map(keys().map((k, i) => [k, i])).entries()].sort((a, b) => a[1] - b[1]);
      expect(last.map(([k]) => k)).toEqual(sent);
      reportRow({
        fault: 'poison event (the broker nacks one, publisher.maxAttempts 3)',
        source: 'postgres',
        broker: 'amqp (reject-publish queue)',
        ...countDelivery(sent, keys()),
        deadLettered: dead.got.length,
        seconds: (Date.now() - started) / 1000,
      });
    } finally {
      await app.stop().catch(() => undefined);
      await events.client.end();
      await dead.client.end();
      await ch.deleteQueue(full).catch(() => undefined);
      await ch.deleteExchange(exchange).catch(() => undefined);
      await conn.close();
      await fixture.drop();
    }
  });

  it('publisher.deadLetter.broker: the refused event is dead-lettered on another broker', async () => {
    const redisUrl = await requireService('redis');
    await poisonCase(toOther, {
      label: 'mqtt 5 (ACL)',
      url: broker.url,
      code: ErrorCode.NOT_AUTHORIZED,
      deadLetter: { label: 'redis', url: redisUrl },
    });
  });

  it('a refused dead letter fails the feed, and evpub start exits 3 once every feed failed', async () => {
    const fixture = new PgFixture();
    const table = await fixture.table('id text PRIMARY KEY, n int');
    const config = path.join(dir, `${deadRefused}.json`);
    writeFileSync(
      config,
      JSON.stringify({
        brokers: { default: { url: broker.url } },
        checkpoints: { store: 'file', path: path.join(dir, `${deadRefused}-checkpoints`) },
        publisher: { deadLetter: { topic: `${deadRefused}/dead-letter` } },
        datasources: {
          pg: {
            connector: 'postgres',
            url: fixture.url,
            slot: fixture.slot,
            publication: fixture.publication,
          },
        },
        models: { orders: { dataSource: 'pg', topic: `${deadRefused}/orders/{key}`, settings: { table } } },
      }),
    );
    const events = await subscriber(broker.url, `${deadRefused}/orders/+`);
    const cli = spawnCli(['start', '--config', config], { cwd: dir, env: { EVPUB_LOG_LEVEL: 'info' } });
    try {
      await cli.waitForOutput('evpub started', 30_000);
      await sql(`INSERT INTO ${table} VALUES ('k1', 1)`);
      await sql(`INSERT INTO ${table} VALUES ('vip', 0)`);
      await sql(`INSERT INTO ${table} VALUES ('k2', 2)`);
      expect(await cli.exited).toBe(3);
      const out = cli.stdout();
      expect(out).toContain('the dead letter could not be published');
      expect(out).toContain('every feed failed');
      // k1 went out; vip was refused and so was its dead letter: the feed stopped there. (k2,
      // issued while vip was in flight, may have been confirmed too: it is not committed, and a
      // restart publishes it again.)
      const topics = events.got.map((m) => m.topic);
      expect(topics).toContain(`${deadRefused}/orders/k1`);
      expect(topics).not.toContain(`${deadRefused}/orders/vip`);
    } finally {
      cli.child.kill('SIGKILL');
      await cli.exited;
      await events.client.end();
      await fixture.drop();
    }
  });
});
