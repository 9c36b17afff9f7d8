/**
 * The NATS adapter, on nats.js v3 (`@nats-io/transport-node`, `@nats-io/jetstream`).
 *
 * Topics: the `dotted` rule (src/pubsub/topics.ts, src/pubsub/adapters/nats-subjects.ts): topic
 * `a/b` is subject `a.b`, `/v1/subutest` is `%.v1.subutest`; `+` is `*`, `a/#` is subscribed on
 * `a` and `a.>` (MQTT's `#` also matches the parent level).
 *
 * Publish, core mode (the default): the message is written to the connection; publishes made in
 * the same tick share one PING/PONG round trip (`flush()`), and resolve when it returns: the
 * server has then read them (core NATS keeps nothing: a message nobody subscribes to is gone).
 * `headers` are NATS headers; `key` is the header `Evpub-Key`, `messageId` `Nats-Msg-Id`,
 * `contentType` `Content-Type`; all come back in `meta`. `qos` and `retain` are ignored.
 * If the connection drops before the round trip returns, the batch is written again after the
 * reconnect (at least once; core NATS does not de-duplicate).
 *
 * Publish, JetStream mode (`{ nats: { jetstream: true, stream?, subjects? } }`): a JetStream
 * publish per message, all in flight at once, resolved on the stream's ack (stored, and
 * replicated as the stream is configured). `messageId` is the `Nats-Msg-Id`: the stream drops a
 * second message with the same id within its duplicate window (2 minutes by default), and the
 * second publish still resolves. Which stream: src/pubsub/adapters/nats-streams.ts. A publish in
 * flight when the connection drops is sent again after the reconnect, with the same id.
 *
 * Payload limit: the server's `max_payload` (1 MiB by default) counts payload and headers;
 * a larger publish is refused with PAYLOAD_TOO_LARGE before anything is sent.
 *
 * Subscribe: a core subscription per subject, confirmed by a round trip. A message matching
 * several of this client's patterns is delivered once (with the oldest matching pattern), as
 * MQTT brokers do. In JetStream mode a subscription without `durable` is the same core
 * subscription (live messages only, no replay, no acks). With `durable: name`, a durable pull
 * consumer per subject, named `<name>_<hash of the subject>` (subscribers sharing the name share
 * the work), filter = the subject, explicit ack, ack wait 30 s, delivering new messages
 * (`from: 'earliest'`: everything the stream holds) when it is first created; an existing
 * consumer is used as it is. `meta.ack()` acks the message; a message not acked within the ack
 * wait (the subscriber died, or was restarted) is delivered again, `meta.redelivered` true.
 * `unsubscribe` and `end` stop consuming but keep the consumer on the server, so a later
 * subscribe with the same name resumes; delete it with the nats CLI when it is no longer wanted.
 *
 * Connection: `connect()` makes one attempt bounded by `connectTimeout`; refused → CONNECT_FAILED,
 * authorization violation → AUTH_FAILED. Afterwards nats.js reconnects forever; the wait between
 * attempts grows with the time the connection has been down, from `reconnect.initialDelay` to
 * `reconnect.maxDelay`. nats.js restores core subscriptions; consumers resume pulling. A lost
 * connection is `events.offline()`; on reconnect the adapter re-sends what was not confirmed,
 * waits for a round trip (so subscriptions are back on the server) and calls `events.reconnect()`.
 */
import type { JetStreamClient, JetStreamManager, JsMsg, ConsumerMessages } from '@nats-io/jetstream';
import type { Msg, MsgHdrs, NatsConnection, Subscription } from '@nats-io/transport-node';
import { createHash } from 'node:crypto';
import type {
  AdapterEvents,
  AdapterFeatures,
  BrokerAdapter,
  MessageMeta,
  PublishOptions,
  ResolvedClientOptions,
  SubscribeOptions,
} from '../adapter';
import { ErrorCode, EvpubError, redact, toError } from '../../errors';
import type { Logger } from '../../logger';
import { loadDriver } from '../driver';
import { matches, toDotted } from '../topics';
import { DEFAULT_STREAM, StreamKeeper } from './nats-streams';
import { headerBytes, isValidName, subjectsFor, TopicCache } from './nats-subjects';

