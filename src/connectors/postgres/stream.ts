/**
 * One replication connection: `START_REPLICATION SLOT ... LOGICAL` with pgoutput, through
 * pg-logical-replication.
 *
 * Protocol:
 * - The library never acknowledges on its own (`acknowledge.auto: false`, no periodic
 *   acknowledgement): the only standby status updates are `ack()` calls, which report
 *   `flush()` (the connector's safe LSN, see index.ts), and the answers to keepalives that ask
 *   for one, which report the same.
 * - Flow control is ours, not the library's (its `flowControl` awaits every message's handler:
 *   an await per change on the hot path). `onMessage` runs synchronously and returns a promise only when the stream
 *   must wait (the sink is full). Then the socket is paused (TCP holds the walsender back), the
 *   messages already read from the current chunk are queued (at most one socket read's worth),
 *   and once the promise resolves the queue is handled, in order, before the socket resumes.
 * - Column values arrive as text: the library's per-type parsers are replaced by the identity,
 *   so types.ts decodes them. An unchanged TOAST column arrives as `undefined` in a new tuple
 *   (when there is no old tuple to take it from).
 * - Keepalives tell the server's WAL end: everything before it was sent. While the last thing
 *   read is a keepalive and every message before it was handled, the connector has read all
 *   the server has for it (`caughtUp`, for its lag in seconds).
 * - A handler that throws ends the connection (the message is not skipped): `ended` resolves
 *   with the error and the connector reconnects from the slot, which re-sends everything after
 *   the acknowledged LSN.
 */
