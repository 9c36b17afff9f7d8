/**
 * MySQL / MariaDB TLS failures on the server's side: a private mariadbd whose certificate the
 * test swaps (the files rewritten, then `FLUSH SSL`). An expired certificate and one for another
 * host name each fail start() with TLS_FAILED naming the endpoint and the reason, not retried,
 * without the password.
 */
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Connection } from 'mysql2/promise';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EventConnector } from '../../src/connectors/contract';
import { ErrorCode, EvpubError } from '../../src/errors';
import { RecordingSink } from '../conformance/connector.suite';
import { makePki, type CertPair, type Pki } from '../helpers/certs';
import { mysqlConnector, startPrivateMariaDb, type PrivateMariaDb } from '../helpers/mariadb';

const PASSWORD = 'my-Secr3t-server';
let pki: Pki;
let dir: string;
let server: PrivateMariaDb;
let conn: Connection;
const running: EventConnector[] = [];
const served = (): CertPair => ({ cert: join(dir, 'server.pem'), key: join(dir, 'server.key') });

/** The server presents `pair` from the next handshake on. */
async function serve(pair: CertPair): Promise<void> {
  copyFileSync(pair.cert, served().cert);
  copyFileSync(pair.key, served().key);
  await conn.query('FLUSH SSL');
}

beforeAll(async () => {
  pki = makePki();
  dir = mkdtempSync(join(tmpdir(), 'evpub-mysql-certs-'));
  copyFileSync(pki.server.cert, served().cert);
  copyFileSync(pki.server.key, served().key);
  server = await startPrivateMariaDb({
    binlog: true,
    tls: { ...served(), ca: pki.ca },
  });
  conn = await server.connect();
  await conn.query('USE test');
  await conn.query('CREATE TABLE orders (id INT PRIMARY KEY)');
  await conn.query(`CREATE USER 'evpub_ssl'@'127.0.0.1' IDENTIFIED BY '${PASSWORD}' REQUIRE SSL`);
  await conn.query("GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO 'evpub_ssl'@'127.0.0.1'");
}, 60_000);
afterEach(async () => {
  await Promise.all(running.splice(0).map((c) => c.stop().catch(() => undefined)));
});
afterAll(async () => {
  await conn?.end().catch(() => undefined);
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
  pki?.remove();
});

async function startError(): Promise<EvpubError | undefined> {
  const connector = await mysqlConnector({
    url: `mysql://evpub_ssl:${PASSWORD}@127.0.0.1:${server.port}/test`,
    tls: { ca: pki.ca },
    reconnectDelay: 60_000,
    maxReconnectDelay: 60_000,
  });
  running.push(connector);
  return connector
    .start({ models: [{ name: 'orders', settings: {}, from: 'now' }], sink: new RecordingSink() })
    .then(
      () => undefined,
      (err: unknown) => err as EvpubError,
    );
}

function expectTlsFailure(error: EvpubError | undefined, reason: RegExp): void {
  expect(error).toBeInstanceOf(EvpubError);
  expect(error?.code).toBe(ErrorCode.TLS_FAILED);
  expect(error?.retriable).toBe(false);
  expect(error?.message).toContain(`TLS with mysql://evpub_ssl@127.0.0.1:${server.port}/test failed`);
  expect(error?.message).toMatch(reason);
  expect(error?.message).not.toContain(PASSWORD);
}

describe('mysql TLS: the server certificate', () => {
  it('the right certificate connects (the control case)', async () => {
    await serve(pki.server);
    expect(await startError()).toBeUndefined();
  });

  it('an expired server certificate fails start with TLS_FAILED', async () => {
    await serve(pki.expired);
    expectTlsFailure(await startError(), /certificate has expired \(CERT_HAS_EXPIRED\)/);
  });

  it('a certificate for another host name fails start with TLS_FAILED', async () => {
    await serve(pki.wrongHost);
    expectTlsFailure(await startError(), /not for this host name \(ERR_TLS_CERT_ALTNAME_INVALID\)/);
  });
});
