/**
 * The NATS adapter's two ways to publish, and what each does across a lost connection.
 *
 * Core (`CorePublisher`): messages are written to the connection at once. Everything published
 * in the same tick is one batch confirmed by one PING/PONG round trip (`flush()`): when the PONG
 * comes back the server has read the batch. A PUB the user may not make is answered, before that
 * PONG, with `-ERR 'Permissions Violation for Publish to "subject"'` (the connection stays up);
 * the adapter passes it to `denied()`, which charges it to the oldest unconfirmed message to that
 * subject: when the batch is confirmed, its publishes to that subject reject with NOT_AUTHORIZED
 * (permanent), the others of the batch resolve. nats.js reports the -ERR through its status
 * iterator, a few microtasks after it parsed it, so a batch is settled one macrotask after its
 * PONG, when every -ERR read before the PONG has been charged. While the connection is down, messages wait in a
 * batch of their own (nats.js would drop them: it clears its outbound buffer on each dial).
 * When the connection drops before a batch's PONG, nats.js rejects the flush; the batch stays
 * unconfirmed, and on reconnect every unconfirmed batch is written again in order (the server
 * may so see a message twice: at least once).
 *
 * JetStream (`JetStreamPublisher`): one JetStream publish per message (a request answered by the
 * stream's ack), any number in flight. A message goes out only once a stream captures its
 * subject (`StreamKeeper`); while one is being made sure of, later messages wait behind it so
 * the order on the wire is the publish order. Publishes in flight when the connection drops,
 * and those answered "no responders" (JetStream not ready after a restart, stream gone), are
 * sent again, in order, with the same `Nats-Msg-Id` (the stream drops a copy it already has:
 * its ack says `duplicate`, and the publish resolves, the message being stored).
 * A publish the user may not make (a permissions violation, see above) rejects with
 * NOT_AUTHORIZED at once; the stream's own refusals are classified by `jetStreamPublishError()`.
 *
 * Both give up on a message after `publishTimeout` (the Client has given up by then too).
 */
import type { JetStreamClient } from '@nats-io/jetstream';
import type { MsgHdrs, NatsConnection } from '@nats-io/transport-node';
import { ErrorCode, EvpubError, toError } from '../../errors';
import type { StreamKeeper } from './nats-streams';

/** What the publishers need to know of the connection; the adapter keeps it. */
export interface Link {
  readonly nc: NatsConnection;
  /** The connection is up, as far as nats.js's status events told. */
  readonly up: boolean;
  /** Incremented on each reconnect. */
  readonly gen: number;
}

export interface Outgoing {
  subject: string;
  data: Uint8Array;
  headers: MsgHdrs | undefined;
}

const SWEEP_MS = 1000;
const RETRY_MS = 250;

function expired(publishTimeout: number): EvpubError {
  return new EvpubError(
    ErrorCode.PUBLISH_TIMEOUT,
    `the NATS broker did not confirm the publish within publishTimeout (${publishTimeout} ms)`,
    { retriable: true },
  );
}

/** The publishes of one batch to one subject: they share a promise and an outcome. */
interface Part {
  count: number;
  /** Permissions violations charged to this part (at most `count`); the -ERR text of the first. */
  denied: number;
  reason: string;
  promise: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
}

interface Batch {
  msgs: Outgoing[];
  parts: Map<string, Part>;
  /** Connection generation the batch was last written on; -1: not written yet. */
  gen: number;
  deadline: number;
}

/** What a publish the server's permissions refuse becomes. */
export function natsPermissionError(subject: string, reason: string): EvpubError {
  return new EvpubError(
    ErrorCode.NOT_AUTHORIZED,
    `the NATS server refused the publish to subject "${subject}": ${reason}`,
    { retriable: false, context: { subject, brokerReason: reason } },
  );
}

