/**
 * The poison event, on one broker: PostgreSQL → evpub → a broker set up to refuse one topic.
 * Fifty rows, then the row with key `vip` (whose topic the broker refuses), then fifty more.
 *
 * What a user relies on, asserted for each broker that can refuse one message:
 * - the hundred other rows all arrive on their topics: one refused event never stalls the feed;
 * - the refused one is on the dead-letter topic with evpub's code, the broker's own reason, the
 *   event's identity and the original event;
 * - the feed's checkpoint passes the refused row (it is done: dead-lettered, not retried).
 *
 * Each broker's file (poison-<broker>.test.ts) gives the refusing broker: a private server with
 * an ACL, a stream that takes every subject but one, ... (see `PoisonBroker`).
 */
import { expect } from 'vitest';
import { evpub, type App } from '../../src/index';
import { PgFixture, sql } from '../helpers/postgres';
import { quietLogger, subscriber, type Received } from '../helpers/publisher';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { countDelivery, reportRow } from './matrix';

export interface PoisonBroker {
  /** The row's broker column (`mqtt 5`, `nats`, ...). */
  label: string;
  /** Broker URL and client options for evpub and the test's subscriber. */
  url: string;
  options?: Record<string, unknown>;
  /** The subscriber's URL and options, when they differ (an account that may read everything). */
  subscriberUrl?: string;
  subscriberOptions?: Record<string, unknown>;
  /** The code the refused event's dead letter must carry. */
  code: string;
  /** The broker has no wildcard subscriptions (Redis Streams): subscribe to each row's topic. */
  exactTopics?: boolean;
  /**
   * One topic for every row (`<root>/orders`, the key in the event's `subject`) rather than one
   * per key: for a broker whose poison is not its topic (Kafka: a subscription per topic is a
   * consumer group to join, seconds each).
   */
  oneTopic?: boolean;
  /** Bytes of the refused row's `note` (a large one for brokers refused by size). */
  poisonBytes?: number;
  /** Dead letters to another broker (`publisher.deadLetter.broker`), when given. */
  deadLetter?: { label: string; url: string; options?: Record<string, unknown> };
}

export interface PoisonRun {
  app: App;
  dead: Received[];
  events: Received[];
  fixture: PgFixture;
  table: string;
}

const ROWS_BEFORE = 50;
const ROWS_AFTER = 50;

/** A key for row i: `k001` ... (the refused one is `vip`). */
const key = (i: number): string => `k${String(i).padStart(3, '0')}`;

/**
 * Runs the case. `root` is the topic root the broker was set up for: evpub publishes to
 * `<root>/orders/<key>`, the broker refuses `<root>/orders/vip`, dead letters go to
 * `<root>/dead-letter`.
 */