type NatsModule = typeof import('@nats-io/transport-node');
type JetStreamModule = typeof import('@nats-io/jetstream');

/** Header names evpub gives meaning to; they map to `meta` fields, not `meta.headers`. */
const KEY_HEADER = 'Evpub-Key';
const ID_HEADER = 'Nats-Msg-Id';
const TYPE_HEADER = 'Content-Type';

const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
const ACK_WAIT_NS = 30_000 * 1_000_000;

export interface NatsOptions {
  /** Publish through JetStream and allow durable subscriptions. */
  jetstream?: boolean;
  /** The stream to use or create (default `EVPUB`). */
  stream?: string;
  /** The subjects the stream captures; without it the stream grows by the subjects used. */
  subjects?: string[];
}

/** Checks `options.nats` against its closed schema. */
function natsOptions(raw: unknown): Required<Pick<NatsOptions, 'jetstream' | 'stream'>> & NatsOptions {
  const bad = (key: string, rule: string): EvpubError =>
    new EvpubError(ErrorCode.CONFIG_INVALID, `nats.${key}: ${rule}`, { context: { key: `nats.${key}` } });
  if (raw === undefined) return { jetstream: false, stream: DEFAULT_STREAM };
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new EvpubError(ErrorCode.CONFIG_INVALID, 'nats: must be an object like { jetstream: true }');
  }
  const o = raw as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!['jetstream', 'stream', 'subjects'].includes(key)) {
      throw bad(key, 'unknown option (known: jetstream, stream, subjects)');
    }
  }
  if (o.jetstream !== undefined && typeof o.jetstream !== 'boolean')
    throw bad('jetstream', 'must be a boolean');
  const stream = o.stream ?? DEFAULT_STREAM;
  if (typeof stream !== 'string' || !isValidName(stream)) {
    throw bad('stream', 'must be a stream name: no whitespace, ".", "*", ">", "/" or "\\"');
  }
  let subjects: string[] | undefined;
  if (o.subjects !== undefined) {
    if (
      !Array.isArray(o.subjects) ||
      o.subjects.length === 0 ||
      !o.subjects.every((s) => typeof s === 'string' && s.length > 0 && !/\s/.test(s))
    ) {
      throw bad('subjects', 'must be a non-empty array of NATS subjects, like ["orders.>"]');
    }
    subjects = o.subjects as string[];
  }
  const jetstream = o.jetstream === true;
  if (!jetstream && (o.stream !== undefined || subjects !== undefined)) {
    throw bad(o.stream !== undefined ? 'stream' : 'subjects', 'only applies with nats.jetstream: true');
  }
  return { jetstream, stream, subjects };
}

const noAck = (): Promise<void> => Promise.resolve();

/** Core mode: messages written together and confirmed by one round trip. */
interface Batch {
  msgs: { subject: string; data: Uint8Array; headers: MsgHdrs | undefined }[];
  /** Connection generation the batch was last written on; -1: not written yet. */
  gen: number;
  deadline: number;
  promise: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
}

/** JetStream mode: one publish awaiting its ack. */
interface JsEntry {
  seq: number;
  subject: string;
  data: Uint8Array;
  headers: MsgHdrs | undefined;
  msgID: string | undefined;
  /** Attempt counter: results of older attempts are ignored. */
  attempt: number;
  gen: number;
  deadline: number;
  settled: boolean;
  resolve(): void;
  reject(err: Error): void;
}

interface CoreSub {
  subs: Subscription[];
}

interface DurableSub {
  consumers: ConsumerMessages[];
}

export class NatsAdapter implements BrokerAdapter {
  static readonly adapterName = 'nats';
  static readonly defaultPort = 4222;
  readonly name = 'nats';
  readonly features: AdapterFeatures;

