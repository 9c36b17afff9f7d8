/**
 * Live events for browsers: the events the brokers confirmed, as Server-Sent Events at
 * `GET /api/events` and as WebSocket messages at `GET /api/events/ws`, with a bounded in-memory
 * ring for replay. A fastify plugin (`eventsRoutes`) over an `EventStream` (the ring and the
 * fan-out), fed by `app.events()`.
 *
 * Protocol:
 * - The ring holds the last `ringSize` events published (every feed, in the order the brokers
 *   confirmed them) while a client is connected and for `keepMs` (60 s) after the last one left,
 *   so that a browser that reconnects finds what it missed. With nobody watching it records
 *   nothing: held for a thousand events, every payload would outlive the young generation and
 *   be promoted (measured: +73 MB peak RSS in a 100,000-row burst to NATS). A client that comes
 *   back after that with an id gets a `gap`.
 * - A client names a place in the stream with the id of the last event it got (SSE:
 *   the `Last-Event-ID` header, as `EventSource` sends it on reconnect, or `?lastEventId=`;
 *   WebSocket: `?lastEventId=`). Found in the ring: it gets every later event (after its
 *   filters) and then live ones, with nothing lost or repeated in between. Not found (older
 *   than the ring, or from before a restart): it gets a `gap` message first, then live events.
 *   No id: live events from now.
 * - Filters: `model` (exact model name) and `topic` (an MQTT-style pattern over the topic the
 *   event was published to: `+` one level, `#` the rest; `orders/#`).
 * - Each client reads the ring through its own cursor: publishing an event costs the pipeline a
 *   ring slot and a wake-up per client, never a write. The writes to a client happen later
 *   (batched once per turn of the event loop, or at once when it falls 256 events, or half its
 *   bound, behind).
 *   A client's bound: at most `clientQueue.bytes` written to its socket and not yet sent
 *   (`res.write` returning false counts: what the socket has not taken stays counted), and at
 *   most `clientQueue.messages` events behind the newest (never more than the ring holds).
 *   Past that the client is disconnected with the reason (SSE: an `overflow` message, then the
 *   end of the response; WebSocket: an `overflow` message, then close code 1008): a slow browser
 *   never slows a feed nor grows the memory. It may reconnect with its last id.
 * - Heartbeats every `heartbeatMs` (SSE: a `:` comment line; WebSocket: a ping) keep proxies
 *   from closing an idle stream.
 * - At server close every client is ended (SSE: the response ends; WebSocket: close 1001).
 *
 * The browser gets (SSE): `id:` the event id, `event: change`, `data:` the published payload as
 * UTF-8 text (the envelope: a structured CloudEvent, the legacy or JSON envelope; with
 * `cloudevents-binary` the payload is the event's data alone, the attributes having been
 * headers). WebSocket: one JSON text message per event,
 * `{ type: 'event', id, model, topic, event }` where `event` is the payload parsed as JSON (its
 * text when it is not JSON), and `{ type: 'gap' | 'overflow', ... }` for the others.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import type {} from '@fastify/swagger'; // the OpenAPI words of a route schema (summary, produces)
import websocket from '@fastify/websocket';
import type { ServerResponse } from 'node:http';
import type { WebSocket } from 'ws';
import type { PublishedEvent, PublishedEventSource } from '../app/published-events';
import { ErrorCode, EvpubError, toError } from '../errors';
import type { Logger } from '../logger';
import { assertPattern, matches } from '../pubsub/topics';

export const DEFAULT_RING_SIZE = 1000;
/** How long the ring keeps recording after the last client left. */
export const DEFAULT_KEEP_MS = 60_000;
export const DEFAULT_CLIENT_MESSAGES = 1000;
export const DEFAULT_CLIENT_BYTES = 4 * 1024 * 1024;
export const DEFAULT_HEARTBEAT_MS = 15_000;
/** How long an ended client (overflow, server close) may take to read what it was sent. */
export const DEFAULT_CLOSE_TIMEOUT_MS = 10_000;
/**
 * A client this many events behind is written to at once, not at the next turn of the loop
 * (half its bound when that is less: a burst in one turn must not overflow a client that reads).
 */
