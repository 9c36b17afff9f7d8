/**
 * NATS over TLS against private nats-servers: TLS with client certificates required and a
 * token; TLS with users (a password user and an NKey user) from a config file; TLS in operator
 * mode (JWT users, `.creds` files; made by nats-jwt.ts); an expired server certificate; a
 * certificate for another host name. Certificates from makePki().
 */
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { nkeys } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors';
import { createClient, type Client, type ClientOptions } from '../../src/pubsub/index';
import type { PrivateBroker } from '../conformance/pubsub.suite';
import { makePki, type Pki } from '../helpers/certs';
import { natsOperator, type NatsOperator } from '../helpers/nats-jwt';
import { privateNatsServer } from '../helpers/nats-server';
import { expectWarnedOnce, REASON, refused, roundTrip, warnings } from '../helpers/tls-brokers';

const TOKEN = `tok${randomUUID().replace(/-/g, '')}`;
const PASSWORD = `pw-${randomUUID()}`;

const port = (broker: PrivateBroker): number => Number(new URL(broker.url).port);

describe('NATS over TLS', () => {
  let pki: Pki;
  let tokenServer: PrivateBroker;
  let usersServer: PrivateBroker;
  let expired: PrivateBroker;
  let wrongHost: PrivateBroker;
  let operatorServer: PrivateBroker;
  let operator: NatsOperator;
  let seed: string;
  let seedFile: string;
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
    const user = nkeys.createUser();
    seed = new TextDecoder().decode(user.getSeed());
    seedFile = join(pki.dir, 'user.nk');
    writeFileSync(seedFile, seed + '\n', { mode: 0o600 });
    const users =
      `authorization { users: [ { user: alice, password: "${PASSWORD}" }, ` +
      `{ nkey: ${user.getPublicKey()} } ] }\n`;
    operator = natsOperator();
    [tokenServer, usersServer, expired, wrongHost, operatorServer] = await Promise.all([
      privateNatsServer({ tls: { ...pki.server, ca: pki.ca }, args: ['--auth', TOKEN] }),
      privateNatsServer({ tls: pki.server, config: users }),
      privateNatsServer({ tls: pki.expired }),
      privateNatsServer({ tls: pki.wrongHost }),
      privateNatsServer({ tls: pki.server, config: operator.serverConfig, jetstream: false }),
    ]);
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    await Promise.all([tokenServer, usersServer, expired, wrongHost, operatorServer].map((s) => s?.close()));
    pki?.remove();
  });

  it('publishes and subscribes with a token and a client certificate (token in the URL or nats.token; tls:// or nats:// + tls)', async () => {
    const p = port(tokenServer);
    await roundTrip(`nats://${TOKEN}@localhost:${p}`, { tls: clientTls });
    await roundTrip(`tls://localhost:${p}`, { tls: clientTls, nats: { token: TOKEN } });
  });

  it('publishes and subscribes with a user and password, and with an NKey seed (text or file), over TLS', async () => {
    const p = port(usersServer);
    await roundTrip(`nats://alice:${PASSWORD}@127.0.0.1:${p}`, { tls: { ca: pki.ca } });
    await roundTrip(`tls://127.0.0.1:${p}`, { tls: { ca: pki.ca }, username: 'alice', password: PASSWORD });
    await roundTrip(`tls://127.0.0.1:${p}`, { tls: { ca: pki.ca }, nats: { nkey: seed } });
    await roundTrip(`tls://127.0.0.1:${p}`, { tls: { ca: pki.ca }, nats: { nkey: seedFile } });
  });

  it('publishes and subscribes with a .creds file (JWT) over TLS, given as a path or as its text', async () => {
    const credsFile = join(pki.dir, 'user.creds');
    writeFileSync(credsFile, operator.creds, { mode: 0o600 });
    const url = `tls://127.0.0.1:${port(operatorServer)}`;
    await roundTrip(url, { tls: { ca: pki.ca }, nats: { creds: credsFile } });
    await roundTrip(url, { tls: { ca: pki.ca }, nats: { creds: operator.creds } });
  });

  it('refuses the .creds of a user another operator made with AUTH_FAILED, printing neither JWT nor seed', async () => {
    const stranger = natsOperator();
    const p = port(operatorServer);
    await refused(
      client(`tls://127.0.0.1:${p}`, { tls: { ca: pki.ca }, nats: { creds: stranger.creds } }).connect(),
      {
        code: ErrorCode.AUTH_FAILED,
        endpoint: `127.0.0.1:${p}`,
        secrets: [stranger.userJwt, stranger.userSeed, operator.userSeed],
      },
    );
  });

  it('refuses a wrong token or password with AUTH_FAILED and no secret in the error', async () => {
    const wrong = `wrong${randomUUID().replace(/-/g, '')}`;
    const t = port(tokenServer);
    await refused(client(`nats://${wrong}@127.0.0.1:${t}`, { tls: clientTls }).connect(), {
      code: ErrorCode.AUTH_FAILED,
      endpoint: `127.0.0.1:${t}`,
      secrets: [wrong, TOKEN],
    });
    const u = port(usersServer);
    await refused(client(`nats://alice:${wrong}@127.0.0.1:${u}`, { tls: { ca: pki.ca } }).connect(), {
      code: ErrorCode.AUTH_FAILED,
      endpoint: `127.0.0.1:${u}`,
      secrets: [wrong, PASSWORD],
    });
    // An NKey the server does not know.
    const stranger = new TextDecoder().decode(nkeys.createUser().getSeed());
    await refused(
      client(`tls://127.0.0.1:${u}`, { tls: { ca: pki.ca }, nats: { nkey: stranger } }).connect(),
      {
        code: ErrorCode.AUTH_FAILED,
        endpoint: `127.0.0.1:${u}`,
        secrets: [stranger, seed],
      },
    );
  });

  it('fails with TLS_FAILED when the server certificate is from a CA it was not told to trust, without the token', async () => {
    const p = port(tokenServer);
    await refused(
      client(`nats://${TOKEN}@127.0.0.1:${p}`, { tls: { ...clientTls, ca: pki.otherCa } }).connect(),
      {
        code: ErrorCode.TLS_FAILED,
        endpoint: `127.0.0.1:${p}`,
        reason: REASON.untrusted,
        secrets: [TOKEN],
      },
    );
  });

  it('fails with TLS_FAILED on an expired server certificate', async () => {
    const p = port(expired);
    await refused(client(`tls://127.0.0.1:${p}`, { tls: { ca: pki.ca }, nats: { token: TOKEN } }).connect(), {
      code: ErrorCode.TLS_FAILED,
      endpoint: `127.0.0.1:${p}`,
      reason: REASON.expired,
      secrets: [TOKEN],
    });
  });

  it('fails with TLS_FAILED on a certificate for another host name; tls.servername names the one to expect', async () => {
    const p = port(wrongHost);
    await refused(client(`tls://127.0.0.1:${p}`, { tls: { ca: pki.ca } }).connect(), {
      code: ErrorCode.TLS_FAILED,
      endpoint: `127.0.0.1:${p}`,
      reason: REASON.wrongHost,
      secrets: [],
    });
    await roundTrip(`tls://127.0.0.1:${p}`, { tls: { ca: pki.ca, servername: 'elsewhere.example' } });
  });

  it('with rejectUnauthorized: false connects to an expired certificate (no CA), warning once naming the endpoint', async () => {
    const p = port(expired);
    const { logger, lines } = warnings();
    await roundTrip(`tls://${TOKEN}@127.0.0.1:${p}`, { tls: { rejectUnauthorized: false }, logger });
    expectWarnedOnce(lines, { endpoint: `127.0.0.1:${p}`, setting: 'options.tls', secrets: [TOKEN] });
  });

  it('fails with TLS_FAILED when the server refuses the client certificate (none, or from another CA)', async () => {
    const p = port(tokenServer);
    for (const tls of [{ ca: pki.ca }, { ca: pki.ca, cert: pki.untrusted.cert, key: pki.untrusted.key }]) {
      // nats.js only times out here (TLS 1.3 refuses after the handshake): see nats-tls.ts.
      await refused(client(`nats://${TOKEN}@127.0.0.1:${p}`, { tls, connectTimeout: 1500 }).connect(), {
        code: ErrorCode.TLS_FAILED,
        endpoint: `127.0.0.1:${p}`,
        reason: REASON.clientCert,
        secrets: [TOKEN],
      });
    }
  });

  it('checks the credential options, naming the key and never the secret', async () => {
    expect(() => createClient('nats://localhost:4222', { nats: { nkey: '' } })).toThrow(
      'nats.nkey: must be a non-empty string',
    );
    expect(() => createClient('nats://localhost:4222', { nats: { nkey: seed, creds: seedFile } })).toThrow(
      /nats\.nkey: and nats\.creds both/,
    );
    const missing = join(pki.dir, 'missing.creds');
    await refused(client(`nats://127.0.0.1:${port(usersServer)}`, { nats: { creds: missing } }).connect(), {
      code: ErrorCode.CONFIG_INVALID,
      endpoint: 'nats.creds: cannot read the file (ENOENT)',
      secrets: [],
    });
    const notSeed = 'SUNOTASEED';
    await refused(client(`nats://127.0.0.1:${port(usersServer)}`, { nats: { nkey: notSeed } }).connect(), {
      code: ErrorCode.CONFIG_INVALID,
      endpoint: 'nats.nkey: not an NKey user seed',
      secrets: [notSeed],
    });
  });
});
