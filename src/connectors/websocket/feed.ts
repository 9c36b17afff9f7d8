/**
 * One model's WebSocket connection.
 *
 * Protocol:
 * 1. `open()` connects (retrying with back-off until `connectTimeout` has passed; an HTTP 401
 *    or 403 answer to the upgrade is AUTH_FAILED at once, a TLS failure TLS_FAILED), sends the subscribe messages, and
 *    resolves. In resume mode the URL carries `?<param>=<cursor>`: the checkpoint for
 *    `{ after }`, `resume.beginning` (if set) for `'beginning'`, nothing for `'now'`.
 * 2. Every text or binary frame is one JSON message, queued and handled in arrival order:
 *    parsed, matched against the model, mapped, and pushed. When `push` returns false the
 *    socket is paused (`ws.pause()`: no reads, TCP holds the server back) until `sink.drain()`;
 *    frames ws had already read are queued meanwhile (at most one socket read's worth).
 * 3. Heartbeat: every `pingInterval` ms a ping is sent; no pong nor message within
 *    `pingTimeout` ms means the connection is dead: it is terminated. Suspended while paused.
 * 4. A lost connection reconnects with back-off (reconnectDelay doubling to maxReconnectDelay),
 *    in resume mode from the cursor of the last message handled (pushed, or skipped as not the
 *    model's); without resume, messages sent while disconnected are lost unless the server
 *    replays them. 401/403 or a TLS failure on a reconnect is fatal: `sink.fail()`.
 * 5. A message that is not JSON or has no key follows `onMalformed`: `skip` (the default) hands
 *    it to `sink.deadLetter()` with its reason and its cursor as position (in resume mode), so
 *    it reaches the dead-letter topic and is committed in turn; `raw` pushes it as an event;
 *    `fail` stops the feed.
 * 6. In resume mode a message that gives no event but has a cursor (another model's, a server
 *    hello or heartbeat) is `sink.mark()`ed: a feed started `'now'` is committed
 *    at the first cursor the server sends, even before any event of its own.
 */
import WebSocket, { type RawData } from 'ws';
import type { IncomingMessage } from 'node:http';
import type { ChangeEvent, Position, StartFrom } from '../../events/change-event';
import { ErrorCode, EvpubError, isEvpubError, toError } from '../../errors';
import type { Logger } from '../../logger';
import { tlsFailure } from '../../util/tls';
import type { ChangeSink } from '../contract';
import {
  keyText,
  MalformedCounter,
  mapMessage,
  matches,
  rawMapped,
  readPath,
  type Mapped,
} from '../kit/json-mapping';
import type { WebSocketModelSettings, WebSocketSettings } from './settings';
import { backoffDelay, retry, sleepUnlessStopped } from '../../util/retry';
import { drainUnlessStopped } from '../kit/waits';

export type FeedState = 'starting' | 'streaming' | 'reconnecting' | 'stopped' | 'failed';

export interface WsFeedOptions {
  settings: WebSocketSettings;
  model: WebSocketModelSettings;
  datasource: string;
  name: string;
  from: StartFrom;
  sink: ChangeSink;
  logger: Logger;
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

export class WsFeed {
  state: FeedState = 'starting';
  lastPushed: Position | null = null;
  readonly malformed = new MalformedCounter();
  /** Messages of the connection that were not this model's (no match). */
  ignored = 0;
  /** Where a (re)connection resumes, in resume mode. */
  private cursor: string | undefined;
  private ws: WebSocket | undefined;
  private readonly queue: Buffer[] = [];
  /** The latest pump, for stop() to await. */
  private pumping: Promise<void> | undefined;
  private busy = false;
  private paused = false;
  private readonly stopper = new AbortController();
  private pingTimer: NodeJS.Timeout | undefined;
  private pongTimer: NodeJS.Timeout | undefined;
  private deadReason: string | undefined;
  private reconnecting: Promise<void> | undefined;

  constructor(private readonly o: WsFeedOptions) {
    const { resume } = o.settings;
    if (resume) {
      if (typeof o.from === 'object') this.cursor = o.from.after;
      else if (o.from === 'beginning') this.cursor = resume.beginning;
    }
  }