const SYNC_FLUSH_AT = 256;
/** Largest chunk of SSE frames joined into one write. */
const BATCH_BYTES = 64 * 1024;

export interface EventStreamOptions {
  /** Where events come from: `app.events()`. */
  source: PublishedEventSource;
  /** Events the ring holds (config `http.events.ring`; default 1000). */
  ringSize?: number;
  /** Each client's bound (config `http.events.clientQueue`; defaults 1000 events, 4 MiB). */
  clientQueue?: { messages?: number; bytes?: number };
  /** Heartbeat period in ms (default 15000). */
  heartbeatMs?: number;
  /** How long an ended client may take to read its last bytes before it is cut (default 10000). */
  closeTimeoutMs?: number;
  /** How long the ring keeps recording after the last client left, in ms (default 60000). */
  keepMs?: number;
  logger: Logger;
}

export interface EventStreamStats {
  ringSize: number;
  /** Events the ring holds now. */
  held: number;
  /** Events seen since the stream was made. */
  events: number;
  clients: number;
  /** Clients disconnected for reading too slowly. */
  overflows: number;
  /** Clients told `gap` (their last id was no longer in the ring). */
  gaps: number;
}

/** One event in the ring, with its encodings made once for every client that wants them. */
interface Held {
  seq: number;
  event: PublishedEvent;
  sse?: string;
  ws?: string;
}

/** How a client's messages reach it: an SSE response or a WebSocket. */
interface Transport {
  readonly kind: 'sse' | 'ws';
  /** Bytes written and not yet taken by the socket. */
  buffered(): number;
  /** The wire form of an event (cached on `held`). */
  encode(held: Held): string;
  /** Writes frames; `written` is called once they are taken by the socket. */
  write(frames: string[], written: () => void): void;
  control(type: 'gap' | 'overflow', body: Record<string, unknown>): void;
  heartbeat(): void;
  /** Ends the connection (`code`: a WebSocket close code). */
  end(code: number, reason: string): void;
}

export interface ClientFilter {
  model?: string;
  topic?: string;
}

function positiveInt(value: number | undefined, fallback: number, key: string): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) {
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      `${key}: must be a whole number of at least 1 (got ${JSON.stringify(value)})`,
      { context: { path: key } },
    );
  }
  return value;
}

function sseFrame(held: Held): string {
  const { event } = held;
  const text = event.payload.toString('utf8');
  // An id with a line break or NUL cannot be an SSE id (the browser would misread it): omitted.
  const id = /[\r\n\0]/.test(event.eventId) ? '' : `id: ${event.eventId}\n`;
  const data = /[\r\n]/.test(text) ? text.split(/\r\n|\r|\n/).join('\ndata: ') : text;
  return `${id}event: change\ndata: ${data}\n\n`;
}

function wsMessage(held: Held): string {
  const { event } = held;
  const text = event.payload.toString('utf8');
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: sent as its text
  }
  return JSON.stringify({
    type: 'event',
    id: event.eventId,
    model: event.model,
    topic: event.topic,
    event: parsed,
  });
}

class Client {
  /** Sequence number of the next ring event this client has not yet considered. */
  cursor = 0;
  /** Id of the last event written to it. */
  lastEventId: string | undefined;
  closed = false;
  private scheduled: NodeJS.Immediate | undefined;
  /** Waiting for its socket to take what was written (over the byte bound). */
  private blocked = false;

  constructor(
    private readonly stream: EventStream,
    readonly transport: Transport,
    private readonly filter: ClientFilter,
    readonly describe: Record<string, unknown>,
  ) {}

