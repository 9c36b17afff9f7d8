/**
 * Settings of the `bridge` connector, validated in `initialize()` (datasource) and `start()`
 * (models). See docs/connectors/bridge.md.
 *
 * Datasource: `url` (the source broker, any scheme the pub/sub client knows; required),
 * `options` (client options, as for `brokers.<name>.options`), `maxBuffered`, `stopTimeout`,
 * and defaults for every model: `format` and the mapping settings (kit/json-mapping.ts).
 * Model: `topics` (required), `durable`, `groupStart`, `format` and the mapping settings.
 */
import { redact } from '../../errors';
import { MAPPING_KEYS, parseMapping, type Mapping } from '../kit/json-mapping';
import { invalidSetting, SettingsReader, type Settings } from '../kit/settings';

export type PayloadFormat = 'json' | 'cloudevents' | 'raw';

export interface BridgeSettings {
  /** The URL as configured (secrets included): only for connecting, never for logs. */
  url: string;
  displayUrl: string;
  options: Readonly<Record<string, unknown>>;
  maxBuffered: number;
  stopTimeout: number;
  defaults: Readonly<Record<string, unknown>>;
}

export interface BridgeModelSettings {
  topics: string[];
  durable: string | undefined;
  groupStart: 'new' | 'earliest';
  format: PayloadFormat;
  mapping: Mapping;
}

const MODEL_KEYS = ['topics', 'durable', 'groupStart', 'format', ...MAPPING_KEYS] as const;
const DEFAULT_KEYS = ['format', ...MAPPING_KEYS] as const;

export const BRIDGE_SETTING_KEYS = ['url', 'options', 'maxBuffered', 'stopTimeout', ...DEFAULT_KEYS] as const;

function format(value: unknown, where: string): PayloadFormat {
  const f = value ?? 'json';
  if (f !== 'json' && f !== 'cloudevents' && f !== 'raw') {
    throw invalidSetting(
      where,
      'format',
      `must be "json", "cloudevents" or "raw" (got ${JSON.stringify(f)})`,
    );
  }
  return f;
}

export function parseBridgeSettings(settings: Settings, name: string): BridgeSettings {
  const r = SettingsReader.forDataSource(name, settings).closed(BRIDGE_SETTING_KEYS);
  const where = r.where;
  const url = settings.url;
  if (typeof url !== 'string' || url === '') {
    throw invalidSetting(
      where,
      'url',
      'is required: the URL of the broker to read from (mqtt://, redis://, amqp://, nats://, kafka://)',
    );
  }
  const options = settings.options ?? {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw invalidSetting(where, 'options', 'must be an object of pub/sub client options');
  }
  const defaults = Object.fromEntries(DEFAULT_KEYS.filter((k) => k in settings).map((k) => [k, settings[k]]));
  format(defaults.format, where);
  parseMapping(defaults, where, '{model}');
  return {
    url,
    displayUrl: redact(url),
    options: options as Record<string, unknown>,
    maxBuffered: r.positiveInt('maxBuffered', 10_000),
    stopTimeout: r.positiveInt('stopTimeout', 5_000),
    defaults,
  };
}

export function parseBridgeModel(
  ds: BridgeSettings,
  model: string,
  modelSettings: Readonly<Record<string, unknown>>,
): BridgeModelSettings {
  const where = SettingsReader.forModel(model, modelSettings).closed(MODEL_KEYS).where;
  const merged: Record<string, unknown> = { ...ds.defaults };
  for (const key of MODEL_KEYS) if (modelSettings[key] !== undefined) merged[key] = modelSettings[key];
  const topics = typeof merged.topics === 'string' ? [merged.topics] : merged.topics;
  if (
    !Array.isArray(topics) ||
    topics.length === 0 ||
    topics.some((t) => typeof t !== 'string' || t === '')
  ) {
    throw invalidSetting(
      where,
      'topics',
      'is required: a topic pattern or a list of them, e.g. "shop/+/orders"',
    );
  }
  const durable = merged.durable;
  if (durable !== undefined && (typeof durable !== 'string' || durable === '')) {
    throw invalidSetting(where, 'durable', 'must be a non-empty subscription name');
  }
  const groupStart = merged.groupStart ?? 'new';
  if (groupStart !== 'new' && groupStart !== 'earliest') {
    throw invalidSetting(
      where,
      'groupStart',
      `must be "new" or "earliest" (got ${JSON.stringify(groupStart)})`,
    );
  }
  if (merged.groupStart !== undefined && durable === undefined) {
    throw invalidSetting(where, 'groupStart', 'only applies to a durable subscription (set durable)');
  }
  return {
    topics: topics as string[],
    durable,
    groupStart,
    format: format(merged.format, where),
    mapping: parseMapping(merged, where, model),
  };
}
