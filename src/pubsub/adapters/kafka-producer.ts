/**
 * The Kafka adapter's publishing side: record sizes, the partitioner and the per-tick batcher.
 *
 * Protocol: every publish made in one tick of the event loop is queued; at the end of the tick
 * the queue is handed to kafkajs as one `sendBatch` (acks=-1: every in-sync replica has the
 * record) per group of messages under the broker's batch limit, in call order. Each publish
 * resolves when the produce request that carried it was acknowledged. Handing over is chained
 * (the next tick's batch goes to kafkajs only after this one did), acknowledgements are not:
 * many batches are in flight at once. When one tick's messages exceed the batch limit they go
 * as several sends, each after the previous one was acknowledged, so that a retry inside
 * kafkajs cannot put a later group before an earlier one.
 *
 * Refusals: kafkajs rejects a whole `sendBatch` with one error, whichever record or topic it
 * came from. `kafkaPublishError()` makes a refusal permanent only when it is sure to be about
 * every message of the batch: a topic's refusal (not authorized, invalid topic) for a batch of
 * that topic alone, a record's refusal (too large, corrupt) for a batch of one message. Any
 * other batch so refused is rejected as transient, and the batcher then sends one message per
 * request, each after the previous one settled, for as many messages as that batch had: the
 * publisher's retry of them gets a verdict per message.
 *
 * Idempotence (`kafka.idempotent`, on by default): the producer gets a producer id from the
 * cluster (InitProducerId) and numbers its records per partition; the broker drops a record
 * batch whose numbers it has already written, so kafkajs's own retries of a produce request
 * (after a timeout or a lost connection, the request may have been written) leave no duplicate.
 * kafkajs hands out the numbers when a request goes out and takes them back when it fails, so
 * two requests in flight would get overlapping numbers after a failure: a later batch could
 * then be taken for a copy of the failed one and dropped while acknowledged. The batcher so
 * sends one `sendBatch` at a time in this mode (what arrives meanwhile goes in the next one),
 * and after a `sendBatch` failed it replaces the producer (`renew`: a new producer id, numbers
 * from 0) before sending anything else: the records of the failed send may or may not be
 * written, and kafkajs's numbers no longer say which. What the publisher then sends again may
 * so be written twice, as without idempotence; what the broker acknowledged is never lost.
 * Idempotence de-duplicates within one producer's life only: the same event published again
 * by a new producer (a restart, a takeover, the publisher's retry after a failure) is a new
 * record (see docs/delivery.md).
 *
 * Measured on librdkafka's mock (20,000 × 300 B, acks=-1): one send per message ~3,000 msg/s;
 * batched per tick ~11,000 msg/s all issued at once, ~20,000 msg/s with 1,000 in flight.
 */
import type * as KafkaJS from 'kafkajs';
import { ErrorCode, EvpubError, isEvpubError } from '../../errors';

/** Kafka's default `message.max.bytes`: the largest record batch a broker accepts. */
export const KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588;

/** A record batch's fixed header (magic v2). */
const BATCH_OVERHEAD = 61;
/** A record's fixed part: length, attributes, timestamp and offset deltas, key/value lengths,
 * header count; each varint counted at its widest (5 bytes) so the estimate never falls short. */
const RECORD_OVERHEAD = 1 + 5 * 6;

/** Upper bound of the bytes a message takes in a record batch. */
export function recordSize(message: KafkaJS.Message): number {
  let size = RECORD_OVERHEAD + byteLength(message.key) + byteLength(message.value);
  for (const [k, v] of Object.entries(message.headers ?? {})) {
    size += 10 + Buffer.byteLength(k) + byteLength(v as string | Buffer | undefined);
  }
  return size;
}

function byteLength(v: string | Buffer | null | undefined): number {
  if (v === null || v === undefined) return 0;
  return typeof v === 'string' ? Buffer.byteLength(v) : v.length;
}

