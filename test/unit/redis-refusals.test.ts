/**
 * The Redis adapter's classification of error replies (`redisPublishError`). WRONGTYPE, NOPERM and
 * OOM are also checked against real servers in the conformance suite; the others cannot be
 * produced on a PUBLISH or XADD here (LOADING, BUSY and READONLY need a restart with a large data
 * set, a long script, a replica).
 */
import { ReplyError } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors';
import { redisPublishError } from '../../src/pubsub/adapters/redis';

/** ioredis's error for a Redis error reply (its type is `any`). */
const Reply = ReplyError as unknown as new (message: string) => Error;

describe('redisPublishError', () => {
  it.each([
    [
      'WRONGTYPE Operation against a key holding the wrong kind of value',
      ErrorCode.PUBLISH_FAILED,
      'WRONGTYPE',
    ],
    [
      'NOPERM this user has no permissions to access one of the keys used as arguments',
      ErrorCode.NOT_AUTHORIZED,
      'NOPERM',
    ],
    ['NOSCRIPT No matching script. Please use EVAL.', ErrorCode.PUBLISH_FAILED, 'NOSCRIPT'],
    ['ERR user_script:1: refused script: 872b3f, on @user_script:1.', ErrorCode.PUBLISH_FAILED, 'ERR'],
  ])('%s: permanent %s', (message, code, brokerCode) => {
    const err = redisPublishError('a/b', new Reply(message));
    expect(err).toMatchObject({ code, retriable: false });
    expect(err.context).toEqual({ topic: 'a/b', brokerCode, brokerReason: message });
  });

  it.each([
    "OOM command not allowed when used memory > 'maxmemory'.",
    'LOADING Redis is loading the dataset in memory',
    'BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.',
    "READONLY You can't write against a read only replica.",
    'MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to no.',
    'MISCONF Redis is configured to save RDB snapshots, but it is currently not able to persist on disk.',
    'TRYAGAIN Multiple keys request during rehashing of slot',
    'ERR max number of clients reached',
  ])('%s: transient', (message) => {
    const err = redisPublishError('a/b', new Reply(message));
    expect(err).toMatchObject({ code: ErrorCode.PUBLISH_FAILED, retriable: true });
    expect(err.context.brokerReason).toBe(message);
  });

  it('a lost connection is transient', () => {
    const err = redisPublishError('a/b', new Error('Connection is closed.'));
    expect(err).toMatchObject({ code: ErrorCode.PUBLISH_FAILED, retriable: true });
  });
});
