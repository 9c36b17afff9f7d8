/**
 * The pipeline of one datasource: the `ChangeSink` its connector pushes into, and the path of
 * each event to the broker:
 *
 *   push → op filter → include/exclude → envelope → topic → client.publish (bounded window)
 *                                                                 │ broker confirms
 *                                                                 ▼
 *                                               CheckpointTracker.ack → save → connector.commit
 *
 * Protocol and guarantees:
 * - `push` is synchronous and never awaits: publishes are issued in source order (adapters keep
 *   call order) and their promises are tracked, not awaited one by one.
 * - Window: each feed (model) holds at most `maxInFlight` events between push and commit.
 *   `push` returns false when the event's feed is full or retrying; `drain()` resolves when
 *   every feed has room again. The connector pauses meanwhile. A full feed has room again once
 *   a quarter of its window is committed (at most `maxInFlight` × 3/4 in flight), not after each
 *   single ack: resumed one event at a time, a connector would pay an await, a status and
 *   (on NATS) a socket write per event.
 * - A failed publish that may pass later (timeout, broker down, refused) is never skipped: the
 *   feed stops issuing, waits (exponential back-off), then re-publishes every event it holds
 *   that is not yet committed, in order, the failed one included, even those the broker already
 *   confirmed. Consumers may see duplicates (at-least-once) but the last copy of each key's
 *   events arrives in order. The checkpoint stays before the failed event.
 * - An event that can never be published (encode error, larger than the limit, INVALID_TOPIC)
 *   goes to the dead-letter topic and counts as acked once that is confirmed.
 * - `deadLetter(model, raw)` (input the connector could not turn into an event) goes straight to
 *   the dead-letter topic as an entry of the feed's queue: in order, in the window, retried like
 *   an event, its position committed once the broker confirmed it.
 * - `fail(model, err)` stops one feed: its later events are ignored, the rest go on.
 */
import { randomUUID } from 'node:crypto';
import type { ChangeSink, ConnectorStatus, RawDeadLetter } from '../connectors/contract';
import { ErrorCode, EvpubError, isEvpubError, toError } from '../errors';
import type { ChangeEvent, Operation, Position } from '../events/change-event';
import type { EncodedEvent, Envelope } from '../events/envelopes/envelope';
import type { Logger } from '../logger';
import type { PublishOptions } from '../pubsub/adapter';
import type { Client } from '../pubsub/client';
import { assertTopic } from '../pubsub/topics';
import type { CheckpointTracker } from './checkpoint-tracker';
import {
  deadLetterEvent,
  deadLetterPayload,
  rawDeadLetterPayload,
  type DeadLetterEvent,
} from './dead-letter';
import { fieldProjector, type FieldFilter } from './fields';
import type { PublisherStatus } from './status';
import { statusError } from './status';
import type { TopicRenderer } from './topics';

export interface FeedSpec extends FieldFilter {
  /** `${datasource}/${model}`. */
  feedId: string;
  model: string;
  client: Client;
  envelope: Envelope;
  topic: TopicRenderer;
  ops?: readonly Operation[];
  /** Largest encoded event; larger ones are dead-lettered. */
  maxEventBytes: number;
  tracker: CheckpointTracker;
}

export interface PipelineOptions {
  datasource: string;
  feeds: FeedSpec[];
  maxInFlight: number;
  deadLetterTopic: string;
  logger: Logger;
  emit(status: PublisherStatus): void;
  /** Re-publish back-off in ms (defaults 100 .. 10000). */
  retry?: { initialDelay?: number; maxDelay?: number };
}

interface Entry {
  seq: number;
  /**
   * The event's identity, for a dead letter: not the event itself, whose values are garbage once
   * encoded (kept until the broker confirmed, they would outlive young-generation collections).
   * Undefined for raw input dead-lettered by the connector (`deadLetter` is true from the start).
   */
  event: DeadLetterEvent | undefined;
  topic: string;
  payload: Buffer;
  options: PublishOptions;
  deadLetter: boolean;
  acked: boolean;
  /** The feed generation the entry was last issued in; older settlements are stale. */
  generation: number;
}

type Mode = 'open' | 'backoff' | 'recovering';

