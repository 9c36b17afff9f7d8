/**
 * Redis Streams for the Redis adapter: how a message is laid out in a stream entry, and the
 * blocking readers that deliver entries.
 *
 * Entry layout (XADD <topic> [MAXLEN ~ n] * field value ...): `payload` (the bytes as they are),
 * `h:<name>` per header, `key`, `contentType`, `messageId`. Reading, any other field (one written
 * by another program) becomes a header of the same name, and a missing `payload` an empty one.
 *
 * Readers, one connection each (a blocked XREAD/XREADGROUP holds its connection, and XREADGROUP
 * serves one group per call, so readers sharing a connection would wait for each other):
 * - plain: XREAD BLOCK 0 from the last id seen. The first id is the stream's last entry at
 *   subscribe time (what `$` means), fixed before subscribe resolves, so nothing published after
 *   subscribe resolved is missed, and after a reconnect the XREAD sent anew resumes where it was.
 * - group: XREADGROUP GROUP <group> <consumer>. It first re-reads the consumer's own pending
 *   entries (id 0: delivered before, never acknowledged; `redelivered: true`), paging until none
 *   are left, then blocks on `>` (new entries). After every reconnect it re-reads pending first,
 *   because a reply lost with the connection left its entries pending. `meta.ack()` is XACK,
 *   batched per tick. A vanished group (NOGROUP: stream deleted, broker restarted without
 *   persistence) is created again from id 0, so nothing left in the stream is skipped.
 * `stop()` closes the reader's connection, which ends the blocked call at once; no entry is
 * delivered after `stop()` was called.
 */
import type { MessageMeta, PublishOptions } from '../adapter';
import { ErrorCode, EvpubError, toError } from '../../errors';
import type { Redis } from './redis-connections';

/** Entries per read: large enough for throughput, small enough to keep latency even. */
export const READ_COUNT = 1000;

/** XADD arguments after the key: `[MAXLEN ~ n] * field value ...`. */
export function entryArgs(
  payload: Buffer,
  options: PublishOptions,
  maxLen: number | undefined,
): (string | Buffer)[] {
  const args: (string | Buffer)[] = [];
  if (maxLen !== undefined) args.push('MAXLEN', '~', String(maxLen));
  args.push('*', 'payload', payload);
  if (options.headers) {
    for (const [name, value] of Object.entries(options.headers)) args.push(`h:${name}`, String(value));
  }
  if (options.key !== undefined) args.push('key', options.key);
  if (options.contentType !== undefined) args.push('contentType', options.contentType);
  if (options.messageId !== undefined) args.push('messageId', options.messageId);
  return args;
}

export interface Entry {
  id: string;
  payload: Buffer;
  meta: Omit<MessageMeta, 'ack' | 'pattern'>;
  /** False for an entry still pending but deleted from the stream (XREADGROUP gives no fields). */
  present: boolean;
}

function decodeFields(id: string, fields: unknown): Entry {
  if (!Array.isArray(fields)) return { id, payload: Buffer.alloc(0), meta: {}, present: false };
  let payload: Buffer = Buffer.alloc(0);
  const meta: Entry['meta'] = {};
  const headers: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const name = String(fields[i]);
    const value = fields[i + 1] as Buffer | string;
    if (name === 'payload') payload = Buffer.isBuffer(value) ? value : Buffer.from(String(value));
    else if (name === 'key') meta.key = String(value);
    else if (name === 'contentType') meta.contentType = String(value);
    else if (name === 'messageId') meta.messageId = String(value);
    else headers[name.startsWith('h:') ? name.slice(2) : name] = String(value);
  }
  if (Object.keys(headers).length > 0) meta.headers = headers;
  meta.messageId ??= id;
  return { id, payload, meta, present: true };
}

/** The entries of a one-stream XREAD/XREADGROUP reply (`[[key, [[id, fields], ...]]]`, or null). */
export function decodeRead(reply: unknown): Entry[] {
  if (!Array.isArray(reply) || reply.length === 0) return [];
  // ioredis gives [[key, entries]] for RESP2 and RESP3 alike; accept a flat [key, entries] too.
  const first: unknown = reply[0];
  const entries: unknown = Array.isArray(first) ? first[1] : reply[1];
  if (!Array.isArray(entries)) return [];
  return entries.map((e: unknown) => {
    const [id, fields] = e as [Buffer | string, unknown];
    return decodeFields(String(id), fields);
  });
}

export interface ReaderSpec {
  /** The stream (the topic, by the identity rule). */
  key: string;
  /** The evpub pattern of the subscription (equal to the key). */
  pattern: string;
  /** Consumer group and consumer for a durable subscription. */
  group?: { name: string; consumer: string };
  /** For a plain reader: the id after which to read. */
  after?: string;
}

export interface ReaderHooks {
  deliver(topic: string, payload: Buffer, meta: MessageMeta): void;
  /** XACK on the command connection. */
  ack(key: string, group: string, ids: string[]): Promise<unknown>;
  /** XGROUP CREATE <key> <group> <id> MKSTREAM, ignoring BUSYGROUP. */
  createGroup(key: string, group: string, id: string): Promise<void>;
  error(err: Error): void;
  /** Milliseconds to wait before retrying after the `attempt`-th failure in a row. */
  backoff(attempt: number): number;
}

/** Collects XACKs of one tick into one command. */
class AckBatch {
  private ids: string[] = [];
  private flushing: Promise<void> | undefined;
  private last: Promise<void> = Promise.resolve();

