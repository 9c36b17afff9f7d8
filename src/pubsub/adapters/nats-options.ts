/**
 * `options.nats`, the NATS adapter's own settings, checked against a closed schema when the
 * Client is made (before anything connects):
 *
 *   { jetstream?: boolean, stream?: string, subjects?: string[], duplicateWindow?: number,
 *     token?, nkey?, creds? }
 *
 * `stream`, `subjects` and `duplicateWindow` only apply with `jetstream: true` (see
 * nats-streams.ts). `duplicateWindow` (milliseconds, default 120000 as the NATS server's) is the
 * `duplicate_window` of the stream evpub creates: how long the stream remembers a `Nats-Msg-Id`
 * to drop a second publish of it. It does not change a stream that exists already.
 * Authentication (beside `username`/`password` and `nats://user:pass@host` of the Client options):
 * - `token`: a server token (as `nats://TOKEN@host` gives it too).
 * - `nkey`: an NKey user seed (`SU...`) or the path of a file holding one.
 * - `creds`: a `.creds` file (user JWT and seed, from `nsc`) or its text.
 * Files are read when the adapter connects (a file that cannot be read is CONFIG_INVALID naming
 * the key, never the content); all three are secrets and are never printed.
 */
import { ErrorCode, EvpubError } from '../../errors';
import { DEFAULT_DUPLICATE_WINDOW_MS, DEFAULT_STREAM, MAX_AGE_MS } from './nats-streams';
import { isValidName } from './nats-subjects';

export interface NatsOptions {
  /** Publish through JetStream and allow durable subscriptions. */
  jetstream?: boolean;
  /** The stream to use or create (default `EVPUB`). */
  stream?: string;
  /** The subjects the stream captures; without it the stream grows by the subjects used. */
  subjects?: string[];
  /**
   * The de-duplication window of the stream evpub creates, in milliseconds (default 120000, the
   * server's): a publish whose `Nats-Msg-Id` the stream saw within it is dropped (acked as a
   * duplicate). At least 1000 and at most the stream's max age (7 days).
   */
  duplicateWindow?: number;
  /** Token authentication. A secret. */
  token?: string;
  /** NKey user seed or a seed file. A secret. */
  nkey?: string;
  /** A `.creds` file (user JWT + seed) or its text. A secret. */
  creds?: string;
}

export interface ResolvedNatsOptions {
  jetstream: boolean;
  stream: string;
  subjects: string[] | undefined;
  /** Milliseconds. */
  duplicateWindow: number;
  token?: string;
  nkey?: string;
  creds?: string;
}

const KEYS = ['jetstream', 'stream', 'subjects', 'duplicateWindow', 'token', 'nkey', 'creds'];

export function natsOptions(raw: unknown): ResolvedNatsOptions {
  const bad = (key: string, rule: string): EvpubError =>
    new EvpubError(ErrorCode.CONFIG_INVALID, `nats.${key}: ${rule}`, { context: { key: `nats.${key}` } });
  if (raw === undefined) {
    return {
      jetstream: false,
      stream: DEFAULT_STREAM,
      subjects: undefined,
      duplicateWindow: DEFAULT_DUPLICATE_WINDOW_MS,
    };
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new EvpubError(ErrorCode.CONFIG_INVALID, 'nats: must be an object like { jetstream: true }', {
      context: { key: 'nats' },
    });
  }
  const o = raw as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!KEYS.includes(key)) throw bad(key, `unknown option (known: ${KEYS.join(', ')})`);
  }
  if (o.jetstream !== undefined && typeof o.jetstream !== 'boolean') {
    throw bad('jetstream', 'must be true or false');
  }
  const stream = o.stream ?? DEFAULT_STREAM;
  if (typeof stream !== 'string' || !isValidName(stream)) {
    throw bad('stream', 'must be a stream name: no whitespace, ".", "*", ">", "/" or "\\"');
  }
  let subjects: string[] | undefined;
  if (o.subjects !== undefined) {
    const list = o.subjects;
    if (
      !Array.isArray(list) ||
      list.length === 0 ||
      !list.every((s) => typeof s === 'string' && s.length > 0 && !/\s/.test(s))
    ) {
      throw bad('subjects', 'must be a non-empty array of NATS subjects, like ["orders.>"]');
    }
    subjects = list as string[];
  }
  const duplicateWindow = o.duplicateWindow ?? DEFAULT_DUPLICATE_WINDOW_MS;
  if (
    typeof duplicateWindow !== 'number' ||
    !Number.isInteger(duplicateWindow) ||
    duplicateWindow < 1000 ||
    duplicateWindow > MAX_AGE_MS
  ) {
    throw bad(
      'duplicateWindow',
      `must be a number of milliseconds from 1000 to ${MAX_AGE_MS} (the stream's max age), like 120000 for 2 minutes`,
    );
  }
  const secrets = natsCredentials(o, 'nats');
  const jetstream = o.jetstream === true;
  if (!jetstream) {
    const given = (['stream', 'subjects', 'duplicateWindow'] as const).find((k) => o[k] !== undefined);
    if (given !== undefined) throw bad(given, 'only applies with nats.jetstream: true');
  }
  return { jetstream, stream, subjects, duplicateWindow, ...secrets };
}

/** NATS credentials besides user and password: what `natsCredentials` takes and gives. */
export type NatsCredentials = Pick<ResolvedNatsOptions, 'token' | 'nkey' | 'creds'>;

/**
 * `token`, `nkey` and `creds` of `o` (the `nats` options, or `cluster:` for the NATS lease
 * store), checked: non-empty strings, not both `nkey` and `creds`. Errors name `<path>.<key>`.
 */
export function natsCredentials(o: Record<string, unknown>, path: string): NatsCredentials {
  const bad = (key: string, rule: string): EvpubError =>
    new EvpubError(ErrorCode.CONFIG_INVALID, `${path}.${key}: ${rule}`, {
      context: { key: `${path}.${key}` },
    });
  const secrets: NatsCredentials = {};
  for (const key of ['token', 'nkey', 'creds'] as const) {
    const v = o[key];
    if (v === undefined) continue;
    if (typeof v !== 'string' || v.trim() === '') throw bad(key, 'must be a non-empty string');
    secrets[key] = v;
  }
  if (secrets.nkey !== undefined && secrets.creds !== undefined) {
    throw bad(
      'nkey',
      `and ${path}.creds both say who the client is: give one (a .creds file holds its own seed)`,
    );
  }
  return secrets;
}
