/**
 * A consumer of the account events, as another service of the bank would write one: it
 * receives every event evpub publishes for an account (through the same MQTT broker, decoded
 * as CloudEvents) and logs one line per event. `accountEventsPattern` turns the topic template
 * into the subscription pattern (`bank/accounts/{op}/{key}` → `bank/accounts/+/+`).
 */
import { injectable, type Constructor } from '@loopback/core';
import { asConsumer, subscribe, type CloudEvent } from 'evpub/loopback';

interface AccountChange {
  op: string;
  key: string;
  before: Record<string, unknown> | null;
  after: Record<string, unknown> | null;
}

export function accountEventsPattern(topicTemplate: string): string {
  return topicTemplate.replace(/\{[a-z]+\}/g, '+');
}

/** The consumer class for the events published on `pattern`. */
export function accountEventsConsumer(pattern: string): Constructor<unknown> {
  @injectable(asConsumer)
  class AccountEventsConsumer {
    @subscribe(pattern, { decode: 'cloudevent', qos: 1 })
    async onAccountEvent(event: CloudEvent<AccountChange>, topic: string): Promise<void> {
      const data = event.data;
      const balance = data?.after?.balance ?? data?.before?.balance;
      console.log(
        `account event: ${event.type} account ${event.subject} balance ${String(balance)} on ${topic}`,
      );
    }
  }
  return AccountEventsConsumer;
}
