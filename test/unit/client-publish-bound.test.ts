/**
 * The Client's publish bound (client.ts `bounded`): publishes that share one adapter promise
 * (as NATS core's per-tick confirmation does) share one pending entry, and every one of them
 * still settles with the broker's answer, or with PUBLISH_TIMEOUT once publishTimeout passed.
 * The adapter here is a stand-in whose confirmations the test controls; no broker involved.
 */
import { describe, expect, it } from 'vitest';
import { ErrorCode, EvpubError, isEvpubError } from '../../src/errors';
import type { AdapterEvents, BrokerAdapter, PublishOptions } from '../../src/pubsub/adapter';
import { Client } from '../../src/pubsub/client';

interface Held {
  promise: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
}

function held(): Held {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Confirms the publishes of one tick with one promise, like NATS core; the test settles it. */
class TickAdapter implements BrokerAdapter {
  static readonly adapterName = 'tick';
  static readonly defaultPort = 1;
  static last: TickAdapter | undefined;
  readonly name = 'tick';
  readonly features = {
    wildcards: false,
    headers: false,
    confirms: true,
    durable: false,
    deduplicates: false,
    orderingKey: false,
    maxPayload: 1024,
  };
  readonly ticks: Held[] = [];
  readonly seen: string[] = [];
  /** When set, every publish shares the first promise (a confirmation that never comes back in time). */
  sticky = false;
  private open: Held | undefined;

  constructor(
    _options: unknown,
    private readonly events: AdapterEvents,
  ) {
    TickAdapter.last = this;
  }
  connect(): Promise<void> {
    return Promise.resolve();
  }
  publish(topic: string, _payload: Buffer, _options: PublishOptions): Promise<void> {
    this.seen.push(topic);
    if (!this.open) {
      const tick = held();
      this.open = tick;
      this.ticks.push(tick);
      queueMicrotask(() => {
        if (!this.sticky) this.open = undefined;
      });
    }
    return this.open.promise;
  }
  subscribe(): Promise<void> {
    return Promise.resolve();
  }
  unsubscribe(): Promise<void> {
    return Promise.resolve();
  }
  end(): Promise<void> {
    this.events.close();
    return Promise.resolve();
  }
}

async function connected(publishTimeout: number): Promise<{ client: Client; adapter: TickAdapter }> {
  const client = new Client({ host: 'localhost', publishTimeout }, TickAdapter);
  await client.connect();
  return { client, adapter: TickAdapter.last! };
}

describe('Client publish bound', () => {
  it('resolves every publish of a tick when the shared confirmation arrives', async () => {
    const { client, adapter } = await connected(30_000);
    const publishes = [0, 1, 2, 3].map((i) => client.publish(i < 2 ? 'a' : 'b', 'x'));
    expect(adapter.ticks).toHaveLength(1);
    adapter.ticks[0]!.resolve();
    await expect(Promise.all(publishes)).resolves.toEqual([undefined, undefined, undefined, undefined]);
    await client.end();
  });

  it('rejects every publish of a tick with the broker error', async () => {
    const { client, adapter } = await connected(30_000);
    const publishes = [client.publish('a', 'x'), client.publish('a', 'y')];
    adapter.ticks[0]!.reject(new EvpubError(ErrorCode.PUBLISH_FAILED, 'refused'));
    for (const p of publishes) {
      const err: unknown = await p.catch((e: unknown) => e);
      expect(isEvpubError(err, ErrorCode.PUBLISH_FAILED)).toBe(true);
    }
    await client.end();
  });

  it('rejects unconfirmed publishes with PUBLISH_TIMEOUT naming the topic, and later ones start afresh', async () => {
    const { client, adapter } = await connected(100);
    adapter.sticky = true;
    const early = [client.publish('a/1', 'x'), client.publish('a/1', 'y'), client.publish('a/2', 'z')];
    for (const [i, p] of early.entries()) {
      const err: unknown = await p.catch((e: unknown) => e);
      expect(isEvpubError(err, ErrorCode.PUBLISH_TIMEOUT)).toBe(true);
      expect((err as Error).message).toContain(i < 2 ? '"a/1"' : '"a/2"');
    }
    // The same adapter promise, still unsettled: a new publish must not inherit the timeout,
    // and the confirmation, late for the others, settles it.
    const late = client.publish('a/1', 'w');
    expect(adapter.ticks).toHaveLength(1);
    adapter.ticks[0]!.resolve();
    await expect(late).resolves.toBeUndefined();
    await client.end();
  });

  it('still rejects an invalid topic each time, cached or not', async () => {
    const { client } = await connected(30_000);
    for (let i = 0; i < 2; i++) {
      const err: unknown = await client.publish('a/+', 'x').catch((e: unknown) => e);
      expect(isEvpubError(err, ErrorCode.INVALID_TOPIC)).toBe(true);
    }
    await client.end();
  });
});