  private readonly logger: Logger;
  private readonly nats: ReturnType<typeof natsOptions>;
  private nm: NatsModule | undefined;
  private jsmod: JetStreamModule | undefined;
  private nc: NatsConnection | undefined;
  private js: JetStreamClient | undefined;
  private jsm: JetStreamManager | undefined;
  private streams: StreamKeeper | undefined;
  /** True while the connection is up, as far as the status events told us. */
  private up = false;
  private ending = false;
  /** Incremented on each reconnect. */
  private gen = 0;
  private downSince: number | undefined;
  private maxPayload = DEFAULT_MAX_PAYLOAD;

  // Core publishing.
  private open: Batch | undefined;
  private readonly unconfirmed: Batch[] = [];
  // JetStream publishing.
  private seq = 0;
  private readonly inflight = new Map<number, JsEntry>();
  private held: JsEntry[] = [];
  private draining = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;

  private readonly coreSubs = new Map<string, CoreSub>();
  private readonly durableSubs = new Map<string, DurableSub>();
  private readonly topics = new TopicCache();

  constructor(
    private readonly options: ResolvedClientOptions,
    private readonly events: AdapterEvents,
  ) {
    this.nats = natsOptions(options.nats);
    this.logger = options.logger;
    this.features = {
      wildcards: true,
      headers: true,
      confirms: true,
      durable: this.nats.jetstream,
      orderingKey: false,
      maxPayload: DEFAULT_MAX_PAYLOAD,
    };
  }

  // -------------------------------------------------------------------------------------------
  // Connection

  private target(): { servers: string; user?: string; pass?: string; token?: string } {
    const u = new URL(this.options.url ?? `nats://localhost:${NatsAdapter.defaultPort}`);
    const servers = `${u.hostname || 'localhost'}:${u.port || NatsAdapter.defaultPort}`;
    const user = u.username ? decodeURIComponent(u.username) : this.options.username;
    const pass = u.password ? decodeURIComponent(u.password) : this.options.password;
    if (user !== undefined && pass === undefined) return { servers, token: user };
    return { servers, user, pass };
  }

  async connect(): Promise<void> {
    const nm = await loadDriver<NatsModule>('@nats-io/transport-node', 'NATS adapter');
    this.nm = nm;
    if (this.nats.jetstream) {
      this.jsmod = await loadDriver<JetStreamModule>('@nats-io/jetstream', 'NATS adapter (JetStream)');
    }
    const where = redact(this.options.url ?? '');
    const ms = this.options.connectTimeout;
    const { initialDelay, maxDelay } = this.options.reconnect;
    const dialing = nm.connect({
      ...this.target(),
      name: this.options.clientId ?? 'evpub',
      timeout: ms,
      reconnect: true,
      maxReconnectAttempts: -1,
      waitOnFirstConnect: false,
      // Called before each dial: the wait grows with the time the connection has been down.
      reconnectDelayHandler: () => {
        this.downSince ??= Date.now();
        const down = Date.now() - this.downSince;
        return Math.min(maxDelay, Math.max(initialDelay, down)) * (1 + Math.random() * 0.1);
      },
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    });
    let nc: NatsConnection;
    try {
      nc = await Promise.race([dialing, timeout]);
    } catch (err) {
      dialing.then((late) => late.close()).catch(() => undefined);
      throw this.connectError(err, where, ms);
    } finally {
      clearTimeout(timer);
    }
    this.nc = nc;
    this.setMaxPayload();
    try {
      if (this.jsmod) await this.startJetStream(this.jsmod, nc);
    } catch (err) {
      await nc.close().catch(() => undefined);
      this.nc = undefined;
      throw new EvpubError(
        ErrorCode.CONNECT_FAILED,
        `JetStream is not usable at ${where}: ${toError(err).message}`,
        {
          cause: err,
          context: { url: where },
        },
      );
    }
    this.up = true;
    void this.watchStatus(nc);
    void nc.closed().then((err) => this.onClosed(err));
  }

