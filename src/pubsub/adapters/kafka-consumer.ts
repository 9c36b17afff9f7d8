/**
 * One subscription of the Kafka adapter: one kafkajs consumer (kafkajs cannot add topics to a
 * running consumer), in its own consumer group.
 *
 * Protocol:
 * - Plain subscription: a group with a unique id that commits nothing. Before the consumer
 *   runs, the end offset of every partition is read (ListOffsets); when the group assigns a
 *   partition the consumer seeks there before its first fetch. So everything published after
 *   `start()` resolved is delivered, and nothing published before `start()` began. After a
 *   rejoin (broker restart, crash) it seeks to the offset after the last message it delivered.
 * - Durable subscription (`durable: name`): the group `name`. Partitions the group never
 *   committed start at the end as of subscribe (`from: 'new'`) or at the beginning
 *   (`from: 'earliest'`). An offset is committed when `meta.ack()` was called for that message
 *   and every earlier one of its partition, so unacknowledged messages are redelivered.
 * - Wildcards: kafkajs only subscribes to topics that exist, so the topic list is refreshed
 *   every `refreshMs`; new matching topics are read from their beginning (they were created
 *   after the subscription) and the consumer is restarted with the longer list.
 * - A consumer that crashes without kafkajs restarting it is restarted here, with back-off.
 * - Offset out of range: when a partition's next offset is no longer on the broker (retention
 *   deleted it while the subscriber lagged or was away), kafkajs resets the group to its default
 *   offset (the partition's end, or its start for `from: 'earliest'`) and goes on; the messages
 *   in between are never delivered. kafkajs has no event for this, only an ERROR log entry
 *   (`KAFKAJS_OFFSET_RESET_LOG`), which the adapter routes to `offsetOutOfRange()`. That holds
 *   the partition (pause), reads its range, seeks to that same default itself (so the offset it
 *   reports is where delivery resumes), emits `EVPUB_MESSAGES_SKIPPED` naming the partition, the
 *   offset it wanted, where it resumed and how many offsets were skipped, and resumes the
 *   partition: the error comes before the first message after the gap.
 */
import type * as KafkaJS from 'kafkajs';
import { randomUUID } from 'node:crypto';
import type { AdapterEvents, MessageMeta, SubscribeOptions } from '../adapter';
import type { Logger } from '../../logger';
import { ErrorCode, EvpubError } from '../../errors';
import { backoffDelay } from '../../util/retry';
import { fromKafka, hasWildcards, matches, patternToKafkaRegExp, toKafka } from '../topics';

/** Header names that carry evpub's own publish options. */
export const CONTENT_TYPE_HEADER = 'content-type';
export const MESSAGE_ID_HEADER = 'evpub-message-id';

/** The message of kafkajs's log entry (namespace `ConsumerGroup`, level ERROR, fields `topic`,
 * `partition`, `groupId`) when a fetch got OFFSET_OUT_OF_RANGE and kafkajs reset the partition to
 * its default offset (ConsumerGroup.recoverFromOffsetOutOfRange in kafkajs 2.x). It is the only
 * signal kafkajs gives; test/integration/kafka-offset-reset.test.ts fails if a kafkajs upgrade
 * rewords it. */
export const KAFKAJS_OFFSET_RESET_LOG = 'Offset out of range, resetting to default offset';

export interface SubscriptionDeps {
  kafka: KafkaJS.Kafka;
  admin: KafkaJS.Admin;
  events: AdapterEvents;
  logger: Logger;
  ensureTopic(topic: string): Promise<void>;
  /** Called when a consumer reports trouble, so the adapter checks the connection. */
  onTrouble(): void;
  /** How long the first group join may take. */
  joinTimeout: number;
  refreshMs: number;
  maxWaitMs: number;
  sessionTimeout: number;
  backoff: { initialDelay: number; maxDelay: number };
  retry: KafkaJS.RetryOptions;
}

const tp = (topic: string, partition: number): string => `${partition}:${topic}`;

/** Offsets delivered on one partition and which are acknowledged (durable mode). */
interface AckState {
  pending: bigint[];
  acked: Set<bigint>;
}