/** The largest payload one message without key or headers can carry under `maxMessageBytes`. */
export function maxPayloadFor(maxMessageBytes: number): number {
  return maxMessageBytes - BATCH_OVERHEAD - RECORD_OVERHEAD;
}

/** Throws PAYLOAD_TOO_LARGE when a record batch of this message alone exceeds the limit. */
export function assertFits(topic: string, message: KafkaJS.Message, maxMessageBytes: number): number {
  const size = recordSize(message);
  if (BATCH_OVERHEAD + size > maxMessageBytes) {
    throw new EvpubError(
      ErrorCode.PAYLOAD_TOO_LARGE,
      `message to ${JSON.stringify(topic)} takes ${BATCH_OVERHEAD + size} bytes with key, headers and ` +
        `record overhead; the broker accepts ${maxMessageBytes} (message.max.bytes; set ` +
        `{ kafka: { maxMessageBytes } } when the broker allows more)`,
      { context: { topic } },
    );
  }
  return size;
}

/**
 * Keyed messages are hashed like the Java client (murmur2, so other clients agree on the
 * partition); messages without a key go to the lowest available partition, so that one
 * topic's unkeyed messages keep their order, as they do on every other evpub broker.
 */
export function evpubPartitioner(kafkajs: typeof KafkaJS): KafkaJS.ICustomPartitioner {
  return () => {
    const byKey = kafkajs.Partitioners.DefaultPartitioner();
    return (args) => {
      if (args.message.key !== null && args.message.key !== undefined) return byKey(args);
      const ids = args.partitionMetadata.filter((p) => p.leader >= 0).map((p) => p.partitionId);
      return ids.length ? Math.min(...ids) : 0;
    };
  };
}

/** A refusal that is permanent for what it is about. */
export interface KafkaRefusal {
  code: ErrorCode;
  /** A record's refusal, or a topic's. */
  scope: 'record' | 'topic';
  /** The Kafka error type (MESSAGE_TOO_LARGE, ...). */
  type: string;
  reason: string;
}

/**
 * Kafka errors that refuse for good. Everything else is transient: LEADER_NOT_AVAILABLE,
 * NOT_LEADER_FOR_PARTITION, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS, a lost connection, and
 * UNKNOWN_TOPIC_OR_PARTITION (the adapter creates its topics; metadata of a new topic takes a
 * moment to reach every broker).
 */
const PERMANENT_TYPES: ReadonlyMap<string, { code: ErrorCode; scope: 'record' | 'topic' }> = new Map([
  ['MESSAGE_TOO_LARGE', { code: ErrorCode.PAYLOAD_TOO_LARGE, scope: 'record' }],
  ['RECORD_LIST_TOO_LARGE', { code: ErrorCode.PAYLOAD_TOO_LARGE, scope: 'record' }],
  ['CORRUPT_MESSAGE', { code: ErrorCode.PUBLISH_FAILED, scope: 'record' }],
  ['INVALID_RECORD', { code: ErrorCode.PUBLISH_FAILED, scope: 'record' }],
  ['INVALID_TOPIC_EXCEPTION', { code: ErrorCode.INVALID_TOPIC, scope: 'topic' }],
  ['TOPIC_AUTHORIZATION_FAILED', { code: ErrorCode.NOT_AUTHORIZED, scope: 'topic' }],
]);

/** The innermost error of a kafkajs chain (KafkaJSNumberOfRetriesExceeded → ... → KafkaJSProtocolError). */
function innermost(err: unknown): unknown {
  let e = err;
  for (let i = 0; i < 10; i++) {
    const next = (e as { cause?: unknown } | null)?.cause;
    if (next === undefined || next === null || next === e) break;
    e = next;
  }
  return e;
}

