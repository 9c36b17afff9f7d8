/**
 * The Redis checkpoint store: one string key per feed, `<prefix><feedId>` (prefix default
 * `evpub:checkpoint:`), written with SET, which is atomic. Durability is the server's: with
 * `appendonly yes` and `appendfsync always` a resolved save survives a server crash; with the
 * defaults it may lose the last second. ioredis is loaded on first use.
 *
 * Fencing (contract.ts): the fences live in one hash, `<prefix>~fences` (feed id → "<epoch>
 * <unit>"; no feed id is `~fences`, they all have a `/`); a fenced save is one Lua script that
 * compares the stored epoch and writes the position and the fence, or refuses (FENCED). `delete`
 * removes the feed's fence too.
 *
 * Claims (contract.ts): `<prefix>~owner:<feedId>` holds the owner as JSON, set with NX PX and
 * renewed (PEXPIRE) or removed only by a script that checks it still holds this owner.
 *
 * Security: `rediss://` or the `tls` option (src/util/tls.ts: `checkpoints.tls` in the config)
 * turns TLS on; an ACL user comes from the URL (`rediss://user:pass@host`) or `username` /
 * `password`. The first connection fails at once, without retrying, with TLS_FAILED (the
 * handshake failed: the reason and the setting that fixes it) or AUTH_FAILED (the server refused
 * the user or password); other failures are CHECKPOINT_FAILED and retriable.
 */
import type { Redis as RedisClient, RedisOptions } from 'ioredis';
import { ErrorCode, EvpubError, redact } from '../errors';
import type { Position } from '../events/change-event';
import type { Logger } from '../logger';
import { isAuthError } from '../pubsub/adapters/redis-connections';
import { loadDriver } from '../util/driver';
import { loadTls, parseTls, probeTls, tlsFailure, type LoadedTls, type TlsSettings } from '../util/tls';
import {
  claimEach,
  CLAIM_RENEW_MS,
  CLAIM_TTL_MS,
  fenced,
  ownedElsewhere,
  ownerGone,
  type CheckpointStore,
  type FeedClaim,
  type FeedOwner,
  type SaveOptions,
} from './contract';

export const DEFAULT_REDIS_PREFIX = 'evpub:checkpoint:';

// KEYS: position, fences. ARGV: position, feed id, unit, epoch. → 0 written, or the stored epoch.
const FENCED_SAVE = `local cur = redis.call('HGET', KEYS[2], ARGV[2])
if cur then
  local sep = string.find(cur, ' ', 1, true)
  local epoch = tonumber(string.sub(cur, 1, sep - 1))
  if string.sub(cur, sep + 1) == ARGV[3] and epoch > tonumber(ARGV[4]) then return epoch end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4] .. ' ' .. ARGV[3])
return 0`;

// KEYS: owner key. ARGV: owner JSON, ttl ms (absent: delete). → 1 when it held this owner.
const OWNER_KEEP = `if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) else redis.call('DEL', KEYS[1]) end
return 1`;

// KEYS: owner key. ARGV: the gone owner's JSON, new owner JSON, ttl ms. → 1 when taken over.
const OWNER_TAKE = `if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1`;

export interface RedisCheckpointOptions {
  url: string;
  prefix?: string;
  connectTimeout?: number;
  /** TLS settings; `rediss://` turns TLS on too. */
  tls?: TlsSettings | boolean;
  /** ACL user and password; override the URL's. */
  username?: string;
  password?: string;
  /** Told once when TLS verification is turned off. */
  logger?: Logger;
}

export class RedisCheckpointStore implements CheckpointStore {
  readonly name = 'redis';
  readonly fencing = true;
  private readonly prefix: string;
  private readonly tls: TlsSettings | undefined;
  private readonly endpoint: string;
  private client: Promise<RedisClient> | undefined;

  constructor(private readonly options: RedisCheckpointOptions) {
    this.prefix = options.prefix ?? DEFAULT_REDIS_PREFIX;
    this.tls = parseTls(options.tls, 'checkpoints.tls');
    this.endpoint = redact(options.url);
  }

  private driverOptions(): RedisOptions {
    const o = this.options;
    const opts: RedisOptions = {
      lazyConnect: true,
      connectTimeout: o.connectTimeout ?? 10_000,
      maxRetriesPerRequest: 3,
    };
    if (o.username !== undefined) opts.username = o.username;
    if (o.password !== undefined) opts.password = o.password;
    if (this.tls !== undefined || /^rediss:/i.test(o.url)) {
      opts.tls = loadTls(this.tls ?? {}, 'checkpoints.tls', { endpoint: this.endpoint, logger: o.logger });
    }
    return opts;
  }

  private connect(): Promise<RedisClient> {
    this.client ??= (async () => {
      const { Redis } = await loadDriver<typeof import('ioredis')>('ioredis', 'Redis checkpoint store');
      const client = new Redis(this.options.url, this.driverOptions());
      let lastError: unknown;
      // Later failures surface on the commands that hit them.
      client.on('error', (err: unknown) => (lastError = err));
      try {
        await client.connect();
      } catch (err) {
        client.disconnect();
        this.client = undefined;
        throw await this.connectError(lastError ?? err, client.options.tls);
      }
      return client;
    })();
    return this.client;
  }

