/**
 * `app.publishChange(change)`: a change event made by the application itself (the LoopBack
 * repository mixin's `direct` mode, src/loopback/repository/), published exactly as a feed of
 * the same model publishes what its connector captures: the model's datasource name, operation
 * filter (`ops`), fields (`include` / `exclude`), envelope, topic template and broker.
 *
 * Protocol:
 * - `publish(change)` resolves once the broker confirmed the event (`published`), or confirmed
 *   its dead letter (`dead-lettered`), or at once when the model's `ops` leave the operation
 *   out (`filtered`). It rejects with an EvpubError: FEED_NOT_FOUND for a model the
 *   configuration does not have, CONFIG_INVALID for a change naming another datasource than
 *   the model's, the broker's error when even the dead letter is refused for good, and
 *   INVALID_STATE when the app stops before the event was confirmed.
 * - Failures as in the pipeline (src/pipeline/pipeline.ts): an event that cannot be encoded,
 *   is too large or that the broker refuses for good goes to the dead-letter topic with its
 *   reason; an event refused `publisher.maxAttempts` times too; a failure to reach the broker
 *   is retried with the pipeline's back-off until the app stops (never dead-lettered).
 * - What differs from a feed: there is no position and no checkpoint (the change is not read
 *   from a log: a process that dies before the broker confirmed loses the event; the outbox
 *   mode is the durable path), changes published concurrently are not ordered among
 *   themselves (each call is independent), `deadLetterLimit` does not apply, and the feed's
 *   counters in the status do not count them (the `app.events()` tap does see them).
 */
import { ErrorCode, EvpubError, isEvpubError, toError } from '../errors';
import type { ChangeEvent, Operation, Position } from '../events/change-event';
import type { EncodedEvent, Envelope } from '../events/envelopes/envelope';
import type { Logger } from '../logger';
import { deadLetterEvent, deadLetterPayload, type DeadLetterFailure } from '../pipeline/dead-letter';
import { brokerWords, isOutage, isRefusal, type PublishedEvent } from '../pipeline/pipeline';
import type { PublisherStatus } from '../pipeline/status';
import type { TopicRenderer } from '../pipeline/topics';
import type { PublishOptions } from '../pubsub/adapter';
import type { Client } from '../pubsub/client';
import { assertTopic } from '../pubsub/topics';
import { backoffDelay, sleepUnlessStopped } from '../util/retry';

/** A change to publish: a change event whose datasource and position the app fills in. */
export type ChangeToPublish = Omit<ChangeEvent, 'datasource' | 'position'> & {
  /** The model's datasource (filled in when absent; another name is an error). */
  datasource?: string;
  position?: Position | null;
};

export interface PublishChangeResult {
  outcome: 'published' | 'dead-lettered' | 'filtered';
  /** The topic the event was (or would have been) published to. */
  topic: string;
}

/** Everything a feed of the model publishes with (the runtime builds it from the configuration). */
export interface ChangeTarget {
  datasource: string;
  model: string;
  client: Client;
  envelope: Envelope;
  topic: TopicRenderer;
  ops?: readonly Operation[];
  project: (event: ChangeEvent) => ChangeEvent;
  maxEventBytes: number;
  deadLetterTopic: string;
  deadLetterClient: Client;
  deadLetterMaxBytes: number;
}

export interface ChangePublisherOptions {
  target(model: string): ChangeTarget | undefined;
  models(): string[];
  logger: Logger;
  retry?: { initialDelay?: number; maxDelay?: number };
  maxAttempts?: number;
  emit(status: PublisherStatus): void;
  onPublished?: (published: PublishedEvent) => void;
  tapping?: () => boolean;
}

export class ChangePublisher {
  private readonly stopped = new AbortController();

  constructor(private readonly options: ChangePublisherOptions) {}

