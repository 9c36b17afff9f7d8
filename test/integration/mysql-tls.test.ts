/**
 * MySQL / MariaDB over TLS, against a private mariadbd with ssl_cert / ssl_key / ssl_ca from
 * certificates made by this run, and users that require it:
 *
 *   evpub_ssl   IDENTIFIED BY '...' REQUIRE SSL      (password over TLS)
 *   evpub_x509  REQUIRE X509                          (a client certificate from the CA)
 *
 * each with the least grants a source needs (REPLICATION SLAVE, REPLICATION CLIENT, SELECT, and
 * INSERT/UPDATE on the snapshot signal table). Binlog capture (and a snapshot, which uses the
 * query connections and the signal table) over TLS; the refusals: no TLS for a REQUIRE SSL user,
 * no certificate for a REQUIRE X509 user (AUTH_FAILED), a CA evpub does not trust (TLS_FAILED
 * naming the endpoint, no password).
 */
import type { Connection } from 'mysql2/promise';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EventConnector } from '../../src/connectors/contract';
import { initialize as pollInitialize } from '../../src/connectors/poll/index';
import { createLogger } from '../../src/logger';
import { ErrorCode, EvpubError } from '../../src/errors';
import { RecordingSink } from '../conformance/connector.suite';
import { makePki, type Pki } from '../helpers/certs';
import { mysqlConnector, startPrivateMariaDb, type PrivateMariaDb } from '../helpers/mariadb';
import { waitFor } from '../helpers/wait';

const PASSWORD = 'my-Secr3t-tls';
let pki: Pki;
let server: PrivateMariaDb;
let conn: Connection;
const running: EventConnector[] = [];

beforeAll(async () => {
  pki = makePki();
  server = await startPrivateMariaDb({
    tls: { cert: pki.server.cert, key: pki.server.key, ca: pki.ca },
  });
  conn = await server.connect();
  await conn.query('USE test');
  await conn.query('CREATE TABLE orders (id INT PRIMARY KEY, total INT)');
  await conn.query('CREATE TABLE evpub_signal (id VARCHAR(255) PRIMARY KEY, watermark VARCHAR(64) NOT NULL)');
  for (const [user, auth] of [
    ['evpub_ssl', `IDENTIFIED BY '${PASSWORD}' REQUIRE SSL`],
    ['evpub_x509', 'REQUIRE X509'],
  ] as const) {
    await conn.query(`CREATE USER '${user}'@'127.0.0.1' ${auth}`);
    await conn.query(`GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '${user}'@'127.0.0.1'`);
    await conn.query(`GRANT INSERT, UPDATE ON test.evpub_signal TO '${user}'@'127.0.0.1'`);
  }
}, 60_000);
afterEach(async () => {
  await Promise.all(running.splice(0).map((c) => c.stop().catch(() => undefined)));
});
afterAll(async () => {
  await conn?.end().catch(() => undefined);
  await server?.close();
  pki?.remove();
});

const url = (user: string, password?: string): string =>
  `mysql://${user}${password ? `:${password}` : ''}@127.0.0.1:${server.port}/test`;

async function start(
  settings: Record<string, unknown>,
  from: 'now' | 'beginning' = 'now',
): Promise<{ sink: RecordingSink; error?: EvpubError }> {
  const connector = await mysqlConnector(settings);
  running.push(connector);
  const sink = new RecordingSink();
  try {
    await connector.start({ models: [{ name: 'orders', settings: {}, from }], sink });
    return { sink };
  } catch (err) {
    expect(err).toBeInstanceOf(EvpubError);
    return { sink, error: err as EvpubError };
  }
}

