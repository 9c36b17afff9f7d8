/**
 * `options.nats`, the NATS adapter's own settings, checked against a closed schema when the
 * Client is made (before anything connects):
 *
 *   { jetstream?: boolean, stream?: string, subjects?: string[] }
 *
 * `stream` and `subjects` only apply with `jetstream: true` (see nats-streams.ts).
 */
import { ErrorCode, EvpubError } from '../../errors';
import { DEFAULT_STREAM } from './nats-streams';
import { isValidName } from './nats-subjects';

export interface NatsOptions {
  /** Publish through JetStream and allow durable subscriptions. */
  jetstream?: boolean;
  /** The stream to use or create (default `EVPUB`). */
  stream?: string;
  /** The subjects the stream captures; without it the stream grows by the subjects used. */
  subjects?: string[];
}

export interface ResolvedNatsOptions {
  jetstream: boolean;
  stream: string;
  subjects: string[] | undefined;
}

const KEYS = ['jetstream', 'stream', 'subjects'];

export function natsOptions(raw: unknown): ResolvedNatsOptions {
  const bad = (key: string, rule: string): EvpubError =>
    new EvpubError(ErrorCode.CONFIG_INVALID, `nats.${key}: ${rule}`, { context: { key: `nats.${key}` } });
  if (raw === undefined) return { jetstream: false, stream: DEFAULT_STREAM, subjects: undefined };
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
  const jetstream = o.jetstream === true;
  if (!jetstream && (o.stream !== undefined || subjects !== undefined)) {
    throw bad(o.stream !== undefined ? 'stream' : 'subjects', 'only applies with nats.jetstream: true');
  }
  return { jetstream, stream, subjects };
}
