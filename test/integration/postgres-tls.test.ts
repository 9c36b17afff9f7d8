/**
 * PostgreSQL over TLS, against a private cluster with `ssl=on` (test/helpers/postgres-server.ts)
 * and certificates made by this run (test/helpers/certs.ts):
 *
 *   hostssl all evpub    127.0.0.1/32 cert            # client certificate, CN = role name
 *   hostssl all evpub_pw 127.0.0.1/32 scram-sha-256   # password, over TLS only
 *
 * Capture end to end (connector → memory broker, checkpoints in PostgreSQL, both over TLS with
 * the client certificate), the metrics slot probe on the same settings, a password user with
 * only `tls.ca`, and the refusals: wrong password, no client certificate, someone else's
 * certificate (AUTH_FAILED, no secret), a CA evpub does not trust (TLS_FAILED).
 * The server-side certificate failures (expired, wrong host) are in postgres-tls-server.test.ts.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { PostgresCheckpointStore } from '../../src/checkpoints/postgres';
import type { EventConnector } from '../../src/connectors/contract';
import { initialize as pollInitialize } from '../../src/connectors/poll/index';
import { initialize, type PostgresConnector } from '../../src/connectors/postgres/index';
import { ErrorCode, EvpubError } from '../../src/errors';
import { createLogger } from '../../src/logger';
import { SlotProbe } from '../../src/metrics/postgres-slots';
import { RecordingSink } from '../conformance/connector.suite';
import { makePki, type Pki } from '../helpers/certs';
import { sql } from '../helpers/postgres';
import { privatePostgres, type PrivatePostgres } from '../helpers/postgres-server';
import { quietLogger, subscriber } from '../helpers/publisher';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const PASSWORD = 'pw-Secr3t-tls';
let pki: Pki;
let pg: PrivatePostgres;
const cleanup: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  pki = makePki();
  pg = await privatePostgres({
    tls: { cert: pki.server.cert, key: pki.server.key, ca: pki.ca },
    hba: ['hostssl all evpub 127.0.0.1/32 cert', 'hostssl all evpub_pw 127.0.0.1/32 scram-sha-256'],
  });
  // The least a source needs: REPLICATION, SELECT on the tables, a publication made for it.
  for (const role of ['evpub', 'evpub_pw']) {
    await sql(
      `CREATE ROLE ${role} LOGIN REPLICATION${role === 'evpub_pw' ? ` PASSWORD '${PASSWORD}'` : ''}`,
      [],
      pg.url,
    );
    await sql(`GRANT CREATE ON SCHEMA public TO ${role}`, [], pg.url); // the checkpoint table
  }
  await sql('CREATE TABLE orders (id text PRIMARY KEY, total int)', [], pg.url);
  await sql('GRANT SELECT ON orders TO evpub, evpub_pw', [], pg.url);
  await sql('CREATE PUBLICATION evpub_orders FOR TABLE orders', [], pg.url);
}, 60_000);
afterAll(async () => {
  await pg?.close();
  pki?.remove();
});
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});

const urlAs = (user: string, password?: string): string =>
  `postgres://${user}${password ? `:${password}` : ''}@127.0.0.1:${pg.port}/postgres`;

async function connector(settings: Record<string, unknown>): Promise<PostgresConnector> {
  const dataSource = {
    name: 'shop',
    settings: {
      publication: 'evpub_orders',
      slot: uniqueName('slot'),
      reconnectDelay: 50,
      maxReconnectDelay: 200,
      ...settings,
    },
    logger: createLogger({ level: 'silent' }),
    connector: undefined as unknown,
  };
  await initialize(dataSource);
  const c = dataSource.connector as PostgresConnector;
  cleanup.push(() => c.stop());
  return c;
}

/** start() of a connector with these settings; the error it rejects with. */
async function startFails(settings: Record<string, unknown>): Promise<EvpubError> {
  const c = await connector(settings);
  const err = await c
    .start({ models: [{ name: 'orders', settings: {}, from: 'now' }], sink: new RecordingSink() })
    .then(
      () => undefined,
      (e: unknown) => e,
    );
  expect(err).toBeInstanceOf(EvpubError);
  return err as EvpubError;
}