  /** A new event is in the ring: write it soon, at once if far behind; disconnect if too far. */
  notify(): void {
    if (this.closed) return;
    const behind = this.stream.next - this.cursor;
    if (behind >= this.stream.flushAt && !this.blocked) this.flush();
    if (this.stream.next - this.cursor > this.stream.maxBehind) {
      this.stream.overflow(this, this.stream.next - this.cursor);
      return;
    }
    if (!this.scheduled && !this.blocked && this.cursor < this.stream.next) {
      this.scheduled = setImmediate(() => {
        this.scheduled = undefined;
        this.flush();
      });
    }
  }

  private wants(event: PublishedEvent): boolean {
    if (this.filter.model !== undefined && event.model !== this.filter.model) return false;
    if (this.filter.topic !== undefined && !matches(this.filter.topic, event.topic)) return false;
    return true;
  }

  /** Writes what the ring holds past the cursor, up to the byte bound. */
  flush(): void {
    if (this.closed) return;
    const { transport, stream } = this;
    let frames: string[] = [];
    let bytes = 0;
    let room = stream.maxBytes - transport.buffered();
    while (this.cursor < stream.next) {
      if (room <= 0) {
        this.blocked = true;
        break;
      }
      const held = stream.at(this.cursor);
      if (!held) {
        // Overwritten by the ring: this client fell further behind than the ring holds.
        if (frames.length > 0) transport.write(frames, () => this.written());
        stream.overflow(this, stream.next - this.cursor);
        return;
      }
      this.cursor++;
      if (!this.wants(held.event)) continue;
      const frame = transport.encode(held);
      frames.push(frame);
      this.lastEventId = held.event.eventId;
      bytes += frame.length;
      room -= frame.length;
      if (transport.kind === 'sse' && bytes >= BATCH_BYTES) {
        transport.write(frames, () => this.written());
        frames = [];
        bytes = 0;
      }
    }
    if (frames.length > 0) transport.write(frames, () => this.written());
  }

  /** The socket took a write: a blocked client goes on. */
  private written(): void {
    if (!this.blocked || this.closed) return;
    if (this.transport.buffered() >= this.stream.maxBytes) return;
    this.blocked = false;
    this.flush();
  }

  close(): void {
    this.closed = true;
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = undefined;
  }
}

/** The ring of the last events published and the clients reading it. */
export class EventStream {
  readonly ringSize: number;
  readonly maxBytes: number;
  /** Events a client may be behind the newest before it is disconnected. */
  readonly maxBehind: number;
  readonly closeTimeoutMs: number;
  /** A client this many events behind is written to at once. */
  readonly flushAt: number;
  /** Sequence number of the next event (events seen so far). */
  next = 0;
  private readonly ring: (Held | undefined)[];
  private readonly keepMs: number;
  /**
   * Whether events go into the ring: while a client is connected, and `keepMs` after. Only then
   * is the stream a listener of the app's events (with none, the pipeline builds no event for it).
   */
  private recording = false;
  /** The oldest sequence number recorded since the ring was last let go. */
  private first = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly clients = new Set<Client>();
  private readonly logger: Logger;
  private readonly heartbeat: NodeJS.Timeout;
  private readonly listener = (event: PublishedEvent): void => this.onEvent(event);
  private overflows = 0;
  private gaps = 0;
  private closed = false;

  constructor(private readonly options: EventStreamOptions) {
    this.ringSize = positiveInt(options.ringSize, DEFAULT_RING_SIZE, 'http.events.ring');
    const messages = positiveInt(
      options.clientQueue?.messages,
      DEFAULT_CLIENT_MESSAGES,
      'http.events.clientQueue.messages',
    );
    this.maxBytes = positiveInt(
      options.clientQueue?.bytes,
      DEFAULT_CLIENT_BYTES,
      'http.events.clientQueue.bytes',
    );
    this.maxBehind = Math.min(messages, this.ringSize);
    this.flushAt = Math.max(1, Math.min(SYNC_FLUSH_AT, Math.floor(this.maxBehind / 2)));
    this.closeTimeoutMs = options.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
    this.logger = options.logger;
    this.ring = new Array<Held | undefined>(this.ringSize);
    this.keepMs = options.keepMs ?? DEFAULT_KEEP_MS;
    const heartbeatMs = positiveInt(options.heartbeatMs, DEFAULT_HEARTBEAT_MS, 'eventsRoutes: heartbeatMs');
    this.heartbeat = setInterval(() => {
      for (const client of this.clients) client.transport.heartbeat();
    }, heartbeatMs);
    this.heartbeat.unref();
  }

