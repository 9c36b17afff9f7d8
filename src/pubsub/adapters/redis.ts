/**
 * The Redis adapter (ioredis), in one of two modes chosen by `{ redis: { mode } }`:
 *
 * - `pubsub` (default, Redis's own): PUBLISH resolves on Redis's reply, which says Redis accepted
 *   the message, not that anyone received it: subscribers that are not connected at that moment
 *   never get it. Exact topics are SUBSCRIBEd; patterns are PSUBSCRIBEd as the glob from
 *   `patternToGlob()` (wider than the MQTT pattern) and filtered with `matches()`. Redis pub/sub
 *   messages are bytes only: headers, key and contentType are dropped (a warning, once).
 * - `streams` (durable): publish is XADD to the stream named by the topic (identity rule), with
 *   the fields of `redis-streams.ts`, trimmed to about `{ redis: { maxLen } }` entries when set.
 *   A plain subscription reads new entries (XREAD); `{ durable: name }` reads through the consumer
 *   group `name` (XREADGROUP), and `meta.ack()` is XACK; entries of the group left unacknowledged
 *   for `{ redis: { claimIdleMs } }` (a crashed consumer's, or a slow handler's) are claimed with
 *   XAUTOCLAIM and delivered again (`redelivered`), up to `maxDeliveries` times when set. The
 *   consumer name is `clientId`, or a random one. A stream is a key, so a pattern would
 *   need a key SCAN: wildcards are refused with INVALID_TOPIC.
 *
 * Connections: one for commands (publishes pipeline on it: each awaits only its own reply; the
 * publishes of one tick leave in one socket write, see util/tick-cork.ts), one
 * for the pub/sub subscriber, one per stream reader; see `redis-connections.ts` for connecting,
 * back-off and offline/reconnect reporting.
 * In neither mode are `qos` or `retain` meaningful; they are ignored.
 */
import { randomUUID } from 'node:crypto';
import type {
  AdapterEvents,
  AdapterFeatures,
  BrokerAdapter,
  MessageMeta,
  PublishOptions,
  ResolvedClientOptions,
  SubscribeOptions,
} from '../adapter';
import { ErrorCode, EvpubError, toError } from '../../errors';
import { backoffDelay } from '../../util/retry';
import { TickCork } from '../../util/tick-cork';
import { loadDriver } from '../driver';
import { hasWildcards, matches, patternToGlob } from '../topics';
import { RedisConnections, type Redis, type RedisModule } from './redis-connections';
import { StreamReader, entryArgs } from './redis-streams';

export type RedisMode = 'pubsub' | 'streams';

/** The adapter-specific options, under `redis`. */
export interface RedisSettings {
  /** `pubsub` (default) or `streams`. */
  mode: RedisMode;
  /** Streams mode: trim each stream to about this many entries on XADD (MAXLEN ~). */
  maxLen?: number;
  /**
   * Streams mode, durable subscriptions: an entry of the group left unacknowledged this long
   * (by any consumer, this one included) is claimed and delivered again (default 30000).
   */
  claimIdleMs?: number;
  /**
   * Streams mode, durable subscriptions: a claimed entry already delivered this many times is
   * acknowledged without being delivered again, and logged (default: no limit).
   */
  maxDeliveries?: number;
}

/** Default `redis.claimIdleMs`: like JetStream's default ack wait. */
export const DEFAULT_CLAIM_IDLE_MS = 30_000;

/** Redis's default proto-max-bulk-len: the largest string a command may carry. */
const MAX_BULK = 512 * 1024 * 1024;

const STREAMS_RULE =
  'in Redis Streams mode a subscription names one stream (a key) exactly; "+" and "#" would need a key SCAN and are not supported (use mode "pubsub" for patterns)';

const OPTIONS = ['mode', 'maxLen', 'claimIdleMs', 'maxDeliveries'] as const;
type StreamsOption = Exclude<(typeof OPTIONS)[number], 'mode'>;

function settingsError(message: string): EvpubError {
  return new EvpubError(ErrorCode.CONFIG_INVALID, message, { context: { adapter: 'redis' } });
}