  get name(): string {
    return this.o.name;
  }

  private get stopped(): boolean {
    return this.stopper.signal.aborted;
  }

  /** Resolves once connected and subscribed; rejects with an EvpubError. */
  async open(): Promise<void> {
    const { connectTimeout, reconnectDelay, maxReconnectDelay } = this.o.settings;
    const deadline = Date.now() + connectTimeout;
    let ws: WebSocket;
    try {
      // connectOnce's refusals (AUTH_FAILED) and a stop (CLIENT_CLOSED) are not retriable.
      ws = await retry(() => this.connectOnce(Math.max(1, deadline - Date.now())), {
        initialDelay: reconnectDelay,
        maxDelay: maxReconnectDelay,
        deadline,
        signal: this.stopper.signal,
      });
    } catch (err) {
      const error = toError(err);
      if (this.stopped || !isEvpubError(error) || !error.retriable) throw error;
      throw new EvpubError(
        ErrorCode.CONNECT_FAILED,
        `websocket ${this.o.settings.displayUrl}: no connection within ${connectTimeout} ms: ${error.message}`,
        {
          cause: error,
          retriable: true,
          context: { url: this.o.settings.displayUrl, model: this.o.name },
        },
      );
    }
    this.attach(ws);
  }

  private target(): string {
    const { resume, url } = this.o.settings;
    if (!resume || this.cursor === undefined) return url;
    const u = new URL(url);
    u.searchParams.set(resume.param, this.cursor);
    return u.toString();
  }