export class KafkaSubscription {
  private readonly durable: boolean;
  private readonly groupId: string;
  private readonly wildcard: boolean;
  private consumer: KafkaJS.Consumer | undefined;
  private topics = new Set<string>();
  /** Where a partition starts when it is next assigned (initial positions). */
  private readonly seekOnJoin = new Map<string, string>();
  /** Plain mode: the offset after the last delivered message, per partition. */
  private readonly nextOffset = new Map<string, string>();
  /** The offset kafkajs fetches next on a partition, as far as this subscription knows: the
   * position sought at join, the group's commit, or after the last delivered batch. */
  private readonly position = new Map<string, bigint>();
  /** Durable mode: the group's committed offsets, as last read or written here. */
  private readonly committed = new Map<string, bigint>();
  private readonly acks = new Map<string, AckState>();
  private readonly toCommit = new Map<string, { topic: string; partition: number; offset: string }>();
  private committing: Promise<void> | undefined;
  private stopped = false;
  private restarting: Promise<void> | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly pattern: string,
    private readonly options: SubscribeOptions,
    private readonly deps: SubscriptionDeps,
  ) {
    this.durable = options.durable !== undefined;
    this.groupId = options.durable ?? `evpub-${randomUUID()}`;
    this.wildcard = hasWildcards(pattern);
  }

  async start(): Promise<void> {
    let topics: string[];
    if (this.wildcard) {
      patternToKafkaRegExp(this.pattern); // INVALID_TOPIC for levels Kafka cannot carry
      topics = await this.matchingTopics();
    } else {
      const name = toKafka(this.pattern);
      await this.deps.ensureTopic(name);
      topics = [name];
    }
    this.topics = new Set(topics);
    await this.planPositions(topics, this.options.from === 'earliest' ? 'start' : 'end');
    // A wildcard that matches no topic yet has no consumer until the refresh finds one
    // (a group over no topics cannot be assigned).
    if (topics.length) await this.runConsumer();
    if (this.wildcard) {
      this.refreshTimer = setInterval(() => void this.refresh(), this.deps.refreshMs);
      this.refreshTimer.unref();
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.refreshTimer);
    clearTimeout(this.retryTimer);
    await this.restarting?.catch(() => undefined);
    await this.committing;
    const consumer = this.consumer;
    this.consumer = undefined;
    await consumer
      ?.disconnect()
      .catch((err: unknown) => this.deps.logger.debug({ err }, 'consumer disconnect'));
  }

  /** Existing topics the wildcard pattern matches (Kafka's internal `__` topics excluded). */
  private async matchingTopics(): Promise<string[]> {
    const re = patternToKafkaRegExp(this.pattern);
    const names = await this.deps.admin.listTopics();
    return names.filter((n) => !n.startsWith('__') && re.test(n) && matches(this.pattern, fromKafka(n)));
  }

  /**
   * Decides where partitions start: `end` = after the last message now, `start` = the first.
   * In durable mode only partitions the group has not committed are positioned.
   */
  private async planPositions(topics: string[], where: 'start' | 'end'): Promise<void> {
    if (!topics.length) return;
    const uncommitted = new Set<string>();
    if (this.durable) {
      const committed = await this.deps.admin.fetchOffsets({ groupId: this.groupId, topics });
      for (const t of committed) {
        for (const p of t.partitions) {
          const key = tp(t.topic, p.partition);
          if (Number(p.offset) < 0) uncommitted.add(key);
          else this.committed.set(key, BigInt(p.offset));
        }
      }
    }
    for (const topic of topics) {
      for (const p of await this.deps.admin.fetchTopicOffsets(topic)) {
        const key = tp(topic, p.partition);
        if (this.durable && !uncommitted.has(key)) continue;
        this.seekOnJoin.set(key, where === 'end' ? p.high : p.low);
      }
    }
  }

  private async runConsumer(): Promise<void> {
    const consumer = this.deps.kafka.consumer({
      groupId: this.groupId,
      allowAutoTopicCreation: false,
      maxWaitTimeInMs: this.deps.maxWaitMs,
      sessionTimeout: this.deps.sessionTimeout,
      heartbeatInterval: Math.min(3_000, Math.floor(this.deps.sessionTimeout / 10)),
      retry: this.deps.retry,
    });
    this.consumer = consumer;
    let joined!: () => void;
    let failed!: (err: Error) => void;
    const join = new Promise<void>((resolve, reject) => {
      joined = resolve;
      failed = reject;
    });
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      // Runs before the first fetch of this generation: seeks take effect before any read.
      this.acks.clear();
      this.toCommit.clear();
      for (const [topic, partitions] of Object.entries(payload.memberAssignment)) {
        for (const partition of partitions) {
          const key = tp(topic, partition);
          const offset = this.seekOnJoin.get(key) ?? (this.durable ? undefined : this.nextOffset.get(key));
          this.seekOnJoin.delete(key);
          if (offset !== undefined) consumer.seek({ topic, partition, offset });
          const from = offset === undefined ? this.committed.get(key) : BigInt(offset);
          if (from === undefined) this.position.delete(key);
          else this.position.set(key, from);
        }
      }
      joined();
    });
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      if (this.stopped || this.consumer !== consumer) return;
      this.deps.logger.warn({ err: payload.error, restart: payload.restart }, 'kafka consumer crashed');
      failed(payload.error);
      this.deps.onTrouble();
      // kafkajs restarts it itself when `restart` is true; otherwise we do.
      if (!payload.restart) this.scheduleRestart(1);
    });
    try {
      await consumer.connect();
      await consumer.subscribe({ topics: [...this.topics], fromBeginning: this.options.from === 'earliest' });
      await consumer.run({
        autoCommit: false,
        eachBatchAutoResolve: true,
        eachBatch: async ({ batch }) => this.deliver(consumer, batch),
      });
      await withTimeout(join, this.deps.joinTimeout, `joining consumer group ${this.groupId}`);
    } catch (err) {
      if (this.consumer === consumer) this.consumer = undefined;
      await consumer.disconnect().catch(() => undefined);
      throw err;
    }
  }

  private deliver(consumer: KafkaJS.Consumer, batch: KafkaJS.Batch): void {
    const topic = fromKafka(batch.topic);
    const key = tp(batch.topic, batch.partition);
    if (this.consumer === consumer) this.position.set(key, BigInt(batch.lastOffset()) + 1n);
    for (const message of batch.messages) {
      if (this.stopped || this.consumer !== consumer) return;
      const offset = BigInt(message.offset);
      const meta = this.meta(message);
      if (this.durable) {
        let state = this.acks.get(key);
        if (!state) this.acks.set(key, (state = { pending: [], acked: new Set() }));
        state.pending.push(offset);
        const s = state;
        let done = false;
        meta.ack = () => {
          if (done) return Promise.resolve();
          done = true;
          return this.ack(consumer, batch.topic, batch.partition, s, offset);
        };
      } else {
        this.nextOffset.set(key, String(offset + 1n));
      }
      this.deps.events.message(topic, message.value ?? Buffer.alloc(0), meta);
    }
  }

  private meta(message: KafkaJS.KafkaMessage): MessageMeta {
    const meta: MessageMeta = { pattern: this.pattern, ack: () => Promise.resolve() };
    if (message.key !== null && message.key !== undefined) meta.key = message.key.toString('utf8');
    const headers: Record<string, string> = {};
    let any = false;
    for (const [name, raw] of Object.entries(message.headers ?? {})) {
      if (raw === undefined) continue;
      const value = (Array.isArray(raw) ? raw[raw.length - 1] : raw)?.toString('utf8') ?? '';
      if (name === CONTENT_TYPE_HEADER) meta.contentType = value;
      else if (name === MESSAGE_ID_HEADER) meta.messageId = value;
      else {
        headers[name] = value;
        any = true;
      }
    }
    if (any) meta.headers = headers;
    return meta;
  }

  /** Marks `offset` acknowledged and commits up to the highest contiguous acknowledged one. */
  private ack(
    consumer: KafkaJS.Consumer,
    topic: string,
    partition: number,
    state: AckState,
    offset: bigint,
  ): Promise<void> {
    if (this.consumer !== consumer || this.acks.get(tp(topic, partition)) !== state) {
      return Promise.resolve(); // delivered by a previous generation: it will come again
    }
    state.acked.add(offset);
    let upTo: bigint | undefined;
    while (state.pending.length && state.acked.has(state.pending[0]!)) {
      upTo = state.pending.shift()!;
      state.acked.delete(upTo);
    }
    if (upTo === undefined) return Promise.resolve();
    this.toCommit.set(tp(topic, partition), { topic, partition, offset: String(upTo + 1n) });
    return this.commit(consumer);
  }

  /** One commit in flight at a time; acks arriving meanwhile go into the next one. */
  private commit(consumer: KafkaJS.Consumer): Promise<void> {
    this.committing ??= (async () => {
      while (this.toCommit.size && this.consumer === consumer) {
        const offsets = [...this.toCommit.values()];
        this.toCommit.clear();
        try {
          await consumer.commitOffsets(offsets);
          for (const o of offsets) this.committed.set(tp(o.topic, o.partition), BigInt(o.offset));
        } catch (err) {
          // After a rebalance the messages are redelivered: at-least-once, not an error to raise.
          this.deps.logger.warn({ err, groupId: this.groupId }, 'kafka offset commit failed');
        }
      }
    })().finally(() => (this.committing = undefined));
    return this.committing;
  }

  /**
   * kafkajs got OFFSET_OUT_OF_RANGE for `topic`/`partition` of group `groupId` and is resetting
   * it to its default offset. Called synchronously from kafkajs's log entry, before its next
   * fetch: the partition is paused at once, its range read (ListOffsets), the consumer sought to
   * kafkajs's default (the end, or the start with `from: 'earliest'`) so the resume offset is the
   * one reported, EVPUB_MESSAGES_SKIPPED emitted, and the partition resumed. So the error comes
   * before the first message after the gap. Without a range (ListOffsets failed) kafkajs's own
   * reset stands and the error says less.
   */
  offsetOutOfRange(groupId: string, topic: string, partition: number): void {
    const consumer = this.consumer;
    if (this.stopped || !consumer || groupId !== this.groupId || !this.topics.has(topic)) return;
    const key = tp(topic, partition);
    const requested = this.position.get(key);
    this.position.delete(key);
    this.committed.delete(key); // kafkajs commits its default offset for the group
    const held = [{ topic, partitions: [partition] }];
    try {
      consumer.pause(held);
    } catch (err) {
      this.deps.logger.debug({ err, topic, partition }, 'could not hold a reset partition');
    }
    void this.resumeAfterReset(consumer, topic, partition, requested)
      .catch((err: unknown) => this.deps.logger.warn({ err, topic, partition }, 'offset reset report failed'))
      .finally(() => {
        try {
          if (this.consumer === consumer) consumer.resume(held);
        } catch (err) {
          this.deps.logger.debug({ err, topic, partition }, 'could not resume a reset partition');
        }
      });
  }

  private async resumeAfterReset(
    consumer: KafkaJS.Consumer,
    topic: string,
    partition: number,
    requested: bigint | undefined,
  ): Promise<void> {
    const toEnd = this.options.from !== 'earliest';
    let range: { low: bigint; high: bigint } | undefined;
    try {
      const p = (await this.deps.admin.fetchTopicOffsets(topic)).find((o) => o.partition === partition);
      if (p) range = { low: BigInt(p.low), high: BigInt(p.high) };
    } catch (err) {
      this.deps.logger.debug({ err, topic, partition }, 'ListOffsets after an offset reset failed');
    }
    if (this.stopped) return;
    let resumed: bigint | undefined;
    if (range && this.consumer === consumer) {
      resumed = toEnd ? range.high : range.low;
      try {
        consumer.seek({ topic, partition, offset: String(resumed) });
        const key = tp(topic, partition);
        this.position.set(key, resumed);
        if (!this.durable) this.nextOffset.set(key, String(resumed));
      } catch (err) {
        this.deps.logger.debug({ err, topic, partition }, 'seek after an offset reset failed');
        resumed = undefined;
      }
    }
    this.deps.events.error(
      skippedError({
        pattern: this.pattern,
        groupId: this.groupId,
        durable: this.durable,
        topic,
        partition,
        requested,
        toEnd,
        resumed,
        low: range?.low,
        high: range?.high,
      }),
    );
  }

  private async refresh(): Promise<void> {
    if (this.stopped || this.restarting) return;
    try {
      const fresh = (await this.matchingTopics()).filter((t) => !this.topics.has(t));
      if (!fresh.length || this.stopped) return;
      this.deps.logger.debug({ pattern: this.pattern, topics: fresh }, 'new topics match a wildcard');
      await this.planPositions(fresh, 'start');
      fresh.forEach((t) => this.topics.add(t));
      await this.restart();
    } catch (err) {
      this.deps.logger.warn({ err, pattern: this.pattern }, 'kafka wildcard refresh failed');
      if (!this.consumer) this.scheduleRestart(1);
    }
  }

  /** Restarts the consumer after the back-off of restart `attempt` (1, 2, ...). */
  private scheduleRestart(attempt: number): void {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(
      () => {
        this.restart().catch(() => {
          this.scheduleRestart(attempt + 1);
        });
      },
      backoffDelay(attempt, this.deps.backoff),
    );
  }

  /** Replaces the consumer by a new one over the current topic list. */
  private restart(): Promise<void> {
    this.restarting ??= (async () => {
      const old = this.consumer;
      this.consumer = undefined;
      await old?.disconnect().catch(() => undefined);
      if (this.stopped || !this.topics.size) return;
      try {
        await this.runConsumer();
      } catch (err) {
        this.deps.logger.warn({ err, pattern: this.pattern }, 'kafka consumer restart failed; retrying');
        throw err;
      }
    })().finally(() => (this.restarting = undefined));
    return this.restarting;
  }
}

