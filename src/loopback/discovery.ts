/**
 * Event datasources and models declared the LoopBack 4 way, read into evpub's configuration.
 *
 * - A datasource is a binding tagged `datasource` under `datasources.<name>` (what
 *   `app.dataSource(DsClass)` binds). Its settings are read without making the juggler
 *   datasource: a class binding gives `datasources.config.<name>` when bound, else the class's
 *   static `defaultConfig`; an instance binding gives its `settings`. It is an **event
 *   datasource** when its `connector` setting is
 *     1. `evpub/connectors/<name>`: evpub's connector `<name>`;
 *     2. an event connector's name (evpub's built-ins and the `EvpubBindings.CONNECTORS`
 *        extensions), except the names LoopBack's CRUD connectors use too (`memory`,
 *        `postgresql`, `mysql`, `cloudant`: these are CRUD datasources; write `postgres`,
 *        `mariadb`, `couchdb` or `evpub/connectors/memory` for the event connector);
 *     3. anything else (an npm event-connector module, or one of those CRUD names) with
 *        `evpub: true` among the settings (the marker is not passed to the connector).
 *   Every other datasource is a CRUD datasource and is left alone.
 * - A model is a binding tagged `model` under `models.<Class>` (what `app.model(Cls)` binds)
 *   whose `definition.settings.evpub` holds evpub's model options (`dataSource`, `topic`,
 *   `envelope`, `include`, `exclude`, `ops`, `from`, `settings`, ...). Its evpub name (topics'
 *   `{model}`, feed ids) is the model's name (`@model({ name })`, else the class name). Models
 *   without `settings.evpub` are not feeds.
 *
 * Problems found here (unknown keys in `settings.evpub`, a model on a CRUD datasource, a name
 * declared twice) are one CONFIG_INVALID error in the configuration loader's format; paths are
 * told the way the user wrote them (`model Account (settings.evpub.topc)`), by `describePath`,
 * which the component also hands to `validateConfig`.
 */
import { BindingType, type Binding, type Context } from '@loopback/core';
import type { DataSourceConfig, ModelConfig } from '../app/config-types';
import { MODEL_KEYS } from '../app/schema';
import type { ConnectorRegistry } from '../connectors/registry';
import { ErrorCode, EvpubError, redactText, toError } from '../errors';
import { nearest } from '../util/nearest';

/** Connector names LoopBack's CRUD connectors use: such a datasource is CRUD unless marked. */
export const CRUD_CONNECTOR_NAMES: readonly string[] = ['memory', 'postgresql', 'mysql', 'cloudant'];

/** The prefix of evpub's connector modules (`evpub/connectors/postgres`). */
export const EVPUB_CONNECTOR_PREFIX = 'evpub/connectors/';

/** What the application's bindings declare, in evpub's shape. */
export interface LoopBackSources {
  datasources: Record<string, DataSourceConfig>;
  models: Record<string, ModelConfig>;
  /** Maps a path of evpub's configuration to where it was declared (for error messages). */
  describePath: (path: string) => string;
}

