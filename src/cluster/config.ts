/**
 * The `cluster:` configuration: which store holds the leases, and their timing.
 *
 *   cluster:
 *     store: postgres | redis | nats
 *     url: postgres://... | redis://... | nats://...
 *     leaseTtl: 15s            # ms as a number, or '1500ms', '15s', '1m'; default 15 s, at least 3 s
 *     renewInterval: 5s        # default leaseTtl / 3; leaseTtl must be at least 3 × renewInterval
 *     name: orders             # the cluster's name: prefix of its rows / keys; letters, digits, - _
 *     instance: web-1          # this instance's name; default `<hostname>-<pid>`
 *     table: evpub_leases      # postgres only; membersTable too
 *     prefix: 'evpub:'         # redis only
 *     bucket: evpub_leases     # nats only
 *     tls: { ca, cert, key, passphrase, servername, rejectUnauthorized }   # src/util/tls.ts
 *     username: evpub          # redis and nats: instead of the URL's user
 *     password: ${file:/run/secrets/lease-pw}                              # redis and nats
 *     token / nkey / creds     # nats only: as the NATS adapter's nats.token / nkey / creds
 *
 * Credentials and TLS take the shape they have everywhere in evpub: `tls` as for the broker
 * adapters and checkpoint stores (`tls: true` is TLS with the system's CAs; `rediss://` and
 * `tls://` URLs turn TLS on too; for PostgreSQL without `tls` the URL's `sslmode` decides), a
 * PostgreSQL user and password in the URL, Redis `username` / `password` as the Redis checkpoint
 * store's, NATS ones as the NATS adapter's (pubsub/adapters/nats-auth.ts). The secrets
 * (`password`, `token`, `nkey`, `creds`, `tls.key`, `tls.passphrase`, a URL's password) are
 * never in a message, and src/util/redact.ts masks them in logs, `status()` and `/api/config`.
 *
 * `parseClusterConfig` checks a closed schema: an unknown key is an error naming the nearest
 * valid one; every message names the key and the fix. The result is frozen.
 */
import { hostname } from 'node:os';
import { ErrorCode, EvpubError } from '../errors';
import { URL_SSL_PARAMS } from '../connectors/postgres/settings';
import { natsCredentials } from '../pubsub/adapters/nats-options';
import { nearest } from '../util/nearest';
import { parseTls, type TlsSettings } from '../util/tls';

export const CLUSTER_STORES = ['postgres', 'redis', 'nats'] as const;
export type ClusterStore = (typeof CLUSTER_STORES)[number];

export const DEFAULT_LEASE_TTL = 15_000;
/** The shortest `leaseTtl` a configuration may give. */
export const MIN_LEASE_TTL = 3_000;

export interface ClusterConfig {
  readonly store: ClusterStore;
  readonly url: string;
  /** ms */
  readonly leaseTtl: number;
  /** ms */
  readonly renewInterval: number;
  readonly name: string;
  readonly instance: string;
  readonly table?: string;
  readonly membersTable?: string;
  readonly prefix?: string;
  readonly bucket?: string;
  /** TLS to the store (`cluster.tls`). */
  readonly tls?: TlsSettings;
  /** redis and nats: the user, instead of the URL's. */
  readonly username?: string;
  /** redis and nats: the password, instead of the URL's. A secret. */
  readonly password?: string;
  /** nats: a server token. A secret. */
  readonly token?: string;
  /** nats: an NKey user seed, or a file holding one. A secret. */
  readonly nkey?: string;
  /** nats: a `.creds` file (user JWT and seed), or its text. A secret. */
  readonly creds?: string;
}

const COMMON_KEYS = ['store', 'url', 'leaseTtl', 'renewInterval', 'name', 'instance', 'tls'];
const STORE_KEYS: Record<ClusterStore, string[]> = {
  postgres: ['table', 'membersTable'],
  redis: ['prefix', 'username', 'password'],
  nats: ['bucket', 'username', 'password', 'token', 'nkey', 'creds'],
};
/** Store keys checked as plain names (the NATS secrets by natsCredentials). */
const TEXT_KEYS = ['table', 'membersTable', 'prefix', 'bucket', 'username', 'password'];
const SCHEMES: Record<ClusterStore, string[]> = {
  postgres: ['postgres:', 'postgresql:'],
  redis: ['redis:', 'rediss:'],
  nats: ['nats:', 'tls:'],
};
const NAME = /^[A-Za-z0-9_-]{1,64}$/;

function invalid(key: string, message: string): EvpubError {
  return new EvpubError(ErrorCode.CONFIG_INVALID, `${key}: ${message}`, { context: { key } });
}

/** A duration in ms: a whole number, or a string like `1500ms`, `15s`, `1.5s`, `2m`. */
export function parseDuration(value: unknown, key: string): number {
  if (typeof value === 'number' && Number.isInteger(value) && value > 0) return value;
  if (typeof value === 'string') {
    const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)\s*$/.exec(value);
    if (m) {
      const ms = Math.round(Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 's' ? 1000 : 60_000));
      if (ms > 0) return ms;
    }
  }
  throw invalid(
    key,
    `${JSON.stringify(value)} must be a duration: milliseconds as a number, or like '1500ms', '15s', '1m'`,
  );
}

