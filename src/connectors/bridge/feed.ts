/**
 * One model of the bridge: a pub/sub client subscribed to the model's topics on the source
 * broker, whose messages become change events.
 *
 * Protocol:
 * 1. `open()` connects the client and subscribes (durable subscriptions with `ack: 'manual'`).
 * 2. Each message is queued and handled in arrival order: it gets the next sequence number of
 *    this process (position `<run>.<seq>`), is decoded by `format`, mapped, and pushed. A
 *    malformed message follows `onMalformed`; when skipped (the default) it goes to
 *    `sink.deadLetter()` with its reason and position, so it reaches the publisher's
 *    dead-letter topic and is acknowledged in turn, once that is committed, like an event.
 * 3. Acks (durable only): a message's `meta.ack()` is called only when `commit(position)`
 *    covers it, i.e. the publisher has published (and checkpointed) everything up to it. What
 *    was not acked when the process dies is redelivered by the source broker.
 * 4. Backpressure: while `push` returns false nothing is pushed; messages keep arriving where
 *    the source does not stop (plain pub/sub, or a durable mode that reads ahead) and wait in
 *    the queue. More than `maxBuffered` waiting fails the feed (`sink.fail`), never a silent
 *    drop. A redelivery of a message still held (same message id: an ack wait or claim timer
 *    expired while the publisher was slow, or while its ack was on its way) is dropped: the held
 *    one is acked in its turn.
 * 5. `stop()` stops handling messages (later ones are not acked, so a durable source keeps
 *    them), waits up to `stopTimeout` for the events already pushed to be committed (so that
 *    they are acked, not redelivered), then closes the client. It never unsubscribes: for
 *    AMQP that would remove the durable queue's bindings.
 */
import { randomBytes } from 'node:crypto';
import type { ChangeEvent, Position } from '../../events/change-event';
import { ErrorCode, EvpubError, toError } from '../../errors';
import type { Logger } from '../../logger';
import type { ClientOptions, MessageMeta } from '../../pubsub/adapter';
import type { Client } from '../../pubsub/client';
import { createClient } from '../../pubsub/registry';
import type { BridgeModelSettings, BridgeSettings } from './settings';
import type { ChangeSink } from '../contract';
import {
  MalformedCounter,
  mapMessage,
  matches,
  rawMapped,
  type MapContext,
  type Mapped,
} from '../kit/json-mapping';
import { drainUnlessStopped } from '../kit/waits';

export type FeedState = 'starting' | 'streaming' | 'reconnecting' | 'stopped' | 'failed';

export interface BridgeFeedOptions {
  settings: BridgeSettings;
  model: BridgeModelSettings;
  datasource: string;
  name: string;
  sink: ChangeSink;
  logger: Logger;
}

interface Incoming {
  topic: string;
  payload: Buffer;
  meta: MessageMeta;
}

interface Held {
  seq: number;
  messageId: string | undefined;
  ack: () => Promise<void>;
}

type Decoded = { message: unknown; context: MapContext } | { error: string; context: MapContext };

/** This process's run id: positions of one run never resume another (the bridge is not resumable). */
const RUN = randomBytes(4).toString('hex');

function header(meta: MessageMeta, name: string): string | undefined {
  if (!meta.headers) return undefined;
  for (const [k, v] of Object.entries(meta.headers)) if (k.toLowerCase() === name) return v;
  return undefined;
}

export class BridgeFeed {
  state: FeedState = 'starting';
  lastPushed: Position | null = null;
  readonly malformed = new MalformedCounter();
  ignored = 0;
  duplicates = 0;
  private readonly client: Client;
  private readonly queue: Incoming[] = [];
  /** Durable messages handed on and not yet acked, in sequence order. */
  private readonly held: Held[] = [];
  private readonly heldIds = new Set<string>();
  private seq = 0;
  private busy = false;
  private pumping: Promise<void> | undefined;
  private readonly stopper = new AbortController();
  private stopping: Promise<void> | undefined;
  private committedWaiters: (() => void)[] = [];

  constructor(private readonly o: BridgeFeedOptions) {
    const options: ClientOptions = { ...o.settings.options, logger: o.logger };
    if (typeof options.clientId === 'string') options.clientId = `${options.clientId}-${o.name}`;
    this.client = createClient(o.settings.url, options);
    this.client.on('message', (topic, payload, meta) => this.onMessage(topic, payload, meta));
    this.client.on('error', (err) => this.o.logger.warn({ err }, 'source broker error'));
    this.client.on('offline', () => {
      if (this.state !== 'streaming') return;
      this.state = 'reconnecting';
      this.o.sink.status({
        type: 'reconnecting',
        model: this.o.name,
        attempt: 1,
        error: 'source broker connection lost',
      });
    });
    this.client.on('reconnect', () => {
      if (this.state !== 'reconnecting') return;
      this.state = 'streaming';
      this.o.sink.status({ type: 'connected', model: this.o.name });
    });
  }

