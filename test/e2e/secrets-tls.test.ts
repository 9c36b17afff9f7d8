/**
 * Secrets never leak (issue 13), part 3: a bad certificate. `evpub start` with the five secrets
 * of secrets.ts in its configuration, plus a client key encrypted with a passphrase (a sixth
 * secret), at debug level:
 * - its NATS broker (a private nats-server with TLS and `--auth <token>`) reached with a CA that
 *   did not sign the server's certificate: the start fails with EVPUB_TLS_FAILED naming the
 *   endpoint;
 * - its Redis broker (a private redis-server with a TLS port and an ACL user) works, then the
 *   server's certificate is replaced by an expired one and evpub's connections are killed: the
 *   reconnects fail with EVPUB_TLS_FAILED naming the endpoint while the process serves, and its
 *   API and `evpub status` are read in that state.
 * Nothing it prints or serves holds a secret. Part 1: secrets.test.ts; the harness: secrets.ts.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PrivateBroker } from '../conformance/pubsub.suite';
import { makePki, type Pki } from '../helpers/certs';
import { privateNatsServer } from '../helpers/nats-server';
import { startRedisServer, type PrivateRedis } from '../helpers/redis-server';
import { waitFor } from '../helpers/wait';
import { configOf, expectNoSecret, run, SECRETS, useSecretServers } from './secrets';

useSecretServers();

const PASSPHRASE = `keypp${randomUUID().replace(/-/g, '')}`;

let pki: Pki;
let natsTls: PrivateBroker; // TLS, --auth SECRETS.nats
let redisTls: PrivateRedis; // TLS port; ACL user evpub / SECRETS.redis
let clientTls: { cert: string; key: string; passphrase: string };

beforeAll(async () => {
  pki = makePki();
  clientTls = { ...pki.encrypted(pki.client, PASSPHRASE), passphrase: PASSPHRASE };
  [natsTls, redisTls] = await Promise.all([
    privateNatsServer({ tls: pki.server, args: ['--auth', SECRETS.nats] }),
    startRedisServer({
      tls: { ...pki.server, ca: pki.ca, authClients: 'no' },
      args: ['--user', 'evpub', 'on', `>${SECRETS.redis}`, '~*', '&*', '+@all'],
    }),
  ]);
}, 60_000);
afterAll(async () => {
  await Promise.all([natsTls?.close(), redisTls?.close()]);
  pki?.remove();
});

/** configOf's configuration with `tls` on one broker. */
function withTls(
  config: Record<string, unknown>,
  broker: 'nats' | 'redis',
  tls: Record<string, unknown>,
): Record<string, unknown> {
  const brokers = config.brokers as Record<string, { url: string; options: Record<string, unknown> }>;
  brokers[broker] = { ...brokers[broker]!, options: { ...brokers[broker]!.options, tls } };
  return config;
}

/** A command to the private redis-server on its plain port (the default user, no password). */
const redisCli = (...args: string[]): string =>
  execFileSync('redis-cli', ['-p', new URL(redisTls.url).port, ...args], { encoding: 'utf8' });

describe('evpub start never prints a secret, with a bad certificate', () => {
  it('a NATS broker whose certificate is from a CA evpub was not told to trust: the start fails with EVPUB_TLS_FAILED naming it', async () => {
    const endpoint = `127.0.0.1:${new URL(natsTls.url).port}`;
    const config = withTls(
      configOf({ webhookPort: 0, natsUrl: `nats://${SECRETS.nats}@${endpoint}` }),
      'nats',
      {
        ca: pki.otherCa,
        ...clientTls,
      },
    );
    const c = await run('nats-wrong-ca', config, (out) => out.includes('evpub: '));
    expect(await c.proc.exited).toBe(1);
    // stderr: the message; the debug log: the error with its code.
    expect(c.proc.stderr()).toContain(
      `evpub: TLS with nats://***@${endpoint} failed: the server's certificate is not signed by a CA evpub trusts`,
    );
    const logged = c.text.split('\n').find((l) => l.includes('"start failed"'));
    expect(logged, c.text.slice(-4000)).toContain('"code":"EVPUB_TLS_FAILED"');
    expect(logged).toContain(endpoint);
    expectNoSecret(c, { passphrase: PASSPHRASE });
  }, 60_000);

  it('a Redis broker whose certificate expires under a running evpub: EVPUB_TLS_FAILED naming it, the API and evpub status read meanwhile', async () => {
    redisCli('CONFIG', 'SET', 'tls-cert-file', pki.server.cert, 'tls-key-file', pki.server.key);
    const endpoint = `127.0.0.1:${redisTls.tlsPort}`;
    const config = withTls(
      configOf({ webhookPort: 0, redisUrl: `rediss://evpub:${SECRETS.redis}@${endpoint}` }),
      'redis',
      { ca: pki.ca, ...clientTls },
    );
    let failed = false;
    const c = await run(
      'redis-expired',
      config,
      (out) => out.includes('evpub started'),
      async (_base, output) => {
        // New connections get the expired certificate; evpub's are cut and must reconnect.
        redisCli('CONFIG', 'SET', 'tls-cert-file', pki.expired.cert, 'tls-key-file', pki.expired.key);
        redisCli('CLIENT', 'KILL', 'USER', 'evpub');
        await waitFor(
          () => output().includes('EVPUB_TLS_FAILED'),
          'the TLS failure on reconnect',
          20_000,
        ).then(
          () => (failed = true),
          () => undefined,
        );
        return '';
      },
    );
    expect(c.served, c.text.slice(-4000)).toBe(true);
    expect(failed, c.text.slice(-6000)).toBe(true);
    const failure = c.text.split('\n').find((l) => l.includes('EVPUB_TLS_FAILED') && l.includes(endpoint));
    expect(failure, c.text.slice(-4000)).toBeDefined();
    expect(failure).toMatch(/certificate has expired/);
    expect(c.text).toContain('"code":"EVPUB_TLS_FAILED"');
    // Read while it failed: /ready and `evpub status --json` say why.
    expect(c.text).toMatch(/\/ready 503\n.*broker redis is offline/);
    expect(c.text).toMatch(
      /evpub status --url \S+ --json\n\{\s*"ready": false,\s*"reasons": \[\s*"broker redis is offline"/,
    );
    expectNoSecret(c, { passphrase: PASSPHRASE });
  }, 90_000);
});
