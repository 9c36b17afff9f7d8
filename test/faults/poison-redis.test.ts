/**
 * Poison events on Redis: in Streams mode, a key of another type where the vip row's stream
 * would be (WRONGTYPE); in pub/sub mode, an ACL user that may not publish to the vip channel
 * (NOPERM). Each is refused for that message alone: dead-lettered, and the feed goes on.
 */
import Redis from 'ioredis';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { ErrorCode } from '../../src/errors';
import { requireService, uniqueName } from '../helpers/services';
import { poisonCase, poisonRoot } from './poison.suite';

let redisUrl: string;
let admin: Redis;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  redisUrl = await requireService('redis');
  admin = new Redis(redisUrl);
});
afterAll(async () => {
  for (const c of cleanups) await c().catch(() => undefined);
  admin?.disconnect();
});

describe('poison events on Redis', () => {
  it('Streams: the vip stream key holds a string (WRONGTYPE): dead-lettered, the rows after it arrive', async () => {
    const root = poisonRoot();
    await admin.set(`${root}/orders/vip`, 'not a stream');
    cleanups.push(() => admin.del(`${root}/orders/vip`));
    const options = { redis: { mode: 'streams' } };
    await poisonCase(root, {
      label: 'redis streams (WRONGTYPE)',
      url: redisUrl,
      options,
      exactTopics: true,
      code: ErrorCode.PUBLISH_FAILED,
    });
    const keys = await admin.keys(`${root}/*`);
    cleanups.push(() => (keys.length ? admin.del(...keys) : Promise.resolve(0)));
  });

  it('pub/sub: an ACL user without the vip channel (NOPERM): dead-lettered, the rows after it arrive', async () => {
    const root = poisonRoot();
    const user = uniqueName('evpub');
    await admin.call(
      'ACL',
      'SETUSER',
      user,
      'on',
      '>secret',
      'resetchannels',
      `&${root}/orders/k*`,
      `&${root}/dead-letter`,
      '+@all',
      '~*',
    );
    cleanups.push(() => admin.call('ACL', 'DELUSER', user));
    const url = new URL(redisUrl);
    url.username = user;
    url.password = 'secret';
    await poisonCase(root, {
      label: 'redis pub/sub (ACL)',
      url: url.toString(),
      subscriberUrl: redisUrl,
      code: ErrorCode.NOT_AUTHORIZED,
    });
  });
});