function text(raw: Record<string, unknown>, key: string, path: string): string | undefined {
  const value = raw[key];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '')
    throw invalid(`${path}.${key}`, 'must be a non-empty string');
  return value;
}

/** The validated, frozen `cluster` section; `path` is where it sits in the configuration. */
export function parseClusterConfig(raw: unknown, path = 'cluster'): ClusterConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw invalid(path, 'must be an object like { store: postgres, url: postgres://..., name: orders }');
  }
  const section = raw as Record<string, unknown>;
  const store = section.store;
  if (typeof store !== 'string' || !(CLUSTER_STORES as readonly string[]).includes(store)) {
    const hint = typeof store === 'string' ? nearest(store, CLUSTER_STORES) : undefined;
    throw invalid(
      `${path}.store`,
      `${JSON.stringify(store)} is not a lease store; use one of ${CLUSTER_STORES.join(', ')}${hint ? ` (did you mean ${hint}?)` : ''}`,
    );
  }
  const kind = store as ClusterStore;
  const allowed = [...COMMON_KEYS, ...STORE_KEYS[kind]];
  for (const key of Object.keys(section)) {
    if (allowed.includes(key)) continue;
    const others = CLUSTER_STORES.filter((s) => STORE_KEYS[s].includes(key));
    if (others.length > 0) {
      throw invalid(`${path}.${key}`, `applies to the ${others.join(' and ')} store only, not ${kind}`);
    }
    const hint = nearest(key, allowed);
    throw invalid(
      `${path}.${key}`,
      `unknown key${hint ? `; did you mean ${hint}?` : `; valid keys: ${allowed.join(', ')}`}`,
    );
  }

  const url = text(section, 'url', path);
  if (url === undefined)
    throw invalid(
      `${path}.url`,
      `is required: the ${kind} server's URL, like ${SCHEMES[kind][0]}//127.0.0.1`,
    );
  let scheme: string;
  try {
    scheme = new URL(url).protocol;
  } catch {
    throw invalid(`${path}.url`, `must be a URL like ${SCHEMES[kind][0]}//127.0.0.1`);
  }
  if (!SCHEMES[kind].includes(scheme)) {
    throw invalid(
      `${path}.url`,
      `must be a ${SCHEMES[kind].map((s) => `${s}//`).join(' or ')} URL for the ${kind} store`,
    );
  }

  const leaseTtl =
    section.leaseTtl === undefined ? DEFAULT_LEASE_TTL : parseDuration(section.leaseTtl, `${path}.leaseTtl`);
  if (leaseTtl < MIN_LEASE_TTL) {
    throw invalid(
      `${path}.leaseTtl`,
      `${leaseTtl} ms is too short; give at least ${MIN_LEASE_TTL / 1000}s (default ${DEFAULT_LEASE_TTL / 1000}s)`,
    );
  }
  const renewInterval =
    section.renewInterval === undefined
      ? Math.floor(leaseTtl / 3)
      : parseDuration(section.renewInterval, `${path}.renewInterval`);
  if (leaseTtl < 3 * renewInterval) {
    throw invalid(
      `${path}.leaseTtl`,
      `${leaseTtl} ms must be at least 3 × renewInterval (${renewInterval} ms), so that two renews may fail before the lease expires; raise leaseTtl or lower renewInterval`,
    );
  }

  const name = text(section, 'name', path);
  if (name === undefined || !NAME.test(name)) {
    throw invalid(
      `${path}.name`,
      `${name === undefined ? 'is required' : JSON.stringify(name) + ' is not valid'}: the cluster's name, 1-64 letters, digits, - or _`,
    );
  }
  const instance = text(section, 'instance', path) ?? `${hostname()}-${process.pid}`;
  if (instance.length > 200) throw invalid(`${path}.instance`, 'must be at most 200 characters');

  const config: ClusterConfig = { store: kind, url, leaseTtl, renewInterval, name, instance };
  const fields = config as unknown as Record<string, unknown>;
  for (const key of STORE_KEYS[kind]) {
    if (!TEXT_KEYS.includes(key)) continue;
    const value = text(section, key, path);
    if (value !== undefined) fields[key] = value;
  }
  if (kind === 'nats') Object.assign(fields, natsCredentials(section, path));
  const tls = clusterTls(section.tls, `${path}.tls`);
  if (tls !== undefined && kind === 'postgres') {
    // pg lets the URL's TLS parameters override its `ssl` option: tls would be ignored.
    const inUrl = URL_SSL_PARAMS.find((p) => new URL(url).searchParams.has(p));
    if (inUrl !== undefined) {
      throw invalid(
        `${path}.tls`,
        `cannot be given with "${inUrl}" in the url: remove ${inUrl} from the url (tls turns TLS on) or remove tls`,
      );
    }
  }
  if (tls !== undefined) fields.tls = Object.freeze(tls);
  return Object.freeze(config);
}

/** parseTls at `path`, its errors carrying the key (`cluster.tls.cert`) as the others here do. */
function clusterTls(raw: unknown, path: string): TlsSettings | undefined {
  try {
    return parseTls(raw, path);
  } catch (err) {
    if (!(err instanceof EvpubError)) throw err;
    const setting = typeof err.context.setting === 'string' ? err.context.setting : path;
    const message = err.message.startsWith(`${setting}: `)
      ? err.message.slice(setting.length + 2)
      : err.message;
    throw invalid(setting, message);
  }
}
