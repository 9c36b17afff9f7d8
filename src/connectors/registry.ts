/**
 * Connector registry: which module serves a datasource's `connector` setting.
 *
 * Resolution, as LoopBack does it: a registered built-in first (`memory`, `couchdb`,
 * `cloudant`), else an npm module required from the application's directory, trying the name
 * as given and then `loopback-connector-<name>`. A module serves when it exports
 * `initialize(dataSource, callback?)`. Built-ins are registered explicitly on a registry object
 * (`builtinConnectors()`), never by side effect, and are loaded lazily on first use.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ErrorCode, EvpubError, redactText, toError } from '../errors';
import type { ConnectorModule, DataSourceLike, EventConnector } from './contract';
import { LegacyDaoConnector, type LegacyDao } from './legacy-dao';

export type ConnectorLoader = ConnectorModule | (() => Promise<ConnectorModule>);

/** Where an npm connector was found: the module id that resolved and its file. */
export interface LocatedConnector {
  id: string;
  file: string;
}

export class ConnectorRegistry {
  private readonly byName = new Map<string, ConnectorLoader>();

  /** Registers a built-in connector; a second registration of one name is an error. */
  register(name: string, loader: ConnectorLoader): this {
    if (this.byName.has(name)) {
      throw new EvpubError(ErrorCode.CONFIG_INVALID, `connector "${name}" is already registered`);
    }
    this.byName.set(name, loader);
    return this;
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  /** True when `name` is a registered built-in. */
  has(name: string): boolean {
    return this.byName.has(name);
  }

  /**
   * Finds (without loading) the npm module for `name` from the application's directory: the
   * name itself, then `loopback-connector-<name>`. Undefined when neither is installed.
   */
  locate(name: string, cwd = process.cwd()): LocatedConnector | undefined {
    const requireFromApp = createRequire(path.join(path.resolve(cwd), 'package.json'));
    for (const id of candidates(name)) {
      try {
        return { id, file: requireFromApp.resolve(id) };
      } catch {
        // not installed under this id; try the next
      }
    }
    return undefined;
  }

  /**
   * The module for `name`: a registered built-in, else an npm module resolved from the
   * application's directory (`cwd`). `settingPath` (e.g. `datasources.db.connector`) is named
   * in the CONNECTOR_NOT_FOUND error, with the package to install.
   */
  async resolve(name: string, settingPath: string, cwd = process.cwd()): Promise<ConnectorModule> {
    const loader = this.byName.get(name);
    if (loader) {
      const loaded = typeof loader === 'function' ? await loader() : loader;
      return checkModule(loaded, name, settingPath);
    }
    const found = this.locate(name, cwd);
    if (!found) throw this.notFound(name, settingPath);
    const requireFromApp = createRequire(path.join(path.resolve(cwd), 'package.json'));
    let loaded: unknown;
    try {
      loaded = requireFromApp(found.file);
    } catch (err) {
      if ((err as { code?: string }).code !== 'ERR_REQUIRE_ESM') {
        throw new EvpubError(
          ErrorCode.CONNECTOR_NOT_FOUND,
          `${settingPath}: connector module "${found.id}" failed to load: ${redactText(toError(err).message)}`,
          { cause: err, context: { setting: settingPath, module: found.id } },
        );
      }
      loaded = await import(pathToFileURL(found.file).href);
    }
    return checkModule(loaded, found.id, settingPath);
  }

  /** The CONNECTOR_NOT_FOUND error for a name that is neither built in nor installed. */
  notFound(name: string, settingPath: string): EvpubError {
    const tried = candidates(name);
    return new EvpubError(
      ErrorCode.CONNECTOR_NOT_FOUND,
      `${settingPath}: unknown connector "${name}"; built-in connectors are ${this.names().join(', ')}; ` +
        `for an npm connector, install it: \`npm install ${name}\`` +
        (tried.length > 1 ? ` (also tried "${tried[1]}")` : ''),
      { context: { setting: settingPath, connector: name } },
    );
  }
}

function candidates(name: string): string[] {
  const ids = [name];
  const isPath = name.startsWith('.') || path.isAbsolute(name);
  if (!isPath && !name.startsWith('loopback-connector-')) ids.push(`loopback-connector-${name}`);
  return ids;
}

/** The module's `initialize`, from its exports or (ESM wrapper of CommonJS) its default. */
function checkModule(loaded: unknown, id: string, settingPath: string): ConnectorModule {
  for (const candidate of [loaded, (loaded as { default?: unknown } | null)?.default]) {
    const init = (candidate as { initialize?: unknown } | null | undefined)?.initialize;
    if (typeof init === 'function') return candidate as ConnectorModule;
  }
  throw new EvpubError(
    ErrorCode.CONNECTOR_NOT_FOUND,
    `${settingPath}: module "${id}" is not a connector: it does not export initialize(dataSource, callback)`,
    { context: { setting: settingPath, module: id } },
  );
}

type Namespace = Record<string, unknown>;

/** A lazy loader for a built-in connector file, whatever way it exports `initialize`. */
function lazy(load: () => Promise<Namespace>): () => Promise<ConnectorModule> {
  return async () => (await load()) as unknown as ConnectorModule;
}

/** A new registry holding evpub's own connectors, registered explicitly and loaded lazily. */
export function builtinConnectors(): ConnectorRegistry {
  const couchdb = lazy(() => import('./couchdb/index.js'));
  const postgres = lazy(() => import('./postgres/index.js'));
  return new ConnectorRegistry()
    .register(
      'memory',
      lazy(() => import('./memory/index.js')),
    )
    .register('couchdb', couchdb)
    .register('cloudant', couchdb)
    .register('postgres', postgres)
    .register('postgresql', postgres)
    .register(
      'mysql',
      lazy(() => import('./mysql/index.js')),
    )
    .register(
      'mariadb',
      lazy(() => import('./mysql/index.js')),
    )
    .register(
      'webhook',
      lazy(() => import('./webhook/index.js')),
    )
    .register(
      'poll',
      lazy(() => import('./poll/index.js')),
    )
    .register(
      'websocket',
      lazy(() => import('./websocket/index.js')),
    )
    .register(
      'bridge',
      lazy(() => import('./bridge/index.js')),
    );
}

export interface InitializeOptions {
  /** How long `initialize()` and a seed-style `start()`/`stop()` may take (default 30 s). */
  timeoutMs?: number;
  /** The connector's name for logs and health (default: the datasource's `connector` setting). */
  name?: string;
  /** Seed-style connectors only: events buffered while the publisher's window is full. */
  maxBuffered?: number;
}

function isEventConnector(value: unknown): value is EventConnector {
  const c = value as Partial<EventConnector> | null | undefined;
  return (
    typeof c === 'object' &&
    c !== null &&
    typeof c.start === 'function' &&
    typeof c.stop === 'function' &&
    typeof c.health === 'function'
  );
}

function legacyDao(value: unknown): LegacyDao | undefined {
  const dao = (value as { DataAccessObject?: unknown } | null | undefined)?.DataAccessObject as
    Partial<LegacyDao> | undefined;
  return (typeof dao === 'function' || typeof dao === 'object') &&
    dao !== null &&
    typeof dao.start === 'function'
    ? (dao as LegacyDao)
    : undefined;
}

/**
 * Runs `initialize(dataSource, cb)` and waits for the callback or the returned promise
 * (whichever the module uses; a module declaring no callback parameter and returning no
 * promise is done when it returns), bounded by `timeoutMs`.
 */
function runInitialize(module: ConnectorModule, dataSource: DataSourceLike, name: string, timeoutMs: number) {
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      finish(
        new EvpubError(
          ErrorCode.SOURCE_FAILED,
          `datasource "${dataSource.name}": connector "${name}" initialize() did not call back within ${timeoutMs} ms`,
          { retriable: true, context: { datasource: dataSource.name, connector: name } },
        ),
      );
    }, timeoutMs);
    function finish(err?: unknown) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err === undefined || err === null) return resolve();
      if (err instanceof EvpubError) return reject(err);
      reject(
        new EvpubError(
          ErrorCode.SOURCE_FAILED,
          `datasource "${dataSource.name}": connector "${name}" failed to initialize: ${redactText(toError(err).message)}`,
          { cause: err, retriable: true, context: { datasource: dataSource.name, connector: name } },
        ),
      );
    }
    try {
      const result: unknown = module.initialize(dataSource, (err) => finish(err));
      if (result && typeof (result as PromiseLike<void>).then === 'function') {
        (result as PromiseLike<void>).then(
          () => finish(),
          (err: unknown) => finish(err ?? new Error('initialize() rejected')),
        );
      } else if (module.initialize.length < 2) {
        finish();
      }
    } catch (err) {
      finish(err);
    }
  });
}

