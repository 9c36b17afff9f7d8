/**
 * Settings of the webhook connector, validated once: the datasource's in `initialize()`, the
 * models' when `start()` is called (before anything listens).
 *
 * Datasource settings (`datasources.<name>`):
 * - `port` (required): the TCP port to listen on; 0 picks a free one (read it from `health()`).
 * - `host`: the interface to bind (default `127.0.0.1`; `0.0.0.0` for every interface). On an
 *   address that is not loopback, every endpoint needs `auth` (or `tls.ca`, client
 *   certificates); `auth: 'none'` says an open endpoint is wanted.
 * - `basePath`: a prefix of every model's path (default none), e.g. `/hooks`.
 * - `ackTimeout`: ms a request waits for the broker to accept its event before it is answered
 *   503 (default 30000).
 * - `retryAfter`: seconds put in `Retry-After` on 503 answers (default 1).
 * - `tls`: serve HTTPS: `{ cert, key, passphrase?, ca?, rejectUnauthorized? }` (src/util/tls.ts;
 *   `cert` and `key` required). With `ca`, clients must present a certificate signed by it
 *   (`rejectUnauthorized: false`: asked for but not required).
 * - `bodyLimit`, `auth`, `signature`, `rateLimit` and any model setting below: defaults for
 *   every model.
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
 *   event carry the same id. Without, the `webhook-id` of standard-webhooks, else a fresh id.
 * - `bodyLimit`: the largest body in bytes (default 1048576); larger → 413.
 * - `auth` (see auth.ts): `'none'`, `{ scheme: 'standard-webhooks', secret: 'whsec_...',
 *   tolerance?: 300, replayCache?: 100000 }`, `{ scheme: 'hmac', header, secret, algorithm?,
 *   prefix?, encoding? }` or `{ scheme: 'token', token, header? }`. Failing → 401.
 * - `signature`: the older spelling of `auth: { scheme: 'hmac', ... }` (same keys but
 *   `scheme`), still accepted; not together with `auth`.
 * - `rateLimit`: `{ perSecond (default 100), burst (default 2 × perSecond) }` requests the
 *   endpoint takes; more → 429 with `Retry-After`. `false` turns it off.
 * Secrets are never logged nor echoed in errors.
 */
import { Webhook } from 'standardwebhooks';
import type { Operation } from '../../events/change-event';
import { parseTls, type TlsSettings } from '../../util/tls';
export { isLoopback } from '../../util/loopback';
import { compilePath, type JsonPath } from '../kit/json-path';
import { SettingsReader, type Settings } from '../kit/settings';
import type { HmacAuth, WebhookAuth } from './auth';

/** The HMAC scheme's settings (the `signature` setting). */
export type SignatureSettings = HmacAuth;

export interface WebhookSettings {
  port: number;
  host: string;
  basePath: string;
  ackTimeout: number;
  retryAfter: number;
  tls: TlsSettings | undefined;
}

export interface RateLimit {
  perSecond: number;
  burst: number;
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
  /** Undefined: none configured (allowed on loopback only); `{ scheme: 'none' }`: said explicitly. */
  auth: WebhookAuth | undefined;
  /** Where `auth` was read (`models.o.settings.auth`, or `...signature`), for messages. */
  authSetting: string;
  rateLimit: RateLimit | undefined;
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
  'auth',
  'signature',
  'rateLimit',
] as const;

export const WEBHOOK_SETTING_KEYS = [
  'port',
  'host',
  'basePath',
  'ackTimeout',
  'retryAfter',
  'tls',
  ...MODEL_KEYS,
] as const;

export const DEFAULT_RATE = 100;
export const DEFAULT_TOLERANCE = 300;
export const DEFAULT_REPLAY_CACHE = 100_000;

function normalisePath(path: string): string {
  const withSlash = path.startsWith('/') ? path : `/${path}`;
  return withSlash.length > 1 && withSlash.endsWith('/') ? withSlash.slice(0, -1) : withSlash;
}

/** A server's TLS: parseTls's shape, with cert and key required and no client-only keys. */
function serverTls(r: SettingsReader): TlsSettings | undefined {
  const tls = parseTls(r.raw('tls'), r.path('tls'));
  if (tls === undefined) return undefined;
  if (tls.cert === undefined) {
    throw r.invalid('tls.cert', "is required to serve HTTPS: the server's certificate (and tls.key)");
  }
  if (tls.servername !== undefined) {
    throw r.invalid('tls.servername', 'is for connections evpub makes; a server does not take it');
  }
  return tls;
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
    tls: serverTls(r),
  };
}