/** The permanent refusal in a kafkajs error, if it is one. */
export function kafkaRefusal(err: unknown): KafkaRefusal | undefined {
  const inner = innermost(err) as { type?: unknown; message?: unknown } | null;
  const type = typeof inner?.type === 'string' ? inner.type : undefined;
  const known = type === undefined ? undefined : PERMANENT_TYPES.get(type);
  if (!known || type === undefined) return undefined;
  return { ...known, type, reason: typeof inner?.message === 'string' ? inner.message : type };
}

/**
 * What a failed `sendBatch` of `messages` messages to `topics` becomes: permanent only when the
 * refusal is about every one of them (see the header), else transient.
 */
export function kafkaPublishError(err: unknown, topics: string[], messages: number): EvpubError {
  const list = topics.map((t) => JSON.stringify(t)).join(', ');
  const refusal = kafkaRefusal(err);
  const inner = innermost(err) as { type?: unknown } | null;
  const type = typeof inner?.type === 'string' ? inner.type : undefined;
  const why = err instanceof Error ? err.message : String(err);
  const context: Record<string, unknown> = { topics };
  if (type !== undefined) {
    context.brokerCode = type;
    context.brokerReason = refusal?.reason ?? (inner instanceof Error ? inner.message : type);
  }
  if (refusal && (refusal.scope === 'record' ? messages === 1 : topics.length === 1)) {
    return new EvpubError(
      refusal.code,
      `Kafka refused the publish to ${list}: ${refusal.reason} (${refusal.type})`,
      {
        cause: err,
        retriable: false,
        context,
      },
    );
  }
  const shared = refusal
    ? ` (refused for one of ${messages} messages sent together: each is sent alone next)`
    : '';
  return new EvpubError(ErrorCode.PUBLISH_FAILED, `publish to Kafka topic ${list} failed: ${why}${shared}`, {
    cause: err,
    retriable: true,
    context,
  });
}

interface Queued {
  topic: string;
  message: KafkaJS.Message;
  size: number;
  resolve(): void;
  reject(err: Error): void;
}

export interface BatcherDeps {
  producer: KafkaJS.Producer;
  /**
   * Idempotent mode (see the header): one `sendBatch` at a time, and after a failed one a new
   * producer from `renew()` before the next send.
   */
  renew?(): Promise<KafkaJS.Producer>;
  /** Resolves when `topic` exists (creating it if needed). */
  ensureTopic(topic: string): Promise<void>;
  maxMessageBytes: number;
  /** Turns a kafkajs error for a batch of `messages` messages into a typed one. */
  translate(err: unknown, topics: string[], messages: number): Error;
}

export class ProduceBatcher {
  private queue: Queued[] = [];
  private scheduled = false;
  private handoff: Promise<void> = Promise.resolve();
  /** Messages still to send one per request, after a batch refused as a whole (see the header). */
  private alone = 0;
  private producer: KafkaJS.Producer;
  /** Idempotent mode: a send is in flight; what is queued meanwhile waits for it. */
  private busy = false;
  /** Idempotent mode: a send failed, the producer is replaced before the next one. */
  private stale = false;
  private closed: Error | undefined;

  constructor(private readonly deps: BatcherDeps) {
    this.producer = deps.producer;
  }

  /** The producer in use (replaced after a failure in idempotent mode). */
  get current(): KafkaJS.Producer {
    return this.producer;
  }

