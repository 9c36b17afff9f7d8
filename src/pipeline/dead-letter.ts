/**
 * Dead letters: events that cannot be published as they are (the envelope cannot encode them,
 * they are larger than the broker or `publisher.maxEventBytes` allows, the broker refused them
 * for good: not authorized for the topic, no stream for it, an invalid topic or payload; or
 * they failed `publisher.maxAttempts` times) are published instead to the dead-letter topic
 * (default `evpub/dead-letter`, possibly on another broker) as one JSON object, and then count
 * as done: the stream goes on and nothing vanishes.
 *
 *   {
 *     "reason": "...", "code": "EVPUB_PAYLOAD_TOO_LARGE", "time": "<ISO 8601>",
 *     "brokerReason": "Not authorized", "brokerCode": 135,  // when the broker refused it
 *     "attempts": 5,                 // when it was given up after publisher.maxAttempts
 *     "event": { "id", "datasource", "model", "op", "key", "position", "sourceTime" },
 *     "topic": "<the topic it was meant for>", "envelope": "cloudevents",
 *     "originalBytes": 123,          // size of the encoded event, when it was encoded
 *     "original": "<encoded event>"  // only when the dead letter still fits the limit
 *     "contentType": "application/cloudevents+json",  // the original's, with the original
 *     "headers": { ... }             // the original's headers, with the original
 *   }
 *
 * Raw input a connector could not turn into an event at all (`ChangeSink.deadLetter`: not
 * JSON, does not decode, no key) is dead-lettered the same way, with no event fields:
 *
 *   {
 *     "reason": "not JSON: ...", "code": "EVPUB_MALFORMED_INPUT", "time": "<ISO 8601>",
 *     "input": { "datasource", "model", "position", "source": { ... } },
 *     "originalBytes": 12,
 *     "original": "<the input as UTF-8 text, or base64>",  // only when it fits the limit
 *     "originalEncoding": "base64",  // only when the input is not valid UTF-8
 *     "headers": { ... }             // the input's headers, with the original
 *   }
 */
import { isUtf8 } from 'node:buffer';
import type { ChangeEvent, Position } from '../events/change-event';
import type { EncodedEvent } from '../events/envelopes/envelope';

export const DEFAULT_DEAD_LETTER_TOPIC = 'evpub/dead-letter';

/** What a dead letter says of its event (all a publisher keeps of an event once encoded). */
export type DeadLetterEvent = Pick<
  ChangeEvent,
  'id' | 'datasource' | 'model' | 'op' | 'key' | 'position' | 'sourceTime'
>;

/** The event's fields a dead letter names, without its values. */
export function deadLetterEvent(event: ChangeEvent): DeadLetterEvent {
  const { id, datasource, model, op, key, position, sourceTime } = event;
  return { id, datasource, model, op, key, position, sourceTime };
}

/** Why an event is a dead letter. */
export interface DeadLetterFailure {
  code: string;
  reason: string;
  /** The broker's own words and code, when the broker refused the event. */
  brokerReason?: string;
  brokerCode?: string | number;
  /** Attempts made, when the event was given up after `publisher.maxAttempts`. */
  attempts?: number;
}

export function deadLetterPayload(
  event: DeadLetterEvent,
  failure: DeadLetterFailure & { topic?: string; envelope: string },
  encoded: EncodedEvent | undefined,
  limit: number,
): Buffer {
  const letter: Record<string, unknown> = {
    ...letterHead(failure),
    event: {
      id: event.id,
      datasource: event.datasource,
      model: event.model,
      op: event.op,
      key: event.key,
      position: event.position,
      sourceTime: event.sourceTime,
    },
    envelope: failure.envelope,
  };
  if (failure.topic !== undefined) letter.topic = failure.topic;
  if (!encoded) return Buffer.from(JSON.stringify(letter), 'utf8');
  letter.originalBytes = encoded.payload.length;
  const original: Record<string, unknown> = {
    original: encoded.payload.toString('utf8'),
    contentType: encoded.contentType,
  };
  if (encoded.headers) original.headers = encoded.headers;
  return withOriginalIfItFits(letter, original, limit);
}

/** The fields every dead letter starts with. */
function letterHead(failure: DeadLetterFailure): Record<string, unknown> {
  const head: Record<string, unknown> = {
    reason: failure.reason,
    code: failure.code,
    time: new Date().toISOString(),
  };
  if (failure.brokerReason !== undefined) head.brokerReason = failure.brokerReason;
  if (failure.brokerCode !== undefined) head.brokerCode = failure.brokerCode;
  if (failure.attempts !== undefined) head.attempts = failure.attempts;
  return head;
}

/** The letter with the original's fields when that fits in `limit` bytes, else the letter alone. */
function withOriginalIfItFits(
  letter: Record<string, unknown>,
  original: Record<string, unknown>,
  limit: number,
): Buffer {
  const full = Buffer.from(JSON.stringify({ ...letter, ...original }), 'utf8');
  if (full.length <= limit) return full;
  return Buffer.from(JSON.stringify(letter), 'utf8');
}

/** The dead letter of raw input that gave no event (shape in the module comment). */
export function rawDeadLetterPayload(
  input: {
    datasource: string;
    model: string;
    position: Position | null;
    source?: Readonly<Record<string, unknown>>;
  },
  failure: DeadLetterFailure,
  original: { payload: Buffer | string; headers?: Readonly<Record<string, string>> },
  limit: number,
): Buffer {
  const letter: Record<string, unknown> = {
    ...letterHead(failure),
    input: {
      datasource: input.datasource,
      model: input.model,
      position: input.position,
      ...(input.source ? { source: input.source } : {}),
    },
  };
  const bytes =
    typeof original.payload === 'string' ? Buffer.from(original.payload, 'utf8') : original.payload;
  letter.originalBytes = bytes.length;
  const fields: Record<string, unknown> = isUtf8(bytes)
    ? { original: bytes.toString('utf8') }
    : { original: bytes.toString('base64'), originalEncoding: 'base64' };
  if (original.headers) fields.headers = original.headers;
  return withOriginalIfItFits(letter, fields, limit);
}