  /** One connection attempt; resolves with the open socket. */
  private connectOnce(timeout: number): Promise<WebSocket> {
    const s = this.o.settings;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.target(), {
        headers: s.headers,
        handshakeTimeout: timeout,
        maxPayload: s.maxPayload,
        ...s.ssl,
      });
      // Listening at once: frames that came with the upgrade answer are emitted right after 'open'.
      ws.on('message', (data) => this.onMessage(data));
      ws.on('pong', () => this.alive());
      let status: number | undefined;
      const onAbort = (): void => ws.terminate();
      this.stopper.signal.addEventListener('abort', onAbort, { once: true });
      const done = (): void => {
        this.stopper.signal.removeEventListener('abort', onAbort);
        ws.removeAllListeners('open');
        ws.removeAllListeners('error');
        ws.removeAllListeners('unexpected-response');
      };
      ws.once('unexpected-response', (_req, res: IncomingMessage) => {
        status = res.statusCode;
        res.resume();
        ws.terminate();
      });
      ws.once('open', () => {
        done();
        resolve(ws);
      });
      ws.once('error', (err) => {
        done();
        ws.on('error', () => undefined);
        const where = { url: s.displayUrl, model: this.o.name, status };
        if (status === 401 || status === 403) {
          reject(
            new EvpubError(
              ErrorCode.AUTH_FAILED,
              `websocket ${s.displayUrl}: the server refused the connection with HTTP ${status} (check the credentials in headers)`,
              { context: where },
            ),
          );
        } else if (this.stopped) {
          reject(new EvpubError(ErrorCode.CLIENT_CLOSED, 'connector stopped', { context: where }));
        } else if (status === undefined && tlsFailure(err, s.displayUrl)) {
          reject(tlsFailure(err, s.displayUrl) ?? err);
        } else {
          const why = status === undefined ? err.message : `the server answered HTTP ${status}`;
          reject(
            new EvpubError(ErrorCode.CONNECT_FAILED, `websocket ${s.displayUrl}: ${why}`, {
              cause: err,
              retriable: true,
              context: where,
            }),
          );
        }
      });
    });
  }

  /** Takes an open socket into use: subscribes, listens, starts the heartbeat. */
  private attach(ws: WebSocket): void {
    if (this.stopped) {
      ws.terminate();
      return;
    }
    this.ws = ws;
    this.deadReason = undefined;
    ws.on('error', (err) => {
      this.deadReason ??= err.message;
    });
    ws.once('close', (code, reason) => this.onClose(ws, code, reason.toString('utf8')));
    for (const message of this.o.model.subscribe) ws.send(message);
    if (this.paused) ws.pause();
    else this.armPing();
    this.state = 'streaming';
    this.o.sink.status({ type: 'connected', model: this.o.name });
    this.o.logger.info(
      { url: this.o.settings.displayUrl, resumeFrom: this.cursor ?? null },
      'websocket connected',
    );
  }

  private onMessage(data: RawData): void {
    this.alive();
    this.queue.push(toBuffer(data));
    if (!this.busy) this.pumping = this.pump();
  }

  private onClose(ws: WebSocket, code: number, reason: string): void {
    if (ws !== this.ws) return;
    this.clearPing();
    this.ws = undefined;
    if (this.stopped || this.state === 'failed') return;
    const why =
      this.deadReason ?? `the server closed the connection (code ${code}${reason ? `: ${reason}` : ''})`;
    this.reconnecting ??= this.reconnect(why).finally(() => (this.reconnecting = undefined));
  }

  private async reconnect(why: string): Promise<void> {
    const { reconnectDelay, maxReconnectDelay } = this.o.settings;
    let attempt = 0;
    let error = why;
    while (!this.stopped) {
      attempt += 1;
      this.state = 'reconnecting';
      this.o.sink.status({ type: 'reconnecting', model: this.o.name, attempt, error });
      this.o.logger.warn(
        { attempt, err: error, resumeFrom: this.cursor ?? null },
        'websocket lost; reconnecting',
      );
      await this.sleep(backoffDelay(attempt, { initialDelay: reconnectDelay, maxDelay: maxReconnectDelay }));
      if (this.stopped) return;
      try {
        this.attach(await this.connectOnce(this.o.settings.connectTimeout));
        return;
      } catch (err) {
        if (this.stopped) return;
        if (isEvpubError(err, ErrorCode.AUTH_FAILED) || isEvpubError(err, ErrorCode.TLS_FAILED)) {
          this.state = 'failed';
          this.o.sink.fail(this.o.name, err);
          return;
        }
        error = toError(err).message;
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Heartbeat

  private alive(): void {
    if (this.pongTimer) clearTimeout(this.pongTimer);
    this.pongTimer = undefined;
  }

  private armPing(): void {
    const { pingInterval, pingTimeout } = this.o.settings;
    if (pingInterval === 0 || this.pingTimer) return;
    this.pingTimer = setInterval(() => {
      const ws = this.ws;
      if (!ws || this.paused || ws.readyState !== WebSocket.OPEN || this.pongTimer) return;
      ws.ping();
      this.pongTimer = setTimeout(() => {
        this.pongTimer = undefined;
        this.deadReason = `no pong nor message within ${pingTimeout} ms: the connection is dead`;
        ws.terminate();
      }, pingTimeout);
    }, pingInterval);
  }

  private clearPing(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = undefined;
    this.alive();
  }

  // -------------------------------------------------------------------------------------------
  // Messages

  /**
   * Handles queued messages in order until the queue is empty. `busy` is set and cleared
   * synchronously (a pump that never waits ends within the call), so one pump runs at a time
   * and a message queued after it ended starts the next.
   */
  private async pump(): Promise<void> {
    this.busy = true;
    try {
      while (this.queue.length > 0 && !this.stopped && this.state !== 'failed') {
        const data = this.queue.shift()!;
        if (this.handle(data)) continue;
        this.paused = true;
        this.clearPing();
        this.ws?.pause();
        await this.drainOrStop();
        this.paused = false;
        if (this.stopped) return;
        this.ws?.resume();
        if (this.ws) this.armPing();
      }
    } finally {
      this.busy = false;
    }
  }

  /** Handles one message; false when the sink is full. */
  private handle(raw: Buffer): boolean {
    const { mapping, cursorPath } = this.o.model;
    let message: unknown;
    let mapped: Mapped;
    const context = { model: this.o.name, raw };
    try {
      message = JSON.parse(raw.toString('utf8')) as unknown;
    } catch (err) {
      return this.malformedMessage(raw, `not JSON: ${toError(err).message}`, undefined);
    }
    const cursor = cursorPath ? keyText(readPath(message, cursorPath)) : undefined;
    if (!matches(mapping, message)) {
      this.ignored += 1;
      this.passed(cursor);
      return true;
    }
    try {
      mapped = mapMessage(mapping, message, context);
    } catch (err) {
      return this.malformedMessage(raw, toError(err).message, cursor);
    }
    return this.pushMapped(mapped, cursor);
  }

  private malformedMessage(raw: Buffer, why: string, cursor: string | undefined): boolean {
    const { mapping } = this.o.model;
    if (mapping.onMalformed === 'fail') {
      this.state = 'failed';
      this.o.sink.fail(
        this.o.name,
        new EvpubError(
          ErrorCode.SOURCE_FAILED,
          `websocket ${this.o.settings.displayUrl}: malformed message: ${why}`,
          {
            context: { model: this.o.name, bytes: raw.length },
          },
        ),
      );
      this.ws?.terminate();
      return true;
    }
    if (this.malformed.shouldLog()) {
      this.o.logger.warn(
        { bytes: raw.length, err: why, malformed: this.malformed.count, onMalformed: mapping.onMalformed },
        mapping.onMalformed === 'raw'
          ? 'malformed message published as raw'
          : 'malformed message skipped (dead-lettered)',
      );
    }
    if (mapping.onMalformed === 'raw')
      return this.pushMapped(rawMapped(mapping, { model: this.o.name, raw }), cursor);
    const position = this.o.settings.resume ? (cursor ?? null) : null;
    if (cursor !== undefined) this.cursor = cursor;
    if (position !== null) this.lastPushed = position;
    return this.o.sink.deadLetter(this.o.name, {
      payload: raw,
      reason: `malformed message: ${why}`,
      code: ErrorCode.MALFORMED_INPUT,
      position,
      source: { url: this.o.settings.displayUrl, ...(cursor !== undefined ? { cursor } : {}) },
    });
  }

  /** A message with a cursor that gave no event: resume after it, and let it be committed. */
  private passed(cursor: string | undefined): void {
    if (cursor === undefined) return;
    this.cursor = cursor;
    if (this.o.settings.resume) this.o.sink.mark(this.o.name, cursor);
  }

  private pushMapped(mapped: Mapped, cursor: string | undefined): boolean {
    const position = this.o.settings.resume ? (cursor ?? null) : null;
    const event: ChangeEvent = {
      ...mapped,
      datasource: this.o.datasource,
      model: this.o.name,
      position,
      source: { url: this.o.settings.displayUrl, ...(cursor !== undefined ? { cursor } : {}) },
    };
    if (cursor !== undefined) this.cursor = cursor;
    if (position !== null) this.lastPushed = position;
    return this.o.sink.push(event);
  }

  // -------------------------------------------------------------------------------------------
  // Waiting and stopping

  private sleep(ms: number): Promise<void> {
    return sleepUnlessStopped(ms, this.stopper.signal);
  }

  /** Waits for room or stop; a failed drain is logged and reading goes on. */
  private drainOrStop(): Promise<void> {
    return drainUnlessStopped(this.o.sink, this.stopper.signal).catch((err: Error) => {
      this.o.logger.warn({ err }, 'drain failed');
    });
  }

  /** Closes the connection and resolves when it is closed. Harmless twice. */
  async stop(): Promise<void> {
    if (this.state !== 'failed') this.state = 'stopped';
    this.stopper.abort();
    this.clearPing();
    this.queue.length = 0;
    const ws = this.ws;
    if (ws && ws.readyState !== WebSocket.CLOSED) {
      const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
      ws.resume(); // a paused socket would never read the server's close frame
      ws.close(1000, 'evpub stopping');
      const timer = setTimeout(() => ws.terminate(), 1000);
      await closed;
      clearTimeout(timer);
    }
    await Promise.all([this.pumping, this.reconnecting]);
  }
}
