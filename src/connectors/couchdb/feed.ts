/**
 * One model's CouchDB `_changes` feed.
 *
 * Protocol:
 * 1. `open()` checks the database (GET /{db}: 404 → SOURCE_FAILED, 401 → AUTH_FAILED), picks
 *    `since` (`beginning` → 0, `now` → the database's current update_seq, so that nothing made
 *    after start is missed even if the feed must be reopened, `{after}` → the position as
 *    received) and resolves. The `_changes` loop then runs in the background until `stop()`.
 * 2. Each change becomes a ChangeEvent pushed to the sink in feed order. When `push` returns
 *    false the loop stops reading the HTTP body (the socket fills and TCP holds the server back)
 *    until `sink.drain()` resolves; the silence timer is suspended meanwhile.
 * 3. A lost connection, an error line, or `requestTimeout` ms without a byte (not even a
 *    heartbeat) reopens the feed after a back-off (reconnectDelay doubling to maxReconnectDelay),
 *    from the seq of the last change handled (pushed, or deliberately skipped). A 401/403 is
 *    fatal: `sink.fail()`. A `last_seq` line (the server ended the feed) reopens at once.
 * 4. A numeric checkpoint greater than the database's numeric update_seq means the database is
 *    not the one the position came from (deleted and recreated, restored): the feed rewinds to 0,
 *    warns, and the replay filter drops what it already published.
 */
import { eventId, type ChangeEvent, type Position, type StartFrom } from '../../events/change-event';
import { ErrorCode, EvpubError, isEvpubError, toError } from '../../errors';
import type { Logger } from '../../logger';
import type { ChangeSink } from '../contract';
import { databaseInfo, open, seqToPosition, type Request } from './http';
import { ReplayFilter } from './revs';
import type { CouchDbSettings } from './settings';
import { backoffDelay, sleepUnlessStopped } from '../../util/retry';
import { drainUnlessStopped } from '../kit/waits';

export type FeedState = 'starting' | 'streaming' | 'reconnecting' | 'stopped' | 'failed';

interface Change {
  seq?: unknown;
  id?: string;
  changes?: { rev?: string }[];
  deleted?: boolean;
  doc?: Record<string, unknown>;
  last_seq?: unknown;
  error?: string;
  reason?: string;
}

export interface FeedOptions {
  settings: CouchDbSettings;
  datasource: string;
  model: string;
  database: string;
  from: StartFrom;
  sink: ChangeSink;
  logger: Logger;
}

const INTEGER = /^\d+$/;

export class CouchFeed {
  state: FeedState = 'starting';
  /** The position of the last event pushed. */
  lastPushed: Position | null = null;
  /** Where the next request starts: the seq of the last change handled. */
  private since = '0';
  private readonly replays: ReplayFilter;
  private readonly stopper = new AbortController();
  private loop: Promise<void> | undefined;
  private silence: NodeJS.Timeout | undefined;

  get model(): string {
    return this.o.model;
  }

  constructor(private readonly o: FeedOptions) {
    this.replays = new ReplayFilter(o.settings.dedupCacheSize);
  }

  /**
   * Resolves once the database answered (it exists, we may read it) and `since` is fixed; the
   * `_changes` request then runs in the background. Rejects with an EvpubError.
   */
  async open(): Promise<void> {
    const { from } = this.o;
    const info = await databaseInfo(this.o.settings, this.o.database, this.stopper.signal);
    if (from === 'beginning') this.since = '0';
    else if (from === 'now') this.since = info.updateSeq;
    else this.since = this.checkRewind(from.after, info.updateSeq);
    // Commit the starting point, so that a restart before any change resumes here, not at "now".
    if (from === 'now') this.o.sink.mark(this.o.model, this.since);
    this.connected();
    this.loop = this.run();
  }

  private connected(): void {
    this.state = 'streaming';
    this.o.sink.status({ type: 'connected', model: this.o.model });
    this.o.logger.info({ since: this.since }, 'changes feed connected');
  }