  private onEvent(event: PublishedEvent): void {
    const seq = this.next++;
    this.ring[seq % this.ringSize] = { seq, event };
    for (const client of this.clients) client.notify();
  }

  /** The oldest sequence number the ring holds. */
  private oldest(): number {
    return Math.max(this.first, this.next - this.ringSize);
  }

  /** Records from now on (a client came). */
  private record(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    if (!this.recording) this.options.source.on('event', this.listener);
    this.recording = true;
  }

  /** The last client left: keep recording for `keepMs`, then let the ring go. */
  private idle(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (this.clients.size > 0) return;
      this.recording = false;
      this.options.source.off('event', this.listener);
      this.ring.fill(undefined);
      this.first = this.next; // what it held is gone: a reconnect with one of its ids gets a gap
    }, this.keepMs);
    this.idleTimer.unref();
  }

  /** The event of sequence number `seq`, while the ring holds it. */
  at(seq: number): Held | undefined {
    if (seq < this.oldest() || seq >= this.next) return undefined;
    return this.ring[seq % this.ringSize];
  }

  /** Sequence number of the newest event of id `id` the ring holds. */
  private find(id: string): number | undefined {
    const oldest = this.oldest();
    for (let seq = this.next - 1; seq >= oldest; seq--) {
      if (this.ring[seq % this.ringSize]!.event.eventId === id) return seq;
    }
    return undefined;
  }

  /**
   * Adds a client, reading from after `lastEventId` when the ring holds it, else (with a `gap`
   * message when an id was given) from now. Synchronous: no event slips in between.
   */
  attach(
    transport: Transport,
    filter: ClientFilter,
    lastEventId: string | undefined,
    describe: Record<string, unknown>,
  ): Client {
    const client = new Client(this, transport, filter, describe);
    this.record();
    client.cursor = this.next;
    if (this.closed) {
      transport.end(1001, 'the server is closing');
      client.close();
      return client;
    }
    if (lastEventId !== undefined && lastEventId !== '') {
      const seq = this.find(lastEventId);
      if (seq === undefined) {
        this.gaps++;
        const oldest = this.at(this.oldest());
        transport.control('gap', {
          lastEventId,
          reason:
            `event ${JSON.stringify(lastEventId)} is not in the ring (it holds the last ${this.ringSize} events` +
            `${oldest ? `, the oldest ${JSON.stringify(oldest.event.eventId)}` : ''}): ` +
            'events may have been missed; what follows is live',
          ...(oldest ? { oldest: oldest.event.eventId } : {}),
        });
      } else {
        client.cursor = seq + 1;
      }
    }
    this.clients.add(client);
    client.notify();
    return client;
  }

  detach(client: Client): void {
    client.close();
    if (this.clients.delete(client) && this.clients.size === 0 && !this.closed) this.idle();
  }

  /** Disconnects a client that reads too slowly, with the reason. */
  overflow(client: Client, behind: number): void {
    if (client.closed) return;
    this.overflows++;
    const buffered = client.transport.buffered();
    const reason =
      `this client reads too slowly: ${behind} events waiting (limit ${this.maxBehind}, ` +
      `http.events.clientQueue.messages and http.events.ring), ${buffered} bytes unsent ` +
      `(limit ${this.maxBytes}, http.events.clientQueue.bytes); reconnect with the last event id ` +
      'to resume from the ring';
    this.logger.warn(
      { ...client.describe, behind, buffered },
      'events client disconnected: it reads too slowly',
    );
    this.detach(client);
    client.transport.control('overflow', {
      reason,
      ...(client.lastEventId !== undefined ? { lastEventId: client.lastEventId } : {}),
    });
    client.transport.end(1008, 'overflow: the client reads too slowly');
  }

  stats(): EventStreamStats {
    return {
      ringSize: this.ringSize,
      held: this.next - this.oldest(),
      events: this.next,
      clients: this.clients.size,
      overflows: this.overflows,
      gaps: this.gaps,
    };
  }

  /** Ends every client (the server is closing); later clients are ended at once. */
  endClients(): void {
    for (const client of [...this.clients]) {
      this.detach(client);
      client.transport.end(1001, 'the server is closing');
    }
  }

  /** Stops listening to the source and ends every client. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.heartbeat);
    clearTimeout(this.idleTimer);
    this.options.source.off('event', this.listener);
    this.endClients();
  }
}

// ---------------------------------------------------------------------------------------------
// Transports

function sseTransport(res: ServerResponse, closeTimeoutMs: number): Transport {
  let ended = false;
  const write = (text: string, done?: () => void): void => {
    if (ended || res.destroyed) return;
    res.write(text, done ? () => done() : undefined);
  };
  return {
    kind: 'sse',
    buffered: () => res.writableLength,
    encode: (held) => (held.sse ??= sseFrame(held)),
    write: (frames, written) => write(frames.length === 1 ? frames[0]! : frames.join(''), written),
    control: (type, body) => write(`event: ${type}\ndata: ${JSON.stringify(body)}\n\n`),
    heartbeat: () => write(': heartbeat\n\n'),
    end: () => {
      if (ended) return;
      ended = true;
      if (res.destroyed) return;
      // What was written goes first; a client that never reads is cut after the timeout.
      const timer = setTimeout(() => res.destroy(), closeTimeoutMs);
      timer.unref();
      res.once('close', () => clearTimeout(timer));
      res.end();
    },
  };
}

function wsTransport(socket: WebSocket): Transport {
  const open = (): boolean => socket.readyState === socket.OPEN;
  return {
    kind: 'ws',
    buffered: () => socket.bufferedAmount,
    encode: (held) => (held.ws ??= wsMessage(held)),
    write: (frames, written) => {
      if (!open()) return;
      for (let i = 0; i < frames.length; i++) {
        socket.send(frames[i]!, i === frames.length - 1 ? () => written() : undefined);
      }
    },
    control: (type, body) => {
      if (open()) socket.send(JSON.stringify({ type, ...body }));
    },
    heartbeat: () => {
      if (open()) socket.ping();
    },
    end: (code, reason) => {
      if (open()) socket.close(code, reason);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The fastify plugin

export interface EventsRoutesOptions {
  /** The app whose events are served (`app.events()`); or give `stream`. */
  app?: { events(): PublishedEventSource };
  /** An event stream made by the caller (it stays the caller's to close). */
  stream?: EventStream;
  /** `http.events.ring`: events held for replay (default 1000). */
  ringSize?: number;
  /** `http.events.clientQueue`: each client's bound (defaults 1000 events, 4 MiB). */
  clientQueue?: { messages?: number; bytes?: number };
  heartbeatMs?: number;
  closeTimeoutMs?: number;
  /** How long the ring keeps recording after the last client left (default 60000). */
  keepMs?: number;
  /** Default: the fastify instance's logger. */
  logger?: Logger;
}