  /** Queues a message (already size-checked); resolves when Kafka acknowledged it. */
  send(topic: string, message: KafkaJS.Message, size: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ topic, message, size, resolve, reject });
      if (!this.scheduled && !this.busy) {
        this.scheduled = true;
        queueMicrotask(() => this.flush());
      }
    });
  }

  /**
   * Waits until everything queued so far was handed to kafkajs. In idempotent mode, where a
   * batch waits for the previous one's acknowledgement, call `close()` first: what is not
   * handed over yet is then rejected, and this resolves without waiting for acknowledgements.
   */
  drained(): Promise<void> {
    return this.closed !== undefined && this.deps.renew ? Promise.resolve() : this.handoff;
  }

  /** No more sends: what is queued and not handed to kafkajs yet rejects with `err`. */
  close(err: Error): void {
    this.closed = err;
    for (const item of this.queue.splice(0)) item.reject(err);
  }

  private flush(): void {
    const items = this.queue;
    this.queue = [];
    this.scheduled = false;
    const serial = this.deps.renew !== undefined;
    if (serial) this.busy = true;
    const topics = [...new Set(items.map((i) => i.topic))];
    const step = this.handoff.then(async () => {
      // Topics that cannot be made fail their own messages only.
      const failed = new Map<string, Error>();
      await Promise.all(
        topics.map((t) =>
          this.deps.ensureTopic(t).catch((err: unknown) => {
            failed.set(t, err instanceof Error ? err : new Error(String(err)));
          }),
        ),
      );
      const ready: Queued[] = [];
      for (const item of items) {
        const err = failed.get(item.topic);
        if (err) item.reject(err);
        else ready.push(item);
      }
      // Groups under the batch limit (counted per topic, which bounds every partition's batch).
      let group: Queued[] = [];
      const bytes = new Map<string, number>();
      const groups: Queued[][] = [];
      for (const item of ready) {
        const used = bytes.get(item.topic) ?? 0;
        if (group.length && used + item.size > this.deps.maxMessageBytes - 61) {
          groups.push(group);
          group = [];
          bytes.clear();
        }
        group.push(item);
        bytes.set(item.topic, (bytes.get(item.topic) ?? 0) + item.size);
      }
      if (group.length) groups.push(group);
      if (this.alone > 0) {
        for (const item of ready) {
          if (this.alone > 0) this.alone--;
          await this.dispatch([item]).catch(() => undefined);
        }
        return;
      }
      if (groups.length === 1 && !serial) {
        // Errors reach the publishers through their own promises.
        this.dispatch(groups[0]!).catch(() => undefined);
        return;
      }
      // Several groups (large messages), or idempotent mode: each waits for the previous one,
      // so that a retry inside kafkajs can never put a later group before an earlier one.
      for (const g of groups) await this.dispatch(g).catch(() => undefined);
    });
    this.handoff = serial
      ? step.finally(() => {
          this.busy = false;
          if (this.queue.length > 0 && !this.scheduled) {
            this.scheduled = true;
            queueMicrotask(() => this.flush());
          }
        })
      : step;
  }

  private async dispatch(group: Queued[]): Promise<void> {
    if (this.closed !== undefined && this.deps.renew) {
      group.forEach((i) => i.reject(this.closed!));
      throw this.closed;
    }
    if (this.stale && this.deps.renew) {
      try {
        this.producer = await this.deps.renew();
        this.stale = false;
      } catch (err) {
        const typed = this.deps.translate(err, [...new Set(group.map((i) => i.topic))], group.length);
        group.forEach((i) => i.reject(typed));
        throw typed;
      }
    }
    return this.produce(group);
  }

  private produce(group: Queued[]): Promise<void> {
    const byTopic = new Map<string, KafkaJS.Message[]>();
    for (const item of group) {
      let list = byTopic.get(item.topic);
      if (!list) byTopic.set(item.topic, (list = []));
      list.push(item.message);
    }
    const topicMessages = [...byTopic].map(([topic, messages]) => ({ topic, messages }));
    return this.producer.sendBatch({ acks: -1, topicMessages }).then(
      () => group.forEach((i) => i.resolve()),
      (err: unknown) => {
        if (this.deps.renew) this.stale = true;
        const typed = this.deps.translate(err, [...byTopic.keys()], group.length);
        // Refused as a whole for something about one message or topic: find which, one by one.
        if (isEvpubError(typed) && typed.retriable && kafkaRefusal(err)) this.alone += group.length;
        group.forEach((i) => i.reject(typed));
        throw typed;
      },
    );
  }
}