  /** Aborts the request and resolves when the loop has ended. Harmless twice. */
  async stop(): Promise<void> {
    if (this.state !== 'failed') this.state = 'stopped';
    this.stopper.abort(new EvpubError(ErrorCode.CLIENT_CLOSED, 'connector stopped'));
    this.clearSilence();
    await this.loop;
  }

  private get stopped(): boolean {
    return this.stopper.signal.aborted;
  }

  private checkRewind(since: string, updateSeq: string): string {
    if (INTEGER.test(since) && INTEGER.test(updateSeq) && BigInt(since) > BigInt(updateSeq)) {
      this.o.logger.warn(
        { since, updateSeq },
        'the position is past the database update_seq: the database was recreated or restored; rereading from 0',
      );
      return '0';
    }
    return since;
  }

  private changes(): Promise<Request> {
    const s = this.o.settings;
    const query = new URLSearchParams({ feed: s.feed, since: this.since, heartbeat: String(s.heartbeat) });
    if (s.includeDocs) query.set('include_docs', 'true');
    if (s.feed === 'longpoll') query.set('limit', String(s.batchLimit));
    this.o.logger.debug({ since: this.since, feed: s.feed }, 'changes request');
    return open(s, this.o.database, `/_changes?${query.toString()}`, this.stopper.signal, s.requestTimeout);
  }

  /** Reads, and reopens after failures, until stopped or failed. */
  private async run(): Promise<void> {
    let attempt = 0;
    let probe = false; // open() just checked the database
    while (!this.stopped) {
      try {
        if (probe) {
          const info = await databaseInfo(this.o.settings, this.o.database, this.stopper.signal);
          this.since = this.checkRewind(this.since, info.updateSeq);
        }
        const request = await this.changes();
        if (probe && !this.stopped) this.connected(); // the feed answers again
        probe = false;
        try {
          await (this.o.settings.feed === 'continuous'
            ? this.readContinuous(request)
            : this.readLongpoll(request));
        } finally {
          request.release();
        }
        attempt = 0; // the server ended the feed cleanly: reopen at once
      } catch (err) {
        if (this.stopped) break;
        const error = toError(err);
        if (isEvpubError(error, ErrorCode.AUTH_FAILED) || isEvpubError(error, ErrorCode.TLS_FAILED)) {
          this.state = 'failed';
          this.o.sink.fail(this.o.model, error);
          return;
        }
        attempt += 1;
        probe = true;
        this.state = 'reconnecting';
        this.o.sink.status({ type: 'reconnecting', model: this.o.model, attempt, error: error.message });
        this.o.logger.warn({ attempt, err: error.message }, 'changes feed lost; reconnecting');
        await this.backOff(attempt);
      }
    }
  }

  private backOff(attempt: number): Promise<void> {
    const { reconnectDelay, maxReconnectDelay } = this.o.settings;
    return sleepUnlessStopped(
      backoffDelay(attempt, { initialDelay: reconnectDelay, maxDelay: maxReconnectDelay }),
      this.stopper.signal,
    );
  }

  /** Aborts the request when the server says nothing for requestTimeout ms. */
  private armSilence(request: Request): void {
    this.clearSilence();
    this.silence = setTimeout(() => {
      request.controller.abort(
        new EvpubError(
          ErrorCode.DISCONNECTED,
          `no data from CouchDB for ${this.o.settings.requestTimeout} ms (not even a heartbeat)`,
          { retriable: true },
        ),
      );
    }, this.o.settings.requestTimeout);
  }

  private clearSilence(): void {
    if (this.silence) clearTimeout(this.silence);
    this.silence = undefined;
  }

