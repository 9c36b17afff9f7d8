/**
 * The Kafka adapter, on kafkajs (loaded on first connect).
 *
 *   createClient('kafka://localhost:9092')
 *   createClient('kafka://k1:9092,k2:9092', { kafka: { numPartitions: 6 } })
 *
 * Topics: evpub levels joined with '.' (`/v1/subutest` is the Kafka topic `.v1.subutest`); see
 * `toKafka()`. Topics are created on first use (CreateTopics; where the cluster cannot, the
 * broker's auto-creation on a metadata request).
 *
 * Publish: acks=-1 (every in-sync replica has the record) before the promise resolves. The
 * producer is idempotent unless `kafka.idempotent: false`: the broker drops a copy that a retry
 * of kafkajs writes again within the producer's life (not a replay by a new process).
 * `key` is the Kafka key (partition by murmur2 like the Java client; unkeyed messages go to the
 * lowest partition, keeping their order); `headers` are Kafka headers; `contentType` and
 * `messageId` travel as the headers `content-type` and `evpub-message-id` and come back in
 * `meta`; `qos` and `retain` have no Kafka meaning and are ignored. See kafka-producer.ts.
 *
 * Subscribe: one consumer per pattern; see kafka-consumer.ts for positions, durability and
 * wildcards. A subscriber whose next offset the broker no longer keeps (it lagged or was away
 * longer than the topic's retention) is reset by kafkajs to the partition's end (its start with
 * `from: 'earliest'`) and goes on; the client emits `error` with EVPUB_MESSAGES_SKIPPED naming
 * the partition, the offsets and the count skipped (kafkajs only logs it; `log()` catches it).
 *
 * Connection state: kafkajs connects on demand and has no "connection lost" event, so the
 * adapter watches the sockets kafkajs opens. When one is closed by the other side (or a
 * consumer crashes), it probes the cluster (a fresh connection, ApiVersions and Metadata); if
 * the probe fails it reports `offline` and probes again with back-off until the cluster answers,
 * then reports `reconnect`. kafkajs then reconnects its producer and consumers on their own use.
 *
 * Security: the client option `tls` (src/util/tls.ts) is kafkajs's `ssl`, loaded once on
 * connect; the adapter opens the sockets itself (`openSocket`, for `brokerAddressMap` and the
 * loss watch), so it calls `tls.connect` with those options, sending the advertised broker name
 * as SNI and verifying the certificate against it (or `tls.servername`).
 * `kafka.sasl: { mechanism: 'plain' | 'scram-sha-256' | 'scram-sha-512', username, password }`
 * authenticates; a user name and password in the URL (or `username`/`password`) mean PLAIN. The
 * password is a secret: no message, log entry or status carries it. `connect()` rejects with
 * EVPUB_TLS_FAILED when the handshake fails and AUTH_FAILED when the cluster refuses the
 * credentials, without retrying until `connectTimeout`.
 */
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type * as KafkaJS from 'kafkajs';
import type {
  AdapterEvents,
  AdapterFeatures,
  BrokerAdapter,
  PublishOptions,
  ResolvedClientOptions,
  SubscribeOptions,
} from '../adapter';
import { ErrorCode, EvpubError, isEvpubError } from '../../errors';
import { loadDriver } from '../driver';
import { nearest } from '../../util/nearest';
import { backoffDelay } from '../../util/retry';
import { loadTls, tlsFailure, type LoadedTls } from '../../util/tls';
import { toKafka } from '../topics';
import {
  CONTENT_TYPE_HEADER,
  KAFKAJS_OFFSET_RESET_LOG,
  KafkaSubscription,
  MESSAGE_ID_HEADER,
} from './kafka-consumer';
import {
  KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
  ProduceBatcher,
  assertFits,
  evpubPartitioner,
  kafkaPublishError,
  maxPayloadFor,
} from './kafka-producer';

type KafkaModule = typeof KafkaJS;