describe('mysql over TLS', () => {
  it('captures the binlog over TLS with a client certificate (REQUIRE X509), snapshot included', async () => {
    await conn.query('INSERT INTO orders VALUES (1, 10)');
    const { sink, error } = await start(
      {
        url: url('evpub_x509'),
        tls: { ca: pki.ca, cert: pki.client.cert, key: pki.client.key },
        snapshot: 'initial',
      },
      'beginning',
    );
    expect(error).toBeUndefined();
    await waitFor(() => sink.events.length === 1, 'the snapshot row');
    await conn.query('INSERT INTO orders VALUES (2, 20)');
    await conn.query('UPDATE orders SET total = 11 WHERE id = 1');
    await waitFor(() => sink.events.length === 3, 'the binlog changes');
    expect(sink.events.map((e) => [e.op, e.key])).toEqual([
      ['snapshot', '1'],
      ['create', '2'],
      ['update', '1'],
    ]);
  });

  it('a REQUIRE SSL user captures with a password and tls.ca; without tls it is refused (AUTH_FAILED, no password)', async () => {
    const { sink, error } = await start({ url: url('evpub_ssl', PASSWORD), tls: { ca: pki.ca } });
    expect(error).toBeUndefined();
    await conn.query('INSERT INTO orders VALUES (3, 30)');
    await waitFor(() => sink.events.length === 1, 'the insert');
    expect(sink.events[0]).toMatchObject({ op: 'create', key: '3' });

    const plain = await start({ url: url('evpub_ssl', PASSWORD) });
    expect(plain.error?.code).toBe(ErrorCode.AUTH_FAILED);
    expect(plain.error?.message).not.toContain(PASSWORD);
  });

  it('a REQUIRE X509 user without a client certificate is AUTH_FAILED', async () => {
    const { error } = await start({ url: url('evpub_x509'), tls: { ca: pki.ca } });
    expect(error?.code).toBe(ErrorCode.AUTH_FAILED);
    expect(error?.message).toMatch(/tls\.cert/);
  });

  it('a server certificate from a CA evpub does not trust: TLS_FAILED at start naming the endpoint, not retried', async () => {
    const { error } = await start({
      url: url('evpub_ssl', PASSWORD),
      tls: { ca: pki.otherCa },
      reconnectDelay: 60_000,
      maxReconnectDelay: 60_000,
    });
    expect(error?.code).toBe(ErrorCode.TLS_FAILED);
    expect(error?.retriable).toBe(false);
    expect(error?.message).toContain(`TLS with mysql://evpub_ssl@127.0.0.1:${server.port}/test failed`);
    expect(error?.message).toMatch(/not signed by a CA evpub trusts/);
    expect(error?.message).not.toContain(PASSWORD);
  });

  it('the poll connector reads a table over TLS; a CA it does not trust is TLS_FAILED', async () => {
    await conn.query('INSERT IGNORE INTO orders VALUES (9, 90)');
    const poller = async (ca: string): Promise<{ sink: RecordingSink; error?: unknown }> => {
      const ds = {
        name: 'table',
        settings: { url: url('evpub_ssl', PASSWORD), tls: { ca } },
        logger: createLogger({ level: 'silent' }),
        connector: undefined as unknown,
      };
      await pollInitialize(ds);
      const c = ds.connector as EventConnector;
      running.push(c);
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
    await waitFor(() => ok.sink.events.some((e) => e.key === '9'), 'the row, polled over TLS');

    const bad = await poller(pki.otherCa);
    expect((bad.error as EvpubError).code).toBe(ErrorCode.TLS_FAILED);
    expect((bad.error as EvpubError).message).not.toContain(PASSWORD);
  });

  it('tls settings are checked: a misspelt key names the nearest, servername is refused', async () => {
    await expect(mysqlConnector({ url: url('evpub_ssl'), tls: { caa: pki.ca } })).rejects.toThrow(
      'datasources.my.tls.caa: unknown TLS setting; did you mean ca?',
    );
    await expect(
      mysqlConnector({ url: url('evpub_ssl'), tls: { ca: pki.ca, servername: 'db.example' } }),
    ).rejects.toThrow(/datasources\.my\.tls\.servername: is not supported/);
  });
});