export async function poisonCase(root: string, broker: PoisonBroker): Promise<void> {
  const started = Date.now();
  const fixture = new PgFixture();
  const table = await fixture.table('id text PRIMARY KEY, n int, note text');
  const subUrl = broker.subscriberUrl ?? broker.url;
  const subOptions = broker.subscriberOptions ?? broker.options ?? {};
  // The other rows' topics (the vip topic may not even be subscribable: a key of another type).
  const allKeys = Array.from({ length: ROWS_BEFORE + ROWS_AFTER }, (_, i) => key(i + 1));
  const events = await subscriber(
    subUrl,
    broker.oneTopic
      ? `${root}/orders`
      : broker.exactTopics
        ? allKeys.map((k) => `${root}/orders/${k}`)
        : `${root}/orders/+`,
    subOptions,
  );
  const topicOf = (k: string): string => (broker.oneTopic ? `${root}/orders` : `${root}/orders/${k}`);
  const dlq = broker.deadLetter;
  const dead = dlq
    ? await subscriber(dlq.url, `${root}/dead-letter`, dlq.options ?? {})
    : await subscriber(subUrl, `${root}/dead-letter`, subOptions);
  const app = evpub({
    logger: quietLogger(),
    brokers: {
      default: { url: broker.url, ...(broker.options ? { options: broker.options } : {}) },
      ...(dlq ? { dlq: { url: dlq.url, ...(dlq.options ? { options: dlq.options } : {}) } } : {}),
    },
    checkpoints: { store: 'memory' },
    publisher: {
      deadLetter: { topic: `${root}/dead-letter`, ...(dlq ? { broker: 'dlq' } : {}) },
      maxInFlight: 20,
    },
  });
  app.dataSource('pg', {
    connector: 'postgres',
    url: fixture.url,
    slot: fixture.slot,
    publication: fixture.publication,
    statusInterval: 200,
  });
  app.model(
    { name: 'orders' },
    { dataSource: 'pg', topic: topicOf('{key}'), from: 'now', settings: { table } },
  );
  try {
    await app.start();
    for (let i = 1; i <= ROWS_BEFORE; i++)
      await sql(`INSERT INTO ${table} VALUES ($1, $2, 'before')`, [key(i), i]);
    const note = 'refused by the broker'.padEnd(broker.poisonBytes ?? 0, '.');
    await sql(`INSERT INTO ${table} VALUES ('vip', 0, $1)`, [note]);
    for (let i = ROWS_BEFORE + 1; i <= ROWS_BEFORE + ROWS_AFTER; i++) {
      await sql(`INSERT INTO ${table} VALUES ($1, $2, 'after')`, [key(i), i]);
    }
    const total = ROWS_BEFORE + ROWS_AFTER;
    await waitFor(
      () => events.got.length >= total && dead.got.length >= 1,
      `${total} events and 1 dead letter (have ${events.got.length} and ${dead.got.length})`,
      30_000,
    );
    // Its checkpoint passed the refused row: the feed went on past it.
    await waitFor(() => {
      const feed = app.status().feeds['pg/orders'];
      return feed?.published === total && feed.deadLettered === 1 && feed.inFlight === 0;
    }, 'every event confirmed and the dead letter counted');

    const keys = events.got.map((m) =>
      broker.oneTopic ? String(m.json.subject) : m.topic.slice(`${root}/orders/`.length),
    );
    const sent = Array.from({ length: total }, (_, i) => key(i + 1));
    const counted = countDelivery(sent, keys);
    expect(keys).not.toContain('vip');
    expect(counted.lost).toBe(0);
    // In order: the feed never re-published the rows after the refused one out of turn. (A
    // subscriber reading several Redis streams, or a Kafka topic's partitions, sees order per
    // stream or key only: each row is its own key there, so only the set is compared.)
    const firsts = keys.filter((k, i) => keys.indexOf(k) === i);
    const perKeyOnly = broker.oneTopic === true || broker.exactTopics === true;
    expect(perKeyOnly ? firsts.sort() : firsts).toEqual(sent);

    const letter = dead.got[0]!.json as {
      code: string;
      reason: string;
      brokerReason?: string;
      topic: string;
      event: { key: string; model: string };
      original?: string;
    };
    expect(letter.code).toBe(broker.code);
    expect(letter.event).toMatchObject({ key: 'vip', model: 'orders' });
    expect(letter.topic).toBe(topicOf('vip'));
    if (!broker.poisonBytes) expect(letter.original).toContain('refused by the broker');
    expect(typeof letter.brokerReason === 'string' || letter.reason.length > 0).toBe(true);
    reportRow({
      fault: 'poison event (the broker refuses one topic)',
      source: 'postgres',
      broker: dlq ? `${broker.label}, dead letters on ${dlq.label}` : broker.label,
      ...counted,
      deadLettered: dead.got.length,
      seconds: (Date.now() - started) / 1000,
      note: letter.code,
    });
  } finally {
    await app.stop().catch(() => undefined);
    await events.client.end();
    await dead.client.end();
    await fixture.drop();
  }
}

/** A unique topic root for a poison case (letters and digits: valid on every broker). */
export const poisonRoot = (): string => uniqueName('poison').replace(/[^A-Za-z0-9]/g, '');
