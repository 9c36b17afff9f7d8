/**
 * The AMQP 0-9-1 adapter (RabbitMQ), on amqplib.
 *
 * Protocol:
 * - Topics: everything is published to one durable topic exchange (`evpub`, or
 *   `{ amqp: { exchange } }`) with routing key `toDotted(topic)`; a subscription binds with
 *   `patternToDotted(pattern, '#')`, and a delivery's routing key goes back through
 *   `fromDotted()`, so the subscriber sees the publisher's topic. Keys are at most 255 bytes.
 * - One connection, two channels: a ConfirmChannel for publishing (see amqp-publish.ts:
 *   resolve on basic.ack, PUBLISH_FAILED on basic.nack, channel back-pressure, re-publish of
 *   what was unconfirmed when a connection died), a plain channel for queues and consumers.
 *   Messages are persistent (delivery mode 2). Options: `headers` → AMQP headers, `key` → the
 *   `evpub-key` header, `contentType` and `messageId` → the properties of those names.
 * - Plain subscribe: one exclusive, auto-delete, server-named queue per client, bound once per
 *   pattern, consumed without acks. A message matching several patterns arrives once.
 * - Durable subscribe (`{ durable: name }`): the durable queue `evpub.<name>`, shared by every
 *   subscriber of that name, bound with the pattern, consumed with manual acks and a prefetch
 *   window (`amqp.prefetch`, 500); `meta.ack()` acks, unacked messages are redelivered.
 * - Unsubscribe unbinds the pattern and cancels the queue's consumer when no pattern is left.
 *   For a durable name this removes the binding for every subscriber sharing the name.
 * - Reconnect: amqplib's connection recovery retries with back-off (`reconnect`); its setup hook
 *   runs on each new connection, before anything else uses it: it opens the channels, declares
 *   the exchange, restores queues, bindings and consumers, re-publishes, then reports
 *   `reconnect`. A channel the broker closes on its own (a channel error) closes the
 *   connection, so the same path rebuilds everything.
 * - Except a refused publish: the broker closes the publishing channel over a basic.publish it
 *   refuses (403 not allowed to write there, 404 no exchange, 406 over max_message_size). The
 *   message the refusal is final for rejects (see amqp-publish.ts: NOT_AUTHORIZED or
 *   PAYLOAD_TOO_LARGE, permanent); the adapter opens a new confirm channel on the same
 *   connection, declares the exchange again (so a 404 heals: the exchange deleted under us is
 *   made again) and re-publishes, in order, what the old channel left unconfirmed. No offline
 *   or reconnect event: the connection stayed up.
 * - Publishes are not mandatory: a message no queue is bound for is dropped by the broker, which
 *   is pub/sub without a subscriber yet, not a refusal (no basic.return is asked for).
 */
import type { Writable } from 'node:stream';
import type {
  Channel,
  ChannelModel,
  ConfirmChannel,
  ConsumeMessage,
  Options,
  RecoveringChannelModel,
} from 'amqplib';
import type {
  AdapterEvents,
  AdapterFeatures,
  BrokerAdapter,
  MessageMeta,
  PublishOptions,
  ResolvedClientOptions,
  SubscribeOptions,
} from '../adapter';
import { ErrorCode, EvpubError, isEvpubError, toError } from '../../errors';
import type { Logger } from '../../logger';
import { TickCork } from '../../util/tick-cork';
import { loadTls, tlsFailure } from '../../util/tls';
import { loadDriver } from '../driver';
import { fromDotted, matches, patternToDotted, toDotted } from '../topics';
import { amqpSettings, type AmqpSettings } from './amqp-config';
import { PublishWindow, amqpPublishRefusal, type PublishRefusal } from './amqp-publish';

type Amqplib = typeof import('amqplib');

/** The header that carries the publish `key`. */
export const KEY_HEADER = 'evpub-key';
const DOTTED_RULE =
  'AMQP routing keys are at most 255 bytes after the dotted rule (levels percent-encoded, joined with ".")';
const PERSISTENT: Options.Publish = Object.freeze({ persistent: true });
const CACHE_MAX = 10_000;
const noAck = (): Promise<void> => Promise.resolve();

