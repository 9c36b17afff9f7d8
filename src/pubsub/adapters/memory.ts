/**
 * The in-memory adapter: a broker inside the process, for the demo, for single-process
 * applications and for embedding. `memory://NAME` connects to the broker called NAME (one per
 * name per process; `memory://` alone is `default`). Delivery is in publish order, on the next
 * microtask; nothing survives the process. Pass `{ memory: { broker } }` to use a broker of your own.
 */
import type {
  AdapterEvents,
  AdapterFeatures,
  BrokerAdapter,
  MessageMeta,
  PublishOptions,
  ResolvedClientOptions,
  SubscribeOptions,
} from '../adapter';
import { ErrorCode, EvpubError } from '../../errors';
import { matches } from '../topics';

interface Subscriber {
  patterns: Set<string>;
  deliver(pattern: string, topic: string, payload: Buffer, options: PublishOptions): void;
}

/** A broker living in this process. Subscribers get what is published after they subscribed. */
export class MemoryBroker {
  private readonly subscribers = new Set<Subscriber>();

  attach(sub: Subscriber): () => void {
    this.subscribers.add(sub);
    return () => this.subscribers.delete(sub);
  }

  publish(topic: string, payload: Buffer, options: PublishOptions): void {
    for (const sub of this.subscribers) {
      for (const pattern of sub.patterns) {
        if (matches(pattern, topic)) {
          sub.deliver(pattern, topic, payload, options);
          break; // one copy per subscriber, like MQTT's overlapping-subscription rule in mosquitto
        }
      }
    }
  }
}

const brokers = new Map<string, MemoryBroker>();

/** The process's broker called `name`, made on first use. */
export function memoryBroker(name = 'default'): MemoryBroker {
  let broker = brokers.get(name);
  if (!broker) {
    broker = new MemoryBroker();
    brokers.set(name, broker);
  }
  return broker;
}

const noAck = (): Promise<void> => Promise.resolve();

export class MemoryAdapter implements BrokerAdapter {
  static readonly adapterName = 'memory';
  static readonly defaultPort = 0;
  readonly name = 'memory';
  readonly features: AdapterFeatures = {
    wildcards: true,
    headers: true,
    confirms: true,
    durable: false,
    orderingKey: true,
    deduplicates: false,
    maxPayload: 256 * 1024 * 1024,
  };
  private readonly broker: MemoryBroker;
  private readonly patterns = new Set<string>();
  private detach: (() => void) | undefined;

  constructor(
    options: ResolvedClientOptions,
    private readonly events: AdapterEvents,
  ) {
    const own = (options.memory as { broker?: MemoryBroker } | undefined)?.broker;
    const name = new URL(options.url ?? 'memory://').hostname || 'default';
    this.broker = own ?? memoryBroker(name);
  }

  async connect(): Promise<void> {
    this.detach = this.broker.attach({
      patterns: this.patterns,
      deliver: (pattern, topic, payload, options) => {
        const meta: MessageMeta = { pattern, ack: noAck };
        if (options.headers) meta.headers = { ...options.headers };
        if (options.key !== undefined) meta.key = options.key;
        if (options.contentType !== undefined) meta.contentType = options.contentType;
        if (options.messageId !== undefined) meta.messageId = options.messageId;
        queueMicrotask(() => this.events.message(topic, payload, meta));
      },
    });
  }

  async publish(topic: string, payload: Buffer, options: PublishOptions): Promise<void> {
    if (payload.length > this.features.maxPayload) {
      throw new EvpubError(
        ErrorCode.PAYLOAD_TOO_LARGE,
        `payload of ${payload.length} bytes exceeds the memory broker's limit`,
      );
    }
    this.broker.publish(topic, payload, options);
  }

  async subscribe(pattern: string, _options: SubscribeOptions): Promise<void> {
    this.patterns.add(pattern);
  }

  async unsubscribe(pattern: string): Promise<void> {
    this.patterns.delete(pattern);
  }

  async end(): Promise<void> {
    this.detach?.();
    this.events.close();
  }
}
