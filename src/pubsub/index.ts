/**
 * `evpub/pubsub`: the broker-agnostic pub/sub client.
 */
export { Client } from './client';
export type { ClientState, ClientEventMap, Callback, Payload } from './client';
export { createClient, builtinAdapters, AdapterRegistry } from './registry';
export type {
  AdapterConstructor,
  AdapterEvents,
  AdapterFeatures,
  BrokerAdapter,
  ClientOptions,
  MessageMeta,
  PublishOptions,
  ResolvedClientOptions,
  SubscribeOptions,
} from './adapter';
export { MemoryAdapter, MemoryBroker, memoryBroker } from './adapters/memory';
export { MqttAdapter } from './adapters/mqtt';
export { RedisAdapter } from './adapters/redis';
export { AmqpAdapter } from './adapters/amqp';
export { NatsAdapter } from './adapters/nats';
export { KafkaAdapter } from './adapters/kafka';
export { matches, assertTopic, assertPattern } from './topics';
export { EvpubError, ErrorCode, isEvpubError } from '../errors';
