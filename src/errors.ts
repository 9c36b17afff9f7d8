/**
 * One catalogue of evpub's errors.
 *
 * Every error evpub throws or emits is an `EvpubError` with a stable `code` from `ErrorCode`.
 * Callers branch on `code` (or the `isEvpubError(err, code)` guard), never on message text.
 * `retriable` says whether doing the same thing again later may succeed; the retry helper reads
 * it. Driver errors are translated at the adapter or connector boundary and kept as `cause`.
 * Messages never contain credentials: build them from `redact()`ed values.
 */

import { redactText as redactTextRule, redactUrl, redactValue } from './util/redact';

export const ErrorCode = {
  /** Configuration or options are invalid; the message names the key and the fix. */
  CONFIG_INVALID: 'EVPUB_CONFIG_INVALID',
  /** A URL scheme no adapter or connector handles. */
  UNKNOWN_SCHEME: 'EVPUB_UNKNOWN_SCHEME',
  /** An optional driver package (mqtt, ioredis, ...) is not installed. */
  DRIVER_MISSING: 'EVPUB_DRIVER_MISSING',
  /** The broker or source could not be reached within the connect timeout. */
  CONNECT_FAILED: 'EVPUB_CONNECT_FAILED',
  /** The connection was lost and could not be re-established in time. */
  DISCONNECTED: 'EVPUB_DISCONNECTED',
  /** A publish was not confirmed by the broker within the publish timeout. */
  PUBLISH_TIMEOUT: 'EVPUB_PUBLISH_TIMEOUT',
  /** The broker refused a publish (quota, nack, a reason it gave, ...); `retriable` says
   * whether it is transient or permanent for this message. */
  PUBLISH_FAILED: 'EVPUB_PUBLISH_FAILED',
  /** The broker refused this publish for lack of permission on its topic (MQTT 0x87, AMQP 403,
   * a NATS permissions violation, Kafka TOPIC_AUTHORIZATION_FAILED, Redis NOPERM): permanent
   * for this message. */
  NOT_AUTHORIZED: 'EVPUB_NOT_AUTHORIZED',
  /** Nothing at the broker takes this topic (JetStream: no stream for the subject; AMQP: 404
   * no exchange; Kafka: unknown topic where topics are not created): permanent for this message. */
  NO_DESTINATION: 'EVPUB_NO_DESTINATION',
  /** A subscribe or unsubscribe failed at the broker. */
  SUBSCRIBE_FAILED: 'EVPUB_SUBSCRIBE_FAILED',
  /** A topic or pattern that this broker cannot carry; the message names the rule. */
  INVALID_TOPIC: 'EVPUB_INVALID_TOPIC',
  /** A payload larger than the broker accepts. */
  PAYLOAD_TOO_LARGE: 'EVPUB_PAYLOAD_TOO_LARGE',
  /** The client was ended; no further operation is possible. */
  CLIENT_CLOSED: 'EVPUB_CLIENT_CLOSED',
  /** A TLS handshake failed: a server certificate not trusted, expired or for another name, a
   * client certificate refused, or no TLS on that port (src/util/tls.ts); not retriable. */
  TLS_FAILED: 'EVPUB_TLS_FAILED',
  /** The broker did not authenticate or authorise us. */
  AUTH_FAILED: 'EVPUB_AUTH_FAILED',
  /** A connector module could not be found or does not implement the contract. */
  CONNECTOR_NOT_FOUND: 'EVPUB_CONNECTOR_NOT_FOUND',
  /** A source-side failure in an event connector. */
  SOURCE_FAILED: 'EVPUB_SOURCE_FAILED',
  /** A checkpoint could not be loaded or saved. */
  CHECKPOINT_FAILED: 'EVPUB_CHECKPOINT_FAILED',
  /** No feed of that id (`datasource/model`) runs in this app (pause, resume, the HTTP API: 404). */
  FEED_NOT_FOUND: 'EVPUB_FEED_NOT_FOUND',
  /** An operation not valid in the current lifecycle state (start twice, ...). */
  INVALID_STATE: 'EVPUB_INVALID_STATE',
  /** The component cannot do that at all (a connector without re-snapshot); the message says
   * which and what can. */
  NOT_SUPPORTED: 'EVPUB_NOT_SUPPORTED',
  /** A subscription resumed past messages it never delivered (Kafka: its offset fell out of the
   * broker's retention and the consumer was reset); the message names where and how many. */
  MESSAGES_SKIPPED: 'EVPUB_MESSAGES_SKIPPED',
  /** A connector received input it cannot turn into an event (not JSON, no key, does not
   * decode); it goes to the dead-letter topic (`ChangeSink.deadLetter`). */
  MALFORMED_INPUT: 'EVPUB_MALFORMED_INPUT',
  /** A lease (src/cluster/lease.ts) is no longer ours: another instance took it, or it expired
   * in the store before we renewed it. Stop working on the unit; not retriable for that lease. */
  LEASE_LOST: 'EVPUB_LEASE_LOST',
  /** The lease store could not be reached or did not answer in time; `retriable` says whether it
   * may pass. The lease may still be ours until its deadline. */
  LEASE_FAILED: 'EVPUB_LEASE_FAILED',
  /** A checkpoint save was refused because a newer lease epoch saved that checkpoint: another
   * instance owns the unit now (fencing, src/checkpoints/contract.ts). Not retriable. */
  FENCED: 'EVPUB_FENCED',
  /** Another live process already reads this feed without `cluster` (a PostgreSQL slot active
   * for another backend, a checkpoint store claim held by another instance). The message names
   * the feed and the other process; evpub refuses to start rather than publish twice. Not
   * retriable: stop the other process, or give this one its own feeds. */
  FEED_OWNED_ELSEWHERE: 'EVPUB_FEED_OWNED_ELSEWHERE',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface EvpubErrorOptions {
  cause?: unknown;
  retriable?: boolean;
  /**
   * Structured, non-secret context (topic, adapter, datasource, ...). A broker's refusal
   * carries the broker's own words as `brokerReason` (and `brokerCode` where it has one: an
   * MQTT reason code, an AMQP reply code, a Kafka error type).
   */
  context?: Record<string, unknown>;
}

export class EvpubError extends Error {
  readonly code: ErrorCode;
  readonly retriable: boolean;
  readonly context: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: EvpubErrorOptions = {}) {
    // Messages and contexts are redacted here, whoever built them (the cause is redacted where
    // it is shown: the logger, the HTTP API).
    super(redactTextRule(message), options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'EvpubError';
    this.code = code;
    this.retriable = options.retriable ?? false;
    this.context = options.context ? redactValue(options.context) : {};
  }
}

/** True when `err` is an EvpubError, and when `code` is given, one with that code. */
export function isEvpubError(err: unknown, code?: ErrorCode): err is EvpubError {
  return err instanceof EvpubError && (code === undefined || err.code === code);
}

/** Wraps anything thrown into an Error, keeping Errors as they are. */
export function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/**
 * Removes credentials from a URL for logs, status output and error messages:
 * `amqp://guest:secret@host` becomes `amqp://guest:***@host`, `nats://TOKEN@host` becomes
 * `nats://***@host`, `?token=x` becomes `?token=***` (the rules: src/util/redact.ts).
 */
export function redact(url: string): string {
  return redactUrl(url);
}

/** Masks credentials inside a message: URLs, `password=...` pairs, bearer tokens, keys (src/util/redact.ts). */
export function redactText(text: string): string {
  return redactTextRule(text);
}