  get name(): string {
    return this.o.name;
  }

  private get durable(): boolean {
    return this.o.model.durable !== undefined;
  }

  private get stopped(): boolean {
    return this.stopper.signal.aborted;
  }

  /** Connects and subscribes; rejects with the client's EvpubError. */
  async open(): Promise<void> {
    const { topics, durable, groupStart } = this.o.model;
    await this.client.connect();
    await this.client.subscribe(
      topics,
      durable === undefined ? {} : { durable, ack: 'manual', from: groupStart },
    );
    if (this.stopped) return;
    this.state = 'streaming';
    this.o.sink.status({ type: 'connected', model: this.o.name });
    this.o.logger.info(
      { url: this.o.settings.displayUrl, topics, durable: durable ?? null },
      'bridge subscribed',
    );
  }

  // -------------------------------------------------------------------------------------------
  // Messages

  private onMessage(topic: string, payload: Buffer, meta: MessageMeta): void {
    if (this.stopped || this.state === 'failed') return; // not acked: a durable source redelivers it
    if (this.durable && meta.messageId !== undefined && this.heldIds.has(meta.messageId)) {
      this.duplicates += 1; // redelivered while still held: the held one is acked in its turn
      return;
    }
    if (this.durable && meta.messageId !== undefined) this.heldIds.add(meta.messageId);
    this.queue.push({ topic, payload, meta });
    if (this.queue.length > this.o.settings.maxBuffered) {
      this.failWith(
        new EvpubError(
          ErrorCode.SOURCE_FAILED,
          `bridge ${this.o.settings.displayUrl}: more than maxBuffered (${this.o.settings.maxBuffered}) messages ` +
            'wait for the publisher: the source broker does not stop sending. Use a durable subscription on a ' +
            'broker that bounds unacknowledged deliveries, or raise maxBuffered',
          { context: { model: this.o.name, topics: this.o.model.topics } },
        ),
      );
      return;
    }
    if (!this.busy) this.pumping = this.pump();
  }

  private async pump(): Promise<void> {
    this.busy = true;
    try {
      while (this.queue.length > 0 && !this.stopped && this.state !== 'failed') {
        if (this.handle(this.queue.shift()!)) continue;
        await this.drainOrStop();
      }
    } finally {
      this.busy = false;
    }
  }

  /** Handles one message; false when the sink is full. */
  private handle(incoming: Incoming): boolean {
    const seq = ++this.seq;
    const position = `${RUN}.${seq}`;
    const { meta } = incoming;
    if (this.durable) {
      this.held.push({ seq, messageId: meta.messageId, ack: () => meta.ack() });
    }
    const { mapping } = this.o.model;
    const decoded = this.decode(incoming);
    let mapped: Mapped | undefined;
    let error: string | undefined;
    if ('error' in decoded) error = decoded.error;
    else if (!matches(mapping, decoded.message)) {
      this.ignored += 1;
      this.o.sink.mark(this.o.name, position);
      return true;
    } else {
      try {
        mapped = mapMessage(mapping, decoded.message, decoded.context);
      } catch (err) {
        error = toError(err).message;
      }
    }
    if (error !== undefined) {
      if (mapping.onMalformed === 'fail') {
        this.failWith(
          new EvpubError(
            ErrorCode.SOURCE_FAILED,
            `bridge: malformed message on ${JSON.stringify(incoming.topic)}: ${error}`,
            {
              context: { model: this.o.name, topic: incoming.topic },
            },
          ),
        );
        return true;
      }
      if (this.malformed.shouldLog()) {
        this.o.logger.warn(
          {
            topic: incoming.topic,
            bytes: incoming.payload.length,
            err: error,
            malformed: this.malformed.count,
          },
          mapping.onMalformed === 'raw'
            ? 'malformed message published as raw'
            : 'malformed message skipped (dead-lettered)',
        );
      }
      if (mapping.onMalformed === 'skip') {
        this.lastPushed = position;
        return this.o.sink.deadLetter(this.o.name, {
          payload: incoming.payload,
          reason: `malformed message: ${error}`,
          code: ErrorCode.MALFORMED_INPUT,
          position,
          ...(meta.headers ? { headers: meta.headers } : {}),
          source: {
            topic: incoming.topic,
            ...(meta.messageId !== undefined ? { messageId: meta.messageId } : {}),
            ...(meta.redelivered ? { redelivered: true } : {}),
          },
        });
      }
      mapped = rawMapped(mapping, decoded.context);
    }
    const event: ChangeEvent = {
      ...mapped!,
      datasource: this.o.datasource,
      model: this.o.name,
      position,
      source: {
        topic: incoming.topic,
        ...(meta.messageId !== undefined ? { messageId: meta.messageId } : {}),
        ...(meta.redelivered ? { redelivered: true } : {}),
      },
    };
    this.lastPushed = position;
    return this.o.sink.push(event);
  }

