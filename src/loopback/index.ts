/**
 * `evpub/loopback`: evpub as a LoopBack 4 extension (docs/loopback.md). Needs the optional peer
 * dependencies `@loopback/core` (and `@loopback/repository` for models and repositories).
 */
export { EvpubBindings } from './keys';
export type { EvpubComponentConfig } from './types';
// Each part of the extension adds its exports below, one line per file.
export { EvpubComponent } from './component';
export { EvpubLifecycleObserver, EVPUB_OBSERVER_GROUP, serverGroupTagger } from './observer';
export { EvpubHost, EVPUB_HOST } from './host';
export { discoverSources, eventConnectorOf, CRUD_CONNECTOR_NAMES, EVPUB_CONNECTOR_PREFIX } from './discovery';
export type { LoopBackSources } from './discovery';
export {
  asEventConnector,
  asBrokerAdapter,
  eventConnector,
  brokerAdapter,
  buildRegistries,
} from './extensions';
export type { EventConnectorExtension, BrokerAdapterExtension, EvpubRegistries } from './extensions';
export { EventPublishingRepositoryMixin } from './repository/mixin';
export type { EventPublishingOptions, EventPublishingMode } from './repository/context';
export { subscribe, asConsumer, SUBSCRIBE_METADATA } from './consumers/decorator';
export type { ConsumerOptions, ConsumerDecode, SubscribeSpec } from './consumers/decorator';
export type { CloudEvent } from './consumers/decode';
export { EvpubConsumersObserver, CONSUMERS_OBSERVER } from './consumers/observer';
export type { ConsumersObserverOptions } from './consumers/observer';
export type { ConsumerStats } from './consumers/subscription';