interface EventsQuery {
  model?: string;
  topic?: string;
  lastEventId?: string;
}

const querystring = {
  type: 'object',
  properties: {
    model: { type: 'string', minLength: 1, description: 'Only events of this model (exact name).' },
    topic: {
      type: 'string',
      minLength: 1,
      description: 'Only events published to a topic matching this MQTT-style pattern (`+`, `#`).',
    },
    lastEventId: {
      type: 'string',
      description: 'Resume after this event id (SSE also reads the Last-Event-ID header).',
    },
  },
} as const;

function badRequest(reply: FastifyReply, message: string): FastifyReply {
  return reply.code(400).send({ statusCode: 400, error: 'Bad Request', message });
}

/** The filters of a request, or why they are invalid. */
function parseFilter(query: EventsQuery): ClientFilter | string {
  const filter: ClientFilter = {};
  if (query.model !== undefined) filter.model = query.model;
  if (query.topic !== undefined) {
    try {
      assertPattern(query.topic);
    } catch (err) {
      return `querystring/topic: ${toError(err).message}`;
    }
    filter.topic = query.topic;
  }
  return filter;
}

/**
 * `GET /api/events` (SSE) and `GET /api/events/ws` (WebSocket). Register it on a fastify server:
 * `server.register(eventsRoutes, { app, ringSize, clientQueue })`. It registers
 * `@fastify/websocket` itself unless the server already has it.
 */
