/**
 * The AMQP adapter's TLS and authentication settings without a broker: validation errors name
 * the key and the fix, and a TLS handshake with a server whose certificate is expired or for
 * another host (node:tls servers made with this run's certificates) fails `connect()` at once
 * with EVPUB_TLS_FAILED naming the endpoint and the reason. The RabbitMQ cases are in
 * tls-amqp.test.ts.
 */
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors';
import { createClient, type ClientOptions } from '../../src/pubsub/index';
import { makePki, type CertPair, type Pki } from '../helpers/certs';

let pki: Pki;
const servers: Server[] = [];
const sockets: TLSSocket[] = [];
beforeAll(() => {
  pki = makePki();
});
afterAll(async () => {
  sockets.forEach((s) => s.destroy());
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  pki.remove();
});

/** A TLS server that completes handshakes and then says nothing (no AMQP behind it). */
async function tlsServer(pair: CertPair): Promise<number> {
  const server = createServer({ cert: readFileSync(pair.cert), key: readFileSync(pair.key) }, (socket) => {
    socket.on('error', () => undefined);
    sockets.push(socket);
  });
  server.on('tlsClientError', () => undefined);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

async function connectError(url: string, options: ClientOptions): Promise<Error & { code?: string }> {
  const client = createClient(url, { connectTimeout: 3_000, ...options });
  try {
    await client.connect();
  } catch (err) {
    return err as Error & { code?: string };
  } finally {
    await client.end().catch(() => undefined);
  }
  throw new Error('connected');
}

describe('AMQP TLS settings', () => {
  it('refuses bad settings before connecting, naming the key and the nearest valid one', () => {
    const bad = (options: ClientOptions, url = 'amqps://localhost:5671'): string => {
      try {
        createClient(url, options);
      } catch (err) {
        expect(err).toMatchObject({ code: ErrorCode.CONFIG_INVALID });
        return (err as Error).message;
      }
      throw new Error('accepted');
    };
    expect(bad({ tls: { servrname: 'x' } as never })).toMatch(
      /^options\.tls\.servrname: .*did you mean servername\?/,
    );
    expect(bad({ amqp: { auht: 'external' } })).toMatch(/^amqp\.auht: unknown option; did you mean auth\?/);
    expect(bad({ amqp: { auth: 'scram' } })).toMatch(/^amqp\.auth: must be "plain" .* or "external"/);
    expect(bad({ tls: { ca: pki.ca }, amqp: { auth: 'external' } })).toMatch(/set tls\.cert and tls\.key/);
    const withPassword = bad(
      { tls: { ca: pki.ca, ...pki.client }, amqp: { auth: 'external' } },
      'amqps://app:hunter2-secret@localhost:5671',
    );
    expect(withPassword).toMatch(/remove the user name and password/);
    expect(withPassword).not.toContain('hunter2-secret');
    expect(bad({ tls: { cert: pki.client.cert } })).toMatch(
      /options\.tls\.key: a client certificate needs both/,
    );
  });

  it('an expired server certificate and one for another host fail with EVPUB_TLS_FAILED at once', async () => {
    const expired = await tlsServer(pki.expired);
    const wrongHost = await tlsServer(pki.wrongHost);
    const old = await connectError(`amqps://app:pw-x1@localhost:${expired}`, { tls: { ca: pki.ca } });
    expect(old.code).toBe(ErrorCode.TLS_FAILED);
    expect(old.message).toBe(
      `TLS with amqps://localhost:${expired} failed: the server's certificate has expired (CERT_HAS_EXPIRED); renew the server certificate`,
    );
    const name = await connectError(`amqps://localhost:${wrongHost}`, { tls: { ca: pki.ca } });
    expect(name.code).toBe(ErrorCode.TLS_FAILED);
    expect(name.message).toMatch(
      /^TLS with amqps:\/\/localhost:\d+ failed: the server's certificate is not for this host name/,
    );
    // `tls` alone (an amqp:// URL) turns TLS on too.
    const viaOption = await connectError(`amqp://localhost:${expired}`, { tls: { ca: pki.ca } });
    expect(viaOption.code).toBe(ErrorCode.TLS_FAILED);
  });

  it('a key file that cannot be read is CONFIG_INVALID naming the setting, not the file', async () => {
    const port = await tlsServer(pki.server);
    const err = await connectError(`amqps://localhost:${port}`, {
      tls: { ca: pki.ca, cert: pki.client.cert, key: '/nonexistent/secret-name.key' },
    });
    expect(err.code).toBe(ErrorCode.CONFIG_INVALID);
    expect(err.message).toMatch(/^options\.tls\.key: cannot read the key file \(ENOENT\)/);
    expect(err.message).not.toContain('secret-name');
  });

  it('rejectUnauthorized: false accepts any certificate and warns once, naming the endpoint', async () => {
    const port = await tlsServer(pki.expired);
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
    const err = await connectError(`amqps://localhost:${port}`, {
      tls: { rejectUnauthorized: false },
      logger,
      connectTimeout: 1_000,
    });
    // The handshake passed; the server then never speaks AMQP.
    expect(err.code).toBe(ErrorCode.CONNECT_FAILED);
    const warnings = lines.filter((l) => l.includes('TLS verification is off'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`amqps://localhost:${port}`);
  });
});
