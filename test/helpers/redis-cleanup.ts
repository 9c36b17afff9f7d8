/**
 * Cleanup of the streams tests leave on the shared Redis (`evpub/test/<unique>`, MB per run).
 *
 * Other runs may be using their own `evpub/test/*` streams right now, so a stream is not deleted
 * at once: every such stream without a time to live gets one (EXPIRE <key> <seconds> NX), long
 * enough for any test still using it to end (tests take seconds), short enough that runs do not
 * accumulate. Keys of other types and keys outside the prefix are left alone.
 */
import { Redis } from 'ioredis';

export const TEST_STREAM_PATTERN = 'evpub/test/*';

/** Gives every `evpub/test/*` stream on `url` a TTL of `ttlSeconds` (default 60); returns how many. */
export async function expireTestStreams(url: string, ttlSeconds = 60): Promise<number> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  let count = 0;
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(
        cursor,
        'MATCH',
        TEST_STREAM_PATTERN,
        'COUNT',
        1000,
        'TYPE',
        'stream',
      );
      cursor = next;
      if (keys.length === 0) continue;
      const pipeline = redis.pipeline();
      for (const key of keys) pipeline.expire(key, ttlSeconds, 'NX');
      for (const [err, set] of (await pipeline.exec()) ?? []) {
        if (!err && set === 1) count++;
      }
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
  return count;
}