/** One connection's channels. `lost` once any of them closed. */
interface Session {
  model: ChannelModel;
  pub: ConfirmChannel;
  sub: Channel;
  lost: boolean;
}

/** A queue this client consumes: the private one, or a durable one. */
interface QueueState {
  /** The durable name, or undefined for the private queue. */
  durable: string | undefined;
  patterns: Set<string>;
  /** The consumer on the current session, if one was started there. */
  consumer?: { session: Session; queue: string; tag: string };
  /** Topic → the first pattern of this queue it matches (null: none). */
  lookup: Map<string, string | null>;
}

/** AMQP reply codes where the broker refused an operation (the channel is then closed). */
function refusal(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return code === 403 || code === 404 || code === 405 || code === 406;
}

function headerValue(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (v === null || v === undefined) return undefined;
  try {
    return JSON.stringify(v);
  } catch {
    return undefined; // a value JSON cannot carry (a nested bigint): dropped
  }
}

export class AmqpAdapter implements BrokerAdapter {
  static readonly adapterName = 'amqp';
  static readonly defaultPort = 5672;
  readonly name = 'amqp';
  readonly features: AdapterFeatures;
  private readonly settings: AmqpSettings;
  private readonly log: Logger;
  private readonly window: PublishWindow;
  private handle: RecoveringChannelModel | undefined;
  private session: Session | undefined;
  private connectedOnce = false;
  private ending = false;
  private readonly privateQueue: QueueState = { durable: undefined, patterns: new Set(), lookup: new Map() };
  private readonly durables = new Map<string, QueueState>();
  /** Pattern → the queue it is bound to. */
  private readonly bound = new Map<string, QueueState>();
  /** Topology changes (subscribe, unsubscribe, restore) run one at a time. */
  private topology: Promise<void> = Promise.resolve();
  private readonly routingKeys = new Map<string, string>();
  private readonly topics = new Map<string, string>();

  constructor(
    private readonly options: ResolvedClientOptions,
    private readonly events: AdapterEvents,
  ) {
    this.settings = amqpSettings(options);
    this.log = options.logger;
    this.window = new PublishWindow(this.settings.exchange);
    this.features = {
      wildcards: true,
      headers: true,
      confirms: true,
      durable: true,
      orderingKey: false,
      deduplicates: false,
      maxPayload: this.settings.maxPayload,
    };
  }

  // -------------------------------------------------------------------------------------------
  // Connection

