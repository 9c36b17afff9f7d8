/**
 * Leases in Redis, judged by the server's key TTLs. Keys (all under `<prefix>{<cluster>}:`, the
 * braces keep one cluster's keys in one Redis Cluster slot so that the scripts may touch them):
 *
 *   lease:<unit>   "<epoch>:<holder>" with a PX TTL: present means held
 *   epoch:<unit>   the unit's epoch counter (INCR), never expires
 *   members        sorted set: instance → expiry (server time, ms)
 *   member-info    hash: instance → info (JSON)
 *
 * - acquire (one script): when `lease:<unit>` exists, it succeeds only for the same holder (the
 *   TTL is extended, same epoch); otherwise `INCR epoch:<unit>` and `SET lease:<unit> NX PX ttl`.
 *   Scripts run one at a time, so of concurrent acquirers exactly one finds the key absent.
 * - renew / release (scripts): compare the value with "<epoch>:<holder>", then PEXPIRE / DEL.
 *   An expired key is gone, so a late renew finds nothing and is LEASE_LOST.
 * - members: scores are expiries from the server's `TIME`; `members()` drops the expired ones.
 *
 * ioredis is loaded on first use. Commands fail at once while the connection is down (no offline
 * queue) and after `opTimeout` (default 5 s) when the server does not answer: a retriable
 * LEASE_FAILED, while ioredis reconnects on its own.
 *
 * Security, as the Redis checkpoint store's: `rediss://` or `tls` (`cluster.tls`,
 * src/util/tls.ts) turns TLS on; an ACL user comes from the URL (`rediss://user:pass@host`) or
 * `username` / `password`. When the first connection fails, a TLS failure is EVPUB_TLS_FAILED
 * naming `cluster.tls` (with TLS 1.3 a refused client certificate may show only as a reset: one
 * probe connection reads the server's alert, util/tls probeTls), refused credentials
 * EVPUB_AUTH_FAILED; neither is retriable.
 */
import type { Redis as RedisClient, RedisOptions } from 'ioredis';
import { ErrorCode, EvpubError, redact } from '../errors';
import type { Logger } from '../logger';
import { isAuthError } from '../pubsub/adapters/redis-connections';
import { loadDriver } from '../util/driver';
import { loadTls, probeTls, tlsFailure, type LoadedTls, type TlsSettings } from '../util/tls';
import {
  checkName,
  checkTtl,
  deadlineOf,
  leaseFailed,
  leaseLost,
  monotonicNow,
  type Lease,
  type LeaseState,
  type LeaseStore,
  type Member,
} from './lease';

export const DEFAULT_LEASE_PREFIX = 'evpub:';

export interface RedisLeaseOptions {
  url: string;
  /** The cluster's name: part of every key. */
  cluster: string;
  /** Key prefix, default `evpub:`. */
  prefix?: string;
  /** Bound on the connect and on every command, ms (default 5000). */
  opTimeout?: number;
  /** TLS (`cluster.tls`); `rediss://` turns TLS on too. */
  tls?: TlsSettings;
  /** ACL user and password; override the URL's. */
  username?: string;
  password?: string;
  /** Told once when TLS verification is turned off. */
  logger?: Logger;
}

/** The server's time in ms, inside a script. */
const NOW = `local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

// KEYS: lease, epoch. ARGV: holder, ttl, least new epoch. → {epoch, expiresAt} or nil.
const ACQUIRE = `${NOW}
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ':', 1, true)
  if string.sub(cur, sep + 1) ~= ARGV[1] then return nil end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {string.sub(cur, 1, sep - 1), tostring(now + tonumber(ARGV[2]))}
end
local epoch = redis.call('INCR', KEYS[2])
if epoch < tonumber(ARGV[3]) then
  epoch = tonumber(ARGV[3])
  redis.call('SET', KEYS[2], epoch)
