/**
 * The MQTT adapter, on mqtt.js (v5). MQTT 5 by default; `{ mqtt: { protocolVersion: 4 } }` for 3.1.1.
 *
 * Topics: identity. An evpub topic is the MQTT topic as it is (`/v1/subutest` included), and
 * evpub patterns are MQTT filters (`+`, `#`).
 *
 * Publish: QoS 1 by default, resolved on PUBACK (QoS 2: on PUBCOMP); a PUBACK/PUBREC reason code
 * of 0x80 or more (MQTT 5) rejects, classified by `mqttPublishError()`: refusals of this message
 * (not authorized, invalid topic, packet too large, payload format) are permanent, the others
 * (quota, unspecified, implementation specific, packet id in use) transient. mosquitto 2.0.11
 * also closes the connection after a publish its ACL denies (both protocol versions): the
 * adapter goes offline and reconnects, and mqtt.js re-sends the QoS 1/2 publishes that were in
 * flight, so the publishes after the refused one are still confirmed. MQTT 3.1.1 has no
 * refusal: mosquitto acknowledges a denied publish and drops it, which cannot be detected.
 * QoS 0 resolves once the packet is written to the socket: the broker never confirms it. On MQTT 5, `headers` become user properties,
 * `contentType` the Content Type property, `key` and `messageId` the user properties
 * `evpub-key` and `evpub-message-id`; `retain` is the retain flag. MQTT 3.1.1 has no properties:
 * headers, contentType, key and messageId are not sent (logged once at debug level).
 *
 * Subscribe: one SUBSCRIBE per pattern, resolved on SUBACK. On MQTT 5 each pattern gets its own
 * Subscription Identifier. A broker may deliver one copy of a message per matching subscription
 * (mosquitto 2 does so for MQTT 5 clients) or one copy listing every identifier; either way the
 * adapter delivers each message once, with `meta.pattern` = the exact-topic subscription if
 * there is one, else the oldest matching wildcard pattern. On MQTT 3.1.1 there are no identifiers:
 * the pattern is found the same way, and each copy the broker sends is delivered (mosquitto
 * sends 3.1.1 clients one copy).
 *
 * Connection: `connect()` resolves on the first CONNACK. While nothing answers, mqtt.js retries
 * every `reconnect.initialDelay` until `connectTimeout`, then the connect fails with
 * CONNECT_FAILED and the client is ended (no timer or socket is left). A CONNACK refusing the
 * credentials fails at once with AUTH_FAILED. After the first connection mqtt.js reconnects on its
 * own; the delay doubles per attempt from `reconnect.initialDelay` up to `reconnect.maxDelay`.
 * A lost connection is `events.offline()`; on a new CONNACK the adapter restores its
 * subscriptions itself (unless the broker kept the session) and then calls `events.reconnect()`.
 * QoS 1/2 publishes in flight when the connection drops are re-sent by mqtt.js after it.
 *
 * Security: `mqtts://` or the `tls` option (src/util/tls.ts) connects over TLS (port 8883 when
 * the URL has none), with the CA, client certificate and key, servername and rejectUnauthorized
 * given to mqtt.js. A user name and password come from the URL (`mqtts://user:pass@host`) or
 * the `username` / `password` options; with a client certificate alone, a broker that takes the
 * certificate's identity as the user name (mosquitto `use_identity_as_username`) needs neither.
 * A failed handshake fails `connect()` at once with TLS_FAILED (not retried); after the first
 * connection it is reported through `events.error()` while mqtt.js keeps retrying.
 *
 * Sessions: clean by default. `{ mqtt: { clean: false, sessionExpiry }, clientId }` keeps the
 * session (subscriptions and QoS 1/2 messages queued while away) on the broker for
 * `sessionExpiry` seconds (default 86400) under that clientId.
 */
import type {
  IClientOptions,
  IClientPublishOptions,
  IConnackPacket,
  IPublishPacket,
  MqttClient,
  Packet,
} from 'mqtt';
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
import type { Logger } from '../../logger';
import { loadDriver } from '../driver';
import { loadTls, tlsFailure } from '../../util/tls';
import { assertMqttTopic, hasWildcards, matches } from '../topics';

type MqttModule = typeof import('mqtt');

