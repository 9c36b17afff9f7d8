/**
 * The AMQP publish window: publishes in call order on a ConfirmChannel, each settled by the
 * broker's confirm, across reconnects.
 *
 * Protocol:
 * - `publish()` writes straight to the channel while the channel's buffer accepts writes
 *   (`channel.publish()` returned true); once it returns false, later publishes wait in
 *   `backlog`, in order, until the channel's `drain` event. No per-message await otherwise.
 * - A written message is `inflight` until the broker's basic.ack (resolve) or basic.nack
 *   (reject, PUBLISH_FAILED, retriable: the broker could not take it now, e.g. a queue full
 *   with `x-overflow: reject-publish`).
 * - The broker refuses a publish by closing the channel (`amqpPublishRefusal()`): 403 access
 *   refused (the user may not write to the exchange, or to that routing key with topic
 *   permissions) and 406 message over max_message_size are permanent for the message concerned,
 *   which `detach(refusal)` rejects (NOT_AUTHORIZED, PAYLOAD_TOO_LARGE); everything else that was
 *   unconfirmed on that channel is kept for the next channel, as when a connection dies.
 * - When the channel dies (`detach()`), what is in flight was maybe received, maybe not: it goes
 *   back to the front of the backlog, oldest first, and is re-published on the next channel
 *   (`attach()`): at-least-once, never a silent drop. Order is kept: re-published messages go
 *   before anything published later.
 * - `close(err)` rejects whatever is left.
 */
import type { ConfirmChannel, Options } from 'amqplib';
import { ErrorCode, EvpubError } from '../../errors';

export interface Outgoing {
  routingKey: string;
  content: Buffer;
  properties: Options.Publish;
  resolve(): void;
  reject(err: Error): void;
}

/** amqplib calls a confirm callback with this message on basic.nack ('channel closed' otherwise). */
const NACKED = 'message nacked';

/**
 * At most this many unconfirmed messages on the channel. amqplib keeps its confirm callbacks in
 * an array it shifts from, which costs more the longer it is; a bounded window keeps that cheap
 * and is still far more than a broker round trip needs.
 */
const MAX_INFLIGHT = 2_000;

/** A channel closed by the broker because of a basic.publish it refused. */
export interface PublishRefusal {
  /** AMQP reply code: 403, 404, 406, ... */
  replyCode: number;
  /** The broker's reply text, e.g. `ACCESS_REFUSED - access to topic 'a.b' in exchange ...`. */
  reason: string;
  /** The routing key the refusal names (topic permissions), if it names one. */
  routingKey?: string;
  /** The size limit a 406 names (max_message_size), if it names one. */
  maxSize?: number;
}

/** amqplib's error for a channel the broker closed: `code` is the reply code. */
const BASIC_PUBLISH = { classId: 60, methodId: 40 };

/**
 * The refusal in a channel error, when the broker closed the channel over a basic.publish;
 * undefined for anything else (the connection going, another method's error).
 */
export function amqpPublishRefusal(err: unknown): PublishRefusal | undefined {
  const e = err as { code?: unknown; classId?: unknown; methodId?: unknown; message?: unknown };
  if (typeof e.code !== 'number' || typeof e.message !== 'string') return undefined;
  if (e.classId !== BASIC_PUBLISH.classId || e.methodId !== BASIC_PUBLISH.methodId) return undefined;
  const reason = /with message "(.*)"$/s.exec(e.message)?.[1] ?? e.message;
  const refusal: PublishRefusal = { replyCode: e.code, reason };
  const key = /access to topic '(.*?)' in exchange '/.exec(reason)?.[1];
  if (key !== undefined) refusal.routingKey = key;
  const max = /larger than configured max size (\d+)/.exec(reason)?.[1];
  if (max !== undefined) refusal.maxSize = Number(max);
  return refusal;
}

/**
 * What a refusal makes of the message it is about: permanent for 403 (NOT_AUTHORIZED) and for
 * a 406 naming the size limit (PAYLOAD_TOO_LARGE); undefined when the refusal is not final for
 * a message (404 no exchange: the adapter declares its exchange again and re-publishes).
 */
export function refusalError(refusal: PublishRefusal, routingKey: string): EvpubError | undefined {
  const context = { routingKey, brokerCode: refusal.replyCode, brokerReason: refusal.reason };
  if (refusal.replyCode === 403) {
    return new EvpubError(
      ErrorCode.NOT_AUTHORIZED,
      `the AMQP broker refused the publish: ${refusal.reason}`,
      {
        retriable: false,
        context,
      },
    );
  }
  if (refusal.replyCode === 406 && refusal.maxSize !== undefined) {
    return new EvpubError(
      ErrorCode.PAYLOAD_TOO_LARGE,
      `the AMQP broker refused the publish: ${refusal.reason}`,
      {
        retriable: false,
        context,
      },
    );
  }
  return undefined;
}

