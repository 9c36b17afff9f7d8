/**
 * The lifecycle observer that runs evpub's feeds with the LoopBack application.
 *
 * - `app.start()`: starts the feeds (validating the configuration first: a mistake fails
 *   `app.start()` with a CONFIG_INVALID error naming the model and the key), then, with
 *   `listen: true`, serves evpub's management HTTP API. Its group, `evpub`, is not among
 *   LoopBack's ordered groups, so it starts before the `server` group (the REST server serves
 *   once the feeds run) and stops after it (no request is served while the feeds drain).
 * - `app.stop()`: evpub's `App.stop()`: stops reading, waits for what is in flight, saves the
 *   checkpoints, closes connectors, clients and the management server; then ends the client
 *   bound at `EvpubBindings.CLIENT`. A second `app.start()` resumes from the checkpoints.
 */
import { inject, lifeCycleObserver, type LifeCycleObserver } from '@loopback/core';
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
