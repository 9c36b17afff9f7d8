/**
 * PostgreSQL TLS failures on the server's side, on a private cluster whose certificate the test
 * swaps (test/helpers/postgres-server.ts `serverCert`): an expired certificate and one for
 * another host name each fail start() with TLS_FAILED naming the endpoint and the reason, at
 * once (not retried), and without the password; `tls.servername` accepts the other name.
 * `rejectUnauthorized: false` accepts an expired one, warned once for the connector, its check
 * and the slot probe. An app whose feed fails when the certificate expires under it: its
 * `status()` names the failure and holds none of the secrets (password, key passphrase, broker's).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { initialize, type PostgresConnector } from '../../src/connectors/postgres/index';
import { ErrorCode, EvpubError } from '../../src/errors';
import { createLogger, type Logger } from '../../src/logger';
import { SlotProbe } from '../../src/metrics/postgres-slots';
import { RecordingSink } from '../conformance/connector.suite';
import { makePki, type Pki } from '../helpers/certs';
import { sql } from '../helpers/postgres';
import { privatePostgres, type PrivatePostgres } from '../helpers/postgres-server';
import { quietLogger } from '../helpers/publisher';
import { uniqueName } from '../helpers/services';
import { expectWarnedOnce, warnings } from '../helpers/tls-brokers';
import { waitFor } from '../helpers/wait';

const PASSWORD = 'pw-Secr3t-server';
let pki: Pki;
let pg: PrivatePostgres;
const cleanup: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  pki = makePki();
  pg = await privatePostgres({
    tls: { cert: pki.server.cert, key: pki.server.key, ca: pki.ca },
    hba: ['hostssl all evpub_pw 127.0.0.1/32 scram-sha-256'],
  });
  await sql(`CREATE ROLE evpub_pw LOGIN REPLICATION PASSWORD '${PASSWORD}'`, [], pg.url);
  await sql('CREATE TABLE orders (id text PRIMARY KEY, total int)', [], pg.url);
  await sql('GRANT SELECT ON orders TO evpub_pw', [], pg.url);
  await sql('CREATE PUBLICATION evpub_orders FOR TABLE orders', [], pg.url);
}, 60_000);
afterAll(async () => {
  await pg?.close();
  pki?.remove();
});
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});

const url = (host = '127.0.0.1'): string => `postgres://evpub_pw:${PASSWORD}@${host}:${pg.port}/postgres`;

async function start(
  tls: Record<string, unknown>,
  host?: string,
  logger: Logger = createLogger({ level: 'silent' }),
): Promise<EvpubError | PostgresConnector> {
  const dataSource = {
    name: 'shop',
    settings: {
      url: url(host),
      tls,
      publication: 'evpub_orders',
      slot: uniqueName('slot'),
      reconnectDelay: 30_000,
      maxReconnectDelay: 30_000,
    },
    logger,
    connector: undefined as unknown,
  };
  await initialize(dataSource);
  const c = dataSource.connector as PostgresConnector;
  cleanup.push(() => c.stop());
  return c.start({ models: [{ name: 'orders', settings: {}, from: 'now' }], sink: new RecordingSink() }).then(
    () => c,
    (e: unknown) => e as EvpubError,
  );
}

function expectTlsFailure(err: EvpubError | PostgresConnector, reason: RegExp, host = '127.0.0.1'): void {
  expect(err).toBeInstanceOf(EvpubError);
  const e = err as EvpubError;
  expect(e.code).toBe(ErrorCode.TLS_FAILED);
  expect(e.retriable).toBe(false);
  expect(e.message).toContain(`TLS with postgres://evpub_pw:***@${host}:${pg.port}/postgres failed`);
  expect(e.message).toMatch(reason);
  expect(e.message).not.toContain(PASSWORD);
}

describe('postgres TLS: the server certificate', () => {
  it('an expired server certificate fails start with TLS_FAILED', async () => {
    await pg.serverCert(pki.expired);
    expectTlsFailure(await start({ ca: pki.ca }), /certificate has expired \(CERT_HAS_EXPIRED\)/);
  });

  it('a certificate for another host name fails with TLS_FAILED; tls.servername set to that name connects', async () => {
    await pg.serverCert(pki.wrongHost);
    expectTlsFailure(
      await start({ ca: pki.ca }),
      /not for this host name \(ERR_TLS_CERT_ALTNAME_INVALID\).*tls\.servername/,
    );
    // By IP address and by host name (pg sends the host name as SNI; servername is still checked).
    for (const host of ['127.0.0.1', 'localhost']) {
      const ok = await start({ ca: pki.ca, servername: 'elsewhere.example' }, host);
      expect(ok).not.toBeInstanceOf(EvpubError);
      await (ok as PostgresConnector).stop();
      await sql('SELECT pg_drop_replication_slot($1)', [(ok as PostgresConnector).settings.slot], pg.url);
    }
    expectTlsFailure(await start({ ca: pki.ca }, 'localhost'), /ERR_TLS_CERT_ALTNAME_INVALID/, 'localhost');
  });

  it('rejectUnauthorized: false accepts an expired certificate; the connector, its check and the slot probe warn once in all', async () => {
    await pg.serverCert(pki.expired);
    const { logger, lines } = warnings();
    const c = await start({ rejectUnauthorized: false }, undefined, logger);
    expect(c).not.toBeInstanceOf(EvpubError);
    const connector = c as PostgresConnector;
    // `evpub check` on the same connector, and the metrics' slot probe, connect on their own.
    const findings = await connector.check([{ name: 'orders', settings: {} }]);
    expect(findings[0]).toMatchObject({ level: 'ok', detail: 'connected' });
    const probe = new SlotProbe(
      'shop',
      { url: url(), tls: { rejectUnauthorized: false }, slot: connector.settings.slot },
      { logger, timeoutMs: 5_000 },
    );
    cleanup.push(() => probe.close());
    expect(await probe.read()).toMatchObject({ slot: connector.settings.slot });
    expectWarnedOnce(lines, {
      endpoint: `postgres://evpub_pw:***@127.0.0.1:${pg.port}/postgres`,
      setting: 'datasources.shop.tls',
      secrets: [PASSWORD],
    });
    await connector.stop();
    await sql('SELECT pg_drop_replication_slot($1)', [connector.settings.slot], pg.url);
  });

  it("app.status() of a running app whose feed failed on the server's new certificate holds no secret (password, key passphrase, broker password)", async () => {
    await pg.serverCert(pki.server);
    const passphrase = 'pp-Secr3t-status';
    const brokerSecret = 'bk-Secr3t-status';
    const slot = uniqueName('slot');
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: `memory://user:${brokerSecret}@${uniqueName('b')}` },
      checkpoints: { store: 'memory' },
    });
    cleanup.push(() => sql('SELECT pg_drop_replication_slot($1)', [slot], pg.url));
    cleanup.push(() => app.stop());
    app.dataSource('shop', {
      connector: 'postgres',
      url: url(),
      // A client certificate with an encrypted key (hba asks for the password only: it is sent all the same).
      tls: { ca: pki.ca, ...pki.encrypted(pki.client, passphrase), passphrase },
      publication: 'evpub_orders',
      slot,
      reconnectDelay: 50,
      maxReconnectDelay: 200,
    });
    app.model('orders', { dataSource: 'shop' });
    await app.start();
    expect(app.status().feeds['shop/orders']?.state).not.toBe('failed');
    // The server's certificate expires under it: every reconnect fails the TLS handshake.
    await pg.serverCert(pki.expired);
    await sql(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'evpub_pw'",
      [],
      pg.url,
    );
    await waitFor(() => app.status().feeds['shop/orders']?.state === 'failed', 'the feed failed', 20_000);
    const status = app.status();
    expect(status.state).toBe('running');
    expect(status.feeds['shop/orders']?.error).toMatchObject({
      code: ErrorCode.TLS_FAILED,
      message: expect.stringContaining(
        `TLS with postgres://evpub_pw:***@127.0.0.1:${pg.port}/postgres failed: the server's certificate has expired`,
      ) as string,
    });
    const text = JSON.stringify(status);
    for (const secret of [PASSWORD, passphrase, brokerSecret, 'PRIVATE KEY'])
      expect(text).not.toContain(secret);
  });
});
