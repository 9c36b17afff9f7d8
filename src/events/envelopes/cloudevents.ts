/**
 * CloudEvents 1.0 envelopes (https://github.com/cloudevents/spec, v1.0.2).
 *
 * Attributes of every event:
 *
 *   specversion  "1.0"
 *   id           the change's idempotency key (`event.id`): replays carry the same id
 *   source       `/evpub/{datasource}/{model}`, a URI-reference; each segment percent-encoded
 *   type         `evpub.{model}.{op}`, e.g. `evpub.accounts.create`
 *   subject      the record key
 *   time         the source time of the change (RFC 3339)
 *   datacontenttype  application/json
 *   data         { op, key, before, after, position, tx?, source? }
 *
 * Structured mode (`cloudevents`): the whole event is one JSON object, content type
 * `application/cloudevents+json`. Binary mode (`cloudevents-binary`): the payload is `data`
 * alone and the attributes travel as headers named as the broker's CloudEvents protocol binding
 * says (`bindingPrefix`): `ce_<name>` on Kafka, `cloudEvents_<name>` on AMQP, the bare
 * `<name>` as MQTT 5 user properties, `ce-<name>` on NATS and elsewhere (as HTTP); values are
 * percent-encoded outside printable ASCII, with `content-type: application/json`. Binary
 * mode needs a broker that carries headers; elsewhere evpub falls back to structured mode and
 * says so once in the log.
 */
import type { Logger } from '../../logger';
import type { ChangeEvent } from '../change-event';
import type { EncodedEvent, Envelope } from './envelope';
import { toJson } from './json';

export const STRUCTURED_CONTENT_TYPE = 'application/cloudevents+json';
export const DATA_CONTENT_TYPE = 'application/json';

export interface CloudEventAttributes {
  specversion: '1.0';
  id: string;
  source: string;
  type: string;
  subject: string;
  time: string;
  datacontenttype: string;
}

/**
 * What is constant per (datasource, model), rendered once: the `source` attribute, and the JSON
 * text of `source` and of `type` for each operation (the structured envelope's fragments).
 */
interface ModelParts {
  datasource: string;
  model: string;
  source: string;
  sourceJson: string;
  typeJson: Map<string, string>;
}

const models = new Map<string, ModelParts>();
/** The parts used last: a feed's events come in runs of one model (no key to build then). */
let lastParts: ModelParts | undefined;

function modelParts(event: ChangeEvent): ModelParts {
  const { datasource, model } = event;
  if (lastParts !== undefined && lastParts.model === model && lastParts.datasource === datasource) {
    return lastParts;
  }
  const id = `${datasource}\u0000${model}`;
  let parts = models.get(id);
  if (parts === undefined) {
    const part = (name: string) => encodeURIComponent(name.replace(LONE_SURROGATE, '\ufffd'));
    const source = `/evpub/${part(datasource)}/${part(model)}`;
    parts = { datasource, model, source, sourceJson: JSON.stringify(source), typeJson: new Map() };
    if (models.size >= 10_000) models.clear(); // models are few; never grow without bound
    models.set(id, parts);
  }
  lastParts = parts;
  return parts;
}

export function ceAttributes(event: ChangeEvent): CloudEventAttributes {
  return {
    specversion: '1.0',
    id: event.id,
    source: modelParts(event).source,
    type: `evpub.${event.model}.${event.op}`,
    subject: event.key,
    time: event.sourceTime,
    datacontenttype: DATA_CONTENT_TYPE,
  };
}

export function ceData(event: ChangeEvent): Record<string, unknown> {
  const data: Record<string, unknown> = {
    op: event.op,
    key: event.key,
    before: event.before ?? null,
    after: event.after ?? null,
    position: event.position,
  };
  if (event.tx !== undefined) data.tx = event.tx;
  if (event.source !== undefined) data.source = event.source;
  return data;
}