/** MQTT's largest Remaining Length: a PUBLISH (topic, properties, payload) is at most this. */
const MQTT_MAX_REMAINING = 268_435_455;
/** Payloads this much below the limit need no exact size check, whatever the topic and properties. */
const SIZE_MARGIN = 4 * 1024 * 1024;

export const KEY_PROPERTY = 'evpub-key';
export const MESSAGE_ID_PROPERTY = 'evpub-message-id';

/**
 * MQTT 5 PUBACK/PUBREC reason codes that refuse this message for good (MQTT 5 §3.4.2.1): the
 * same publish is refused again. Every other code of 0x80 or more is taken as transient:
 * 0x97 quota exceeded passes once the quota frees; 0x80 unspecified and 0x83 implementation
 * specific say nothing of the message (brokers use them for overload and plugin failures), and
 * dead-lettering a good event is worse than retrying one; 0x91 packet identifier in use is
 * session state, and the retry goes with a new packet identifier.
 */
const PERMANENT_PUBACK: ReadonlyMap<number, ErrorCode> = new Map([
  [0x87, ErrorCode.NOT_AUTHORIZED],
  [0x90, ErrorCode.INVALID_TOPIC],
  [0x95, ErrorCode.PAYLOAD_TOO_LARGE], // not a PUBACK code in MQTT 5; mosquitto sends it anyway
  [0x99, ErrorCode.PUBLISH_FAILED],
]);

const REASONS: Record<number, string> = {
  0x80: 'Unspecified error',
  0x83: 'Implementation specific error',
  0x87: 'Not authorized',
  0x90: 'Topic Name invalid',
  0x91: 'Packet Identifier in use',
  0x95: 'Packet too large',
  0x97: 'Quota exceeded',
  0x99: 'Payload format invalid',
};

/**
 * What a failed MQTT publish becomes. `err` is mqtt.js's callback error: an error whose numeric
 * `code` is the PUBACK/PUBREC reason code (the broker refused), or a connection error (transient).
 */
export function mqttPublishError(topic: string, err: Error): EvpubError {
  const code = (err as { code?: unknown }).code;
  if (typeof code !== 'number') {
    return new EvpubError(
      ErrorCode.PUBLISH_FAILED,
      `MQTT publish to ${JSON.stringify(topic)} failed: ${err.message}`,
      {
        cause: err,
        retriable: true,
        context: { topic },
      },
    );
  }
  const permanent = PERMANENT_PUBACK.get(code);
  const hex = `0x${code.toString(16).padStart(2, '0')}`;
  const reason = REASONS[code] ?? err.message.replace(/^Publish error: /, '');
  return new EvpubError(
    permanent ?? ErrorCode.PUBLISH_FAILED,
    `the MQTT broker refused the publish to ${JSON.stringify(topic)}: ${reason} (reason code ${hex})`,
    {
      cause: err,
      retriable: permanent === undefined,
      context: { topic, reasonCode: code, brokerCode: hex, brokerReason: reason },
    },
  );
}

/** CONNACK codes that mean "who you are is not accepted", per protocol version. */
const AUTH_CODES: Record<4 | 5, readonly number[]> = { 4: [4, 5], 5: [0x86, 0x87, 0x8c] };

interface MqttSettings {
  protocolVersion: 4 | 5;
  clean: boolean;
  sessionExpiry: number;
  keepalive: number;
}

const MQTT_KEYS = ['protocolVersion', 'clean', 'sessionExpiry', 'keepalive'] as const;

function invalid(key: string, rule: string): EvpubError {
  return new EvpubError(ErrorCode.CONFIG_INVALID, `mqtt.${key}: ${rule}`, {
    context: { key: `mqtt.${key}` },
  });
}

