/** `evpub dead-letters replay` on Kafka (librdkafka's mock cluster): a consumer group. */
import { afterAll } from 'vitest';
import { kafkaCluster, type KafkaCluster } from '../helpers/kafka-mock';
import { replaySuite } from './dead-letters-replay.suite';

let kafka: KafkaCluster | undefined;

afterAll(async () => {
  await kafka?.close();
});

replaySuite({
  name: 'Kafka',
  url: async () => (kafka ??= await kafkaCluster()).url,
  // Each run is a group member that leaves; a short session keeps the next join short.
  options: { kafka: { sessionTimeout: 6_000 } },
  cliOptions: ['-o', 'kafka.sessionTimeout=6000'],
  timeout: 150_000,
});