  private async connectError(err: unknown, tlsOptions: LoadedTls | undefined): Promise<EvpubError> {
    const tls = tlsFailure(err, this.endpoint);
    if (tls) return tls;
    const code = (err as NodeJS.ErrnoException | undefined)?.code;
    if (tlsOptions && (code === 'ECONNRESET' || code === 'EPIPE')) {
      // TLS 1.3: a client certificate the server refuses may show only as a reset of the first
      // write; a probe that writes nothing reads the server's alert (util/tls probeTls).
      const url = new URL(this.options.url);
      const why = await probeTls(url.hostname || 'localhost', Number(url.port || 6379), tlsOptions);
      const failure = why && tlsFailure(why, this.endpoint);
      if (failure) return failure;
    }
    if (isAuthError(err)) {
      return new EvpubError(
        ErrorCode.AUTH_FAILED,
        `the Redis checkpoint store at ${this.endpoint} refused the credentials: ${(err as Error).message}`,
        { cause: err, context: { store: 'redis' } },
      );
    }
    return new EvpubError(
      ErrorCode.CHECKPOINT_FAILED,
      `cannot connect to the Redis checkpoint store at ${this.endpoint}`,
      { cause: err, retriable: true, context: { store: 'redis' } },
    );
  }

  private async run<T>(feedId: string, what: string, fn: (c: RedisClient) => Promise<T>): Promise<T> {
    const client = await this.connect();
    try {
      return await fn(client);
    } catch (err) {
      throw new EvpubError(
        ErrorCode.CHECKPOINT_FAILED,
        `cannot ${what} the checkpoint of ${feedId} in Redis`,
        {
          cause: err,
          retriable: true,
          context: { feed: feedId, store: 'redis' },
        },
      );
    }
  }

  async claim(feedIds: readonly string[], owner: FeedOwner): Promise<FeedClaim> {
    const value = JSON.stringify(owner);
    const keys = feedIds.map((f) => `${this.prefix}~owner:${f}`);
    const claim = await claimEach(feedIds, async (feedId) => {
      const key = `${this.prefix}~owner:${feedId}`;
      const release = async (): Promise<void> => {
        await this.run(feedId, 'release', (c) => c.eval(OWNER_KEEP, 1, key, value));
      };
      const set = await this.run(feedId, 'claim', (c) => c.set(key, value, 'PX', CLAIM_TTL_MS, 'NX'));
      if (set !== 'OK') {
        const held = await this.run(feedId, 'claim', (c) => c.get(key));
        let other: Partial<FeedOwner> = {};
        try {
          other = JSON.parse(held ?? '{}') as Partial<FeedOwner>;
        } catch {
          // not ours to read: named as unknown
        }
        if (held !== null && ownerGone(other)) {
          const taken = await this.run(feedId, 'claim', (c) =>
            c.eval(OWNER_TAKE, 1, key, held, value, String(CLAIM_TTL_MS)),
          );
          if (taken === 1) return release;
        }
        throw ownedElsewhere(
          feedId,
          other,
          'redis',
          ` (a claim of a crashed process lapses ${CLAIM_TTL_MS / 1000} s after it)`,
        );
      }
      return release;
    });
    const timer = setInterval(() => {
      for (const key of keys) {
        void this.connect()
          .then((c) => c.eval(OWNER_KEEP, 1, key, value, String(CLAIM_TTL_MS)))
          .then((held) => {
            if (held !== 1)
              this.options.logger?.error({ key }, 'the feed claim in Redis was lost (expired or taken)');
          })
          .catch((err: unknown) => this.options.logger?.warn({ err, key }, 'feed claim renewal failed'));
      }
    }, CLAIM_RENEW_MS);
    timer.unref();
    return {
      release: async () => {
        clearInterval(timer);
        await claim.release();
      },
    };
  }

  async load(feedId: string): Promise<Position | undefined> {
    const value = await this.run(feedId, 'load', (c) => c.get(this.prefix + feedId));
    return value ?? undefined;
  }

  async save(feedId: string, position: Position, options?: SaveOptions): Promise<void> {
    const fence = options?.fence;
    if (!fence) {
      await this.run(feedId, 'save', (c) => c.set(this.prefix + feedId, position));
      return;
    }
    const stored = await this.run(feedId, 'save', (c) =>
      c.eval(
        FENCED_SAVE,
        2,
        this.prefix + feedId,
        `${this.prefix}~fences`,
        position,
        feedId,
        fence.unit,
        fence.epoch,
      ),
    );
    if (stored !== 0) throw fenced(feedId, fence, Number(stored), this.name);
  }

  async delete(feedId: string): Promise<void> {
    await this.run(feedId, 'delete', (c) =>
      c
        .multi()
        .del(this.prefix + feedId)
        .hdel(`${this.prefix}~fences`, feedId)
        .exec(),
    );
  }

  async close(): Promise<void> {
    const pending = this.client;
    this.client = undefined;
    if (!pending) return;
    const client = await pending.catch(() => undefined);
    if (client) await client.quit().catch(() => client.disconnect());
  }
}
