/**
 * Pipeline.deadLetter against the in-process memory broker: raw input a connector could not
 * turn into an event reaches the dead-letter topic in order with the feed's events, counts in
 * the window, and its position is committed like an event's.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import { ErrorCode } from '../../src/errors';
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

async function setup(
  options: {
    maxInFlight?: number;
    maxEventBytes?: number;
    maxInFlightBytes?: number;
    deadLetterLimit?: number;
  } = {},
) {
  const broker = `memory://${uniqueName('b')}`;
  const root = uniqueName('dl');
  const sub = await subscriber(broker, `${root}/#`);
  cleanups.push(() => sub.client.end());
  const client = createClient(broker, { logger: quietLogger() });
  cleanups.push(() => client.end());
  const commits: Position[] = [];
  const tracker = new CheckpointTracker({
    feedId: 'ds/orders',
    model: 'orders',
    store: new MemoryCheckpointStore(),
    commit: async (_model, position) => void commits.push(position),
  });
  const statuses: PublisherStatus[] = [];
  const pipeline = new Pipeline({
    datasource: 'ds',
    feeds: [
      {
        feedId: 'ds/orders',
        model: 'orders',
        client,
        envelope: legacyEnvelope,
        topic: compileTopic(`${root}/{model}/{key}`),
        maxEventBytes: options.maxEventBytes ?? 1_000_000,
        tracker,
      },
    ],
    maxInFlight: options.maxInFlight ?? 100,
    maxInFlightBytes: options.maxInFlightBytes,
    deadLetterLimit: options.deadLetterLimit,
    deadLetterTopic: `${root}/dead-letter`,
    logger: quietLogger(),
    emit: (s) => void statuses.push(s),
  });
  cleanups.push(() => pipeline.close());
  return { root, sub, pipeline, tracker, commits, statuses };
}

function event(key: string, position: Position, after: Record<string, unknown> = { id: key }): ChangeEvent {
  return {
    id: uniqueName('e'),
    datasource: 'ds',
    model: 'orders',
    op: 'create',
    key,
    after,
    position,
    sourceTime: new Date().toISOString(),
  };
}

describe('Pipeline.deadLetter', () => {
  it('publishes raw input to the dead-letter topic in order, and commits its position', async () => {
    const { root, sub, pipeline, commits, statuses } = await setup();
    expect(pipeline.push(event('k1', '1'))).toBe(true);
    const ok = pipeline.deadLetter('orders', {
      payload: Buffer.from([0xff, 0xfe, 0x00]),
      reason: 'malformed message: not JSON',
      position: '2',
      headers: { 'x-source': 'test' },
      source: { topic: 'in/orders' },
    });
    expect(ok).toBe(true);
    expect(pipeline.deadLetter('orders', { payload: '{"no key":1}', reason: 'no key', position: '3' })).toBe(
      true,
    );
    expect(pipeline.push(event('k2', '4'))).toBe(true);
    await waitFor(() => sub.got.length === 4, 'two events and two dead letters');
    expect(sub.got.map((m) => m.topic)).toEqual([
      `${root}/orders/k1`,
      `${root}/dead-letter`,
      `${root}/dead-letter`,
      `${root}/orders/k2`,
    ]);
    expect(sub.got[1]!.json).toMatchObject({
      reason: 'malformed message: not JSON',
      code: ErrorCode.MALFORMED_INPUT,
      input: { datasource: 'ds', model: 'orders', position: '2', source: { topic: 'in/orders' } },
      originalBytes: 3,
      original: Buffer.from([0xff, 0xfe, 0x00]).toString('base64'),
      originalEncoding: 'base64',
      headers: { 'x-source': 'test' },
    });
    expect(typeof sub.got[1]!.json.time).toBe('string');
    expect(sub.got[2]!.json).toMatchObject({ reason: 'no key', original: '{"no key":1}' });
    expect(sub.got[2]!.json).not.toHaveProperty('originalEncoding');
    await waitFor(() => commits.at(-1) === '4', 'everything committed, the dead letters included');
    expect(pipeline.snapshot('orders')).toMatchObject({
      received: 4,
      published: 2,
      deadLettered: 2,
      inFlight: 0,
    });
    expect(statuses.filter((s) => s.type === 'dead-lettered')).toEqual([
      expect.objectContaining({ feed: 'ds/orders', position: '2', topic: `${root}/dead-letter` }),
      expect.objectContaining({
        feed: 'ds/orders',
        position: '3',
        error: { code: ErrorCode.MALFORMED_INPUT, message: 'no key' },
      }),
    ]);
  });

  it('leaves the original out when the dead letter would pass maxEventBytes', async () => {
    const { sub, pipeline } = await setup({ maxEventBytes: 300 });
    pipeline.deadLetter('orders', { payload: 'x'.repeat(1000), reason: 'too odd', position: null });
    await waitFor(() => sub.got.length === 1, 'the dead letter');
    expect(sub.got[0]!.json).toMatchObject({ reason: 'too odd', originalBytes: 1000 });
    expect(sub.got[0]!.json).not.toHaveProperty('original');
  });

  it('counts in the window: false when full, drain() resolves once it is confirmed', async () => {
    const { sub, pipeline } = await setup({ maxInFlight: 1 });
    expect(pipeline.deadLetter('orders', { payload: 'a', reason: 'bad', position: '1' })).toBe(false);
    await pipeline.drain();
    expect(pipeline.snapshot('orders')).toMatchObject({ inFlight: 0, deadLettered: 1 });
    expect(sub.got).toHaveLength(1);
  });

  it('ignores unknown models and input after stopAccepting (nothing committed past there)', async () => {
    const { pipeline, commits } = await setup();
    expect(pipeline.deadLetter('nope', { payload: 'a', reason: 'bad', position: '1' })).toBe(true);
    pipeline.stopAccepting();
    expect(pipeline.deadLetter('orders', { payload: 'a', reason: 'bad', position: '2' })).toBe(true);
    expect(pipeline.snapshot('orders')).toMatchObject({ received: 0, inFlight: 0 });
    expect(commits).toEqual([]);
  });
});

describe('Pipeline: the window in bytes (maxInFlightBytes)', () => {
  const big = (key: string, position: string) => event(key, position, { id: key, blob: 'x'.repeat(4000) });

  it('is full once the encoded events in flight reach the byte limit, whatever their count', async () => {
    const { sub, pipeline } = await setup({ maxInFlight: 1000, maxInFlightBytes: 10_000 });
    // Pushed in one turn: nothing is confirmed between them.
    expect(pipeline.push(big('k1', '1'))).toBe(true);
    expect(pipeline.push(big('k2', '2'))).toBe(true);
    expect(pipeline.push(big('k3', '3'))).toBe(false);
    expect(pipeline.snapshot('orders')!.inFlightBytes).toBeGreaterThan(10_000);
    await pipeline.drain();
    await waitFor(() => sub.got.length === 3, 'the three events');
    expect(pipeline.snapshot('orders')).toMatchObject({ inFlight: 0, inFlightBytes: 0 });
  });

  it('lets one event larger than the limit go alone, never stalling', async () => {
    const { sub, pipeline } = await setup({ maxInFlightBytes: 1000 });
    expect(pipeline.push(big('k1', '1'))).toBe(false);
    await pipeline.drain();
    expect(pipeline.push(big('k2', '2'))).toBe(false);
    await pipeline.drain();
    await waitFor(() => sub.got.length === 2, 'both events');
  });
});

describe('Pipeline: deadLetterLimit', () => {
  it('fails the feed at one dead letter too many in a row with one code; a published event resets the count', async () => {
    const { sub, pipeline, commits, statuses } = await setup({ deadLetterLimit: 2 });
    const bad = (position: string) => ({ payload: 'x', reason: 'not JSON', position });
    pipeline.deadLetter('orders', bad('1'));
    pipeline.deadLetter('orders', bad('2'));
    pipeline.push(event('k1', '3')); // resets the streak
    pipeline.deadLetter('orders', bad('4'));
    pipeline.deadLetter('orders', bad('5'));
    await waitFor(() => commits.at(-1) === '5', 'five committed');
    expect(statuses.some((s) => s.type === 'feed-failed')).toBe(false);
    pipeline.deadLetter('orders', bad('6')); // the third in a row
    expect(statuses.filter((s) => s.type === 'feed-failed')).toEqual([
      expect.objectContaining({
        feed: 'ds/orders',
        error: expect.objectContaining({ code: ErrorCode.MALFORMED_INPUT }) as unknown,
      }),
    ]);
    const received = pipeline.snapshot('orders')!.received;
    pipeline.push(event('k2', '7')); // ignored at once: the feed failed
    expect(pipeline.snapshot('orders')!.received).toBe(received);
    expect(sub.got.map((m) => m.topic.split('/').at(-1))).toEqual([
      'dead-letter',
      'dead-letter',
      'k1',
      'dead-letter',
      'dead-letter',
    ]);
    expect(commits.at(-1)).toBe('5'); // nothing past the last dead letter published
    expect(pipeline.snapshot('orders')!.failed).toMatch(/2 events in a row/);
  });
});