/** `{ kafka: { ... } }` client options. */
export interface KafkaSettings {
  /** Bootstrap brokers `host:port`; overrides the URL's. */
  brokers?: string[];
  /** Partitions of topics the adapter creates (default 1: one topic's messages stay ordered). */
  numPartitions?: number;
  /** Replication factor of created topics (default -1: the broker's default.replication.factor). */
  replicationFactor?: number;
  /** The brokers' message.max.bytes (default Kafka's 1048588); larger messages are refused. */
  maxMessageBytes?: number;
  clientId?: string;
  /** Rewrites broker addresses (`host:port` → `host:port`), for brokers whose advertised
   * addresses are reached through a tunnel, NAT or proxy. */
  brokerAddressMap?: Record<string, string>;
  /** How often wildcard subscriptions look for new matching topics, ms (default 1000). */
  wildcardRefreshMs?: number;
  /** Longest a fetch waits at the broker for data, ms (default 500). */
  maxWaitMs?: number;
  /** Consumer group session timeout, ms (default 30000, as kafkajs). A member that vanished
   * holds its partitions this long; heartbeats go every tenth of it (at most 3 s). */
  sessionTimeout?: number;
  /** SASL authentication. The password is a secret. */
  sasl?: KafkaSasl;
  /**
   * Idempotent producer (default true): the broker drops a record batch that kafkajs's retry
   * sends again within this producer's life. It needs a cluster that allows InitProducerId
   * (Kafka 0.11+; with ACLs, IdempotentWrite on the cluster, implied by Write from Kafka 3.0
   * on). `false` turns it off: a retried batch may then be written twice.
   */
  idempotent?: boolean;
}

export interface KafkaSasl {
  mechanism: 'plain' | 'scram-sha-256' | 'scram-sha-512';
  username: string;
  password: string;
}

const SASL_KEYS = ['mechanism', 'username', 'password'] as const;
const SASL_MECHANISMS = ['plain', 'scram-sha-256', 'scram-sha-512'] as const;

const SETTING_KEYS = [
  'brokers',
  'numPartitions',
  'replicationFactor',
  'maxMessageBytes',
  'clientId',
  'brokerAddressMap',
  'wildcardRefreshMs',
  'maxWaitMs',
  'sessionTimeout',
  'sasl',
  'idempotent',
];

function configError(message: string): EvpubError {
  return new EvpubError(ErrorCode.CONFIG_INVALID, message);
}

function readSettings(raw: unknown): KafkaSettings {
  if (raw === undefined) return {};
  if (raw === null || typeof raw !== 'object')
    throw configError('kafka: must be an object of Kafka settings');
  // A copy: the options may be frozen (the app's validated config is).
  const s = { ...(raw as Record<string, unknown>) };
  for (const key of Object.keys(s)) {
    if (key === 'ssl') {
      throw configError(
        'kafka.ssl: TLS is the client option tls, the same for every broker: tls: true, or tls: { ca, cert, key, passphrase, servername, rejectUnauthorized }',
      );
    }
    if (!SETTING_KEYS.includes(key)) {
      const near = nearest(key, SETTING_KEYS);
      throw configError(
        `kafka.${key}: unknown option; ${near !== undefined ? `did you mean ${near}? ` : ''}known: ${SETTING_KEYS.join(', ')}`,
      );
    }
  }
  const int = (key: string, min: number): void => {
    const v = s[key];
    if (v !== undefined && (!Number.isInteger(v) || (v as number) < min)) {
      throw configError(`kafka.${key}: must be an integer of at least ${min}`);
    }
  };
  int('numPartitions', 1);
  int('replicationFactor', -1);
  int('maxMessageBytes', 1024);
  int('wildcardRefreshMs', 1);
  int('maxWaitMs', 1);
  int('sessionTimeout', 1);
  if (s.replicationFactor === 0) throw configError('kafka.replicationFactor: must be -1 or at least 1');
  if (s.brokers !== undefined) {
    if (!Array.isArray(s.brokers) || !s.brokers.length || !s.brokers.every((b) => typeof b === 'string')) {
      throw configError('kafka.brokers: must be a non-empty array of "host:port" strings');
    }
    s.brokers.forEach((b: string) => parseBroker(b));
  }
  if (s.clientId !== undefined && typeof s.clientId !== 'string')
    throw configError('kafka.clientId: must be a string');
  const map = s.brokerAddressMap;
  if (
    map !== undefined &&
    (map === null || typeof map !== 'object' || !Object.values(map).every((v) => typeof v === 'string'))
  ) {
    throw configError('kafka.brokerAddressMap: must map "host:port" strings to "host:port" strings');
  }
  if (s.sasl !== undefined) s.sasl = readSasl(s.sasl);
  if (s.idempotent !== undefined && typeof s.idempotent !== 'boolean') {
    throw configError('kafka.idempotent: must be true (the default) or false');
  }
  return s;
}