  constructor(private readonly send: (ids: string[]) => Promise<unknown>) {}

  add(id: string): Promise<void> {
    this.ids.push(id);
    this.flushing ??= new Promise<void>((resolve) => queueMicrotask(resolve)).then(() => {
      const ids = this.ids;
      this.ids = [];
      this.flushing = undefined;
      this.last = this.send(ids).then(() => undefined);
      return this.last;
    });
    return this.flushing;
  }

  /** Resolves when every ack asked for so far has been answered (or failed). */
  async settled(): Promise<void> {
    if (this.flushing) await this.flushing.catch(() => undefined);
    await this.last.catch(() => undefined);
  }
}

const STOPPED = Symbol('stopped');
const ABANDONED = Symbol('abandoned');

export class StreamReader {
  private stopped = false;
  private rereadPending = true;
  private pendingCursor = '0';
  private after: string;
  /** Closes of the connection so far, and how many there had been when the current read was sent. */
  private epoch = 0;
  private readEpoch = 0;
  private interrupt: (() => void) | undefined;
  private readonly acks: AckBatch | undefined;
  /** Resolves on `stop()`: a blocked read on a connection that is down may never settle. */
  private readonly halted: Promise<typeof STOPPED>;
  private halt!: () => void;
  readonly done: Promise<void>;

  constructor(
    private readonly conn: Redis,
    private readonly spec: ReaderSpec,
    private readonly hooks: ReaderHooks,
  ) {
    this.after = spec.after ?? '0-0';
    const group = spec.group;
    this.acks = group && new AckBatch((ids) => hooks.ack(spec.key, group.name, ids));
    // The connection does not resend unanswered commands: a blocking read resent after a
    // reconnect would block before the pending entries are read again. Instead the read that was
    // in flight when the connection closed is abandoned on `ready`, and the loop reads anew,
    // starting with the pending entries (a reply lost with the connection left them pending).
    conn.on('close', () => this.epoch++);
    conn.on('ready', () => {
      this.rereadPending = true;
      this.pendingCursor = '0';
      if (this.readEpoch < this.epoch) this.interrupt?.();
    });
    this.halted = new Promise((resolve) => (this.halt = () => resolve(STOPPED)));
    this.done = this.run();
  }

  stop(): void {
    this.stopped = true;
    this.halt();
  }

  private read(): Promise<unknown> {
    const { key, group } = this.spec;
    if (!group) {
      return this.conn.callBuffer('xread', 'COUNT', READ_COUNT, 'BLOCK', 0, 'STREAMS', key, this.after);
    }
    const id = this.rereadPending ? this.pendingCursor : '>';
    return this.conn.callBuffer(
      'xreadgroup',
      'GROUP',
      group.name,
      group.consumer,
      'COUNT',
      READ_COUNT,
      'BLOCK',
      0,
      'STREAMS',
      key,
      id,
    );
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      const pendingPhase = this.spec.group !== undefined && this.rereadPending;
      let entries: Entry[];
      try {
        // Acks still in flight would make their entries look pending.
        if (pendingPhase) await this.acks?.settled();
        this.readEpoch = this.epoch;
        const abandoned = new Promise<typeof ABANDONED>(
          (resolve) => (this.interrupt = () => resolve(ABANDONED)),
        );
        const reply = await Promise.race([this.read(), this.halted, abandoned]);
        this.interrupt = undefined;
        if (reply === STOPPED) return;
        if (reply === ABANDONED) continue;
        entries = decodeRead(reply);
        failures = 0;
      } catch (err) {
        if (this.stopped) return;
        await this.recover(toError(err), ++failures);
        continue;
      }
      if (pendingPhase) {
        if (entries.length === 0) this.rereadPending = false;
        else this.pendingCursor = entries[entries.length - 1]!.id;
      }
      for (const entry of entries) {
        if (this.stopped) return;
        this.after = entry.id;
        this.deliver(entry, pendingPhase);
      }
    }
  }

  private deliver(entry: Entry, redelivered: boolean): void {
    const { key, pattern } = this.spec;
    const acks = this.acks;
    if (!entry.present) {
      // Deleted from the stream while pending: nothing to deliver, clear it from the group.
      acks?.add(entry.id).catch((err: unknown) => this.hooks.error(toError(err)));
      return;
    }
    let acked: Promise<void> | undefined;
    const meta: MessageMeta = {
      ...entry.meta,
      pattern,
      ack: acks ? () => (acked ??= acks.add(entry.id)) : () => Promise.resolve(),
    };
    if (redelivered) meta.redelivered = true;
    this.hooks.deliver(key, entry.payload, meta);
  }

  private async recover(err: Error, failures: number): Promise<void> {
    const group = this.spec.group;
    if (group && /^NOGROUP/.test(err.message)) {
      try {
        await this.hooks.createGroup(this.spec.key, group.name, '0');
        this.rereadPending = true;
        this.pendingCursor = '0';
        return;
      } catch (createErr) {
        err = toError(createErr);
      }
    }
    this.hooks.error(
      new EvpubError(
        ErrorCode.SUBSCRIBE_FAILED,
        `reading the Redis stream ${JSON.stringify(this.spec.key)} failed; retrying: ${err.message}`,
        {
          cause: err,
          retriable: true,
          context: { topic: this.spec.key },
        },
      ),
    );
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((resolve) => (timer = setTimeout(resolve, this.hooks.backoff(failures)))),
      this.halted,
    ]);
    clearTimeout(timer);
  }
}
