/**
 * Settings of the `websocket` connector, validated in `initialize()` (datasource) and `start()`
 * (models). See docs/connectors/websocket.md.
 *
 * Datasource: `url` (ws:// or wss://, required), `headers`, `subscribe`, `resume`
 * (`{ param, beginning? }`: the server resumes after a cursor given as `?<param>=<cursor>`),
 * `connectTimeout`, `reconnectDelay`, `maxReconnectDelay`, `pingInterval`, `pingTimeout`,
 * `maxPayload`, `tls` (`{ ca, cert, key, passphrase, servername, rejectUnauthorized }` for a
 * wss:// server, src/util/tls.ts), and default mapping settings for every model (kit/json-mapping.ts, plus
 * `cursorPath`). Model: `subscribe`, `cursorPath` and the mapping settings, which override the
 * datasource's.
 */
import { redact } from '../../errors';
import { parseTls, type LoadedTls, type TlsSettings } from '../../util/tls';
import {
  MAPPING_KEYS,
  parseMapping,
  parsePath,
  withModel,
  type JsonPath,
  type Mapping,
} from '../kit/json-mapping';
import { invalidSetting, SettingsReader, type Settings } from '../kit/settings';

export interface WebSocketSettings {
  /** The URL as configured (secrets included): only for connecting, never for logs. */
  url: string;
  /** The URL for logs and errors: no credentials, no query string. */
  displayUrl: string;
  headers: Record<string, string>;
  resume: { param: string; beginning?: string } | undefined;
  connectTimeout: number;
  reconnectDelay: number;
  maxReconnectDelay: number;
  /** 0 disables pings. */
  pingInterval: number;
  pingTimeout: number;
  maxPayload: number;
  /** The raw settings, for the per-model defaults. */
  defaults: Readonly<Record<string, unknown>>;
  /** The `tls` setting, validated, and where it sits; `ssl` is it loaded (by the connector). */
  tls: TlsSettings | undefined;
  tlsPath: string;
  ssl?: LoadedTls;
}

export interface WebSocketModelSettings {
  mapping: Mapping;
  cursorPath: JsonPath | undefined;
  /** The messages sent after each connection, as text. */
  subscribe: string[];
}

const MODEL_KEYS = ['subscribe', 'cursorPath', ...MAPPING_KEYS] as const;

export const WEBSOCKET_SETTING_KEYS = [
  'url',
  'headers',
  'resume',
  'connectTimeout',
  'reconnectDelay',
  'maxReconnectDelay',
  'pingInterval',
  'pingTimeout',
  'maxPayload',
  'tls',
  ...MODEL_KEYS,
] as const;

/** For logs: scheme, host and path only (no user info, no query string with tokens). */
export function displayUrl(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

export function parseWebSocketSettings(settings: Settings, name: string): WebSocketSettings {
  const r = SettingsReader.forDataSource(name, settings).closed(WEBSOCKET_SETTING_KEYS);
  const WHERE = r.where;
  const raw = settings.url;
  if (typeof raw !== 'string' || raw === '') {
    throw invalidSetting(WHERE, 'url', 'is required: the ws:// or wss:// URL of the event stream');
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw invalidSetting(WHERE, 'url', `must be a ws:// or wss:// URL (got ${redact(raw)})`);
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw invalidSetting(WHERE, 'url', `must be a ws:// or wss:// URL (got ${displayUrl(url)})`);
  }
  const headers = settings.headers ?? {};
  if (
    typeof headers !== 'object' ||
    headers === null ||
    Array.isArray(headers) ||
    Object.values(headers).some((v) => typeof v !== 'string')
  ) {
    throw invalidSetting(WHERE, 'headers', 'must be an object of header names to string values');
  }
  let resume: WebSocketSettings['resume'];
  if (settings.resume !== undefined && settings.resume !== null) {
    const r = settings.resume as Record<string, unknown>;
    if (typeof r !== 'object' || typeof r.param !== 'string' || r.param === '') {
      throw invalidSetting(WHERE, 'resume', 'must be { param: "since", beginning?: "0" }');
    }
    if (r.beginning !== undefined && typeof r.beginning !== 'string') {
      throw invalidSetting(
        WHERE,
        'resume.beginning',
        'must be a string (the cursor that means "from the start")',
      );
    }
    resume = { param: r.param, ...(typeof r.beginning === 'string' ? { beginning: r.beginning } : {}) };
  }
  const { reconnectDelay, maxReconnectDelay } = r.reconnect({
    reconnectDelay: 500,
    maxReconnectDelay: 30_000,
  });
  // The datasource's mapping defaults are checked now; each model's merge again at start.
  const defaults = Object.fromEntries(MAPPING_KEYS.filter((k) => k in settings).map((k) => [k, settings[k]]));
  parseMapping(defaults, WHERE, '{model}');
  return {
    url: raw,
    displayUrl: displayUrl(url),
    headers: headers as Record<string, string>,
    resume,
    connectTimeout: r.int('connectTimeout', 10_000),
    reconnectDelay,
    maxReconnectDelay,
    pingInterval: r.int('pingInterval', 30_000, 0),
    pingTimeout: r.int('pingTimeout', 10_000),
    maxPayload: r.int('maxPayload', 100 * 1024 * 1024),
    defaults: settings,
    tls: parseTls(r.raw('tls'), r.path('tls')),
    tlsPath: r.path('tls'),
  };
}

/** A model's settings over the datasource's defaults; throws CONFIG_INVALID naming the key. */
export function parseWebSocketModel(
  ds: WebSocketSettings,
  model: string,
  modelSettings: Readonly<Record<string, unknown>>,
): WebSocketModelSettings {
  const where = SettingsReader.forModel(model, modelSettings).closed(MODEL_KEYS).where;
  const merged: Record<string, unknown> = {};
  for (const key of MODEL_KEYS) {
    const value = modelSettings[key] ?? ds.defaults[key];
    if (value !== undefined) merged[key] = value;
  }
  const mapping = parseMapping(merged, where, model);
  if (!mapping.keyPath) {
    throw invalidSetting(
      where,
      'keyPath',
      'is required (on the model or the datasource): the path of the record key, e.g. "data.id"',
    );
  }
  const cursorPath =
    merged.cursorPath === undefined ? undefined : parsePath(merged.cursorPath, where, 'cursorPath');
  if (ds.resume && !cursorPath) {
    throw invalidSetting(
      where,
      'cursorPath',
      'is required when the datasource sets `resume`: the path of the message cursor',
    );
  }
  const subscribe =
    merged.subscribe === undefined
      ? []
      : Array.isArray(merged.subscribe)
        ? merged.subscribe
        : [merged.subscribe];
  return {
    mapping,
    cursorPath,
    subscribe: subscribe.map((m) => {
      const value = withModel(m, model);
      return typeof value === 'string' ? value : JSON.stringify(value);
    }),
  };
}
