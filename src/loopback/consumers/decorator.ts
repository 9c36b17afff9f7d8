/**
 * Consumers: LoopBack 4 classes whose `@subscribe` methods receive events through evpub's
 * pub/sub client.
 *
 *   @injectable(asConsumer)
 *   class Billing {
 *     constructor(@inject('services.Ledger') private ledger: Ledger) {}
 *
 *     @subscribe('orders/+/created', { durable: 'billing' })
 *     async onOrderCreated(order: unknown, topic: string, meta: MessageMeta) { ... }
 *   }
 *   app.service(Billing);          // or app.add(createBindingFromClass(Billing))
 *
 * Protocol (what `EvpubConsumersObserver`, observer.ts, does with this metadata):
 * - A consumer is a binding tagged as an extension of `EvpubBindings.CONSUMERS` (`asConsumer`).
 *   At `app.start()` each one is resolved once from the context (so its injections are its
 *   own) and each of its `@subscribe` methods is subscribed to its pattern on its broker.
 * - A message is decoded (`decode`) and handed to the method as `(payload, topic, meta)`.
 *   Calls of one method run one at a time in delivery order (`concurrency`, default 1).
 * - Durable subscriptions (`durable`): the message is acknowledged (`meta.ack()`) only after
 *   the method resolved. A method that throws (or a payload that does not decode) leaves it
 *   unacknowledged, so the broker delivers it again by its own rule (docs/loopback-consumers.md
 *   says which), and the error is logged with the class, method and topic and counted. With
 *   `ack: 'manual'` the method acknowledges itself with `meta.ack()`.
 * - Plain subscriptions have no acknowledgement: a failure is logged and counted, the message
 *   is not delivered again.
 * Options are checked here, when the class is defined; the broker name when the app starts.
 */
import { MetadataAccessor, MetadataInspector, MethodDecoratorFactory, extensionFor } from '@loopback/core';
import type { BindingTemplate } from '@loopback/core';
import { ErrorCode, EvpubError, isEvpubError } from '../../errors';
import type { SubscribeOptions as ClientSubscribeOptions } from '../../pubsub/adapter';
import { assertPattern } from '../../pubsub/topics';
import { EvpubBindings } from '../keys';

/** How a payload reaches the method: parsed JSON, a CloudEvent (structured or binary mode), or the Buffer. */
export type ConsumerDecode = 'json' | 'cloudevent' | 'raw';

export interface ConsumerOptions extends ClientSubscribeOptions {
  /**
   * A broker name of the evpub configuration (`brokers`), or a broker URL. Default: the broker
   * of `EvpubBindings.CLIENT` (the configuration's `clientBroker`, else `default`).
   */
  broker?: string;
  /** Default `json`. */
  decode?: ConsumerDecode;
  /** Calls of this method running at once (default 1: one at a time, in delivery order). */
  concurrency?: number;
}

/** What `@subscribe` records for one method. */
export interface SubscribeSpec {
  pattern: string;
  options: ConsumerOptions;
}

export const SUBSCRIBE_METADATA = MetadataAccessor.create<SubscribeSpec, MethodDecorator>('evpub:subscribe');

/** Binding template of a consumer: an extension of `EvpubBindings.CONSUMERS`. */
export const asConsumer: BindingTemplate = (binding) => {
  extensionFor(EvpubBindings.CONSUMERS)(binding);
};

const OPTION_KEYS = ['durable', 'qos', 'ack', 'from', 'broker', 'decode', 'concurrency'] as const;

function optionError(where: string, key: string, message: string, cause?: unknown): EvpubError {
  return new EvpubError(ErrorCode.CONFIG_INVALID, `@subscribe on ${where}: ${key}: ${message}`, {
    cause,
    context: { consumer: where, key },
  });
}

/** Checks a `@subscribe`'s pattern and options; `where` is `Class.method`. */
export function checkSpec(where: string, pattern: unknown, options: unknown): SubscribeSpec {
  try {
    assertPattern(pattern);
  } catch (err) {
    const why = isEvpubError(err) ? err.message : String(err);
    throw optionError(where, 'pattern', `${why}; e.g. 'orders/+/created' or 'orders/#'`, err);
  }
  if (options === undefined) return { pattern, options: {} };
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw optionError(where, 'options', 'must be an object like { durable: "billing" }');
  }
  const o = options as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!(OPTION_KEYS as readonly string[]).includes(key)) {
      throw optionError(where, key, `unknown option; allowed: ${OPTION_KEYS.join(', ')}`);
    }
  }
  const oneOf = (key: string, allowed: readonly unknown[]): void => {
    if (o[key] !== undefined && !allowed.includes(o[key])) {
      throw optionError(
        where,
        key,
        `must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${JSON.stringify(o[key])}`,
      );
    }
  };
  const name = (key: string): void => {
    if (o[key] !== undefined && (typeof o[key] !== 'string' || o[key] === '')) {
      throw optionError(where, key, `must be a non-empty string, got ${JSON.stringify(o[key])}`);
    }
  };
  name('durable');
  name('broker');
  oneOf('qos', [0, 1, 2]);
  oneOf('ack', ['auto', 'manual']);
  oneOf('from', ['new', 'earliest']);
  oneOf('decode', ['json', 'cloudevent', 'raw']);
  if (o.concurrency !== undefined && !(Number.isInteger(o.concurrency) && (o.concurrency as number) >= 1)) {
    throw optionError(
      where,
      'concurrency',
      `must be an integer of 1 or more, got ${JSON.stringify(o.concurrency)}`,
    );
  }
  if (o.durable === undefined) {
    for (const key of ['ack', 'from']) {
      if (o[key] !== undefined) throw optionError(where, key, 'only applies with durable: "<name>"');
    }
  }
  return { pattern, options: { ...(o as ConsumerOptions) } };
}

function className(target: object): string {
  const ctor =
    typeof target === 'function' ? target : (target as { constructor?: { name?: string } }).constructor;
  return ctor?.name || '<anonymous class>';
}

/**
 * Subscribes the decorated method to `pattern` (MQTT syntax: `+` one level, `#` the rest) when
 * the app starts. The method is called as `(payload, topic, meta)`.
 */
export function subscribe(pattern: string, options?: ConsumerOptions): MethodDecorator {
  return (target, methodName, descriptor) => {
    const where = `${className(target)}.${String(methodName)}`;
    if (typeof methodName !== 'string') {
      throw optionError(where, 'method', 'a @subscribe method needs a string name');
    }
    if (typeof target === 'function') {
      throw optionError(where, 'method', 'a static method cannot be a consumer; use an instance method');
    }
    const spec = checkSpec(where, pattern, options);
    MethodDecoratorFactory.createDecorator(SUBSCRIBE_METADATA, spec, { decoratorName: '@subscribe' })(
      target,
      methodName,
      descriptor,
    );
  };
}

/** The `@subscribe` methods of a class, by method name. */
export function subscribeSpecs(cls: { prototype: unknown }): Record<string, SubscribeSpec> {
  return (
    MetadataInspector.getAllMethodMetadata<SubscribeSpec>(SUBSCRIBE_METADATA, cls.prototype as object) ?? {}
  );
}