  private connectError(err: unknown, where: string, ms: number): EvpubError {
    const e = toError(err);
    if (e.name === 'AuthorizationError' || /authorization violation/i.test(e.message)) {
      return new EvpubError(ErrorCode.AUTH_FAILED, `NATS at ${where} refused the credentials`, {
        cause: err,
        context: { url: where },
      });
    }
    return new EvpubError(
      ErrorCode.CONNECT_FAILED,
      `could not connect to NATS at ${where} within ${ms} ms: ${e.message}`,
      { cause: err, retriable: true, context: { url: where } },
    );
  }

  private async startJetStream(jsmod: JetStreamModule, nc: NatsConnection): Promise<void> {
    this.jsm = await jsmod.jetstreamManager(nc, { timeout: this.options.connectTimeout });
    this.js = jsmod.jetstream(nc, { timeout: this.options.publishTimeout });
    this.streams = new StreamKeeper(jsmod, this.jsm, this.nats.stream, this.nats.subjects, this.logger);
    await this.streams.prepare();
  }

  private setMaxPayload(): void {
    const max = this.nc?.info?.max_payload;
    if (typeof max === 'number' && max > 0) {
      this.maxPayload = max;
      this.features.maxPayload = max;
    }
  }

  private async watchStatus(nc: NatsConnection): Promise<void> {
    try {
      for await (const s of nc.status()) {
        switch (s.type) {
          case 'disconnect':
            if (this.up) {
              this.up = false;
              this.downSince ??= Date.now();
              this.events.offline();
            }
            break;
          case 'reconnect':
            await this.onReconnect(nc);
            break;
          case 'error':
            this.logger.warn({ err: s.error }, 'NATS server error');
            break;
          case 'ldm':
            this.logger.info({ server: s.server }, 'NATS server entering lame duck mode');
            break;
          case 'slowConsumer':
            this.logger.warn({ pending: s.pending }, 'NATS slow consumer: messages pile up');
            break;
          default:
            break;
        }
      }
    } catch (err) {
      this.logger.debug({ err }, 'NATS status stream ended');
    }
  }

  private async onReconnect(nc: NatsConnection): Promise<void> {
    this.gen++;
    this.downSince = undefined;
    this.setMaxPayload();
    this.up = true;
    // Re-send what the lost connection did not confirm, in publish order, before anything new.
    this.resendBatches();
    this.requeueInflight();
    // One round trip: the server has our subscriptions again when the Client hears of it.
    await nc.flush().catch(() => undefined);
    if (this.ending || !this.up) return;
    this.drainHeld();
    this.events.reconnect();
  }

  private onClosed(err: void | Error): void {
    this.up = false;
    if (this.ending) return;
    const reason = new EvpubError(
      ErrorCode.DISCONNECTED,
      `the NATS connection closed for good${err ? `: ${err.message}` : ''}`,
      { cause: err },
    );
    this.failAll(reason);
    this.events.error(reason);
    this.events.close();
  }

  // -------------------------------------------------------------------------------------------
  // Publishing

  publish(topic: string, payload: Buffer, options: PublishOptions): Promise<void> {
    if (this.ending) {
      return Promise.reject(new EvpubError(ErrorCode.CLIENT_CLOSED, 'the NATS adapter was ended'));
    }
    const subject = toDotted(topic);
    let headers: MsgHdrs | undefined;
    let size = payload.length;
    if (
      options.headers ||
      options.key !== undefined ||
      options.contentType !== undefined ||
      options.messageId !== undefined
    ) {
      const pairs: [string, string][] = options.headers ? Object.entries(options.headers) : [];
      if (options.key !== undefined) pairs.push([KEY_HEADER, options.key]);
      if (options.contentType !== undefined) pairs.push([TYPE_HEADER, options.contentType]);
      if (options.messageId !== undefined) pairs.push([ID_HEADER, options.messageId]);
      size += headerBytes(pairs);
      try {
        headers = this.nm!.headers();
        for (const [k, v] of pairs) headers.set(k, v);
      } catch (err) {
        return Promise.reject(
          new EvpubError(
            ErrorCode.PUBLISH_FAILED,
            `publish to "${topic}": invalid NATS header: ${toError(err).message}`,
            {
              cause: err,
              context: { topic },
            },
          ),
        );
      }
    }
    if (size > this.maxPayload) {
      return Promise.reject(
        new EvpubError(
          ErrorCode.PAYLOAD_TOO_LARGE,
          `publish to "${topic}": ${size} bytes of payload and headers exceed the NATS server's max_payload of ${this.maxPayload} bytes`,
          { context: { topic, size, limit: this.maxPayload } },
        ),
      );
    }
    return this.js
      ? this.publishJs(subject, payload, headers, options.messageId)
      : this.publishCore(subject, payload, headers);
  }

