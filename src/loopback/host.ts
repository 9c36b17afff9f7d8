/**
 * The evpub side of one LoopBack application: what the component's bindings resolve to and what
 * its lifecycle observer drives. One host per `app.component(EvpubComponent)` (no module state).
 *
 * - `app()` makes the evpub `App` on first use: the registries (built-ins plus the bound
 *   extensions), the datasources and models declared the LoopBack way (discovery.ts) merged
 *   with the configuration bound by `app.configure(EvpubBindings.COMPONENT)`, validated by
 *   `validateConfig` (the code `evpub.config.*` goes through: the same errors, paths told the
 *   way they were declared). A failure is thrown to the caller (`app.start()`) and nothing is
 *   kept: the next call tries again. Made once, the app keeps its configuration: a second
 *   `start()` after `stop()` resumes the same feeds from their checkpoints.
 * - `start()` starts the feeds (and `app.listen()` with `listen: true`); `stop()` stops them
 *   (drain, checkpoint, close; the management server too), then ends the client.
 * - `client()` is a pub/sub client on `clientBroker` (default `default`), made on first use
 *   after each start or before the first, and ended by `stop()`.
 */
import { BindingKey, type Context } from '@loopback/core';
import { evpub, type App } from '../app/app';
import { validateConfig } from '../app/config';
import type { BrokerConfig } from '../app/config-types';
import { ErrorCode, EvpubError } from '../errors';
import type { Client } from '../pubsub/client';
import { createClient } from '../pubsub/registry';
import { discoverSources, problemsError } from './discovery';
import { buildRegistries, type EvpubRegistries } from './extensions';
import { isPublishingRepository } from './repository/mixin';
import { EvpubBindings } from './keys';
import type { EvpubComponentConfig } from './types';

/** The component's host, bound by the component (for observers of other parts). */
export const EVPUB_HOST = BindingKey.create<EvpubHost>('evpub.host');

/**
 * `RepositoryTags.REPOSITORY` of @loopback/repository, which `app.repository()` tags with (spelt
 * here: the component needs only @loopback/core).
 */
const REPOSITORY_TAG = 'repository';

/** Keys of the component's configuration that are not evpub's configuration. */
const COMPONENT_ONLY = ['listen', 'clientBroker', 'cwd', 'logger', 'stopTimeout'] as const;

interface Made {
  app: App;
  config: Readonly<EvpubComponentConfig>;
  registries: EvpubRegistries;
}

export class EvpubHost {
  private made: Made | undefined;
  private _client: Client | undefined;

  constructor(private readonly ctx: Context) {}

  /** What `app.configure(EvpubBindings.COMPONENT).to(...)` bound (empty when nothing). */
  boundConfig(): EvpubComponentConfig {
    const value = this.ctx.getConfigSync<EvpubComponentConfig>(EvpubBindings.COMPONENT);
    if (value === undefined || value === null) return {};
    if (typeof value !== 'object' || Array.isArray(value)) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        "app.configure(EvpubBindings.COMPONENT): must be an object with evpub's configuration ({ brokers, datasources, models, ... })",
      );
    }
    return value;
  }

  private make(): Made {
    if (this.made) return this.made;
    const bound = this.boundConfig();
    const registries = buildRegistries(this.ctx);
    const sources = discoverSources(this.ctx, registries.registry, bound.datasources ?? {});
    const evpubConfig: Record<string, unknown> = { ...bound };
    for (const key of COMPONENT_ONLY) delete evpubConfig[key];
    const problems: { path: string; message: string }[] = [];
    for (const [section, found] of [
      ['datasources', sources.datasources],
      ['models', sources.models],
    ] as const) {
      const given = (bound[section] ?? {}) as Record<string, unknown>;
      for (const name of Object.keys(found)) {
        if (name in given) {
          problems.push({
            path: sources.describePath(`${section}.${name}`),
            message: `"${name}" is also in the component's configuration (${section}.${name}); declare it once`,
          });
        }
      }
      evpubConfig[section] = { ...given, ...found };
    }
    if (problems.length > 0) throw problemsError(problems);
    const cwd = bound.cwd ?? process.cwd();
    // Validated here, with the LoopBack paths, so a mistake is told where it was made; evpub's
    // App validates the same configuration again at each start.
    const validated = validateConfig(evpubConfig, {
      cwd,
      connectors: registries.registry,
      adapters: registries.adapters,
      describePath: sources.describePath,
    });
    const app = evpub({
      config: evpubConfig,
      registry: registries.registry,
      adapters: registries.adapters,
      cwd,
      ...(bound.logger ? { logger: bound.logger } : {}),
      ...(bound.stopTimeout !== undefined ? { stopTimeout: bound.stopTimeout } : {}),
    });
    const config: EvpubComponentConfig = { ...validated };
    for (const key of COMPONENT_ONLY) {
      if (bound[key] !== undefined) (config as Record<string, unknown>)[key] = bound[key];
    }
    this.made = { app, config: Object.freeze(config), registries };
    return this.made;
  }

  /** The evpub app (made on first use; see above). */
  app(): App {
    return this.make().app;
  }

  /** The configuration the app runs: evpub's, validated, plus the component's own keys. */
  config(): Readonly<EvpubComponentConfig> {
    return this.make().config;
  }

  /** The pub/sub client on `clientBroker` (default `default`), made on first use. */
  client(): Client {
    if (this._client && this._client.state !== 'closing' && this._client.state !== 'closed') {
      return this._client;
    }
    const { config, registries } = this.make();
    const name = config.clientBroker ?? 'default';
    const broker = config.brokers?.[name] as BrokerConfig | string | undefined;
    if (broker === undefined) {
      const names = Object.keys(config.brokers ?? {});
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `${config.clientBroker === undefined ? 'brokers.default' : 'clientBroker'}: EvpubBindings.CLIENT publishes to the broker "${name}", ` +
          `which is not configured (${names.length ? `brokers are: ${names.join(', ')}` : 'no brokers are defined'}); ` +
          'define it in brokers, or set clientBroker to one of them',
      );
    }
    const { url, options } = typeof broker === 'string' ? { url: broker, options: undefined } : broker;
    const logger = this.boundConfig().logger;
    this._client = createClient(url, { ...options, ...(logger ? { logger } : {}) }, registries.adapters);
    return this._client;
  }

  /**
   * Starts the feeds, then (with `listen: true`) the management API. First makes every bound
   * repository of `EventPublishingRepositoryMixin` (LoopBack would at its first request), so
   * that one that cannot publish (outbox mode on a datasource without transactions, a model
   * without one id property) fails `app.start()` naming its model and key.
   */
  async start(): Promise<void> {
    const { app, config } = this.make();
    for (const binding of this.ctx.findByTag(REPOSITORY_TAG)) {
      if (isPublishingRepository(binding.valueConstructor)) await this.ctx.get(binding.key);
    }
    await app.start();
    if (config.listen === true) {
      try {
        await app.listen();
      } catch (err) {
        await app.stop();
        throw err;
      }
    }
  }

  /** Stops the feeds (drain, checkpoint), the management API, then ends the client. */
  async stop(): Promise<void> {
    const client = this._client;
    this._client = undefined;
    try {
      await this.made?.app.stop();
    } finally {
      await client?.end();
    }
  }
}