interface Problem {
  path: string;
  message: string;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The evpub connector name an event datasource's settings select, or undefined for a CRUD
 * datasource (see the rules above).
 */
export function eventConnectorOf(settings: Json, registry: ConnectorRegistry): string | undefined {
  const connector = settings.connector;
  if (typeof connector !== 'string' || connector === '') return undefined;
  if (connector.startsWith(EVPUB_CONNECTOR_PREFIX)) return connector.slice(EVPUB_CONNECTOR_PREFIX.length);
  if (settings.evpub === true) return connector;
  if (registry.has(connector) && !CRUD_CONNECTOR_NAMES.includes(connector)) return connector;
  return undefined;
}

interface FoundDataSource {
  name: string;
  settings: Json | undefined;
  /** Why the settings could not be read (a binding of another kind). */
  unreadable?: string;
}

/** The settings of a datasource binding, read without making the datasource. */
function readDataSource(ctx: Context, binding: Readonly<Binding<unknown>>): FoundDataSource {
  const name = binding.key.slice('datasources.'.length);
  if (binding.type === BindingType.CONSTANT) {
    const ds = ctx.getSync<{ settings?: unknown } | undefined>(binding.key);
    return { name, settings: isObject(ds?.settings) ? ds.settings : undefined };
  }
  const ctor = binding.valueConstructor as { dataSourceName?: unknown; defaultConfig?: unknown } | undefined;
  if (binding.type === BindingType.CLASS && ctor) {
    const configName = typeof ctor.dataSourceName === 'string' ? ctor.dataSourceName : name;
    const configured: unknown = ctx.getSync(`datasources.config.${configName}`, { optional: true });
    const settings = configured ?? ctor.defaultConfig;
    return { name, settings: isObject(settings) ? settings : undefined };
  }
  return {
    name,
    settings: undefined,
    unreadable: `bound as a ${binding.type ?? 'unset'} value; bind a datasource class or instance`,
  };
}

/**
 * A model's table, as LoopBack's CRUD connector for the same database names it, when
 * `settings.evpub.settings.table` does not say (nor `outbox: true`): so one model class serves its
 * repository and its feed. PostgreSQL (loopback-connector-postgresql): `settings.postgresql.schema` (default
 * `public`) and `.table` (default the model's name in lower case). MySQL/MariaDB
 * (loopback-connector-mysql): `settings.mysql.table` (default the model's name). Not for a model
 * with `settings.evpub.settings.outbox: true`: its events come from the outbox table.
 */
function withLoopBackTable(options: Json, connector: unknown, name: string, lbSettings: Json): Json {
  const own = isObject(options.settings) ? options.settings : undefined;
  // A model fed from the outbox has no table of its own (kit/outbox.ts): none is added.
  if (own?.table !== undefined || own?.outbox === true || (options.settings !== undefined && !own))
    return options;
  let table: string | undefined;
  if (connector === 'postgres' || connector === 'postgresql') {
    const pg = isObject(lbSettings.postgresql) ? lbSettings.postgresql : {};
    const schema = typeof pg.schema === 'string' ? pg.schema : 'public';
    table = `${schema}.${typeof pg.table === 'string' ? pg.table : name.toLowerCase()}`;
  } else if (connector === 'mysql' || connector === 'mariadb') {
    const my = isObject(lbSettings.mysql) ? lbSettings.mysql : {};
    if (typeof my.table === 'string') table = my.table;
  }
  return table === undefined ? options : { ...options, settings: { ...own, table } };
}

/** Quotes a path segment the way the configuration loader does. */
function segment(text: string): string {
  return /^[\w$-]+$/.test(text) ? `.${text}` : `[${JSON.stringify(text)}]`;
}

function describeModel(className: string, name: string): string {
  return className === name ? `model ${className}` : `model ${className} ("${name}")`;
}

/** Reads the event datasources and evpub models bound in `ctx`. */
export function discoverSources(
  ctx: Context,
  registry: ConnectorRegistry,
  configured: Readonly<Record<string, DataSourceConfig>> = {},
): LoopBackSources {
  const problems: Problem[] = [];
  const datasources: Record<string, DataSourceConfig> = {};
  /** Every datasource binding: event or CRUD, for the messages about models. */
  const crud = new Map<string, FoundDataSource>();
  for (const binding of ctx.findByTag('datasource')) {
    if (!binding.key.startsWith('datasources.')) continue;
    let found: FoundDataSource;
    try {
      found = readDataSource(ctx, binding);
    } catch (err) {
      problems.push({
        path: `datasource ${binding.key.slice('datasources.'.length)}`,
        message: `its settings could not be read: ${redactText(toError(err).message)}`,
      });
      continue;
    }
    const connector = found.settings ? eventConnectorOf(found.settings, registry) : undefined;
    if (!found.settings || connector === undefined) {
      crud.set(found.name, found);
      continue;
    }
    const { evpub: _marker, ...settings } = found.settings;
    datasources[found.name] = { ...settings, connector };
  }

  const connectorOf = (dsName: string): unknown => (datasources[dsName] ?? configured[dsName])?.connector;
  const models: Record<string, ModelConfig> = {};
  /** evpub model name → the LoopBack class it came from. */
  const classes = new Map<string, string>();
  for (const binding of ctx.findByTag('model')) {
    let cls: unknown;
    try {
      cls = ctx.getSync(binding.key);
    } catch {
      continue; // not a model class binding we can read; not a feed
    }
    if (typeof cls !== 'function') continue;
    const className = cls.name;
    const definition = (cls as { definition?: { name?: unknown; settings?: Json } }).definition;
    const options = definition?.settings?.evpub;
    if (options === undefined) continue;
    const name = typeof definition?.name === 'string' && definition.name !== '' ? definition.name : className;
    const where = describeModel(className, name);
    if (classes.has(name)) {
      problems.push({
        path: `${where} (settings.evpub)`,
        message: `a model named "${name}" is already bound (class ${classes.get(name)}); give one @model({ name }) another name`,
      });
      continue;
    }
    classes.set(name, className);
    if (!isObject(options)) {
      problems.push({
        path: `${where} (settings.evpub)`,
        message: 'must be an object of evpub model options like { dataSource: "events", topic: "..." }',
      });
      continue;
    }
    const allowed: readonly string[] = MODEL_KEYS;
    for (const key of Object.keys(options)) {
      if (allowed.includes(key)) continue;
      const near = nearest(key, allowed);
      problems.push({
        path: `${where} (settings.evpub${segment(key)})`,
        message: `unknown key "${key}"${near !== undefined ? ` (did you mean "${near}"?)` : ''}; allowed: ${allowed.join(', ')}`,
      });
    }
    const ds = typeof options.dataSource === 'string' ? crud.get(options.dataSource) : undefined;
    if (ds) {
      const connector = ds.settings?.connector;
      problems.push({
        path: `${where} (settings.evpub.dataSource)`,
        message: ds.unreadable
          ? `datasource "${ds.name}" cannot be read as an event datasource: ${ds.unreadable}`
          : `datasource "${ds.name}" is not an event datasource (connector ${JSON.stringify(connector)} is a CRUD connector); ` +
            'give the model a datasource whose connector is an evpub event connector (e.g. "evpub/connectors/postgres"), ' +
            'or mark an event connector module with `evpub: true` in the datasource settings',
      });
    }
    const connector = typeof options.dataSource === 'string' ? connectorOf(options.dataSource) : undefined;
    models[name] = withLoopBackTable(
      options,
      connector,
      name,
      definition?.settings ?? {},
    ) as unknown as ModelConfig;
  }

  const describePath = (path: string): string => {
    const m = /^(datasources|models)(\.[\w$-]+|\["(?:[^"\\]|\\.)*"\])(.*)$/.exec(path);
    if (!m) return path;
    const [, section, seg = '', rest = ''] = m;
    const key = seg.startsWith('.') ? seg.slice(1) : (JSON.parse(seg.slice(1, -1)) as string);
    if (section === 'models' && classes.has(key)) {
      return `${describeModel(classes.get(key)!, key)} (settings.evpub${rest})`;
    }
    if (section === 'datasources' && key in datasources) {
      return `datasource ${key} (settings${rest})`;
    }
    return path;
  };
  if (problems.length > 0) throw problemsError(problems);
  return { datasources, models, describePath };
}

/** One CONFIG_INVALID error listing the problems, in the configuration loader's format. */
export function problemsError(problems: readonly Problem[]): EvpubError {
  const lines = problems.map((p) => `${p.path}: ${p.message}`);
  const message =
    lines.length === 1
      ? `invalid evpub configuration: ${lines[0]}`
      : `invalid evpub configuration (${lines.length} problems):\n${lines.map((l) => `  - ${l}`).join('\n')}`;
  return new EvpubError(ErrorCode.CONFIG_INVALID, message, { context: { problems: [...problems] } });
}