/**
 * Runs the module's `initialize(dataSource, cb)` and returns the datasource's connector as an
 * EventConnector, wrapping a seed-style `DataAccessObject` connector when that is what it set.
 * A connector that is neither is a CONNECTOR_NOT_FOUND error naming the datasource.
 */
export async function initializeConnector(
  module: ConnectorModule,
  dataSource: DataSourceLike,
  modelNames: string[],
  options: InitializeOptions = {},
): Promise<EventConnector> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const name =
    options.name ??
    (typeof dataSource.settings.connector === 'string' ? dataSource.settings.connector : 'connector');
  await runInitialize(module, dataSource, name, timeoutMs);
  const connector = dataSource.connector;
  if (isEventConnector(connector)) return connector;
  const dao = legacyDao(connector);
  if (dao) {
    return new LegacyDaoConnector({
      name,
      dataSource,
      dao,
      modelNames,
      timeoutMs,
      maxBuffered: options.maxBuffered,
    });
  }
  throw new EvpubError(
    ErrorCode.CONNECTOR_NOT_FOUND,
    `datasources.${dataSource.name}.connector: "${name}" is not an event connector: after initialize(), ` +
      'dataSource.connector must have start/stop/health, or a DataAccessObject with start(listenerEmitter, callback)',
    { context: { datasource: dataSource.name, connector: name } },
  );
}