  /** Core: write now (or hold while down), confirm with the batch's round trip. */
  private publishCore(subject: string, data: Uint8Array, headers: MsgHdrs | undefined): Promise<void> {
    let batch = this.open;
    if (!batch) {
      batch = this.newBatch();
      this.open = batch;
      this.unconfirmed.push(batch);
      if (this.up) queueMicrotask(() => this.closeBatch());
    }
    batch.msgs.push({ subject, data, headers });
    if (this.up) {
      batch.gen = this.gen;
      this.write(subject, data, headers);
    } else {
      this.sweepLater();
    }
    return batch.promise;
  }

  private newBatch(): Batch {
    let resolve!: () => void;
    let reject!: (err: Error) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // The Client may have given up on the publish already: never an unhandled rejection.
    promise.catch(() => undefined);
    return {
      msgs: [],
      gen: -1,
      deadline: Date.now() + this.options.publishTimeout,
      promise,
      resolve,
      reject,
    };
  }

  private write(subject: string, data: Uint8Array, headers: MsgHdrs | undefined): void {
    this.nc!.publish(subject, data, headers ? { headers } : undefined);
  }

  /** Ends the open batch and asks for its round trip. */
  private closeBatch(): void {
    const batch = this.open;
    this.open = undefined;
    if (batch) this.confirm(batch);
  }

  private confirm(batch: Batch): void {
    this.nc!.flush().then(
      () => {
        const i = this.unconfirmed.indexOf(batch);
        if (i >= 0) this.unconfirmed.splice(i, 1);
        batch.resolve();
      },
      // The connection dropped: the batch stays unconfirmed and is written again on reconnect.
      () => undefined,
    );
  }

  private resendBatches(): void {
    if (this.open && this.open.gen === -1) this.open = undefined;
    const now = Date.now();
    for (const batch of [...this.unconfirmed]) {
      if (batch.deadline < now) {
        this.unconfirmed.splice(this.unconfirmed.indexOf(batch), 1);
        batch.reject(this.expired());
        continue;
      }
      batch.gen = this.gen;
      for (const m of batch.msgs) this.write(m.subject, m.data, m.headers);
      if (batch !== this.open) this.confirm(batch);
    }
    if (this.open) queueMicrotask(() => this.closeBatch());
  }

  private expired(): EvpubError {
    return new EvpubError(
      ErrorCode.PUBLISH_TIMEOUT,
      `the NATS connection was down for more than publishTimeout (${this.options.publishTimeout} ms)`,
      { retriable: true },
    );
  }

