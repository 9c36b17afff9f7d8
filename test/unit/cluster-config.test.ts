import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { createLeaseStore, parseClusterConfig, parseDuration } from '../../src/cluster/index';
import { ErrorCode } from '../../src/errors';

const base = { store: 'postgres', url: 'postgres://u:secret@db/evpub', name: 'orders' };

/** The CONFIG_INVALID message `raw` is refused with. */
function refusal(raw: unknown): string {
  try {
    parseClusterConfig(raw);
  } catch (err) {
    expect(err).toMatchObject({ code: ErrorCode.CONFIG_INVALID });
    return (err as Error).message;
  }
  throw new Error('accepted');
}

describe('cluster config', () => {
  it('fills the defaults: 15 s TTL, renew every TTL / 3, instance hostname-pid; frozen', () => {
    const config = parseClusterConfig(base);
    expect(config).toEqual({
      store: 'postgres',
      url: base.url,
      name: 'orders',
      leaseTtl: 15_000,
      renewInterval: 5_000,
      instance: `${hostname()}-${process.pid}`,
    });
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('takes durations as ms or text, and store-specific keys for their store', () => {
    expect(
      parseClusterConfig({ ...base, leaseTtl: '9s', renewInterval: 2500, table: 'x.leases' }),
    ).toMatchObject({
      leaseTtl: 9000,
      renewInterval: 2500,
      table: 'x.leases',
    });
    expect(
      parseClusterConfig({ store: 'nats', url: 'nats://h:4222', name: 'n', bucket: 'b', leaseTtl: '1m' }),
    ).toMatchObject({
      bucket: 'b',
      leaseTtl: 60_000,
    });
    expect(parseDuration('1500ms', 'k')).toBe(1500);
    expect(parseDuration('1.5s', 'k')).toBe(1500);
    expect(() => parseDuration('soon', 'cluster.leaseTtl')).toThrow(
      /cluster.leaseTtl: "soon" must be a duration/,
    );
  });

  it('an unknown store names the key and the nearest store', () => {
    expect(refusal({ ...base, store: 'postgress' })).toBe(
      'cluster.store: "postgress" is not a lease store; use one of postgres, redis, nats (did you mean postgres?)',
    );
    expect(refusal({ ...base, store: 'etcd' })).toMatch(
      /^cluster.store: "etcd" is not a lease store; use one of/,
    );
  });

  it('an unknown key names the nearest valid one; a key of another store says so', () => {
    expect(refusal({ ...base, leaseTTL: '5s' })).toBe(
      'cluster.leaseTTL: unknown key; did you mean leaseTtl?',
    );
    expect(refusal({ ...base, bucket: 'b' })).toBe(
      'cluster.bucket: applies to the nats store only, not postgres',
    );
  });

  it('a TTL under 3 s, or under 3 × the renew interval, is refused naming leaseTtl', () => {
    expect(refusal({ ...base, leaseTtl: 2000 })).toMatch(
      /^cluster.leaseTtl: 2000 ms is too short; give at least 3s/,
    );
    expect(refusal({ ...base, leaseTtl: '10s', renewInterval: '4s' })).toMatch(
      /^cluster.leaseTtl: 10000 ms must be at least 3 × renewInterval \(4000 ms\)/,
    );
  });

  it('the URL must suit the store, and is never printed with its password', () => {
    const message = refusal({ ...base, url: 'redis://u:secret@h' });
    expect(message).toBe('cluster.url: must be a postgres:// or postgresql:// URL for the postgres store');
    expect(message).not.toContain('secret');
    expect(refusal({ ...base, url: undefined })).toMatch(/^cluster.url: is required/);
  });

  it('a missing or odd cluster name is refused', () => {
    expect(refusal({ ...base, name: undefined })).toMatch(/^cluster.name: is required/);
    expect(refusal({ ...base, name: 'a b' })).toMatch(/^cluster.name: "a b" is not valid/);
    expect(refusal('postgres')).toMatch(/^cluster: must be an object/);
  });

  it('creates the store of the configuration (no I/O yet)', async () => {
    for (const [store, url] of [
      ['postgres', 'postgres://127.0.0.1/x'],
      ['redis', 'redis://127.0.0.1'],
      ['nats', 'nats://127.0.0.1'],
    ] as const) {
      const s = createLeaseStore(parseClusterConfig({ store, url, name: 'c' }));
      expect(s.name).toBe(store);
      await s.close();
    }
  });
});
