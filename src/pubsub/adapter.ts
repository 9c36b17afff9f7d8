/**
 * The broker adapter contract: what the `Client` needs from one broker.
 *
 * Protocol, as the Client drives it:
 *
 * 1. `new Adapter(options, events)`: no I/O. The adapter keeps `events` and reports through it.
 * 2. `connect()` is called once before any other method. It resolves when the first connection
 *    is up, and rejects with a CONNECT_FAILED (or AUTH_FAILED) `EvpubError` when it is not up
 *    within `options.connectTimeout`; then it leaves no timer or socket behind.
 * 3. After the first connection, losing it is not an error the caller sees: the adapter calls
 *    `events.offline()`, reconnects with back-off on its own (the drivers do this), restores its
 *    subscriptions, and calls `events.reconnect()`. `events.error()` is for failures nobody is
 *    awaiting (a subscription that could not be restored, a decode failure).
 * 4. `publish()` resolves only when the broker has accepted the message, where the broker can
 *    say so (`features.confirms`): MQTT PUBACK/PUBCOMP for QoS 1/2, AMQP publisher confirm,
 *    JetStream ack, Kafka acks=-1. It rejects with an `EvpubError` (INVALID_TOPIC,
 *    PAYLOAD_TOO_LARGE, NOT_AUTHORIZED, NO_DESTINATION, PUBLISH_FAILED, ...). The Client bounds
 *    its time with `publishTimeout`. Publishes are handed to the broker in call order; adapters
 *    must not reorder them.
 *    Every rejection is classified, because the publisher acts on it: `retriable: false` means
 *    the broker refused *this message* and will refuse it again as it is (not authorized for the
 *    topic, no stream for it, too large, invalid topic or payload): the publisher dead-letters it
 *    and goes on. `retriable: true` means the same publish may pass later (connection lost, a
 *    timeout, a broker nack, a quota, a leader election): the publisher retries it in order.
 *    The broker's own reason goes in `context.brokerReason` (and `context.brokerCode`). An error
 *    that is not an `EvpubError` is treated as transient.
 * 5. `subscribe(pattern)` resolves once the broker will deliver matching messages; each message
 *    goes to `events.message(topic, payload, meta)` with `topic` in evpub's syntax. Subscribing
 *    twice to one pattern is one subscription. `unsubscribe(pattern)` undoes it.
 *    An adapter with `subscribesWhileConnecting` also takes `subscribe()` while `connect()` is
 *    still pending: the Client then issues a subscribe that started the connection at once, so
 *    that the subscription is on the wire no later than a publish another client starts at the
 *    same time (strong-pubsub code relies on that). Such an adapter waits for what it needs of
 *    its connection itself, and its subscribe fails when `connect()` fails.
 * 6. In durable modes (`options.durable` on subscribe) a message is acknowledged to the broker
 *    only when `meta.ack()` is called; the Client calls it after the `message` listeners ran
 *    (or leaves it to the listener with `ack: 'manual'`). Unacknowledged messages are redelivered.
 * 7. `end()` closes everything and resolves when the connection is closed; it is called at most
 *    once. The adapter calls `events.close()` when done.
 * 8. TLS: `options.tls` (validated once by the Client with `parseTls` at `options.tls`; see
 *    src/util/tls.ts) turns TLS on. The adapter calls `loadTls` when it builds its driver's
 *    options, and `connect()` rejects with `tlsFailure(err, endpoint)` (EVPUB_TLS_FAILED, not
 *    retriable) when the handshake fails, and with AUTH_FAILED when the broker refuses the
 *    credentials, instead of retrying: the same attempt would fail the same way.
 */
import type { Logger } from '../logger';
import type { TlsSettings } from '../util/tls';

/** What a broker can do; the conformance suite reads these to decide what to test. */
export interface AdapterFeatures {
  /** `+` and `#` work in subscription patterns. */
  wildcards: boolean;
  /** Headers published are delivered to subscribers. */
  headers: boolean;
  /** A resolved publish means the broker accepted the message. */
  confirms: boolean;
  /** Some subscribe mode keeps messages for a named subscriber while it is away. */
  durable: boolean;
  /** The publish `key` orders (or partitions) messages. */
  orderingKey: boolean;
  /** A publish's `messageId` makes the broker drop a repeat of it (JetStream). */
  deduplicates: boolean;
  /** Largest payload, in bytes, the broker accepts with its default configuration. */
  maxPayload: number;
}