  private decode({ topic, payload, meta }: Incoming): Decoded {
    const context: MapContext = {
      model: this.o.name,
      raw: payload,
      fallbackKey: meta.key ?? topic,
      ...(meta.messageId !== undefined ? { fallbackId: meta.messageId } : {}),
    };
    const format = this.o.model.format;
    if (format === 'raw') {
      const base64 = payload.toString('base64');
      context.record = { payload: base64, topic };
      return { message: { topic, payload: base64, key: meta.key, headers: meta.headers ?? {} }, context };
    }
    let parsed: unknown;
    let parseError: string | undefined;
    try {
      parsed = JSON.parse(payload.toString('utf8')) as unknown;
    } catch (err) {
      parseError = `not JSON: ${toError(err).message}`;
    }
    if (format === 'json')
      return parseError === undefined ? { message: parsed, context } : { error: parseError, context };
    // CloudEvents: structured (the JSON has specversion) or binary (ce-* headers, payload = data).
    let event: Record<string, unknown>;
    if (
      parseError === undefined &&
      parsed !== null &&
      typeof parsed === 'object' &&
      'specversion' in parsed
    ) {
      event = parsed;
    } else if (header(meta, 'ce-specversion') !== undefined || header(meta, 'ce_specversion') !== undefined) {
      event = {};
      for (const [k, v] of Object.entries(meta.headers ?? {})) {
        const name = k.toLowerCase();
        if (name.startsWith('ce-') || name.startsWith('ce_')) event[name.slice(3)] = v;
      }
      event.data = parseError === undefined ? parsed : payload.toString('utf8');
    } else {
      return { error: parseError ?? 'not a CloudEvent (no specversion, no ce-specversion header)', context };
    }
    const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
    context.record = 'data_base64' in event ? { raw: event.data_base64 } : event.data;
    const id = str(event.id);
    if (id !== undefined) context.fallbackId = `${str(event.source) ?? ''}\u0000${id}`;
    const time = str(event.time);
    if (time !== undefined && !Number.isNaN(Date.parse(time)))
      context.fallbackTime = new Date(time).toISOString();
    const subject = str(event.subject);
    if (subject !== undefined) context.fallbackKey = subject;
    return { message: event, context };
  }

  // -------------------------------------------------------------------------------------------
  // Acks

  /** Acks every held message up to `position` (this run's), in order. */
  async commit(position: Position): Promise<void> {
    const [run, n] = position.split('.');
    if (run !== RUN || n === undefined) return;
    const upTo = Number(n);
    const acks: Promise<void>[] = [];
    while (this.held.length > 0 && this.held[0]!.seq <= upTo) {
      const held = this.held.shift()!;
      // The id stays known until the ack is answered: a redelivery the source sends meanwhile
      // (its claim timer ran out while the ack was on its way) is still dropped.
      const forget = () => {
        if (held.messageId !== undefined) this.heldIds.delete(held.messageId);
      };
      acks.push(
        held.ack().then(forget, (err: unknown) => {
          forget();
          // Not acked: the source redelivers it later (a duplicate, never a loss).
          this.o.logger.warn({ err: toError(err), seq: held.seq }, 'ack to the source broker failed');
        }),
      );
    }
    if (this.held.length === 0) for (const resolve of this.committedWaiters.splice(0)) resolve();
    await Promise.all(acks);
  }

  // -------------------------------------------------------------------------------------------
  // Failing, waiting and stopping

  private failWith(err: EvpubError): void {
    if (this.state === 'failed') return;
    this.state = 'failed';
    this.queue.length = 0;
    this.o.sink.fail(this.o.name, err);
    // Closing (not unsubscribing: that would drop an AMQP durable queue's bindings) stops the
    // flow; what was delivered and not acked is redelivered by a durable source next time.
    this.client.end().catch(() => undefined);
  }

  /** Waits for room or stop; a failed drain is logged and reading goes on. */
  private drainOrStop(): Promise<void> {
    return drainUnlessStopped(this.o.sink, this.stopper.signal).catch((err: Error) => {
      this.o.logger.warn({ err }, 'drain failed');
    });
  }

  /** Resolves when every held message is acked, or after `ms`. */
  private allCommitted(ms: number): Promise<void> {
    if (this.held.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.committedWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (this.state !== 'failed') this.state = 'stopped';
      this.stopper.abort();
      this.queue.length = 0; // never pushed, never acked: redelivered by a durable source
      await this.pumping;
      if (this.client.state === 'connected' || this.client.state === 'offline') {
        // Messages arriving from now on are ignored (unacked, so redelivered). No unsubscribe:
        // for AMQP it would remove the durable queue's bindings.
        await this.allCommitted(this.o.settings.stopTimeout);
        if (this.held.length > 0) {
          this.o.logger.warn(
            { unacked: this.held.length },
            'stop: some messages were not committed in time; the source broker redelivers them (durable) next time',
          );
        }
      }
      await this.client.end();
    })();
    return this.stopping;
  }
}
