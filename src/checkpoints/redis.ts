/**
 * The Redis checkpoint store: one string key per feed, `<prefix><feedId>` (prefix default
 * `evpub:checkpoint:`), written with SET, which is atomic. Durability is the server's: with
 * `appendonly yes` and `appendfsync always` a resolved save survives a server crash; with the
 * defaults it may lose the last second. ioredis is loaded on first use.
 */
import type { Redis as RedisClient } from 'ioredis';
import { ErrorCode, EvpubError, redact } from '../errors';
import type { Position } from '../events/change-event';
import { loadDriver } from '../util/driver';
import type { CheckpointStore } from './contract';

export const DEFAULT_REDIS_PREFIX = 'evpub:checkpoint:';

export class RedisCheckpointStore implements CheckpointStore {
  readonly name = 'redis';
  private readonly prefix: string;
  private client: Promise<RedisClient> | undefined;

  constructor(private readonly options: { url: string; prefix?: string; connectTimeout?: number }) {
    this.prefix = options.prefix ?? DEFAULT_REDIS_PREFIX;
  }

  private connect(): Promise<RedisClient> {
    this.client ??= (async () => {
      const { Redis } = await loadDriver<typeof import('ioredis')>('ioredis', 'Redis checkpoint store');
      const client = new Redis(this.options.url, {
        lazyConnect: true,
        connectTimeout: this.options.connectTimeout ?? 10_000,
        maxRetriesPerRequest: 3,
      });
      client.on('error', () => undefined); // failures surface on the commands that hit them
      try {
        await client.connect();
      } catch (err) {
        client.disconnect();
        this.client = undefined;
        throw new EvpubError(
          ErrorCode.CHECKPOINT_FAILED,
          `cannot connect to the Redis checkpoint store at ${redact(this.options.url)}`,
          { cause: err, retriable: true, context: { store: 'redis' } },
        );
      }
      return client;
    })();
    return this.client;
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