/** EVPUB_MESSAGES_SKIPPED for a partition kafkajs reset to its start (`low`) or end (`high`). */
function skippedError(r: {
  pattern: string;
  groupId: string;
  durable: boolean;
  topic: string;
  partition: number;
  requested: bigint | undefined;
  toEnd: boolean;
  resumed: bigint | undefined;
  low: bigint | undefined;
  high: bigint | undefined;
}): EvpubError {
  const resumed = r.resumed;
  const skipped =
    r.requested !== undefined && resumed !== undefined && resumed > r.requested
      ? Number(resumed - r.requested)
      : undefined;
  const who = r.durable ? `durable subscription ${JSON.stringify(r.groupId)}` : 'subscription';
  const where = `Kafka topic ${JSON.stringify(r.topic)} partition ${r.partition}`;
  const wanted = r.requested === undefined ? 'its next offset' : `offset ${r.requested}`;
  let text = `${who} to ${JSON.stringify(r.pattern)} skipped messages on ${where}: ${wanted} is no longer on the broker`;
  if (r.low !== undefined && r.high !== undefined) {
    text +=
      r.high > r.low
        ? ` (it keeps offsets ${r.low} to ${r.high - 1n})`
        : ` (it keeps no message; the next is offset ${r.high})`;
  }
  text += `, so kafkajs reset it to the partition's ${r.toEnd ? 'end' : 'start'}`;
  if (resumed !== undefined) text += ` and it resumed at offset ${resumed}`;
  if (skipped !== undefined) {
    text += `; ${skipped} message${skipped === 1 ? ' was' : 's were'} never delivered (offsets ${r.requested} to ${resumed! - 1n})`;
  }
  if (r.toEnd && r.low !== undefined && resumed !== undefined && resumed > r.low) {
    text += `; offsets ${r.low} to ${resumed - 1n} are still on the broker for a new subscription with from: 'earliest'`;
  }
  text +=
    '. Fix: a durable subscription that keeps up (acknowledge promptly, do not stay away longer than the ' +
    "topic's retention), or a longer retention (retention.ms / retention.bytes) on the topic.";
  return new EvpubError(ErrorCode.MESSAGES_SKIPPED, text, {
    context: {
      pattern: r.pattern,
      groupId: r.groupId,
      topic: r.topic,
      partition: r.partition,
      requestedOffset: r.requested?.toString(),
      resumedOffset: resumed?.toString(),
      skipped,
      lowWatermark: r.low?.toString(),
      highWatermark: r.high?.toString(),
    },
  });
}

function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new EvpubError(ErrorCode.SUBSCRIBE_FAILED, `${what} took longer than ${ms} ms`)),
      ms,
    );
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
