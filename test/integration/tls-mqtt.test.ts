/**
 * MQTT over TLS against a private mosquitto with four TLS listeners: client certificates
 * required (the certificate's CN is the user name), user and password, an expired server
 * certificate, and a certificate for another host name. Certificates come from makePki().
 */
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/app/config';
import { ErrorCode } from '../../src/errors';
import { createClient, type Client, type ClientOptions } from '../../src/pubsub/index';
import { makePki, type Pki } from '../helpers/certs';
import { startMosquitto, type PrivateMosquitto } from '../helpers/mosquitto';
import { REASON, refused, roundTrip } from '../helpers/tls-brokers';

const PASSWORD = `pw-${randomUUID()}`;

describe('MQTT over TLS', () => {
  let pki: Pki;
  let broker: PrivateMosquitto;
  let certPort: number;
  let passwordPort: number;
  let expiredPort: number;
  let wrongHostPort: number;
  const clients: Client[] = [];
  const client = (url: string, options: ClientOptions): Client => {
    const c = createClient(url, { connectTimeout: 5000, ...options });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    pki = makePki();
    const listener = (pair: { cert: string; key: string }) => ({
      cafile: pki.ca,
      certfile: pair.cert,
      keyfile: pair.key,
    });
    broker = await startMosquitto({
      users: { alice: PASSWORD },
      tlsListeners: [
        { ...listener(pki.server), requireCertificate: true, useIdentityAsUsername: true },
        listener(pki.server),
        listener(pki.expired),
        listener(pki.wrongHost),
      ],
    });
    [certPort, passwordPort, expiredPort, wrongHostPort] = broker.tlsPorts as [
      number,
      number,
      number,
      number,
    ];
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    await broker?.close();
    pki?.remove();
  });

  it('publishes and subscribes with a client certificate as the identity (no password)', async () => {
    await roundTrip(`mqtts://localhost:${certPort}`, {
      tls: { ca: pki.ca, cert: pki.client.cert, key: pki.client.key },
    });
  });

  it('publishes and subscribes with a user and password over TLS, from the URL or the options', async () => {
    await roundTrip(`mqtts://alice:${PASSWORD}@127.0.0.1:${passwordPort}`, { tls: { ca: pki.ca } });
    // mqtt:// with the tls option is TLS too.
    await roundTrip(`mqtt://127.0.0.1:${passwordPort}`, {
      username: 'alice',
      password: PASSWORD,
      tls: { ca: pki.ca },
    });
  });

  it('refuses a wrong password with AUTH_FAILED and no secret in the error', async () => {
    const wrong = `wrong-${randomUUID()}`;
    await refused(
      client(`mqtts://alice:${wrong}@127.0.0.1:${passwordPort}`, { tls: { ca: pki.ca } }).connect(),
      {
        code: ErrorCode.AUTH_FAILED,
        endpoint: `127.0.0.1:${passwordPort}`,
        secrets: [wrong, PASSWORD],
      },
    );
  });

  it('fails with TLS_FAILED when the server certificate is from a CA it was not told to trust', async () => {
    const url = `mqtts://alice:${PASSWORD}@127.0.0.1:${passwordPort}`;
    await refused(client(url, { tls: { ca: pki.otherCa } }).connect(), {
      code: ErrorCode.TLS_FAILED,
      endpoint: `127.0.0.1:${passwordPort}`,
      reason: REASON.untrusted,
      secrets: [PASSWORD],
    });
    // Without tls.ca, the system's CAs do not know the test CA either.
    await refused(client(url, {}).connect(), {
      code: ErrorCode.TLS_FAILED,
      endpoint: `127.0.0.1:${passwordPort}`,
      reason: REASON.untrusted,
      secrets: [PASSWORD],
    });
  });

  it('fails with TLS_FAILED on an expired server certificate', async () => {
    await refused(
      client(`mqtts://alice:${PASSWORD}@127.0.0.1:${expiredPort}`, { tls: { ca: pki.ca } }).connect(),
      {
        code: ErrorCode.TLS_FAILED,
        endpoint: `127.0.0.1:${expiredPort}`,
        reason: REASON.expired,
        secrets: [PASSWORD],
      },
    );
  });

  it('fails with TLS_FAILED on a certificate for another host name; tls.servername names the one to expect', async () => {
    const url = `mqtts://alice:${PASSWORD}@127.0.0.1:${wrongHostPort}`;
    await refused(client(url, { tls: { ca: pki.ca } }).connect(), {
      code: ErrorCode.TLS_FAILED,
      endpoint: `127.0.0.1:${wrongHostPort}`,
      reason: REASON.wrongHost,
      secrets: [PASSWORD],
    });
    await roundTrip(url, { tls: { ca: pki.ca, servername: 'elsewhere.example' } });
  });

  it('fails with TLS_FAILED when the broker refuses the client certificate (none, or from another CA)', async () => {
    const url = `mqtts://localhost:${certPort}`;
    for (const tls of [{ ca: pki.ca }, { ca: pki.ca, cert: pki.untrusted.cert, key: pki.untrusted.key }]) {
      await refused(client(url, { tls }).connect(), {
        code: ErrorCode.TLS_FAILED,
        endpoint: `localhost:${certPort}`,
        reason: REASON.clientCert,
        secrets: [],
      });
    }
  });

  it('connects to an expired certificate only with rejectUnauthorized: false, and warns once naming the endpoint', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
    const url = `mqtts://alice:${PASSWORD}@127.0.0.1:${expiredPort}`;
    await roundTrip(url, { tls: { rejectUnauthorized: false }, logger });
    const warnings = lines.filter((l) => l.includes('TLS verification is off'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`127.0.0.1:${expiredPort}`);
    expect(warnings[0]).toContain('options.tls.rejectUnauthorized');
    expect(lines.join('\n')).not.toContain(PASSWORD);
  });

  it('checks the tls option when the client is made, and in the config, naming the key', () => {
    expect(() =>
      createClient('mqtts://localhost:8883', { tls: { rejectUnauthorised: false } as never }),
    ).toThrow('options.tls.rejectUnauthorised: unknown TLS setting; did you mean rejectUnauthorized?');
    const config = {
      datasources: { mem: { connector: 'memory' } },
      models: { m: { dataSource: 'mem', broker: 'main' } },
      brokers: {
        main: { url: 'mqtts://localhost:8883', options: { tls: { ca: pki.ca, cert: pki.client.cert } } },
      },
    };
    expect(() => validateConfig(config)).toThrow(
      /brokers\.main\.options\.tls\.key: a client certificate needs both cert and key/,
    );
    config.brokers.main.options.tls = { ca: pki.ca, cert: pki.client.cert, key: pki.client.key } as never;
    expect(() => validateConfig(config)).not.toThrow();
  });
});