/** Validates `options.redis`; errors name the key and the allowed values. */
export function parseRedisSettings(raw: unknown): RedisSettings {
  if (raw === undefined) return { mode: 'pubsub' };
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw settingsError('redis: must be an object like { mode: "streams" }');
  }
  const given = raw as Record<string, unknown>;
  for (const key of Object.keys(given)) {
    if (!(OPTIONS as readonly string[]).includes(key)) {
      throw settingsError(
        `redis.${key}: unknown option; allowed: mode ("pubsub" | "streams"), maxLen, claimIdleMs, maxDeliveries`,
      );
    }
  }
  const mode = given.mode ?? 'pubsub';
  if (mode !== 'pubsub' && mode !== 'streams') {
    throw settingsError(`redis.mode: must be "pubsub" or "streams", got ${JSON.stringify(mode)}`);
  }
  const settings: RedisSettings = { mode };
  const streamsOptions: StreamsOption[] = ['maxLen', 'claimIdleMs', 'maxDeliveries'];
  for (const key of streamsOptions) {
    const value = given[key];
    if (value === undefined) continue;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
      throw settingsError(`redis.${key}: must be a positive integer, got ${JSON.stringify(value)}`);
    }
    if (mode !== 'streams') throw settingsError(`redis.${key}: only applies with redis.mode "streams"`);
    settings[key] = value;
  }
  return settings;
}

const noAck = (): Promise<void> => Promise.resolve();

/**
 * Redis error replies that refuse this message for good: the same command is refused again.
 * - WRONGTYPE: the stream's key holds a value of another type.
 * - NOPERM: the ACL user may not write that key (streams) or publish to that channel.
 * - NOSCRIPT, and an error raised by a script or function: a refusal the server was programmed
 *   to make.
 * Everything else is transient: a lost connection, LOADING (a restart reading its data), BUSY (a
 * long script), OOM (over maxmemory, until memory is freed or evicted), READONLY and MASTERDOWN
 * (a replica during a failover), MISCONF (a failing snapshot), TRYAGAIN / CLUSTERDOWN.
 */
const PERMANENT_REPLY: ReadonlyMap<string, ErrorCode> = new Map([
  ['WRONGTYPE', ErrorCode.PUBLISH_FAILED],
  ['NOPERM', ErrorCode.NOT_AUTHORIZED],
  ['NOSCRIPT', ErrorCode.PUBLISH_FAILED],
]);
const SCRIPT_ERROR = /^ERR .*\b(user_script|user_function|Error running script)\b/;

/** What a failed PUBLISH or XADD becomes; `err` is ioredis's (a ReplyError for a Redis error reply). */
export function redisPublishError(topic: string, err: unknown): EvpubError {
  const cause = toError(err);
  const reply = cause.name === 'ReplyError';
  const prefix = reply ? /^[A-Z]+/.exec(cause.message)?.[0] : undefined;
  const permanent =
    prefix === undefined
      ? undefined
      : (PERMANENT_REPLY.get(prefix) ??
        (SCRIPT_ERROR.test(cause.message) ? ErrorCode.PUBLISH_FAILED : undefined));
  return new EvpubError(
    permanent ?? ErrorCode.PUBLISH_FAILED,
    `Redis refused the publish to ${JSON.stringify(topic)}: ${cause.message}`,
    {
      cause,
      retriable: permanent === undefined,
      context: reply ? { topic, brokerCode: prefix, brokerReason: cause.message } : { topic },
    },
  );
}

export class RedisAdapter implements BrokerAdapter {
  static readonly adapterName = 'redis';
  static readonly defaultPort = 6379;
  readonly name = 'redis';
  readonly features: AdapterFeatures;
  readonly settings: RedisSettings;
  /** Pub/sub mode: SUBSCRIBE goes out on its own connection while the commands one gets ready. */
  readonly subscribesWhileConnecting: boolean;
  private opening: Promise<RedisConnections> | undefined;
  private connections: RedisConnections | undefined;
  private cmd: Redis | undefined;
  // pubsub mode
  private subscriber: Promise<Redis> | undefined;
  private readonly exact = new Set<string>();
  /** PSUBSCRIBE glob → the evpub patterns it serves. */
  private readonly globs = new Map<string, Set<string>>();
  private warnedDropped = false;
  /** The publishes of one tick leave in one write of the command socket. */
  private readonly cork = new TickCork();
  // streams mode
  private readonly readers = new Map<string, { reader: StreamReader; conn: Redis }>();
  private readonly consumer: string;

  constructor(
    private readonly options: ResolvedClientOptions,
    private readonly events: AdapterEvents,
  ) {
    this.settings = parseRedisSettings(options.redis);
    const streams = this.settings.mode === 'streams';
    this.features = {
      wildcards: !streams,
      headers: streams,
      confirms: true,
      durable: streams,
      orderingKey: streams, // one stream is one ordered log
      deduplicates: false,
      maxPayload: MAX_BULK,
    };
    this.consumer = options.clientId ?? `evpub-${randomUUID()}`;
    this.subscribesWhileConnecting = !streams;
  }