/** What `JSON.stringify` escapes in a string (lone surrogates included, paired ones too here). */
// eslint-disable-next-line no-control-regex -- control characters are exactly what JSON escapes
const ESCAPED_IN_JSON = /["\\\u0000-\u001f\ud800-\udfff]/;

/** `JSON.stringify(text)`: the same text, without the call where nothing needs escaping. */
function jsonString(text: string): string {
  return ESCAPED_IN_JSON.test(text) ? JSON.stringify(text) : `"${text}"`;
}

/**
 * The structured event's JSON: the same text as `JSON.stringify` of the attributes object with
 * `data` as its last member, with the attributes written as fragments (the model's `source` and
 * `type` rendered once) and one `JSON.stringify` for `data`: the attributes were a third of the
 * serialiser's time. Undefined when an attribute is not a string (JSON would omit or render it
 * otherwise) or `data` is what `JSON.stringify` refuses (a BigInt): the caller encodes it the
 * general way.
 */
function structuredJson(event: ChangeEvent): string | undefined {
  const { id, key, sourceTime, op } = event;
  if (typeof id !== 'string' || typeof key !== 'string' || typeof sourceTime !== 'string') return undefined;
  const parts = modelParts(event);
  let type = parts.typeJson.get(op);
  if (type === undefined) {
    type = JSON.stringify(`evpub.${event.model}.${op}`);
    parts.typeJson.set(op, type);
  }
  let data;
  try {
    data = JSON.stringify(ceData(event));
  } catch {
    return undefined; // a BigInt, a cycle, nesting too deep: the general path says which
  }
  const subject = jsonString(key);
  return (
    `{"specversion":"1.0","id":${jsonString(id)},"source":${parts.sourceJson},"type":${type}` +
    `,"subject":${subject},"time":${jsonString(sourceTime)},"datacontenttype":"${DATA_CONTENT_TYPE}"` +
    `,"data":${data}}`
  );
}

export const structuredEnvelope: Envelope = {
  name: 'cloudevents',
  carriesId: true,
  encode(event: ChangeEvent): EncodedEvent {
    let text = structuredJson(event);
    if (text === undefined) {
      // The attributes object plus `data` (not a spread into a new object): one object and one
      // shape for every event.
      const body: CloudEventAttributes & { data?: Record<string, unknown> } = ceAttributes(event);
      body.data = ceData(event);
      text = toJson(body, event);
    }
    return { payload: Buffer.from(text, 'utf8'), contentType: STRUCTURED_CONTENT_TYPE };
  },
};

/** A lone surrogate (half of a pair without its other half): UTF-8 cannot carry it. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/**
 * Percent-encodes what a header value may not carry: `%`, `"`, and anything outside 0x20..0x7E
 * (as UTF-8). A lone surrogate, which has no UTF-8, becomes U+FFFD (`%EF%BF%BD`) in the header;
 * the payload keeps the exact value.
 */
export function encodeHeaderValue(value: string): string {
  return (
    value
      .replace(LONE_SURROGATE, '\ufffd')
      // eslint-disable-next-line no-control-regex -- control characters are exactly what must be escaped
      .replace(/[%"\u0000-\u001f\u007f-\uffff]+/g, (s) => encodeURIComponent(s).replace(/"/g, '%22'))
  );
}

/** The attribute header prefix of each broker's CloudEvents binding, by adapter name. */
export function bindingPrefix(adapter: string): string {
  switch (adapter) {
    case 'kafka':
      return 'ce_';
    case 'amqp':
      return 'cloudEvents_';
    case 'mqtt':
      return '';
    default:
      return 'ce-';
  }
}

/** Binary mode with attribute headers named `<prefix><attribute>`. */
export function binaryEnvelopeWith(prefix: string): Envelope {
  return {
    name: 'cloudevents-binary',
    carriesId: true,
    encode(event: ChangeEvent): EncodedEvent {
      const attributes = ceAttributes(event);
      const headers: Record<string, string> = { 'content-type': DATA_CONTENT_TYPE };
      for (const [name, value] of Object.entries(attributes) as [string, string][]) {
        if (name === 'datacontenttype') continue; // carried as content-type
        headers[prefix + name] = encodeHeaderValue(value);
      }
      const payload = Buffer.from(toJson(ceData(event), event), 'utf8');
      return { payload, headers, contentType: DATA_CONTENT_TYPE };
    },
  };
}

/** Binary mode with `ce-` headers (HTTP, NATS). */
export const binaryEnvelope: Envelope = binaryEnvelopeWith('ce-');

/**
 * Binary mode where the broker carries headers, structured mode elsewhere (logged once per
 * envelope made here, i.e. once per feed).
 */
export function binaryOrStructured(
  brokerHasHeaders: boolean,
  logger: Logger,
  broker: string,
  adapter = '',
): Envelope {
  if (brokerHasHeaders) return binaryEnvelopeWith(bindingPrefix(adapter));
  let warned = false;
  return {
    name: 'cloudevents',
    carriesId: true,
    encode(event) {
      if (!warned) {
        warned = true;
        logger.warn(
          { broker, model: event.model },
          'envelope cloudevents-binary needs a broker with headers; publishing structured CloudEvents instead',
        );
      }
      return structuredEnvelope.encode(event);
    },
  };
}