interface Feed {
  spec: FeedSpec;
  ops: Set<Operation> | undefined;
  project: (e: ChangeEvent) => ChangeEvent;
  /**
   * Entries in push order from `head` on (the oldest not yet acked); slots before `head` are
   * cleared, so an acked entry (its event and payload) is garbage at once, not when the queue
   * is next compacted: held longer, it outlives young-generation collections and is promoted.
   */
  queue: (Entry | undefined)[];
  head: number;
  mode: Mode;
  generation: number;
  attempt: number;
  recovering: Set<Entry>;
  timer: NodeJS.Timeout | undefined;
  paused: boolean;
  failed: Error | undefined;
  stats: { received: number; published: number; deadLettered: number; filtered: number; retries: number };
  /** When the last `published` status was emitted (they are at most one a second per feed). */
  countsAt: number;
}

const COUNTS_INTERVAL_MS = 1000;
const EMPTY = Buffer.alloc(0);

/** Codes that mean "this event can never be published as it is". */
const DEAD_LETTER_CODES = new Set<string>([ErrorCode.INVALID_TOPIC, ErrorCode.PAYLOAD_TOO_LARGE]);

export interface FeedSnapshot {
  inFlight: number;
  mode: Mode;
  paused: boolean;
  failed?: string;
  received: number;
  published: number;
  deadLettered: number;
  filtered: number;
  retries: number;
}

export class Pipeline implements ChangeSink {
  private readonly feeds = new Map<string, Feed>();
  private readonly waiters: (() => void)[] = [];
  private readonly idleWaiters: (() => void)[] = [];
  private readonly unknownModels = new Set<string>();
  private accepting = true;
  private closed = false;
  /** A paused feed resumes at this many in flight (the low-water mark). */
  private readonly resumeAt: number;

  constructor(private readonly options: PipelineOptions) {
    this.resumeAt = options.maxInFlight - Math.max(1, Math.floor(options.maxInFlight / 4));
    for (const spec of options.feeds) {
      this.feeds.set(spec.model, {
        spec,
        ops: spec.ops && spec.ops.length > 0 ? new Set(spec.ops) : undefined,
        project: fieldProjector(spec),
        queue: [],
        head: 0,
        mode: 'open',
        generation: 0,
        attempt: 0,
        recovering: new Set(),
        timer: undefined,
        paused: false,
        failed: undefined,
        stats: { received: 0, published: 0, deadLettered: 0, filtered: 0, retries: 0 },
        countsAt: Date.now(),
      });
    }
  }

  // -------------------------------------------------------------------------------------------
  // ChangeSink

  push(event: ChangeEvent): boolean {
    const feed = this.feeds.get(event.model);
    if (!feed) {
      if (!this.unknownModels.has(event.model)) {
        this.unknownModels.add(event.model);
        this.options.logger.warn(
          { datasource: this.options.datasource, model: event.model },
          'the connector pushed an event of a model that has no feed; ignoring that model',
        );
      }
      return this.hasRoom();
    }
    if (!this.accepting || feed.failed) {
      // After stop (or a feed failure) nothing is committed past here: a restart replays it.
      return this.hasRoom();
    }
    feed.stats.received++;
    const seq = feed.spec.tracker.push(event.position);
    if (feed.ops && !feed.ops.has(event.op)) {
      feed.stats.filtered++;
      feed.spec.tracker.ack(seq);
      return this.roomAfterPush(feed);
    }
    const entry = this.prepare(feed, seq, event);
    feed.queue.push(entry);
    if (feed.mode !== 'backoff') this.issue(feed, entry);
    return this.roomAfterPush(feed);
  }

  mark(model: string, position: Position): void {
    const feed = this.feeds.get(model);
    if (!feed || !this.accepting || feed.failed) return;
    const { tracker } = feed.spec;
    tracker.ack(tracker.push(position));
  }