const HMAC_KEYS = ['header', 'secret', 'algorithm', 'prefix', 'encoding'] as const;

function parseHmac(s: SettingsReader): HmacAuth {
  const header = s.string('header');
  const secret = s.secret('secret');
  if (!header) throw s.invalid('header', 'is required: the request header carrying the signature');
  if (!secret) throw s.invalid('secret', 'is required: the shared HMAC secret');
  return {
    scheme: 'hmac',
    header: header.toLowerCase(),
    secret,
    algorithm: s.oneOf('algorithm', ['sha256', 'sha1'] as const, 'sha256'),
    prefix: s.has('prefix') ? String(s.raw('prefix')) : '',
    encoding: s.oneOf('encoding', ['hex', 'base64'] as const, 'hex'),
  };
}

const SCHEMES = ['standard-webhooks', 'hmac', 'token'] as const;
const AUTH_SHAPE =
  "'none' or { scheme: 'standard-webhooks', secret: 'whsec_...' } (or scheme 'hmac' / 'token')";

function parseAuth(r: SettingsReader): WebhookAuth {
  const raw = r.raw('auth');
  if (raw === 'none') return { scheme: 'none' };
  if (typeof raw === 'string') throw r.invalid('auth', `must be ${AUTH_SHAPE} (got ${JSON.stringify(raw)})`);
  const a = r.at('auth', AUTH_SHAPE);
  if (!a.has('scheme')) {
    throw a.invalid('scheme', `is required: one of ${SCHEMES.map((s) => `'${s}'`).join(', ')}`);
  }
  const scheme = a.oneOf('scheme', SCHEMES, 'standard-webhooks');
  if (scheme === 'hmac') return parseHmac(a.closed(['scheme', ...HMAC_KEYS]));
  if (scheme === 'token') {
    a.closed(['scheme', 'token', 'header']);
    const token = a.secret('token');
    if (!token) throw a.invalid('token', 'is required: the shared token the sender presents');
    return { scheme: 'token', token, header: (a.string('header') ?? 'authorization').toLowerCase() };
  }
  a.closed(['scheme', 'secret', 'tolerance', 'replayCache']);
  const secret = a.secret('secret');
  if (!secret) throw a.invalid('secret', "is required: the endpoint's secret, whsec_ followed by base64");
  let webhook: Webhook;
  try {
    if (!/^(whsec_)?[A-Za-z0-9+/]+={0,2}$/.test(secret)) throw new Error('not base64');
    webhook = new Webhook(secret);
  } catch {
    throw a.invalid('secret', 'must be whsec_ followed by the base64 of the key (as the sender shows it)');
  }
  return {
    scheme: 'standard-webhooks',
    webhook,
    tolerance: a.positiveInt('tolerance', DEFAULT_TOLERANCE),
    replayCache: a.positiveInt('replayCache', DEFAULT_REPLAY_CACHE),
  };
}

function parseRateLimit(r: SettingsReader): RateLimit | undefined {
  if (r.raw('rateLimit') === false) return undefined;
  const l = r.at('rateLimit', '{ perSecond, burst } or false').closed(['perSecond', 'burst']);
  const perSecond = l.positiveInt('perSecond', DEFAULT_RATE);
  return { perSecond, burst: l.positiveInt('burst', 2 * perSecond) };
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
  // A model's own auth (or signature) replaces the datasource's, whichever spelling each uses.
  const own = modelSettings.auth !== undefined || modelSettings.signature !== undefined;
  if (own) {
    if (modelSettings.auth === undefined) delete merged.auth;
    if (modelSettings.signature === undefined) delete merged.signature;
  }
  const r = SettingsReader.forModel(model, merged);
  if (r.has('auth') && r.has('signature')) {
    throw r.invalid('signature', "cannot be given with auth: write it as auth: { scheme: 'hmac', ... }");
  }
  const path = normalisePath(r.string('path', '/{model}').replace(/\{model\}/g, model));
  const opPath = r.string('opPath');
  const idPath = r.string('idPath');
  const idHeader = r.string('idHeader');
  const auth = r.has('auth')
    ? parseAuth(r)
    : r.has('signature')
      ? parseHmac(r.at('signature', '{ header, secret, algorithm?, prefix?, encoding? }').closed(HMAC_KEYS))
      : undefined;
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
    auth,
    authSetting: r.path(r.has('signature') ? 'signature' : 'auth'),
    rateLimit: parseRateLimit(r),
  };
}
