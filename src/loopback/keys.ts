/**
 * Binding keys of evpub's LoopBack 4 extension (`evpub/loopback`).
 *
 *   app.component(EvpubComponent);
 *   app.configure(EvpubBindings.COMPONENT).to({ brokers: {...}, models: {...} });
 *
 * The configuration bound with `app.configure(EvpubBindings.COMPONENT)` has the schema of
 * `evpub.config.*` (validated by the same code, with the same errors); event datasources and
 * models may also be declared the LoopBack way (docs/loopback.md).
 */
import { BindingKey } from '@loopback/core';
import type { App, AppStatus } from '../app/app';
import type { Client } from '../pubsub/client';
import type { EvpubComponentConfig } from './types';

// eslint-disable-next-line @typescript-eslint/no-namespace -- LoopBack's own convention for binding keys
export namespace EvpubBindings {
  /** The component; its binding config is evpub's configuration. */
  export const COMPONENT = BindingKey.create<unknown>('components.EvpubComponent');
  /** The resolved configuration the component runs (set when the component is added). */
  export const CONFIG = BindingKey.create<EvpubComponentConfig>('evpub.config');
  /** The evpub app running the feeds (started and stopped by the lifecycle observer). */
  export const APP = BindingKey.create<App>('evpub.app');
  /** A pub/sub client on the default broker, for controllers and services to publish with. */
  export const CLIENT = BindingKey.create<Client>('evpub.client');
  /** The app's status, read when injected (`app.status()`). */
  export const STATUS = BindingKey.create<AppStatus>('evpub.status');
  /** Extension point of event connectors (a third-party connector package is an extension). */
  export const CONNECTORS = 'evpub.connectors';
  /** Extension point of broker adapters. */
  export const ADAPTERS = 'evpub.adapters';
  /** Extension point of consumers (`@subscribe` methods). */
  export const CONSUMERS = 'evpub.consumers';
}