end
redis.call('SET', KEYS[1], epoch .. ':' .. ARGV[1], 'NX', 'PX', ARGV[2])
return {tostring(epoch), tostring(now + tonumber(ARGV[2]))}`;

// KEYS: lease. ARGV: "<epoch>:<holder>", ttl. → expiresAt or nil.
const RENEW = `${NOW}
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return nil end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return tostring(now + tonumber(ARGV[2]))`;

// KEYS: lease. ARGV: "<epoch>:<holder>". → 1 or 0.
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

// KEYS: lease, epoch. → {value or false, pttl, epoch counter or false, now}.
const READ = `${NOW}
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[2]), tostring(now)}`;

// KEYS: members, member-info. ARGV: instance, info, ttl.
const JOIN = `${NOW}
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1`;

// KEYS: members, member-info. → {instance, expiry, info, ...} of the live ones.
const MEMBERS = `${NOW}
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, m in ipairs(gone) do redis.call('ZREM', KEYS[1], m); redis.call('HDEL', KEYS[2], m) end
local live = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #live, 2 do
  table.insert(out, live[i]); table.insert(out, live[i + 1])
  table.insert(out, redis.call('HGET', KEYS[2], live[i]) or '{}')
end
return out`;

export class RedisLeaseStore implements LeaseStore {
  readonly name = 'redis';
  private readonly base: string;
  private readonly endpoint: string;
  private client: Promise<RedisClient> | undefined;

  constructor(private readonly options: RedisLeaseOptions) {
    checkName(options.cluster, 'cluster.name');
    this.base = `${options.prefix ?? DEFAULT_LEASE_PREFIX}{${options.cluster}}:`;
    this.endpoint = redact(options.url);
  }

  private connect(): Promise<RedisClient> {
    this.client ??= (async () => {
      const { Redis } = await loadDriver<typeof import('ioredis')>('ioredis', 'Redis lease store');
      let client: RedisClient;
      try {
        client = new Redis(this.options.url, this.driverOptions());
      } catch (err) {
        this.client = undefined; // a TLS file that cannot be read
        throw err;
      }
      let lastError: unknown;
      client.on('error', (err: unknown) => (lastError = err)); // commands report what matters
      try {
        await client.connect();
      } catch (err) {
        client.disconnect();
        this.client = undefined;
        const cause = lastError ?? err;
        throw (
          (await this.refusal(cause, client.options.tls)) ??
          leaseFailed('redis', `connect to ${this.endpoint}`, cause)
        );
      }
      return client;
    })();
    return this.client;
  }

  private driverOptions(): RedisOptions {
    const o = this.options;
    const timeout = o.opTimeout ?? 5000;
    const opts: RedisOptions = {
      lazyConnect: true,
      connectTimeout: timeout,
      commandTimeout: timeout,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      retryStrategy: (times) => Math.min(100 * 2 ** times, 2000),
    };
    if (o.username !== undefined) opts.username = o.username;
    if (o.password !== undefined) opts.password = o.password;
    if (o.tls !== undefined || /^rediss:/i.test(o.url)) {
      opts.tls = loadTls(o.tls ?? {}, 'cluster.tls', { endpoint: this.endpoint, logger: o.logger });
    }
    return opts;
  }

  /** TLS_FAILED or AUTH_FAILED when the server refused this configuration; else undefined. */
  private async refusal(err: unknown, tlsOptions: LoadedTls | undefined): Promise<EvpubError | undefined> {
    const tls = tlsFailure(err, this.endpoint, 'cluster.tls');
    if (tls) return tls;
    const code = (err as NodeJS.ErrnoException | undefined)?.code;
    if (tlsOptions && (code === 'ECONNRESET' || code === 'EPIPE')) {
      const url = new URL(this.options.url);
      const timeoutMs = this.options.opTimeout ?? 5000;
      const why = await probeTls(url.hostname || 'localhost', Number(url.port || 6379), tlsOptions, {
        timeoutMs,
      });
      const failure = why && tlsFailure(why, this.endpoint, 'cluster.tls');
      if (failure) return failure;
    }
    if (!isAuthError(err)) return undefined;
    return new EvpubError(
      ErrorCode.AUTH_FAILED,
      `the Redis lease store at ${this.endpoint} refused the credentials (cluster.username / cluster.password or the URL's): ${(err as Error).message}`,
      { cause: err, context: { store: 'redis' } },
    );
  }

  private async run<T>(
    what: string,
    context: Record<string, unknown>,
    fn: (c: RedisClient) => Promise<T>,
  ): Promise<T> {
    const client = await this.connect();
    try {
      return await fn(client);
    } catch (err) {
      throw leaseFailed('redis', what, err, context);
    }
  }

  private key(kind: string, name = ''): string {
    return `${this.base}${kind}${name === '' ? '' : `:${name}`}`;
  }

  async acquire(unit: string, holder: string, ttlMs: number, minEpoch = 1): Promise<Lease | null> {
    checkName(unit, 'unit');
    checkName(holder, 'holder');
    checkTtl(ttlMs);
    const sentAt = monotonicNow();
    const got = (await this.run(`acquire ${unit}`, { unit }, (c) =>
      c.eval(ACQUIRE, 2, this.key('lease', unit), this.key('epoch', unit), holder, ttlMs, minEpoch),
    )) as [string, string] | null;
    if (!got) return null;
    return {
      unit,
      holder,
      epoch: Number(got[0]),
      expiresAt: Number(got[1]),
      ttlMs,
      deadline: deadlineOf(sentAt, ttlMs),
    };
  }

  async renew(lease: Lease): Promise<Lease> {
    const sentAt = monotonicNow();
    const got = (await this.run(`renew ${lease.unit}`, { unit: lease.unit }, (c) =>
      c.eval(RENEW, 1, this.key('lease', lease.unit), `${lease.epoch}:${lease.holder}`, lease.ttlMs),
    )) as string | null;
    if (got === null) throw leaseLost(lease, this.name, 'it expired or another instance took it');
    return { ...lease, expiresAt: Number(got), deadline: deadlineOf(sentAt, lease.ttlMs) };
  }

  async release(lease: Lease): Promise<boolean> {
    const n = await this.run(`release ${lease.unit}`, { unit: lease.unit }, (c) =>
      c.eval(RELEASE, 1, this.key('lease', lease.unit), `${lease.epoch}:${lease.holder}`),
    );
    return n === 1;
  }

  async read(unit: string): Promise<LeaseState | undefined> {
    const [value, pttl, counter, now] = (await this.run(`read ${unit}`, { unit }, (c) =>
      c.eval(READ, 2, this.key('lease', unit), this.key('epoch', unit)),
    )) as [string | null, number, string | null, string];
    if (value === null) {
      if (counter === null) return undefined;
      return { unit, holder: undefined, epoch: Number(counter), expiresAt: Number(now), live: false };
    }
    const sep = value.indexOf(':');
    return {
      unit,
      holder: value.slice(sep + 1),
      epoch: Number(value.slice(0, sep)),
      expiresAt: Number(now) + Math.max(pttl, 0),
      live: true,
    };
  }

  async join(instance: string, info: Record<string, unknown>, ttlMs: number): Promise<void> {
    checkName(instance, 'instance');
    checkTtl(ttlMs);
    await this.run(`register ${instance}`, { instance }, (c) =>
      c.eval(JOIN, 2, this.key('members'), this.key('member-info'), instance, JSON.stringify(info), ttlMs),
    );
  }

  heartbeat(instance: string, info: Record<string, unknown>, ttlMs: number): Promise<void> {
    return this.join(instance, info, ttlMs);
  }

  async leave(instance: string): Promise<void> {
    await this.run(`remove ${instance}`, { instance }, (c) =>
      c.multi().zrem(this.key('members'), instance).hdel(this.key('member-info'), instance).exec(),
    );
  }

  async members(): Promise<Member[]> {
    const flat = (await this.run('list the members', {}, (c) =>
      c.eval(MEMBERS, 2, this.key('members'), this.key('member-info')),
    )) as string[];
    const out: Member[] = [];
    for (let i = 0; i + 2 < flat.length; i += 3) {
      out.push({
        instance: flat[i]!,
        expiresAt: Number(flat[i + 1]),
        info: JSON.parse(flat[i + 2]!) as Record<string, unknown>,
      });
    }
    return out.sort((a, b) => a.instance.localeCompare(b.instance));
  }

  async close(): Promise<void> {
    const pending = this.client;
    this.client = undefined;
    if (!pending) return;
    const client = await pending.catch(() => undefined);
    if (client) await client.quit().catch(() => client.disconnect());
  }
}
