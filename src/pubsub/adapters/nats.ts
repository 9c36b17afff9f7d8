/**
 * The NATS adapter, on nats.js v3 (`@nats-io/transport-node`, `@nats-io/jetstream`).
 *
 * Topics: the `dotted` rule (src/pubsub/topics.ts, nats-subjects.ts): topic `a/b` is subject
 * `a.b`, `/v1/subutest` is `%.v1.subutest`; `+` is `*`; `a/#` is subscribed on `a` and `a.>`
 * (MQTT's `#` also matches the parent level, NATS's `>` does not).
 *
 * Publish (nats-publish.ts): core mode (the default) resolves when a PING/PONG round trip shared
 * by the publishes of the same tick returns: the server has read them. JetStream mode
 * (`{ nats: { jetstream: true } }`) resolves on the stream's ack (stored); `messageId` is the
 * `Nats-Msg-Id` the stream de-duplicates on; which stream: nats-streams.ts. Headers are NATS
 * headers; `key` travels as the header `Evpub-Key`, `messageId` as `Nats-Msg-Id`, `contentType`
 * as `Content-Type`, and all come back in `meta`. `qos` and `retain` have no NATS meaning and
 * are ignored. A publish whose payload and headers exceed the server's `max_payload` (1 MiB by
 * default, read from the server's INFO) is refused with PAYLOAD_TOO_LARGE before it is sent.
 *
 * Subscribe: a core subscription per subject, confirmed by a round trip. A message matching
 * several of this client's patterns is delivered once, with the oldest matching pattern, as MQTT
 * brokers do. In JetStream mode a subscription without `durable` is the same core subscription
 * (live messages only, no replay, no acks); with `durable` it is a JetStream durable consumer
 * (nats-durable.ts). Durable subscriptions need JetStream mode.
 *
 * Security: `tls://host:port`, or `nats://` with the `tls` option (src/util/tls.ts), requires TLS
 * (with `nats://` alone nats.js still upgrades when the server requires TLS, trusting the system's
 * CAs); the CA, client certificate and key, servername and rejectUnauthorized go to nats.js.
 * Credentials: user and password (`nats://user:pass@host` or the `username`/`password` options),
 * a token (`nats://TOKEN@host` or `nats.token`), an NKey seed (`nats.nkey`) or a `.creds` file
 * (`nats.creds`); nats.js's authenticators answer the server's challenge. A token in the URL is
 * masked like a password in every message (`nats://***@host:4222`). A client certificate the
 * server refuses surfaces, with TLS 1.3, only after nats.js's connect timeout: the adapter then
 * finds the TLS reason with one probe connection (nats-tls.ts) and fails with TLS_FAILED.
 *
 * Connection: `connect()` is one attempt bounded by `connectTimeout`; nothing listening gives
 * CONNECT_FAILED, refused credentials AUTH_FAILED, a failed TLS handshake TLS_FAILED. Afterwards nats.js reconnects forever; the
 * wait between attempts is the time the connection has been down, kept between
 * `reconnect.initialDelay` and `reconnect.maxDelay` (so it roughly doubles). nats.js restores
 * core subscriptions, and consumers keep pulling. On nats.js's `disconnect` status the adapter
 * calls `events.offline()`; on `reconnect` it sends again what was not confirmed, waits for a
 * round trip (the server then has the subscriptions again) and calls `events.reconnect()`.
 */
import type { JsMsg } from '@nats-io/jetstream';
import type { Msg, MsgHdrs, NatsConnection, Subscription } from '@nats-io/transport-node';
import type {
  AdapterEvents,
  AdapterFeatures,
  BrokerAdapter,
  MessageMeta,
  PublishOptions,
  ResolvedClientOptions,
  SubscribeOptions,
} from '../adapter';
import { ErrorCode, EvpubError, redact, toError } from '../../errors';
import { tlsFailure } from '../../util/tls';
import type { Logger } from '../../logger';
import { loadDriver } from '../driver';
import { fromDotted, matches, toDotted } from '../topics';
import { DurableConsumers } from './nats-durable';
import { isNatsAuthError, natsTarget, type NatsConnectTarget, type NatsTlsTarget } from './nats-auth';
import { natsOptions, type ResolvedNatsOptions } from './nats-options';
import { CorePublisher, JetStreamPublisher, type Link } from './nats-publish';
import { StreamKeeper } from './nats-streams';
import { probeNatsTls } from './nats-tls';
import { headerBytes, NameCache, subjectsFor } from './nats-subjects';

