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
 *   batched per tick.
 *   Claims: entries pending in the group for `claim.idleMs` or longer, whichever consumer they
 *   were delivered to (a crashed process's, which will never ack them, or this one's, whose
 *   handler never acked), are taken over with XAUTOCLAIM <key> <group> <consumer> <idleMs>,
 *   paging from 0-0 until the cursor comes back to 0-0, and delivered with `redelivered: true`,
 *   in stream order, before the next new entries. A pass runs when the reader starts (after its
 *   own pending entries) and then every idleMs/2: the blocking read waits at most until the
 *   next pass is due. An entry pending for less than idleMs is never taken: a live consumer's
 *   entries in progress stay with it as long as its handler acks within idleMs (like
 *   JetStream's ack wait). With `claim.maxDeliveries`, a claimed entry whose delivery count
 *   (XPENDING, after the claim) exceeds it is acknowledged without delivery and logged at error
 *   level: it stays in the stream (XRANGE <key> <id> <id>) until trimmed, but the group is past it.
 *   A vanished group (NOGROUP: stream deleted, broker restarted without
 *   persistence) is created again from id 0, so nothing left in the stream is skipped.
 * `stop()` closes the reader's connection, which ends the blocked call at once; no entry is
 * delivered after `stop()` was called.
 */
import type { MessageMeta, PublishOptions } from '../adapter';
import { ErrorCode, EvpubError, toError } from '../../errors';
import type { Logger } from '../../logger';
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

/** An XAUTOCLAIM reply: `[next cursor, [[id, fields] | nil, ...], deleted ids (Redis 7)]`. */
export function decodeClaim(reply: unknown): { cursor: string; entries: Entry[] } {
  if (!Array.isArray(reply) || reply.length < 2) return { cursor: '0-0', entries: [] };
  const claimed: unknown = reply[1];
  const entries = Array.isArray(claimed)
    ? claimed.map((e: unknown) => {
        // Redis 6.2 answers nil for an entry deleted from the stream; 7 drops it from the PEL.
        if (!Array.isArray(e)) return decodeFields('', undefined);
        const [id, fields] = e as [Buffer | string, unknown];
        return decodeFields(String(id), fields);
      })
    : [];
  return { cursor: String(reply[0]), entries: entries.filter((e) => e.id !== '') };
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
  /** For a group reader: when to take over entries other reads left pending. */
  claim?: { idleMs: number; maxDeliveries?: number };
}

export interface ReaderHooks {
  deliver(topic: string, payload: Buffer, meta: MessageMeta): void;
  /** XACK on the command connection. */
  ack(key: string, group: string, ids: string[]): Promise<unknown>;
  /** XGROUP CREATE <key> <group> <id> MKSTREAM, ignoring BUSYGROUP. */
  createGroup(key: string, group: string, id: string): Promise<void>;
  error(err: Error): void;
  logger: Logger;
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

type Phase = 'plain' | 'pending' | 'claim' | 'new';

const STOPPED = Symbol('stopped');
const ABANDONED = Symbol('abandoned');

export class StreamReader {
  private stopped = false;
  private rereadPending = true;
  private pendingCursor = '0';
  /** XAUTOCLAIM: the cursor of the pass under way, and when the next pass is due. */
  private claimCursor = '0-0';
  private claimDueAt = 0;
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

  private phase(): Phase {
    if (!this.spec.group) return 'plain';
    if (this.rereadPending) return 'pending';
    if (this.spec.claim && Date.now() >= this.claimDueAt) return 'claim';
    return 'new';
  }

  private read(phase: Phase): Promise<unknown> {
    const { key, group, claim } = this.spec;
    if (!group) {
      return this.conn.callBuffer('xread', 'COUNT', READ_COUNT, 'BLOCK', 0, 'STREAMS', key, this.after);
    }
    if (phase === 'claim' && claim) {
      return this.conn.callBuffer(
        'xautoclaim',
        key,
        group.name,
        group.consumer,
        claim.idleMs,
        this.claimCursor,
        'COUNT',
        READ_COUNT,
      );
    }
    const id = phase === 'pending' ? this.pendingCursor : '>';
    // BLOCK 0 waits for ever: with claims, wait only until the next pass is due.
    const block = claim ? Math.max(1, this.claimDueAt - Date.now()) : 0;
    return this.conn.callBuffer(
      'xreadgroup',
      'GROUP',
      group.name,
      group.consumer,
      'COUNT',
      READ_COUNT,
      'BLOCK',
      block,
      'STREAMS',
      key,
      id,
    );
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      const phase = this.phase();
      let entries: Entry[];
      try {
        // Acks still in flight would make their entries look pending.
        if (phase === 'pending' || phase === 'claim') await this.acks?.settled();
        this.readEpoch = this.epoch;
        const reply = await this.guarded(this.read(phase));
        if (reply === STOPPED) return;
        if (reply === ABANDONED) continue;
        if (phase === 'claim') {
          const claimed = decodeClaim(reply);
          const kept = await this.overDelivered(claimed.entries);
          if (kept === STOPPED) return;
          // Abandoned: what was claimed is this consumer's now, and is re-read as its pending.
          if (kept === ABANDONED) continue;
          this.claimCursor = claimed.cursor;
          if (claimed.cursor === '0-0') this.claimDueAt = Date.now() + this.claimInterval();
          entries = kept;
        } else {
          entries = decodeRead(reply);
        }
        failures = 0;
      } catch (err) {
        if (this.stopped) return;
        await this.recover(toError(err), ++failures);
        continue;
      }
      if (phase === 'pending') {
        if (entries.length === 0) this.rereadPending = false;
        else this.pendingCursor = entries[entries.length - 1]!.id;
      }
      for (const entry of entries) {
        if (this.stopped) return;
        this.after = entry.id;
        this.deliver(entry, phase === 'pending' || phase === 'claim');
      }
    }
  }

  /**
   * A command on the reader's connection, given up on `stop()` or when the connection closed
   * since `readEpoch` (it is not resent, so it may never settle).
   */
  private async guarded<T>(command: Promise<T>): Promise<T | typeof STOPPED | typeof ABANDONED> {
    if (this.readEpoch < this.epoch) {
      command.catch(() => undefined);
      return ABANDONED;
    }
    const abandoned = new Promise<typeof ABANDONED>((resolve) => (this.interrupt = () => resolve(ABANDONED)));
    try {
      return await Promise.race([command, this.halted, abandoned]);
    } finally {
      this.interrupt = undefined;
    }
  }

  /** Milliseconds between claim passes. */
  private claimInterval(): number {
    return Math.max(1, Math.ceil((this.spec.claim?.idleMs ?? 0) / 2));
  }

  /**
   * With `maxDeliveries`: acknowledges (without delivering) the claimed entries delivered more
   * often than that, logging each; returns the others.
   */
  private async overDelivered(entries: Entry[]): Promise<Entry[] | typeof STOPPED | typeof ABANDONED> {
    const { key, group, claim } = this.spec;
    const max = claim?.maxDeliveries;
    const present = entries.filter((e) => e.present);
    if (max === undefined || !group || present.length === 0) return entries;
    // XPENDING <key> <group> <first> <last> <count> <consumer>: [[id, consumer, idle, count], ...]
    const reply = await this.guarded(
      this.conn.call(
        'xpending',
        key,
        group.name,
        present[0]!.id,
        present[present.length - 1]!.id,
        entries.length,
        group.consumer,
      ),
    );
    if (reply === STOPPED || reply === ABANDONED) return reply;
    const rows = (Array.isArray(reply) ? reply : []) as [string, string, number, number][];
    const deliveries = new Map(rows.map((row) => [String(row[0]), Number(row[3])]));
    return entries.filter((entry) => {
      const count = deliveries.get(entry.id) ?? 0;
      if (!entry.present || count <= max) return true;
      this.hooks.logger.error(
        { stream: key, group: group.name, id: entry.id, deliveries: count, maxDeliveries: max },
        'redis stream entry delivered more than maxDeliveries times without an ack; acknowledged without delivery (it stays in the stream until trimmed)',
      );
      this.acks?.add(entry.id).catch((err: unknown) => this.hooks.error(toError(err)));
      return false;
    });
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
        this.claimCursor = '0-0';
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
