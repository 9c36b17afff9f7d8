import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { createLeaseStore, parseClusterConfig, parseDuration } from '../../src/cluster/index';
import { redactConfig, validateConfig } from '../../src/app/config';
import { ErrorCode } from '../../src/errors';
import { collectSecrets } from '../../src/util/redact';

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

  it('takes tls for every store, username/password for redis and nats, token/nkey/creds for nats', () => {
    const tls = { ca: '/etc/evpub/ca.pem', cert: '/etc/evpub/c.pem', key: '/etc/evpub/c.key' };
    expect(parseClusterConfig({ ...base, tls })).toMatchObject({ tls });
    expect(parseClusterConfig({ ...base, tls: true }).tls).toEqual({});
    expect(
      parseClusterConfig({
        store: 'redis',
        url: 'rediss://h',
        name: 'r',
        username: 'evpub',
        password: 'pw-1',
        tls,
      }),
    ).toMatchObject({ username: 'evpub', password: 'pw-1', tls });
    expect(
      parseClusterConfig({ store: 'nats', url: 'tls://h:4222', name: 'n', token: 't0k3n', tls: { ca: 'x' } }),
    ).toMatchObject({ token: 't0k3n', tls: { ca: 'x' } });
    expect(
      parseClusterConfig({
        store: 'nats',
        url: 'nats://h',
        name: 'n',
        username: 'u',
        password: 'p',
        creds: '/c',
      }),
    ).toMatchObject({ username: 'u', password: 'p', creds: '/c' });
  });

  it('a TLS or credential problem names cluster.tls.<key> or the key, never the secret', () => {
    expect(refusal({ ...base, tls: { caa: '/ca.pem' } })).toBe(
      'cluster.tls.caa: unknown TLS setting; did you mean ca?',
    );
    expect(refusal({ ...base, tls: { cert: '/c.pem' } })).toBe(
      'cluster.tls.key: a client certificate needs both cert and key',
    );
    expect(refusal({ ...base, tls: 'yes' })).toMatch(/^cluster.tls: must be true or an object/);
    expect(refusal({ ...base, password: 'x' })).toBe(
      'cluster.password: applies to the redis and nats store only, not postgres',
    );
    expect(refusal({ ...base, store: 'redis', url: 'redis://h', token: 'x' })).toBe(
      'cluster.token: applies to the nats store only, not redis',
    );
    expect(refusal({ ...base, store: 'redis', url: 'redis://h', pasword: 'x' })).toBe(
      'cluster.pasword: unknown key; did you mean password?',
    );
    expect(refusal({ ...base, store: 'nats', url: 'nats://h', nkey: 'SUxx', creds: '/c' })).toMatch(
      /^cluster.nkey: and cluster.creds both say who the client is/,
    );
    expect(refusal({ ...base, url: 'postgres://u@db/evpub?sslmode=require', tls: { ca: '/ca.pem' } })).toBe(
      'cluster.tls: cannot be given with "sslmode" in the url: remove sslmode from the url (tls turns TLS on) or remove tls',
    );
    const empty = refusal({ ...base, store: 'redis', url: 'redis://h', password: 42 });
    expect(empty).toBe('cluster.password: must be a non-empty string');
  });

  it('in the app config: problems carry the cluster path; the effective config shows no secret', () => {
    const app = (cluster: Record<string, unknown>) => ({
      datasources: { db: { connector: 'memory' } },
      models: {},
      checkpoints: { store: 'redis', url: 'redis://127.0.0.1' },
      cluster,
    });
    let message = '';
    try {
      validateConfig(app({ store: 'redis', url: 'redis://h', name: 'c', tls: { certt: 'x' } }));
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain('cluster.tls.certt');
    expect(message).toContain('did you mean cert?');

    const secrets = {
      password: 'lease-Pw-7f3k2',
      passphrase: 'lease-Phrase-9q1z',
      key: '-----BEGIN PRIVATE KEY-----\nlease-key-body-x81\n-----END PRIVATE KEY-----\n',
      urlPassword: 'url-Pw-55m1',
      token: 'nats-Tok-k2j4',
    };
    const redis = validateConfig(
      app({
        store: 'redis',
        url: `rediss://evpub:${secrets.urlPassword}@h:6380`,
        name: 'c',
        username: 'evpub',
        password: secrets.password,
        tls: { ca: '/ca.pem', cert: '/c.pem', key: secrets.key, passphrase: secrets.passphrase },
      }),
    );
    const nats = validateConfig(
      app({ store: 'nats', url: 'tls://h:4222', name: 'c', token: secrets.token, tls: true }),
    );
    const shown = JSON.stringify([redactConfig(redis), redactConfig(nats)]);
    for (const secret of Object.values(secrets)) expect(shown).not.toContain(secret.split('\n')[1] ?? secret);
    for (const secret of [secrets.password, secrets.passphrase, secrets.urlPassword]) {
      expect(collectSecrets(redis)).toContain(secret);
    }
    expect(collectSecrets(nats)).toContain(secrets.token);
    expect(shown).toContain('"username":"evpub"');
  });
});