/** Validates `options.mqtt` (a closed set of keys). */
function mqttSettings(options: ResolvedClientOptions): MqttSettings {
  const raw = options.mqtt ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new EvpubError(ErrorCode.CONFIG_INVALID, 'mqtt: must be an object like { protocolVersion: 5 }');
  }
  const o = raw as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!(MQTT_KEYS as readonly string[]).includes(key)) {
      throw invalid(key, `unknown option; the MQTT adapter takes ${MQTT_KEYS.join(', ')}`);
    }
  }
  const s: MqttSettings = { protocolVersion: 5, clean: true, sessionExpiry: 86_400, keepalive: 30 };
  if (o.protocolVersion !== undefined) {
    if (o.protocolVersion !== 4 && o.protocolVersion !== 5)
      throw invalid('protocolVersion', 'must be 4 or 5');
    s.protocolVersion = o.protocolVersion;
  }
  if (o.clean !== undefined) {
    if (typeof o.clean !== 'boolean') throw invalid('clean', 'must be true or false');
    if (!o.clean && typeof options.clientId !== 'string') {
      throw invalid('clean', 'false needs a fixed clientId option (the broker keeps the session under it)');
    }
    s.clean = o.clean;
  }
  const seconds = (key: 'sessionExpiry' | 'keepalive', max: number): void => {
    const v = o[key];
    if (v === undefined) return;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) {
      throw invalid(key, `must be a whole number of seconds from 0 to ${max}`);
    }
    s[key] = v;
  };
  seconds('sessionExpiry', 0xffff_ffff);
  seconds('keepalive', 65_535);
  return s;
}

/** Options for publishes that carry nothing but a QoS: shared, mqtt.js copies them. */
const PLAIN: Record<0 | 1 | 2, IClientPublishOptions> = {
  0: { qos: 0 },
  1: { qos: 1 },
  2: { qos: 2 },
};

const noAck = (): Promise<void> => Promise.resolve();

interface Subscription {
  id: number;
  qos: 0 | 1 | 2;
}

const noLog = (): void => undefined;

export class MqttAdapter implements BrokerAdapter {
  static readonly adapterName = 'mqtt';
  static readonly defaultPort = 1883;
  readonly name = 'mqtt';
  readonly features: AdapterFeatures;
  private readonly settings: MqttSettings;
  private readonly logger: Logger;
  /** host:port and the redacted URL, for messages. */
  private readonly where: string;
  private client: MqttClient | undefined;
  private connected = false;
  private ending = false;
  private droppedLogged = false;
  /** Largest Remaining Length the broker takes (its Maximum Packet Size, if it sent one). */
  private maxRemaining = MQTT_MAX_REMAINING;
  private sizeCheckFrom = MQTT_MAX_REMAINING - SIZE_MARGIN;
  private nextSubscriptionId = 1;
  /** What the caller subscribed to: restored after a reconnect. */
  private readonly wanted = new Map<string, Subscription>();
  /** Subscriptions the broker acknowledged, in the order they were made: used to label messages. */
  private readonly exact = new Set<string>();
  private readonly wildcards = new Set<string>();
  private readonly patternById = new Map<number, string>();
  private readonly idByPattern = new Map<string, number>();
  /** SUBSCRIBE / UNSUBSCRIBE packets sent and not yet acknowledged, by packet id. */
  private readonly pendingSub = new Map<number, string[]>();
  private readonly pendingUnsub = new Map<number, string[]>();

  constructor(
    private readonly options: ResolvedClientOptions,
    private readonly events: AdapterEvents,
  ) {
    this.settings = mqttSettings(options);
    this.logger = options.logger;
    this.features = {
      wildcards: true,
      headers: this.settings.protocolVersion === 5,
      confirms: true,
      durable: false,
      orderingKey: false,
      deduplicates: false,
      maxPayload: MQTT_MAX_REMAINING,
    };
    const url = options.url ?? `mqtt://localhost:${MqttAdapter.defaultPort}`;
    let hostPort = url;
    try {
      const u = new URL(url);
      hostPort = `${u.hostname}:${u.port || (u.protocol === 'mqtts:' || options.tls ? 8883 : MqttAdapter.defaultPort)}`;
    } catch {
      // The registry has validated URLs it resolved; a hand-made one is reported as given.
    }
    this.where = `${hostPort} (${redact(url)})`;
  }