  deadLetter(model: string, raw: RawDeadLetter): boolean {
    const feed = this.feeds.get(model);
    if (!feed || !this.accepting || feed.failed) {
      // As for push: unknown models are ignored; after stop nothing is committed past here.
      return this.hasRoom();
    }
    feed.stats.received++;
    const position = raw.position ?? null;
    const code = raw.code ?? ErrorCode.MALFORMED_INPUT;
    const { spec } = feed;
    const features = spec.client.adapter.features;
    const id = randomUUID();
    const entry: Entry = {
      seq: spec.tracker.push(position),
      event: undefined,
      topic: this.options.deadLetterTopic,
      payload: rawDeadLetterPayload(
        {
          datasource: this.options.datasource,
          model,
          position,
          ...(raw.source ? { source: raw.source } : {}),
        },
        { code, reason: raw.reason },
        { payload: raw.payload, ...(raw.headers ? { headers: raw.headers } : {}) },
        spec.maxEventBytes,
      ),
      options: { messageId: `${id}:dead-letter` },
      deadLetter: true,
      acked: false,
      generation: feed.generation,
    };
    if (features.headers) entry.options.contentType = 'application/json';
    // Debug only: the connector logs malformed input itself, throttled (a flood is one line in
    // a thousand); the `dead-lettered` status and the counters say it too.
    this.options.logger.debug(
      { feed: spec.feedId, position, code, reason: raw.reason },
      'input the connector could not turn into an event dead-lettered',
    );
    this.options.emit({
      type: 'dead-lettered',
      feed: spec.feedId,
      eventId: id,
      key: '',
      position,
      topic: this.options.deadLetterTopic,
      error: { code, message: raw.reason },
    });
    feed.queue.push(entry);
    if (feed.mode !== 'backoff') this.issue(feed, entry);
    return this.roomAfterPush(feed);
  }

