/**
 * MQTT adapter behaviour beyond the conformance suite, against private mosquittos: credentials,
 * option validation, overlapping subscriptions, persistent sessions, retained messages, size
 * limits, and a failed connect leaving nothing behind.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createClient,
  ErrorCode,
  isEvpubError,
  type Client,
  type ClientOptions,
} from '../../src/pubsub/index';
import { collector } from '../conformance/pubsub.suite';
import { startMosquitto, type PrivateMosquitto } from '../helpers/mosquitto';
import { freePort, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const run = promisify(execFile);

const VERSIONS: [string, { mqtt: { protocolVersion: 4 | 5 } }][] = [
  ['MQTT 5', { mqtt: { protocolVersion: 5 } }],
  ['MQTT 3.1.1', { mqtt: { protocolVersion: 4 } }],
];

describe('MQTT adapter', () => {
  let open: PrivateMosquitto;
  let locked: PrivateMosquitto;
  let limited: PrivateMosquitto;
  const clients: Client[] = [];
  const client = (url: string, options: ClientOptions = {}): Client => {
    const c = createClient(url, options);
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    [open, locked, limited] = await Promise.all([
      startMosquitto(),
      startMosquitto({ users: { alice: 's3cret' } }),
      startMosquitto({ extraConfig: ['max_packet_size 2000', 'message_size_limit 1000'] }),
    ]);
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end()));
    await Promise.all([open, locked, limited].map((b) => b?.close()));
  });

  it('validates its options, naming the key', () => {
    const url = 'mqtt://127.0.0.1:1883';
    expect(() => createClient(url, { mqtt: { protocolVersion: 3 } })).toThrow(
      'mqtt.protocolVersion: must be 4 or 5',
    );
    expect(() => createClient(url, { mqtt: { qos: 1 } })).toThrow(/mqtt\.qos: unknown option/);
    expect(() => createClient(url, { mqtt: { clean: false } })).toThrow(
      /mqtt\.clean: false needs a fixed clientId/,
    );
    expect(() => createClient(url, { mqtt: { keepalive: -1 } })).toThrow(/mqtt\.keepalive/);
    try {
      createClient(url, { mqtt: 'yes' });
      expect.unreachable();
    } catch (err) {
      expect(isEvpubError(err, ErrorCode.CONFIG_INVALID)).toBe(true);
    }
    expect(createClient(url, { mqtt: { protocolVersion: 4 } }).adapter.features.headers).toBe(false);
    expect(createClient(url).adapter.features).toMatchObject({ headers: true, maxPayload: 268_435_455 });
  });

  for (const [name, options] of VERSIONS) {
    describe(name, () => {
      it('fails with AUTH_FAILED on bad credentials, without the password in the message', async () => {
        const bad = new URL(locked.url);
        bad.username = 'alice';
        bad.password = 'wrong-pw';
        const c = client(bad.toString(), options);
        const err: unknown = await c.connect().catch((e: unknown) => e);
        expect(isEvpubError(err, ErrorCode.AUTH_FAILED)).toBe(true);
        expect((err as Error).message).toContain(`127.0.0.1:${locked.port}`);
        expect((err as Error).message).not.toContain('wrong-pw');
        const anon = client(locked.url, { ...options, connectTimeout: 5_000 });
        await expect(anon.connect()).rejects.toMatchObject({ code: ErrorCode.AUTH_FAILED });
      });

      it('takes credentials from the URL or from the options', async () => {
        const inUrl = new URL(locked.url);
        inUrl.username = 'alice';
        inUrl.password = 's3cret';
        await client(inUrl.toString(), options).connect();
        await client(locked.url, { ...options, username: 'alice', password: 's3cret' }).connect();
      });

      it('delivers a message matching overlapping subscriptions once, labelled with one pattern', async () => {
        const base = `evpub/test/${uniqueName()}`;
        const sub = client(open.url, options);
        const got = collector(sub);
        // Subscribed in this order: the oldest wildcard wins unless an exact subscription exists.
        await sub.subscribe([`${base}/#`, `${base}/+/c`, `${base}/b/c`]);
        const pub = client(open.url, options);
        await pub.publish(`${base}/b/c`, 'exact');
        await pub.publish(`${base}/x/c`, 'two wildcards');
        await pub.publish(`${base}/end`, 'end');
        await waitFor(() => got.some((m) => m.payload.toString() === 'end'), 'the end marker');
        expect(got.map((m) => [m.payload.toString(), m.meta.pattern])).toEqual([
          ['exact', `${base}/b/c`],
          ['two wildcards', `${base}/#`],
          ['end', `${base}/#`],
        ]);
        await sub.unsubscribe(`${base}/b/c`);
        await pub.publish(`${base}/b/c`, 'after unsubscribe');
        await waitFor(() => got.length === 4, 'the message after unsubscribe');
        expect(got[3]!.meta.pattern).toBe(`${base}/#`);
      });

      it('keeps a persistent session with clean: false and a fixed clientId', async () => {
        const topic = `evpub/test/${uniqueName()}/session`;
        const session = { ...options, clientId: uniqueName('c'), mqtt: { ...options.mqtt, clean: false } };
        const first = client(open.url, session);
        await first.subscribe(topic);
        await first.end();
        const pub = client(open.url, options);
        for (const m of ['a', 'b', 'c']) await pub.publish(topic, m);
        const second = client(open.url, session);
        const got = collector(second);
        await second.connect();
        await waitFor(() => got.length === 3, 'the messages kept while away');
        expect(got.map((m) => m.payload.toString())).toEqual(['a', 'b', 'c']);
        // Tidy the broker: a clean connect ends the session.
        await client(open.url, { ...options, clientId: session.clientId }).connect();
      });

      it('publishes retained messages and QoS 0', async () => {
        const topic = `evpub/test/${uniqueName()}/retained`;
        const pub = client(open.url, options);
        await pub.publish(topic, 'kept', { retain: true, qos: 0 });
        const sub = client(open.url, options);
        const got = collector(sub);
        await sub.subscribe(topic);
        await waitFor(() => got.length === 1, 'the retained message');
        expect(got[0]!.meta).toMatchObject({ retain: true, qos: 0, pattern: topic });
        await pub.publish(topic, '', { retain: true }); // clears it
      });

      it('rejects a message over the broker size limit with a typed error', async () => {
        const topic = `evpub/test/${uniqueName()}/big`;
        const c = client(limited.url, { ...options, publishTimeout: 1_500, connectTimeout: 1_000 });
        const errors: Error[] = [];
        c.on('error', (e) => errors.push(e));
        await c.publish(topic, Buffer.alloc(500));
        const err: unknown = await c.publish(topic, Buffer.alloc(5000)).catch((e: unknown) => e);
        if (name === 'MQTT 5') {
          // The broker's Maximum Packet Size (2000) is known from its CONNACK: refused before sending.
          expect(isEvpubError(err, ErrorCode.PAYLOAD_TOO_LARGE)).toBe(true);
          // Over message_size_limit (1000): mosquitto answers PUBACK 0x95, which mqtt.js rejects as
          // invalid; the publish is never confirmed, and the protocol error is reported.
          const late: unknown = await c.publish(topic, Buffer.alloc(1500)).catch((e: unknown) => e);
          expect(isEvpubError(late, ErrorCode.PUBLISH_TIMEOUT)).toBe(true);
          expect(errors.some((e) => isEvpubError(e, ErrorCode.PUBLISH_FAILED))).toBe(true);
        } else {
          // MQTT 3.1.1 is not told the limits: mosquitto drops the packet and closes the connection.
          expect(isEvpubError(err, ErrorCode.PUBLISH_TIMEOUT)).toBe(true);
        }
      });
    });
  }

  it('a failed connect leaves no timer or socket behind (the process exits on its own)', async () => {
    const port = await freePort();
    const script = `
      const { createClient } = require(${JSON.stringify(join(__dirname, '../../src/pubsub/index.ts'))});
      createClient('mqtt://127.0.0.1:${port}', { connectTimeout: 500 }).connect().catch((e) => {
        process.stdout.write(e.code + ' ' + e.message);
      });`;
    // Killed (and failing) if it is still alive after 15 s.
    const { stdout } = await run(process.execPath, ['--import', 'tsx', '-e', script], {
      timeout: 15_000,
      killSignal: 'SIGKILL',
      cwd: join(__dirname, '../..'),
    });
    expect(stdout).toContain(ErrorCode.CONNECT_FAILED);
    expect(stdout).toContain(`127.0.0.1:${port}`);
  });
});
