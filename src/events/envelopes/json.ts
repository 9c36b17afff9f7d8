/** JSON encoding shared by the envelopes: a value JSON cannot carry is an encode error. */
import { ErrorCode, EvpubError } from '../../errors';
import type { ChangeEvent } from '../change-event';

/**
 * `JSON.stringify`, with what sources produce and it refuses:
 * - a BigInt becomes its decimal string (as the sources give int8/BIGINT values);
 * - nesting deeper than `JSON.stringify` can recurse (a webhook body of 10,000 levels parses
 *   but does not stringify) is written by an iterative writer, the same text;
 * - strings with lone surrogates need nothing: `JSON.stringify` writes them as `\udXXX`
 *   escapes, so the payload is valid UTF-8 and parses back to the same string.
 * Cycles and `undefined` at the top level are refused (an EvpubError the publisher
 * dead-letters).
 */
export function toJson(value: unknown, event: ChangeEvent): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (first) {
    try {
      text = writeJson(value);
    } catch {
      throw new EvpubError(ErrorCode.PUBLISH_FAILED, `event ${event.id} cannot be encoded as JSON`, {
        cause: first,
        context: { reason: 'encode', model: event.model, key: event.key },
      });
    }
  }
  if (text === undefined) {
    throw new EvpubError(ErrorCode.PUBLISH_FAILED, `event ${event.id} encodes to nothing`, {
      context: { reason: 'encode', model: event.model, key: event.key },
    });
  }
  return text;
}

/** A scalar's JSON text, or undefined for what JSON omits (undefined, functions, symbols). */
function scalar(v: unknown): string | undefined {
  if (typeof v === 'bigint') return JSON.stringify(v.toString());
  return JSON.stringify(v);
}

/** What `JSON.stringify` does with `toJSON` (Dates, Buffers...). */
function prepared(v: unknown, key: string): unknown {
  if (v !== null && typeof v === 'object' && typeof (v as { toJSON?: unknown }).toJSON === 'function') {
    return (v as { toJSON(key: string): unknown }).toJSON(key);
  }
  return v;
}

type Frame =
  | { kind: 'array'; items: unknown[]; i: number; node: object }
  | { kind: 'object'; entries: [string, unknown][]; i: number; wrote: boolean; node: object };

/**
 * `JSON.stringify(value)` without recursion (an explicit stack), BigInts as strings. Throws a
 * TypeError on a cycle.
 */
export function writeJson(value: unknown): string | undefined {
  const out: string[] = [];
  const stack: Frame[] = [];
  const open = new Set<object>();
  /** Writes `v`; returns false when it is omitted (undefined, function, symbol). */
  const write = (raw: unknown, key: string): boolean => {
    const v = prepared(raw, key);
    if (v === null || typeof v !== 'object') {
      const text = scalar(v);
      if (text === undefined) return false;
      out.push(text);
      return true;
    }
    if (open.has(v)) throw new TypeError('Converting circular structure to JSON');
    open.add(v);
    if (Array.isArray(v)) {
      out.push('[');
      stack.push({ kind: 'array', items: v as unknown[], i: 0, node: v });
    } else {
      out.push('{');
      stack.push({ kind: 'object', entries: Object.entries(v), i: 0, wrote: false, node: v });
    }
    return true;
  };
  if (!write(value, '')) return undefined;
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    if (top.kind === 'array') {
      if (top.i >= top.items.length) {
        out.push(']');
        open.delete(top.node);
        stack.pop();
        continue;
      }
      if (top.i > 0) out.push(',');
      const i = top.i++;
      if (!write(top.items[i], String(i))) out.push('null');
    } else {
      if (top.i >= top.entries.length) {
        out.push('}');
        open.delete(top.node);
        stack.pop();
        continue;
      }
      const [k, v] = top.entries[top.i++]!;
      const mark = out.length;
      out.push(`${top.wrote ? ',' : ''}${JSON.stringify(k)}:`);
      if (write(v, k)) top.wrote = true;
      else out.length = mark; // omitted, as JSON.stringify omits undefined members
    }
  }
  return out.join('');
}