/** A FIFO with O(1) shift, and put-back at the front for re-publishing. */
class Fifo<T> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }
  push(item: T): void {
    this.items.push(item);
  }
  shift(): T | undefined {
    if (this.head === this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined as T; // let it be collected
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
  putBack(front: T[]): void {
    this.items = front.concat(this.items.slice(this.head));
    this.head = 0;
  }
  takeAll(): T[] {
    const all = this.items.slice(this.head);
    this.items = [];
    this.head = 0;
    return all;
  }
}

export class PublishWindow {
  private channel: ConfirmChannel | undefined;
  private draining = false;
  private readonly backlog = new Fifo<Outgoing>();
  /** Written, not yet confirmed; insertion order is publish order. */
  private readonly inflight = new Set<Outgoing>();
  private onIdle: (() => void) | undefined;

  constructor(private readonly exchange: string) {}

  /** Messages not yet confirmed, written or waiting. */
  get pending(): number {
    return this.inflight.size + this.backlog.length;
  }

  publish(out: Outgoing): void {
    const ch = this.channel;
    if (
      ch !== undefined &&
      !this.draining &&
      this.backlog.length === 0 &&
      this.inflight.size < MAX_INFLIGHT
    ) {
      this.write(ch, out);
    } else this.backlog.push(out);
  }

  /** Starts writing on `channel`: first what was waiting (re-publishes included). */
  attach(channel: ConfirmChannel): void {
    this.channel = channel;
    this.draining = false;
    channel.on('drain', () => {
      if (this.channel !== channel) return;
      this.draining = false;
      this.flush();
    });
    this.flush();
  }

  /**
   * The channel is gone: what it did not confirm will be re-published on the next one, except
   * the message a `refusal` is final for (the first unconfirmed one it can be about), which is
   * rejected. Returns how many will be re-published.
   */
  detach(refusal?: PublishRefusal): number {
    this.channel = undefined;
    this.draining = false;
    let left = [...this.inflight];
    this.inflight.clear();
    if (refusal) {
      const refused = left.find(
        (out) =>
          (refusal.routingKey === undefined || out.routingKey === refusal.routingKey) &&
          (refusal.maxSize === undefined || out.content.length > refusal.maxSize),
      );
      const err = refused && refusalError(refusal, refused.routingKey);
      if (refused && err) {
        left = left.filter((out) => out !== refused);
        refused.reject(err);
      }
    }
    if (left.length > 0) this.backlog.putBack(left);
    this.checkIdle();
    return left.length;
  }

  /** Resolves when nothing is pending, or when the channel is gone. */
  idle(): Promise<void> {
    if (this.pending === 0 || this.channel === undefined) return Promise.resolve();
    return new Promise((resolve) => (this.onIdle = resolve));
  }

  /** Rejects everything pending with `err`; the window takes no more writes. */
  close(err: Error): void {
    this.channel = undefined;
    const left = [...this.inflight, ...this.backlog.takeAll()];
    this.inflight.clear();
    for (const out of left) out.reject(err);
    this.checkIdle();
  }

  private flush(): void {
    const ch = this.channel;
    while (ch !== undefined && this.channel === ch && !this.draining && this.inflight.size < MAX_INFLIGHT) {
      const out = this.backlog.shift();
      if (out === undefined) break;
      this.write(ch, out);
    }
  }

  private write(ch: ConfirmChannel, out: Outgoing): void {
    this.inflight.add(out);
    let accepted: boolean;
    try {
      accepted = ch.publish(this.exchange, out.routingKey, out.content, out.properties, (err: unknown) =>
        this.confirmed(out, err),
      );
    } catch (err) {
      // A channel closing under us: the message stays in flight and detach() re-publishes it.
      if ((err as Error).name === 'IllegalOperationError') return;
      // Anything else is this message's fault (e.g. headers over amqplib's 64 KiB table limit).
      this.inflight.delete(out);
      out.reject(
        new EvpubError(ErrorCode.PUBLISH_FAILED, `AMQP publish failed: ${(err as Error).message}`, {
          cause: err,
        }),
      );
      return;
    }
    if (!accepted) this.draining = true;
  }

  private confirmed(out: Outgoing, err: unknown): void {
    // 'channel closed': not confirmed, not refused; it stays in flight for detach().
    if (err instanceof Error && err.message !== NACKED) return;
    if (!this.inflight.delete(out)) return;
    if (err) {
      out.reject(
        new EvpubError(ErrorCode.PUBLISH_FAILED, 'the AMQP broker refused the message (basic.nack)', {
          retriable: true,
          cause: err,
          context: { routingKey: out.routingKey, brokerReason: 'basic.nack' },
        }),
      );
    } else {
      out.resolve();
    }
    if (this.backlog.length > 0) this.flush();
    this.checkIdle();
  }

  private checkIdle(): void {
    if (this.onIdle !== undefined && (this.pending === 0 || this.channel === undefined)) {
      const resolve = this.onIdle;
      this.onIdle = undefined;
      resolve();
    }
  }
}