import { LogicalReplicationService, PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import { toError } from '../../errors';
import type { Logger } from '../../logger';
import { fixes, sourceError, sqlState } from './errors';
import { formatLsn, type Lsn } from './position';
import { APPLICATION_NAME, SESSION_OPTIONS, type PostgresSettings } from './settings';
import type { ConnectionOptions } from 'node:tls';

/** pgoutput with the values left as text. */
class TextPgoutputPlugin extends PgoutputPlugin {
  override parse(buffer: Buffer): Pgoutput.Message {
    const msg = super.parse(buffer);
    if (msg.tag === 'relation') for (const column of msg.columns) column.parser = (raw: unknown) => raw;
    return msg;
  }
}

export interface StreamOptions {
  settings: PostgresSettings;
  /** pg's `ssl` option (the datasource's `tls`, loaded), undefined when the URL decides. */
  ssl: ConnectionOptions | undefined;
  protoVersion: 1 | 2;
  logger: Logger;
  /** Handles one message; returns a promise only when the next message must wait for it. */
  onMessage(msg: Pgoutput.Message): Promise<void> | undefined;
  /** The LSN that may be reported as flushed now. */
  flush(): Lsn;
}

export class ReplicationStream {
  private readonly service: LogicalReplicationService;
  private broken: Error | undefined;
  private closing = false;
  private sent: Lsn = 0n;
  private timer: NodeJS.Timeout | undefined;
  /** Set while a handler's promise is pending: messages wait in `queue`, the socket is paused. */
  private waiting = false;
  private queue: Pgoutput.Message[] = [];
  /** The last thing read was a keepalive: no message came after it. */
  private quiet = false;
  /** Resolves when this connection has ended: with the reason, or undefined after close(). */
  readonly ended: Promise<Error | undefined>;
  private end!: (err: Error | undefined) => void;

  constructor(private readonly o: StreamOptions) {
    this.ended = new Promise((resolve) => (this.end = resolve));
    this.service = new LogicalReplicationService(
      {
        connectionString: o.settings.url,
        ...(o.ssl ? { ssl: o.ssl } : {}),
        options: SESSION_OPTIONS,
        connectionTimeoutMillis: o.settings.connectTimeout,
        application_name: APPLICATION_NAME,
      },
      { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: false } },
    );
    this.service.on('error', (err: Error) => {
      this.o.logger.debug({ err: err.message }, 'replication connection error');
    });
    this.service.on('data', (_lsn: string, msg: Pgoutput.Message) => {
      this.quiet = false;
      if (this.broken || this.closing) return;
      if (this.waiting) this.queue.push(msg);
      else this.run(msg);
    });
    this.service.on('heartbeat', (_lsn: string, _time: number, shouldRespond: boolean) => {
      this.quiet = true;
      if (shouldRespond) this.ack();
    });
  }

  /** Connects and starts replication; resolves once the server streams, rejects with an EvpubError. */
  async open(): Promise<void> {
    const { slot, publication } = this.o.settings;
    const plugin = new TextPgoutputPlugin({
      protoVersion: this.o.protoVersion,
      publicationNames: [publication],
      messages: true,
    });
    const started = new Promise<void>((resolve) => this.service.once('start', () => resolve()));
    // '0/0': the server starts at the slot's confirmed LSN.
    const running = this.service.subscribe(plugin, slot, '0/0');
    const outcome = await Promise.race([
      started.then(() => undefined),
      running.then(
        () => new Error('replication ended before it started'),
        (err: unknown) => toError(err),
      ),
    ]);
    if (outcome) {
      await this.service.stop().catch(() => undefined);
      throw translate(slot, outcome, this.o.settings.displayUrl);
    }
    this.sent = this.o.flush();
    this.timer = setInterval(() => this.ack(), this.o.settings.statusInterval);
    running.then(
      () =>
        this.finish(this.broken ?? (this.closing ? undefined : new Error('replication connection closed'))),
      (err: unknown) => this.finish(this.broken ?? translate(slot, toError(err), this.o.settings.displayUrl)),
    );
  }

  /** Handles a message; when its handler must be waited for, pauses until it and the queue are done. */
  private run(msg: Pgoutput.Message): void {
    let pending: Promise<void> | undefined;
    try {
      pending = this.o.onMessage(msg);
    } catch (err) {
      return this.break(err);
    }
    if (pending) void this.wait(pending);
  }

  private async wait(pending: Promise<void>): Promise<void> {
    this.waiting = true;
    this.socket()?.pause();
    try {
      await pending;
      // Handled in order; a handler that must wait again is awaited in turn.
      for (let i = 0; i < this.queue.length && !this.broken && !this.closing; i++) {
        const next = this.o.onMessage(this.queue[i]!);
        if (next) await next;
      }
    } catch (err) {
      this.break(err);
    }
    this.queue = [];
    this.waiting = false;
    if (!this.broken && !this.closing) this.socket()?.resume();
  }

  /** A handler failed: the connection ends (the message is not skipped; see the protocol). */
  private break(err: unknown): void {
    this.broken ??= toError(err);
    void this.service.stop();
  }

  /** The replication connection's socket (the library keeps it as `_connection.stream`). */
  private socket(): { pause(): void; resume(): void } | undefined {
    return (this.service as unknown as { _connection?: { stream?: { pause(): void; resume(): void } } })
      ._connection?.stream;
  }

  private finish(err: Error | undefined): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.end(this.closing ? undefined : err);
  }

  /** Sends a standby status update reporting `flush()` (never less than what was sent). */
  ack(): void {
    const flush = this.o.flush();
    if (flush > this.sent) this.sent = flush;
    if (this.sent === 0n || this.closing) return;
    // The library reports lsn + 1 as written/flushed/applied.
    void this.service.acknowledge(formatLsn(this.sent - 1n)).catch(() => undefined);
  }

  /**
   * The server had nothing more to send: the last thing read was a keepalive (its WAL end is past
   * every message before it) and every message was handled (none waits in the queue).
   */
  get caughtUp(): boolean {
    return this.quiet && !this.waiting;
  }

  get acknowledged(): Lsn {
    return this.sent;
  }

  async close(): Promise<void> {
    if (this.closing) return this.ended.then(() => undefined);
    this.ack();
    this.closing = true;
    if (this.timer) clearInterval(this.timer);
    await this.service.stop().catch(() => undefined);
    this.end(undefined);
    this.service.removeAllListeners();
  }
}

function translate(slot: string, err: Error, displayUrl: string): Error {
  const state = sqlState(err);
  if (state === '55006') {
    const pid = /PID (\d+)/i.exec(err.message);
    return fixes.slotInUse(slot, pid ? Number(pid[1]) : null, err);
  }
  if (state === '42704') return fixes.slotLost(slot, 'does not exist (it was dropped)');
  if (state === '55000' && /invalidated|cannot read from/i.test(err.message)) {
    return fixes.slotLost(slot, 'was invalidated (it fell behind max_slot_wal_keep_size)');
  }
  if (/superuser or replication role/i.test(err.message)) {
    return fixes.noReplication('(connecting user)');
  }
  return sourceError('replication failed', err, displayUrl);
}