export class CorePublisher {
  private open: Batch | undefined;
  private readonly unconfirmed: Batch[] = [];
  /** Batches whose PONG came back, settled together one macrotask later (see the header). */
  private ponged: { batch: Batch; gen: number }[] = [];
  private settleTimer: NodeJS.Immediate | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly link: Link,
    private readonly publishTimeout: number,
  ) {}

  publish(m: Outgoing): Promise<void> {
    let batch = this.open;
    if (!batch) {
      batch = this.newBatch();
      this.open = batch;
      this.unconfirmed.push(batch);
      if (this.link.up) queueMicrotask(() => this.closeBatch());
    }
    batch.msgs.push(m);
    let part = batch.parts.get(m.subject);
    if (!part) {
      part = newPart();
      batch.parts.set(m.subject, part);
    }
    part.count++;
    if (this.link.up) {
      batch.gen = this.link.gen;
      this.write(m);
    } else {
      this.sweepLater();
    }
    return part.promise;
  }

  /**
   * The server refused a PUB to `subject` (a permissions violation): charged to the oldest
   * unconfirmed message to that subject written on the current connection.
   */
  denied(subject: string, reason: string): void {
    for (const batch of this.unconfirmed) {
      if (batch.gen !== this.link.gen) continue;
      const part = batch.parts.get(subject);
      if (part && part.denied < part.count) {
        if (part.denied++ === 0) part.reason = reason;
        return;
      }
    }
  }

  /** After a reconnect: writes every unconfirmed batch again, oldest first. */
  resend(): void {
    if (this.open && this.open.gen === -1) this.open = undefined;
    const now = Date.now();
    for (const batch of [...this.unconfirmed]) {
      if (batch.deadline < now) {
        this.drop(batch, expired(this.publishTimeout));
        continue;
      }
      batch.gen = this.link.gen;
      for (const part of batch.parts.values()) part.denied = 0; // charged again on this connection
      for (const m of batch.msgs) this.write(m);
      if (batch !== this.open) this.confirm(batch);
    }
    if (this.open) queueMicrotask(() => this.closeBatch());
  }

  failAll(err: Error): void {
    clearTimeout(this.sweepTimer);
    this.open = undefined;
    for (const batch of this.unconfirmed.splice(0)) rejectBatch(batch, err);
  }

  private newBatch(): Batch {
    return { msgs: [], parts: new Map(), gen: -1, deadline: Date.now() + this.publishTimeout };
  }

  private write(m: Outgoing): void {
    this.link.nc.publish(m.subject, m.data, m.headers ? { headers: m.headers } : undefined);
  }

  private closeBatch(): void {
    const batch = this.open;
    this.open = undefined;
    if (batch) this.confirm(batch);
  }

  private confirm(batch: Batch): void {
    const gen = batch.gen;
    this.link.nc.flush().then(
      () => {
        this.ponged.push({ batch, gen });
        // The -ERRs read before the PONG reach denied() within this turn of the event loop.
        this.settleTimer ??= setImmediate(() => this.settlePonged());
      },
      // The connection dropped: the batch stays unconfirmed and is written again on reconnect.
      () => undefined,
    );
  }

  private settlePonged(): void {
    this.settleTimer = undefined;
    for (const { batch, gen } of this.ponged.splice(0)) {
      const i = this.unconfirmed.indexOf(batch);
      if (i < 0 || batch.gen !== gen) continue; // settled meanwhile, or written again since
      this.unconfirmed.splice(i, 1);
      for (const [subject, part] of batch.parts) {
        if (part.denied > 0) part.reject(natsPermissionError(subject, part.reason));
        else part.resolve();
      }
    }
  }

  private drop(batch: Batch, err: Error): void {
    const i = this.unconfirmed.indexOf(batch);
    if (i >= 0) this.unconfirmed.splice(i, 1);
    if (this.open === batch) this.open = undefined;
    rejectBatch(batch, err);
  }

  /** While the connection is down, rejects batches past their deadline. */
  private sweepLater(): void {
    if (this.sweepTimer) return;
    this.sweepTimer = setTimeout(() => {
      this.sweepTimer = undefined;
      if (this.link.up) return;
      const now = Date.now();
      for (const batch of [...this.unconfirmed]) {
        if (batch.deadline < now) this.drop(batch, expired(this.publishTimeout));
      }
      if (this.unconfirmed.length > 0) this.sweepLater();
    }, SWEEP_MS);
    this.sweepTimer.unref();
  }
}

