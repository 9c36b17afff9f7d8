/**
 * Property tests of the envelopes: any value a source can produce (JSON values from parsed
 * bodies, big integers as strings or as BigInt, deep nesting, strings with lone surrogates or
 * any other UTF-16) is encoded by every envelope into a payload that is valid UTF-8 JSON and
 * parses back to the value (BigInt as its decimal string; a lone surrogate, which UTF-8 cannot
 * carry, as its `\uXXXX` escape, so it too comes back); headers are printable ASCII.
 */
import { TextDecoder } from 'node:util';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/events/change-event';
import { binaryEnvelopeWith, legacyEnvelope, structuredEnvelope } from '../../src/events/envelopes/index';

const unit = fc.oneof(
  fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)),
  fc.constantFrom('\ud800', '\udfff', '\ud83d\ude00', '"', '\\', '\u0000', '\u2028', '%'),
  fc.string({ unit: 'grapheme', maxLength: 1 }),
);
const text = fc.string({ unit, maxLength: 12 });

/** What sources give: JSON values, plus big integers as digit strings or BigInt. */
const value = fc.letrec((tie) => ({
  any: fc.oneof(
    { depthSize: 'small' },
    text,
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.integer(),
    fc.boolean(),
    fc.constant(null),
    fc.bigInt({ min: -(2n ** 80n), max: 2n ** 80n }),
    fc.bigInt({ min: 0n, max: 2n ** 64n }).map(String),
    fc.array(tie('any'), { maxLength: 4 }),
    fc.dictionary(text, tie('any'), { maxKeys: 4 }),
  ),
})).any;

/** The value as JSON gives it back: BigInt as its decimal string, -0 as 0, object keys as own data. */
function expected(v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (Object.is(v, -0)) return 0;
  if (Array.isArray(v)) return v.map(expected);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v))
      Object.defineProperty(out, k, {
        value: expected(x),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    return out;
  }
  return v;
}

function event(after: unknown, key: string, model = 'orders'): ChangeEvent {
  return {
    id: `id-${key}`,
    datasource: 'db',
    model,
    op: 'update',
    key,
    before: null,
    after: { v: after },
    position: '1',
    sourceTime: '2026-01-01T00:00:00.000Z',
  };
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
const ENVELOPES = [structuredEnvelope, binaryEnvelopeWith('ce-'), binaryEnvelopeWith('ce_'), legacyEnvelope];

function roundTrip(after: unknown, key: string): void {
  for (const envelope of ENVELOPES) {
    const encoded = envelope.encode(event(after, key));
    const parsed = JSON.parse(utf8.decode(encoded.payload)) as Record<string, unknown>;
    const data = (
      envelope === legacyEnvelope
        ? parsed.message
        : envelope.name === 'cloudevents'
          ? (parsed.data as Record<string, unknown>).after
          : parsed.after
    ) as { v: unknown };
    expect(data.v).toEqual(expected(after));
    for (const header of Object.values(encoded.headers ?? {})) expect(header).toMatch(/^[\x20-\x7e]*$/);
  }
}

describe('envelopes encode anything a source produces', () => {
  it('JSON values, big integers, any UTF-16 (lone surrogates too): valid UTF-8 JSON that parses back', () => {
    fc.assert(
      fc.property(value, text, (v, key) => roundTrip(v, key)),
      { numRuns: 300 },
    );
  });

  it('deep nesting (deeper than JSON.stringify recurses)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 20_000 }), fc.boolean(), (depth, arrays) => {
        let v: unknown = 'leaf';
        for (let i = 0; i < depth; i++) v = arrays ? [v] : { a: v };
        for (const envelope of ENVELOPES) {
          const parsed = JSON.parse(utf8.decode(envelope.encode(event(v, 'deep')).payload)) as unknown;
          // Walk down without recursion (deep equality would overflow the stack itself).
          let node = parsed;
          const path =
            envelope === legacyEnvelope
              ? ['message', 'v']
              : envelope.name === 'cloudevents'
                ? ['data', 'after', 'v']
                : ['after', 'v'];
          for (const k of path) node = (node as Record<string, unknown>)[k];
          let levels = 0;
          while (typeof node === 'object' && node !== null) {
            node = arrays ? (node as unknown[])[0] : (node as { a: unknown }).a;
            levels++;
          }
          expect([levels, node]).toEqual([depth, 'leaf']);
        }
      }),
      { numRuns: 8 },
    );
  });
});
