/**
 * One fault-matrix case for a broker fault (a restart, a connection cut), run the same way for
 * every broker: an evpub app in this process publishes the changes of a memory store (the
 * built-in `memory` connector) through the fault, and the test's subscriber, on a path that can
 * see everything (a durable subscription or persistent session that survives the fault), counts
 * what arrives.
 *
 *   1. Round 0 (a create for each of `keys` keys) is published and its checkpoint saved.
 *   2. Rounds 1..half (an update of every key each) are written at once; once some of them
 *      arrived, the fault goes down (`down()`), and the other rounds are written while the
 *      broker is unreachable.
 *   3. While it is down: the feed retries and pauses its source, which never reads more than
 *      one window (`maxInFlight`) past the committed checkpoint, and the checkpoint does not move
 *      past what the broker confirmed.
 *   4. `up()`; then every change must arrive at least once, the checkpoint reach the store's
 *      head, and each key's versions arrive in increasing order once earlier copies of a
 *      replayed event are dropped (the replay re-publishes the failed event and everything
 *      after it, in order).
 *
 * Returns the row (already reported); the caller asserts on it or adds its own checks.
 */
import { expect } from 'vitest';
import { evpub } from '../../src/app/app';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import { memoryStore } from '../../src/connectors/memory';
import type { SubscribeOptions } from '../../src/pubsub/adapter';
import { createClient } from '../../src/pubsub/registry';
import { quietLogger, statusLog } from '../helpers/publisher';
import { uniqueName } from '../helpers/services';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy';
import { waitFor } from '../helpers/wait';
import { countDelivery, reportRow, type FaultRow } from './matrix';

export interface BrokerFaultCase {
  /** The row's fault, e.g. `broker restarted`. */
  fault: string;
  /** The row's broker, e.g. `nats jetstream`. */
  broker: string;
  note?: string;
  /** The URL the publisher uses (the one that goes down). */
  publishUrl: string;
  /** The URL the test's subscriber uses. */
  subscribeUrl: string;
  /** Client options of both the publisher and the subscriber (`{ redis: { mode: 'streams' } }`). */
  options?: Record<string, unknown>;
  /** The subscriber's own client options (a clientId and `mqtt: { clean: false }`). */
  subscriberOptions?: Record<string, unknown>;
  /** How the subscriber subscribes (a durable name). */
  subscribe: SubscribeOptions;
  /** A topic prefix the broker accepts (default `evpub/test`). */
  topicRoot?: string;
  /** Makes the broker unreachable for the publisher; resolves once it is. */
  down(): Promise<void>;
  /** Makes it reachable again. */
  up(): Promise<void>;
  /** Failed retries of the feed to wait for before `up()` (default 2): how long the outage is. */
  retriesWhileDown?: number;
  /** Keys, rounds of changes and the publisher window (defaults 100, 20, 100). */
  keys?: number;
  rounds?: number;
  maxInFlight?: number;
  /** Removes what the case left on a shared broker (its stream, queue), after the case. */
  cleanup?(topic: string): Promise<void>;
  /** How long everything may take to arrive after `up()` (default 30 s). */
  settleMs?: number;
}

interface Arrival {
  id: string;
  key: string;
  n: number;
}

