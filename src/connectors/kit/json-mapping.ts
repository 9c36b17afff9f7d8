/**
 * Mapping a JSON message to a change event, shared by the `websocket` and `bridge` connectors.
 *
 * Paths are dot-separated property names, with numbers (or `[n]`) indexing arrays:
 * `data.items[0].id` = `data.items.0.id`. An empty path or `$` is the whole message; a leading
 * `$.` is allowed. Settings (all optional unless the connector says otherwise):
 *
 * - `match: { path, value }` or `{ path, values: [...] }`: the message belongs to the model only
 *   when the value at `path` equals one of the values (compared as JSON). `{model}` in a string
 *   value is replaced by the model's name.
 * - `keyPath`: the record key. Strings as they are, numbers and booleans as their text, objects
 *   and arrays JSON-encoded.
 * - `opPath`, `opMap`, `defaultOp`: the operation. The value at `opPath` is looked up in
 *   `opMap` (`{ "created": "create", ... }`); a value that is itself an operation name is taken
 *   as it is; anything else, or no `opPath`, gives `defaultOp` (default `update`).
 * - `recordPath`: the record (`after`, or `before` for a delete): the whole message by default.
 *   A value that is not an object becomes `{ value }`.
 * - `idPath`: the idempotency id; the event id is a hash of model + that value. Without it, a
 *   hash of model + the message's bytes (identical messages get identical ids).
 * - `timePath`: the source time (ISO string, or milliseconds since the epoch); default: now.
 * - `onMalformed`: what to do with a message that is not JSON or has no key: `skip` (default:
 *   logged, counted, and handed to `sink.deadLetter()`: published to the dead-letter topic with
 *   its reason), `raw` (published as `{ raw: <base64> }` with the default operation),
 *   or `fail` (the model's feed stops with the error).
 */
import { createHash } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { ErrorCode, EvpubError } from '../../errors';
import { OPERATIONS, type Operation, type Row } from '../../events/change-event';
import { invalidSetting } from './settings';

export type JsonPath = readonly (string | number)[];

export type OnMalformed = 'skip' | 'raw' | 'fail';

export interface Mapping {
  match?: { path: JsonPath; values: unknown[] };
  keyPath?: JsonPath;
  opPath?: JsonPath;
  opMap: Readonly<Record<string, Operation>>;
  defaultOp: Operation;
  recordPath?: JsonPath;
  idPath?: JsonPath;
  timePath?: JsonPath;
  onMalformed: OnMalformed;
}

/** The setting keys `parseMapping` reads. */
export const MAPPING_KEYS = [
  'match',
  'keyPath',
  'opPath',
  'opMap',
  'defaultOp',
  'recordPath',
  'idPath',
  'timePath',
  'onMalformed',
] as const;

/** Parses `a.b[0].c` into `['a', 'b', 0, 'c']`. */
export function parsePath(text: unknown, where: string, key: string): JsonPath {
  if (typeof text !== 'string') {
    throw invalidSetting(where, key, `must be a path string like "data.id" (got ${JSON.stringify(text)})`);
  }
  let rest = text.trim();
  if (rest === '$' || rest === '') return [];
  if (rest.startsWith('$.')) rest = rest.slice(2);
  const out: (string | number)[] = [];
  for (const part of rest.replace(/\[(\d+)\]/g, '.$1').split('.')) {
    if (part === '') {
      throw invalidSetting(where, key, `has an empty segment: ${JSON.stringify(text)}`);
    }
    out.push(/^\d+$/.test(part) ? Number(part) : part);
  }
  return out;
}

/** The value at `path`, or undefined. */
export function readPath(value: unknown, path: JsonPath): unknown {
  let current = value;
  for (const step of path) {
    if (current === null || typeof current !== 'object') return undefined;
    if (typeof step === 'number' && Array.isArray(current)) current = current[step];
    else if (!Array.isArray(current)) current = (current as Record<string, unknown>)[String(step)];
    else return undefined;
  }
  return current;
}

function optionalPath(settings: Readonly<Record<string, unknown>>, where: string, key: string) {
  const value = settings[key];
  return value === undefined || value === null ? undefined : parsePath(value, where, key);
}

function operation(value: unknown, where: string, key: string): Operation {
  if (typeof value !== 'string' || !(OPERATIONS as readonly string[]).includes(value)) {
    throw invalidSetting(
      where,
      key,
      `must be one of ${OPERATIONS.join(', ')} (got ${JSON.stringify(value)})`,
    );
  }
  return value as Operation;
}

/** Replaces `{model}` in every string of a JSON value. */
export function withModel(value: unknown, model: string): unknown {
  if (typeof value === 'string') return value.split('{model}').join(model);
  if (Array.isArray(value)) return value.map((v) => withModel(v, model));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withModel(v, model)]));
  }
  return value;
}

