/**
 * The Pipeline's `gate` (cluster mode: the unit's lease is valid) against the shared NATS: once
 * it says false, nothing more reaches the broker (new events and re-publishes alike), and what
 * was pushed stays uncommitted for the next owner to read again.
 *
 * Whether something might still come is decided with a marker: after the gated pushes, the same
 * client (one connection: NATS keeps its order) publishes a marker; once the subscriber has the
 * marker, anything the pipeline had sent before it would have arrived too.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import type { ChangeEvent, Position } from '../../src/events/change-event';
import { legacyEnvelope } from '../../src/events/envelopes';
import { CheckpointTracker } from '../../src/pipeline/checkpoint-tracker';
import { Pipeline } from '../../src/pipeline/pipeline';
import { compileTopic } from '../../src/pipeline/topics';
import { createClient } from '../../src/pubsub/registry';
import { quietLogger, subscriber } from '../helpers/publisher';
import { requireService, SERVICES, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

beforeAll(async () => {
  await requireService('nats');
});

function event(key: string, position: Position): ChangeEvent {
  return {
    id: uniqueName('e'),
    datasource: 'ds',
    model: 'orders',
    op: 'create',
    key,
    after: { id: key },
    position,
    sourceTime: new Date().toISOString(),
  };
}

describe('Pipeline gate, NATS', () => {
  it('once the gate is closed nothing more is published, and nothing more is committed', async () => {
    const root = uniqueName('gate');
    const sub = await subscriber(SERVICES.nats.url, `${root}/#`);
    cleanups.push(() => sub.client.end());
    const client = createClient(SERVICES.nats.url, { logger: quietLogger() });
    cleanups.push(() => client.end());
    const tracker = new CheckpointTracker({
      feedId: 'ds/orders',
      model: 'orders',
      store: new MemoryCheckpointStore(),
    });
    let open = true;
    let asked = 0;
    const pipeline = new Pipeline({
      datasource: 'ds',
      feeds: [
        {
          feedId: 'ds/orders',
          model: 'orders',
          client,
          envelope: legacyEnvelope,
          topic: compileTopic(`${root}/{model}/{key}`),
          maxEventBytes: 1_000_000,
          tracker,
        },
      ],
      maxInFlight: 100,
      deadLetterTopic: `${root}/dead-letter`,
      logger: quietLogger(),
      emit: () => undefined,
      gate: () => {
        asked++;
        return open;
      },
      headers: { 'evpub-instance': 'a', 'evpub-epoch': '7' },
    });
    cleanups.push(() => pipeline.close());

    for (let i = 0; i < 5; i++) pipeline.push(event(`open${i}`, String(i + 1)));
    await waitFor(() => sub.got.length === 5 && tracker.committed === '5', 'five published and committed');
    expect(sub.got.every((m) => m.headers?.['evpub-epoch'] === '7')).toBe(true);
    expect(asked).toBeGreaterThanOrEqual(5); // asked before every publish

    open = false;
    for (let i = 0; i < 5; i++) pipeline.push(event(`closed${i}`, String(i + 6)));
    await new Promise((r) => setImmediate(r));
    await client.publish(`${root}/marker`, 'marker');
    await waitFor(() => sub.got.some((m) => m.topic.endsWith('marker')), 'the marker');
    expect(sub.got.filter((m) => m.topic.includes('closed'))).toEqual([]);
    expect(tracker.committed).toBe('5');
    expect(pipeline.snapshot('orders')?.inFlight).toBeGreaterThan(0); // held, not dropped as done
  });
});
