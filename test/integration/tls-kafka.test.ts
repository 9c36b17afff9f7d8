/**
 * Kafka over TLS and SASL settings. The only Kafka here is librdkafka's mock cluster, which
 * listens in plain TCP and has no SASL (no SaslHandshake API). So:
 * - TLS: a TLS terminator (node:tls, this run's certificates, client certificates required) in
 *   front of the mock; the adapter reaches the mock's advertised address through it with
 *   `kafka.brokerAddressMap`, publishes and subscribes, and the terminator sees its client
 *   certificate. Servers with a certificate from another CA, an expired one and one for another
 *   host, and a missing client certificate, each fail `connect()` at once with EVPUB_TLS_FAILED
 *   naming the broker and the reason.
 * - SASL: the settings are validated (errors name the key and the nearest valid one, never the
 *   password), reach kafkajs (it asks the mock for SASL, which has none: AUTH_FAILED at once),
 *   and the password is in no message or log line. Against a real SASL listener it is untested.
 */
import { readFileSync } from 'node:fs';
import { connect as netConnect, type AddressInfo, type Socket } from 'node:net';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors';
import { createClient, type Client, type ClientOptions } from '../../src/pubsub/index';
import { collector } from '../conformance/pubsub.suite';
import { makePki, type CertPair, type Pki } from '../helpers/certs';
import { startKafkaMock, type KafkaCluster } from '../helpers/kafka-mock';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const PASSWORD = uniqueName('kafka-s3cret');

let pki: Pki;
let mock: KafkaCluster;
const servers: Server[] = [];
const sockets: Socket[] = [];
const clients: Client[] = [];

beforeAll(async () => {
  pki = makePki();
  mock = await startKafkaMock();
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  sockets.forEach((s) => s.destroy());
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  await mock?.close();
  pki?.remove();
});

interface Terminator {
  port: number;
  /** Common names of the client certificates of the connections it passed on. */
  clients: string[];
}

/**
 * A TLS server with `pair`, requiring a client certificate from the CA; each connection is
 * piped to `backendPort` (the mock broker), or just held open when there is none.
 */
async function terminator(pair: CertPair, backendPort?: number): Promise<Terminator> {
  const seen: string[] = [];
  const server = createServer(
    {
      cert: readFileSync(pair.cert),
      key: readFileSync(pair.key),
      ca: readFileSync(pki.ca),
      requestCert: true,
      rejectUnauthorized: true,
    },
    (socket: TLSSocket) => {
      sockets.push(socket);
      socket.on('error', () => undefined);
      seen.push(String(socket.getPeerCertificate().subject?.CN));
      if (backendPort === undefined) return;
      const backend = netConnect(backendPort, '127.0.0.1');
      sockets.push(backend);
      backend.on('error', () => socket.destroy());
      socket.on('close', () => backend.destroy());
      backend.on('close', () => socket.destroy());
      socket.pipe(backend).pipe(socket);
    },
  );
  server.on('tlsClientError', () => undefined);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, clients: seen };
}

function client(port: number, options: ClientOptions): Client {
  const c = createClient(`kafka://localhost:${port}`, {
    connectTimeout: 8_000,
    ...options,
    kafka: {
      // The mock advertises its own plain address: reach it through the terminator.
      brokerAddressMap: { [mock.brokers[0]!]: `localhost:${port}` },
      ...(options.kafka as object),
    },
  });
  clients.push(c);
  return c;
}