  async connect(): Promise<void> {
    const mqtt = await loadDriver<MqttModule>('mqtt', 'MQTT adapter');
    const o = this.options;
    const s = this.settings;
    const opts: IClientOptions = {
      protocolVersion: s.protocolVersion,
      clean: s.clean,
      keepalive: s.keepalive,
      clientId: o.clientId ?? `evpub_${Math.random().toString(16).slice(2, 14)}`,
      connectTimeout: o.connectTimeout,
      reconnectPeriod: o.reconnect.initialDelay,
      // Subscriptions are restored here, so that reconnect() is reported once they are.
      resubscribe: false,
      // A CONNACK refusal after the first connection is retried like any outage.
      reconnectOnConnackError: true,
    };
    // mqtt.js logs about ten lines per publish through `debug`, whose rest parameter allocates
    // an array per call even when disabled: a seventh of all that a publisher allocated. Its
    // lines stay available the usual way, DEBUG=mqttjs*.
    if (!/mqttjs/.test(process.env.DEBUG ?? '')) opts.log = noLog;
    if (o.username !== undefined) opts.username = o.username;
    if (o.password !== undefined) opts.password = o.password;
    if (s.protocolVersion === 5 && !s.clean) opts.properties = { sessionExpiryInterval: s.sessionExpiry };
    const url = o.url ?? `mqtt://localhost:${MqttAdapter.defaultPort}`;
    if (o.tls !== undefined || /^mqtts:/i.test(url)) {
      // The tls option asks for TLS whatever the scheme; mqtt.js takes the protocol from opts first.
      opts.protocol = 'mqtts';
      Object.assign(opts, loadTls(o.tls ?? {}, 'options.tls', { endpoint: this.where, logger: this.logger }));
    }

    const client = mqtt.connect(url, opts);
    this.client = client;
    await new Promise<void>((resolve, reject) => {
      let lastError: Error | undefined;
      let failed = false;
      const fail = (err: EvpubError): void => {
        if (failed) return;
        failed = true;
        clearTimeout(timer);
        client.removeListener('error', onError);
        client.removeListener('connect', onConnect);
        client.on('error', () => undefined); // late socket errors of the abandoned client
        this.client = undefined;
        client.end(true, () => reject(err));
      };
      const timer = setTimeout(() => {
        const why = lastError ? `: ${lastError.message}` : '';
        fail(
          new EvpubError(
            ErrorCode.CONNECT_FAILED,
            `could not connect to the MQTT broker at ${this.where} within ${o.connectTimeout} ms${why}`,
            { cause: lastError, retriable: true, context: { adapter: 'mqtt' } },
          ),
        );
      }, o.connectTimeout);
      const onError = (err: Error): void => {
        lastError = err;
        const code = (err as { code?: unknown }).code;
        if (typeof code === 'number') fail(this.connackError(code, err)); // a CONNACK refusal: final
        const tls = tlsFailure(err, this.where);
        if (tls) fail(tls); // the next handshake would fail the same way
      };
      const onConnect = (connack: IConnackPacket): void => {
        clearTimeout(timer);
        client.removeListener('error', onError);
        this.attach(client);
        this.onConnack(connack);
        resolve();
      };
      // mqtt.js emits socket errors; without a listener they would be thrown.
      client.on('error', onError);
      client.once('connect', onConnect);
    });
  }

  private connackError(code: number, cause: Error): EvpubError {
    const auth = AUTH_CODES[this.settings.protocolVersion].includes(code);
    return new EvpubError(
      auth ? ErrorCode.AUTH_FAILED : ErrorCode.CONNECT_FAILED,
      `the MQTT broker at ${this.where} refused the connection: ${cause.message} (reason code ${code})`,
      { cause, retriable: !auth, context: { adapter: 'mqtt', reasonCode: code } },
    );
  }