  async publish(change: ChangeToPublish): Promise<PublishChangeResult> {
    const target = this.options.target(change.model);
    if (!target) {
      throw new EvpubError(
        ErrorCode.FEED_NOT_FOUND,
        `app.publishChange(): no model ${JSON.stringify(change.model)} in the configuration; the models are ${
          this.options.models().join(', ') || '(none)'
        }. Declare it (app.model() or models.${change.model}) with the topic and envelope its events use`,
        { context: { model: change.model } },
      );
    }
    if (change.datasource !== undefined && change.datasource !== target.datasource) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `app.publishChange(): model ${change.model} belongs to datasource ${target.datasource}, not ${change.datasource}`,
        { context: { model: change.model, datasource: change.datasource } },
      );
    }
    const event: ChangeEvent = {
      ...change,
      datasource: target.datasource,
      position: change.position ?? null,
    };
    let topic = '';
    if (target.ops && target.ops.length > 0 && !target.ops.includes(event.op)) {
      try {
        topic = target.topic(event);
      } catch {
        // filtered all the same: the topic is only told
      }
      return { outcome: 'filtered', topic };
    }
    const features = target.client.adapter.features;
    const options: PublishOptions = {};
    if (features.orderingKey) options.key = event.key;
    if (features.deduplicates || !target.envelope.carriesId) options.messageId = event.id;
    let encoded: EncodedEvent | undefined;
    try {
      topic = target.topic(event);
      encoded = target.envelope.encode(target.project(event));
      if (encoded.payload.length > target.maxEventBytes) {
        throw new EvpubError(
          ErrorCode.PAYLOAD_TOO_LARGE,
          `the encoded event is ${encoded.payload.length} bytes, more than the limit of ${target.maxEventBytes}`,
        );
      }
      assertTopic(topic);
    } catch (err) {
      const code = isEvpubError(err) ? err.code : ErrorCode.PUBLISH_FAILED;
      return this.deadLetter(target, event, topic, { code, reason: toError(err).message }, encoded);
    }
    if (features.headers) {
      options.contentType = encoded.contentType;
      if (encoded.headers) options.headers = encoded.headers;
    }
    const payload = encoded.payload;
    const failure = await this.send(target.client, topic, payload, options, event, true);
    if (failure) return this.deadLetter(target, event, topic, failure, encoded);
    this.tap(target, event, topic, payload, options);
    return { outcome: 'published', topic };
  }

  /** Ends the retries in progress: their `publish` rejects with INVALID_STATE. */
  stop(): void {
    this.stopped.abort();
  }

  /**
   * Publishes until the broker confirms (undefined), retrying what may pass later; the failure
   * that sends the event to the dead-letter topic instead (a refusal, `maxAttempts`) when
   * `refusable`; throws when stopped, or (not `refusable`: a dead letter) when refused for good.
   */
  private async send(
    client: Client,
    topic: string,
    payload: Buffer,
    options: PublishOptions,
    event: ChangeEvent,
    refusable: boolean,
  ): Promise<DeadLetterFailure | undefined> {
    const { logger, retry, maxAttempts } = this.options;
    let refusals = 0;
    for (let attempt = 1; ; attempt++) {
      this.assertRunning(event);
      try {
        await client.publish(topic, payload, options);
        return undefined;
      } catch (caught) {
        const err = toError(caught);
        if (isRefusal(err)) {
          if (!refusable) throw err;
          return { code: err.code, reason: err.message, ...brokerWords(err) };
        }
        if (refusable && maxAttempts !== undefined && !isOutage(err) && ++refusals >= maxAttempts) {
          return {
            code: isEvpubError(err) ? err.code : ErrorCode.PUBLISH_FAILED,
            reason: `given up after ${refusals} attempts (publisher.maxAttempts): ${err.message}`,
            attempts: refusals,
            ...brokerWords(err),
          };
        }
        const delayMs = backoffDelay(attempt, {
          initialDelay: retry?.initialDelay ?? 100,
          maxDelay: retry?.maxDelay ?? 10_000,
        });
        logger.warn(
          { err, model: event.model, eventId: event.id, attempt, delayMs },
          'publishChange: publish failed; retrying after a back-off',
        );
        await sleepUnlessStopped(delayMs, this.stopped.signal);
      }
    }
  }

  private assertRunning(event: ChangeEvent): void {
    if (this.stopped.signal.aborted) {
      throw new EvpubError(
        ErrorCode.INVALID_STATE,
        `app.publishChange(): the app stopped before the broker confirmed event ${event.id} of model ${event.model} (key ${event.key}); it was not published`,
        { context: { model: event.model, eventId: event.id, key: event.key } },
      );
    }
  }

  private async deadLetter(
    target: ChangeTarget,
    event: ChangeEvent,
    topic: string,
    failure: DeadLetterFailure,
    encoded: EncodedEvent | undefined,
  ): Promise<PublishChangeResult> {
    const letter = { ...failure, topic: topic === '' ? undefined : topic, envelope: target.envelope.name };
    const identity = deadLetterEvent(event);
    let payload = deadLetterPayload(identity, letter, encoded, target.deadLetterMaxBytes);
    const features = target.deadLetterClient.adapter.features;
    const options: PublishOptions = { messageId: `${event.id}:dead-letter` };
    if (features.orderingKey) options.key = event.key;
    if (features.headers) options.contentType = 'application/json';
    const feed = `${target.datasource}/${target.model}`;
    this.options.logger.warn(
      { feed, eventId: event.id, key: event.key, code: failure.code, reason: failure.reason },
      'publishChange: event dead-lettered',
    );
    try {
      await this.send(target.deadLetterClient, target.deadLetterTopic, payload, options, event, false);
    } catch (err) {
      if (!(isEvpubError(err) && err.code === ErrorCode.PAYLOAD_TOO_LARGE && encoded)) throw err;
      payload = deadLetterPayload(identity, letter, encoded, 0);
      await this.send(target.deadLetterClient, target.deadLetterTopic, payload, options, event, false);
    }
    this.options.emit({
      type: 'dead-lettered',
      feed,
      eventId: event.id,
      key: event.key,
      position: event.position,
      topic: target.deadLetterTopic,
      error: { code: failure.code, message: failure.reason },
    });
    return { outcome: 'dead-lettered', topic };
  }

  private tap(
    target: ChangeTarget,
    event: ChangeEvent,
    topic: string,
    payload: Buffer,
    options: PublishOptions,
  ): void {
    const { onPublished, tapping } = this.options;
    if (!onPublished || tapping?.() === false) return;
    try {
      onPublished({
        feed: `${target.datasource}/${target.model}`,
        model: target.model,
        datasource: target.datasource,
        topic,
        payload,
        ...(options.contentType ? { contentType: options.contentType } : {}),
        eventId: event.id,
        key: event.key,
      });
    } catch (err) {
      this.options.logger.error({ err: toError(err), eventId: event.id }, 'an onPublished listener threw');
    }
  }
}
