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
 *
 * `parseClusterConfig` checks a closed schema: an unknown key is an error naming the nearest
 * valid one; every message names the key and the fix. The result is frozen.
 */
import { hostname } from 'node:os';
import { ErrorCode, EvpubError } from '../errors';
import { nearest } from '../util/nearest';

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
}

const COMMON_KEYS = ['store', 'url', 'leaseTtl', 'renewInterval', 'name', 'instance'];
const STORE_KEYS: Record<ClusterStore, string[]> = {
  postgres: ['table', 'membersTable'],
  redis: ['prefix'],
  nats: ['bucket'],
};
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
    const other = CLUSTER_STORES.find((s) => STORE_KEYS[s].includes(key));
    if (other) throw invalid(`${path}.${key}`, `applies to the ${other} store only, not ${kind}`);
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
  for (const key of STORE_KEYS[kind]) {
    const value = text(section, key, path);
    if (value !== undefined) (config as unknown as Record<string, string>)[key] = value;
  }
  return Object.freeze(config);
}
