/**
 * `evpub/loopback`: evpub as a LoopBack 4 extension (docs/loopback.md). Needs the optional peer
 * dependencies `@loopback/core` (and `@loopback/repository` for models and repositories).
 */
export { EvpubBindings } from './keys';
export type { EvpubComponentConfig } from './types';
// Each part of the extension adds its exports below, one line per file.
export { subscribe, asConsumer, SUBSCRIBE_METADATA } from './consumers/decorator';
export type { ConsumerOptions, ConsumerDecode, SubscribeSpec } from './consumers/decorator';
export type { CloudEvent } from './consumers/decode';
export { EvpubConsumersObserver, CONSUMERS_OBSERVER } from './consumers/observer';
export type { ConsumersObserverOptions } from './consumers/observer';
export type { ConsumerStats } from './consumers/subscription';