  drain(): Promise<void> {
    if (this.hasRoom()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  fail(model: string, err: Error): void {
    const feed = this.feeds.get(model);
    if (!feed || feed.failed) return;
    feed.failed = err;
    this.options.logger.error(
      { err, feed: feed.spec.feedId },
      'feed failed; its events are no longer published',
    );
    this.options.emit({ type: 'feed-failed', feed: feed.spec.feedId, error: statusError(err) });
    this.wake();
  }

  status(status: ConnectorStatus): void {
    this.options.emit({ type: 'connector', datasource: this.options.datasource, status });
  }

  // -------------------------------------------------------------------------------------------
  // Encoding

  private prepare(feed: Feed, seq: number, event: ChangeEvent): Entry {
    const { spec } = feed;
    // Only what the broker carries: others would drop it (and warn about it). The event id goes
    // as the transport message id where the broker de-duplicates on it, or where the envelope
    // does not carry it; elsewhere it would be a second copy (MQTT 5 user properties cost as
    // much CPU as the rest of the publish).
    const features = spec.client.adapter.features;
    const options: PublishOptions = {};
    if (features.orderingKey) options.key = event.key;
    if (features.deduplicates || !spec.envelope.carriesId) options.messageId = event.id;
    const entry: Entry = {
      seq,
      event,
      topic: '',
      payload: EMPTY,
      options,
      deadLetter: false,
      acked: false,
      generation: feed.generation,
    };
    let encoded: EncodedEvent | undefined;
    try {
      entry.topic = spec.topic(event);
      encoded = spec.envelope.encode(feed.project(event));
      if (encoded.payload.length > spec.maxEventBytes) {
        throw new EvpubError(
          ErrorCode.PAYLOAD_TOO_LARGE,
          `the encoded event is ${encoded.payload.length} bytes, more than the limit of ${spec.maxEventBytes}`,
        );
      }
      assertTopic(entry.topic);
    } catch (err) {
      const reason = isEvpubError(err) ? err : toError(err);
      const code = isEvpubError(err) ? err.code : ErrorCode.PUBLISH_FAILED;
      this.toDeadLetter(feed, entry, code, reason.message, encoded);
      return entry;
    }
    entry.payload = encoded.payload;
    entry.event = deadLetterEvent(event);
    if (features.headers) {
      options.contentType = encoded.contentType;
      if (encoded.headers) options.headers = encoded.headers;
    }
    return entry;
  }

  private toDeadLetter(
    feed: Feed,
    entry: Entry,
    code: string,
    reason: string,
    encoded: EncodedEvent | undefined,
  ): void {
    const event = entry.event;
    if (!event) return; // raw input: already a dead letter
    const intended = entry.topic === '' ? undefined : entry.topic;
    entry.payload = deadLetterPayload(
      event,
      { code, reason, topic: intended, envelope: feed.spec.envelope.name },
      encoded,
      feed.spec.maxEventBytes,
    );
    entry.topic = this.options.deadLetterTopic;
    const features = feed.spec.client.adapter.features;
    entry.options = { messageId: `${event.id}:dead-letter` };
    if (features.orderingKey) entry.options.key = event.key;
    if (features.headers) entry.options.contentType = 'application/json';
    entry.deadLetter = true;
    this.options.logger.warn(
      { feed: feed.spec.feedId, eventId: event.id, key: event.key, code, reason },
      'event dead-lettered',
    );
    this.options.emit({
      type: 'dead-lettered',
      feed: feed.spec.feedId,
      eventId: event.id,
      key: event.key,
      position: event.position,
      topic: this.options.deadLetterTopic,
      error: { code, message: reason },
    });
  }

  // -------------------------------------------------------------------------------------------
  // Publishing, acks and retries

  private issue(feed: Feed, entry: Entry): void {
    const generation = feed.generation;
    entry.generation = generation;
    feed.spec.client.publish(entry.topic, entry.payload, entry.options).then(
      () => this.onConfirmed(feed, entry, generation),
      (err: unknown) => this.onFailed(feed, entry, generation, toError(err)),
    );
  }

  private onConfirmed(feed: Feed, entry: Entry, generation: number): void {
    if (!entry.acked) {
      entry.acked = true;
      if (entry.deadLetter) feed.stats.deadLettered++;
      else feed.stats.published++;
      feed.spec.tracker.ack(entry.seq);
      this.popAcked(feed);
      if (Date.now() - feed.countsAt >= COUNTS_INTERVAL_MS) this.emitCounts(feed);
    }
    if (feed.mode === 'recovering' && generation === feed.generation) {
      feed.recovering.delete(entry);
      if (feed.recovering.size === 0) {
        feed.mode = 'open';
        feed.attempt = 0;
      }
    }
    this.wake();
  }

  private onFailed(feed: Feed, entry: Entry, generation: number, err: Error): void {
    if (generation !== feed.generation || this.closed) return; // stale: a retry re-publishes it
    const code = isEvpubError(err) ? err.code : undefined;
    if (code !== undefined && DEAD_LETTER_CODES.has(code) && !entry.deadLetter) {
      this.toDeadLetter(feed, entry, code, err.message, {
        payload: entry.payload,
        contentType: entry.options.contentType ?? 'application/octet-stream',
        ...(entry.options.headers ? { headers: entry.options.headers } : {}),
      });
      this.issue(feed, entry);
      return;
    }
    if (code !== undefined && DEAD_LETTER_CODES.has(code) && entry.deadLetter) {
      // Even the dead letter cannot be published (a dead-letter topic this broker refuses).
      this.fail(feed.spec.model, err);
      return;
    }
    this.scheduleRetry(feed, err);
  }

  private scheduleRetry(feed: Feed, err: Error): void {
    feed.generation++;
    feed.mode = 'backoff';
    feed.attempt++;
    feed.stats.retries++;
    const initial = this.options.retry?.initialDelay ?? 100;
    const max = this.options.retry?.maxDelay ?? 10_000;
    const delayMs = Math.min(initial * 2 ** Math.min(feed.attempt - 1, 20), max);
    const events = feed.queue.length - feed.head;
    this.options.logger.warn(
      { err, feed: feed.spec.feedId, attempt: feed.attempt, delayMs, events },
      'publish failed; re-publishing from the first uncommitted event after a back-off',
    );
    this.options.emit({
      type: 'retrying',
      feed: feed.spec.feedId,
      attempt: feed.attempt,
      delayMs,
      events,
      error: statusError(err),
    });
    this.markPaused(feed, 'retrying');
    feed.timer = setTimeout(() => {
      feed.timer = undefined;
      this.republish(feed);
    }, delayMs);
  }

  private republish(feed: Feed): void {
    if (this.closed) return;
    feed.mode = 'recovering';
    feed.recovering = new Set();
    for (let i = feed.head; i < feed.queue.length; i++) {
      const entry = feed.queue[i]!;
      feed.recovering.add(entry);
      this.issue(feed, entry);
    }
    if (feed.recovering.size === 0) {
      feed.mode = 'open';
      feed.attempt = 0;
    }
    this.wake();
  }

  private popAcked(feed: Feed): void {
    const queue = feed.queue;
    while (feed.head < queue.length && queue[feed.head]!.acked) queue[feed.head++] = undefined;
    if (feed.head === feed.queue.length) {
      feed.queue = [];
      feed.head = 0;
    } else if (feed.head > 1024 && feed.head * 2 > feed.queue.length) {
      feed.queue = feed.queue.slice(feed.head);
      feed.head = 0;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Backpressure

  private feedHasRoom(feed: Feed): boolean {
    if (feed.failed) return true;
    const inFlight = feed.queue.length - feed.head;
    return (
      feed.mode === 'open' && (feed.paused ? inFlight <= this.resumeAt : inFlight < this.options.maxInFlight)
    );
  }

  private hasRoom(): boolean {
    if (this.closed) return true;
    for (const feed of this.feeds.values()) if (!this.feedHasRoom(feed)) return false;
    return true;
  }

  private roomAfterPush(feed: Feed): boolean {
    if (!this.feedHasRoom(feed)) {
      this.markPaused(feed, feed.mode === 'open' ? 'window-full' : 'retrying');
      return false;
    }
    return this.hasRoom();
  }

  private markPaused(feed: Feed, reason: 'window-full' | 'retrying'): void {
    if (feed.paused) return;
    feed.paused = true;
    this.options.emit({
      type: 'paused',
      feed: feed.spec.feedId,
      reason,
      inFlight: feed.queue.length - feed.head,
    });
  }

  private wake(): void {
    for (const feed of this.feeds.values()) {
      if (feed.paused && this.feedHasRoom(feed)) {
        feed.paused = false;
        this.options.emit({ type: 'resumed', feed: feed.spec.feedId });
      }
    }
    if (this.waiters.length > 0 && this.hasRoom()) {
      for (const resolve of this.waiters.splice(0)) resolve();
    }
    if (this.idleWaiters.length > 0 && this.isIdle()) {
      for (const resolve of this.idleWaiters.splice(0)) resolve();
    }
  }

  private emitCounts(feed: Feed): void {
    feed.countsAt = Date.now();
    const { published, deadLettered, filtered } = feed.stats;
    const inFlight = feed.queue.length - feed.head;
    this.options.emit({
      type: 'published',
      feed: feed.spec.feedId,
      published,
      deadLettered,
      filtered,
      inFlight,
    });
  }

  /** Emits the `published` counters of every feed now (at stop). */
  emitAllCounts(): void {
    for (const feed of this.feeds.values()) this.emitCounts(feed);
  }

  // -------------------------------------------------------------------------------------------
  // Shutdown and inspection

  private isIdle(): boolean {
    for (const feed of this.feeds.values()) if (feed.queue.length - feed.head > 0) return false;
    return true;
  }

  /** Stops taking events: later pushes are ignored (not committed, so replayed on restart). */
  stopAccepting(): void {
    this.accepting = false;
  }

  /**
   * Resolves when every pushed event is confirmed (or dead-lettered), or after `timeoutMs`
   * with false: then the unconfirmed events stay uncommitted and are re-read on restart.
   */
  async settle(timeoutMs: number): Promise<boolean> {
    if (this.isIdle()) return true;
    let timer: NodeJS.Timeout | undefined;
    const idle = new Promise<boolean>((resolve) => this.idleWaiters.push(() => resolve(true)));
    const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    try {
      return await Promise.race([idle, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Cancels retries and releases anyone awaiting `drain()`. Idempotent. */
  close(): void {
    this.closed = true;
    this.accepting = false;
    for (const feed of this.feeds.values()) {
      if (feed.timer) clearTimeout(feed.timer);
      feed.timer = undefined;
    }
    for (const resolve of this.waiters.splice(0)) resolve();
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  snapshot(model: string): FeedSnapshot | undefined {
    const feed = this.feeds.get(model);
    if (!feed) return undefined;
    const out: FeedSnapshot = {
      inFlight: feed.queue.length - feed.head,
      mode: feed.mode,
      paused: feed.paused,
      ...feed.stats,
    };
    if (feed.failed) out.failed = feed.failed.message;
    return out;
  }

  models(): string[] {
    return [...this.feeds.keys()];
  }
}
