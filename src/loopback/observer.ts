/**
 * The lifecycle observer that runs evpub's feeds with the LoopBack application.
 *
 * - Order: its group, `evpub`, runs before LoopBack's `server` group (the REST server serves once
 *   the feeds run) and stops after it (no request is served while the feeds drain): see
 *   `serverGroupTagger`, which the component installs.
 * - `app.start()`: starts the feeds (validating the configuration first: a mistake fails
 *   `app.start()` with a CONFIG_INVALID error naming the model and the key), then, with
 *   `listen: true`, serves evpub's management HTTP API.
 * - `app.stop()`: evpub's `App.stop()`: stops reading, waits for what is in flight, saves the
 *   checkpoints, closes connectors, clients and the management server; then ends the client
 *   bound at `EvpubBindings.CLIENT`. A second `app.start()` resumes from the checkpoints.
 */
import {
  CoreTags,
  inject,
  lifeCycleObserver,
  type Binding,
  type Context,
  type ContextEvent,
  type LifeCycleObserver,
} from '@loopback/core';
import { EVPUB_HOST, type EvpubHost } from './host';

/** The observer group of evpub's feeds (runs before LoopBack's `server` group). */
export const EVPUB_OBSERVER_GROUP = 'evpub';

@lifeCycleObserver(EVPUB_OBSERVER_GROUP)
export class EvpubLifecycleObserver implements LifeCycleObserver {
  constructor(@inject(EVPUB_HOST) private readonly host: EvpubHost) {}

  start(): Promise<void> {
    return this.host.start();
  }

  stop(): Promise<void> {
    return this.host.stop();
  }
}

/**
 * Puts the application's servers in the `server` observer group explicitly, now and as they are
 * bound. LoopBack orders observers by their group tag and a binding without one comes first;
 * `app.server(...)` bindings (the RestServer) carry none (they are in `server` only by their
 * `server` tag), so without this they would start before every named group, evpub's included.
 * Tags must be set before `app.start()` first orders the observers (it caches their order), so
 * this runs when the component is added and on each later binding. Returns the uninstaller.
 */
export function serverGroupTagger(ctx: Context): () => void {
  const tag = (binding: Readonly<Binding<unknown>>): void => {
    if (
      binding.tagMap[CoreTags.SERVER] !== undefined &&
      binding.tagMap[CoreTags.LIFE_CYCLE_OBSERVER] !== undefined &&
      binding.tagMap[CoreTags.LIFE_CYCLE_OBSERVER_GROUP] === undefined
    ) {
      (binding as Binding<unknown>).tag({ [CoreTags.LIFE_CYCLE_OBSERVER_GROUP]: 'server' });
    }
  };
  for (const binding of ctx.findByTag(CoreTags.SERVER)) tag(binding);
  const onBind = (event: ContextEvent): void => tag(event.binding);
  ctx.on('bind', onBind);
  return () => ctx.off('bind', onBind);
}
