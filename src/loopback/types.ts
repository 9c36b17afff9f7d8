/**
 * What the LoopBack 4 extension is configured with: evpub's configuration (the schema of
 * `evpub.config.*`), plus the few settings that only make sense inside a LoopBack application.
 */
import type { EvpubConfig } from '../app/config-types';

export interface EvpubComponentConfig extends Partial<EvpubConfig> {
  /** Serve evpub's management HTTP API (status, feeds, metrics, dashboard) with the app. */
  listen?: boolean;
  /** The broker `EvpubBindings.CLIENT` publishes to (default: `default`). */
  clientBroker?: string;
}
