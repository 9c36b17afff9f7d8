/**
 * `EvpubComponent`: evpub as a LoopBack 4 component.
 *
 *   app.component(EvpubComponent);
 *   app.configure(EvpubBindings.COMPONENT).to({ brokers: { default: { url: 'mqtt://...' } }, ... });
 *
 * It binds (each resolved from the component's host, host.ts; nothing is module state):
 * - `EvpubBindings.APP`: the evpub `App` (made on first resolution, normally at `app.start()`);
 * - `EvpubBindings.CLIENT`: a pub/sub `Client` on `clientBroker` (default `default`), ended by
 *   `app.stop()`; resolve it again after a restart (inject it into request-scoped classes);
 * - `EvpubBindings.STATUS`: `app.status()`, read at each resolution;
 * - `EvpubBindings.CONFIG`: the validated configuration (bound, plus the datasources and models
 *   declared the LoopBack way).
 * and adds the lifecycle observer (observer.ts) that starts and stops the feeds.
 */
import {
  Binding,
  BindingScope,
  CoreBindings,
  inject,
  type Application,
  type Component,
  type Constructor,
  type LifeCycleObserver,
} from '@loopback/core';
import { EVPUB_HOST, EvpubHost } from './host';
import { EvpubBindings } from './keys';
import { EvpubLifecycleObserver, serverGroupTagger } from './observer';

export class EvpubComponent implements Component {
  readonly bindings: Binding[];
  readonly lifeCycleObservers: Constructor<LifeCycleObserver>[] = [
    EvpubLifecycleObserver,
    // The consumers' observer (`@subscribe` methods) goes here, after the feeds' observer.
  ];

  constructor(@inject(CoreBindings.APPLICATION_INSTANCE) application: Application) {
    const host = new EvpubHost(application);
    serverGroupTagger(application);
    this.bindings = [
      Binding.bind(EVPUB_HOST).to(host),
      Binding.bind(EvpubBindings.APP).toDynamicValue(() => host.app()),
      Binding.bind(EvpubBindings.CLIENT).toDynamicValue(() => host.client()),
      Binding.bind(EvpubBindings.STATUS).toDynamicValue(() => host.app().status()),
      Binding.bind(EvpubBindings.CONFIG).toDynamicValue(() => host.config()),
    ].map((b) => b.inScope(BindingScope.TRANSIENT) as Binding);
  }
}
