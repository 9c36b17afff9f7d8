/**
 * Pipeline.hold / release (the operator's pause) against the in-process memory broker: a held
 * feed has no room (push false, drain waits, for every feed of the datasource), what is pushed
 * meanwhile is neither published nor committed, release publishes it in order, and a stop does
 * not wait for it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import type { ChangeEvent, Position } from '../../src/events/change-event';
import { legacyEnvelope } from '../../src/events/envelopes';
import { CheckpointTracker } from '../../src/pipeline/checkpoint-tracker';
import { Pipeline } from '../../src/pipeline/pipeline';
import type { PublisherStatus } from '../../src/pipeline/status';
import { compileTopic } from '../../src/pipeline/topics';
import { createClient } from '../../src/pubsub/registry';
import { quietLogger, subscriber } from '../helpers/publisher';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup() {
  const broker = `memory://${uniqueName('b')}`;
  const root = uniqueName('hold');
  const sub = await subscriber(broker, `${root}/#`);
  cleanups.push(() => sub.client.end());
  const client = createClient(broker, { logger: quietLogger() });
  cleanups.push(() => client.end());
  const commits: Record<string, Position[]> = { orders: [], customers: [] };
  const feed = (model: string) => {
    const tracker = new CheckpointTracker({
      feedId: `ds/${model}`,
      model,
      store: new MemoryCheckpointStore(),
      commit: async (_model, position) => void commits[model]!.push(position),
    });
    return {
      feedId: `ds/${model}`,
      model,
      client,
      envelope: legacyEnvelope,
      topic: compileTopic(`${root}/{model}/{key}`),
      maxEventBytes: 1_000_000,
      tracker,
    };
  };
  const statuses: PublisherStatus[] = [];
  const pipeline = new Pipeline({
    datasource: 'ds',
    feeds: [feed('orders'), feed('customers')],
    maxInFlight: 100,
    deadLetterTopic: `${root}/dead-letter`,
    logger: quietLogger(),
    emit: (s) => void statuses.push(s),
  });
  cleanups.push(() => pipeline.close());
  return { root, sub, pipeline, commits, statuses };
}

function event(model: string, key: string, position: Position): ChangeEvent {
  return {
    id: uniqueName('e'),
    datasource: 'ds',
    model,
    op: 'create',
    key,
    after: { id: key },
    position,
    sourceTime: new Date().toISOString(),
  };
}

describe('Pipeline.hold', () => {
  it('stops the datasource, holds what is pushed meanwhile, publishes it in order on release', async () => {
    const { root, sub, pipeline, commits, statuses } = await setup();
    expect(pipeline.push(event('orders', 'o1', '1'))).toBe(true);
    await waitFor(() => commits.orders!.at(-1) === '1', 'o1 committed');

    expect(pipeline.hold('orders')).toBe(true);
    expect(pipeline.hold('orders')).toBe(false); // idempotent
    expect(statuses.filter((s) => s.type === 'feed-paused')).toEqual([
      { type: 'feed-paused', feed: 'ds/orders', datasource: 'ds' },
    ]);
    let drained = false;
    void pipeline.drain().then(() => (drained = true));
    // The connector hands over what it had read: taken, not published.
    expect(pipeline.push(event('orders', 'o2', '2'))).toBe(false);
    expect(pipeline.push(event('customers', 'c1', '3'))).toBe(false); // the datasource waits
    await waitFor(() => sub.got.length === 2, 'c1 (its own feed is not held)');
    expect(sub.got.map((m) => m.topic)).toEqual([`${root}/orders/o1`, `${root}/customers/c1`]);
    expect(pipeline.snapshot('orders')).toMatchObject({ held: true, inFlight: 1, published: 1, received: 2 });
    expect(commits.orders).toEqual(['1']);
    expect(drained).toBe(false);
    expect(pipeline.heldModels()).toEqual(['orders']);
    // Held is not backpressure: no `paused` status for it.
    expect(statuses.some((s) => s.type === 'paused')).toBe(false);

    expect(pipeline.release('orders')).toBe(true);
    expect(pipeline.release('orders')).toBe(false);
    await waitFor(() => drained, 'drain() resolves on release');
    expect(pipeline.push(event('orders', 'o3', '4'))).toBe(true);
    await waitFor(() => sub.got.length === 4, 'o2 and o3');
    expect(sub.got.slice(2).map((m) => m.topic)).toEqual([`${root}/orders/o2`, `${root}/orders/o3`]);
    await waitFor(() => commits.orders!.at(-1) === '4', 'committed past the held event');
    expect(statuses.filter((s) => s.type === 'feed-resumed')).toHaveLength(1);
  });

  it('settles (for stop) without the held events, which stay uncommitted', async () => {
    const { pipeline, commits, sub } = await setup();
    pipeline.push(event('orders', 'o1', '1'));
    pipeline.hold('orders');
    pipeline.push(event('orders', 'o2', '2'));
    pipeline.stopAccepting();
    expect(await pipeline.settle(5000)).toBe(true);
    await waitFor(() => commits.orders!.at(-1) === '1', 'o1 committed');
    pipeline.close();
    expect(sub.got).toHaveLength(1);
    expect(commits.orders).toEqual(['1']);
  });
});
