/**
 * The Kafka adapter's classification of kafkajs errors (`kafkaPublishError`), with the errors
 * kafkajs makes from the broker's error codes, and the batcher's verdict per message after a
 * batch was refused as a whole. librdkafka's mock broker (the only Kafka here) cannot be made
 * to refuse a topic or a record, so the batcher test drives it with a producer that refuses one
 * topic the way kafkajs reports it: one error for the whole sendBatch.
 */
import { KafkaJSNumberOfRetriesExceeded, KafkaJSProtocolError, type Producer } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { ErrorCode, type EvpubError } from '../../src/errors';
import { ProduceBatcher, kafkaPublishError, recordSize } from '../../src/pubsub/adapters/kafka-producer';

/** kafkajs's error for a broker error code (what its protocol decoder throws). */
function protocolError(type: string, code: number, message: string, retriable: boolean): Error {
  return new KafkaJSProtocolError({ type, code, message, retriable } as unknown as Error);
}
const retriesExceeded = (e: Error): Error =>
  new KafkaJSNumberOfRetriesExceeded(e, { retryCount: 5, retryTime: 1000 });

const tooLarge = protocolError(
  'MESSAGE_TOO_LARGE',
  10,
  'The request included a message larger than the max message size the server will accept',
  false,
);
const denied = protocolError(
  'TOPIC_AUTHORIZATION_FAILED',
  29,
  'Not authorized to access topics: [Topic authorization failed]',
  false,
);

describe('kafkaPublishError', () => {
  it.each([
    ['MESSAGE_TOO_LARGE', tooLarge, ErrorCode.PAYLOAD_TOO_LARGE],
    [
      'CORRUPT_MESSAGE',
      protocolError('CORRUPT_MESSAGE', 2, 'This message has failed its CRC checksum', true),
      ErrorCode.PUBLISH_FAILED,
    ],
    [
      'INVALID_TOPIC_EXCEPTION',
      protocolError(
        'INVALID_TOPIC_EXCEPTION',
        17,
        'The request attempted to perform an operation on an invalid topic',
        false,
      ),
      ErrorCode.INVALID_TOPIC,
    ],
    ['TOPIC_AUTHORIZATION_FAILED', denied, ErrorCode.NOT_AUTHORIZED],
  ])('%s for one message is a permanent %s, found inside the retry wrapper', (type, err, code) => {
    const e = kafkaPublishError(retriesExceeded(err), ['orders'], 1);
    expect(e).toMatchObject({ code, retriable: false });
    expect(e.context).toMatchObject({ topics: ['orders'], brokerCode: type, brokerReason: err.message });
  });

  it.each([
    ['LEADER_NOT_AVAILABLE', 5],
    ['NOT_LEADER_FOR_PARTITION', 6],
    ['REQUEST_TIMED_OUT', 7],
    ['UNKNOWN_TOPIC_OR_PARTITION', 3],
    ['NOT_ENOUGH_REPLICAS', 19],
  ])('%s is transient', (type, code) => {
    const e = kafkaPublishError(retriesExceeded(protocolError(type, code, type, true)), ['orders'], 1);
    expect(e).toMatchObject({ code: ErrorCode.PUBLISH_FAILED, retriable: true });
    expect(e.context.brokerCode).toBe(type);
  });

  it("a record's refusal of a batch of several messages is transient: which one is unknown", () => {
    expect(kafkaPublishError(tooLarge, ['orders'], 3)).toMatchObject({ retriable: true });
  });

  it("a topic's refusal is permanent for a batch of that topic alone, transient for a batch of several topics", () => {
    expect(kafkaPublishError(denied, ['vip'], 5)).toMatchObject({
      code: ErrorCode.NOT_AUTHORIZED,
      retriable: false,
    });
    expect(kafkaPublishError(denied, ['vip', 'orders'], 2)).toMatchObject({
      code: ErrorCode.PUBLISH_FAILED,
      retriable: true,
    });
  });

  it('an error that is not a broker refusal is transient', () => {
    expect(kafkaPublishError(new Error('Connection error: ECONNREFUSED'), ['a'], 1)).toMatchObject({
      retriable: true,
    });
  });
});

describe('ProduceBatcher after a batch refused as a whole', () => {
  /** A producer whose broker refuses every batch holding a message to topic `vip`. */
  function refusingProducer(): { producer: Producer; sends: string[][] } {
    const sends: string[][] = [];
    const producer = {
      sendBatch: ({ topicMessages }: { topicMessages: { topic: string; messages: unknown[] }[] }) => {
        sends.push(topicMessages.flatMap((t) => t.messages.map(() => t.topic)));
        return topicMessages.some((t) => t.topic === 'vip') ? Promise.reject(denied) : Promise.resolve([]);
      },
    } as unknown as Producer;
    return { producer, sends };
  }

  it('sends the retried messages one by one: the refused topic is permanent, the others pass', async () => {
    const { producer, sends } = refusingProducer();
    const batcher = new ProduceBatcher({
      producer,
      ensureTopic: () => Promise.resolve(),
      maxMessageBytes: 1_000_000,
      translate: (err, topics, messages) => kafkaPublishError(err, topics, messages),
    });
    const send = (topic: string): Promise<unknown> => {
      const message = { key: null, value: Buffer.from('x') };
      return batcher.send(topic, message, recordSize(message)).then(
        () => 'ok',
        (e: EvpubError) => e,
      );
    };
    // One tick: one batch of two topics, refused as a whole: both transient.
    const first = await Promise.all([send('orders'), send('vip'), send('orders')]);
    for (const r of first) expect(r).toMatchObject({ retriable: true });
    // The publisher's retry of the three: each alone, each its own verdict.
    const again = await Promise.all([send('orders'), send('vip'), send('orders')]);
    expect(again[0]).toBe('ok');
    expect(again[1]).toMatchObject({ code: ErrorCode.NOT_AUTHORIZED, retriable: false });
    expect(again[2]).toBe('ok');
    expect(sends).toEqual([['orders', 'orders', 'vip'], ['orders'], ['vip'], ['orders']]);
    // Then batching again.
    expect(await Promise.all([send('orders'), send('orders')])).toEqual(['ok', 'ok']);
    expect(sends.at(-1)).toEqual(['orders', 'orders']);
  });
});