  /** JetStream: one publish per message, acks awaited concurrently, order kept on the wire. */
  private publishJs(
    subject: string,
    data: Uint8Array,
    headers: MsgHdrs | undefined,
    msgID: string | undefined,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const entry: JsEntry = {
        seq: this.seq++,
        subject,
        data,
        headers,
        msgID,
        attempt: 0,
        gen: -1,
        deadline: Date.now() + this.options.publishTimeout,
        settled: false,
        resolve,
        reject,
      };
      if (this.up && this.held.length === 0 && this.streams!.capturedBy(subject) !== undefined) {
        this.sendJs(entry);
      } else {
        this.held.push(entry);
        this.drainHeld();
      }
    });
  }

  private sendJs(entry: JsEntry): void {
    const attempt = ++entry.attempt;
    entry.gen = this.gen;
    this.inflight.set(entry.seq, entry);
    const opts: { headers?: MsgHdrs; msgID?: string } = {};
    if (entry.headers) opts.headers = entry.headers;
    if (entry.msgID !== undefined) opts.msgID = entry.msgID;
    this.js!.publish(entry.subject, entry.data, opts).then(
      () => this.settle(entry, undefined),
      (err: unknown) => {
        if (entry.settled || entry.attempt !== attempt) return;
        this.onJsError(entry, toError(err));
      },
    );
  }

  private settle(entry: JsEntry, err: Error | undefined): void {
    if (entry.settled) return;
    entry.settled = true;
    this.inflight.delete(entry.seq);
    if (err) entry.reject(err);
    else entry.resolve();
  }

  private onJsError(entry: JsEntry, err: Error): void {
    const lost =
      err.name === 'TimeoutError' ||
      err.name === 'JetStreamNotEnabled' ||
      err.name === 'NoResponders' ||
      err.name === 'RequestError' ||
      err.name === 'ClosedConnectionError';
    if (err.name === 'InvalidArgumentError' && /max_payload/.test(err.message)) {
      this.settle(entry, new EvpubError(ErrorCode.PAYLOAD_TOO_LARGE, err.message, { cause: err }));
      return;
    }
    if (!lost || this.ending || Date.now() > entry.deadline) {
      this.settle(
        entry,
        new EvpubError(
          ErrorCode.PUBLISH_FAILED,
          `JetStream refused the publish to subject "${entry.subject}": ${err.message}`,
          { cause: err, retriable: lost, context: { subject: entry.subject } },
        ),
      );
      return;
    }
    // No ack: the connection is going, or JetStream is not ready (after a restart), or the
    // stream went away. Hold it and try again shortly, in publish order.
    this.inflight.delete(entry.seq);
    if (err.name !== 'TimeoutError') this.streams!.forget(entry.subject);
    this.hold([entry]);
    this.retryTimer ??= setTimeout(() => {
      this.retryTimer = undefined;
      this.drainHeld();
    }, 250);
  }

  /** Puts entries back among the held ones, in publish order. */
  private hold(entries: JsEntry[]): void {
    if (entries.length === 0) return;
    this.held = [...this.held, ...entries].sort((a, b) => a.seq - b.seq);
    this.sweepLater();
  }

  /** On reconnect: what was in flight on the old connection goes out again. */
  private requeueInflight(): void {
    const lost = [...this.inflight.values()].filter((e) => e.gen < this.gen);
    for (const e of lost) this.inflight.delete(e.seq);
    this.hold(lost);
  }

  /** Sends held entries in order, making sure a stream captures each subject first. */
  private drainHeld(): void {
    if (this.draining || !this.js) return;
    this.draining = true;
    void (async () => {
      try {
        while (this.held.length > 0 && this.up && !this.ending) {
          const entry = this.held[0]!;
          if (entry.settled || Date.now() > entry.deadline) {
            this.held.shift();
            this.settle(entry, this.expired());
            continue;
          }
          if (this.streams!.capturedBy(entry.subject) === undefined) {
            try {
              await this.streams!.ensure(entry.subject, 'publish');
            } catch (err) {
              if (!this.up) break; // the connection went: try again on reconnect
              this.held.shift();
              this.settle(entry, toError(err));
              continue;
            }
            if (this.held[0] !== entry) continue;
          }
          this.held.shift();
          this.sendJs(entry);
        }
      } finally {
        this.draining = false;
      }
    })();
  }

  /** While publishes are held, rejects those past their deadline (the Client has given up). */
  private sweepLater(): void {
    if (this.sweepTimer) return;
    this.sweepTimer = setTimeout(() => {
      this.sweepTimer = undefined;
      const now = Date.now();
      this.held = this.held.filter((e) => {
        if (e.deadline >= now && !e.settled) return true;
        this.settle(e, this.expired());
        return false;
      });
      for (const batch of [...this.unconfirmed]) {
        if (batch.deadline < now && batch.gen !== this.gen) {
          this.unconfirmed.splice(this.unconfirmed.indexOf(batch), 1);
          if (this.open === batch) this.open = undefined;
          batch.reject(this.expired());
        }
      }
      if (this.held.length > 0 || (!this.up && this.unconfirmed.length > 0)) this.sweepLater();
    }, 1000);
    this.sweepTimer.unref();
  }

  private failAll(err: Error): void {
    for (const batch of this.unconfirmed.splice(0)) batch.reject(err);
    this.open = undefined;
    for (const e of [...this.inflight.values(), ...this.held]) this.settle(e, err);
    this.held = [];
  }

  // -------------------------------------------------------------------------------------------
  // Subscribing

  async subscribe(pattern: string, options: SubscribeOptions): Promise<void> {
    if (options.durable !== undefined) {
      if (!this.js) {
        throw new EvpubError(
          ErrorCode.CONFIG_INVALID,
          'durable: durable subscriptions on NATS need JetStream: pass { nats: { jetstream: true } }',
        );
      }
      await this.subscribeDurable(pattern, options.durable, options.from ?? 'new');
      return;
    }
    if (this.coreSubs.has(pattern)) return;
    const nc = this.nc!;
    const subs = subjectsFor(pattern).map((subject) =>
      nc.subscribe(subject, {
        callback: (err, msg) => {
          if (err) this.events.error(this.subscriptionError(pattern, err));
          else this.deliverCore(pattern, msg);
        },
      }),
    );
    this.coreSubs.set(pattern, { subs });
    try {
      await nc.flush();
    } catch (err) {
      // Not confirmed yet: nats.js subscribes again when the connection is back.
      this.logger.debug({ err, pattern }, 'subscription not confirmed; it is restored on reconnect');
    }
  }

  private subscriptionError(pattern: string, err: Error): EvpubError {
    return new EvpubError(
      ErrorCode.SUBSCRIBE_FAILED,
      `NATS subscription to "${pattern}" failed: ${err.message}`,
      {
        cause: err,
        context: { pattern },
      },
    );
  }

  private deliverCore(pattern: string, msg: Msg): void {
    const topic = this.topics.topic(msg.subject);
    // One copy per client when several of its patterns match (as MQTT brokers do).
    if (this.coreSubs.size > 1) {
      for (const p of this.coreSubs.keys()) {
        if (matches(p, topic)) {
          if (p !== pattern) return;
          break;
        }
      }
    }
    const data = msg.data;
    const meta: MessageMeta = { pattern, ack: noAck };
    if (msg.headers) this.readHeaders(msg.headers, meta);
    this.events.message(topic, Buffer.from(data.buffer, data.byteOffset, data.byteLength), meta);
  }

  private readHeaders(h: MsgHdrs, meta: MessageMeta): void {
    let headers: Record<string, string> | undefined;
    for (const [k, values] of h) {
      const v = values[values.length - 1] ?? '';
      if (k === KEY_HEADER) meta.key = v;
      else if (k === ID_HEADER) meta.messageId = v;
      else if (k === TYPE_HEADER) meta.contentType = v;
      else (headers ??= {})[k] = v;
    }
    if (headers) meta.headers = headers;
  }

  private async subscribeDurable(pattern: string, durable: string, from: 'new' | 'earliest'): Promise<void> {
    if (!isValidName(durable)) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `durable: "${durable}" is not a valid JetStream consumer name (no whitespace, ".", "*", ">", "/" or "\\")`,
      );
    }
    const key = `${durable}\u0000${pattern}`;
    if (this.durableSubs.has(key)) return;
    const sub: DurableSub = { consumers: [] };
    this.durableSubs.set(key, sub);
    const { AckPolicy, DeliverPolicy } = this.jsmod!;
    try {
      for (const subject of subjectsFor(pattern)) {
        const stream = await this.streams!.ensure(subject, 'filter');
        const name = `${durable}_${createHash('sha256').update(subject).digest('hex').slice(0, 12)}`;
        const exists = await this.jsm!.consumers.info(stream, name).then(
          () => true,
          (err: unknown) => {
            if (toError(err).name === 'ConsumerNotFoundError') return false;
            throw err;
          },
        );
        if (!exists) {
          await this.jsm!.consumers.add(stream, {
            durable_name: name,
            filter_subject: subject,
            ack_policy: AckPolicy.Explicit,
            deliver_policy: from === 'earliest' ? DeliverPolicy.All : DeliverPolicy.New,
            ack_wait: ACK_WAIT_NS,
          });
        }
        const consumer = await this.js!.consumers.get(stream, name);
        const messages = await consumer.consume({ callback: (m) => this.deliverDurable(pattern, m) });
        sub.consumers.push(messages);
        void this.watchConsumer(pattern, name, messages);
      }
    } catch (err) {
      this.durableSubs.delete(key);
      await Promise.all(sub.consumers.map((c) => c.close().catch(() => undefined)));
      if (err instanceof EvpubError) throw err;
      throw this.subscriptionError(pattern, toError(err));
    }
  }

  private deliverDurable(pattern: string, m: JsMsg): void {
    const data = m.data;
    const meta: MessageMeta = {
      pattern,
      redelivered: m.redelivered,
      ack: () => {
        m.ack();
        return Promise.resolve();
      },
    };
    if (m.headers) this.readHeaders(m.headers, meta);
    this.events.message(
      this.topics.topic(m.subject),
      Buffer.from(data.buffer, data.byteOffset, data.byteLength),
      meta,
    );
  }

  private async watchConsumer(pattern: string, name: string, messages: ConsumerMessages): Promise<void> {
    try {
      for await (const s of messages.status()) {
        if (s.type === 'consumer_deleted') {
          this.events.error(
            this.subscriptionError(
              pattern,
              new Error(`JetStream consumer ${name} was deleted: ${s.description}`),
            ),
          );
        } else if (
          s.type === 'heartbeats_missed' ||
          s.type === 'consumer_not_found' ||
          s.type === 'stream_not_found'
        ) {
          this.logger.debug({ status: s, consumer: name }, 'JetStream consumer status');
        }
      }
    } catch (err) {
      this.logger.debug({ err, consumer: name }, 'JetStream consumer status ended');
    }
  }

  async unsubscribe(pattern: string): Promise<void> {
    const core = this.coreSubs.get(pattern);
    if (core) {
      this.coreSubs.delete(pattern);
      for (const s of core.subs) s.unsubscribe();
    }
    for (const [key, sub] of this.durableSubs) {
      if (key.slice(key.indexOf('\u0000') + 1) !== pattern) continue;
      this.durableSubs.delete(key);
      await Promise.all(sub.consumers.map((c) => c.close().catch(() => undefined)));
    }
  }

  // -------------------------------------------------------------------------------------------

  async end(): Promise<void> {
    this.ending = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.sweepTimer);
    const nc = this.nc;
    if (nc && !nc.isClosed()) {
      for (const sub of this.durableSubs.values()) {
        await Promise.all(sub.consumers.map((c) => c.close().catch(() => undefined)));
      }
      this.durableSubs.clear();
      if (this.up) {
        // Let what was written reach the server; bounded, the server may be going away.
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          nc.drain(),
          new Promise((r) => (timer = setTimeout(r, this.options.connectTimeout))),
        ]).catch(() => undefined);
        clearTimeout(timer);
      }
      await nc.close().catch(() => undefined);
    }
    this.up = false;
    this.failAll(
      new EvpubError(ErrorCode.CLIENT_CLOSED, 'the NATS adapter was ended before the broker confirmed'),
    );
    this.events.close();
  }
}