export type { NatsOptions } from './nats-options';

type NatsModule = typeof import('@nats-io/transport-node');
type JetStreamModule = typeof import('@nats-io/jetstream');

/** Bytes of publishes nats.js buffers before writing them inline (see connect()). */
const PENDING_LIMIT = 256 * 1024;

/** Header names evpub gives meaning to; they map to `meta` fields, not `meta.headers`. */
const KEY_HEADER = 'Evpub-Key';
const ID_HEADER = 'Nats-Msg-Id';
const TYPE_HEADER = 'Content-Type';

const DEFAULT_MAX_PAYLOAD = 1024 * 1024;

const noAck = (): Promise<void> => Promise.resolve();

/** The URL for messages: a password, and a token in the user part (`nats://TOKEN@host`), masked. */
export function natsEndpoint(url: string): string {
  try {
    const u = new URL(url);
    if (u.username && !u.password) u.username = '***';
    return redact(u.toString());
  } catch {
    return redact(url).replace(/\/\/[^:/@]+@/, '//***@');
  }
}

export class NatsAdapter implements BrokerAdapter, Link {
  static readonly adapterName = 'nats';
  static readonly defaultPort = 4222;
  readonly name = 'nats';
  readonly features: AdapterFeatures;

  private readonly logger: Logger;
  private readonly nats: ResolvedNatsOptions;
  private nm: NatsModule | undefined;
  private connection: NatsConnection | undefined;
  private core: CorePublisher | undefined;
  private jetstream: JetStreamPublisher | undefined;
  private durables: DurableConsumers | undefined;
  private _up = false;
  private _gen = 0;
  private ending = false;
  private downSince: number | undefined;
  /** Where and how TLS is used, when it is (for probeNatsTls). */
  private tls: NatsTlsTarget | undefined;
  private maxPayload = DEFAULT_MAX_PAYLOAD;
  /** Core subscriptions by pattern, in subscription order. */
  private readonly subs = new Map<string, Subscription[]>();
  /** Subject → topic for received messages, topic → subject for publishes. */
  private readonly topics = new NameCache(fromDotted);
  private readonly subjects = new NameCache(toDotted);

  constructor(
    private readonly options: ResolvedClientOptions,
    private readonly events: AdapterEvents,
  ) {
    this.nats = natsOptions(options.nats);
    this.logger = options.logger;
    this.features = {
      wildcards: true,
      headers: true,
      confirms: true,
      durable: this.nats.jetstream,
      orderingKey: false,
      deduplicates: this.nats.jetstream,
      maxPayload: DEFAULT_MAX_PAYLOAD,
    };
  }

  // Link, for the publishers.
  get nc(): NatsConnection {
    return this.connection!;
  }
  get up(): boolean {
    return this._up;
  }
  get gen(): number {
    return this._gen;
  }

  // -------------------------------------------------------------------------------------------
  // Connection

  /** The server, the credentials and TLS for nats.js's `connect()` (nats-auth.ts). */
  private target(nm: NatsModule, where: string): NatsConnectTarget {
    const { target, tls } = natsTarget(
      nm,
      this.options.url ?? `nats://localhost:${NatsAdapter.defaultPort}`,
      {
        username: this.options.username,
        password: this.options.password,
        token: this.nats.token,
        nkey: this.nats.nkey,
        creds: this.nats.creds,
        tls: this.options.tls,
      },
      { path: 'nats', tlsPath: 'options.tls', endpoint: where, logger: this.logger },
    );
    this.tls = tls;
    return target;
  }

