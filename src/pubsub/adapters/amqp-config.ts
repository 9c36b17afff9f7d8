/**
 * The AMQP adapter's settings, validated once in the constructor (no I/O), and the amqplib
 * connect target built from the URL and the client options.
 *
 *   createClient('amqp://guest:guest@localhost:5672/vhost?heartbeat=30', {
 *     amqp: { exchange: 'evpub', prefetch: 500 },
 *   });
 *   createClient('amqps://rabbit.example.com/prod', {
 *     tls: { ca: '/etc/evpub/ca.pem', cert: '/etc/evpub/evpub.pem', key: '/etc/evpub/evpub.key' },
 *     amqp: { auth: 'external' },
 *   });
 *
 * Credentials come from the URL (percent-decoded) or `username`/`password`, which win; with
 * neither, amqplib's default guest/guest is used. The vhost is the URL path (`/` when empty).
 *
 * TLS: on with an `amqps://` URL or the client option `tls` (either one; the default port is
 * then 5671). `amqp.auth: 'external'` authenticates with the TLS client certificate (SASL
 * EXTERNAL: RabbitMQ's rabbitmq_auth_mechanism_ssl plugin maps the certificate's subject to a
 * user) instead of a user name and password: it needs `tls.cert` and `tls.key`, and no
 * credentials in the URL. `amqp.socket` passes further amqplib socket options through; the
 * `tls` settings win over it.
 */
import type { Options, SocketOptions } from 'amqplib';
import { ErrorCode, EvpubError, redact } from '../../errors';
import { nearest } from '../../util/nearest';
import type { TlsSettings } from '../../util/tls';
import type { ResolvedClientOptions } from '../adapter';

export interface AmqpSettings {
  /** The durable topic exchange everything is published to. */
  exchange: string;
  /** Unacknowledged deliveries per durable consumer. */
  prefetch: number;
  /** Largest payload accepted before sending: RabbitMQ's `max_message_size`. */
  maxPayload: number;
  /** Extra amqplib socket options. */
  socket: SocketOptions;
  /** TLS settings (`amqps://` alone means `{}`: the system's CAs); undefined for plain TCP. */
  tls: TlsSettings | undefined;
  /** SASL mechanism: PLAIN (user name and password) or EXTERNAL (the TLS client certificate). */
  auth: 'plain' | 'external';
  /** What amqplib connects to. */
  target: Options.Connect;
  /** `host:port`, for messages. */
  where: string;
  /** The URL with the password redacted, for messages. */
  safeUrl: string;
  /** `amqps://host:port` (no credentials), naming the endpoint in TLS messages and warnings. */
  endpoint: string;
}

/**
 * RabbitMQ's default `max_message_size` since 3.8 (128 MiB); RabbitMQ 4.x lowered it to 16 MiB.
 * The broker on this project's machines is 3.10 (`rabbitmqctl environment` shows 134217728).
 */
export const DEFAULT_MAX_PAYLOAD = 128 * 1024 * 1024;

const KNOWN = ['exchange', 'prefetch', 'maxPayload', 'socket', 'auth'] as const;
const AUTH = ['plain', 'external'] as const;

function invalid(message: string): EvpubError {
  return new EvpubError(ErrorCode.CONFIG_INVALID, message);
}

function positiveInt(key: string, v: unknown, dflt: number, max: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) {
    throw invalid(`amqp.${key}: must be an integer from 1 to ${max}, got ${JSON.stringify(v) ?? typeof v}`);
  }
  return v;
}

export function amqpSettings(options: ResolvedClientOptions): AmqpSettings {
  const raw = options.amqp ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw invalid('amqp: must be an object like { exchange: "evpub" }');
  }
  const given = raw as Record<string, unknown>;
  for (const key of Object.keys(given)) {
    if (!(KNOWN as readonly string[]).includes(key)) {
      const near = nearest(key, KNOWN);
      throw invalid(
        `amqp.${key}: unknown option; ${near !== undefined ? `did you mean ${near}? ` : ''}the AMQP adapter knows ${KNOWN.join(', ')}`,
      );
    }
  }
  const exchange = given.exchange ?? 'evpub';
  if (
    typeof exchange !== 'string' ||
    exchange === '' ||
    Buffer.byteLength(exchange) > 255 ||
    exchange.startsWith('amq.')
  ) {
    throw invalid(
      `amqp.exchange: must be a non-empty string of at most 255 bytes not starting with "amq." (reserved), got ${JSON.stringify(exchange)}`,
    );
  }
  const socket = given.socket ?? {};
  if (typeof socket !== 'object' || socket === null || Array.isArray(socket)) {
    throw invalid('amqp.socket: must be an object of amqplib socket options (e.g. { ca: [...] })');
  }

  const auth = given.auth ?? 'plain';
  if (typeof auth !== 'string' || !(AUTH as readonly string[]).includes(auth)) {
    throw invalid(
      `amqp.auth: must be "plain" (user name and password) or "external" (the TLS client certificate), got ${JSON.stringify(auth)}`,
    );
  }

  const url = new URL(options.url ?? `amqp://${options.host ?? 'localhost'}`);
  const tlsSettings = options.tls ?? (url.protocol === 'amqps:' ? {} : undefined);
  const tls = tlsSettings !== undefined;
  const hostname = url.hostname.replace(/^\[|\]$/g, '');
  const port = url.port === '' ? (tls ? 5671 : 5672) : Number(url.port);
  const target: Options.Connect = {
    protocol: tls ? 'amqps' : 'amqp',
    hostname,
    port,
    vhost: url.pathname.length > 1 ? decodeURIComponent(url.pathname.slice(1)) : '/',
  };
  const username = options.username ?? (url.username ? decodeURIComponent(url.username) : undefined);
  const password = options.password ?? (url.password ? decodeURIComponent(url.password) : undefined);
  if (auth === 'external') {
    if (tlsSettings?.cert === undefined) {
      throw invalid(
        'amqp.auth: "external" authenticates with a TLS client certificate: set tls.cert and tls.key (and tls.ca for a private CA)',
      );
    }
    if (username !== undefined || password !== undefined) {
      throw invalid(
        'amqp.auth: "external" takes the user from the client certificate: remove the user name and password from the URL and options',
      );
    }
  } else if (username !== undefined || password !== undefined) {
    target.username = username ?? '';
    target.password = password ?? '';
  }
  for (const key of ['heartbeat', 'frameMax', 'channelMax'] as const) {
    const v = url.searchParams.get(key);
    if (v === null) continue;
    if (!/^\d+$/.test(v)) throw invalid(`${redact(url.toString())}: ?${key} must be a whole number`);
    target[key] = Number(v);
  }

  return {
    exchange,
    prefetch: positiveInt('prefetch', given.prefetch, 500, 65535),
    maxPayload: positiveInt('maxPayload', given.maxPayload, DEFAULT_MAX_PAYLOAD, 512 * 1024 * 1024),
    socket: socket,
    tls: tlsSettings,
    auth: auth as AmqpSettings['auth'],
    target,
    where: `${url.hostname}:${port}`,
    safeUrl: redact(url.toString()),
    endpoint: `${tls ? 'amqps' : 'amqp'}://${url.host.replace(/:\d+$/, '')}:${port}`,
  };
}
