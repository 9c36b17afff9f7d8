/**
 * One running `@subscribe` method: the messages of its pattern on its client, queued and handed
 * to the method, acknowledged after it resolved.
 *
 * Protocol (driven by the observer, observer.ts):
 * - `deliver()` is called by the client's `message` listener for each message of the pattern.
 *   The message is decoded and the method called with `(payload, topic, meta)`; at most
 *   `concurrency` calls run at once, the others wait in delivery order (in memory: the brokers
 *   bound what a durable subscription holds unacknowledged, e.g. AMQP's prefetch, JetStream's
 *   max ack pending; plain subscriptions have no such bound).
 * - A durable subscription with `ack: 'auto'` (the default) is subscribed with the client's
 *   `ack: 'manual'`, and `meta.ack()` is called here once the method resolved. A method that
 *   throws, or a payload that does not decode, leaves the message unacknowledged: the error is
 *   logged (class, method, binding, topic) and counted in `failed`. A failed ack is logged and
 *   counted too (the broker then delivers the message again).
 * - `stopAccepting()`: messages delivered after it are not handled (counted in `notHandled`;
 *   durable ones stay unacknowledged). `drain(deadline)` resolves once the queue and the running
 *   calls are done, or at the deadline: what is still queued then is not handled.
 */
import { ErrorCode, EvpubError } from '../../errors';
import type { Logger } from '../../logger';
import type { MessageMeta } from '../../pubsub/adapter';
import { decodePayload } from './decode';
import type { SubscribeSpec } from './decorator';

/** Counters of one `@subscribe` method, from `EvpubConsumersObserver.stats()`. */
export interface ConsumerStats {
  /** `Class.method`. */
  consumer: string;
  /** The consumer's binding key. */
  binding: string;
  pattern: string;
  /** The broker name (or URL, redacted) the method subscribes on. */
  broker: string;
  durable?: string;
  /** Messages of the pattern that reached this method's subscription. */
  received: number;
  /** Calls that resolved (and, for durable subscriptions, were acknowledged after). */
  handled: number;
  /** Calls that threw, and payloads that did not decode. */
  failed: number;
  /** Acknowledgements the broker refused or that failed. */
  ackFailed: number;
  /** Messages that arrived after stop began, or were still queued at the stop deadline. */
  notHandled: number;
  /** Calls running now. */
  running: number;
  /** Messages waiting for a call. */
  queued: number;
}

export interface ConsumerTarget {
  className: string;
  method: string;
  binding: string;
  broker: string;
  spec: SubscribeSpec;
  instance: object;
}

interface Delivery {
  topic: string;
  payload: Buffer;
  meta: MessageMeta;
}

export class ConsumerSubscription {
  readonly name: string;
  private readonly queue: Delivery[] = [];
  private running = 0;
  private accepting = true;
  private readonly counts = { received: 0, handled: 0, failed: 0, ackFailed: 0, notHandled: 0 };
  private idle: (() => void)[] = [];
  private readonly concurrency: number;
  private readonly autoAck: boolean;
  private readonly handler: (payload: unknown, topic: string, meta: MessageMeta) => unknown;

  constructor(
    readonly target: ConsumerTarget,
    private readonly logger: Logger,
  ) {
    this.name = `${target.className}.${target.method}`;
    const { options } = target.spec;
    this.concurrency = options.concurrency ?? 1;
    this.autoAck = options.durable !== undefined && options.ack !== 'manual';
    const fn = (target.instance as Record<string, unknown>)[target.method];
    if (typeof fn !== 'function') {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `${this.name}: ${target.binding}: @subscribe is on something that is not a method of the instance`,
        { context: { consumer: this.name, binding: target.binding } },
      );
    }
    this.handler = (fn as (p: unknown, t: string, m: MessageMeta) => unknown).bind(target.instance);
  }

  deliver(topic: string, payload: Buffer, meta: MessageMeta): void {
    this.counts.received++;
    if (!this.accepting) {
      this.counts.notHandled++;
      return;
    }
    this.queue.push({ topic, payload, meta });
    this.pump();
  }

  private pump(): void {
    while (this.running < this.concurrency && this.queue.length > 0) {
      const delivery = this.queue.shift()!;
      this.running++;
      void this.handle(delivery).finally(() => {
        this.running--;
        this.pump();
        if (this.running === 0 && this.queue.length === 0) {
          const waiting = this.idle;
          this.idle = [];
          waiting.forEach((resolve) => resolve());
        }
      });
    }
  }

  private fields(d: Delivery): Record<string, unknown> {
    const { target } = this;
    return {
      consumer: this.name,
      binding: target.binding,
      broker: target.broker,
      pattern: target.spec.pattern,
      topic: d.topic,
      durable: target.spec.options.durable,
      redelivered: d.meta.redelivered,
      messageId: d.meta.messageId,
    };
  }

  private async handle(d: Delivery): Promise<void> {
    try {
      const payload = decodePayload(this.target.spec.options.decode ?? 'json', d.payload, d.topic, d.meta);
      await this.handler(payload, d.topic, d.meta);
    } catch (err) {
      this.counts.failed++;
      this.logger.error(
        { err, ...this.fields(d) },
        this.target.spec.options.durable === undefined
          ? `consumer ${this.name} failed on ${d.topic}; plain subscription: the message is not delivered again`
          : `consumer ${this.name} failed on ${d.topic}; the message is left unacknowledged for the broker to deliver again`,
      );
      return;
    }
    if (this.autoAck) {
      try {
        await d.meta.ack();
      } catch (err) {
        this.counts.ackFailed++;
        this.logger.warn(
          { err, ...this.fields(d) },
          `consumer ${this.name}: the acknowledgement of a handled message failed; the broker may deliver it again`,
        );
        return;
      }
    }
    this.counts.handled++;
  }

  stopAccepting(): void {
    this.accepting = false;
  }

  /** Resolves true when nothing is queued or running, false at `deadline` (ms since epoch). */
  async drain(deadline: number): Promise<boolean> {
    if (this.running === 0 && this.queue.length === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([
      new Promise<boolean>((resolve) => this.idle.push(() => resolve(true))),
      new Promise<boolean>(
        (resolve) => (timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()))),
      ),
    ]);
    clearTimeout(timer);
    if (!done) {
      this.counts.notHandled += this.queue.length;
      this.queue.length = 0;
    }
    return done;
  }

  stats(): ConsumerStats {
    const { target } = this;
    return {
      consumer: this.name,
      binding: target.binding,
      pattern: target.spec.pattern,
      broker: target.broker,
      ...(target.spec.options.durable === undefined ? {} : { durable: target.spec.options.durable }),
      ...this.counts,
      running: this.running,
      queued: this.queue.length,
    };
  }
}
