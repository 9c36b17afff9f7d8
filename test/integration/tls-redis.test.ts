/**
 * Redis over TLS against private redis-servers: one with `--tls-auth-clients yes` and an ACL user
 * (the default user off), one with an expired certificate, one with a certificate for another
 * host name. The broker adapter and the Redis checkpoint store. Certificates from makePki().
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/app/config';
import { createCheckpointStore } from '../../src/checkpoints/index';
import { ErrorCode } from '../../src/errors';
import { createClient, type Client, type ClientOptions } from '../../src/pubsub/index';
import { makePki, type Pki } from '../helpers/certs';
import { startRedisServer, type PrivateRedis } from '../helpers/redis-server';
import { uniqueName } from '../helpers/services';
import { expectWarnedOnce, REASON, refused, roundTrip, warnings } from '../helpers/tls-brokers';

const PASSWORD = `pw-${randomUUID()}`;
const PASSPHRASE = `pp-${randomUUID()}`;

describe('Redis over TLS', () => {
  let pki: Pki;
  let main: PrivateRedis;
  let expired: PrivateRedis;
  let wrongHost: PrivateRedis;
  let mainPort: number;
  let clientTls: { ca: string; cert: string; key: string };
  const clients: Client[] = [];
  const client = (url: string, options: ClientOptions): Client => {
    const c = createClient(url, { connectTimeout: 5000, ...options });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    pki = makePki();
    clientTls = { ca: pki.ca, cert: pki.client.cert, key: pki.client.key };
    const server = (pair: { cert: string; key: string }, authClients: 'yes' | 'no', args: string[] = []) =>
      startRedisServer({ tls: { ...pair, ca: pki.ca, authClients }, args });
    [main, expired, wrongHost] = await Promise.all([
      server(pki.server, 'yes', [
        '--user',
        'default',
        'off',
        '--user',
        'alice',
        'on',
        `>${PASSWORD}`,
        '~*',
        '&*',
        '+@all',
      ]),
      server(pki.expired, 'no'),
      server(pki.wrongHost, 'no'),
    ]);
    mainPort = main.tlsPort!;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    await Promise.all([main, expired, wrongHost].map((s) => s?.close()));
    pki?.remove();
  });

  it('publishes and subscribes with an ACL user and a client certificate, in both modes', async () => {
    await roundTrip(`rediss://alice:${PASSWORD}@localhost:${mainPort}`, { tls: clientTls });
    // redis:// with the tls option is TLS too; the user from the options.
    await roundTrip(`redis://127.0.0.1:${mainPort}`, {
      username: 'alice',
      password: PASSWORD,
      tls: clientTls,
      redis: { mode: 'streams' },
    });
  });

  it('connects with a client key encrypted by tls.passphrase; a wrong or missing passphrase is CONFIG_INVALID naming it, not echoing it', async () => {
    const encrypted = pki.encrypted(pki.client, PASSPHRASE);
    const tls = { ca: pki.ca, ...encrypted };
    await roundTrip(`rediss://alice:${PASSWORD}@127.0.0.1:${mainPort}`, {
      tls: { ...tls, passphrase: PASSPHRASE },
    });
    const wrong = `wrong-${randomUUID()}`;
    const url = `rediss://alice:${PASSWORD}@127.0.0.1:${mainPort}`;
    const err = await refused(client(url, { tls: { ...tls, passphrase: wrong } }).connect(), {
      code: ErrorCode.CONFIG_INVALID,
      endpoint: 'options.tls.passphrase',
      reason: /wrong passphrase/,
      secrets: [wrong, PASSPHRASE, PASSWORD],
    });
    expect(JSON.stringify(err.context)).not.toContain('BEGIN');
    await refused(client(url, { tls }).connect(), {
      code: ErrorCode.CONFIG_INVALID,
      endpoint: 'options.tls.passphrase',
      reason: /is encrypted: set options\.tls\.passphrase/,
      secrets: [PASSPHRASE, PASSWORD],
    });
  });

  it('refuses a wrong password with AUTH_FAILED and no secret in the error', async () => {
    const wrong = `wrong-${randomUUID()}`;
    await refused(client(`rediss://alice:${wrong}@127.0.0.1:${mainPort}`, { tls: clientTls }).connect(), {
      code: ErrorCode.AUTH_FAILED,
      endpoint: `127.0.0.1:${mainPort}`,
      secrets: [wrong, PASSWORD],
    });
  });

  it('fails with TLS_FAILED when the server certificate is from a CA it was not told to trust', async () => {
    const url = `rediss://alice:${PASSWORD}@127.0.0.1:${mainPort}`;
    await refused(client(url, { tls: { ...clientTls, ca: pki.otherCa } }).connect(), {
      code: ErrorCode.TLS_FAILED,
      endpoint: `127.0.0.1:${mainPort}`,
      reason: REASON.untrusted,
      secrets: [PASSWORD],
    });
  });

  it('fails with TLS_FAILED on an expired server certificate', async () => {
    await refused(client(expired.tlsUrl!, { tls: { ca: pki.ca }, password: PASSWORD }).connect(), {
      code: ErrorCode.TLS_FAILED,
      endpoint: `127.0.0.1:${expired.tlsPort}`,
      reason: REASON.expired,
      secrets: [PASSWORD],
    });
  });

  it('fails with TLS_FAILED on a certificate for another host name; tls.servername names the one to expect', async () => {
    await refused(client(wrongHost.tlsUrl!, { tls: { ca: pki.ca } }).connect(), {
      code: ErrorCode.TLS_FAILED,
      endpoint: `127.0.0.1:${wrongHost.tlsPort}`,
      reason: REASON.wrongHost,
      secrets: [],
    });
    await roundTrip(wrongHost.tlsUrl!, { tls: { ca: pki.ca, servername: 'elsewhere.example' } });
  });

  it('fails with TLS_FAILED when the server refuses the client certificate (none, or from another CA)', async () => {
    const url = `rediss://alice:${PASSWORD}@127.0.0.1:${mainPort}`;
    for (const tls of [{ ca: pki.ca }, { ca: pki.ca, cert: pki.untrusted.cert, key: pki.untrusted.key }]) {
      await refused(client(url, { tls }).connect(), {
        code: ErrorCode.TLS_FAILED,
        endpoint: `127.0.0.1:${mainPort}`,
        reason: REASON.clientCert,
        secrets: [PASSWORD],
      });
    }
  });

  it('with rejectUnauthorized: false connects to a certificate for another host (no CA), warning once for both connections', async () => {
    const { logger, lines } = warnings();
    // roundTrip opens two connections (commands and subscriber): one warning all the same.
    await roundTrip(wrongHost.tlsUrl!, { tls: { rejectUnauthorized: false }, logger });
    expectWarnedOnce(lines, {
      endpoint: `127.0.0.1:${wrongHost.tlsPort}`,
      setting: 'options.tls',
      secrets: [],
    });
  });

  describe('checkpoint store', () => {
    it('saves and loads over TLS with an ACL user (config: checkpoints.tls, username, password)', async () => {
      const config = validateConfig({
        datasources: { mem: { connector: 'memory' } },
        models: { m: { dataSource: 'mem', broker: 'memory://x' } },
        checkpoints: {
          store: 'redis',
          url: `rediss://localhost:${mainPort}`,
          prefix: `${uniqueName()}:`,
          tls: clientTls,
          username: 'alice',
          password: PASSWORD,
        },
      });
      const store = createCheckpointStore(config.checkpoints);
      try {
        await store.save('feed', 'lsn-1');
        expect(await store.load('feed')).toBe('lsn-1');
      } finally {
        await store.close();
      }
    });

    it('fails with TLS_FAILED on a wrong CA and AUTH_FAILED on a wrong password, without the secret', async () => {
      const wrong = `wrong-${randomUUID()}`;
      const cases: { tls: object; password: string; code: ErrorCode; reason?: RegExp }[] = [
        { tls: { ...clientTls, ca: pki.otherCa }, password: PASSWORD, code: ErrorCode.TLS_FAILED },
        { tls: clientTls, password: wrong, code: ErrorCode.AUTH_FAILED },
        // No client certificate: refused by the server after the TLS 1.3 handshake.
        { tls: { ca: pki.ca }, password: PASSWORD, code: ErrorCode.TLS_FAILED, reason: REASON.clientCert },
      ];
      for (const { tls, password, code, reason } of cases) {
        const store = createCheckpointStore({
          store: 'redis',
          url: `rediss://alice:${password}@127.0.0.1:${mainPort}`,
          tls,
        });
        try {
          await refused(store.load('feed'), {
            code,
            endpoint: `127.0.0.1:${mainPort}`,
            ...(code === ErrorCode.TLS_FAILED ? { reason: reason ?? REASON.untrusted } : {}),
            secrets: [PASSWORD, wrong],
          });
        } finally {
          await store.close();
        }
      }
    });

    it('names the key of a bad tls setting in the config', () => {
      expect(() =>
        validateConfig({
          datasources: { mem: { connector: 'memory' } },
          models: { m: { dataSource: 'mem', broker: 'memory://x' } },
          checkpoints: { store: 'redis', url: 'rediss://localhost:6380', tls: { ca: pki.ca, servername: 3 } },
        }),
      ).toThrow(/checkpoints\.tls\.servername: must be a non-empty string/);
    });
  });
});