/** The TLS state of evpub's sessions as the server sees them. */
async function sessions(user: string): Promise<{ ssl: boolean; dn: string | null; backend: string }[]> {
  return sql(
    `SELECT s.ssl, s.client_dn AS dn, a.backend_type AS backend FROM pg_stat_ssl s
       JOIN pg_stat_activity a USING (pid) WHERE a.usename = $1`,
    [user],
    pg.url,
  );
}

describe('postgres over TLS', () => {
  it('captures to a broker over TLS with a client certificate, checkpoints in PostgreSQL over TLS, the slot probe on the same settings', async () => {
    const tls = { ca: pki.ca, cert: pki.client.cert, key: pki.client.key };
    const slot = uniqueName('slot');
    const broker = `memory://${uniqueName('b')}`;
    const sub = await subscriber(broker);
    cleanup.push(() => sub.client.end());
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: broker },
      checkpoints: { store: 'postgres', url: urlAs('evpub'), table: 'evpub_tls_checkpoints', tls },
    });
    cleanup.push(() => app.stop());
    app.dataSource('shop', {
      connector: 'postgres',
      url: urlAs('evpub'),
      tls,
      slot,
      publication: 'evpub_orders',
      statusInterval: 100,
    });
    app.model('orders', { dataSource: 'shop', topic: '{datasource}/{model}/{op}/{key}' });
    await app.start();

    await sql("INSERT INTO orders VALUES ('o-1', 10), ('o-2', 20)", [], pg.url);
    await sql("UPDATE orders SET total = 11 WHERE id = 'o-1'", [], pg.url);
    await waitFor(() => sub.got.length === 3, 'three events on the broker');
    expect(sub.got.map((m) => m.topic)).toEqual([
      'shop/orders/create/o-1',
      'shop/orders/create/o-2',
      'shop/orders/update/o-1',
    ]);
    expect((sub.got[2]!.json.data as { after: unknown }).after).toEqual({ id: 'o-1', total: 11 });

    // Every session of evpub's (replication, admin, checkpoint pool) is TLS with the certificate.
    const seen = await sessions('evpub');
    expect(seen.length).toBeGreaterThanOrEqual(2);
    expect(seen.some((s) => s.backend === 'walsender')).toBe(true);
    for (const s of seen) expect(s).toMatchObject({ ssl: true, dn: '/CN=evpub' });

    // The checkpoint reached the store (it connects only over TLS with the certificate).
    await waitFor(
      async () =>
        (await sql<{ n: number }>('SELECT count(*)::int AS n FROM evpub_tls_checkpoints', [], pg.url))[0]!.n >
        0,
      'a checkpoint saved in PostgreSQL',
    );

    // The metrics slot probe reads the slot with the datasource's settings (tls included).
    const probe = new SlotProbe(
      'shop',
      { url: urlAs('evpub'), tls, slot },
      { logger: quietLogger(), timeoutMs: 5_000 },
    );
    cleanup.push(() => probe.close());
    expect(await probe.read()).toEqual({ slot, bytes: expect.any(Number) as number });
    await app.stop();
    await sql('SELECT pg_drop_replication_slot($1)', [slot], pg.url);
  });

  it('a password user over TLS with only tls.ca captures; a wrong password is AUTH_FAILED without the password', async () => {
    const c = await connector({ url: urlAs('evpub_pw', PASSWORD), tls: { ca: pki.ca } });
    const sink = new RecordingSink();
    await c.start({ models: [{ name: 'orders', settings: {}, from: 'now' }], sink });
    await sql("INSERT INTO orders VALUES ('p-1', 1)", [], pg.url);
    await waitFor(() => sink.events.length === 1, 'the insert');
    expect(sink.events[0]).toMatchObject({ op: 'create', key: 'p-1' });
    expect((await sessions('evpub_pw')).every((s) => s.ssl && s.dn === null)).toBe(true);
    await c.stop();
    await sql('SELECT pg_drop_replication_slot($1)', [c.settings.slot], pg.url);

    const err = await startFails({ url: urlAs('evpub_pw', 'not-the-password'), tls: { ca: pki.ca } });
    expect(err.code).toBe(ErrorCode.AUTH_FAILED);
    expect(err.message).toContain(`postgres://evpub_pw:***@127.0.0.1:${pg.port}/postgres`);
    expect(err.message).not.toContain('not-the-password');
  });

  it('no client certificate, or one for another user, is AUTH_FAILED', async () => {
    const none = await startFails({ url: urlAs('evpub'), tls: { ca: pki.ca } });
    expect(none.code).toBe(ErrorCode.AUTH_FAILED);
    expect(none.message).toMatch(/certificate/);

    const mallory = pki.clientFor('mallory');
    const other = await startFails({
      url: urlAs('evpub'),
      tls: { ca: pki.ca, cert: mallory.cert, key: mallory.key },
    });
    expect(other.code).toBe(ErrorCode.AUTH_FAILED);
    expect(other.message).toMatch(/certificate authentication failed for user "evpub"/);
  });

  it('a server certificate from a CA evpub does not trust: TLS_FAILED at start naming the endpoint, not retried; the checkpoint store too', async () => {
    const started = Date.now();
    const err = await startFails({
      url: urlAs('evpub_pw', PASSWORD),
      tls: { ca: pki.otherCa },
      reconnectDelay: 60_000,
      maxReconnectDelay: 60_000,
    });
    expect(err.code).toBe(ErrorCode.TLS_FAILED);
    expect(err.retriable).toBe(false);
    expect(err.message).toContain(`TLS with postgres://evpub_pw:***@127.0.0.1:${pg.port}/postgres failed`);
    expect(err.message).toMatch(/not signed by a CA evpub trusts.*tls\.ca/);
    expect(err.message).not.toContain(PASSWORD);
    expect(Date.now() - started).toBeLessThan(30_000); // one attempt, not a back-off of 60 s

    const store = new PostgresCheckpointStore({ url: urlAs('evpub_pw', PASSWORD), tls: { ca: pki.otherCa } });
    cleanup.push(() => store.close());
    const stored = await store.load('shop/orders').catch((e: unknown) => e as EvpubError);
    expect(stored).toBeInstanceOf(EvpubError);
    expect((stored as EvpubError).code).toBe(ErrorCode.TLS_FAILED);
    expect((stored as EvpubError).message).not.toContain(PASSWORD);
  });

  it('the poll connector reads a table over TLS (tls.ca); a CA it does not trust is TLS_FAILED', async () => {
    await sql("INSERT INTO orders VALUES ('q-1', 5) ON CONFLICT DO NOTHING", [], pg.url);
    const poller = async (ca: string): Promise<{ sink: RecordingSink; error?: unknown }> => {
      const ds = {
        name: 'table',
        settings: { url: urlAs('evpub_pw', PASSWORD), tls: { ca } },
        logger: createLogger({ level: 'silent' }),
        connector: undefined as unknown,
      };
      await pollInitialize(ds);
      const c = ds.connector as EventConnector;
      cleanup.push(() => c.stop());
      const sink = new RecordingSink();
      const error = await c
        .start({ models: [{ name: 'orders', settings: { interval: 50 }, from: 'beginning' }], sink })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      return { sink, error };
    };
    const ok = await poller(pki.ca);
    expect(ok.error).toBeUndefined();
    await waitFor(() => ok.sink.events.some((e) => e.key === 'q-1'), 'the row, polled over TLS');

    const bad = await poller(pki.otherCa);
    expect(bad.error).toBeInstanceOf(EvpubError);
    expect((bad.error as EvpubError).code).toBe(ErrorCode.TLS_FAILED);
    expect((bad.error as EvpubError).message).not.toContain(PASSWORD);
  });

  it('sslmode in the URL keeps working without the tls setting', async () => {
    const c = await connector({ url: `${urlAs('evpub_pw', PASSWORD)}?sslmode=no-verify` });
    await c.start({ models: [{ name: 'orders', settings: {}, from: 'now' }], sink: new RecordingSink() });
    expect((await sessions('evpub_pw')).some((s) => s.ssl)).toBe(true);
    await c.stop();
    await sql('SELECT pg_drop_replication_slot($1)', [c.settings.slot], pg.url);
  });
});