function newPart(): Part {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // The Client may have given up on the publish already: never an unhandled rejection.
  promise.catch(() => undefined);
  return { count: 0, denied: 0, reason: '', promise, resolve, reject };
}

function rejectBatch(batch: Batch, err: Error): void {
  for (const part of batch.parts.values()) part.reject(err);
}

interface JsEntry extends Outgoing {
  seq: number;
  msgID: string | undefined;
  /** Attempt counter: results of older attempts are ignored. */
  attempt: number;
  gen: number;
  deadline: number;
  settled: boolean;
  resolve(): void;
  reject(err: Error): void;
}

/** nats.js errors after which the same publish may well succeed (with its Nats-Msg-Id). */
const RETRIABLE = new Set([
  'TimeoutError',
  'JetStreamNotEnabled',
  'NoResponders',
  'RequestError',
  'ClosedConnectionError',
]);

/** JetStream API error codes that refuse this message for good. */
const PERMANENT_API: ReadonlyMap<number, ErrorCode> = new Map([
  [10054, ErrorCode.PAYLOAD_TOO_LARGE], // message size exceeds maximum allowed (the stream's max_msg_size)
]);

/**
 * What a JetStream publish that failed for good becomes (after the adapter's own retries of
 * what may pass: `RETRIABLE`). Permanent: a message over the server's max_payload or the
 * stream's max_msg_size. Every other error is transient, the stream's limits included
 * (maximum messages or bytes with discard new, insufficient resources: they free up), and so
 * is "no responders" (JetStream restarting, a leader election: the adapter has made sure a
 * stream captures the subject before sending).
 */
export function jetStreamPublishError(subject: string, err: Error): EvpubError {
  if (err.name === 'InvalidArgumentError' && /max_payload/.test(err.message)) {
    return new EvpubError(ErrorCode.PAYLOAD_TOO_LARGE, err.message, {
      cause: err,
      retriable: false,
      context: { subject, brokerReason: err.message },
    });
  }
  const apiCode = (err as { code?: unknown }).code;
  const isApi = err.name === 'JetStreamApiError' && typeof apiCode === 'number';
  const permanent = isApi ? PERMANENT_API.get(apiCode) : undefined;
  return new EvpubError(
    permanent ?? ErrorCode.PUBLISH_FAILED,
    `JetStream did not take the publish to subject "${subject}": ${err.message}`,
    {
      cause: err,
      retriable: permanent === undefined,
      context: isApi ? { subject, brokerCode: apiCode, brokerReason: err.message } : { subject },
    },
  );
}

