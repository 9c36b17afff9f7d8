/**
 * Event connectors and broker adapters as LoopBack extensions.
 *
 * Two extension points: `EvpubBindings.CONNECTORS` (event connectors, by name) and
 * `EvpubBindings.ADAPTERS` (broker adapters, by URL scheme). An extension is a binding that
 * carries one of these templates and resolves, synchronously, to:
 *
 * - a connector: `{ name, module, aliases? }` where `module` is a connector module
 *   (`{ initialize(dataSource, cb) }`, evpub's contract or the seed's DataAccessObject shape) or a
 *   lazy loader of one; or the module itself, its name then given by the binding's `name` tag;
 * - an adapter: `{ schemes, adapter }` where `adapter` is a constructor of
 *   `src/pubsub/adapter.ts`.
 *
 *   app.add(eventConnector('testevents', require('loopback-connector-testevents')));
 *   app.add(brokerAdapter(['myq'], MyQueueAdapter));
 *   // or, in a package: @injectable(asEventConnector, { tags: { name: 'testevents' } }) class ...
 *
 * When the component starts it builds new registries: evpub's built-ins, then every extension
 * (`buildRegistries`). A name or scheme registered twice (an extension shadowing a built-in
 * included) is a CONFIG_INVALID error naming the binding. Extensions are read when the evpub app
 * is made (at `app.start()` unless injected earlier): bind them before.
 */
import {
  Binding,
  BindingScope,
  extensionFilter,
  extensionFor,
  type BindingTemplate,
  type Context,
} from '@loopback/core';
import type { ConnectorModule } from '../connectors/contract';
import { builtinConnectors, type ConnectorLoader, type ConnectorRegistry } from '../connectors/registry';
import { ErrorCode, EvpubError, redactText, toError } from '../errors';
import type { AdapterConstructor } from '../pubsub/adapter';
import { builtinAdapters, type AdapterRegistry } from '../pubsub/registry';
import { EvpubBindings } from './keys';

/** What an event-connector extension resolves to. */
export interface EventConnectorExtension {
  /** The name a datasource's `connector` setting uses. */
  name: string;
  /** The connector module, or a function loading it on first use. */
  module: ConnectorLoader;
  /** More names for the same module. */
  aliases?: string[];
}

/** What a broker-adapter extension resolves to. */
export interface BrokerAdapterExtension {
  /** URL schemes it serves, without `:` (`['myq', 'myqs']`). */
  schemes: string[];
  adapter: AdapterConstructor;
}

/** Marks a binding as an event connector (an extension of `EvpubBindings.CONNECTORS`). */
export const asEventConnector: BindingTemplate = (binding) => {
  extensionFor(EvpubBindings.CONNECTORS)(binding);
  binding.inScope(BindingScope.SINGLETON);
};

/** Marks a binding as a broker adapter (an extension of `EvpubBindings.ADAPTERS`). */
export const asBrokerAdapter: BindingTemplate = (binding) => {
  extensionFor(EvpubBindings.ADAPTERS)(binding);
  binding.inScope(BindingScope.SINGLETON);
};

/** A binding registering a connector module under `name`: `app.add(eventConnector('x', mod))`. */
export function eventConnector(
  name: string,
  module: ConnectorLoader,
  aliases: string[] = [],
): Binding<EventConnectorExtension> {
  return Binding.bind<EventConnectorExtension>(`${EvpubBindings.CONNECTORS}.${name}`)
    .to({ name, module, aliases })
    .tag({ name })
    .apply(asEventConnector);
}

/** A binding registering an adapter constructor for URL schemes: `app.add(brokerAdapter(['x'], X))`. */
export function brokerAdapter(
  schemes: string[],
  adapter: AdapterConstructor,
): Binding<BrokerAdapterExtension> {
  return Binding.bind<BrokerAdapterExtension>(`${EvpubBindings.ADAPTERS}.${schemes.join('+')}`)
    .to({ schemes, adapter })
    .apply(asBrokerAdapter);
}

/** The registries the component hands to `evpub()`: built-ins plus the bound extensions. */
export interface EvpubRegistries {
  registry: ConnectorRegistry;
  adapters: AdapterRegistry;
}

function invalid(binding: Readonly<Binding<unknown>>, message: string, cause?: unknown): EvpubError {
  return new EvpubError(ErrorCode.CONFIG_INVALID, `extension ${binding.key}: ${message}`, {
    ...(cause === undefined ? {} : { cause }),
    context: { binding: binding.key },
  });
}

function valueOf(ctx: Context, binding: Readonly<Binding<unknown>>): unknown {
  try {
    return ctx.getSync(binding.key);
  } catch (err) {
    throw invalid(
      binding,
      `could not be resolved (extensions must resolve synchronously): ${redactText(toError(err).message)}`,
      err,
    );
  }
}

const isLoader = (v: unknown): v is ConnectorLoader =>
  typeof v === 'function' ||
  (typeof v === 'object' && v !== null && typeof (v as Partial<ConnectorModule>).initialize === 'function');

/** Builds the connector and adapter registries from the built-ins and `ctx`'s extensions. */
export function buildRegistries(ctx: Context): EvpubRegistries {
  const registry = builtinConnectors();
  for (const binding of ctx.find(extensionFilter(EvpubBindings.CONNECTORS))) {
    const value = valueOf(ctx, binding);
    const ext = value as Partial<EventConnectorExtension> | undefined;
    let names: string[];
    let module: ConnectorLoader;
    if (ext && typeof ext.name === 'string' && isLoader(ext.module)) {
      names = [ext.name, ...(ext.aliases ?? [])];
      module = ext.module;
    } else if (isLoader(value) && typeof binding.tagMap.name === 'string') {
      names = [binding.tagMap.name];
      module = value;
    } else {
      throw invalid(
        binding,
        'an event connector must resolve to { name, module } (module: { initialize(dataSource, cb) }), ' +
          'or to a connector module with a "name" tag on its binding',
      );
    }
    for (const name of names) {
      try {
        registry.register(name, module);
      } catch (err) {
        throw invalid(binding, `${toError(err).message}; register it under another name`, err);
      }
    }
  }
  const adapters = builtinAdapters();
  for (const binding of ctx.find(extensionFilter(EvpubBindings.ADAPTERS))) {
    const ext = valueOf(ctx, binding) as Partial<BrokerAdapterExtension> | undefined;
    if (
      !ext ||
      !Array.isArray(ext.schemes) ||
      !ext.schemes.every((s) => typeof s === 'string' && /^[a-z][a-z0-9+.-]*$/.test(s)) ||
      typeof ext.adapter !== 'function'
    ) {
      throw invalid(
        binding,
        'a broker adapter must resolve to { schemes: ["myq"], adapter: AdapterConstructor } (schemes without ":")',
      );
    }
    try {
      adapters.register(ext.schemes, ext.adapter);
    } catch (err) {
      throw invalid(binding, `${toError(err).message}; register it under another scheme`, err);
    }
  }
  return { registry, adapters };
}
