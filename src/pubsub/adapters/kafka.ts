/** The Kafka adapter. Placeholder until it is written: every method rejects. */
import type { AdapterEvents, AdapterFeatures, BrokerAdapter, ResolvedClientOptions } from '../adapter';
import { ErrorCode, EvpubError } from '../../errors';

export class KafkaAdapter implements BrokerAdapter {
  static readonly adapterName = 'kafka';
  static readonly defaultPort = 9092;
  readonly name = 'kafka';
  readonly features: AdapterFeatures = {
    wildcards: true,
    headers: false,
    confirms: true,
    durable: false,
    orderingKey: false,
    maxPayload: 1024 * 1024,
  };

  constructor(
    readonly options: ResolvedClientOptions,
    readonly events: AdapterEvents,
  ) {}

  private notYet(): Promise<never> {
    return Promise.reject(
      new EvpubError(ErrorCode.CONNECT_FAILED, 'the kafka adapter is not implemented yet'),
    );
  }
  connect(): Promise<void> {
    return this.notYet();
  }
  publish(): Promise<void> {
    return this.notYet();
  }
  subscribe(): Promise<void> {
    return this.notYet();
  }
  unsubscribe(): Promise<void> {
    return this.notYet();
  }
  end(): Promise<void> {
    return Promise.resolve();
  }
}
