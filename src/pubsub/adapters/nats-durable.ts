/**
 * Durable subscriptions of the NATS adapter: JetStream durable pull consumers.
 *
 * `subscribe(pattern, { durable: name, from })` makes, per subject of the pattern (`a/#` has two),
 * a durable consumer named `<name>_<first 12 hex digits of sha256(subject)>` on the stream that
 * captures the subject (StreamKeeper), with filter = that subject, explicit ack, 30 s ack wait,
 * and deliver policy `new` (or `all` for `from: 'earliest'`) when it is created. An existing
 * consumer is used as it is, so subscribers sharing a name share the work and a subscriber
 * coming back resumes where the consumer stands. Messages are pulled (nats.js `consume()`,
 * which keeps pulling across reconnects) and delivered with `meta.ack()` = JetStream ack.
 *
 * Acks: a message not acked within the ack wait is delivered again (`meta.redelivered`). When a
 * subscription stops (`unsubscribe`, `end`), the messages it was given and has not acked are
 * nak'ed, so the server delivers them again at once rather than after the ack wait. The
 * consumers themselves stay on the server: delete them with the nats CLI when done.
 */
import type { ConsumerMessages, JetStreamClient, JetStreamManager, JsMsg } from '@nats-io/jetstream';
import { createHash } from 'node:crypto';
import { ErrorCode, EvpubError, toError } from '../../errors';
import type { Logger } from '../../logger';
import type { StreamKeeper } from './nats-streams';
import { isValidName, subjectsFor } from './nats-subjects';

type JetStreamModule = typeof import('@nats-io/jetstream');

const ACK_WAIT_NS = 30_000 * 1_000_000;

interface Durable {
  pattern: string;
  consumers: ConsumerMessages[];
  /** Delivered and not acked yet. */
  unacked: Set<JsMsg>;
}

export type DurableDeliver = (pattern: string, m: JsMsg, ack: () => Promise<void>) => void;

/** The consumer name for `durable` on `subject`. */
export function consumerName(durable: string, subject: string): string {
  return `${durable}_${createHash('sha256').update(subject).digest('hex').slice(0, 12)}`;
}

export class DurableConsumers {
  private readonly subs = new Map<string, Durable>();

  constructor(
    private readonly jsmod: JetStreamModule,
    private readonly jsm: JetStreamManager,
    private readonly js: JetStreamClient,
    private readonly streams: StreamKeeper,
    private readonly deliver: DurableDeliver,
    private readonly onError: (pattern: string, err: Error) => void,
    private readonly logger: Logger,
  ) {}

  async subscribe(pattern: string, durable: string, from: 'new' | 'earliest'): Promise<void> {
    if (!isValidName(durable)) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `durable: "${durable}" is not a valid JetStream consumer name (no whitespace, ".", "*", ">", "/" or "\\")`,
      );
    }
    const key = `${durable}\u0000${pattern}`;
    if (this.subs.has(key)) return;
    const sub: Durable = { pattern, consumers: [], unacked: new Set() };
    this.subs.set(key, sub);
    try {
      for (const subject of subjectsFor(pattern)) {
        const stream = await this.streams.ensure(subject, 'filter');
        const name = consumerName(durable, subject);
        await this.ensureConsumer(stream, name, subject, from);
        const consumer = await this.js.consumers.get(stream, name);
        const messages = await consumer.consume({ callback: (m) => this.onMessage(sub, m) });
        sub.consumers.push(messages);
        void this.watch(pattern, name, messages);
      }
    } catch (err) {
      this.subs.delete(key);
      await this.stop(sub);
      if (err instanceof EvpubError) throw err;
      throw new EvpubError(
        ErrorCode.SUBSCRIBE_FAILED,
        `durable subscription "${durable}" to "${pattern}" failed: ${toError(err).message}`,
        { cause: err, context: { pattern, durable } },
      );
    }
  }

  async unsubscribe(pattern: string): Promise<void> {
    for (const [key, sub] of this.subs) {
      if (sub.pattern !== pattern) continue;
      this.subs.delete(key);
      await this.stop(sub);
    }
  }

  async stopAll(): Promise<void> {
    const all = [...this.subs.values()];
    this.subs.clear();
    await Promise.all(all.map((s) => this.stop(s)));
  }

  private async ensureConsumer(
    stream: string,
    name: string,
    subject: string,
    from: 'new' | 'earliest',
  ): Promise<void> {
    try {
      await this.jsm.consumers.info(stream, name);
      return;
    } catch (err) {
      if (toError(err).name !== 'ConsumerNotFoundError') throw err;
    }
    const { AckPolicy, DeliverPolicy } = this.jsmod;
    await this.jsm.consumers.add(stream, {
      durable_name: name,
      filter_subject: subject,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: from === 'earliest' ? DeliverPolicy.All : DeliverPolicy.New,
      ack_wait: ACK_WAIT_NS,
    });
    this.logger.debug({ stream, consumer: name, subject }, 'created JetStream durable consumer');
  }

  private onMessage(sub: Durable, m: JsMsg): void {
    sub.unacked.add(m);
    this.deliver(sub.pattern, m, () => {
      if (sub.unacked.delete(m)) m.ack();
      return Promise.resolve();
    });
  }

  /** Stops pulling; what was delivered and not acked goes back to the server at once. */
  private async stop(sub: Durable): Promise<void> {
    await Promise.all(sub.consumers.map((c) => c.close().catch(() => undefined)));
    for (const m of sub.unacked) m.nak();
    sub.unacked.clear();
  }

  private async watch(pattern: string, name: string, messages: ConsumerMessages): Promise<void> {
    try {
      for await (const s of messages.status()) {
        if (s.type === 'consumer_deleted') {
          this.onError(pattern, new Error(`JetStream consumer ${name} was deleted: ${s.description}`));
        } else if (
          s.type === 'heartbeats_missed' ||
          s.type === 'consumer_not_found' ||
          s.type === 'stream_not_found'
        ) {
          this.logger.debug({ status: s, consumer: name }, 'JetStream consumer status');
        }
      }
    } catch (err) {
      this.logger.debug({ err, consumer: name }, 'JetStream consumer status ended');
    }
  }
}