  async connect(): Promise<void> {
    const startedAt = Date.now();
    // Set before the first await: a subscribe() issued meanwhile opens its connection as soon
    // as the driver is loaded, not after the commands connection is ready.
    const opening = (async () => {
      const driver = await loadDriver<RedisModule>('ioredis', 'Redis adapter');
      this.connections = new RedisConnections(driver, this.options, this.events);
      return this.connections;
    })();
    this.opening = opening;
    const connections = await opening;
    try {
      this.cmd = await connections.first('commands', {}, startedAt);
    } catch (err) {
      // A subscriber connection opened meanwhile must not keep trying; a later connect() starts over.
      this.subscriber = undefined;
      this.exact.clear();
      this.globs.clear();
      await connections.closeAll([]);
      throw err;
    }
  }

  publish(topic: string, payload: Buffer, options: PublishOptions): Promise<void> {
    const cmd = this.cmd;
    if (!cmd) return Promise.reject(new EvpubError(ErrorCode.INVALID_STATE, 'publish before connect'));
    if (payload.length > MAX_BULK) {
      return Promise.reject(
        new EvpubError(
          ErrorCode.PAYLOAD_TOO_LARGE,
          `payload of ${payload.length} bytes exceeds Redis's default limit of ${MAX_BULK} bytes (proto-max-bulk-len)`,
          { context: { topic } },
        ),
      );
    }
    // ioredis writes each command as it is called: held until the tick ends (util/tick-cork.ts).
    if (cmd.status === 'ready') this.cork.hold(cmd.stream);
    if (this.settings.mode === 'streams') {
      return cmd.xadd(topic, ...entryArgs(payload, options, this.settings.maxLen)).then(
        () => undefined,
        (err: unknown) => Promise.reject(redisPublishError(topic, err)),
      );
    }
    if (
      !this.warnedDropped &&
      (options.headers || options.key !== undefined || options.contentType !== undefined)
    ) {
      this.warnedDropped = true;
      this.options.logger.warn(
        'Redis pub/sub carries the payload only: headers, key and contentType are dropped (use { redis: { mode: "streams" } } to keep them)',
      );
    }
    return cmd.publish(topic, payload).then(
      () => undefined,
      (err: unknown) => Promise.reject(redisPublishError(topic, err)),
    );
  }

  async subscribe(pattern: string, options: SubscribeOptions): Promise<void> {
    try {
      if (this.settings.mode === 'streams') await this.subscribeStream(pattern, options);
      else await this.subscribePubSub(pattern);
    } catch (err) {
      if (err instanceof EvpubError) throw err;
      throw new EvpubError(
        ErrorCode.SUBSCRIBE_FAILED,
        `Redis subscribe to ${JSON.stringify(pattern)} failed: ${toError(err).message}`,
        {
          cause: err,
          context: { topic: pattern },
        },
      );
    }
  }

  async unsubscribe(pattern: string): Promise<void> {
    if (this.settings.mode === 'streams') {
      const entry = this.readers.get(pattern);
      if (!entry) return;
      this.readers.delete(pattern);
      entry.reader.stop();
      await this.connections?.close(entry.conn, false);
      await entry.reader.done;
      return;
    }
    const sub = this.subscriber && (await this.subscriber);
    if (!sub) return;
    if (!hasWildcards(pattern)) {
      if (this.exact.delete(pattern)) await sub.unsubscribe(pattern);
      return;
    }
    const glob = patternToGlob(pattern);
    const serves = this.globs.get(glob);
    if (!serves?.delete(pattern)) return;
    if (serves.size === 0) {
      this.globs.delete(glob);
      await sub.punsubscribe(glob);
    }
  }

  async end(): Promise<void> {
    for (const { reader } of this.readers.values()) reader.stop();
    const readers = [...this.readers.values()];
    this.readers.clear();
    await this.connections?.closeAll(this.cmd ? [this.cmd] : []);
    await Promise.all(readers.map((r) => r.reader.done));
    this.cmd = undefined;
    this.subscriber = undefined;
    this.opening = undefined;
    this.events.close();
  }

  // -------------------------------------------------------------------------------------------
  // pub/sub mode