  async connect(): Promise<void> {
    const nm = await loadDriver<NatsModule>('@nats-io/transport-node', 'NATS adapter');
    this.nm = nm;
    const jsmod = this.nats.jetstream
      ? await loadDriver<JetStreamModule>('@nats-io/jetstream', 'NATS adapter in JetStream mode')
      : undefined;
    const where = natsEndpoint(this.options.url ?? '');
    const ms = this.options.connectTimeout;
    const { initialDelay, maxDelay } = this.options.reconnect;
    const dialing = nm.connect({
      ...this.target(nm, where),
      name: this.options.clientId ?? 'evpub',
      timeout: ms,
      reconnect: true,
      maxReconnectAttempts: -1,
      waitOnFirstConnect: false,
      // nats.js writes its outbound buffer to the socket at the end of the current task, or at
      // once when it passes `pendingLimit` (32 KiB by default: every ~50 CloudEvents of a burst,
      // a write syscall each). 256 KiB: one write per chunk of the source's stream, about 18%
      // less CPU per event in bench/pipeline-inprocess.ts; latency is unchanged (a task's
      // publishes still go out when it ends). Not in nats.js's typings.
      ...({ pendingLimit: PENDING_LIMIT } as object),
      // Otherwise every request (each JetStream publish is one) makes two Errors up front for
      // their stack traces, used only if it fails: a quarter of evpub's CPU in a JetStream
      // burst. A failed publish is reported as an EvpubError naming the subject anyway.
      noAsyncTraces: true,
      // Asked before each dial: the minimum time between two dials of the server.
      reconnectDelayHandler: () => {
        this.downSince ??= Date.now();
        const down = Date.now() - this.downSince;
        return Math.min(maxDelay, Math.max(initialDelay, down)) * (1 + Math.random() * 0.1);
      },
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    });
    let nc: NatsConnection;
    try {
      nc = await Promise.race([dialing, timeout]);
    } catch (err) {
      dialing.then((late) => late.close()).catch(() => undefined);
      throw await this.connectFailure(err, where, ms);
    } finally {
      clearTimeout(timer);
    }
    this.connection = nc;
    this.downSince = undefined; // the handler is asked during the first dial too
    this.readMaxPayload();
    try {
      if (jsmod) await this.startJetStream(jsmod, nc);
      else this.core = new CorePublisher(this, this.options.publishTimeout);
    } catch (err) {
      await nc.close().catch(() => undefined);
      throw new EvpubError(
        ErrorCode.CONNECT_FAILED,
        `JetStream is not usable at ${where}: ${toError(err).message}`,
        { cause: err, context: { url: where } },
      );
    }
    this._up = true;
    void this.watchStatus(nc);
    void nc.closed().then((err) => this.onClosed(err));
  }

  /** connectError(), or TLS_FAILED when a probe finds the TLS session is what fails (nats-tls.ts). */
  private async connectFailure(err: unknown, where: string, ms: number): Promise<EvpubError> {
    const e = this.connectError(err, where, ms);
    if (e.code !== ErrorCode.CONNECT_FAILED || this.tls === undefined) return e;
    const { host, port, options } = this.tls;
    const why = await probeNatsTls(host, port, options, Math.min(ms, 5000));
    return (why && tlsFailure(why, where)) ?? e;
  }

  private connectError(err: unknown, where: string, ms: number): EvpubError {
    const tls = tlsFailure(err, where);
    if (tls) return tls;
    const e = toError(err);
    if (isNatsAuthError(err)) {
      return new EvpubError(ErrorCode.AUTH_FAILED, `NATS at ${where} refused the credentials`, {
        cause: err,
        context: { url: where },
      });
    }
    return new EvpubError(
      ErrorCode.CONNECT_FAILED,
      `could not connect to NATS at ${where} within ${ms} ms: ${e.message}`,
      { cause: err, retriable: true, context: { url: where } },
    );
  }

  private async startJetStream(jsmod: JetStreamModule, nc: NatsConnection): Promise<void> {
    const jsm = await jsmod.jetstreamManager(nc, { timeout: this.options.connectTimeout });
    const js = jsmod.jetstream(nc, { timeout: this.options.publishTimeout });
    const streams = new StreamKeeper(
      jsmod,
      jsm,
      this.nats.stream,
      this.nats.subjects,
      this.logger,
      this.nats.duplicateWindow,
    );
    await streams.prepare();
    this.jetstream = new JetStreamPublisher(this, js, streams, this.options.publishTimeout);
    this.durables = new DurableConsumers(
      jsmod,
      jsm,
      js,
      streams,
      (pattern, m, ack) => this.deliverDurable(pattern, m, ack),
      (pattern, err) => this.events.error(this.subscriptionError(pattern, err)),
      this.logger,
    );
  }