  /** Yields the body's text chunks, with the silence timer armed while waiting for each. */
  private async *chunks(request: Request): AsyncGenerator<string> {
    const body = request.response.body;
    if (!body) return;
    const reader = (body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        this.armSilence(request);
        let result: Awaited<ReturnType<typeof reader.read>>;
        try {
          result = await reader.read();
        } catch (err) {
          const reason: unknown = request.controller.signal.reason;
          throw isEvpubError(reason) ? reason : err;
        } finally {
          this.clearSilence();
        }
        if (result.done) break;
        yield decoder.decode(result.value, { stream: true });
      }
      const rest = decoder.decode();
      if (rest) yield rest;
    } finally {
      reader.releaseLock();
    }
  }

  /** One JSON object per line; empty lines are heartbeats; `last_seq` ends the feed. */
  private async readContinuous(request: Request): Promise<void> {
    let buffered = '';
    for await (const chunk of this.chunks(request)) {
      buffered += chunk;
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (line === '') continue;
        const change = parseLine(line);
        if (change.last_seq !== undefined) {
          this.since = seqToPosition(change.last_seq);
          return;
        }
        await this.handle(change); // pauses here (no body reads) while the sink is full
        if (this.stopped) return;
      }
    }
    throw new EvpubError(ErrorCode.DISCONNECTED, 'CouchDB closed the changes feed', { retriable: true });
  }

  /** One JSON document `{results, last_seq}`, possibly after heartbeat newlines. */
  private async readLongpoll(request: Request): Promise<void> {
    let text = '';
    for await (const chunk of this.chunks(request)) text += chunk;
    const body = parseLine(text.trim()) as Change & { results?: Change[] };
    if (!Array.isArray(body.results)) {
      throw new EvpubError(ErrorCode.SOURCE_FAILED, 'CouchDB sent a longpoll answer without results', {
        retriable: true,
      });
    }
    this.o.logger.debug({ changes: body.results.length, lastSeq: body.last_seq }, 'longpoll answer');
    for (const change of body.results) {
      await this.handle(change);
      if (this.stopped) return;
    }
    if (body.last_seq !== undefined) this.since = seqToPosition(body.last_seq);
  }

  /** Maps, filters and pushes one change; waits for drain when the sink is full. */
  private async handle(change: Change): Promise<void> {
    if (change.error !== undefined) {
      throw new EvpubError(
        ErrorCode.SOURCE_FAILED,
        `CouchDB changes feed error: ${[change.error, change.reason].filter(Boolean).join(': ')}`,
        { retriable: true, context: { database: this.o.database } },
      );
    }
    const id = change.id;
    const rev = change.changes?.[0]?.rev;
    if (typeof id !== 'string' || typeof rev !== 'string' || change.seq === undefined) {
      throw new EvpubError(ErrorCode.SOURCE_FAILED, 'CouchDB sent a change without id, rev or seq', {
        retriable: true,
        context: { database: this.o.database },
      });
    }
    const position = seqToPosition(change.seq);
    const deleted = change.deleted === true;
    const skip =
      (id.startsWith('_design/') && !this.o.settings.includeDesignDocs) ||
      !this.replays.accept(id, rev, deleted);
    if (this.stopped) return;
    this.since = position;
    if (skip) return;
    const event: ChangeEvent = {
      id: eventId(this.o.database, id, rev),
      datasource: this.o.datasource,
      model: this.o.model,
      op: deleted ? 'delete' : rev.startsWith('1-') ? 'create' : 'update',
      key: id,
      before: null,
      after: deleted ? null : (change.doc ?? null),
      position,
      sourceTime: new Date().toISOString(),
      source: { database: this.o.database, rev, seq: position },
    };
    this.lastPushed = position;
    if (!this.o.sink.push(event)) await this.drainOrStop();
  }

  private drainOrStop(): Promise<void> {
    return drainUnlessStopped(this.o.sink, this.stopper.signal);
  }
}

function parseLine(line: string): Change {
  try {
    return JSON.parse(line) as Change;
  } catch (err) {
    throw new EvpubError(
      ErrorCode.SOURCE_FAILED,
      `CouchDB sent a line that is not JSON: ${line.slice(0, 80)}`,
      {
        cause: err,
        retriable: true,
      },
    );
  }
}
