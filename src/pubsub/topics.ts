/**
 * evpub's one topic syntax and the rules that carry it to each broker.
 *
 * A topic is a string of levels separated by `/`. Levels may be empty, so `/v1/subutest` (the
 * seed's topic) has three levels: '', 'v1', 'subutest'. A subscription pattern may also use the
 * MQTT wildcards: `+` is exactly one level, `#` is any number of levels (zero included) and only
 * as the last level. A published topic never contains `+` or `#`, nor NUL, and is 1..65535 bytes.
 *
 * Each adapter maps topics to the broker's own names by an invertible rule, so that a subscriber
 * sees the topic the publisher used:
 *
 * - `identity` (MQTT, Redis, memory): the topic is the channel name as it is.
 * - `dotted` (NATS subjects, AMQP topic-exchange routing keys): each level is percent-encoded
 *   for the characters `%`, `.`, `*`, `>`, `#`, whitespace and control characters (`%2E`;
 *   `%u2028` for whitespace beyond U+00FF), an empty
 *   level becomes `%` alone (a lone `%` never results from encoding), and levels are joined with
 *   `.`. Wildcards: `+` becomes `*`; `#` becomes `>` (NATS) or `#` (AMQP).
 * - `kafka`: levels joined with `.`; a level may only hold `[A-Za-z0-9_-]` (Kafka's own legal
 *   characters less the `.` separator), and the whole name at most 249 characters. A topic
 *   outside that rule is rejected with an error that names it. Empty levels are kept
 *   (`/v1/subutest` is the Kafka topic `.v1.subutest`).
 */
import { ErrorCode, EvpubError } from '../errors';

export const MAX_TOPIC_BYTES = 65535;

function invalid(topic: string, rule: string): EvpubError {
  return new EvpubError(ErrorCode.INVALID_TOPIC, `Invalid topic ${JSON.stringify(topic)}: ${rule}`, {
    context: { topic },
  });
}

/** Throws an INVALID_TOPIC error unless `topic` is a valid topic to publish to. */
export function assertTopic(topic: unknown): asserts topic is string {
  if (typeof topic !== 'string' || topic.length === 0) {
    throw invalid(String(topic), 'a topic is a non-empty string');
  }
  if (topic.includes('+') || topic.includes('#')) {
    throw invalid(topic, 'wildcards "+" and "#" are only allowed in subscription patterns');
  }
  if (topic.includes('\u0000')) throw invalid(topic, 'a topic must not contain NUL');
  if (LONE_SURROGATE.test(topic)) {
    throw invalid(
      topic,
      'a topic must be valid Unicode (it holds a lone surrogate, which UTF-8 cannot carry)',
    );
  }
  if (Buffer.byteLength(topic) > MAX_TOPIC_BYTES) throw invalid(topic, `at most ${MAX_TOPIC_BYTES} bytes`);
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * What MQTT brokers refuse in a topic by dropping the connection (Mosquitto: control
 * characters and Unicode noncharacters): the MQTT adapter refuses it first, as INVALID_TOPIC.
 */
const MQTT_REFUSED =
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
  /[\u0001-\u001f\u007f-\u009f\ufdd0-\ufdef\ufffe\uffff]|[\ud83f\ud87f\ud8bf\ud8ff\ud93f\ud97f\ud9bf\ud9ff\uda3f\uda7f\udabf\udaff\udb3f\udb7f\udbbf\udbff][\udffe\udfff]/;

/** Throws INVALID_TOPIC when an MQTT broker would refuse `topic` (see MQTT_REFUSED). */
export function assertMqttTopic(topic: string): void {
  if (MQTT_REFUSED.test(topic)) {
    throw invalid(
      topic,
      'MQTT topics may not hold control characters or Unicode noncharacters (topic templates percent-encode them in values)',
    );
  }
}

/** Throws an INVALID_TOPIC error unless `pattern` is a valid subscription pattern. */
export function assertPattern(pattern: unknown): asserts pattern is string {
  if (typeof pattern !== 'string' || pattern.length === 0) {
    throw invalid(String(pattern), 'a pattern is a non-empty string');
  }
  const levels = pattern.split('/');
  levels.forEach((level, i) => {
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) {
      throw invalid(pattern, '"#" must be a whole level and the last one (like "a/#")');
    }
    if (level.includes('+') && level !== '+') {
      throw invalid(pattern, '"+" must be a whole level (like "a/+/c")');
    }
  });
  if (pattern.includes('\u0000')) throw invalid(pattern, 'a pattern must not contain NUL');
}

