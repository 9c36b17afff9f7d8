/**
 * The conformance suite against Kafka: librdkafka's mock cluster in a kcat process, or the real
 * cluster in KAFKA_BROKERS. The restart tests run on a private mock behind a TCP proxy that
 * can be stopped and started on the same port. The mock advertises its own address
 * (127.0.0.1:MOCKPORT) in metadata, so clients would bypass a proxy after bootstrap; the
 * clients map that advertised address to the proxy with `kafka.brokerAddressMap` (an option
 * for brokers reached through tunnels and NAT), so every connection goes through the proxy.
 */
import { pubsubConformance, type PrivateBroker } from './pubsub.suite';
import { kafkaCluster, startKafkaMock, type KafkaCluster } from '../helpers/kafka-mock';
import { startTcpProxy } from '../helpers/tcp-proxy';

let cluster: KafkaCluster | undefined;
/** Filled by privateBroker(): mock address → proxy address. */
const brokerAddressMap: Record<string, string> = {};

pubsubConformance({
  name: 'kafka',
  url: async () => {
    cluster = await kafkaCluster();
    return cluster.url;
  },
  options: { kafka: { brokerAddressMap } },
  teardown: async () => {
    await cluster?.close();
  },
  privateBroker: async (): Promise<PrivateBroker> => {
    const mock = await startKafkaMock();
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: mock.mockPort! });
    brokerAddressMap[mock.brokers[0]!] = `127.0.0.1:${proxy.port}`;
    return {
      url: `kafka://127.0.0.1:${proxy.port}`,
      stop: () => proxy.stop(),
      start: () => proxy.start(),
      close: async () => {
        await proxy.close();
        await mock.close();
      },
    };
  },
});
