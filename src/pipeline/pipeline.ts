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
 * - Window: each feed (model) holds at most `maxInFlight` events, and at most
 *   `maxInFlightBytes` bytes of encoded events (one event alone may be larger), between push
 *   and commit. `push` returns false when the event's feed is full or retrying; `drain()`
 *   resolves when every feed has room again. The connector pauses meanwhile. A full feed has
 *   room again once a quarter of its window is committed (at most 3/4 of either limit in
 *   flight), not after each single ack: resumed one event at a time, a connector would pay an
 *   await, a status and (on NATS) a socket write per event.
 * - A failed publish that may pass later (the adapter says `retriable`: timeout, broker down,
 *   a nack, a quota) is never skipped: the feed stops issuing, waits (exponential back-off),
 *   then re-publishes every event it holds that is not yet committed, in order, the failed one
 *   included, even those the broker already confirmed. Consumers may see duplicates
 *   (at-least-once) but the last copy of each key's events arrives in order. The checkpoint
 *   stays before the failed event. With `maxAttempts`, an event the broker refused that many
 *   times goes to the dead-letter topic instead (failures to reach the broker at all do not
 *   count: an outage never dead-letters events).
 * - An event that can never be published (encode error, larger than the limit, or a refusal
 *   the adapter says is permanent for this message: not authorized, no stream, invalid topic
 *   or payload; see `isRefusal`) goes to the dead-letter topic at once, with the broker's
 *   reason, and counts as acked once that is confirmed: the feed goes on.
 * - A refusal that hits every event must not flood the dead-letter topic: more than
 *   `deadLetterLimit` dead letters in a row with the same code (no event published between
 *   them) fail the feed. Nothing is committed past the last event published or dead-lettered.
 *   A dead letter the broker refuses as too large goes again without the original event in it
 *   (a broker's advertised limit can be below the one the letter was measured against); one it
 *   refuses for good otherwise fails the feed too: nothing is dropped silently.
 * - `deadLetter(model, raw)` (input the connector could not turn into an event) goes straight to
 *   the dead-letter topic as an entry of the feed's queue: in order, in the window, retried like
 *   an event, its position committed once the broker confirmed it.
 * - `fail(model, err)` stops one feed: its later events are ignored, the rest go on.
 * - `hold(model)` pauses a feed on the operator's word (`app.pause()`): from then on the feed
 *   has no room, exactly as when its window is full, so `push` returns false and `drain()` waits
 *   until `release(model)`. Nothing is dropped and nothing new is published: what the connector
 *   pushes meanwhile (it learns of the hold at its next push, so it may hand over what it had
 *   already read: one event, one transaction) is queued in the window but not issued; what was
 *   in flight before the hold is confirmed and committed. The checkpoint stays before the first
 *   held event; `release` issues the held events in order and reading goes on. At stop, held
 *   events are left unpublished and uncommitted: the next start reads them again. The
 *   datasource has one sink, so a held feed stops the reading of every feed of its datasource
 *   (as a full window does): one PostgreSQL slot, one binlog stream. A hold lasts until
 *   released or the process stops (it is not saved). Holding a held feed, or releasing one that
 *   is not, changes nothing (both return false).
 */
import { randomUUID } from 'node:crypto';
import type { ChangeSink, ConnectorStatus, RawDeadLetter } from '../connectors/contract';
import { ErrorCode, EvpubError, isEvpubError, toError } from '../errors';
import type { ChangeEvent, Operation, Position } from '../events/change-event';
import type { EncodedEvent, Envelope } from '../events/envelopes/envelope';
import type { Logger } from '../logger';
import type { PublishOptions } from '../pubsub/adapter';
import type { Client } from '../pubsub/client';
import { backoffDelay } from '../util/retry';
import { assertTopic } from '../pubsub/topics';
import type { CheckpointTracker } from './checkpoint-tracker';
import {
  deadLetterEvent,
  deadLetterPayload,
  rawDeadLetterPayload,
  type DeadLetterEvent,
  type DeadLetterFailure,
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
  /** Bytes of encoded events a feed holds between push and commit (one event may exceed it). */
  maxInFlightBytes?: number;
  deadLetterTopic: string;
  /** Where dead letters go when not on each feed's own broker (`publisher.deadLetter.broker`). */
  deadLetterClient?: Client;
  /** Largest dead letter that still carries the original event (default: the feed's limit). */
  deadLetterMaxBytes?: number;
  /** Refusals of one event before it is dead-lettered (default: retried without end). */
  maxAttempts?: number;
  /** Dead letters in a row with one code before the feed fails (0: no limit; default 100). */
  deadLetterLimit?: number;
  logger: Logger;
  emit(status: PublisherStatus): void;
  /** Re-publish back-off in ms (defaults 100 .. 10000). */
  retry?: { initialDelay?: number; maxDelay?: number };
  /**
   * The tap: called once per event when the broker first confirmed it (in confirmation order;
   * not again for a re-publish after a retry), synchronously, with the payload as published.
   * Not called for dead letters (they are not the feed's events; the `dead-lettered` status
   * says them). A listener that throws is logged; the pipeline goes on. Absent: one branch.
   */
  onPublished?(published: PublishedEvent): void;
  /** Whether `onPublished` has a listener now: the event it gets is only built then. */
  tapping?(): boolean;
  /**
   * Cluster mode: whether this instance may still publish for the unit (its lease is valid:
   * `LeaseKeeper.valid()`). Checked right before every publish, retries included; once it
   * says false nothing more is sent (the events stay uncommitted, for the next owner to read
   * again) and the owner tears the pipeline down. Absent: always.
   */
  gate?(): boolean;
  /**
   * Headers added to every event where the broker carries headers (cluster mode: the
   * publishing instance and its lease epoch, `evpub-instance` and `evpub-epoch`).
   */
  headers?: Readonly<Record<string, string>>;
}

/** An event the broker confirmed, as the `onPublished` tap sees it. */
export interface PublishedEvent {
  /** `${datasource}/${model}`. */
  feed: string;
  model: string;
  datasource: string;
  topic: string;
  /** The payload as published (binary-mode CloudEvents: the data alone). Do not modify. */
  payload: Buffer;
  /** Set where the broker carries headers (the envelope's content type). */
  contentType?: string;
  eventId: string;
  key: string;
}

interface Entry {
  seq: number;
  /**
   * The event's identity, for a dead letter: not the event itself, whose values are garbage once
   * encoded (kept until the broker confirmed, they would outlive young-generation collections).
   * Undefined for raw input dead-lettered by the connector (`deadLetter` is true from the start).
   */
  event: DeadLetterEvent | undefined;
  /**
   * The source's commit time of the event, where the source gives one (`tx.commitTime`): the
   * start of an end-to-end latency sample. Undefined for dead letters made by the connector.
   */
  commitTime: string | undefined;
  topic: string;
  payload: Buffer;
  /** Bytes counted in the feed's window for this entry (its payload when queued). */
  size: number;
  options: PublishOptions;
  deadLetter: boolean;
  acked: boolean;
  /** Times the broker refused it (transiently); read against `maxAttempts`. */
  attempts: number;
  /**
   * For a dead letter that may carry its original: the same letter without it, for a broker
   * that refuses the letter as too large (its advertised limit can be below the one measured).
   */
  withoutOriginal?: () => Buffer;
  /** The feed generation the entry was last issued in; older settlements are stale. */
  generation: number;
}

type Mode = 'open' | 'backoff' | 'recovering';

interface Feed {
  spec: FeedSpec;
  ops: Set<Operation> | undefined;
  project: (e: ChangeEvent) => ChangeEvent;
  /** The topic checked last (renderers give the same string again for a model's runs). */
  validTopic: string | undefined;
  /**
   * Entries in push order from `head` on (the oldest not yet acked); slots before `head` are
   * cleared, so an acked entry (its event and payload) is garbage at once, not when the queue
   * is next compacted: held longer, it outlives young-generation collections and is promoted.
   */
  queue: (Entry | undefined)[];
  head: number;
  /** Sum of `size` of the queued entries (from `head` on). */
  bytes: number;
  mode: Mode;
  generation: number;
  attempt: number;
  recovering: Set<Entry>;
  timer: NodeJS.Timeout | undefined;
  /** Backpressure: the source was told to wait (window full or retrying). */
  paused: boolean;
  /** Paused by the operator (`hold`) until `release`; a feed with no room, whatever it holds. */
  held: boolean;
  /** Entries queued while held and not issued yet (the queue's tail), issued on release. */
  unissued: Set<Entry>;
  failed: Error | undefined;
  /**
   * Dead letters in a row with one code, in source order: `lastSeq` is the last one's sequence
   * number; an event after it that is published (or still in flight) breaks the streak.
   */
  streak: { code: string; count: number; lastSeq: number };
  stats: { received: number; published: number; deadLettered: number; filtered: number; retries: number };
  /** `stats.published` by operation: they add up to it. */
  publishedOps: Record<Operation, number>;
  /** When the last `published` status was emitted (they are at most one a second per feed). */
  countsAt: number;
}

const COUNTS_INTERVAL_MS = 1000;
const EMPTY = Buffer.alloc(0);
export const DEFAULT_MAX_IN_FLIGHT_BYTES = 16 * 1024 * 1024;
export const DEFAULT_DEAD_LETTER_LIMIT = 100;

/** The codes of a broker's refusal of one message (`src/pubsub/adapter.ts`, point 4). */
const REFUSAL_CODES = new Set<string>([
  ErrorCode.INVALID_TOPIC,
  ErrorCode.PAYLOAD_TOO_LARGE,
  ErrorCode.NOT_AUTHORIZED,
  ErrorCode.NO_DESTINATION,
  ErrorCode.PUBLISH_FAILED,
]);

/** Codes of failing to reach the broker at all: not an attempt the broker answered. */
const OUTAGE_CODES = new Set<string>([
  ErrorCode.PUBLISH_TIMEOUT,
  ErrorCode.DISCONNECTED,
  ErrorCode.CONNECT_FAILED,
  ErrorCode.CLIENT_CLOSED,
]);

/** True when the publish never reached a broker that could answer (an outage, not a refusal). */
export function isOutage(err: Error): boolean {
  return isEvpubError(err) && OUTAGE_CODES.has(err.code);
}

const KNOWN_CODES = new Set<string>(Object.values(ErrorCode));
function isKnownCode(code: string): code is ErrorCode {
  return KNOWN_CODES.has(code);
}

/** True when the broker refused this message for good: it would refuse it again as it is. */
export function isRefusal(err: unknown): err is EvpubError {
  return isEvpubError(err) && !err.retriable && REFUSAL_CODES.has(err.code);
}

/** The broker's own reason and code of a refusal, from the adapter's error context. */
export function brokerWords(err: Error): { brokerReason?: string; brokerCode?: string | number } {
  if (!isEvpubError(err)) return {};
  const { brokerReason, brokerCode } = err.context;
  return {
    ...(typeof brokerReason === 'string' ? { brokerReason } : {}),
    ...(typeof brokerCode === 'string' || typeof brokerCode === 'number' ? { brokerCode } : {}),
  };
}

export interface FeedSnapshot {
  inFlight: number;
  inFlightBytes: number;
  mode: Mode;
  /** Backpressure: the source waits for this feed's window (or its retry). */
  paused: boolean;
  /** Paused by the operator (`app.pause()`): the datasource is not read until resumed. */
  held: boolean;
  failed?: string;
  failedCode?: string;
  received: number;
  published: number;
  deadLettered: number;
  filtered: number;
  retries: number;
  /** `published` by operation (a copy): they add up to it. */
  publishedOps: Record<Operation, number>;
}

/** A count per operation, every one at zero. */
function opCounts(): Record<Operation, number> {
  return { create: 0, update: 0, delete: 0, snapshot: 0, truncate: 0 };
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
  private readonly maxBytes: number;
  private readonly resumeAtBytes: number;
  private readonly deadLetterLimit: number;

  constructor(private readonly options: PipelineOptions) {
    this.resumeAt = options.maxInFlight - Math.max(1, Math.floor(options.maxInFlight / 4));
    this.maxBytes = options.maxInFlightBytes ?? DEFAULT_MAX_IN_FLIGHT_BYTES;
    this.resumeAtBytes = Math.floor((this.maxBytes * 3) / 4);
    this.deadLetterLimit = options.deadLetterLimit ?? DEFAULT_DEAD_LETTER_LIMIT;
    for (const spec of options.feeds) {
      this.feeds.set(spec.model, {
        spec,
        ops: spec.ops && spec.ops.length > 0 ? new Set(spec.ops) : undefined,
        project: fieldProjector(spec),
        queue: [],
        head: 0,
        bytes: 0,
        mode: 'open',
        generation: 0,
        attempt: 0,
        recovering: new Set(),
        timer: undefined,
        paused: false,
        held: false,
        unissued: new Set(),
        failed: undefined,
        streak: { code: '', count: 0, lastSeq: -1 },
        stats: { received: 0, published: 0, deadLettered: 0, filtered: 0, retries: 0 },
        publishedOps: opCounts(),
        countsAt: Date.now(),
        validTopic: undefined,
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
    if (feed.failed) return this.hasRoom(); // its dead letter went over deadLetterLimit
    this.enqueue(feed, entry);
    return this.roomAfterPush(feed);
  }

  /** Queues an entry at the feed's tail and issues it unless the feed is held or backing off. */
  private enqueue(feed: Feed, entry: Entry): void {
    entry.size = entry.payload.length;
    feed.bytes += entry.size;
    feed.queue.push(entry);
    if (feed.held) feed.unissued.add(entry);
    else if (feed.mode !== 'backoff') this.issue(feed, entry);
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
    const seq = spec.tracker.push(position);
    if (!this.countDeadLetter(feed, seq, code, raw.reason)) return this.hasRoom();
    const features = this.deadLetterClient(feed).adapter.features;
    const id = randomUUID();
    const input = {
      datasource: this.options.datasource,
      model,
      position,
      ...(raw.source ? { source: raw.source } : {}),
    };
    const original = { payload: raw.payload, ...(raw.headers ? { headers: raw.headers } : {}) };
    const failure = { code, reason: raw.reason };
    const entry: Entry = {
      seq,
      event: undefined,
      commitTime: undefined,
      topic: this.options.deadLetterTopic,
      payload: rawDeadLetterPayload(input, failure, original, this.deadLetterBytes(feed)),
      withoutOriginal: () => rawDeadLetterPayload(input, failure, original, 0),
      size: 0,
      options: { messageId: `${id}:dead-letter` },
      deadLetter: true,
      acked: false,
      attempts: 0,
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
    this.enqueue(feed, entry);
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
    if (feed.timer) clearTimeout(feed.timer);
    feed.timer = undefined;
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
  // Operator pause

  /** Pauses a feed until `release` (see the protocol above). False when it already was held. */
  hold(model: string): boolean {
    const feed = this.feeds.get(model);
    if (!feed || feed.held) return false;
    feed.held = true;
    this.options.emit({ type: 'feed-paused', feed: feed.spec.feedId, datasource: this.options.datasource });
    return true;
  }

  /** Lets a held feed read on, from where it stopped. False when it was not held. */
  release(model: string): boolean {
    const feed = this.feeds.get(model);
    if (!feed || !feed.held) return false;
    feed.held = false;
    const held = [...feed.unissued];
    feed.unissued.clear();
    this.options.emit({ type: 'feed-resumed', feed: feed.spec.feedId, datasource: this.options.datasource });
    // Backing off: the coming re-publish issues them with the rest.
    if (!this.closed && !feed.failed && feed.mode !== 'backoff') {
      for (const entry of held) {
        if (feed.mode === 'recovering') feed.recovering.add(entry);
        this.issue(feed, entry);
      }
    }
    this.wake();
    return true;
  }

  /** The feeds (by model) the operator holds. */
  heldModels(): string[] {
    return [...this.feeds.values()].filter((f) => f.held).map((f) => f.spec.model);
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
      commitTime: event.tx?.commitTime,
      topic: '',
      payload: EMPTY,
      size: 0,
      options,
      deadLetter: false,
      acked: false,
      attempts: 0,
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
      if (entry.topic !== feed.validTopic) {
        assertTopic(entry.topic);
        feed.validTopic = entry.topic;
      }
    } catch (err) {
      const reason = isEvpubError(err) ? err : toError(err);
      const code = isEvpubError(err) ? err.code : ErrorCode.PUBLISH_FAILED;
      entry.event = deadLetterEvent(event);
      this.toDeadLetter(feed, entry, { code, reason: reason.message }, encoded);
      return entry;
    }
    entry.payload = encoded.payload;
    entry.event = deadLetterEvent(event);
    if (features.headers) {
      options.contentType = encoded.contentType;
      const extra = this.options.headers;
      if (encoded.headers) options.headers = extra ? { ...encoded.headers, ...extra } : encoded.headers;
      else if (extra) options.headers = extra;
    }
    return entry;
  }

  /**
   * Turns an event's entry into its dead letter (published to the dead-letter topic in its
   * place). False, with the feed failed, when that would be one dead letter too many in a row.
   */
  private toDeadLetter(
    feed: Feed,
    entry: Entry,
    failure: DeadLetterFailure,
    encoded: EncodedEvent | undefined,
  ): boolean {
    const event = entry.event;
    if (!event) return true; // raw input: already a dead letter
    const { code, reason } = failure;
    if (!this.countDeadLetter(feed, entry.seq, code, reason)) return false;
    const intended = entry.topic === '' ? undefined : entry.topic;
    const letter = { ...failure, topic: intended, envelope: feed.spec.envelope.name };
    entry.payload = deadLetterPayload(event, letter, encoded, this.deadLetterBytes(feed));
    if (encoded) entry.withoutOriginal = () => deadLetterPayload(event, letter, encoded, 0);
    entry.topic = this.options.deadLetterTopic;
    const features = this.deadLetterClient(feed).adapter.features;
    entry.options = { messageId: `${event.id}:dead-letter` };
    if (features.orderingKey) entry.options.key = event.key;
    if (features.headers) entry.options.contentType = 'application/json';
    entry.deadLetter = true;
    const { brokerReason, attempts } = failure;
    this.options.logger.warn(
      { feed: feed.spec.feedId, eventId: event.id, key: event.key, code, reason, brokerReason, attempts },
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
    return true;
  }

  /**
   * Counts a dead letter in the feed's streak (dead letters in a row with one code). Past
   * `deadLetterLimit` the feed fails instead: a refusal of every event (the connection is not
   * authorized, the stream does not exist) must not empty the source into the dead-letter topic.
   */
  private countDeadLetter(feed: Feed, seq: number, code: string, reason: string): boolean {
    const streak = feed.streak;
    if (streak.code === code && streak.count > 0 && !this.eventInFlightBetween(feed, streak.lastSeq, seq)) {
      streak.count++;
      streak.lastSeq = seq;
    } else {
      feed.streak = { code, count: 1, lastSeq: seq };
    }
    const limit = this.deadLetterLimit;
    if (limit === 0 || feed.streak.count <= limit) return true;
    this.fail(
      feed.spec.model,
      new EvpubError(
        isKnownCode(code) ? code : ErrorCode.PUBLISH_FAILED,
        `${limit} events in a row went to the dead-letter topic with ${code} (the last: ${reason}); ` +
          `the feed is stopped rather than sending every event there. Fix the cause (the broker's ` +
          `permissions, a missing stream, ...) and start again: nothing after the last published ` +
          `event is committed. Raise publisher.deadLetterLimit (0: no limit) if this many is expected`,
        { context: { feed: feed.spec.feedId, code, deadLetterLimit: limit } },
      ),
    );
    return false;
  }

  /**
   * True when an event between sequence numbers `after` and `before` is still in flight to its
   * topic: it may yet be published, so dead letters on either side of it are not in a row. (An
   * event there already published reset the streak when it was confirmed.)
   */
  private eventInFlightBetween(feed: Feed, after: number, before: number): boolean {
    for (let i = feed.head; i < feed.queue.length; i++) {
      const entry = feed.queue[i]!;
      if (entry.seq >= before) break;
      if (entry.seq > after && !entry.acked && !entry.deadLetter) return true;
    }
    return false;
  }

  private deadLetterClient(feed: Feed): Client {
    return this.options.deadLetterClient ?? feed.spec.client;
  }

  private deadLetterBytes(feed: Feed): number {
    return this.options.deadLetterMaxBytes ?? feed.spec.maxEventBytes;
  }

  // -------------------------------------------------------------------------------------------
  // Publishing, acks and retries

  private issue(feed: Feed, entry: Entry): void {
    if (this.options.gate && !this.options.gate()) return; // the lease is gone: see `gate`
    const generation = feed.generation;
    entry.generation = generation;
    const client = entry.deadLetter ? this.deadLetterClient(feed) : feed.spec.client;
    client.publish(entry.topic, entry.payload, entry.options).then(
      () => this.onConfirmed(feed, entry, generation),
      (err: unknown) => this.onFailed(feed, entry, generation, toError(err)),
    );
  }

  private onConfirmed(feed: Feed, entry: Entry, generation: number): void {
    if (!entry.acked) {
      entry.acked = true;
      if (entry.deadLetter) feed.stats.deadLettered++;
      else {
        feed.stats.published++;
        if (entry.event) feed.publishedOps[entry.event.op]++;
        if (entry.seq > feed.streak.lastSeq) feed.streak.count = 0;
        if (this.options.onPublished && this.options.tapping?.() !== false) this.tap(feed, entry);
      }
      feed.spec.tracker.ack(entry.seq);
      this.popAcked(feed);
      if (Date.now() - feed.countsAt >= COUNTS_INTERVAL_MS) this.emitCounts(feed, entry);
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

  /** Hands a confirmed event to `onPublished`; a throwing listener is logged, never rethrown. */
  private tap(feed: Feed, entry: Entry): void {
    const event = entry.event;
    if (!event) return;
    try {
      this.options.onPublished!({
        feed: feed.spec.feedId,
        model: feed.spec.model,
        datasource: this.options.datasource,
        topic: entry.topic,
        payload: entry.payload,
        ...(entry.options.contentType ? { contentType: entry.options.contentType } : {}),
        eventId: event.id,
        key: event.key,
      });
    } catch (err) {
      this.options.logger.error(
        { err: toError(err), feed: feed.spec.feedId, eventId: event.id },
        'an onPublished listener threw; the event is published all the same',
      );
    }
  }

  private onFailed(feed: Feed, entry: Entry, generation: number, err: Error): void {
    // Stale (a retry re-publishes it), stopped, or the feed failed: nothing more to do.
    if (generation !== feed.generation || this.closed || feed.failed) return;
    if (entry.deadLetter) {
      if (!isRefusal(err)) return this.scheduleRetry(feed, err);
      if (err.code === ErrorCode.PAYLOAD_TOO_LARGE && entry.withoutOriginal) {
        // The letter with its original is too large for this broker: send it without.
        const smaller = entry.withoutOriginal();
        entry.withoutOriginal = undefined;
        if (smaller.length < entry.payload.length) {
          entry.payload = smaller;
          return this.issue(feed, entry);
        }
      }
      // Even the dead letter is refused (a dead-letter topic this broker will not take).
      return this.fail(
        feed.spec.model,
        new EvpubError(
          err.code,
          `the dead letter could not be published to ${JSON.stringify(entry.topic)}: ${err.message}; ` +
            `the feed is stopped rather than dropping the event (check publisher.deadLetter)`,
          { cause: err, context: { ...err.context, feed: feed.spec.feedId } },
        ),
      );
    }
    let failure: DeadLetterFailure | undefined;
    if (isRefusal(err)) {
      failure = { code: err.code, reason: err.message, ...brokerWords(err) };
    } else if (this.options.maxAttempts !== undefined && !isOutage(err)) {
      entry.attempts++;
      if (entry.attempts >= this.options.maxAttempts) {
        failure = {
          code: isEvpubError(err) ? err.code : ErrorCode.PUBLISH_FAILED,
          reason: `given up after ${entry.attempts} attempts (publisher.maxAttempts): ${err.message}`,
          attempts: entry.attempts,
          ...brokerWords(err),
        };
      }
    }
    if (!failure) return this.scheduleRetry(feed, err);
    const original = {
      payload: entry.payload,
      contentType: entry.options.contentType ?? 'application/octet-stream',
      ...(entry.options.headers ? { headers: entry.options.headers } : {}),
    };
    if (this.toDeadLetter(feed, entry, failure, original)) this.issue(feed, entry);
  }

  private scheduleRetry(feed: Feed, err: Error): void {
    feed.generation++;
    feed.mode = 'backoff';
    feed.attempt++;
    feed.stats.retries++;
    const delayMs = backoffDelay(feed.attempt, {
      initialDelay: this.options.retry?.initialDelay ?? 100,
      maxDelay: this.options.retry?.maxDelay ?? 10_000,
    });
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
    if (this.closed || feed.failed) return;
    feed.mode = 'recovering';
    feed.recovering = new Set();
    for (let i = feed.head; i < feed.queue.length; i++) {
      const entry = feed.queue[i]!;
      if (feed.unissued.has(entry)) break; // held: the tail waits for release
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
    while (feed.head < queue.length && queue[feed.head]!.acked) {
      feed.bytes -= queue[feed.head]!.size;
      queue[feed.head++] = undefined;
    }
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
    if (feed.held || feed.mode !== 'open') return false;
    const inFlight = feed.queue.length - feed.head;
    if (feed.paused) return inFlight <= this.resumeAt && feed.bytes <= this.resumeAtBytes;
    return inFlight < this.options.maxInFlight && feed.bytes < this.maxBytes;
  }

  private hasRoom(): boolean {
    if (this.closed) return true;
    for (const feed of this.feeds.values()) if (!this.feedHasRoom(feed)) return false;
    return true;
  }

  private roomAfterPush(feed: Feed): boolean {
    if (feed.held) return false; // told once, by `feed-paused`; not a backpressure pause
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

  /** `confirmed`: the entry whose confirmation emits the counts (its commit time is a latency sample). */
  private emitCounts(feed: Feed, confirmed?: Entry): void {
    feed.countsAt = Date.now();
    const { published, deadLettered, filtered } = feed.stats;
    const inFlight = feed.queue.length - feed.head;
    const sourceTime = confirmed && !confirmed.deadLetter ? confirmed.commitTime : undefined;
    this.options.emit({
      type: 'published',
      feed: feed.spec.feedId,
      published,
      publishedOps: { ...feed.publishedOps },
      deadLettered,
      filtered,
      inFlight,
      ...(sourceTime === undefined ? {} : { sourceTime }),
    });
  }

  /** Emits the `published` counters of every feed now (at stop). */
  emitAllCounts(): void {
    for (const feed of this.feeds.values()) this.emitCounts(feed);
  }

  // -------------------------------------------------------------------------------------------
  // Shutdown and inspection

  /**
   * Every feed has nothing in flight, or failed (what it holds is left uncommitted); a held
   * feed's unissued events do not count (left uncommitted, read again at the next start).
   */
  private isIdle(): boolean {
    for (const feed of this.feeds.values()) {
      if (!feed.failed && feed.queue.length - feed.head > feed.unissued.size) return false;
    }
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
      inFlightBytes: feed.bytes,
      mode: feed.mode,
      paused: feed.paused,
      held: feed.held,
      ...feed.stats,
      publishedOps: { ...feed.publishedOps },
    };
    if (feed.failed) {
      out.failed = feed.failed.message;
      out.failedCode = isEvpubError(feed.failed) ? feed.failed.code : ErrorCode.SOURCE_FAILED;
    }
    return out;
  }

  models(): string[] {
    return [...this.feeds.keys()];
  }
}