export async function runBrokerFault(c: BrokerFaultCase): Promise<FaultRow> {
  const began = Date.now();
  const keyCount = c.keys ?? 100;
  const rounds = c.rounds ?? 20;
  const maxInFlight = c.maxInFlight ?? 100;
  const reconnect = { initialDelay: 50, maxDelay: 300 };
  const topic = `${c.topicRoot ?? 'evpub/test'}/${uniqueName('fault')}/accounts`;
  const cleanups: (() => Promise<unknown>)[] = [];
  if (c.cleanup) cleanups.push(() => c.cleanup!(topic));
  try {
    const sub = createClient(c.subscribeUrl, {
      logger: quietLogger(),
      reconnect,
      ...c.options,
      ...c.subscriberOptions,
    });
    cleanups.push(() => sub.end());
    const got: Arrival[] = [];
    sub.on('message', (_topic, payload) => {
      const ce = JSON.parse(payload.toString()) as {
        id: string;
        data: { key: string; after: { n: number } };
      };
      got.push({ id: ce.id, key: ce.data.key, n: ce.data.after.n });
    });
    await sub.subscribe(topic, c.subscribe);

    const storeName = uniqueName('s');
    const store = memoryStore(storeName);
    const app = evpub({
      logger: quietLogger(),
      brokers: {
        default: { url: c.publishUrl, options: { ...c.options, publishTimeout: 1000, reconnect } },
      },
      checkpoints: new MemoryCheckpointStore(),
      publisher: { maxInFlight },
      retry: { initialDelay: 50, maxDelay: 300 },
    });
    cleanups.push(() => app.stop());
    const log = statusLog();
    app.on('status', log.listener);
    const ds = app.dataSource('db', { connector: 'memory', store: storeName });
    app.model('accounts', { dataSource: ds, topic });
    await app.start();
    const feed = () => app.status().feeds['db/accounts']!;
    const pushed = () => Number(ds.connector!.health().positions?.accounts ?? 0);

    const keys = Array.from({ length: keyCount }, (_, i) => `k${String(i).padStart(4, '0')}`);
    const sent: string[] = [];
    const write = (n: number): void => {
      for (const k of keys) {
        store.write('db', 'accounts', n === 0 ? 'create' : 'update', k, { n });
        sent.push(`${k}@${n}`);
      }
    };
    write(0);
    await waitFor(() => feed().saved === String(store.head), 'the first checkpoint');

    // Mid-stream: half the rounds are being published when the broker goes away.
    const half = Math.floor(rounds / 2);
    for (let n = 1; n <= half; n++) write(n);
    await waitFor(() => got.length > keyCount, 'some updates through the broker');
    await c.down();
    const downAt = Date.now();
    for (let n = half + 1; n <= rounds; n++) write(n);

    await waitFor(() => log.events.some((e) => e.type === 'retrying'), 'a retry', 30_000);
    await waitFor(() => log.events.some((e) => e.type === 'paused'), 'the source to pause');
    // While nothing is confirmed the connector reads at most one window past the checkpoint.
    const committedWhileDown = Number(feed().committed);
    expect(pushed() - committedWhileDown).toBeLessThanOrEqual(maxInFlight);
    expect(feed().inFlight).toBeLessThanOrEqual(maxInFlight);
    const retries = c.retriesWhileDown ?? 2;
    await waitFor(
      () => log.events.filter((e) => e.type === 'retrying').length >= retries,
      `${retries} retries`,
      30_000 + retries * 2_000,
    );
    expect(pushed() - committedWhileDown).toBeLessThanOrEqual(maxInFlight);
    expect(Number(feed().committed)).toBe(committedWhileDown);

    await c.up();
    const downSeconds = (Date.now() - downAt) / 1000;
    const settle = c.settleMs ?? 30_000;
    await waitFor(() => feed().saved === String(store.head), 'every change committed', settle);
    const received = (): string[] => got.map((a) => `${a.key}@${a.n}`);
    // A change that never comes shows as `lost` in the row and fails below, not as a time-out.
    await waitFor(() => countDelivery(sent, received()).lost === 0, 'every change', settle).catch(
      () => undefined,
    );
    await app.stop();

    const row = reportRow({
      fault: c.fault,
      source: 'memory',
      broker: c.broker,
      ...countDelivery(sent, received()),
      seconds: (Date.now() - began) / 1000,
      note: `${c.note ? `${c.note}; ` : ''}down ${downSeconds.toFixed(1)} s`,
    });
    expect(row.lost).toBe(0);
    // In order per key: dropping earlier copies of a replayed event (keeping each one's last),
    // each key's versions arrive in increasing order.
    const lastIndex = new Map<string, number>();
    got.forEach((a, i) => lastIndex.set(a.id, i));
    expect(lastIndex.size).toBe(store.head);
    const perKey = new Map<string, number[]>();
    got.forEach((a, i) => {
      if (lastIndex.get(a.id) === i) perKey.set(a.key, [...(perKey.get(a.key) ?? []), a.n]);
    });
    const versions = Array.from({ length: rounds + 1 }, (_, n) => n);
    for (const k of keys) expect(perKey.get(k), k).toEqual(versions);
    expect(log.events).toContainEqual({ type: 'resumed', feed: 'db/accounts' });
    return row;
  } finally {
    for (const f of cleanups.reverse()) await f().catch(() => undefined);
  }
}

/** A TCP proxy in front of the broker at `url`; `url` is the same URL through the proxy. */
export async function proxied(url: string): Promise<{ proxy: TcpProxy; url: string }> {
  const u = new URL(url);
  const proxy = await startTcpProxy({ host: u.hostname, port: Number(u.port) });
  u.port = String(proxy.port);
  return { proxy, url: u.toString().replace(/\/$/, '') };
}