  async connect(): Promise<void> {
    const amqp = await loadDriver<Amqplib>('amqplib', 'AMQP adapter');
    const { connectTimeout, reconnect } = this.options;
    const clientProperties = this.options.clientId ? { connection_name: this.options.clientId } : {};
    const { tls, auth, endpoint } = this.settings;
    const handle = await amqp.connect(this.settings.target, {
      clientProperties,
      ...this.settings.socket,
      ...(tls && loadTls(tls, 'options.tls', { endpoint, logger: this.log })),
      ...(auth === 'external' && { credentials: amqp.credentials.external() }),
      timeout: connectTimeout,
      recovery: {
        initialDelay: reconnect.initialDelay,
        maxDelay: reconnect.maxDelay,
        initialMaxRetries: 0, // the first connection fails fast; connect() reports it
        maxRetries: Infinity,
        waitForConnect: false,
        setup: (model: ChannelModel) => this.setup(model),
      },
    });
    this.handle = handle;
    handle.on('error', (err: Error) => this.log.debug({ err }, 'AMQP connection error'));
    handle.on('connect-failed', (err: Error) => {
      if (!this.connectedOnce) return;
      // A certificate that expired or changed since: say why, not only that it retries.
      const tlsErr = tlsFailure(err, endpoint);
      if (tlsErr) this.log.warn({ code: tlsErr.code }, `AMQP reconnect failed: ${tlsErr.message}`);
      else this.log.debug({ err: err.message }, 'AMQP reconnect attempt failed');
    });
    handle.on('blocked', (reason: string) => this.log.warn({ reason }, 'AMQP broker blocked publishing'));
    handle.on('unblocked', () => this.log.info('AMQP broker unblocked publishing'));
    handle.on('handler-error', (err: Error) => this.events.error(err));

    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no connection within ${connectTimeout} ms`)),
        connectTimeout,
      );
    });
    try {
      await Promise.race([handle.waitForConnect(), timeout]);
    } catch (err) {
      this.handle = undefined;
      await handle.close().catch(() => undefined);
      throw this.connectError(err);
    } finally {
      clearTimeout(timer);
    }
  }

  private connectError(err: unknown): EvpubError {
    if (isEvpubError(err)) return err;
    const { where, safeUrl, target, exchange, endpoint, auth } = this.settings;
    const tlsErr = tlsFailure(err, endpoint);
    if (tlsErr) return tlsErr;
    const msg = (err as Error).message ?? String(err);
    if (auth === 'external' && /ACCESS[-_]REFUSED|EXTERNAL/.test(msg)) {
      return new EvpubError(
        ErrorCode.AUTH_FAILED,
        `the AMQP broker at ${where} refused the client certificate (SASL EXTERNAL) on vhost ${JSON.stringify(target.vhost)}: ${msg}` +
          (/not provided by the server/.test(msg)
            ? ' (enable the rabbitmq_auth_mechanism_ssl plugin and add EXTERNAL to auth_mechanisms)'
            : " (RabbitMQ needs a user named after the certificate's subject, and ssl_options.verify = verify_peer)"),
        { cause: err, context: { url: safeUrl } },
      );
    }
    if (/ACCESS[-_]REFUSED|NOT[-_]ALLOWED/.test(msg)) {
      return new EvpubError(
        ErrorCode.AUTH_FAILED,
        `the AMQP broker at ${where} refused user ${JSON.stringify(target.username ?? 'guest')} on vhost ${JSON.stringify(target.vhost)}: ${msg}`,
        { cause: err, context: { url: safeUrl } },
      );
    }
    if (refusal(err)) {
      return new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `amqp.exchange: the AMQP broker at ${where} refused to declare ${JSON.stringify(exchange)} as a durable topic exchange (it exists with other settings?): ${msg}`,
        { cause: err },
      );
    }
    const hint = /ConnectionOpenOk/.test(msg) ? ` (does vhost ${JSON.stringify(target.vhost)} exist?)` : '';
    return new EvpubError(
      ErrorCode.CONNECT_FAILED,
      `could not connect to the AMQP broker at ${where} (${safeUrl}): ${msg}${hint}`,
      { cause: err, retriable: true, context: { url: safeUrl } },
    );
  }

  /** Runs on every new connection before it is used; a throw closes it and retries later. */
  private async setup(model: ChannelModel): Promise<void> {
    if (this.ending || this.handle === undefined) throw new Error('the adapter is closing');
    batchSocketWrites(model);
    model.on('error', (err: Error) => this.log.debug({ err }, 'AMQP connection error'));
    const pub = await model.createConfirmChannel();
    const sub = await model.createChannel();
    const s: Session = { model, pub, sub, lost: false };
    model.on('close', () => this.lost(s));
    this.watchPublishChannel(s, pub);
    sub.on('error', (err: Error) => this.log.warn({ err: err.message }, 'AMQP channel closed by the broker'));
    sub.on('close', () => this.lost(s));
    await pub.assertExchange(this.settings.exchange, 'topic', { durable: true });
    await sub.prefetch(this.settings.prefetch);
    await this.serial(async () => {
      for (const q of [this.privateQueue, ...this.durables.values()]) {
        if (q.patterns.size > 0) await this.startConsumer(s, q);
      }
    });
    if (s.lost || this.ending) throw new Error('the connection closed during setup');
    this.session = s;
    this.window.attach(pub);
    if (this.connectedOnce) {
      this.log.info('AMQP connection restored');
      this.events.reconnect();
    }
    this.connectedOnce = true;
  }

  /** The publishing channel's end: a refused publish reopens it, anything else loses the session. */
  private watchPublishChannel(s: Session, pub: ConfirmChannel): void {
    let refusal: PublishRefusal | undefined;
    pub.on('error', (err: Error) => {
      refusal = amqpPublishRefusal(err);
      if (refusal) this.log.debug({ refusal }, 'AMQP broker refused a publish');
      else this.log.warn({ err: err.message }, 'AMQP channel closed by the broker');
    });
    pub.on('close', () => {
      if (!refusal || s.lost || this.session !== s || s.pub !== pub || this.ending) this.lost(s);
      else void this.reopenPublishChannel(s, refusal);
    });
  }

  private async reopenPublishChannel(s: Session, refusal: PublishRefusal): Promise<void> {
    const kept = this.window.detach(refusal);
    this.log.debug({ kept }, 'AMQP publishing channel closed by a refusal; opening another');
    try {
      const pub = await s.model.createConfirmChannel();
      if (s.lost || this.session !== s || this.ending) {
        await pub.close().catch(() => undefined);
        return;
      }
      s.pub = pub;
      this.watchPublishChannel(s, pub); // from here its errors are handled, its close too
      await pub.assertExchange(this.settings.exchange, 'topic', { durable: true });
      if (s.pub === pub && !s.lost) this.window.attach(pub);
    } catch (err) {
      // The connection is going too, or the exchange cannot be declared: rebuild it all.
      this.log.warn({ err }, 'AMQP publishing channel could not be opened again');
      this.lost(s);
    }
  }

  /** A channel or the connection closed: go offline; recovery brings a new session. */
  private lost(s: Session): void {
    s.lost = true;
    if (this.session !== s) return;
    this.session = undefined;
    const unconfirmed = this.window.detach();
    if (this.ending) return;
    this.log.warn(
      { unconfirmed },
      'AMQP connection lost; unconfirmed publishes are re-published after the reconnect',
    );
    this.events.offline();
    // A channel error leaves the connection open: close it so that recovery rebuilds it all.
    void Promise.resolve()
      .then(() => s.model.close())
      .catch(() => undefined);
  }

  async end(): Promise<void> {
    if (this.ending) return;
    const handle = this.handle;
    if (handle !== undefined && this.session !== undefined && this.window.pending > 0) {
      // Let what was published be confirmed, within the publish timeout.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.window.idle(),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, this.options.publishTimeout))),
      ]);
      clearTimeout(timer);
    }
    this.ending = true;
    this.handle = undefined;
    if (handle !== undefined) {
      await handle.close().catch((err: unknown) => this.log.debug({ err }, 'closing the AMQP connection'));
    }
    this.window.close(
      new EvpubError(
        ErrorCode.CLIENT_CLOSED,
        'the client was ended before the AMQP broker confirmed the publish',
        { retriable: true },
      ),
    );
    this.events.close();
  }

  // -------------------------------------------------------------------------------------------
  // Publishing

  publish(topic: string, payload: Buffer, options: PublishOptions): Promise<void> {
    if (this.ending) {
      return Promise.reject(new EvpubError(ErrorCode.CLIENT_CLOSED, 'the AMQP adapter was ended'));
    }
    if (payload.length > this.features.maxPayload) {
      return Promise.reject(
        new EvpubError(
          ErrorCode.PAYLOAD_TOO_LARGE,
          `payload of ${payload.length} bytes exceeds the AMQP broker's max_message_size of ${this.features.maxPayload} bytes`,
          { context: { topic } },
        ),
      );
    }
    let routingKey: string;
    try {
      routingKey = this.routingKey(topic);
    } catch (err) {
      return Promise.reject(toError(err));
    }
    const properties = this.properties(options);
    return new Promise<void>((resolve, reject) =>
      this.window.publish({ routingKey, content: payload, properties, resolve, reject }),
    );
  }

  private properties(o: PublishOptions): Options.Publish {
    if (
      o.headers === undefined &&
      o.key === undefined &&
      o.contentType === undefined &&
      o.messageId === undefined
    ) {
      return PERSISTENT;
    }
    const p: Options.Publish = { persistent: true };
    if (o.headers !== undefined || o.key !== undefined) {
      const headers: Record<string, string> = { ...o.headers };
      if (o.key !== undefined) headers[KEY_HEADER] = o.key;
      p.headers = headers;
    }
    if (o.contentType !== undefined) p.contentType = o.contentType;
    if (o.messageId !== undefined) p.messageId = o.messageId;
    return p;
  }

  private routingKey(topic: string): string {
    let key = this.routingKeys.get(topic);
    if (key === undefined) {
      key = toDotted(topic);
      if (Buffer.byteLength(key) > 255) {
        throw new EvpubError(
          ErrorCode.INVALID_TOPIC,
          `Invalid topic ${JSON.stringify(topic)}: ${DOTTED_RULE}`,
          {
            context: { topic },
          },
        );
      }
      if (this.routingKeys.size >= CACHE_MAX) this.routingKeys.clear();
      this.routingKeys.set(topic, key);
    }
    return key;
  }

  // -------------------------------------------------------------------------------------------
  // Subscribing

  private bindingKey(pattern: string): string {
    const key = patternToDotted(pattern, '#');
    if (Buffer.byteLength(key) > 255) {
      throw new EvpubError(
        ErrorCode.INVALID_TOPIC,
        `Invalid topic ${JSON.stringify(pattern)}: ${DOTTED_RULE}`,
        {
          context: { topic: pattern },
        },
      );
    }
    return key;
  }

  private serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.topology.then(work);
    this.topology = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  async subscribe(pattern: string, options: SubscribeOptions): Promise<void> {
    const bindingKey = this.bindingKey(pattern);
    const durable = options.durable;
    if (durable !== undefined && (typeof durable !== 'string' || durable === '' || durable.length > 200)) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `subscribe: durable must be a non-empty name of at most 200 characters, got ${JSON.stringify(durable)}`,
      );
    }
    await this.serial(async () => {
      const current = this.bound.get(pattern);
      if (current !== undefined && current.durable === durable) return;
      if (current !== undefined) await this.unbind(pattern, current);
      const q = durable === undefined ? this.privateQueue : this.durableQueue(durable);
      q.patterns.add(pattern);
      q.lookup.clear();
      this.bound.set(pattern, q);
      const s = this.session;
      if (s === undefined) return; // the next session's setup binds it
      try {
        if (q.consumer?.session === s) {
          await s.sub.bindQueue(q.consumer.queue, this.settings.exchange, bindingKey);
        } else {
          await this.startConsumer(s, q);
        }
      } catch (err) {
        if (s.lost && !refusal(err)) return; // the connection went; the next setup binds it
        q.patterns.delete(pattern);
        q.lookup.clear();
        this.bound.delete(pattern);
        if (q.durable !== undefined && q.patterns.size === 0 && q.consumer === undefined) {
          this.durables.delete(q.durable);
        }
        throw new EvpubError(
          ErrorCode.SUBSCRIBE_FAILED,
          `subscribe to ${JSON.stringify(pattern)} failed at the AMQP broker: ${(err as Error).message}`,
          { cause: err },
        );
      }
    });
  }

  async unsubscribe(pattern: string): Promise<void> {
    await this.serial(async () => {
      const q = this.bound.get(pattern);
      if (q !== undefined) await this.unbind(pattern, q);
    });
  }

  private durableQueue(name: string): QueueState {
    let q = this.durables.get(name);
    if (q === undefined) {
      q = { durable: name, patterns: new Set(), lookup: new Map() };
      this.durables.set(name, q);
    }
    return q;
  }

  /** Declares the queue on session `s`, binds all its patterns, and consumes from it. */
  private async startConsumer(s: Session, q: QueueState): Promise<void> {
    let queue: string;
    if (q.durable !== undefined) {
      queue = `evpub.${q.durable}`;
      await s.sub.assertQueue(queue, { durable: true });
    } else {
      queue = (await s.sub.assertQueue('', { exclusive: true, autoDelete: true, durable: false })).queue;
    }
    for (const pattern of q.patterns) {
      await s.sub.bindQueue(queue, this.settings.exchange, this.bindingKey(pattern));
    }
    const { consumerTag } = await s.sub.consume(queue, (msg) => this.deliver(s, q, msg), {
      noAck: q.durable === undefined,
    });
    q.consumer = { session: s, queue, tag: consumerTag };
  }

  /** Unbinds `pattern`; cancels the consumer when the queue has no pattern left. */
  private async unbind(pattern: string, q: QueueState): Promise<void> {
    q.patterns.delete(pattern);
    q.lookup.clear();
    this.bound.delete(pattern);
    const empty = q.patterns.size === 0;
    if (empty && q.durable !== undefined) this.durables.delete(q.durable);
    const s = this.session;
    const consumer = q.consumer;
    if (s === undefined || consumer === undefined || consumer.session !== s) return;
    try {
      await s.sub.unbindQueue(consumer.queue, this.settings.exchange, this.bindingKey(pattern));
      if (empty) {
        q.consumer = undefined;
        await s.sub.cancel(consumer.tag);
      }
    } catch (err) {
      if (s.lost && !refusal(err)) return; // nothing to restore for it on the next session
      throw new EvpubError(
        ErrorCode.SUBSCRIBE_FAILED,
        `unsubscribe from ${JSON.stringify(pattern)} failed at the AMQP broker: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }

  private deliver(s: Session, q: QueueState, msg: ConsumeMessage | null): void {
    if (msg === null) {
      // The broker cancelled the consumer (its queue was deleted).
      if (q.consumer?.session === s) q.consumer = undefined;
      this.events.error(
        new EvpubError(
          ErrorCode.SUBSCRIBE_FAILED,
          `the AMQP broker cancelled the consumer of ${q.durable === undefined ? 'the private queue' : `durable queue evpub.${q.durable}`} (deleted?); it is restored on the next reconnect`,
        ),
      );
      return;
    }
    const topic = this.topicOf(msg.fields.routingKey);
    const pattern = this.patternFor(q, topic);
    if (pattern === undefined) {
      // Routed before an unsubscribe took effect: nobody here wants it.
      if (q.durable !== undefined) this.ack(s, msg);
      return;
    }
    let acked = false;
    const meta: MessageMeta = {
      pattern,
      ack:
        q.durable === undefined
          ? noAck
          : () => {
              if (!acked) {
                acked = true;
                this.ack(s, msg);
              }
              return Promise.resolve();
            },
    };
    if (msg.fields.redelivered) meta.redelivered = true;
    const props = msg.properties;
    if (typeof props.contentType === 'string') meta.contentType = props.contentType;
    if (typeof props.messageId === 'string') meta.messageId = props.messageId;
    const raw: Record<string, unknown> | undefined = props.headers;
    if (raw !== undefined) {
      let headers: Record<string, string> | undefined;
      for (const name of Object.keys(raw)) {
        const value = headerValue(raw[name]);
        if (value === undefined) continue;
        if (name === KEY_HEADER) meta.key = value;
        else (headers ??= {})[name] = value;
      }
      if (headers !== undefined) meta.headers = headers;
    }
    this.events.message(topic, msg.content, meta);
  }

  /** Acks on the channel that delivered; once it is gone the broker redelivers anyway. */
  private ack(s: Session, msg: ConsumeMessage): void {
    if (s.lost) return;
    try {
      s.sub.ack(msg);
    } catch (err) {
      this.log.debug({ err }, 'AMQP ack on a closing channel');
    }
  }

  private topicOf(routingKey: string): string {
    let topic = this.topics.get(routingKey);
    if (topic === undefined) {
      topic = fromDotted(routingKey);
      if (this.topics.size >= CACHE_MAX) this.topics.clear();
      this.topics.set(routingKey, topic);
    }
    return topic;
  }

  private patternFor(q: QueueState, topic: string): string | undefined {
    let found = q.lookup.get(topic);
    if (found === undefined) {
      found = null;
      for (const pattern of q.patterns) {
        if (matches(pattern, topic)) {
          found = pattern;
          break;
        }
      }
      if (q.lookup.size >= CACHE_MAX) q.lookup.clear();
      q.lookup.set(topic, found);
    }
    return found ?? undefined;
  }
}

/**
 * amqplib writes every frame set to the socket as its multiplexer reads it: the socket's writes
 * are held until the tick ends (util/tick-cork.ts). Reaches amqplib's connection stream, which
 * its typings do not show; without one, writes go out one by one as before.
 */
function batchSocketWrites(model: ChannelModel): void {
  const socket = (model as unknown as { connection?: { stream?: Writable } }).connection?.stream;
  if (!socket || typeof socket.cork !== 'function') return;
  const write = socket.write.bind(socket);
  const cork = new TickCork();
  socket.write = ((...args: Parameters<Writable['write']>): boolean => {
    cork.hold(socket);
    return write(...args);
  }) as Writable['write'];
}