export function hasWildcards(pattern: string): boolean {
  return pattern.split('/').some((l) => l === '+' || l === '#');
}

/** True when `topic` matches the MQTT-style `pattern`. */
export function matches(pattern: string, topic: string): boolean {
  if (pattern === topic) return true;
  const p = pattern.split('/');
  const t = topic.split('/');
  for (let i = 0; i < p.length; i++) {
    const level = p[i];
    if (level === '#') return true;
    if (i >= t.length) return false;
    if (level !== '+' && level !== t[i]) return false;
  }
  return p.length === t.length;
}

// ---------------------------------------------------------------------------------------------
// The `dotted` rule (NATS, AMQP)

// eslint-disable-next-line no-control-regex -- control characters are exactly what must be escaped
const DOTTED_ESCAPE = /[%.*>#\s\u0000-\u001f\u007f]/g;

function encodeLevel(level: string): string {
  if (level === '') return '%';
  return level.replace(DOTTED_ESCAPE, (c) => {
    const code = c.charCodeAt(0);
    // Whitespace beyond Latin-1 (U+2028, U+3000...) takes four hex digits: `%u2028`.
    return code > 0xff
      ? '%u' + code.toString(16).toUpperCase().padStart(4, '0')
      : '%' + code.toString(16).toUpperCase().padStart(2, '0');
  });
}

function decodeLevel(token: string): string {
  if (token === '%') return '';
  return token.replace(/%(?:u([0-9A-F]{4})|([0-9A-F]{2}))/g, (_, wide?: string, byte?: string) =>
    String.fromCharCode(parseInt((wide ?? byte)!, 16)),
  );
}

/** Topic → dotted name (`/v1/a.b` → `%.v1.a%2Eb`). */
export function toDotted(topic: string): string {
  return topic.split('/').map(encodeLevel).join('.');
}

/** Dotted name → topic; the inverse of `toDotted`. */
export function fromDotted(name: string): string {
  return name.split('.').map(decodeLevel).join('/');
}

/** Pattern → dotted pattern, with `+` → `*` and `#` → `multi` (`>` for NATS, `#` for AMQP). */
export function patternToDotted(pattern: string, multi: '>' | '#'): string {
  return pattern
    .split('/')
    .map((level) => (level === '+' ? '*' : level === '#' ? multi : encodeLevel(level)))
    .join('.');
}

// ---------------------------------------------------------------------------------------------
// The `kafka` rule

export const KAFKA_RULE =
  'Kafka topics carry levels of [A-Za-z0-9_-] only, joined with "." for "/", 249 characters at most';

const KAFKA_LEVEL = /^[A-Za-z0-9_-]*$/;

/** Topic → Kafka topic name, or an INVALID_TOPIC error naming the rule. */
export function toKafka(topic: string): string {
  const levels = topic.split('/');
  const name = levels.join('.');
  if (
    !levels.every((l) => KAFKA_LEVEL.test(l)) ||
    name.length > 249 ||
    name === '' ||
    name === '.' ||
    name === '..'
  ) {
    throw invalid(topic, KAFKA_RULE);
  }
  return name;
}

/** Kafka topic name → topic; the inverse of `toKafka`. */
export function fromKafka(name: string): string {
  return name.split('.').join('/');
}

/** Pattern → a RegExp over Kafka topic names (for wildcard subscriptions). */
export function patternToKafkaRegExp(pattern: string): RegExp {
  const levels = pattern.split('/');
  let source = '';
  levels.forEach((level, i) => {
    const sep = i === 0 ? '' : '\\.';
    if (level === '#') {
      // `a/#` matches `a` itself and everything below it.
      source += i === 0 ? '.*' : `(?:\\.[A-Za-z0-9_.-]*)?`;
    } else if (level === '+') {
      source += sep + '[A-Za-z0-9_-]*';
    } else {
      if (!KAFKA_LEVEL.test(level)) throw invalid(pattern, KAFKA_RULE);
      source += sep + level;
    }
  });
  return new RegExp(`^${source}$`);
}

// ---------------------------------------------------------------------------------------------
// The Redis glob rule: PSUBSCRIBE patterns are globs, so a pattern becomes the widest glob that
// covers it, and the client filters with `matches()` for the exact MQTT semantics.

export function patternToGlob(pattern: string): string {
  return pattern
    .split('/')
    .map((level) => {
      if (level === '+' || level === '#') return '*';
      return level.replace(/[*?[\]\\]/g, (c) => '\\' + c);
    })
    .join('/')
    .replace(/\/\*$/, '*'); // `a/#` must also match `a` itself
}
