/**
 * A poison event on Kafka (the librdkafka mock): a row whose event is larger than a Kafka
 * record may be (1 MB by default). The adapter refuses it before sending, as the broker would
 * (RECORD_TOO_LARGE); it is dead-lettered without its original, and the feed goes on.
 */
import { afterAll, beforeAll, describe, it } from 'vitest';
import { ErrorCode } from '../../src/errors';
import { startKafkaMock, type KafkaCluster } from '../helpers/kafka-mock';
import { poisonCase, poisonRoot } from './poison.suite';

let kafka: KafkaCluster;

beforeAll(async () => {
  kafka = await startKafkaMock();
});
afterAll(async () => {
  await kafka?.close();
});

describe('poison events on Kafka', () => {
  it('an event larger than a record may be: dead-lettered, the rows after it arrive', async () => {
    await poisonCase(poisonRoot(), {
      label: 'kafka mock (record too large)',
      url: kafka.url,
      oneTopic: true,
      poisonBytes: 2 * 1024 * 1024,
      code: ErrorCode.PAYLOAD_TOO_LARGE,
    });
  });
});
