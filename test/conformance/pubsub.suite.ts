/**
 * The broker adapter conformance suite: one set of tests that every adapter runs, against its
 * real broker. Each adapter has a `pubsub-<name>.test.ts` that calls `pubsubConformance()` with
 * a fixture. Honest differences are read from `adapter.features`, never hidden.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, createClient, isEvpubError, ErrorCode } from '../../src/pubsub/index';
import type {
  AdapterFeatures,
  ClientOptions,
  EvpubError,
  MessageMeta,
  SubscribeOptions,
} from '../../src/pubsub/index';
import { matches } from '../../src/pubsub/topics';
import { freePort, uniqueName } from '../helpers/services';
import { deferred, waitFor } from '../helpers/wait';

/** A broker the test owns, for fault tests: it may be stopped and started again. */
export interface PrivateBroker {
  url: string;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops it for good and removes its files. */
  close(): Promise<void>;
}

export interface PubSubFixture {
  /** Adapter name, as in the URL scheme. */
  name: string;
  /** URL of the broker the suite uses (the machine's service, or one the fixture started). */
  url(): Promise<string>;
  /** Client options the adapter needs beyond the URL (e.g. `{ nats: { jetstream: true } }`). */
  options?: ClientOptions;
  /** Called once after all tests (to stop a broker the fixture started). */
  teardown?(): Promise<void>;
  /** False for an in-process broker: no connection to fail. Default true. */
  networked?: boolean;
  /** Starts a private broker for the restart test. */
  privateBroker?(): Promise<PrivateBroker>;
  /**
   * Why this adapter cannot promise that a subscription issued (not yet awaited) before another
   * client publishes gets the message; absent: it must (strong-pubsub code relies on it).
   */
  unawaitedSubscribeMisses?: string;
  /** Refusals the broker here can produce. */
  refusals?: RefusalCase[];
  /**
   * Refusals the adapter classifies that cannot be produced here, each with why (they are
   * covered by unit tests of the adapter's mapping function instead).
   */
  refusalsNotProduced?: string[];
  /** Transient refusals the broker here can produce. */
  transients?: TransientCase[];
}

/**
 * A refusal the broker here can be made to produce (an ACL, a missing destination, a key of
 * another type...). The suite checks that the publish rejects with `code` and `retriable` as
 * the adapter contract (point 4) says, with the broker's own reason in `context.brokerReason`,
 * and that the publishes after it on the same client still succeed.
 */
export interface RefusalCase {
  /** What is refused, for the test name: "a topic the ACL denies". */
  what: string;
  code: ErrorCode;
  /** false: the broker refuses this message for good; true: it may pass later. */
  retriable: boolean;
  /** Prepares the broker; called in the test. */
  setup(): Promise<RefusalSetup>;
}

export interface RefusalSetup {
  /** Broker for the clients (default: the suite's URL). */
  url?: string;
  /** Client options beyond the fixture's. */
  options?: ClientOptions;
  /** The topic the broker refuses, and the payload (default a few bytes). */
  refused: string;
  payload?: Buffer;
  /** A topic the same client may publish to, and subscribe to. */
  allowed: string;
  /** The broker's words: `context.brokerReason` must match. */
  brokerReason: RegExp;
  /** `context.brokerCode`, where the broker has one. */
  brokerCode?: unknown;
  cleanup?(): Promise<void>;
}

/**
 * A transient refusal the broker here can be made to produce: the publish rejects with
 * `retriable: true` and the broker's reason, and once `lift()` removed the cause the same
 * publish passes (what the publisher's retry does).
 */
export interface TransientCase {
  what: string;
  code: ErrorCode;
  setup(): Promise<TransientSetup>;
}

export interface TransientSetup {
  url?: string;
  options?: ClientOptions;
  topic: string;
  brokerReason: RegExp;
  /** Removes the cause of the refusal. */
  lift(): Promise<void>;
  cleanup?(): Promise<void>;
}

interface Received {
  topic: string;
  payload: Buffer;
  meta: MessageMeta;
}

export function collector(client: Client): Received[] {
  const got: Received[] = [];
  client.on('message', (topic, payload, meta) => got.push({ topic, payload, meta }));
  return got;
}

