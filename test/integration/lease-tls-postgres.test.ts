/**
 * The PostgreSQL lease store over TLS, against a private cluster with `ssl=on` and certificates
 * made by this run (makePki):
 *
 *   hostssl all evpub    127.0.0.1/32 cert            # client certificate, CN = role name
 *   hostssl all evpub_pw 127.0.0.1/32 scram-sha-256   # password, over TLS only
 *
 * The whole lease conformance suite runs with the store made from a `cluster:` section
 * (parseClusterConfig → createLeaseStore) with `tls: { ca, cert, key }`; its outage case on a
 * second private TLS cluster. Then what a user relies on when TLS is wrong: a CA evpub does not
 * trust is EVPUB_TLS_FAILED naming the endpoint and `cluster.tls.ca`, not retriable; no client
 * certificate or a wrong password is EVPUB_AUTH_FAILED; no secret in any message.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLeaseStore, parseClusterConfig, type LeaseStore } from '../../src/cluster/index';
import { ErrorCode } from '../../src/errors';
import { leaseConformance } from '../conformance/lease.suite';
import { makePki, type Pki } from '../helpers/certs';
import { sql } from '../helpers/postgres';
import { privatePostgres, type PrivatePostgres } from '../helpers/postgres-server';
import { uniqueName } from '../helpers/services';
import { REASON, refused } from '../helpers/tls-brokers';

const PASSWORD = `pw-${randomUUID()}`;
const HBA = ['hostssl all evpub 127.0.0.1/32 cert', 'hostssl all evpub_pw 127.0.0.1/32 scram-sha-256'];
const table = uniqueName('evpub_lease');
const membersTable = uniqueName('evpub_member');

let pki: Pki;
let pg: PrivatePostgres;
const servers: PrivatePostgres[] = [];
const opened: LeaseStore[] = [];

/** A private TLS cluster with the two roles, allowed to create the lease tables. */
async function tlsCluster(): Promise<PrivatePostgres> {
  const server = await privatePostgres({
    tls: { cert: pki.server.cert, key: pki.server.key, ca: pki.ca },
    hba: HBA,
  });
  servers.push(server);
  await sql('CREATE ROLE evpub LOGIN', [], server.url);
  await sql(`CREATE ROLE evpub_pw LOGIN PASSWORD '${PASSWORD}'`, [], server.url);
  await sql('GRANT CREATE ON SCHEMA public TO evpub, evpub_pw', [], server.url);
  return server;
}

const urlAs = (server: PrivatePostgres, user: string, password?: string): string =>
  `postgres://${user}${password ? `:${password}` : ''}@127.0.0.1:${server.port}/postgres`;

/** A store as evpub makes it from `cluster:`. */
function store(cluster: Record<string, unknown>, opTimeout?: number): LeaseStore {
  const s = createLeaseStore(parseClusterConfig({ store: 'postgres', table, membersTable, ...cluster }), {
    opTimeout,
  });
  opened.push(s);
  return s;
}

const clientTls = (): Record<string, string> => ({ ca: pki.ca, cert: pki.client.cert, key: pki.client.key });

beforeAll(async () => {
  pki = makePki();
  pg = await tlsCluster();
}, 60_000);
afterAll(async () => {
  await Promise.all(opened.map((s) => s.close().catch(() => undefined)));
  await Promise.all(servers.map((s) => s.close()));
  pki?.remove();
});

leaseConformance({
  name: 'postgres over TLS with a client certificate',
  open: async (cluster) => store({ url: urlAs(pg, 'evpub'), name: cluster, tls: clientTls() }),
  privateServer: async () => {
    const server = await tlsCluster();
    return {
      server,
      open: (cluster) => store({ url: urlAs(server, 'evpub'), name: cluster, tls: clientTls() }, 500),
    };
  },
});

describe('postgres lease store over TLS', () => {
  it("holds leases over TLS with the client certificate: the server sees TLS and the certificate's name", async () => {
    const s = store({ url: urlAs(pg, 'evpub'), name: uniqueName('c'), tls: clientTls() });
    const lease = await s.acquire('slot', 'a', 5000);
    expect(lease).not.toBeNull();
    const sessions = await sql<{ ssl: boolean; dn: string | null }>(
      `SELECT s.ssl, s.client_dn AS dn FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.usename = 'evpub'`,
      [],
      pg.url,
    );
    expect(sessions.length).toBeGreaterThan(0);
    for (const session of sessions) expect(session).toEqual({ ssl: true, dn: '/CN=evpub' });
    expect(await s.release(lease!)).toBe(true);
  });

  it('a password user with only cluster.tls.ca holds leases; a wrong password is AUTH_FAILED without it', async () => {
    // Its own tables: those of the suite belong to evpub.
    const own = { table: uniqueName('pw_lease'), membersTable: uniqueName('pw_member') };
    const ok = store({
      url: urlAs(pg, 'evpub_pw', PASSWORD),
      name: uniqueName('c'),
      tls: { ca: pki.ca },
      ...own,
    });
    expect(await ok.acquire('u', 'a', 5000)).not.toBeNull();

    const wrong = `wrong-${randomUUID()}`;
    const err = await refused(
      store({ url: urlAs(pg, 'evpub_pw', wrong), name: uniqueName('c'), tls: { ca: pki.ca } }).acquire(
        'u',
        'a',
        5000,
      ),
      { code: ErrorCode.AUTH_FAILED, endpoint: `127.0.0.1:${pg.port}`, secrets: [wrong, PASSWORD] },
    );
    expect(err.message).toContain('cluster.url');
    expect(err.retriable).toBe(false);
  });

  it('a CA evpub does not trust is TLS_FAILED naming cluster.tls.ca, not retriable; no client certificate is AUTH_FAILED', async () => {
    const err = await refused(
      store({
        url: urlAs(pg, 'evpub_pw', PASSWORD),
        name: uniqueName('c'),
        tls: { ca: pki.otherCa },
      }).acquire('u', 'a', 5000),
      {
        code: ErrorCode.TLS_FAILED,
        endpoint: `postgres://evpub_pw:***@127.0.0.1:${pg.port}/postgres`,
        reason: REASON.untrusted,
        secrets: [PASSWORD],
      },
    );
    expect(err.message).toContain('set cluster.tls.ca to the CA certificate');
    expect(err.retriable).toBe(false);

    const none = await refused(
      store({ url: urlAs(pg, 'evpub'), name: uniqueName('c'), tls: { ca: pki.ca } }).acquire('u', 'a', 5000),
      { code: ErrorCode.AUTH_FAILED, endpoint: `127.0.0.1:${pg.port}`, reason: /certificate/, secrets: [] },
    );
    expect(none.message).toContain('cluster.tls');
  });

  it('a key file that cannot be read is CONFIG_INVALID naming cluster.tls.key, not its path', async () => {
    const missing = `${pki.dir}/no-such-${randomUUID()}.key`;
    const s = store({
      url: urlAs(pg, 'evpub'),
      name: uniqueName('c'),
      tls: { ca: pki.ca, cert: pki.client.cert, key: missing },
    });
    const err = await refused(s.acquire('u', 'a', 5000), {
      code: ErrorCode.CONFIG_INVALID,
      endpoint: 'cluster.tls.key',
      secrets: [missing],
    });
    expect(err.message).toMatch(/cannot read the key file \(ENOENT\)/);
  });
});