export async function eventsRoutes(fastify: FastifyInstance, options: EventsRoutesOptions): Promise<void> {
  const logger = (options.logger ?? (fastify.log as Logger)).child({ component: 'http-events' });
  let stream = options.stream;
  if (!stream) {
    if (!options.app) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        'eventsRoutes: give the app (or an EventStream) to serve',
      );
    }
    stream = new EventStream({
      source: options.app.events(),
      ringSize: options.ringSize,
      clientQueue: options.clientQueue,
      heartbeatMs: options.heartbeatMs,
      closeTimeoutMs: options.closeTimeoutMs,
      keepMs: options.keepMs,
      logger,
    });
    const owned = stream;
    fastify.addHook('onClose', (_instance, done) => {
      owned.close();
      done();
    });
  }
  const events = stream;
  fastify.addHook('preClose', (done) => {
    events.endClients();
    done();
  });
  if (!fastify.hasDecorator('websocketServer')) await fastify.register(websocket);

  fastify.get<{ Querystring: EventsQuery }>(
    '/api/events',
    {
      exposeHeadRoute: false, // a HEAD request cannot carry a stream
      config: { browserToken: true },
      schema: {
        summary: 'Live events as Server-Sent Events',
        description:
          'Each message: `id:` the event id, `event: change`, `data:` the published payload. ' +
          '`event: gap` when the Last-Event-ID is no longer in the ring; `event: overflow` before ' +
          'a client that reads too slowly is disconnected.',
        querystring,
        produces: ['text/event-stream'],
      },
    },
    (request, reply) => {
      const filter = parseFilter(request.query);
      if (typeof filter === 'string') return badRequest(reply, filter);
      const header = request.headers['last-event-id'];
      const lastEventId = (Array.isArray(header) ? header[0] : header) ?? request.query.lastEventId;
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      res.write(': evpub live events\n\n');
      const describe = { transport: 'sse', remote: request.ip, ...filter };
      const client = events.attach(sseTransport(res, events.closeTimeoutMs), filter, lastEventId, describe);
      res.once('close', () => events.detach(client));
      return reply;
    },
  );

  fastify.get<{ Querystring: EventsQuery }>(
    '/api/events/ws',
    {
      websocket: true,
      config: { browserToken: true },
      schema: { querystring },
      // A bad filter is refused before the upgrade.
      preHandler: (request, reply, done) => {
        const filter = parseFilter(request.query);
        if (typeof filter === 'string') badRequest(reply, filter);
        else done();
      },
    },
    (socket, request) => {
      const filter = parseFilter(request.query) as ClientFilter;
      const describe = { transport: 'ws', remote: request.ip, ...filter };
      const client = events.attach(wsTransport(socket), filter, request.query.lastEventId, describe);
      socket.once('close', () => events.detach(client));
      socket.on('error', (err) => logger.debug({ err, ...describe }, 'events WebSocket error'));
    },
  );
}
