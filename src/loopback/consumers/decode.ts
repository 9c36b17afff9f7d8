/**
 * How a consumer's payload is decoded before its method sees it (`@subscribe(..., { decode })`).
 *
 * - `raw`: the Buffer as the broker delivered it.
 * - `json`: `JSON.parse` of the payload as UTF-8 (an empty payload is `undefined`).
 * - `cloudevent`: a CloudEvents 1.0 event as one object `{ specversion, id, source, type, ...,
 *   data }`, from either mode evpub publishes (src/events/envelopes/cloudevents.ts):
 *   structured (the payload is the whole event as JSON) or binary (the attributes are headers
 *   named by the broker's binding: `ce-`, `ce_`, `cloudEvents_`, or bare as MQTT 5 user
 *   properties; values percent-decoded; the payload is `data`, parsed when its content type is
 *   JSON). A payload that is neither fails to decode.
 * A payload that fails to decode throws an EvpubError MALFORMED_INPUT; the consumer treats it as
 * a failed call (logged, counted, not acknowledged).
 */
import { ErrorCode, EvpubError } from '../../errors';
import type { MessageMeta } from '../../pubsub/adapter';
import type { ConsumerDecode } from './decorator';

/** A CloudEvents 1.0 event as a consumer method receives it. */
export interface CloudEvent<T = unknown> {
  specversion: string;
  id: string;
  source: string;
  type: string;
  subject?: string;
  time?: string;
  datacontenttype?: string;
  data?: T;
  /** Extension attributes. */
  [attribute: string]: unknown;
}

const PREFIXES = ['ce-', 'ce_', 'cloudEvents_', ''] as const;

function malformed(topic: string, why: string, cause?: unknown): EvpubError {
  return new EvpubError(ErrorCode.MALFORMED_INPUT, `message on ${JSON.stringify(topic)}: ${why}`, {
    cause,
    context: { topic },
  });
}

function parseJson(payload: Buffer, topic: string): unknown {
  if (payload.length === 0) return undefined;
  try {
    return JSON.parse(payload.toString('utf8')) as unknown;
  } catch (err) {
    throw malformed(topic, 'the payload is not JSON (use decode: "raw" for other payloads)', err);
  }
}

function isJsonType(contentType: string | undefined): boolean {
  return contentType === undefined || /^application\/(?:[\w.+-]+\+)?json\b/i.test(contentType);
}

function headerValue(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

function fromHeaders(payload: Buffer, topic: string, meta: MessageMeta): CloudEvent | undefined {
  const headers = meta.headers;
  if (!headers) return undefined;
  const prefix = PREFIXES.find((p) => typeof headers[`${p}specversion`] === 'string');
  if (prefix === undefined) return undefined;
  const event: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (prefix !== '' && name.startsWith(prefix)) event[name.slice(prefix.length)] = headerValue(value);
  }
  if (prefix === '') {
    for (const name of ['specversion', 'id', 'source', 'type', 'subject', 'time', 'dataschema']) {
      if (headers[name] !== undefined) event[name] = headerValue(headers[name]);
    }
  }
  const contentType = meta.contentType ?? headers['content-type'] ?? headers['Content-Type'];
  if (contentType !== undefined) event.datacontenttype = contentType;
  event.data = isJsonType(contentType) ? parseJson(payload, topic) : payload;
  if (!isCloudEvent(event)) {
    throw malformed(
      topic,
      `the ${prefix || 'bare'} CloudEvent headers lack one of specversion, id, source, type`,
    );
  }
  return event;
}

function isCloudEvent(value: unknown): value is CloudEvent {
  if (value === null || typeof value !== 'object') return false;
  const v = value as Record<string, unknown>;
  return ['specversion', 'id', 'source', 'type'].every((k) => typeof v[k] === 'string');
}

export function decodePayload(
  decode: ConsumerDecode,
  payload: Buffer,
  topic: string,
  meta: MessageMeta,
): unknown {
  switch (decode) {
    case 'raw':
      return payload;
    case 'json':
      return parseJson(payload, topic);
    case 'cloudevent': {
      const binary = fromHeaders(payload, topic, meta);
      if (binary) return binary;
      const structured = parseJson(payload, topic);
      if (!isCloudEvent(structured)) {
        throw malformed(
          topic,
          'not a CloudEvent: no specversion/id/source/type in the JSON payload nor in ce- headers',
        );
      }
      return structured;
    }
  }
}
