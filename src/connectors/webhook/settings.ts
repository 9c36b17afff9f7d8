/**
 * Settings of the webhook connector, validated once in `initialize()`.
 *
 * Datasource settings (`datasources.<name>`):
 * - `port` (required): the TCP port to listen on; 0 picks a free one (read it from `health()`).
 * - `host`: the interface to bind (default `127.0.0.1`; `0.0.0.0` for every interface).
 * - `basePath`: a prefix of every model's path (default none), e.g. `/hooks`.
 * - `ackTimeout`: ms a request waits for the broker to accept its event before it is answered
 *   503 (default 30000).
 * - `retryAfter`: seconds put in `Retry-After` on 503 answers (default 1).
 * - `bodyLimit`, `signature`, and any model setting below: defaults for every model.
 *
 * Model settings (`models.<name>`):
 * - `path`: the endpoint, below `basePath` (default `/{model}`; `{model}` is replaced).
 * - `keyPath` (default `id`): dotted JSON path to the record's key in the body.
 * - `opPath`: dotted path to the sender's operation value; `opMap` maps those values to
 *   `create`/`update`/`delete` (values the map lacks are used as they are when they are one of
 *   the three); `defaultOp` (default `update`) when the path is absent or the value unknown.
 * - `dataPath`: dotted path to the record itself (default: the whole body).
 * - `idPath` / `idHeader`: where the sender's own event id is (body path or request header);
 *   with one, the event's idempotency key derives from it, so the sender's retries of one
 *   event carry the same id. Without, each request gets a fresh id.
 * - `bodyLimit`: the largest body in bytes (default 1048576); larger → 413.
 * - `signature`: `{ header, secret, algorithm: 'sha256' | 'sha1' (default sha256), prefix
 *   (e.g. 'sha256='), encoding: 'hex' | 'base64' (default hex) }`: the body's HMAC, compared in
 *   constant time; missing or wrong → 401. The secret is never logged nor echoed in errors.
 */
import type { Operation } from '../../events/change-event';
import { compilePath, type JsonPath } from '../kit/json-path';
import { SettingsReader, type Settings } from '../kit/settings';

export interface SignatureSettings {
  header: string;
  secret: string;
  algorithm: 'sha256' | 'sha1';
  prefix: string;
  encoding: 'hex' | 'base64';
}

export interface WebhookSettings {
  port: number;
  host: string;
  basePath: string;
  ackTimeout: number;
  retryAfter: number;
}

export interface WebhookModelSettings {
  /** The full route: basePath + path. */
  route: string;
  keyPath: JsonPath;
  opPath: JsonPath | undefined;
  opMap: Record<string, Operation>;
  defaultOp: Operation;
  dataPath: JsonPath;
  idPath: JsonPath | undefined;
  idHeader: string | undefined;
  bodyLimit: number;
  signature: SignatureSettings | undefined;
}

const MODEL_KEYS = [
  'path',
  'keyPath',
  'opPath',
  'opMap',
  'defaultOp',
  'dataPath',
  'idPath',
  'idHeader',
  'bodyLimit',
  'signature',
] as const;

export const WEBHOOK_SETTING_KEYS = [
  'port',
  'host',
  'basePath',
  'ackTimeout',
  'retryAfter',
  ...MODEL_KEYS,
] as const;

function normalisePath(path: string): string {
  const withSlash = path.startsWith('/') ? path : `/${path}`;
  return withSlash.length > 1 && withSlash.endsWith('/') ? withSlash.slice(0, -1) : withSlash;
}

export function parseWebhookSettings(settings: Settings, datasource: string): WebhookSettings {
  const r = SettingsReader.forDataSource(datasource, settings).closed(WEBHOOK_SETTING_KEYS);
  if (!r.has('port')) throw r.invalid('port', 'is required: the port to listen on (0 for a free one)');
  const port = r.int('port', 0, 0);
  if (port > 65535) throw r.invalid('port', 'must be at most 65535');
  const basePath = r.string('basePath', '');
  return {
    port,
    host: r.string('host', '127.0.0.1'),
    basePath: basePath === '' || basePath === '/' ? '' : normalisePath(basePath),
    ackTimeout: r.int('ackTimeout', 30_000),
    retryAfter: r.int('retryAfter', 1),
  };
}

function parseSignature(r: SettingsReader): SignatureSettings | undefined {
  if (!r.has('signature')) return undefined;
  const s = r
    .at('signature', '{ header, secret, algorithm?, prefix?, encoding? }')
    .closed(['header', 'secret', 'algorithm', 'prefix', 'encoding']);
  const header = s.string('header');
  const secret = s.secret('secret');
  if (!header) throw s.invalid('header', 'is required: the request header carrying the signature');
  if (!secret) throw s.invalid('secret', 'is required: the shared HMAC secret');
  return {
    header: header.toLowerCase(),
    secret,
    algorithm: s.oneOf('algorithm', ['sha256', 'sha1'] as const, 'sha256'),
    prefix: s.has('prefix') ? String(s.raw('prefix')) : '',
    encoding: s.oneOf('encoding', ['hex', 'base64'] as const, 'hex'),
  };
}

/** A model's settings, the datasource's as defaults. */
export function parseWebhookModel(
  model: string,
  modelSettings: Settings,
  dataSourceSettings: Settings,
  base: WebhookSettings,
): WebhookModelSettings {
  SettingsReader.forModel(model, modelSettings).closed(MODEL_KEYS);
  const merged: Record<string, unknown> = {};
  for (const key of MODEL_KEYS) {
    const value = modelSettings[key] ?? dataSourceSettings[key];
    if (value !== undefined) merged[key] = value;
  }
  const r = SettingsReader.forModel(model, merged);
  const path = normalisePath(r.string('path', '/{model}').replace(/\{model\}/g, model));
  const opPath = r.string('opPath');
  const idPath = r.string('idPath');
  const idHeader = r.string('idHeader');
  return {
    route: `${base.basePath}${path}`,
    keyPath: compilePath(r.string('keyPath', 'id')),
    opPath: opPath === undefined ? undefined : compilePath(opPath),
    opMap: r.opMap('opMap'),
    defaultOp: r.op('defaultOp', 'update'),
    dataPath: compilePath(r.string('dataPath', '')),
    idPath: idPath === undefined ? undefined : compilePath(idPath),
    idHeader: idHeader?.toLowerCase(),
    bodyLimit: r.int('bodyLimit', 1_048_576),
    signature: parseSignature(r),
  };
}
