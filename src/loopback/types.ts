/**
 * What the LoopBack 4 extension is configured with: evpub's configuration (the schema of
 * `evpub.config.*`), plus the few settings that only make sense inside a LoopBack application.
 */
import type { EvpubConfig } from '../app/config-types';
import type { Logger } from '../logger';

export interface EvpubComponentConfig extends Partial<EvpubConfig> {
  /** Serve evpub's management HTTP API (status, feeds, metrics, dashboard) with the app. */
  listen?: boolean;
  /** The broker `EvpubBindings.CLIENT` publishes to: a name in `brokers` (default: `default`). */
  clientBroker?: string;
  /** Where npm connectors and relative paths resolve from (default: `process.cwd()`). */
  cwd?: string;
  /** evpub's logger (default: evpub's own, level from EVPUB_LOG_LEVEL). */
  logger?: Logger;
  /** How long `app.stop()` waits for unconfirmed publishes, in ms (default 30000). */
  stopTimeout?: number;
}
