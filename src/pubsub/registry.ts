/**
 * Which adapter serves which URL scheme. A registry is an object passed where it is needed;
 * registering a scheme twice is an error. `builtinAdapters()` returns a new registry holding
 * evpub's own adapters, registered explicitly.
 */
import { ErrorCode, EvpubError, redact } from '../errors';
import type { AdapterConstructor, ClientOptions } from './adapter';
import { AmqpAdapter } from './adapters/amqp';
import { KafkaAdapter } from './adapters/kafka';
import { MemoryAdapter } from './adapters/memory';
import { MqttAdapter } from './adapters/mqtt';
import { NatsAdapter } from './adapters/nats';
import { RedisAdapter } from './adapters/redis';
import { Client } from './client';

export class AdapterRegistry {
  private readonly bySchemes = new Map<string, AdapterConstructor>();

  register(schemes: string[], Adapter: AdapterConstructor): this {
    for (const scheme of schemes) {
      if (this.bySchemes.has(scheme)) {
        throw new EvpubError(ErrorCode.CONFIG_INVALID, `the URL scheme "${scheme}:" is already registered`);
      }
      this.bySchemes.set(scheme, Adapter);
    }
    return this;
  }

  schemes(): string[] {
    return [...this.bySchemes.keys()];
  }

  /** The adapter for `url`, or CONFIG_INVALID / UNKNOWN_SCHEME errors that say what is allowed. */
  resolve(url: string): AdapterConstructor {
    let parsed: URL;
    try {
      // `kafka://h1:9092,h2:9092` lists bootstrap brokers; the URL is checked with the first.
      parsed = new URL(String(url).replace(/^(kafka:\/\/(?:[^@/?#]*@)?[^,/?#]*),[^/?#]*/i, '$1'));
    } catch (err) {
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `broker URL ${JSON.stringify(redact(String(url)))} is not a valid URL; expected e.g. mqtt://localhost:1883`,
        { cause: err },
      );
    }
    const scheme = parsed.protocol.replace(/:$/, '');
    const Adapter = this.bySchemes.get(scheme);
    if (!Adapter) {
      throw new EvpubError(
        ErrorCode.UNKNOWN_SCHEME,
        `unknown broker URL scheme "${scheme}:" in ${redact(url)}; use one of ${this.schemes()
          .map((s) => s + '://')
          .join(', ')}`,
        { context: { scheme } },
      );
    }
    if (parsed.port !== '' && (!/^\d+$/.test(parsed.port) || Number(parsed.port) > 65535)) {
      throw new EvpubError(ErrorCode.CONFIG_INVALID, `broker URL ${redact(url)}: port must be 0 to 65535`);
    }
    return Adapter;
  }
}

export function builtinAdapters(): AdapterRegistry {
  return new AdapterRegistry()
    .register(['memory'], MemoryAdapter)
    .register(['mqtt', 'mqtts'], MqttAdapter)
    .register(['redis', 'rediss'], RedisAdapter)
    .register(['amqp', 'amqps'], AmqpAdapter)
    .register(['nats', 'tls'], NatsAdapter)
    .register(['kafka'], KafkaAdapter);
}

let builtins: AdapterRegistry | undefined;

/**
 * A client for `url`, with the adapter chosen by the URL's scheme:
 * `createClient('nats://localhost:4222', { nats: { jetstream: true } })`.
 */
export function createClient(
  url: string,
  options: ClientOptions = {},
  registry: AdapterRegistry = (builtins ??= builtinAdapters()),
): Client {
  if (typeof url !== 'string') {
    throw new EvpubError(
      ErrorCode.CONFIG_INVALID,
      'createClient: url must be a string like mqtt://localhost:1883',
    );
  }
  return new Client({ ...options, url }, registry.resolve(url));
}
