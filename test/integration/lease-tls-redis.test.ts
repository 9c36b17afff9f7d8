/**
 * The Redis lease store over TLS, against private redis-servers with a TLS port that requires a
 * client certificate (`--tls-auth-clients yes`) and an ACL user (the default user has another
 * password); certificates made by this run (makePki).
 *
 * The whole lease conformance suite runs with the store made from a `cluster:` section
 * (parseClusterConfig → createLeaseStore) with `username` / `password` and `tls: { ca, cert,
 * key }`; its outage case on a second such server. Then the refusals a user relies on: a CA
 * evpub does not trust, and no client certificate, are EVPUB_TLS_FAILED naming the endpoint and
 * the `cluster.tls` setting that fixes it; a wrong password is EVPUB_AUTH_FAILED; none retriable,
 * no secret in any message.
 */
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLeaseStore, parseClusterConfig, type LeaseStore } from '../../src/cluster/index';
import { ErrorCode } from '../../src/errors';
import { leaseConformance } from '../conformance/lease.suite';
import { makePki, type Pki } from '../helpers/certs';
import { startRedisServer, type PrivateRedis } from '../helpers/redis-server';
import { uniqueName } from '../helpers/services';
import { REASON, refused } from '../helpers/tls-brokers';

const PASSWORD = `pw-${randomUUID()}`;
// The default user keeps a password of its own rather than being off: with `user default off`,
// Redis 7.0 drops the MULTI/EXEC blocks (what Lua scripts write) of its AOF on restart with
// NOPERM (redis/redis#14541), and the outage case would find its epoch counter gone.
const ACL = [
  ...['--user', 'default', 'on', `>other-${randomUUID()}`, '~*', '&*', '+@all'],
  ...['--user', 'alice', 'on', `>${PASSWORD}`, '~*', '&*', '+@all'],
];

let pki: Pki;
let redis: PrivateRedis;
const servers: PrivateRedis[] = [];
const opened: LeaseStore[] = [];

async function tlsServer(): Promise<PrivateRedis> {
  const server = await startRedisServer({
    tls: { cert: pki.server.cert, key: pki.server.key, ca: pki.ca, authClients: 'yes' },
    args: ACL,
  });
  servers.push(server);
  return server;
}

/** A store as evpub makes it from `cluster:`. */
function store(cluster: Record<string, unknown>, opTimeout?: number, logger?: pino.Logger): LeaseStore {
  const s = createLeaseStore(parseClusterConfig({ store: 'redis', ...cluster }), { opTimeout, logger });
  opened.push(s);
  return s;
}

const clientTls = (): Record<string, string> => ({ ca: pki.ca, cert: pki.client.cert, key: pki.client.key });
const alice = { username: 'alice', password: PASSWORD };

beforeAll(async () => {
  pki = makePki();
  redis = await tlsServer();
});
afterAll(async () => {
  await Promise.all(opened.map((s) => s.close().catch(() => undefined)));
  await Promise.all(servers.map((s) => s.close()));
  pki?.remove();
});

leaseConformance({
  name: 'redis over TLS with a client certificate and an ACL user',
  open: async (cluster) => store({ url: redis.tlsUrl, name: cluster, tls: clientTls(), ...alice }),
  privateServer: async () => {
    const server = await tlsServer();
    return {
      server,
      open: (cluster) => store({ url: server.tlsUrl, name: cluster, tls: clientTls(), ...alice }, 500),
    };
  },
});

describe('redis lease store over TLS', () => {
  it('redis:// with cluster.tls is TLS too; the user may come from the URL', async () => {
    const s = store({
      url: `redis://alice:${PASSWORD}@localhost:${redis.tlsPort}`,
      name: uniqueName('c'),
      tls: clientTls(),
    });
    const lease = await s.acquire('u', 'a', 5000);
    expect(lease).not.toBeNull();
    expect(await s.release(lease!)).toBe(true);
  });

  it('a CA evpub does not trust is TLS_FAILED naming cluster.tls.ca; no client certificate names cluster.tls.cert', async () => {
    const endpoint = `127.0.0.1:${redis.tlsPort}`;
    const untrusted = await refused(
      store({
        url: redis.tlsUrl,
        name: uniqueName('c'),
        tls: { ...clientTls(), ca: pki.otherCa },
        ...alice,
      }).acquire('u', 'a', 5000),
      { code: ErrorCode.TLS_FAILED, endpoint, reason: REASON.untrusted, secrets: [PASSWORD] },
    );
    expect(untrusted.message).toContain('set cluster.tls.ca to the CA certificate');
    expect(untrusted.retriable).toBe(false);

    const noCert = await refused(
      store({ url: redis.tlsUrl, name: uniqueName('c'), tls: { ca: pki.ca }, ...alice }, 3000).acquire(
        'u',
        'a',
        5000,
      ),
      { code: ErrorCode.TLS_FAILED, endpoint, reason: REASON.clientCert, secrets: [PASSWORD] },
    );
    expect(noCert.message).toContain('set cluster.tls.cert and cluster.tls.key');
  });

  it('with rejectUnauthorized: false a CA evpub does not trust is accepted, warned once naming cluster.tls', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
    const s = store(
      {
        url: redis.tlsUrl,
        name: uniqueName('c'),
        tls: { ...clientTls(), ca: pki.otherCa, rejectUnauthorized: false },
        ...alice,
      },
      undefined,
      logger,
    );
    const lease = await s.acquire('u', 'a', 5000);
    expect(await s.renew(lease!)).toMatchObject({ epoch: lease!.epoch });
    const warnings = lines.filter((l) => l.includes('TLS verification is off'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('cluster.tls.rejectUnauthorized');
    expect(warnings[0]).toContain(`127.0.0.1:${redis.tlsPort}`);
    expect(lines.join('\n')).not.toContain(PASSWORD);
  });

  it('a wrong password is AUTH_FAILED, not retriable, without the password', async () => {
    const wrong = `wrong-${randomUUID()}`;
    const err = await refused(
      store({
        url: redis.tlsUrl,
        name: uniqueName('c'),
        tls: clientTls(),
        username: 'alice',
        password: wrong,
      }).acquire('u', 'a', 5000),
      { code: ErrorCode.AUTH_FAILED, endpoint: `127.0.0.1:${redis.tlsPort}`, secrets: [wrong, PASSWORD] },
    );
    expect(err.retriable).toBe(false);
    expect(err.message).toContain('cluster.password');
  });
});