  private subscriberConnection(): Promise<Redis> {
    const opening = this.opening;
    if (!opening) return Promise.reject(new EvpubError(ErrorCode.INVALID_STATE, 'subscribe before connect'));
    this.subscriber ??= (async () => {
      const connections = await opening;
      // No ready check (INFO) on this connection: SUBSCRIBE is the first command written, one
      // round trip earlier (Redis takes SUBSCRIBE while it loads its data set). A SUBSCRIBE
      // issued now waits in ioredis's queue for the socket, so a subscribe() not awaited before
      // another client's publish() gets there first, as with strong-pubsub.
      // ioredis resubscribes before `ready` is emitted; the PING's reply proves it went through.
      const sub = connections.open('subscriber', { onReady: (c) => c.ping(), readyCheck: false });
      sub.on('messageBuffer', (channel: Buffer, message: Buffer | undefined) =>
        this.onMessage(channel, message),
      );
      sub.on('pmessageBuffer', (glob: Buffer | string, channel: Buffer, message: Buffer | undefined) =>
        this.onPMessage(String(glob), channel, message),
      );
      return sub;
    })();
    return this.subscriber;
  }

  private async subscribePubSub(pattern: string): Promise<void> {
    const sub = await this.subscriberConnection();
    // Recorded before the broker answers, so that concurrent subscribes send one command.
    if (!hasWildcards(pattern)) {
      if (this.exact.has(pattern)) return;
      this.exact.add(pattern);
      await sub.subscribe(pattern).catch((err: unknown) => {
        this.exact.delete(pattern);
        throw err;
      });
      return;
    }
    const glob = patternToGlob(pattern);
    const serves = this.globs.get(glob);
    if (serves) {
      serves.add(pattern);
      return;
    }
    this.globs.set(glob, new Set([pattern]));
    await sub.psubscribe(glob).catch((err: unknown) => {
      this.globs.delete(glob);
      throw err;
    });
  }

  private onMessage(channel: Buffer, message: Buffer | undefined): void {
    const topic = channel.toString();
    if (!this.exact.has(topic)) return;
    const meta: MessageMeta = { pattern: topic, ack: noAck };
    this.events.message(topic, message ?? Buffer.alloc(0), meta);
  }

  private onPMessage(glob: string, channel: Buffer, message: Buffer | undefined): void {
    const serves = this.globs.get(glob);
    if (!serves) return;
    const topic = channel.toString();
    for (const pattern of serves) {
      // The glob is wider than the MQTT pattern (`*` spans levels): filter exactly.
      if (matches(pattern, topic)) {
        this.events.message(topic, message ?? Buffer.alloc(0), { pattern, ack: noAck });
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // streams mode

  private async subscribeStream(pattern: string, options: SubscribeOptions): Promise<void> {
    if (hasWildcards(pattern)) {
      throw new EvpubError(
        ErrorCode.INVALID_TOPIC,
        `Invalid topic ${JSON.stringify(pattern)}: ${STREAMS_RULE}`,
        {
          context: { topic: pattern },
        },
      );
    }
    const cmd = this.cmd;
    const connections = this.connections;
    if (!cmd || !connections) throw new EvpubError(ErrorCode.INVALID_STATE, 'subscribe before connect');
    if (this.readers.has(pattern)) return;
    const key = pattern;
    const createGroup = async (stream: string, group: string, id: string): Promise<void> => {
      try {
        await cmd.xgroup('CREATE', stream, group, id, 'MKSTREAM');
      } catch (err) {
        if (!/^BUSYGROUP/.test(toError(err).message)) throw err;
      }
    };
    let after: string | undefined;
    const durable = options.durable;
    if (durable !== undefined) {
      await createGroup(key, durable, options.from === 'earliest' ? '0' : '$');
    } else {
      // `$` fixed now: the reader starts after the stream's current last entry.
      const last = await cmd.xrevrangeBuffer(key, '+', '-', 'COUNT', 1);
      after = last && last.length > 0 ? String(last[0]![0]) : '0-0';
    }
    if (this.readers.has(pattern)) return; // a concurrent subscribe to the same pattern won
    const { initialDelay, maxDelay } = this.options.reconnect;
    const conn = connections.open(`reader ${key}`, { resendUnanswered: false });
    const reader = new StreamReader(
      conn,
      {
        key,
        pattern,
        ...(durable === undefined
          ? { after }
          : {
              group: { name: durable, consumer: this.consumer },
              claim: {
                idleMs: this.settings.claimIdleMs ?? DEFAULT_CLAIM_IDLE_MS,
                ...(this.settings.maxDeliveries === undefined
                  ? {}
                  : { maxDeliveries: this.settings.maxDeliveries }),
              },
            }),
      },
      {
        deliver: (topic, payload, meta) => this.events.message(topic, payload, meta),
        ack: (stream, group, ids) => cmd.xack(stream, group, ...ids),
        createGroup,
        error: (err) => this.events.error(err),
        logger: this.options.logger,
        backoff: (attempt) => backoffDelay(attempt, { initialDelay, maxDelay }),
      },
    );
    this.readers.set(pattern, { reader, conn });
  }
}