/** `kafka.sasl`, a closed schema; the password never appears in a message. */
function readSasl(raw: unknown): KafkaSasl {
  const example = '{ mechanism: "scram-sha-512", username: "evpub", password: "${KAFKA_PASSWORD}" }';
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw configError(`kafka.sasl: must be an object like ${example}`);
  }
  const o = raw as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if ((SASL_KEYS as readonly string[]).includes(key)) continue;
    const near = nearest(key, SASL_KEYS);
    throw configError(
      `kafka.sasl.${key}: unknown SASL setting; ${near !== undefined ? `did you mean ${near}?` : `the settings are ${SASL_KEYS.join(', ')}`}`,
    );
  }
  const mechanism = typeof o.mechanism === 'string' ? o.mechanism.toLowerCase() : o.mechanism;
  if (typeof mechanism !== 'string' || !(SASL_MECHANISMS as readonly string[]).includes(mechanism)) {
    const near = typeof mechanism === 'string' ? nearest(mechanism, SASL_MECHANISMS) : undefined;
    throw configError(
      `kafka.sasl.mechanism: must be one of ${SASL_MECHANISMS.join(', ')}` +
        (mechanism === undefined ? ' (missing)' : `, got ${JSON.stringify(o.mechanism)}`) +
        (near !== undefined ? `; did you mean ${near}?` : ''),
    );
  }
  if (typeof o.username !== 'string' || o.username === '') {
    throw configError('kafka.sasl.username: must be a non-empty string');
  }
  if (typeof o.password !== 'string' || o.password === '') {
    throw configError(
      'kafka.sasl.password: must be a non-empty string (a secret: use ${ENV} or ${file:...})',
    );
  }
  return { mechanism: mechanism as KafkaSasl['mechanism'], username: o.username, password: o.password };
}

/** `host:port` (or `[v6]:port`, or `host` alone for 9092) → parts. */
function parseBroker(spec: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:[\]]+)(?::(\d+))?$/.exec(spec.trim());
  const port = m?.[2] === undefined ? KafkaAdapter.defaultPort : Number(m[2]);
  if (!m || port > 65535) {
    throw configError(`Kafka broker ${JSON.stringify(spec)}: expected host:port, e.g. localhost:9092`);
  }
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