  /** Wires the connected client's events for the rest of its life. */
  private attach(client: MqttClient): void {
    client.on('message', this.onMessage);
    client.on('packetsend', this.onPacketSend);
    client.on('packetreceive', this.onPacketReceive);
    client.on('connect', (connack) => {
      this.onConnack(connack);
      void this.restore(connack).then(() => {
        if (!this.ending && this.client === client && client.connected) this.events.reconnect();
      });
    });
    client.on('close', () => {
      if (!this.connected) return;
      this.connected = false;
      if (!this.ending) this.events.offline();
    });
    // Each reconnect attempt doubles the delay before the next one, up to maxDelay.
    client.on('reconnect', () => {
      const r = this.options.reconnect;
      client.options.reconnectPeriod = Math.min(
        (client.options.reconnectPeriod ?? r.initialDelay) * 2,
        r.maxDelay,
      );
    });
    client.on('error', (err: Error) => {
      const code = (err as { code?: unknown }).code;
      if (!this.connected) {
        // A CONNACK refusal on a reconnect (credentials changed, ...) is worth reporting; a
        // refused or reset socket is expected during an outage.
        const tls = typeof code === 'number' ? undefined : tlsFailure(err, this.where);
        if (typeof code === 'number') this.events.error(this.connackError(code, err));
        else if (tls) this.events.error(tls);
        else this.logger.debug({ err }, 'MQTT reconnect attempt failed');
        return;
      }
      if (typeof code === 'string') {
        // ECONNRESET, EPIPE, ...: the close that follows is reported as offline.
        this.logger.debug({ err }, 'MQTT socket error');
        return;
      }
      // A protocol error: keepalive timeout, a packet mqtt.js cannot parse. An acknowledgement it
      // rejects (mosquitto acks an over-size message with PUBACK 0x95, which MQTT 5 does not
      // allow) leaves that publish unconfirmed: it fails with PUBLISH_TIMEOUT.
      const ack = /\bpub(ack|rec|comp)\b/i.test(err.message);
      this.events.error(
        new EvpubError(
          ack ? ErrorCode.PUBLISH_FAILED : ErrorCode.DISCONNECTED,
          `MQTT protocol error on the connection to ${this.where}: ${err.message}`,
          { cause: err, context: { adapter: 'mqtt' } },
        ),
      );
    });
  }

  private onConnack(connack: IConnackPacket): void {
    this.connected = true;
    const client = this.client;
    if (client) client.options.reconnectPeriod = this.options.reconnect.initialDelay;
    const max = connack.properties?.maximumPacketSize;
    // Fixed header: 1 byte type + up to 4 bytes length.
    this.maxRemaining = max === undefined ? MQTT_MAX_REMAINING : Math.min(MQTT_MAX_REMAINING, max - 5);
    this.sizeCheckFrom = this.maxRemaining - SIZE_MARGIN;
  }

  /** Re-subscribes everything after a reconnect that did not resume the session. */
  private async restore(connack: IConnackPacket): Promise<void> {
    const client = this.client;
    if (!client || this.wanted.size === 0 || (!this.settings.clean && connack.sessionPresent)) return;
    const patterns = [...this.wanted.keys()];
    const results = await Promise.allSettled(
      patterns.map((pattern) => this.sendSubscribe(client, pattern, this.wanted.get(pattern)!)),
    );
    // Lost again meanwhile: the next CONNACK restores them; nothing to report.
    if (!client.connected) return;
    results.forEach((r, i) => {
      if (r.status === 'rejected') this.events.error(this.subscribeError(patterns[i]!, r.reason));
    });
  }

  private sendSubscribe(client: MqttClient, pattern: string, sub: Subscription): Promise<unknown> {
    const opts =
      this.settings.protocolVersion === 5
        ? { qos: sub.qos, properties: { subscriptionIdentifier: sub.id } }
        : { qos: sub.qos };
    return client.subscribeAsync(pattern, opts);
  }

  private subscribeError(pattern: string, cause: unknown): EvpubError {
    const why = cause instanceof Error ? `: ${cause.message}` : '';
    return new EvpubError(
      ErrorCode.SUBSCRIBE_FAILED,
      `MQTT subscribe to ${JSON.stringify(pattern)} failed${why}`,
      {
        cause,
        context: { pattern },
      },
    );
  }

  // -------------------------------------------------------------------------------------------
  // Which subscriptions the broker holds, tracked in packet order so that labels are exact.

  private readonly onPacketSend = (packet: Packet): void => {
    if (packet.cmd === 'subscribe') {
      this.pendingSub.set(
        packet.messageId ?? 0,
        packet.subscriptions.map((s) => s.topic),
      );
    } else if (packet.cmd === 'unsubscribe') {
      this.pendingUnsub.set(packet.messageId ?? 0, packet.unsubscriptions);
    }
  };

  private readonly onPacketReceive = (packet: Packet): void => {
    if (packet.cmd === 'suback') {
      const topics = this.pendingSub.get(packet.messageId ?? 0);
      if (!topics) return;
      this.pendingSub.delete(packet.messageId ?? 0);
      topics.forEach((pattern, i) => {
        const granted = packet.granted[i];
        const sub = this.wanted.get(pattern);
        if (typeof granted !== 'number' || granted >= 0x80 || !sub) return;
        (hasWildcards(pattern) ? this.wildcards : this.exact).add(pattern);
        this.patternById.set(sub.id, pattern);
        this.idByPattern.set(pattern, sub.id);
      });
    } else if (packet.cmd === 'unsuback') {
      const topics = this.pendingUnsub.get(packet.messageId ?? 0);
      if (!topics) return;
      this.pendingUnsub.delete(packet.messageId ?? 0);
      for (const pattern of topics) {
        if (this.wanted.has(pattern)) continue; // subscribed again meanwhile
        this.exact.delete(pattern);
        this.wildcards.delete(pattern);
        const id = this.idByPattern.get(pattern);
        this.idByPattern.delete(pattern);
        if (id !== undefined) this.patternById.delete(id);
      }
    }
  };

