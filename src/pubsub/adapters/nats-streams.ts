/**
 * Which JetStream stream captures a subject, for the NATS adapter's JetStream mode.
 *
 * A JetStream publish is only acknowledged when a stream captures its subject, and a durable
 * consumer lives on a stream. Two ways to say which stream:
 *
 * - Configured: `{ nats: { jetstream: true, stream: 'ORDERS', subjects: ['orders.>'] } }`. The
 *   stream is created with exactly these subjects if it does not exist (also when it was deleted
 *   while evpub ran; an existing stream is used as it is). A publish or durable subscription
 *   outside these subjects is refused with an error naming them, before anything is sent. A
 *   publish to a subject that no stream on the server captures (the existing stream has other
 *   subjects than the option says) is refused too. Both refusals are NO_DESTINATION for a
 *   publish (permanent), SUBSCRIBE_FAILED for a subscription.
 * - Automatic (no `subjects`): the stream `stream` (default `EVPUB`) is created on first need and
 *   grows by the subjects evpub uses: a published subject that no stream on the server captures
 *   yet is added as it is (exact subject, so topic `/v1/subutest` adds `%.v1.subutest`); the
 *   filter of a durable subscription is added as a wildcard subject, replacing the subjects of
 *   that stream it covers (JetStream refuses overlapping subjects). A subject some other stream
 *   already captures is left to that stream. Never `>`: a stream on `>` is accepted by the server
 *   but captures all core traffic, JetStream API requests and inbox replies included, and leaves
 *   no subject for any other stream.
 *
 * The stream created is file-backed, limits retention, discard old, 7 days max age, and a
 * de-duplication window for `Nats-Msg-Id` of `nats.duplicateWindow` (default 2 minutes, the
 * server's default): within it, a second publish with the same id is acked as a duplicate and
 * not stored. evpub sends each event's id as `Nats-Msg-Id`, so a replay after a restart or a
 * takeover that comes within the window leaves no duplicate in the stream. A stream that exists
 * already keeps its own window (see `nats stream info`).
 */
import type { JetStreamManager, StreamConfig } from '@nats-io/jetstream';
import { ErrorCode, EvpubError } from '../../errors';
import type { Logger } from '../../logger';
import { covers } from './nats-subjects';

type JetStreamModule = typeof import('@nats-io/jetstream');

export const DEFAULT_STREAM = 'EVPUB';
export const MAX_AGE_MS = 7 * 24 * 3600 * 1000;
/** The NATS server's default `duplicate_window`. */
export const DEFAULT_DUPLICATE_WINDOW_MS = 120_000;