export function pubsubConformance(fixture: PubSubFixture): void {
  describe(`pub/sub conformance: ${fixture.name}`, () => {
    let url: string;
    let features: AdapterFeatures;
    const clients: Client[] = [];

    const client = (extra: ClientOptions = {}): Client => {
      const c = createClient(url, { ...fixture.options, ...extra });
      clients.push(c);
      return c;
    };
    /** A fresh topic root this test alone uses; levels valid on every broker. */
    const root = (): string => `evpub/test/${uniqueName()}`;

    beforeAll(async () => {
      url = await fixture.url();
      features = client().adapter.features;
    });

    afterAll(async () => {
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
      await fixture.teardown?.();
    });

    async function pair(
      patterns: string | string[],
      options?: SubscribeOptions,
    ): Promise<{ pub: Client; sub: Client; got: Received[] }> {
      const sub = client();
      const got = collector(sub);
      await sub.subscribe(patterns, options);
      const pub = client();
      await pub.connect();
      return { pub, sub, got };
    }

    it('round trip: a subscriber receives what is published, on the topic it was published to', async () => {
      const topic = `${root()}/accounts`;
      const { pub, got } = await pair(topic);
      await pub.publish(topic, 'hello');
      await waitFor(() => got.length === 1, 'one message');
      expect(got[0]!.topic).toBe(topic);
      expect(got[0]!.payload.toString()).toBe('hello');
      expect(Buffer.isBuffer(got[0]!.payload)).toBe(true);
    });

    it("carries the seed's topic /v1/subutest", async () => {
      const { pub, got } = await pair('/v1/subutest');
      const body = JSON.stringify({ model: 'accounts', message: { _id: uniqueName() } });
      await pub.publish('/v1/subutest', body);
      await waitFor(() => got.some((m) => m.payload.toString() === body), 'the seed message');
      expect(got.find((m) => m.payload.toString() === body)!.topic).toBe('/v1/subutest');
    });

    it('publish and subscribe connect on their own, and callbacks work', async () => {
      const topic = `${root()}/cb`;
      const sub = client();
      const got = collector(sub);
      await new Promise<void>((res, rej) => void sub.subscribe(topic, (err) => (err ? rej(err) : res())));
      const pub = client();
      await new Promise<void>((res, rej) => void pub.publish(topic, 'x', (err) => (err ? rej(err) : res())));
      await waitFor(() => got.length === 1, 'the message');
    });

    const unawaited = 'subscribe() not awaited, then another client publishes: the message is delivered';
    if (fixture.unawaitedSubscribeMisses !== undefined) {
      it.skip(`${unawaited} (not for this adapter: ${fixture.unawaitedSubscribeMisses})`, () => undefined);
    } else {
      it(unawaited, async () => {
        // Each try a fresh pair of clients, as strong-pubsub code does: the subscriber's first call
        // is subscribe(), the publisher's is publish(), started in the same tick.
        for (let i = 0; i < 5; i++) {
          const topic = `${root()}/early`;
          const sub = client();
          const got = collector(sub);
          const subscribed = sub.subscribe(topic);
          const pub = client();
          await pub.publish(topic, `try ${i}`);
          await subscribed;
          await waitFor(() => got.length === 1, `the message of try ${i}`, 5_000);
          expect(got[0]!.payload.toString()).toBe(`try ${i}`);
        }
      });
    }

    for (const r of fixture.refusals ?? []) {
      it(`a refused publish (${r.what}) rejects with ${r.code}, retriable: ${r.retriable}, with the broker's reason; the publishes after it succeed`, async () => {
        const s = await r.setup();
        try {
          const at = s.url ?? url;
          const mk = (): Client => {
            const c = createClient(at, { ...fixture.options, ...s.options });
            clients.push(c);
            return c;
          };
          const sub = mk();
          const got = collector(sub);
          await sub.subscribe(s.allowed);
          const pub = mk();
          await pub.connect();
          // The refused publish and three after it, issued together as the publisher does.
          const refused = pub.publish(s.refused, s.payload ?? 'refused').then(
            () => undefined,
            (e: unknown) => e,
          );
          const after = ['a1', 'a2', 'a3'].map((p) => pub.publish(s.allowed, p));
          const err = await refused;
          expect(
            isEvpubError(err),
            `the refused publish rejects with an EvpubError (got ${String(err)})`,
          ).toBe(true);
          const e = err as EvpubError;
          expect({ code: e.code, retriable: e.retriable }).toEqual({ code: r.code, retriable: r.retriable });
          expect(String(e.context.brokerReason)).toMatch(s.brokerReason);
          if (s.brokerCode !== undefined) expect(e.context.brokerCode).toBe(s.brokerCode);
          await Promise.all(after);
          // The same client goes on publishing.
          await pub.publish(s.allowed, 'a4');
          await waitFor(() => got.length >= 4, 'the four allowed messages');
          expect(got.map((m) => m.payload.toString())).toEqual(['a1', 'a2', 'a3', 'a4']);
        } finally {
          await s.cleanup?.();
        }
      });
    }
    for (const t of fixture.transients ?? []) {
      it(`a transient refusal (${t.what}) rejects with ${t.code}, retriable: true, with the broker's reason; the same publish passes once lifted`, async () => {
        const s = await t.setup();
        try {
          const c = createClient(s.url ?? url, { ...fixture.options, ...s.options });
          clients.push(c);
          const err: unknown = await c.publish(s.topic, 'm').catch((e: unknown) => e);
          expect(isEvpubError(err), `an EvpubError (got ${String(err)})`).toBe(true);
          const e = err as EvpubError;
          expect({ code: e.code, retriable: e.retriable }).toEqual({ code: t.code, retriable: true });
          expect(String(e.context.brokerReason)).toMatch(s.brokerReason);
          await s.lift();
          await c.publish(s.topic, 'm');
        } finally {
          await s.cleanup?.();
        }
      });
    }
    for (const what of fixture.refusalsNotProduced ?? []) {
      it.skip(`a refused publish (${what}): not produced here, see the adapter's unit tests`, () =>
        undefined);
    }

    it('"+" and "#" wildcards match like MQTT (or are refused with a typed error)', async () => {
      const base = root();
      if (!features.wildcards) {
        await expect(client().subscribe(`${base}/+`)).rejects.toMatchObject({
          code: ErrorCode.INVALID_TOPIC,
        });
        return;
      }
      const patterns = [`${base}/+/created`, `${base}/a/#`];
      const { pub, got } = await pair(patterns);
      const topics = [
        `${base}/x/created`,
        `${base}/a`,
        `${base}/a/b/c`,
        `${base}/x/y/created`,
        `${base}/b/c`,
      ];
      for (const t of topics) await pub.publish(t, t);
      await pub.publish(`${base}/a/end`, 'end');
      await waitFor(() => got.some((m) => m.payload.toString() === 'end'), 'the end marker');
      const expected = topics.filter((t) => patterns.some((p) => matches(p, t)));
      expect(expected).toEqual([`${base}/x/created`, `${base}/a`, `${base}/a/b/c`]);
      const received = got.filter((m) => m.topic !== `${base}/a/end`);
      expect(received.map((m) => m.topic).sort()).toEqual([...expected].sort());
      for (const m of received) expect(m.payload.toString()).toBe(m.topic);
    });

    it('carries binary and UTF-8 payloads byte for byte', async () => {
      const topic = `${root()}/bin`;
      const { pub, got } = await pair(topic);
      const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      const text = 'ünïcødé ✓ 事件 🚀';
      await pub.publish(topic, binary);
      await pub.publish(topic, text);
      await pub.publish(topic, new Uint8Array([0, 0, 1]));
      await waitFor(() => got.length === 3, 'three messages');
      expect(got[0]!.payload.equals(binary)).toBe(true);
      expect(got[1]!.payload.toString('utf8')).toBe(text);
      expect([...got[2]!.payload]).toEqual([0, 0, 1]);
    });

    it('carries a 1 MiB payload, or refuses it with PAYLOAD_TOO_LARGE at the documented limit', async () => {
      const topic = `${root()}/big`;
      const { pub, got } = await pair(topic);
      const big = Buffer.alloc(1024 * 1024, 7);
      big.write('start');
      if (features.maxPayload >= big.length) {
        await pub.publish(topic, big);
        await waitFor(() => got.length === 1, 'the 1 MiB message');
        expect(got[0]!.payload.equals(big)).toBe(true);
      } else {
        const err: unknown = await pub.publish(topic, big).catch((e: unknown) => e);
        expect(isEvpubError(err, ErrorCode.PAYLOAD_TOO_LARGE)).toBe(true);
        // The limit itself still goes through.
        const atLimit = Buffer.alloc(features.maxPayload - 1024, 1);
        await pub.publish(topic, atLimit);
        await waitFor(() => got.length === 1, 'the message at the limit');
        expect(got[0]!.payload.length).toBe(atLimit.length);
      }
    });

    it('delivers 10,000 messages on one topic complete and in order', async () => {
      const topic = `${root()}/burst`;
      const { pub, got } = await pair(topic);
      const n = 10_000;
      const sends: Promise<void>[] = [];
      for (let i = 0; i < n; i++) sends.push(pub.publish(topic, String(i), { key: 'one' }));
      await Promise.all(sends);
      await waitFor(() => got.length >= n, `${n} messages (have ${got.length})`, 60_000);
      expect(got.length).toBe(n);
      const firstOutOfOrder = got.findIndex((m, i) => m.payload.toString() !== String(i));
      expect(firstOutOfOrder).toBe(-1);
    });

    it('unsubscribe stops delivery', async () => {
      const base = root();
      const gone = `${base}/gone`;
      const kept = `${base}/kept`;
      const { pub, sub, got } = await pair([gone, kept]);
      await pub.publish(gone, 'before');
      await waitFor(() => got.length === 1, 'the message before unsubscribe');
      await sub.unsubscribe(gone);
      await pub.publish(gone, 'after');
      await pub.publish(kept, 'marker');
      await waitFor(() => got.some((m) => m.topic === kept), 'the marker');
      expect(got.filter((m) => m.topic === gone).map((m) => m.payload.toString())).toEqual(['before']);
    });

    it('headers, key and content type round trip where the broker carries them', async () => {
      const topic = `${root()}/headers`;
      const { pub, got } = await pair(topic);
      await pub.publish(topic, '{}', {
        headers: { 'ce-id': 'abc', 'x-tenant': 'acme' },
        key: 'k1',
        contentType: 'application/json',
      });
      await waitFor(() => got.length === 1, 'the message');
      const meta = got[0]!.meta;
      if (features.headers) {
        expect(meta.headers).toMatchObject({ 'ce-id': 'abc', 'x-tenant': 'acme' });
        expect(meta.contentType).toBe('application/json');
      } else {
        expect(got[0]!.payload.toString()).toBe('{}'); // dropped, as the README says, never the payload
      }
      if (features.orderingKey && features.headers) expect(meta.key).toBe('k1');
    });

    it('end() twice, and end() before connect, are harmless', async () => {
      const c = client();
      await c.connect();
      await c.end();
      await c.end();
      expect(c.state).toBe('closed');
      await expect(c.publish(`${root()}/x`, 'x')).rejects.toMatchObject({ code: ErrorCode.CLIENT_CLOSED });
      const never = client();
      await never.end();
      expect(never.state).toBe('closed');
    });

    it('refuses topics it cannot carry with INVALID_TOPIC naming the topic', async () => {
      const c = client();
      await expect(c.publish('a/+/b', 'x')).rejects.toMatchObject({ code: ErrorCode.INVALID_TOPIC });
      await expect(c.publish('', 'x')).rejects.toMatchObject({ code: ErrorCode.INVALID_TOPIC });
      await expect(c.subscribe('a/#/b')).rejects.toMatchObject({ code: ErrorCode.INVALID_TOPIC });
    });

    it('fails with CONNECT_FAILED within the connect timeout where nothing listens', async (ctx) => {
      if (fixture.networked === false) ctx.skip();
      const port = await freePort();
      const u = new URL(url);
      u.port = String(port);
      const c = createClient(u.toString(), { ...fixture.options, connectTimeout: 2_000 });
      const err: unknown = await c.connect().catch((e: unknown) => e);
      expect(isEvpubError(err, ErrorCode.CONNECT_FAILED)).toBe(true);
      expect((err as Error).message).toContain(String(port));
      await c.end();
    });

    it('bad options give typed errors with clear messages', () => {
      expect(() => createClient(`nope://127.0.0.1:1`)).toThrow(/unknown broker URL scheme "nope:"/);
      expect(() => createClient('not a url')).toThrow(/not a valid URL/);
      expect(() => createClient(url, { connectTimeout: -1 })).toThrow(/connectTimeout/);
      const Adapter = client().adapter.constructor as ConstructorParameters<typeof Client>[1];
      expect(() => new Client({ host: '127.0.0.1', port: 70000 }, Adapter)).toThrow(/port/);
    });

    it('durable subscriptions keep what is published while the subscriber is away', async (ctx) => {
      if (!features.durable) ctx.skip();
      const topic = `${root()}/durable`;
      const group = uniqueName('g');
      const first = client();
      const got1 = collector(first);
      await first.subscribe(topic, { durable: group });
      const pub = client();
      await pub.publish(topic, 'm0');
      await waitFor(() => got1.length === 1, 'm0');
      await first.end();
      for (let i = 1; i <= 20; i++) await pub.publish(topic, `m${i}`);
      const second = client();
      const got2 = collector(second);
      await second.subscribe(topic, { durable: group });
      await waitFor(() => got2.length >= 20, '20 kept messages');
      expect(got2.map((m) => m.payload.toString()).slice(0, 20)).toEqual(
        Array.from({ length: 20 }, (_, i) => `m${i + 1}`),
      );
    });

    it('a durable message whose listener threw is not acknowledged: it comes back', async (ctx) => {
      if (!features.durable) ctx.skip();
      const topic = `${root()}/throws`;
      const group = uniqueName('g');
      const clientId = uniqueName('c');
      const first = client({ clientId });
      const seen: string[] = [];
      first.on('message', (_t, payload) => {
        seen.push(payload.toString());
        if (payload.toString() === 'm1') throw new Error('the handler failed');
      });
      first.on('error', () => undefined);
      await first.subscribe(topic, { durable: group });
      const pub = client();
      await pub.publish(topic, 'm0'); // handled and acknowledged: the group has a committed point
      await waitFor(() => seen.includes('m0'), 'm0');
      await pub.publish(topic, 'm1');
      await waitFor(() => seen.includes('m1'), 'the failing delivery of m1');
      await first.end();
      const second = client({ clientId });
      const got = collector(second);
      await second.subscribe(topic, { durable: group });
      await waitFor(() => got.some((m) => m.payload.toString() === 'm1'), 'm1 delivered again');
      expect(got.map((m) => m.payload.toString())).not.toContain('m0');
    });

    it('reconnects after a broker restart, restores subscriptions, and loses no confirmed publish', async (ctx) => {
      if (!fixture.privateBroker) ctx.skip();
      const broker = await fixture.privateBroker!();
      try {
        const topic = `${root()}/restart`;
        const mk = (): Client => {
          const c = createClient(broker.url, { ...fixture.options, publishTimeout: 30_000 });
          clients.push(c);
          return c;
        };
        const sub = mk();
        const got = collector(sub);
        const durable = features.durable ? { durable: uniqueName('g') } : {};
        await sub.subscribe(topic, durable);
        const pub = mk();
        await pub.publish(topic, 'before');
        await waitFor(() => got.length === 1, 'the message before the restart');

        const offline = deferred();
        const back = deferred();
        sub.once('offline', () => offline.resolve());
        sub.once('reconnect', () => back.resolve());
        await broker.stop();
        await offline.promise;
        // A publish while the broker is down waits for it, then is confirmed.
        const during = pub.publish(topic, 'during');
        await broker.start();
        await back.promise;
        await during;
        await pub.publish(topic, 'after');
        await waitFor(
          () => got.some((m) => m.payload.toString() === 'after'),
          'the message after the restart',
        );
        if (features.durable) {
          expect(got.map((m) => m.payload.toString())).toContain('during');
        }
      } finally {
        await broker.close();
      }
    });

    it('a publish while the broker stays down fails with PUBLISH_TIMEOUT, not silently', async (ctx) => {
      if (!fixture.privateBroker) ctx.skip();
      const broker = await fixture.privateBroker!();
      try {
        const c = createClient(broker.url, { ...fixture.options, publishTimeout: 1_500 });
        clients.push(c);
        await c.connect();
        const offline = deferred();
        c.once('offline', () => offline.resolve());
        await broker.stop();
        await offline.promise;
        const err: unknown = await c.publish(`${root()}/down`, 'x').catch((e: unknown) => e);
        expect(isEvpubError(err, ErrorCode.PUBLISH_TIMEOUT)).toBe(true);
      } finally {
        await broker.close();
      }
    });
  });
}