  // -------------------------------------------------------------------------------------------
  // Messages

  private patternFor(topic: string): string | undefined {
    if (this.exact.has(topic)) return topic;
    for (const p of this.wildcards) if (matches(p, topic)) return p;
    return undefined;
  }

  /** True when this copy is one the broker sent for another of our subscriptions as well. */
  private isExtraCopy(pattern: string, ids: number | number[]): boolean {
    const chosen = this.idByPattern.get(pattern);
    if (typeof ids === 'number') return ids !== chosen && this.patternById.has(ids);
    if (chosen !== undefined && ids.includes(chosen)) return false;
    return ids.some((id) => this.patternById.has(id));
  }

  private readonly onMessage = (topic: string, payload: Buffer, packet: IPublishPacket): void => {
    const props = packet.properties;
    const pattern = this.patternFor(topic);
    const ids = props?.subscriptionIdentifier;
    if (ids !== undefined && pattern !== undefined && this.isExtraCopy(pattern, ids)) return;
    const meta: MessageMeta = { pattern, qos: packet.qos, retain: packet.retain, ack: noAck };
    if (packet.dup) meta.redelivered = true;
    if (props) {
      if (props.contentType !== undefined) meta.contentType = props.contentType;
      const user = props.userProperties;
      if (user) {
        const headers: Record<string, string> = {};
        let any = false;
        for (const name of Object.keys(user)) {
          const raw = user[name];
          // A name sent more than once arrives as an array: joined with ", " like HTTP headers.
          const value = Array.isArray(raw) ? raw.join(', ') : String(raw);
          if (name === KEY_PROPERTY) meta.key = value;
          else if (name === MESSAGE_ID_PROPERTY) meta.messageId = value;
          else {
            headers[name] = value;
            any = true;
          }
        }
        if (any) meta.headers = headers;
      }
    }
    this.events.message(topic, payload, meta);
  };

  // -------------------------------------------------------------------------------------------
  // Publish

  publish(topic: string, payload: Buffer, options: PublishOptions): Promise<void> {
    const client = this.client;
    if (!client) return Promise.reject(this.closedError());
    let opts: IClientPublishOptions | undefined;
    if (
      options.headers === undefined &&
      options.key === undefined &&
      options.contentType === undefined &&
      options.messageId === undefined &&
      options.retain === undefined
    ) {
      opts = PLAIN[options.qos ?? 1];
    }
    try {
      assertMqttTopic(topic);
      opts ??= this.publishOptions(options);
      if (payload.length > this.sizeCheckFrom) this.checkSize(topic, payload, opts);
    } catch (err) {
      return Promise.reject(toError(err));
    }
    return new Promise<void>((resolve, reject) => {
      client.publish(topic, payload, opts, (err) => {
        if (err) reject(this.publishError(topic, err));
        else resolve();
      });
    });
  }

  private publishOptions(options: PublishOptions): IClientPublishOptions {
    const qos = options.qos ?? 1;
    if (qos !== 0 && qos !== 1 && qos !== 2) {
      throw new EvpubError(ErrorCode.CONFIG_INVALID, `publish qos: must be 0, 1 or 2, got ${String(qos)}`);
    }
    const opts: IClientPublishOptions = { qos, retain: options.retain === true };
    const { headers, key, messageId, contentType } = options;
    if (headers === undefined && key === undefined && messageId === undefined && contentType === undefined) {
      return opts;
    }
    if (this.settings.protocolVersion !== 5) {
      if (!this.droppedLogged) {
        this.droppedLogged = true;
        this.logger.debug(
          'MQTT 3.1.1 has no message properties: headers, key, contentType and messageId are not sent',
        );
      }
      return opts;
    }
    const properties: NonNullable<IClientPublishOptions['properties']> = {};
    if (key !== undefined || messageId !== undefined) {
      const user: Record<string, string> = { ...headers };
      if (key !== undefined) user[KEY_PROPERTY] = key;
      if (messageId !== undefined) user[MESSAGE_ID_PROPERTY] = messageId;
      properties.userProperties = user;
    } else if (headers !== undefined) {
      properties.userProperties = headers;
    }
    if (contentType !== undefined) properties.contentType = contentType;
    opts.properties = properties;
    return opts;
  }

