/**
 * The NATS lease store over TLS, against private nats-servers (JetStream on) that require TLS
 * and a client certificate (`--tlsverify`) and a user and password; certificates made by this
 * run (makePki).
 *
 * The whole lease conformance suite runs with the store made from a `cluster:` section
 * (parseClusterConfig → createLeaseStore) with `username` / `password` and `tls: { ca, cert,
 * key }`; its outage case on a second such server. Then the refusals a user relies on: a CA
 * evpub does not trust, and no client certificate (which nats.js reports only as a timeout), are
 * EVPUB_TLS_FAILED naming the endpoint and the `cluster.tls` setting that fixes it; a wrong
 * password is EVPUB_AUTH_FAILED; none retriable, no secret in any message.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLeaseStore, parseClusterConfig, type LeaseStore } from '../../src/cluster/index';
import { ErrorCode } from '../../src/errors';
import type { PrivateBroker } from '../conformance/pubsub.suite';
import { leaseConformance } from '../conformance/lease.suite';
import { makePki, type Pki } from '../helpers/certs';
import { privateNatsServer } from '../helpers/nats-server';
import { uniqueName } from '../helpers/services';
import { REASON, refused } from '../helpers/tls-brokers';

const PASSWORD = `pw-${randomUUID()}`;

let pki: Pki;
let nats: PrivateBroker;
const servers: PrivateBroker[] = [];
const opened: LeaseStore[] = [];

async function tlsServer(): Promise<PrivateBroker> {
  const server = await privateNatsServer({
    tls: { cert: pki.server.cert, key: pki.server.key, ca: pki.ca },
    args: ['--user', 'evpub', '--pass', PASSWORD],
  });
  servers.push(server);
  return server;
}

/** A store as evpub makes it from `cluster:`. */
function store(cluster: Record<string, unknown>, opTimeout?: number): LeaseStore {
  const s = createLeaseStore(parseClusterConfig({ store: 'nats', ...cluster }), { opTimeout });
  opened.push(s);
  return s;
}

const clientTls = (): Record<string, string> => ({ ca: pki.ca, cert: pki.client.cert, key: pki.client.key });
const user = { username: 'evpub', password: PASSWORD };
const port = (server: PrivateBroker): string => new URL(server.url).port;

beforeAll(async () => {
  pki = makePki();
  nats = await tlsServer();
});
afterAll(async () => {
  await Promise.all(opened.map((s) => s.close().catch(() => undefined)));
  await Promise.all(servers.map((s) => s.close()));
  pki?.remove();
});

leaseConformance({
  name: 'nats over TLS with a client certificate and a user',
  open: async (cluster) => store({ url: nats.url, name: cluster, tls: clientTls(), ...user }),
  privateServer: async () => {
    const server = await tlsServer();
    return {
      server,
      open: (cluster) => store({ url: server.url, name: cluster, tls: clientTls(), ...user }, 500),
    };
  },
});

describe('nats lease store over TLS', () => {
  it('a tls:// URL is TLS with cluster.tls; the user may come from the URL', async () => {
    const s = store({
      url: `tls://evpub:${PASSWORD}@localhost:${port(nats)}`,
      name: uniqueName('c'),
      tls: clientTls(),
    });
    const lease = await s.acquire('u', 'a', 5000);
    expect(lease).not.toBeNull();
    expect(await s.release(lease!)).toBe(true);
  });

  it('a CA evpub does not trust is TLS_FAILED naming cluster.tls.ca; no client certificate names cluster.tls.cert', async () => {
    const endpoint = `127.0.0.1:${port(nats)}`;
    const untrusted = await refused(
      store(
        { url: nats.url, name: uniqueName('c'), tls: { ...clientTls(), ca: pki.otherCa }, ...user },
        3000,
      ).acquire('u', 'a', 5000),
      { code: ErrorCode.TLS_FAILED, endpoint, reason: REASON.untrusted, secrets: [PASSWORD] },
    );
    expect(untrusted.message).toContain('set cluster.tls.ca to the CA certificate');
    expect(untrusted.retriable).toBe(false);

    const noCert = await refused(
      store({ url: nats.url, name: uniqueName('c'), tls: { ca: pki.ca }, ...user }, 3000).acquire(
        'u',
        'a',
        5000,
      ),
      { code: ErrorCode.TLS_FAILED, endpoint, reason: REASON.clientCert, secrets: [PASSWORD] },
    );
    expect(noCert.message).toContain('set cluster.tls.cert and cluster.tls.key');
  });

  it('a wrong password is AUTH_FAILED, not retriable, without the password', async () => {
    const wrong = `wrong-${randomUUID()}`;
    const err = await refused(
      store(
        { url: nats.url, name: uniqueName('c'), tls: clientTls(), username: 'evpub', password: wrong },
        3000,
      ).acquire('u', 'a', 5000),
      { code: ErrorCode.AUTH_FAILED, endpoint: `127.0.0.1:${port(nats)}`, secrets: [wrong, PASSWORD] },
    );
    expect(err.retriable).toBe(false);
    expect(err.message).toContain('cluster.username / password');
  });
});
