/**
 * Topic templates: `{datasource}/{model}/{op}/{key}` and any mix of those placeholders with
 * literal text (`/v1/subutest`, `cdc/{model}`, `{datasource}.{model}` ...).
 *
 * Placeholder values are escaped so that one value is always one topic level and never a
 * wildcard: `%` → `%25`, `/` → `%2F`, `+` → `%2B`, `#` → `%23`, NUL → `%00`; and so that every
 * broker takes the topic as it is: control characters (`\t` → `%09`, U+0085 → `%C2%85`) and
 * Unicode noncharacters (U+FFFE → `%EF%BF%BE`), which MQTT brokers refuse by dropping the
 * connection. This is percent-encoding of UTF-8, so `decodeURIComponent` gives the value back;
 * a lone surrogate (no UTF-8 exists for it) becomes `%EF%BF%BD` (U+FFFD), the one lossy case
 * (the payload keeps the exact key). A key `a/b` is published on `.../a%2Fb`.
 * Brokers with stricter names (Kafka: `[A-Za-z0-9_-]` only) reject what their rule cannot carry
 * with INVALID_TOPIC, and the publisher dead-letters that event.
 */
import { ErrorCode, EvpubError } from '../errors';
import type { ChangeEvent } from '../events/change-event';

export const DEFAULT_TOPIC = '{datasource}/{model}/{op}';

const PLACEHOLDERS = ['datasource', 'model', 'op', 'key'] as const;
type Placeholder = (typeof PLACEHOLDERS)[number];

const ESCAPED = new RegExp(
  [
    // eslint-disable-next-line no-control-regex -- control characters are exactly what must be escaped
    /[%/+#\u0000-\u001f\u007f-\u009f\ufdd0-\ufdef\ufffe\uffff]/.source,
    // Noncharacters beyond the BMP (U+1FFFE, U+1FFFF ... U+10FFFF), as surrogate pairs.
    /[\ud83f\ud87f\ud8bf\ud8ff\ud93f\ud97f\ud9bf\ud9ff\uda3f\uda7f\udabf\udaff\udb3f\udb7f\udbbf\udbff][\udffe\udfff]/
      .source,
    // Lone surrogates.
    /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.source,
  ].join('|'),
  'g',
);

/** Escapes one placeholder value so it stays one level, holds no wildcard, and every broker takes it. */
export function escapeLevel(value: string): string {
  return value.replace(ESCAPED, (c) =>
    c.length === 1 && c >= '\ud800' && c <= '\udfff' ? '%EF%BF%BD' : encodeURIComponent(c),
  );
}

export type TopicRenderer = (event: Pick<ChangeEvent, Placeholder>) => string;

/** Compiles a template once; an unknown or unclosed placeholder is a CONFIG_INVALID error. */
export function compileTopic(template: string, settingPath = 'topic'): TopicRenderer {
  if (typeof template !== 'string' || template.length === 0) {
    throw new EvpubError(ErrorCode.CONFIG_INVALID, `${settingPath}: must be a non-empty topic template`);
  }
  const parts: (string | { name: Placeholder })[] = [];
  const re = /\{([^{}]*)\}/g;
  let last = 0;
  for (let m = re.exec(template); m !== null; m = re.exec(template)) {
    const name = m[1] as Placeholder;
    if (!PLACEHOLDERS.includes(name)) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `${settingPath}: unknown placeholder {${m[1]}} in ${JSON.stringify(template)}; use ${PLACEHOLDERS.map((p) => `{${p}}`).join(', ')}`,
      );
    }
    parts.push(template.slice(last, m.index), { name });
    last = m.index + m[0].length;
  }
  const tail = template.slice(last);
  if (/[{}]/.test(tail) || parts.some((p) => typeof p === 'string' && /[{}]/.test(p))) {
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      `${settingPath}: unbalanced braces in ${JSON.stringify(template)}`,
    );
  }
  parts.push(tail);
  const literal = parts.filter((p): p is string => typeof p === 'string').join('');
  if (literal.includes('+') || literal.includes('#')) {
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      `${settingPath}: ${JSON.stringify(template)} contains a wildcard ("+" or "#"), which is not allowed in a published topic`,
    );
  }
  const render: TopicRenderer = (event) => {
    let out = '';
    for (const p of parts) out += typeof p === 'string' ? p : escapeLevel(String(event[p.name]));
    return out;
  };
  if (parts.some((p) => typeof p !== 'string' && p.name === 'key')) return render;
  // Without {key} the topic is one of a few per model: rendered once per operation of the model
  // seen last (a feed's events come in runs of one model), the same string object each time.
  let seen: { datasource: string; model: string; byOp: Map<string, string> } | undefined;
  return (event) => {
    if (seen === undefined || seen.model !== event.model || seen.datasource !== event.datasource) {
      seen = { datasource: event.datasource, model: event.model, byOp: new Map() };
    }
    let topic = seen.byOp.get(event.op);
    if (topic === undefined) {
      topic = render(event);
      seen.byOp.set(event.op, topic);
    }
    return topic;
  };
}