async function connectError(c: Client): Promise<Error & { code?: string; retriable?: boolean }> {
  try {
    await c.connect();
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('connected');
}

describe('Kafka over TLS (a TLS terminator with client certificates in front of the mock cluster)', () => {
  it('publishes and subscribes over TLS with a private CA and a client certificate', async () => {
    const tls = await terminator(pki.server, mock.mockPort);
    const options: ClientOptions = { tls: { ca: pki.ca, ...pki.client } };
    const topic = `evpub/tls/${uniqueName()}`;
    const pub = client(tls.port, options);
    await pub.publish(topic, 'before'); // creates the topic
    const sub = client(tls.port, options);
    const got = collector(sub);
    await sub.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });
    await pub.publish(topic, 'over tls');
    await waitFor(() => got.length === 2, 'both messages over TLS', 30_000);
    expect(got.map((m) => m.payload.toString())).toEqual(['before', 'over tls']);
    // Every connection went through the terminator, each with evpub's client certificate.
    expect(tls.clients.length).toBeGreaterThan(0);
    expect(new Set(tls.clients)).toEqual(new Set(['evpub']));
  }, 45_000);

  it('an untrusted server, an expired certificate, a wrong host and a missing client certificate are EVPUB_TLS_FAILED at once', async () => {
    const good = await terminator(pki.server);
    const expired = await terminator(pki.expired);
    const wrongHost = await terminator(pki.wrongHost);
    const cases: [number, ClientOptions['tls'], RegExp][] = [
      [good.port, { ca: pki.otherCa, ...pki.client }, /not signed by a CA evpub trusts.*set tls\.ca/],
      [expired.port, { ca: pki.ca, ...pki.client }, /has expired \(CERT_HAS_EXPIRED\)/],
      [wrongHost.port, { ca: pki.ca, ...pki.client }, /not for this host name/],
      // No client certificate: the terminator's alert reaches the socket after kafkajs's handshake.
      // (For one from an unknown CA, Node's TLS server closes without an alert: nothing to name.)
      [good.port, { ca: pki.ca }, /server refused the TLS handshake.*tls\.cert/],
    ];
    for (const [port, tls, reason] of cases) {
      const err = await connectError(client(port, { tls, connectTimeout: 30_000 }));
      expect(err.code).toBe(ErrorCode.TLS_FAILED);
      expect(err.message).toMatch(new RegExp(`^TLS with localhost:${port} failed: `));
      expect(err.message).toMatch(reason);
      expect(err.retriable).toBe(false);
    }
  });
});

describe('Kafka SASL settings', () => {
  it('refuses bad settings before connecting, naming the key and the nearest valid one, never the password', () => {
    const bad = (kafka: unknown, url = mock.url): string => {
      try {
        createClient(url, { kafka: kafka as Record<string, unknown> });
      } catch (err) {
        expect(err).toMatchObject({ code: ErrorCode.CONFIG_INVALID });
        const message = (err as Error).message;
        expect(message).not.toContain(PASSWORD);
        return message;
      }
      throw new Error('accepted');
    };
    const sasl = { mechanism: 'scram-sha-512', username: 'evpub', password: PASSWORD };
    expect(bad({ sasl: { ...sasl, mechanism: undefined, mechanisim: 'plain' } })).toBe(
      'kafka.sasl.mechanisim: unknown SASL setting; did you mean mechanism?',
    );
    expect(bad({ sasl: { ...sasl, mechanism: 'scram-sha256' } })).toMatch(
      /^kafka\.sasl\.mechanism: must be one of plain, scram-sha-256, scram-sha-512, got "scram-sha256"; did you mean scram-sha-256\?$/,
    );
    expect(bad({ sasl: { ...sasl, password: 42 } })).toMatch(
      /^kafka\.sasl\.password: must be a non-empty string/,
    );
    expect(bad({ sasl: { mechanism: 'plain', password: PASSWORD } })).toMatch(/^kafka\.sasl\.username:/);
    expect(bad({ sals: sasl })).toMatch(/^kafka\.sals: unknown option; did you mean sasl\?/);
    expect(bad({ ssl: true })).toMatch(/^kafka\.ssl: TLS is the client option tls/);
    expect(bad({ sasl }, mock.url.replace('//', `//other:${PASSWORD}@`))).toMatch(
      /^kafka\.sasl: credentials are also in the URL/,
    );
  });

  it('the settings reach the broker: a cluster without SASL fails connect() with AUTH_FAILED at once, the password in no message or log', async () => {
    for (const mechanism of ['plain', 'scram-sha-256', 'scram-sha-512']) {
      const lines: string[] = [];
      const logger = pino({ level: 'trace' }, { write: (line: string) => void lines.push(line) });
      const c = createClient(mock.url, {
        connectTimeout: 30_000,
        logger,
        kafka: { sasl: { mechanism, username: 'evpub', password: PASSWORD } },
      });
      clients.push(c);
      const err = await connectError(c);
      expect(err.code).toBe(ErrorCode.AUTH_FAILED);
      expect(err.message).toMatch(/does not offer SASL authentication .*remove kafka\.sasl/);
      expect(err.message).not.toContain(PASSWORD);
      await c.end();
      expect(lines.join('\n')).not.toContain(PASSWORD);
      if (mechanism === 'plain') {
        // PLAIN over plain TCP: the user is told the password would travel unencrypted.
        expect(lines.some((l) => l.includes('SASL PLAIN without TLS'))).toBe(true);
      }
    }
  });
});
