/**
 * The Redis checkpoint store: one string key per feed, `<prefix><feedId>` (prefix default
 * `evpub:checkpoint:`), written with SET, which is atomic. Durability is the server's: with
 * `appendonly yes` and `appendfsync always` a resolved save survives a server crash; with the
 * defaults it may lose the last second. ioredis is loaded on first use.
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
import { loadTls, parseTls, tlsFailure, type TlsSettings } from '../util/tls';
import type { CheckpointStore } from './contract';

export const DEFAULT_REDIS_PREFIX = 'evpub:checkpoint:';

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
        throw this.connectError(lastError ?? err);
      }
      return client;
    })();
    return this.client;
  }

  private connectError(err: unknown): EvpubError {
    const tls = tlsFailure(err, this.endpoint);
    if (tls) return tls;
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

  async load(feedId: string): Promise<Position | undefined> {
    const value = await this.run(feedId, 'load', (c) => c.get(this.prefix + feedId));
    return value ?? undefined;
  }

  async save(feedId: string, position: Position): Promise<void> {
    await this.run(feedId, 'save', (c) => c.set(this.prefix + feedId, position));
  }

  async delete(feedId: string): Promise<void> {
    await this.run(feedId, 'delete', (c) => c.del(this.prefix + feedId));
  }

  async close(): Promise<void> {
    const pending = this.client;
    this.client = undefined;
    if (!pending) return;
    const client = await pending.catch(() => undefined);
    if (client) await client.quit().catch(() => client.disconnect());
  }
}