export class JetStreamPublisher {
  private seq = 0;
  private readonly inflight = new Map<number, JsEntry>();
  /** Not sent yet (waiting for a stream, or for the connection), in publish order. */
  private held: JsEntry[] = [];
  private draining = false;
  private ended = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly link: Link,
    private readonly js: JetStreamClient,
    private readonly streams: StreamKeeper,
    private readonly publishTimeout: number,
  ) {}

  publish(m: Outgoing, msgID: string | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      // Fields listed, not spread from `m`: with `{ ...m, more }` V8 made and read these entries
      // slowly (CPU profile: about 10 µs per message in this function, send and settle).
      const entry: JsEntry = {
        subject: m.subject,
        data: m.data,
        headers: m.headers,
        seq: this.seq++,
        msgID,
        attempt: 0,
        gen: -1,
        deadline: Date.now() + this.publishTimeout,
        settled: false,
        resolve,
        reject,
      };
      if (this.link.up && this.held.length === 0 && this.streams.capturedBy(m.subject) !== undefined) {
        this.send(entry);
      } else {
        this.hold([entry]);
        this.drain();
      }
    });
  }

  /** After a reconnect: what was in flight on the old connection waits to go out again. */
  requeue(): void {
    const lost = [...this.inflight.values()].filter((e) => e.gen < this.link.gen);
    for (const e of lost) this.inflight.delete(e.seq);
    this.hold(lost);
  }

  /** Sends what is held, in order, making sure a stream captures each subject first. */
  drain(): void {
    if (this.draining || this.ended) return;
    this.draining = true;
    void (async () => {
      try {
        while (this.held.length > 0 && this.link.up && !this.ended) {
          const entry = this.held[0]!;
          if (entry.settled || Date.now() > entry.deadline) {
            this.held.shift();
            this.settle(entry, expired(this.publishTimeout));
            continue;
          }
          if (this.streams.capturedBy(entry.subject) === undefined) {
            try {
              await this.streams.ensure(entry.subject, 'publish');
            } catch (err) {
              if (!this.link.up) break; // the connection went: again on reconnect
              this.held.shift();
              this.settle(entry, toError(err));
              continue;
            }
            if (this.held[0] !== entry) continue;
          }
          this.held.shift();
          this.send(entry);
        }
      } finally {
        this.draining = false;
      }
    })();
  }

  /**
   * The server refused a PUB to `subject` (a permissions violation): the oldest publish to that
   * subject sent on this connection and not answered rejects at once (no answer would come).
   */
  denied(subject: string, reason: string): void {
    for (const entry of this.inflight.values()) {
      if (entry.subject === subject && entry.gen === this.link.gen) {
        this.settle(entry, natsPermissionError(subject, reason));
        return;
      }
    }
  }

  failAll(err: Error): void {
    this.ended = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.sweepTimer);
    for (const e of [...this.inflight.values(), ...this.held]) this.settle(e, err);
    this.held = [];
  }

  private send(entry: JsEntry): void {
    const attempt = ++entry.attempt;
    entry.gen = this.link.gen;
    this.inflight.set(entry.seq, entry);
    const opts: { headers?: MsgHdrs; msgID?: string } = {};
    if (entry.headers) opts.headers = entry.headers;
    if (entry.msgID !== undefined) opts.msgID = entry.msgID;
    this.js.publish(entry.subject, entry.data, opts).then(
      () => this.settle(entry, undefined),
      (err: unknown) => {
        if (!entry.settled && entry.attempt === attempt) this.failed(entry, toError(err));
      },
    );
  }

  private settle(entry: JsEntry, err: Error | undefined): void {
    if (entry.settled) return;
    entry.settled = true;
    this.inflight.delete(entry.seq);
    if (err) entry.reject(err);
    else entry.resolve();
  }

  private failed(entry: JsEntry, err: Error): void {
    if (!RETRIABLE.has(err.name) || this.ended || Date.now() > entry.deadline) {
      this.settle(entry, jetStreamPublishError(entry.subject, err));
      return;
    }
    this.inflight.delete(entry.seq);
    if (err.name !== 'TimeoutError') this.streams.forget(entry.subject);
    this.hold([entry]);
    this.retryTimer ??= setTimeout(() => {
      this.retryTimer = undefined;
      this.drain();
    }, RETRY_MS);
  }

  private hold(entries: JsEntry[]): void {
    if (entries.length === 0) return;
    const last = this.held[this.held.length - 1];
    let sorted = !last || last.seq < entries[0]!.seq;
    for (let i = 1; sorted && i < entries.length; i++) sorted = entries[i - 1]!.seq < entries[i]!.seq;
    this.held.push(...entries);
    if (!sorted) this.held.sort((a, b) => a.seq - b.seq);
    this.sweepLater();
  }

  /** While publishes are held, rejects those past their deadline. */
  private sweepLater(): void {
    if (this.sweepTimer) return;
    this.sweepTimer = setTimeout(() => {
      this.sweepTimer = undefined;
      const now = Date.now();
      this.held = this.held.filter((e) => {
        if (e.deadline >= now && !e.settled) return true;
        this.settle(e, expired(this.publishTimeout));
        return false;
      });
      if (this.held.length > 0) this.sweepLater();
    }, SWEEP_MS);
    this.sweepTimer.unref();
  }
}
