/**
 * Type decoding: a column's text value (as pgoutput and the snapshot queries send it, in a
 * session with DateStyle=ISO, TimeZone=UTC, IntervalStyle=iso_8601) to JSON a consumer can
 * trust, the same for streamed and snapshot rows.
 *
 * - int2/int4/oid, float4/float8 → numbers (NaN/Infinity → strings); int8, numeric, money → strings
 *   (no precision lost); bool → true/false; json/jsonb → parsed values; bytea → base64;
 * - date → `YYYY-MM-DD`; timestamp → `YYYY-MM-DDTHH:MM:SS[.ffffff]` (no zone: it has none);
 *   timestamptz → `...Z` (UTC, microseconds kept); time/timetz/interval → their ISO text;
 *   `infinity`/`-infinity` stay as text;
 * - arrays → JSON arrays of the element type's values; uuid, enums, text and every other type
 *   → their text. NULL → null.
 *
 * Unchanged TOAST values are not values: the stream leaves them out of `after` and lists them
 * in `source.unchanged` (see stream.ts); they are never sent as null.
 */
import { types } from 'pg';

export interface ColumnType {
  oid: number;
  /** For arrays, the element type's oid (0 otherwise). */
  elem: number;
}

const BOOL = 16;
const BYTEA = 17;
const INT8 = 20;
const INT2 = 21;
const INT4 = 23;
const OID = 26;
const JSON_ = 114;
const FLOAT4 = 700;
const FLOAT8 = 701;
const DATE = 1082;
const TIMESTAMP = 1114;
const TIMESTAMPTZ = 1184;
const JSONB = 3802;

/** Built-in array types → element types (user-defined arrays come from pg_type, see slot-admin.ts). */
export const BUILTIN_ARRAYS: Readonly<Record<number, number>> = {
  1000: BOOL,
  1001: BYTEA,
  1002: 18,
  1005: INT2,
  1007: INT4,
  1009: 25,
  1014: 1042,
  1015: 1043,
  1016: INT8,
  1021: FLOAT4,
  1022: FLOAT8,
  1028: OID,
  1115: TIMESTAMP,
  1182: DATE,
  1183: 1083,
  1185: TIMESTAMPTZ,
  1187: 1186,
  1231: 1700,
  199: JSON_,
  2951: 2950,
  3807: JSONB,
  791: 790,
  1270: 1266,
};

export type TypeResolver = (oid: number) => number;

function isoTimestamp(text: string, zoned: boolean): string {
  if (text === 'infinity' || text === '-infinity' || text.endsWith(' BC')) return text;
  const t = text.replace(' ', 'T');
  if (!zoned) return t;
  // In UTC the server writes `+00` (or `+00:MM` for odd historical offsets): normalise `+00` to `Z`.
  if (t.endsWith('+00')) return `${t.slice(0, -3)}Z`;
  return t.replace(/([+-]\d\d)$/, '$1:00');
}

function number(text: string): number | string {
  const n = Number(text);
  return Number.isFinite(n) ? n : text;
}

/** Decodes one scalar value of type `oid` from its text. */
function scalar(oid: number, text: string): unknown {
  switch (oid) {
    case BOOL:
      return text === 't';
    case INT2:
    case INT4:
    case OID:
      return Number(text);
    case FLOAT4:
    case FLOAT8:
      return number(text);
    case JSON_:
    case JSONB:
      return JSON.parse(text) as unknown;
    case BYTEA:
      return Buffer.from(text.startsWith('\\x') ? text.slice(2) : text, 'hex').toString('base64');
    case TIMESTAMP:
      return isoTimestamp(text, false);
    case TIMESTAMPTZ:
      return isoTimestamp(text, true);
    default:
      return text; // int8, numeric, money, date, uuid, enums, text...
  }
}

/**
 * Decodes a column value. `elemOf(oid)` gives an array type's element type (0 when `oid` is not
 * an array type).
 */
export function decodeValue(oid: number, text: string | null, elemOf: TypeResolver): unknown {
  if (text === null) return null;
  const elem = elemOf(oid);
  if (elem === 0) return scalar(oid, text);
  return arrayParser.create(text, (item) => (item === null ? null : decodeValue(elem, item, elemOf))).parse();
}

/**
 * pg's array literal parser (postgres-array, through pg-types 2). Its published typing
 * describes a later pg-types; this is the shape pg 8 ships at run time.
 */
const arrayParser = types.arrayParser as unknown as {
  create(source: string, transform: (item: string | null) => unknown): { parse(): unknown[] };
};
