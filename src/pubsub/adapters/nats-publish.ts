/**
 * The NATS adapter's two ways to publish, and what each does across a lost connection.
 *
 * Core (`CorePublisher`): messages are written to the connection at once. Everything published
 * in the same tick is one batch confirmed by one PING/PONG round trip (`flush()`): when the PONG
 * comes back the server has read the batch. While the connection is down, messages wait in a
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
 * sent again, in order, with the same `Nats-Msg-Id` (the stream drops a copy it already has).
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

interface Batch {
  msgs: Outgoing[];
  /** Connection generation the batch was last written on; -1: not written yet. */
  gen: number;
  deadline: number;
  promise: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
}

export class CorePublisher {
  private open: Batch | undefined;
  private readonly unconfirmed: Batch[] = [];
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
    if (this.link.up) {
      batch.gen = this.link.gen;
      this.write(m);
    } else {
      this.sweepLater();
    }
    return batch.promise;
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
      for (const m of batch.msgs) this.write(m);
      if (batch !== this.open) this.confirm(batch);
    }
    if (this.open) queueMicrotask(() => this.closeBatch());
  }

  failAll(err: Error): void {
    clearTimeout(this.sweepTimer);
    this.open = undefined;
    for (const batch of this.unconfirmed.splice(0)) batch.reject(err);
  }

  private newBatch(): Batch {
    let resolve!: () => void;
    let reject!: (err: Error) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // The Client may have given up on the publish already: never an unhandled rejection.
    promise.catch(() => undefined);
    return { msgs: [], gen: -1, deadline: Date.now() + this.publishTimeout, promise, resolve, reject };
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
    this.link.nc.flush().then(
      () => {
        const i = this.unconfirmed.indexOf(batch);
        if (i >= 0) this.unconfirmed.splice(i, 1);
        batch.resolve();
      },
      // The connection dropped: the batch stays unconfirmed and is written again on reconnect.
      () => undefined,
    );
  }

  private drop(batch: Batch, err: Error): void {
    const i = this.unconfirmed.indexOf(batch);
    if (i >= 0) this.unconfirmed.splice(i, 1);
    if (this.open === batch) this.open = undefined;
    batch.reject(err);
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
    if (err.name === 'InvalidArgumentError' && /max_payload/.test(err.message)) {
      this.settle(entry, new EvpubError(ErrorCode.PAYLOAD_TOO_LARGE, err.message, { cause: err }));
      return;
    }
    const retriable = RETRIABLE.has(err.name);
    if (!retriable || this.ended || Date.now() > entry.deadline) {
      this.settle(
        entry,
        new EvpubError(
          ErrorCode.PUBLISH_FAILED,
          `JetStream did not take the publish to subject "${entry.subject}": ${err.message}`,
          { cause: err, retriable, context: { subject: entry.subject } },
        ),
      );
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
