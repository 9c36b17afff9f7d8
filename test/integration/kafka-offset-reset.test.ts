/**
 * A Kafka subscriber whose next offset fell out of the broker's retention: kafkajs resets it to
 * the partition's end (or start, with `from: 'earliest'`) and only logs it; the client must emit
 * EVPUB_MESSAGES_SKIPPED and go on delivering.
 *
 * Runs on a private librdkafka mock cluster, which keeps about 5 MB per partition (older message
 * sets are deleted as new ones arrive): 8,000 messages of 1 KB push offset 1 out of it. A durable
 * subscription acknowledges the first message (the group commits offset 1), ends, and subscribes
 * again after the 8,000: its fetch at offset 1 gets OFFSET_OUT_OF_RANGE.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, ErrorCode, isEvpubError, type Client, type EvpubError } from '../../src/pubsub/index';
import { createLogger } from '../../src/logger';
import { toKafka } from '../../src/pubsub/topics';
import { collector } from '../conformance/pubsub.suite';
import { startKafkaMock, type KafkaCluster } from '../helpers/kafka-mock';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const FLOOD = 8_000;
const FILLER = 'x'.repeat(1_000);

describe('Kafka: a subscriber reset past retention is told', () => {
  let mock: KafkaCluster;
  const clients: Client[] = [];
  const client = (): Client => {
    // The mock keeps a group "joining" for a session timeout after its last member left.
    const c = createClient(mock.url, {
      kafka: { sessionTimeout: 3_000 },
      logger: createLogger({ level: 'silent' }),
    });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    mock = await startKafkaMock();
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end()));
    await mock.close();
  });

  it('emits EVPUB_MESSAGES_SKIPPED for a durable subscription, then keeps delivering', async () => {
    const topic = `evpub/kafka/${uniqueName()}`;
    const toEnd = uniqueName('g'); // from: 'new' (default): kafkajs resets to the end
    const toStart = uniqueName('g'); // from: 'earliest': kafkajs resets to the start
    const pub = client();

    // Each group commits offset 1 (after 'first') and goes away.
    const firstA = client();
    const firstB = client();
    const gotA = collector(firstA);
    const gotB = collector(firstB);
    await Promise.all([
      firstA.subscribe(topic, { durable: toEnd }),
      firstB.subscribe(topic, { durable: toStart, from: 'earliest' }),
    ]);
    await pub.publish(topic, 'first');
    await waitFor(() => gotA.length === 1 && gotB.length === 1, "'first' in both groups");
    await Promise.all([firstA.end(), firstB.end()]); // waits for the commits in flight

    await Promise.all(Array.from({ length: FLOOD }, (_, i) => pub.publish(topic, `m${i} ${FILLER}`)));

    const again = (group: string, from?: 'earliest') => {
      const c = client();
      const errors: EvpubError[] = [];
      c.on('error', (err) => {
        if (isEvpubError(err)) errors.push(err);
      });
      const got = collector(c);
      return { c, errors, got, ready: c.subscribe(topic, { durable: group, from }) };
    };
    const a = again(toEnd);
    const b = again(toStart, 'earliest');
    await Promise.all([a.ready, b.ready]);
    await waitFor(() => a.errors.length && b.errors.length, 'EVPUB_MESSAGES_SKIPPED in both groups');

    for (const [{ errors }, group] of [
      [a, toEnd],
      [b, toStart],
    ] as const) {
      expect(errors).toHaveLength(1);
      expect(errors[0]!.code).toBe(ErrorCode.MESSAGES_SKIPPED);
      expect(errors[0]!.context).toMatchObject({
        topic: toKafka(topic),
        partition: 0,
        groupId: group,
        requestedOffset: '1',
      });
      expect(errors[0]!.message).toContain(`partition 0`);
      expect(errors[0]!.message).toContain('offset 1 is no longer on the broker');
      expect(errors[0]!.message).toMatch(/retention/);
    }
    const end = a.errors[0]!.context;
    const low = BigInt(end.lowWatermark as string);
    expect(low).toBeGreaterThan(1n);
    expect(end.highWatermark).toBe(String(FLOOD + 1));
    expect(end.resumedOffset).toBe(String(FLOOD + 1));
    expect(end.skipped).toBe(FLOOD);
    expect(a.errors[0]!.message).toContain(`${FLOOD} messages were never delivered`);

    const start = b.errors[0]!.context;
    expect(start.resumedOffset).toBe(start.lowWatermark);
    expect(start.skipped).toBe(Number(BigInt(start.lowWatermark as string) - 1n));

    // Delivery goes on: the start-reset group gets what the broker still keeps (read before
    // publishing more, which would let retention delete the oldest of it), and both get what is
    // published after the reset.
    const kept = FLOOD + 1 - Number(start.resumedOffset);
    await waitFor(() => b.got.length === kept, `the ${kept} messages the broker keeps`);
    await pub.publish(topic, 'later');
    await waitFor(() => a.got.some((m) => m.payload.toString() === 'later'), "'later' after an end reset");
    await waitFor(() => b.got.some((m) => m.payload.toString() === 'later'), "'later' after a start reset");
    expect(a.got.map((m) => m.payload.toString())).toEqual(['later']);
    const firstKept = b.got[0]!.payload.toString();
    expect(firstKept.startsWith(`m${Number(start.resumedOffset) - 1} `)).toBe(true);
    expect(b.got).toHaveLength(kept + 1);
    expect(a.errors).toHaveLength(1);
    expect(b.errors).toHaveLength(1);
  });
});
