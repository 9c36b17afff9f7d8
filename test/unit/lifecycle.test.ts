/** The connectors' guarded lifecycle (src/connectors/kit/lifecycle.ts). */
import { describe, expect, it } from 'vitest';
import { Lifecycle } from '../../src/connectors/kit/lifecycle';
import { ErrorCode, EvpubError, isEvpubError } from '../../src/errors';

describe('Lifecycle', () => {
  it('starts once: a second start, also after a stop, is INVALID_STATE naming the datasource', async () => {
    const life = new Lifecycle('poll', 'shop');
    life.begin();
    expect(life.state).toBe('starting');
    expect(() => life.begin()).toThrow('poll connector "shop" was already started');
    life.started();
    expect(life.state).toBe('streaming');
    await life.stop(async () => undefined);
    expect(life.state).toBe('stopped');
    let err: unknown;
    try {
      life.begin();
    } catch (e) {
      err = e;
    }
    expect(isEvpubError(err, ErrorCode.INVALID_STATE)).toBe(true);
  });

  it('a failed start is the error itself (or translated), and the state is stopped', () => {
    const life = new Lifecycle('mysql', 'db');
    life.begin();
    const cause = new Error('ECONNREFUSED');
    const error = life.startFailed(
      cause,
      (e) => new EvpubError(ErrorCode.CONNECT_FAILED, String(e), { cause: e }),
    );
    expect(error).toMatchObject({ code: ErrorCode.CONNECT_FAILED, cause });
    expect(life.state).toBe('stopped');
    const plain = new Lifecycle('mysql', 'db');
    plain.begin();
    expect(plain.startFailed(cause)).toBe(cause);
  });

  it('stop() during start: the start fails with "stopped while starting", or stays stopped when it succeeds', async () => {
    const failing = new Lifecycle('couchdb', 'couch');
    failing.begin();
    const stopped = failing.stop(async () => undefined);
    const cause = new Error('aborted');
    const error = failing.startFailed(cause);
    expect(error).toMatchObject({
      code: ErrorCode.INVALID_STATE,
      message: 'couchdb connector "couch" was stopped while starting',
      cause,
    });
    await stopped;

    const succeeding = new Lifecycle('webhook', 'hooks');
    succeeding.begin();
    await succeeding.stop(async () => undefined);
    succeeding.started();
    expect(succeeding.state).toBe('stopped');
  });

  it('stop() closes once; a second stop is the same promise; a failed connector stays failed', async () => {
    const life = new Lifecycle<'failed'>('postgres', 'pg');
    let closes = 0;
    life.begin();
    life.started();
    life.state = 'failed';
    const a = life.stop(async () => {
      closes += 1;
    });
    const b = life.stop(async () => {
      closes += 1;
    });
    expect(b).toBe(a);
    await a;
    expect(closes).toBe(1);
    expect(life.state).toBe('failed');
    expect(new Lifecycle('memory', 'm').stopRequested).toBe(false);
    expect(life.stopRequested).toBe(true);
  });
});