export class StreamKeeper {
  /** Subjects known to be captured, and by which stream. */
  private readonly known = new Map<string, string>();
  private readonly ensuring = new Map<string, Promise<string>>();
  /** Stream updates are read-modify-write: one at a time in this process. */
  private updating: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly jsmod: JetStreamModule,
    private readonly jsm: JetStreamManager,
    readonly stream: string,
    readonly subjects: string[] | undefined,
    private readonly logger: Logger,
    /** `duplicate_window` of the stream this creates, in milliseconds. */
    private readonly duplicateWindow: number = DEFAULT_DUPLICATE_WINDOW_MS,
  ) {}

  /** Configured mode: creates the stream when it does not exist. */
  async prepare(): Promise<void> {
    if (!this.subjects) return;
    const info = await this.info();
    if (!info) await this.jsm.streams.add(this.config(this.subjects));
  }

  /** The stream capturing `subject`, when known without asking the server. */
  capturedBy(subject: string): string | undefined {
    return this.known.get(subject);
  }

  /** Forgets what is known of `subject` (its stream may have been deleted). */
  forget(subject: string): void {
    this.known.delete(subject);
  }

  /**
   * Makes sure a stream captures `subject` (`filter`: a durable consumer's filter, which may hold
   * wildcards) and returns its name. Rejects with PUBLISH_FAILED / SUBSCRIBE_FAILED.
   */
  ensure(subject: string, kind: 'publish' | 'filter'): Promise<string> {
    const known = this.known.get(subject);
    if (known !== undefined) return Promise.resolve(known);
    let work = this.ensuring.get(subject);
    if (!work) {
      work = this.find(subject, kind).finally(() => this.ensuring.delete(subject));
      this.ensuring.set(subject, work);
    }
    return work;
  }

  private async find(subject: string, kind: 'publish' | 'filter'): Promise<string> {
    const code = kind === 'publish' ? ErrorCode.NO_DESTINATION : ErrorCode.SUBSCRIBE_FAILED;
    if (this.subjects) {
      if (!this.subjects.some((s) => covers(s, subject))) {
        throw new EvpubError(
          code,
          `no JetStream stream captures subject "${subject}": stream ${this.stream} captures ` +
            `${JSON.stringify(this.subjects)} (the nats.subjects option)`,
          { retriable: false, context: { subject, stream: this.stream } },
        );
      }
      if (kind === 'filter') {
        this.known.set(subject, this.stream);
        return this.stream;
      }
    }
    try {
      if (this.subjects) return await this.findConfigured(subject);
      for (let attempt = 0; ; attempt++) {
        const names = await this.jsm.streams.names(subject).next();
        // Prefer our stream; a literal subject is captured by any stream that matches it.
        if (names.includes(this.stream) && (kind === 'publish' || (await this.ownCovers(subject)))) {
          this.known.set(subject, this.stream);
          return this.stream;
        }
        const other = names.find((n) => n !== this.stream);
        if (other !== undefined) {
          this.known.set(subject, other);
          return other;
        }
        try {
          await this.addSubject(subject);
          this.known.set(subject, this.stream);
          return this.stream;
        } catch (err) {
          // Another client may have changed the stream meanwhile: look again, a few times.
          if (attempt >= 3) throw err;
          this.logger.debug({ err, subject }, 'adding a subject to the stream failed; retrying');
        }
      }
    } catch (err) {
      if (err instanceof EvpubError) throw err;
      throw new EvpubError(
        kind === 'publish' ? ErrorCode.PUBLISH_FAILED : ErrorCode.SUBSCRIBE_FAILED,
        `could not make JetStream stream ${this.stream} capture subject "${subject}": ${(err as Error).message}`,
        { cause: err, retriable: true, context: { subject, stream: this.stream } },
      );
    }
  }

  /** Configured mode, a publish: the server says which stream captures `subject`. */
  private async findConfigured(subject: string): Promise<string> {
    const names = await this.jsm.streams.names(subject).next();
    const stream = names.includes(this.stream) ? this.stream : names[0];
    if (stream !== undefined) {
      this.known.set(subject, stream);
      return stream;
    }
    const info = await this.info();
    if (!info) {
      await this.prepare(); // deleted while we ran: made again, as at connect
      this.known.set(subject, this.stream);
      return this.stream;
    }
    const reason = `no stream captures subject "${subject}" (stream ${this.stream} captures ${JSON.stringify(info.config.subjects ?? [])})`;
    throw new EvpubError(
      ErrorCode.NO_DESTINATION,
      `JetStream refused the publish to subject "${subject}": ${reason}; the nats.subjects option says ${JSON.stringify(this.subjects)}`,
      { retriable: false, context: { subject, stream: this.stream, brokerReason: reason } },
    );
  }

  private async ownCovers(subject: string): Promise<boolean> {
    const info = await this.info();
    return info?.config.subjects?.some((s) => covers(s, subject)) ?? false;
  }

  private addSubject(subject: string): Promise<void> {
    const run = this.updating.then(async () => {
      const info = await this.info();
      if (!info) {
        await this.jsm.streams.add(this.config([subject]));
        this.logger.info({ stream: this.stream, subject }, 'created JetStream stream');
        return;
      }
      const current = info.config.subjects ?? [];
      if (current.some((s) => covers(s, subject))) return;
      const subjects = [...current.filter((s) => !covers(subject, s)), subject];
      await this.jsm.streams.update(this.stream, { ...info.config, subjects });
      this.logger.debug({ stream: this.stream, subject }, 'JetStream stream captures a new subject');
    });
    this.updating = run.catch(() => undefined);
    return run;
  }

  private async info(): Promise<{ config: StreamConfig } | undefined> {
    try {
      return await this.jsm.streams.info(this.stream);
    } catch (err) {
      if ((err as Error).name === 'StreamNotFoundError') return undefined;
      throw err;
    }
  }

  private config(subjects: string[]): Partial<StreamConfig> & { name: string } {
    const { RetentionPolicy, StorageType, DiscardPolicy } = this.jsmod;
    return {
      name: this.stream,
      subjects,
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      max_age: MAX_AGE_MS * 1_000_000,
      duplicate_window: this.duplicateWindow * 1_000_000,
    };
  }
}