  private readMaxPayload(): void {
    const max = this.connection?.info?.max_payload;
    if (typeof max === 'number' && max > 0) {
      this.maxPayload = max;
      this.features.maxPayload = max;
    }
  }

  private async watchStatus(nc: NatsConnection): Promise<void> {
    try {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect') {
          if (!this._up) continue;
          this._up = false;
          this.downSince ??= Date.now();
          this.events.offline();
        } else if (s.type === 'reconnect') {
          // Not awaited: the -ERRs that follow must reach the publishers at once (see denied()).
          void this.onReconnect(nc);
        } else if (s.type === 'error') {
          const err = s.error as Error & { operation?: unknown; subject?: unknown };
          if (
            err.name === 'PermissionViolationError' &&
            err.operation === 'publish' &&
            typeof err.subject === 'string'
          ) {
            this.core?.denied(err.subject, err.message);
            this.jetstream?.denied(err.subject, err.message);
            this.logger.debug({ err }, 'NATS server refused a publish');
            continue;
          }
          this.logger.warn({ err: s.error }, 'NATS server error');
        } else if (s.type === 'ldm') {
          this.logger.info({ server: s.server }, 'NATS server entering lame duck mode');
        } else if (s.type === 'slowConsumer') {
          this.logger.warn({ pending: s.pending }, 'NATS slow consumer: messages pile up in the client');
        }
      }
    } catch (err) {
      this.logger.debug({ err }, 'NATS status stream ended');
    }
  }

  private async onReconnect(nc: NatsConnection): Promise<void> {
    this._gen++;
    this.downSince = undefined;
    this._up = true;
    this.readMaxPayload();
    // What the lost connection did not confirm goes first, in publish order.
    this.core?.resend();
    this.jetstream?.requeue();
    // One round trip: the server has our subscriptions again when the Client hears of it.
    await nc.flush().catch(() => undefined);
    if (this.ending || !this._up) return;
    this.jetstream?.drain();
    this.events.reconnect();
  }

  private onClosed(err: void | Error): void {
    this._up = false;
    if (this.ending) return;
    const reason = new EvpubError(
      ErrorCode.DISCONNECTED,
      `the NATS connection closed for good${err ? `: ${err.message}` : ''}`,
      { cause: err },
    );
    this.failAll(reason);
    this.events.error(reason);
    this.events.close();
  }

  private failAll(err: Error): void {
    this.core?.failAll(err);
    this.jetstream?.failAll(err);
  }

  // -------------------------------------------------------------------------------------------
  // Publishing

  publish(topic: string, payload: Buffer, options: PublishOptions): Promise<void> {
    if (this.ending) {
      return Promise.reject(new EvpubError(ErrorCode.CLIENT_CLOSED, 'the NATS adapter was ended'));
    }
    const subject = this.subjects.get(topic);
    let headers: MsgHdrs | undefined;
    let size = payload.length;
    const { key, contentType, messageId } = options;
    if (options.headers || key !== undefined || contentType !== undefined || messageId !== undefined) {
      const pairs: [string, string][] = options.headers ? Object.entries(options.headers) : [];
      if (key !== undefined) pairs.push([KEY_HEADER, key]);
      if (contentType !== undefined) pairs.push([TYPE_HEADER, contentType]);
      if (messageId !== undefined) pairs.push([ID_HEADER, messageId]);
      size += headerBytes(pairs);
      try {
        headers = this.nm!.headers();
        for (const [k, v] of pairs) headers.set(k, v);
      } catch (err) {
        return Promise.reject(
          new EvpubError(
            ErrorCode.PUBLISH_FAILED,
            `publish to "${topic}": not a valid NATS header: ${toError(err).message}`,
            { cause: err, context: { topic } },
          ),
        );
      }
    }
    if (size > this.maxPayload) {
      return Promise.reject(
        new EvpubError(
          ErrorCode.PAYLOAD_TOO_LARGE,
          `publish to "${topic}": ${size} bytes of payload and headers exceed the NATS server's ` +
            `max_payload of ${this.maxPayload} bytes`,
          { context: { topic, size, limit: this.maxPayload } },
        ),
      );
    }
    const m = { subject, data: payload, headers };
    return this.jetstream ? this.jetstream.publish(m, messageId) : this.core!.publish(m);
  }

  // -------------------------------------------------------------------------------------------
  // Subscribing

  async subscribe(pattern: string, options: SubscribeOptions): Promise<void> {
    if (options.durable !== undefined) {
      if (!this.durables) {
        throw new EvpubError(
          ErrorCode.CONFIG_INVALID,
          'durable: durable subscriptions on NATS need JetStream: pass { nats: { jetstream: true } }',
        );
      }
      await this.durables.subscribe(pattern, options.durable, options.from ?? 'new');
      return;
    }
    if (this.subs.has(pattern)) return;
    const nc = this.nc;
    const subs = subjectsFor(pattern).map((subject) =>
      nc.subscribe(subject, {
        callback: (err, msg) => {
          if (err) this.events.error(this.subscriptionError(pattern, err));
          else this.deliver(pattern, msg);
        },
      }),
    );
    this.subs.set(pattern, subs);
    try {
      await nc.flush();
    } catch (err) {
      // Not confirmed yet: nats.js subscribes again when the connection is back.
      this.logger.debug({ err, pattern }, 'subscription not confirmed; it is restored on reconnect');
    }
  }

  private subscriptionError(pattern: string, err: Error): EvpubError {
    return new EvpubError(
      ErrorCode.SUBSCRIBE_FAILED,
      `NATS subscription to "${pattern}" failed: ${err.message}`,
      { cause: err, context: { pattern } },
    );
  }

  private deliver(pattern: string, msg: Msg): void {
    const topic = this.topics.get(msg.subject);
    // One copy per client when several of its patterns match (as MQTT brokers do).
    if (this.subs.size > 1) {
      for (const p of this.subs.keys()) {
        if (matches(p, topic)) {
          if (p !== pattern) return;
          break;
        }
      }
    }
    const meta: MessageMeta = { pattern, ack: noAck };
    if (msg.headers) this.readHeaders(msg.headers, meta);
    this.events.message(topic, toBuffer(msg.data), meta);
  }

  private deliverDurable(pattern: string, m: JsMsg, ack: () => Promise<void>): void {
    const meta: MessageMeta = { pattern, redelivered: m.redelivered, ack };
    if (m.headers) this.readHeaders(m.headers, meta);
    this.events.message(this.topics.get(m.subject), toBuffer(m.data), meta);
  }

  private readHeaders(h: MsgHdrs, meta: MessageMeta): void {
    let headers: Record<string, string> | undefined;
    for (const [k, values] of h) {
      const v = values[values.length - 1] ?? '';
      if (k === KEY_HEADER) meta.key = v;
      else if (k === ID_HEADER) meta.messageId = v;
      else if (k === TYPE_HEADER) meta.contentType = v;
      else (headers ??= {})[k] = v;
    }
    if (headers) meta.headers = headers;
  }

  async unsubscribe(pattern: string): Promise<void> {
    const subs = this.subs.get(pattern);
    if (subs) {
      this.subs.delete(pattern);
      for (const s of subs) s.unsubscribe();
    }
    await this.durables?.unsubscribe(pattern);
  }

  // -------------------------------------------------------------------------------------------

  async end(): Promise<void> {
    this.ending = true;
    const nc = this.connection;
    if (nc && !nc.isClosed()) {
      await this.durables?.stopAll();
      if (this._up) {
        // Let what was written reach the server; bounded: the server may be going away.
        let timer: NodeJS.Timeout | undefined;
        const bound = new Promise<void>((r) => (timer = setTimeout(r, this.options.connectTimeout)));
        await Promise.race([nc.drain(), bound]).catch(() => undefined);
        clearTimeout(timer);
      }
      await nc.close().catch(() => undefined);
    }
    this._up = false;
    this.failAll(new EvpubError(ErrorCode.CLIENT_CLOSED, 'the client was ended before the broker confirmed'));
    this.events.close();
  }
}

/** A Buffer over the same bytes (no copy). */
function toBuffer(data: Uint8Array): Buffer {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}
