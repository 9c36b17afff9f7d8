/**
 * The outbox settings of the SQL CDC connectors (postgres, mysql), read with the connector's
 * closed settings (docs/outbox.md; the protocol is src/events/outbox.ts).
 *
 * - Datasource `outbox`: `true`, or `{ table?, schema?, create? }`: the table the writers insert
 *   their events into (default `evpub_outbox`), its schema (PostgreSQL: default `public`;
 *   MySQL/MariaDB: the database, default the datasource's), and whether the connector creates
 *   it when it is missing (default true). Absent or `false`: no outbox.
 * - Model `outbox: true`: the model's events come from the outbox rows naming it. Such a model
 *   has no table of its own: `table`, `database` and `snapshot` cannot be given with it.
 * - A model with `outbox: true` on a datasource without `outbox` is a CONFIG_INVALID naming
 *   both keys (`outboxModels`).
 */
import { ErrorCode, EvpubError, toError } from '../../errors';
import { DEFAULT_OUTBOX_TABLE } from '../../events/outbox';
import { SettingsReader, type Settings } from './settings';
import { checkName } from './sql-names';
import type { SourceCheck } from '../contract';

export interface OutboxSettings {
  /** The table's name (unquoted, checked with sql-names). */
  table: string;
  /** Its schema (PostgreSQL) or database (MySQL); undefined: the connector's default. */
  schema: string | undefined;
  /** Create the table (outboxDdl) when it is missing. */
  create: boolean;
}

const OUTBOX_KEYS = ['table', 'schema', 'create'] as const;

/** The datasource's `outbox` setting; undefined when absent or false. `max`: the dialect's longest name. */
export function parseOutboxSetting(r: SettingsReader, max: number): OutboxSettings | undefined {
  const value = r.raw('outbox');
  if (value === undefined || value === false) return undefined;
  if (value === true) return { table: DEFAULT_OUTBOX_TABLE, schema: undefined, create: true };
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw r.invalid(
      'outbox',
      `must be true or an object { table, schema, create } (got ${JSON.stringify(value)})`,
    );
  }
  const o = r.at('outbox', '{ table, schema, create }').closed(OUTBOX_KEYS);
  const table = checkName(o, 'table', o.string('table', DEFAULT_OUTBOX_TABLE), { max });
  const schema = o.string('schema');
  if (schema !== undefined) checkName(o, 'schema', schema, { max });
  return { table, schema, create: o.bool('create', true) };
}

/** Model keys that name a table of the model's own, refused with `outbox: true`. */
const OWN_TABLE_KEYS = ['table', 'database', 'snapshot'];

/**
 * Whether model `name` is fed from the outbox (`settings.outbox`: true / false / absent);
 * CONFIG_INVALID for another value, or for `outbox: true` beside a key of a table of its own.
 * The caller has already closed the model's keys.
 */
export function isOutboxModel(name: string, settings: Settings): boolean {
  const r = SettingsReader.forModel(name, settings);
  if (!r.bool('outbox', false)) return false;
  const own = OWN_TABLE_KEYS.find((k) => r.has(k));
  if (own !== undefined) {
    throw r.invalid(
      own,
      'cannot be given with outbox: true (the model has no table of its own: its events come from the outbox table)',
    );
  }
  return true;
}

/**
 * The names of the models fed from the outbox, in order; throws CONFIG_INVALID naming both keys
 * when there are some and the datasource has no `outbox` setting.
 */
export function outboxModels(
  connector: string,
  datasource: string,
  outbox: OutboxSettings | undefined,
  models: readonly { name: string; settings: Settings }[],
): string[] {
  const names = models.filter((m) => isOutboxModel(m.name, m.settings)).map((m) => m.name);
  if (names.length > 0 && outbox === undefined) {
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      `${connector} connector: models.${names[0]}.settings.outbox is true but datasources.${datasource}.outbox is not set: ` +
        `add "outbox": true (or { "table": "...", "schema": "...", "create": false }) to datasources.${datasource}, ` +
        `or remove outbox from the model and give it a table`,
      { context: { setting: `datasources.${datasource}.outbox`, model: names[0] } },
    );
  }
  return names;
}

/** Why an outbox row is a dead letter rather than an event of a model this connector reads. */
export function unknownOutboxModel(model: string, own: ReadonlySet<string>): string {
  return own.has(model)
    ? `outbox row names model "${model}", which reads its own table, not the outbox: set models.${model}.settings.outbox to true`
    : `outbox row names model "${model}", which this connector was not started with (no outbox model of that name)`;
}

/** A model as `check()` gets it. */
interface CheckedModel {
  name: string;
  settings: Settings;
}

/**
 * For `check()`: the models reading tables of their own and the names of those fed from the
 * outbox; a model whose outbox settings are wrong becomes an error finding (in `findings`)
 * instead of failing the whole check.
 */
export function splitForCheck<M extends CheckedModel>(
  connector: string,
  datasource: string,
  outbox: OutboxSettings | undefined,
  models: readonly M[],
  findings: SourceCheck[],
): { tableModels: M[]; fromOutbox: string[] } {
  const tableModels: M[] = [];
  const candidates: M[] = [];
  for (const model of models) {
    try {
      if (isOutboxModel(model.name, model.settings)) candidates.push(model);
      else tableModels.push(model);
    } catch (err) {
      findings.push({ what: `model ${model.name}`, level: 'error', detail: toError(err).message });
    }
  }
  try {
    return { tableModels, fromOutbox: outboxModels(connector, datasource, outbox, candidates) };
  } catch (err) {
    findings.push({ what: `model ${candidates[0]!.name}`, level: 'error', detail: toError(err).message });
    return { tableModels, fromOutbox: [] };
  }
}