/** Validates the mapping settings of one model; `where` names them in errors. */
export function parseMapping(
  settings: Readonly<Record<string, unknown>>,
  where: string,
  model: string,
): Mapping {
  const mapping: Mapping = {
    opMap: {},
    defaultOp:
      settings.defaultOp === undefined ? 'update' : operation(settings.defaultOp, where, 'defaultOp'),
    onMalformed: 'skip',
  };
  const match = settings.match;
  if (match !== undefined && match !== null) {
    if (typeof match !== 'object' || Array.isArray(match)) {
      throw invalidSetting(where, 'match', 'must be { path, value } or { path, values: [...] }');
    }
    const m = match as Record<string, unknown>;
    const values = 'values' in m ? m.values : [m.value];
    if (!Array.isArray(values) || values.length === 0 || values.some((v) => v === undefined)) {
      throw invalidSetting(where, 'match', 'needs `value`, or `values` as a non-empty array');
    }
    mapping.match = {
      path: parsePath(m.path, where, 'match.path'),
      values: values.map((v) => withModel(v, model)),
    };
  }
  mapping.keyPath = optionalPath(settings, where, 'keyPath');
  mapping.opPath = optionalPath(settings, where, 'opPath');
  mapping.recordPath = optionalPath(settings, where, 'recordPath');
  mapping.idPath = optionalPath(settings, where, 'idPath');
  mapping.timePath = optionalPath(settings, where, 'timePath');
  const opMap = settings.opMap;
  if (opMap !== undefined && opMap !== null) {
    if (typeof opMap !== 'object' || Array.isArray(opMap)) {
      throw invalidSetting(
        where,
        'opMap',
        'must map source values to operations, e.g. { "created": "create" }',
      );
    }
    mapping.opMap = Object.fromEntries(
      Object.entries(opMap).map(([k, v]) => [k, operation(v, where, `opMap.${k}`)]),
    );
  }
  const onMalformed = settings.onMalformed ?? 'skip';
  if (onMalformed !== 'skip' && onMalformed !== 'raw' && onMalformed !== 'fail') {
    throw invalidSetting(
      where,
      'onMalformed',
      `must be "skip", "raw" or "fail" (got ${JSON.stringify(onMalformed)})`,
    );
  }
  mapping.onMalformed = onMalformed;
  return mapping;
}

/** True when the message belongs to the model (always, without `match`). */
export function matches(mapping: Mapping, message: unknown): boolean {
  if (!mapping.match) return true;
  const value = readPath(message, mapping.match.path);
  return mapping.match.values.some((v) => isDeepStrictEqual(v, value));
}

/** A key's text: strings as they are, scalars as their text, objects JSON-encoded. */
export function keyText(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint')
    return String(value);
  return JSON.stringify(value);
}

export function hashId(model: string, what: 'id' | 'bytes', value: string | Buffer): string {
  return createHash('sha256').update(`${model}\u0000${what}\u0000`).update(value).digest('hex').slice(0, 32);
}

function asRow(value: unknown): Row | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'object' && !Array.isArray(value)) return value as Row;
  return { value };
}

function timeOf(value: unknown): string | undefined {
  let ms: number | undefined;
  if (typeof value === 'number' && Number.isFinite(value)) ms = value;
  else if (typeof value === 'string' && value !== '') ms = Date.parse(value);
  if (ms === undefined || Number.isNaN(ms)) return undefined;
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}

export interface Mapped {
  id: string;
  key: string;
  op: Operation;
  before: Row | null;
  after: Row | null;
  sourceTime: string;
}

export interface MapContext {
  model: string;
  /** The message's bytes (for the default id). */
  raw: Buffer;
  /** The key when `keyPath` is not set or finds nothing (the bridge: the message key or topic). */
  fallbackKey?: string;
  /** An id the transport gives (a CloudEvents id...), used when `idPath` is not set. */
  fallbackId?: string;
  fallbackTime?: string;
  /** The record when `recordPath` is not set (default: the message itself). */
  record?: unknown;
}

/**
 * Maps one parsed message, whose record is `record` (the message itself, or the data of a
 * CloudEvent). Throws SOURCE_FAILED when the message has no key.
 */
export function mapMessage(mapping: Mapping, message: unknown, context: MapContext): Mapped {
  const key =
    (mapping.keyPath ? keyText(readPath(message, mapping.keyPath)) : undefined) ?? context.fallbackKey;
  if (key === undefined) {
    throw new EvpubError(
      ErrorCode.SOURCE_FAILED,
      mapping.keyPath
        ? `the message has no key at "${mapping.keyPath.join('.')}"`
        : 'the message has no key (set keyPath)',
    );
  }
  const opValue = mapping.opPath ? keyText(readPath(message, mapping.opPath)) : undefined;
  let op = mapping.defaultOp;
  if (opValue !== undefined) {
    op =
      mapping.opMap[opValue] ??
      ((OPERATIONS as readonly string[]).includes(opValue) ? (opValue as Operation) : mapping.defaultOp);
  }
  const idValue = mapping.idPath ? keyText(readPath(message, mapping.idPath)) : undefined;
  const id =
    idValue !== undefined
      ? hashId(context.model, 'id', idValue)
      : context.fallbackId !== undefined
        ? hashId(context.model, 'id', context.fallbackId)
        : hashId(context.model, 'bytes', context.raw);
  const record = asRow(
    mapping.recordPath
      ? readPath(message, mapping.recordPath)
      : 'record' in context
        ? context.record
        : message,
  );
  const sourceTime =
    (mapping.timePath ? timeOf(readPath(message, mapping.timePath)) : undefined) ??
    context.fallbackTime ??
    new Date().toISOString();
  return {
    id,
    key,
    op,
    before: op === 'delete' ? record : null,
    after: op === 'delete' ? null : record,
    sourceTime,
  };
}

/** The event of a malformed message under `onMalformed: 'raw'`. */
export function rawMapped(mapping: Mapping, context: MapContext): Mapped {
  const id = hashId(context.model, 'bytes', context.raw);
  return {
    id,
    key: context.fallbackKey ?? id,
    op: mapping.defaultOp,
    before: null,
    after: { raw: context.raw.toString('base64') },
    sourceTime: context.fallbackTime ?? new Date().toISOString(),
  };
}

/** Counts malformed messages and logs the first ones, then one in every thousand. */
export class MalformedCounter {
  count = 0;

  shouldLog(): boolean {
    this.count += 1;
    return this.count <= 10 || this.count % 1000 === 0;
  }
}