/** The brokers of `kafka://[user:pass@]h1:p1,h2:p2/...`. */
function brokersFromUrl(url: string): string[] {
  const authority = url.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '').split(/[/?#]/)[0] ?? '';
  const hosts = authority.includes('@') ? authority.slice(authority.lastIndexOf('@') + 1) : authority;
  return hosts
    .split(',')
    .filter((h) => h !== '')
    .map((h) => {
      const { host, port } = parseBroker(h);
      return `${host.includes(':') ? `[${host}]` : host}:${port}`;
    });
}

const KAFKAJS_BOUNDED_RETRIES_LOG =
  'Limiting retries for the idempotent producer may invalidate EoS guarantees';

function errorName(err: unknown): string {
  return err instanceof Error ? err.name : '';
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class KafkaAdapter implements BrokerAdapter {
  static readonly adapterName = 'kafka';
  static readonly defaultPort = 9092;
  readonly name = 'kafka';
  readonly features: AdapterFeatures;

  private readonly settings: KafkaSettings;
  private readonly brokers: string[];
  private readonly maxMessageBytes: number;
  private readonly logger: ResolvedClientOptions['logger'];
  private readonly sasl: KafkaJS.SASLOptions | undefined;
  /** kafkajs's `ssl`, loaded from `options.tls` on connect. */
  private ssl: LoadedTls | undefined;
  /**
   * The last TLS error a socket reported, with its broker. Under TLS 1.3 the server judges the
   * client certificate after the client's handshake: kafkajs then sees only "Closed
   * connection", and the alert that says why reaches the socket alone.
   */
  private tlsError: { err: Error; broker: string } | undefined;
  private kafkajs: KafkaModule | undefined;
  private kafka: KafkaJS.Kafka | undefined;
  private probeKafka: KafkaJS.Kafka | undefined;
  private producer: KafkaJS.Producer | undefined;
  private admin: KafkaJS.Admin | undefined;
  private batcher: ProduceBatcher | undefined;
  /** Topics known to exist (or being created). */
  private readonly topics = new Map<string, Promise<void>>();
  /** False where the cluster names no controller (librdkafka's mock): no CreateTopics. */
  private canCreateTopics = true;
  private readonly subs = new Map<string, KafkaSubscription>();
  private state: 'idle' | 'up' | 'offline' | 'ended' = 'idle';
  private checking: Promise<void> | undefined;
  private sleeper: { timer: NodeJS.Timeout; wake(): void } | undefined;

  constructor(
    private readonly options: ResolvedClientOptions,
    private readonly events: AdapterEvents,
  ) {
    this.settings = readSettings(options.kafka);
    this.brokers = this.settings.brokers ?? brokersFromUrl(options.url ?? '');
    if (!this.brokers.length) throw configError('Kafka adapter: no broker in the URL or kafka.brokers');
    this.maxMessageBytes = this.settings.maxMessageBytes ?? KAFKA_DEFAULT_MAX_MESSAGE_BYTES;
    this.logger = options.logger;
    this.sasl = this.saslOptions();
    this.features = {
      wildcards: true,
      headers: true,
      confirms: true,
      durable: true,
      orderingKey: true,
      deduplicates: false,
      maxPayload: maxPayloadFor(this.maxMessageBytes),
    };
  }

  private get retry(): KafkaJS.RetryOptions {
    const { initialDelay, maxDelay } = this.options.reconnect;
    return { initialRetryTime: initialDelay, maxRetryTime: maxDelay, retries: 10 };
  }

  private kafkaConfig(
    kafkajs: KafkaModule,
    watch: boolean,
    retry: KafkaJS.RetryOptions,
  ): KafkaJS.KafkaConfig {
    const config: KafkaJS.KafkaConfig = {
      clientId: this.settings.clientId ?? this.options.clientId ?? 'evpub',
      brokers: this.brokers,
      connectionTimeout: Math.min(this.options.connectTimeout, 5_000),
      retry,
      logLevel: this.logger.isLevelEnabled('trace')
        ? kafkajs.logLevel.DEBUG
        : this.logger.isLevelEnabled('debug')
          ? kafkajs.logLevel.INFO
          : kafkajs.logLevel.WARN,
      logCreator: () => (entry) => this.log(kafkajs, entry),
      socketFactory: (args) => this.openSocket(args, watch),
    };
    if (this.ssl) config.ssl = this.ssl;
    if (this.sasl) config.sasl = this.sasl;
    return config;
  }

  /** `kafka.sasl`, or PLAIN with the URL's (or options') user name and password. */
  private saslOptions(): KafkaJS.SASLOptions | undefined {
    const { username, password } = this.credentials();
    const sasl = this.settings.sasl;
    if (sasl !== undefined && username !== undefined) {
      throw configError(
        'kafka.sasl: credentials are also in the URL (or username/password): give them in one place',
      );
    }
    if (sasl !== undefined) return { ...sasl };
    if (username !== undefined) return { mechanism: 'plain', username, password: password ?? '' };
    return undefined;
  }

  /** SASL was asked of a broker listener that has no SASL (kafkajs finds no SaslHandshake). */
  private noSasl(err: unknown): boolean {
    return (
      this.sasl !== undefined &&
      errorName(err) === 'KafkaJSServerDoesNotSupportApiKey' &&
      /^Sasl/.test(String((err as { apiName?: unknown }).apiName))
    );
  }

  /** The broker a kafkajs error names (`host:port`), or all of them. */
  private endpointOf(err: unknown): string {
    for (let e = err as { broker?: unknown; cause?: unknown } | undefined, i = 0; e && i < 6; i++) {
      if (typeof e.broker === 'string') return e.broker;
      e = e.cause as typeof e;
    }
    return this.brokers.join(',');
  }

  private credentials(): { username?: string; password?: string } {
    if (this.options.username !== undefined) {
      return { username: this.options.username, password: this.options.password };
    }
    try {
      const u = new URL((this.options.url ?? '').replace(/@[^/?#]*/, '@host'));
      if (u.username)
        return { username: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
    } catch {
      // no credentials in a URL we cannot parse
    }
    return {};
  }

  /** kafkajs's log entries, into our logger. kafkajs logs recoverable connection trouble at
   * ERROR; what matters to the caller reaches it as typed errors and events, so ERROR → warn. */
  private log(kafkajs: KafkaModule, entry: KafkaJS.LogEntry): void {
    const { message, timestamp: _ts, logger: _lg, ...rest } = entry.log as Record<string, unknown>;
    const fields = { kafkajs: entry.namespace, ...rest };
    const text = typeof message === 'string' ? message : 'kafkajs';
    if (text === KAFKAJS_OFFSET_RESET_LOG) this.offsetReset(rest);
    // The adapter bounds kafkajs's retries and replaces the producer when they run out
    // (kafka-producer.ts): kafkajs's warning about bounded retries says nothing to the user.
    if (text === KAFKAJS_BOUNDED_RETRIES_LOG) this.logger.trace(fields, text);
    else if (entry.level <= kafkajs.logLevel.WARN) this.logger.warn(fields, text);
    else if (entry.level === kafkajs.logLevel.INFO) this.logger.debug(fields, text);
    else this.logger.trace(fields, text);
  }

  /** kafkajs reset a consumer's partition after OFFSET_OUT_OF_RANGE: tell its subscription. */
  private offsetReset(fields: Record<string, unknown>): void {
    const { groupId, topic, partition } = fields;
    if (typeof groupId !== 'string' || typeof topic !== 'string' || typeof partition !== 'number') return;
    for (const sub of this.subs.values()) sub.offsetOutOfRange(groupId, topic, partition);
  }

  /** Opens a broker connection like kafkajs does, through `brokerAddressMap`, watched for loss. */
  private openSocket({ host, port, ssl, onConnect }: KafkaJS.ISocketFactoryArgs, watch: boolean): Socket {
    const mapped = this.settings.brokerAddressMap?.[`${host}:${port}`];
    const target = mapped === undefined ? { host, port } : parseBroker(mapped);
    const socket: Socket = ssl
      ? tlsConnect(
          { ...(isIP(host) ? {} : { servername: host }), ...ssl, host: target.host, port: target.port },
          onConnect,
        )
      : netConnect({ host: target.host, port: target.port }, onConnect);
    socket.setKeepAlive(true, 60_000);
    if (ssl) {
      socket.on('error', (err: Error) => {
        if (tlsFailure(err, '') !== undefined) this.tlsError = { err, broker: `${host}:${port}` };
      });
    }
    if (watch) this.watch(socket);
    return socket;
  }

  /** Reports a connection the other side closed (kafkajs closes its own with end/destroy). */
  private watch(socket: Socket): void {
    let local = false;
    let connected = false;
    const end = socket.end.bind(socket) as (...args: unknown[]) => Socket;
    const destroy = socket.destroy.bind(socket);
    socket.end = (...args: unknown[]) => {
      local = true;
      return end(...args);
    };
    socket.destroy = (err?: Error) => {
      local = true;
      return destroy(err);
    };
    socket.once('connect', () => (connected = true));
    socket.once('secureConnect', () => (connected = true));
    const lost = (): void => {
      if (connected && !local) this.connectionLost();
    };
    socket.once('end', lost);
    socket.on('error', lost);
  }

  async connect(): Promise<void> {
    const kafkajs = await loadDriver<KafkaModule>('kafkajs', 'Kafka adapter');
    this.kafkajs = kafkajs;
    const deadline = Date.now() + this.options.connectTimeout;
    const where = this.brokers.join(',');
    if (this.options.tls) {
      this.ssl = loadTls(this.options.tls, 'options.tls', { endpoint: where, logger: this.logger });
    } else if (this.sasl?.mechanism === 'plain') {
      this.logger.warn(
        { brokers: this.brokers },
        `SASL PLAIN without TLS sends the password to ${where} unencrypted; set the client option tls`,
      );
    }
    this.kafka = new kafkajs.Kafka(this.kafkaConfig(kafkajs, true, this.retry));
    this.probeKafka = new kafkajs.Kafka(this.kafkaConfig(kafkajs, false, { retries: 0 }));
    await this.reach(deadline);
    const admin = this.kafka.admin({ retry: this.retry });
    let producer: KafkaJS.Producer | undefined;
    try {
      await bounded(
        (async () => {
          await admin.connect();
          const cluster = await admin.describeCluster();
          this.canCreateTopics = cluster.brokers.some((b) => b.nodeId === cluster.controller);
          this.checkIdempotence();
          producer = this.newProducer(kafkajs, this.kafka!);
          await producer.connect();
        })(),
        deadline - Date.now(),
      );
    } catch (err) {
      await Promise.all([admin.disconnect(), producer?.disconnect()]).catch(() => undefined);
      throw isEvpubError(err) && err.code === ErrorCode.CONFIG_INVALID ? err : this.connectError(err);
    }
    if (!producer) throw this.connectError(new Error('no producer'));
    if (!this.canCreateTopics) {
      this.logger.info('the Kafka cluster names no controller; topics are created by auto-creation');
    }
    this.admin = admin;
    this.producer = producer;
    const kafka = this.kafka;
    this.batcher = new ProduceBatcher({
      producer,
      ensureTopic: (t) => this.ensureTopic(t),
      maxMessageBytes: this.maxMessageBytes,
      translate: (err, topics, messages) => this.publishError(err, topics, messages),
      ...(this.idempotent ? { renew: () => this.renewProducer(kafkajs, kafka) } : {}),
    });
    this.state = 'up';
  }

  private idempotentOff = false;

  private get idempotent(): boolean {
    return this.settings.idempotent !== false && !this.idempotentOff;
  }

  /**
   * kafkajs asks the controller for an idempotent producer's id: a cluster that names none
   * (librdkafka's mock) cannot have one. Idempotence asked for explicitly is then an error;
   * by default it is turned off with a warning.
   */
  private checkIdempotence(): void {
    if (this.canCreateTopics || this.settings.idempotent === false) return;
    if (this.settings.idempotent === true) {
      throw configError(
        'kafka.idempotent: the Kafka cluster names no controller, and kafkajs asks the controller for the ' +
          'producer id an idempotent producer needs; set kafka.idempotent: false (or leave it out) for this cluster',
      );
    }
    this.idempotentOff = true;
    this.logger.warn(
      { brokers: this.brokers },
      'the Kafka cluster names no controller: the producer is not idempotent (kafkajs gets its producer id from the controller)',
    );
  }

  private newProducer(kafkajs: KafkaModule, kafka: KafkaJS.Kafka): KafkaJS.Producer {
    return kafka.producer({
      allowAutoTopicCreation: true,
      createPartitioner: evpubPartitioner(kafkajs),
      retry: this.retry,
      idempotent: this.idempotent,
    });
  }

  /**
   * Idempotent mode, after a failed send: a new producer (a new producer id, sequence numbers
   * from 0) replaces the one whose numbers may no longer match the broker's (kafka-producer.ts).
   */
  private async renewProducer(kafkajs: KafkaModule, kafka: KafkaJS.Kafka): Promise<KafkaJS.Producer> {
    if (this.state === 'ended') throw new EvpubError(ErrorCode.CLIENT_CLOSED, 'the Kafka adapter was closed');
    const old = this.producer;
    const producer = this.newProducer(kafkajs, kafka);
    try {
      await producer.connect();
    } catch (err) {
      await producer.disconnect().catch(() => undefined);
      throw err;
    }
    this.producer = producer;
    old?.disconnect().catch(() => undefined);
    this.logger.debug('Kafka producer replaced after a failed send (new producer id)');
    return producer;
  }

  /** Probes until the cluster answers or `deadline`; CONNECT_FAILED (or AUTH_FAILED) then. */
  private async reach(deadline: number): Promise<void> {
    let attempt = 1;
    let delay = backoffDelay(attempt, this.options.reconnect);
    for (;;) {
      try {
        this.tlsError = undefined;
        await this.probe(deadline - Date.now());
        return;
      } catch (err) {
        const seen = this.tlsError;
        if (seen !== undefined && tlsFailure(err, '') === undefined) throw tlsFailure(seen.err, seen.broker)!;
        if (
          errorName(err) === 'KafkaJSSASLAuthenticationError' ||
          this.noSasl(err) ||
          tlsFailure(err, '') !== undefined ||
          Date.now() + delay >= deadline
        ) {
          throw this.connectError(err);
        }
      }
      await this.sleep(delay);
      if (this.state === 'ended') throw new EvpubError(ErrorCode.CLIENT_CLOSED, 'the client was ended');
      delay = backoffDelay(++attempt, this.options.reconnect);
    }
  }

  /** One fresh connection to the cluster: ApiVersions and Metadata, then closed. */
  private async probe(timeoutMs: number): Promise<void> {
    const admin = this.probeKafka!.admin({ retry: { retries: 0 } });
    try {
      await bounded(admin.connect(), timeoutMs);
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  }

  private connectError(err: unknown): EvpubError {
    if (isEvpubError(err)) return err;
    const where = this.brokers.join(',');
    const tlsErr = tlsFailure(err, this.endpointOf(err));
    if (tlsErr) return tlsErr;
    if (this.noSasl(err)) {
      return new EvpubError(
        ErrorCode.AUTH_FAILED,
        `Kafka at ${where} does not offer SASL authentication (no SaslHandshake API: a PLAINTEXT or SSL listener): connect to its SASL listener, or remove kafka.sasl`,
        { cause: err, context: { brokers: this.brokers, mechanism: this.sasl!.mechanism } },
      );
    }
    if (errorName(err) === 'KafkaJSSASLAuthenticationError') {
      const sasl = this.sasl!;
      return new EvpubError(
        ErrorCode.AUTH_FAILED,
        `Kafka at ${where} refused SASL ${sasl.mechanism.toUpperCase()} for user ${JSON.stringify((sasl as { username?: string }).username)}: ${messageOf(err)}`,
        { cause: err, context: { brokers: this.brokers, mechanism: sasl.mechanism } },
      );
    }
    return new EvpubError(
      ErrorCode.CONNECT_FAILED,
      `could not connect to Kafka at ${where} within ${this.options.connectTimeout} ms: ${messageOf(err)}`,
      { cause: err, retriable: true, context: { brokers: this.brokers } },
    );
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.sleeper = undefined;
        resolve();
      }, ms);
      this.sleeper = { timer, wake: resolve };
    });
  }

  /** A broker connection was cut: check the cluster, and go offline until it answers. */
  private connectionLost(): void {
    if (this.state !== 'up') return;
    this.checking ??= this.check().finally(() => (this.checking = undefined));
  }

  private async check(): Promise<void> {
    try {
      await this.probe(this.options.connectTimeout);
      return; // the cluster still answers: kafkajs reconnects on its next request
    } catch (err) {
      if (this.state !== 'up') return;
      const tlsErr = tlsFailure(err, this.endpointOf(err));
      if (tlsErr) this.logger.warn({ code: tlsErr.code }, `Kafka probe failed: ${tlsErr.message}`);
      else this.logger.debug({ err }, 'Kafka probe failed after a connection loss');
    }
    this.state = 'offline';
    this.events.offline();
    let attempt = 1;
    while (this.state === 'offline') {
      const delay = backoffDelay(attempt, this.options.reconnect);
      await this.sleep(delay);
      if (this.state !== 'offline') return;
      try {
        await this.probe(this.options.connectTimeout);
      } catch {
        attempt += 1;
        continue;
      }
      if (this.state !== 'offline') return;
      this.state = 'up';
      this.events.reconnect();
    }
  }

  /** Resolves when `topic` exists: CreateTopics, or else the broker's auto-creation. */
  private ensureTopic(topic: string): Promise<void> {
    let known = this.topics.get(topic);
    if (!known) {
      known = this.createTopic(topic);
      this.topics.set(topic, known);
      known.catch(() => this.topics.delete(topic));
    }
    return known;
  }

  private async createTopic(topic: string): Promise<void> {
    const admin = this.admin!;
    if (this.canCreateTopics) {
      try {
        await admin.createTopics({
          waitForLeaders: true,
          topics: [
            {
              topic,
              numPartitions: this.settings.numPartitions ?? 1,
              replicationFactor: this.settings.replicationFactor ?? -1,
            },
          ],
        });
        return;
      } catch (err) {
        // Not allowed to create (ACLs, policy): the topic may exist or be auto-created.
        this.logger.debug({ err, topic }, 'CreateTopics failed; relying on the topic existing');
      }
    }
    await admin.fetchTopicMetadata({ topics: [topic] });
  }

  async publish(topic: string, payload: Buffer, options: PublishOptions): Promise<void> {
    const name = toKafka(topic);
    const headers: Record<string, string> = { ...options.headers };
    if (options.contentType !== undefined) headers[CONTENT_TYPE_HEADER] = options.contentType;
    if (options.messageId !== undefined) headers[MESSAGE_ID_HEADER] = options.messageId;
    const message: KafkaJS.Message = { key: options.key ?? null, value: payload, headers };
    const size = assertFits(topic, message, this.maxMessageBytes);
    if (!this.batcher) throw new EvpubError(ErrorCode.CLIENT_CLOSED, 'the Kafka adapter is not connected');
    return this.batcher.send(name, message, size);
  }

  private publishError(err: unknown, topics: string[], messages: number): Error {
    if (isEvpubError(err)) return err;
    return kafkaPublishError(err, topics, messages);
  }

  async subscribe(pattern: string, options: SubscribeOptions): Promise<void> {
    if (this.subs.has(pattern)) return;
    const sub = new KafkaSubscription(pattern, options, {
      kafka: this.kafka!,
      admin: this.admin!,
      events: this.events,
      logger: this.logger,
      ensureTopic: (t) => this.ensureTopic(t),
      onTrouble: () => this.connectionLost(),
      joinTimeout: Math.max(this.options.connectTimeout, 60_000),
      refreshMs: this.settings.wildcardRefreshMs ?? 1_000,
      maxWaitMs: this.settings.maxWaitMs ?? 500,
      sessionTimeout: this.settings.sessionTimeout ?? 30_000,
      backoff: this.options.reconnect,
      retry: this.retry,
    });
    this.subs.set(pattern, sub);
    try {
      await sub.start();
    } catch (err) {
      this.subs.delete(pattern);
      await sub.stop();
      if (isEvpubError(err)) throw err;
      throw new EvpubError(
        ErrorCode.SUBSCRIBE_FAILED,
        `subscribe to ${JSON.stringify(pattern)} failed: ${messageOf(err)}`,
        {
          cause: err,
          retriable: (err as { retriable?: unknown }).retriable === true,
        },
      );
    }
  }

  async unsubscribe(pattern: string): Promise<void> {
    const sub = this.subs.get(pattern);
    if (!sub) return;
    this.subs.delete(pattern);
    await sub.stop();
  }

  async end(): Promise<void> {
    this.state = 'ended';
    if (this.sleeper) {
      clearTimeout(this.sleeper.timer);
      this.sleeper.wake();
    }
    const subs = [...this.subs.values()];
    this.subs.clear();
    await Promise.all(subs.map((s) => s.stop()));
    this.batcher?.close(new EvpubError(ErrorCode.CLIENT_CLOSED, 'the Kafka adapter was closed'));
    await this.batcher?.drained();
    await Promise.all([
      this.batcher?.current.disconnect().catch(() => undefined),
      this.admin?.disconnect().catch(() => undefined),
    ]);
    await this.checking;
    this.events.close();
  }
}

/** `work`, or a rejection after `ms`. */
function bounded<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${Math.max(0, ms)} ms`)), Math.max(0, ms));
  });
  work.catch(() => undefined);
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