export interface PublishOptions {
  /** Application headers; ignored (see README) by brokers without headers. */
  headers?: Record<string, string>;
  /** Ordering / partition key (Kafka key, JetStream message id prefix, ...). */
  key?: string;
  /** MQTT quality of service; 1 by default so that publish is confirmed. */
  qos?: 0 | 1 | 2;
  /** MQTT retained message. */
  retain?: boolean;
  /** MIME type of the payload. */
  contentType?: string;
  /**
   * Idempotency id: the same id on a second publish means the same message. Brokers that
   * de-duplicate (`features.deduplicates`: JetStream, as `Nats-Msg-Id`, within the stream's
   * duplicate window) store it once; others carry it as a message id or header. The pipeline
   * sets it to the event id (a dead letter: the event id + `:dead-letter`), which a source gives
   * again to the same change read again (docs/delivery.md).
   */
  messageId?: string;
}

export interface SubscribeOptions {
  qos?: 0 | 1 | 2;
  /**
   * Name of a durable subscription: a Redis Streams consumer group, a JetStream durable
   * consumer, an AMQP durable queue, a Kafka consumer group. Subscribers sharing a name share
   * the work; messages published while none is connected are kept.
   */
  durable?: string;
  /** In durable mode: `auto` (default) acks after the message listeners ran; `manual` leaves it to `meta.ack()`. */
  ack?: 'auto' | 'manual';
  /** In durable mode, where the group starts when it is new: `new` (default) or `earliest`. */
  from?: 'new' | 'earliest';
}

export interface MessageMeta {
  /** The pattern of the subscription that matched. */
  pattern?: string;
  headers?: Record<string, string>;
  key?: string;
  contentType?: string;
  qos?: 0 | 1 | 2;
  retain?: boolean;
  messageId?: string;
  /** True when the broker says it delivered this message before. */
  redelivered?: boolean;
  /** Acknowledge a durable message; a no-op in plain pub/sub. Idempotent. */
  ack(): Promise<void>;
}

/** How an adapter reports to its Client. */
export interface AdapterEvents {
  message(topic: string, payload: Buffer, meta: MessageMeta): void;
  offline(): void;
  reconnect(): void;
  error(err: Error): void;
  close(): void;
}

export interface ClientOptions {
  /** Broker URL, e.g. `mqtt://localhost:1883`; `host`/`port` are used when absent. */
  url?: string;
  host?: string;
  port?: number;
  username?: string;
  password?: string;
  clientId?: string;
  /** Milliseconds to wait for a connection before failing (default 10000). */
  connectTimeout?: number;
  /** Milliseconds a publish may take, including waiting for a reconnect (default 30000). */
  publishTimeout?: number;
  /** Reconnect back-off bounds in milliseconds (defaults 100 and 5000). */
  reconnect?: { initialDelay?: number; maxDelay?: number };
  logger?: Logger;
  /** TLS for the broker connection: `{ ca, cert, key, passphrase, servername, rejectUnauthorized }` (src/util/tls.ts). */
  tls?: TlsSettings;
  /** Adapter-specific settings, under the adapter's name (`mqtt`, `redis`, `amqp`, `nats`, `kafka`). */
  [adapterSpecific: string]: unknown;
}

/** Options after defaults; what adapters receive. */
export interface ResolvedClientOptions extends ClientOptions {
  connectTimeout: number;
  publishTimeout: number;
  reconnect: { initialDelay: number; maxDelay: number };
  logger: Logger;
}

export interface BrokerAdapter {
  readonly name: string;
  readonly features: AdapterFeatures;
  /** `subscribe()` may be called before `connect()` resolved (point 5). */
  readonly subscribesWhileConnecting?: boolean;
  connect(): Promise<void>;
  publish(topic: string, payload: Buffer, options: PublishOptions): Promise<void>;
  subscribe(pattern: string, options: SubscribeOptions): Promise<void>;
  unsubscribe(pattern: string): Promise<void>;
  end(): Promise<void>;
}

export interface AdapterConstructor {
  new (options: ResolvedClientOptions, events: AdapterEvents): BrokerAdapter;
  /** The adapter's name, as used in URL schemes and config (`mqtt`, `redis`, ...). */
  readonly adapterName: string;
  /** The port used when options give a host but no port. */
  readonly defaultPort: number;
}
