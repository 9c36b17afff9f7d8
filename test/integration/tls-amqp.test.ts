/**
 * AMQP over TLS against a private RabbitMQ node with a TLS listener (certificates made by this
 * run): publish and subscribe with a private CA and a password, SASL EXTERNAL with a client
 * certificate, and each failure a user meets (wrong password, unknown certificate user, a
 * client certificate from another CA, an untrusted server, a wrong host name, TLS to the plain
 * port) as the EvpubError `connect()` rejects with at once, with no secret in it.
 * The expired-certificate case needs another server certificate: tls-amqp-handshake.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode, isEvpubError } from '../../src/errors';
import { createClient, type Client, type ClientOptions } from '../../src/pubsub/index';
import { collector } from '../conformance/pubsub.suite';
import { makePki, type Pki } from '../helpers/certs';
import { startPrivateRabbitMq, type PrivateRabbitMq } from '../helpers/rabbitmq';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const PASSWORD = uniqueName('s3cret');
const PUBLISHER = { configure: '^evpub$', write: '^evpub$', read: '^$' };
const OWN = '^(evpub|evpub\\..+|amq\\.gen-.+)$';
const SUBSCRIBER = { configure: OWN, write: OWN, read: OWN };

describe('AMQP over TLS (private RabbitMQ node with a TLS listener)', () => {
  let pki: Pki;
  let broker: PrivateRabbitMq;
  /** `amqps://localhost:PORT` without credentials. */
  let tlsUrl: string;
  const clients: Client[] = [];
  const client = (url: string, options: ClientOptions): Client => {
    const c = createClient(url, { connectTimeout: 8_000, ...options });
    clients.push(c);
    return c;
  };
  const failure = async (url: string, options: ClientOptions): Promise<Error> => {
    const c = client(url, options);
    const err = await c.connect().then(
      () => new Error('connected'),
      (e: unknown) => e as Error,
    );
    await c.end().catch(() => undefined);
    return err;
  };

  beforeAll(async () => {
    pki = makePki();
    broker = await startPrivateRabbitMq({
      tls: { ca: pki.ca, ...pki.server },
      // A password user, and the user SASL EXTERNAL maps the client certificate (CN "evpub") to.
      users: [
        { name: 'app', password: PASSWORD },
        { name: 'evpub', password: uniqueName('unused') },
        // The least privileges docs/security.md lists.
        { name: 'publisher', password: PASSWORD, permissions: PUBLISHER },
        { name: 'subscriber', password: PASSWORD, permissions: SUBSCRIBER },
      ],
    });
    tlsUrl = `amqps://localhost:${broker.tlsPort}`;
  }, 90_000);

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    await broker?.close();
    pki?.remove();
  }, 60_000);

  it('publishes and subscribes over amqps:// with a private CA and a user name and password', async () => {
    const url = tlsUrl.replace('//', `//app:${PASSWORD}@`);
    const sub = client(url, { tls: { ca: pki.ca } });
    const got = collector(sub);
    const topic = `evpub/tls/${uniqueName()}`;
    await sub.subscribe(topic);
    await client(url, { tls: { ca: pki.ca } }).publish(topic, 'over tls');
    await waitFor(() => got.length === 1, 'the message over TLS');
    expect(got[0]!.payload.toString()).toBe('over tls');
    const connections = await broker.ctl(['list_connections', 'user', 'ssl', 'auth_mechanism']);
    expect(connections).toMatch(/app\s+true\s+PLAIN/);
  });

  it('authenticates with the client certificate (SASL EXTERNAL): the broker sees the certificate’s user', async () => {
    const options: ClientOptions = { tls: { ca: pki.ca, ...pki.client }, amqp: { auth: 'external' } };
    const sub = client(tlsUrl, options);
    const got = collector(sub);
    const topic = `evpub/tls/${uniqueName()}`;
    await sub.subscribe(topic);
    await client(tlsUrl, options).publish(topic, 'by certificate');
    await waitFor(() => got.length === 1, 'the message sent with EXTERNAL');
    const connections = await broker.ctl(['list_connections', 'user', 'ssl', 'auth_mechanism']);
    expect(connections).toMatch(/evpub\s+true\s+EXTERNAL/);
  });

  it('the least privileges in docs/security.md are enough: a publisher, a plain and a durable subscriber', async () => {
    const as = (user: string): string => tlsUrl.replace('//', `//${user}:${PASSWORD}@`);
    const topic = `evpub/tls/${uniqueName()}`;
    const plain = client(as('subscriber'), { tls: { ca: pki.ca } });
    const durable = client(as('subscriber'), { tls: { ca: pki.ca } });
    const got = collector(plain);
    const kept = collector(durable);
    await plain.subscribe(topic);
    await durable.subscribe(topic, { durable: uniqueName('g') });
    await client(as('publisher'), { tls: { ca: pki.ca } }).publish(topic, 'least');
    await waitFor(() => got.length === 1 && kept.length === 1, 'both subscribers');
    // And no more: the publisher may not read or make queues.
    const sub = client(as('publisher'), { tls: { ca: pki.ca } });
    await expect(sub.subscribe(`${topic}/x`)).rejects.toMatchObject({ code: ErrorCode.SUBSCRIBE_FAILED });
  });

  it('a wrong password is AUTH_FAILED at once, naming the user and never the password', async () => {
    const err = await failure(tlsUrl.replace('//', '//app:wrong-pw-x@'), { tls: { ca: pki.ca } });
    expect(err).toMatchObject({ code: ErrorCode.AUTH_FAILED });
    expect(err.message).toMatch(/refused user "app"/);
    expect(JSON.stringify({ m: err.message, c: (err as { context?: unknown }).context })).not.toMatch(
      /wrong-pw-x/,
    );
  });

  it('EXTERNAL with a certificate naming no RabbitMQ user is AUTH_FAILED with the fix', async () => {
    const err = await failure(tlsUrl, {
      tls: { ca: pki.ca, ...pki.clientFor('nobody') },
      amqp: { auth: 'external' },
    });
    expect(err).toMatchObject({ code: ErrorCode.AUTH_FAILED });
    expect(err.message).toMatch(/refused the client certificate \(SASL EXTERNAL\)/);
    expect(err.message).toMatch(/user named after the certificate/);
  });

  it('TLS failures are EVPUB_TLS_FAILED naming the endpoint and the reason, not retried', async () => {
    const endpoint = `amqps://localhost:${broker.tlsPort}`;
    const cases: [ClientOptions['tls'], RegExp][] = [
      [{ ca: pki.otherCa }, /not signed by a CA evpub trusts.*set tls\.ca/],
      [{ ca: pki.ca, servername: 'elsewhere.example' }, /not for this host name/],
      // The broker verifies client certificates it is given: one from another CA is refused.
      [{ ca: pki.ca, ...pki.untrusted }, /server refused the TLS handshake/],
    ];
    for (const [tls, reason] of cases) {
      const url = tlsUrl.replace('//', `//app:${PASSWORD}@`);
      const err = await failure(url, { tls });
      expect(isEvpubError(err) && err.code).toBe(ErrorCode.TLS_FAILED);
      expect(err.message).toContain(endpoint);
      expect(err.message).toMatch(reason);
      expect(err.message).not.toContain(PASSWORD);
      expect(isEvpubError(err) && err.retriable).toBe(false);
    }
    // TLS to the plain AMQP port.
    const plainPort = new URL(broker.url).port;
    const err = await failure(`amqps://localhost:${plainPort}`, { tls: { ca: pki.ca } });
    expect(err).toMatchObject({ code: ErrorCode.TLS_FAILED });
    expect(err.message).toMatch(/does not speak TLS on this port/);
  });
});