  /** Rejects a PUBLISH whose packet would exceed MQTT's (or the broker's) maximum size. */
  private checkSize(topic: string, payload: Buffer, opts: IClientPublishOptions): void {
    let size = payload.length + Buffer.byteLength(topic) + 2 + 2;
    const p = opts.properties;
    if (p) {
      size += 4 + (p.contentType === undefined ? 0 : Buffer.byteLength(p.contentType) + 3);
      for (const [k, v] of Object.entries(p.userProperties ?? {})) {
        size += Buffer.byteLength(k) + Buffer.byteLength(String(v)) + 5;
      }
    }
    if (size > this.maxRemaining) {
      throw new EvpubError(
        ErrorCode.PAYLOAD_TOO_LARGE,
        `MQTT message to ${JSON.stringify(topic)} of ${size} bytes (payload ${payload.length}) exceeds the ` +
          `maximum packet size of ${this.maxRemaining} bytes`,
        { context: { topic, size } },
      );
    }
  }

  private publishError(topic: string, err: Error): EvpubError {
    if (this.ending || /disconnecting/i.test(err.message)) return this.closedError(err);
    return mqttPublishError(topic, err);
  }

  private closedError(cause?: Error): EvpubError {
    return new EvpubError(ErrorCode.CLIENT_CLOSED, 'the MQTT connection was closed', { cause });
  }

  // -------------------------------------------------------------------------------------------
  // Subscriptions

  async subscribe(pattern: string, options: SubscribeOptions): Promise<void> {
    const client = this.client;
    if (!client) throw this.closedError();
    if (options.durable !== undefined) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        'subscribe durable: the MQTT adapter has no named durable subscriptions; ' +
          'use a persistent session ({ clientId, mqtt: { clean: false } }) instead',
      );
    }
    const qos = options.qos ?? 1;
    if (qos !== 0 && qos !== 1 && qos !== 2) {
      throw new EvpubError(ErrorCode.CONFIG_INVALID, `subscribe qos: must be 0, 1 or 2, got ${String(qos)}`);
    }
    const sub: Subscription = { id: this.wanted.get(pattern)?.id ?? this.nextSubscriptionId++, qos };
    this.wanted.set(pattern, sub);
    try {
      await this.sendSubscribe(client, pattern, sub);
    } catch (err) {
      if (this.wanted.get(pattern) === sub && !this.idByPattern.has(pattern)) this.wanted.delete(pattern);
      throw this.subscribeError(pattern, err);
    }
  }

  async unsubscribe(pattern: string): Promise<void> {
    const client = this.client;
    if (!client) throw this.closedError();
    this.wanted.delete(pattern);
    try {
      await client.unsubscribeAsync(pattern);
    } catch (err) {
      throw new EvpubError(
        ErrorCode.SUBSCRIBE_FAILED,
        `MQTT unsubscribe from ${JSON.stringify(pattern)} failed`,
        {
          cause: err,
          context: { pattern },
        },
      );
    }
  }

  // -------------------------------------------------------------------------------------------
  // End

  async end(): Promise<void> {
    this.ending = true;
    const client = this.client;
    this.client = undefined;
    if (client) {
      await new Promise<void>((resolve) => {
        // Connected: DISCONNECT after in-flight QoS 1/2 publishes are acknowledged, bounded by
        // connectTimeout. Offline: close the socket and stop reconnecting at once.
        const timer = setTimeout(() => {
          this.logger.warn('MQTT broker did not acknowledge in-flight messages before end(); closing');
          client.stream.destroy();
          resolve();
        }, this.options.connectTimeout);
        client.end(!client.connected, () => {
          clearTimeout(timer);
          resolve();
        });
      });
      client.removeAllListeners('message');
    }
    this.connected = false;
    this.events.close();
  }
}
