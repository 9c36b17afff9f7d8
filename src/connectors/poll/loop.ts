/**
 * The polling loop of one model, shared by the SQL and HTTP pollers.
 *
 * Protocol:
 * 1. `open()` runs the source's `open(from)` (connect, check the table or URL, fix the starting
 *    cursor: `'beginning'` → none, `'now'` → the source's current end, `{after}` → the
 *    position's cursor) and resolves; the loop then runs in the background until `stop()`.
 *    A `'now'` start hands its cursor to `sink.mark()`, so it is committed without any change.
 * 2. Each round calls `source.next()`, which returns the changes after the cursor, oldest first,
 *    each with the cursor just past it. Every change is pushed in order, and the cursor moves
 *    to it once pushed: the event's position is that cursor, JSON-encoded. When `push` returns
 *    false the loop awaits `sink.drain()` before the next push or poll (no polling while the
 *    window is full). A round that says `more` polls again at once; otherwise the loop sleeps
 *    `interval` ms.
 * 3. A failed round (connection lost, HTTP 5xx...) is retried after a back-off doubling from
 *    `interval` to 30 s, from the same cursor, with `reconnecting` status; the next successful
 *    round reports `connected`. Nothing is skipped. An AUTH_FAILED error (HTTP 401/403) or a
 *    TLS_FAILED one (a certificate not trusted, expired, for another name) is not retried: it
 *    goes to `sink.fail()`.
 * 4. `stop()` aborts the sleep or drain wait, lets the round in progress finish without pushing
 *    more, and closes the source.
 */
import type { ChangeEvent, Position, StartFrom } from '../../events/change-event';
import { ErrorCode, EvpubError, isEvpubError, toError } from '../../errors';
import type { Logger } from '../../logger';
import type { ChangeSink } from '../contract';
import { backoffDelay, sleepUnlessStopped } from '../../util/retry';
import { drainUnlessStopped } from '../kit/waits';

export interface Polled<C> {
  event: ChangeEvent;
  /** The cursor just past this change (its position, once JSON-encoded). */
  cursor: C;
}

export interface PollRound<C> {
  changes: Polled<C>[];
  /** True when the source may have more right now (a full batch, another page). */
  more: boolean;
  /** Where to continue when the round moved the cursor without changes (an empty next page). */
  cursor?: C;
}

/** One model's source: a table, an API endpoint. */
export interface PollSource<C> {
  /** Connects, checks the model, and returns the starting cursor (undefined: from the start). */
  open(from: StartFrom, resumeAt: C | undefined, signal: AbortSignal): Promise<C | undefined>;
  /** The changes after `cursor`, oldest first. */
  next(cursor: C | undefined, signal: AbortSignal): Promise<PollRound<C>>;
  close(): Promise<void>;
  /** Parses a position back into a cursor (undefined: the start); throws CONFIG_INVALID when it is not one. */
  parsePosition(position: Position): C | undefined;
  /** The position of a cursor (undefined: the start), for `sink.mark`. */
  positionOf(cursor: C | undefined): Position;
}

export type LoopState = 'starting' | 'streaming' | 'reconnecting' | 'stopped' | 'failed';

const MAX_BACKOFF_MS = 30_000;

export class PollLoop<C> {
  state: LoopState = 'starting';
  lastPushed: Position | null = null;
  private cursor: C | undefined;
  private readonly stopper = new AbortController();
  private loop: Promise<void> | undefined;

  constructor(
    private readonly o: {
      model: string;
      source: PollSource<C>;
      sink: ChangeSink;
      interval: number;
      logger: Logger;
    },
  ) {}

  get model(): string {
    return this.o.model;
  }

  async open(from: StartFrom): Promise<void> {
    const resumeAt = typeof from === 'object' ? this.o.source.parsePosition(from.after) : undefined;
    this.cursor = await this.o.source.open(from, resumeAt, this.stopper.signal);
    // Where 'now' resolved is committed even if no change comes: a restart resumes there.
    if (from === 'now') this.o.sink.mark(this.o.model, this.o.source.positionOf(this.cursor));
    this.state = 'streaming';
    this.o.sink.status({ type: 'connected', model: this.o.model });
    this.o.logger.info({ cursor: this.cursor }, 'polling');
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    if (this.state !== 'failed') this.state = 'stopped';
    this.stopper.abort(new EvpubError(ErrorCode.CLIENT_CLOSED, 'connector stopped'));
    await this.loop;
    await this.o.source.close().catch((err: unknown) => {
      this.o.logger.warn({ err: toError(err).message }, 'closing the source failed');
    });
  }

  private get stopped(): boolean {
    return this.stopper.signal.aborted;
  }

  private async run(): Promise<void> {
    let attempt = 0;
    while (!this.stopped) {
      let more = false;
      try {
        const round = await this.o.source.next(this.cursor, this.stopper.signal);
        if (attempt > 0 && !this.stopped) {
          attempt = 0;
          this.state = 'streaming';
          this.o.sink.status({ type: 'connected', model: this.o.model });
        }
        for (const { event, cursor } of round.changes) {
          if (this.stopped) return;
          this.cursor = cursor;
          this.lastPushed = event.position;
          if (!this.o.sink.push(event)) await this.drainOrStop();
        }
        if (round.changes.length === 0 && round.cursor !== undefined && !this.stopped) {
          this.cursor = round.cursor;
          this.o.sink.mark(this.o.model, this.o.source.positionOf(round.cursor));
        }
        more = round.more;
      } catch (err) {
        if (this.stopped) return;
        const error = toError(err);
        if (isEvpubError(error, ErrorCode.AUTH_FAILED) || isEvpubError(error, ErrorCode.TLS_FAILED)) {
          this.state = 'failed';
          this.o.sink.fail(this.o.model, error);
          return;
        }
        attempt += 1;
        this.state = 'reconnecting';
        this.o.sink.status({ type: 'reconnecting', model: this.o.model, attempt, error: error.message });
        this.o.logger.warn({ attempt, err: error.message }, 'poll failed; retrying');
        // Two intervals after the first failure, doubling up to 30 s.
        await this.sleep(
          backoffDelay(attempt, { initialDelay: 2 * this.o.interval, maxDelay: MAX_BACKOFF_MS }),
        );
        continue;
      }
      if (!more) await this.sleep(this.o.interval);
    }
  }

  private sleep(ms: number): Promise<void> {
    return sleepUnlessStopped(ms, this.stopper.signal);
  }

  /** Waits for room or stop; a failed drain just ends the wait. */
  private drainOrStop(): Promise<void> {
    return drainUnlessStopped(this.o.sink, this.stopper.signal).catch(() => undefined);
  }
}
