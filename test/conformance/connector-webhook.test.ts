/**
 * The event connector conformance suite for the webhook connector. The source is a sender
 * POSTing each change to every webhook connector made for the test, as a webhook provider
 * does: one request at a time, in order, retrying a 503 while the connector is streaming
 * (its window is full), and giving up where nothing listens (not started, stopped). Webhook
 * positions are a counter of the process (not resumable), and nothing is kept for a
 * connector that was not listening (no history).
 */
import { afterAll } from 'vitest';
import { initialize, type WebhookConnector } from '../../src/connectors/webhook';
import { createLogger } from '../../src/logger';
import { uniqueName } from '../helpers/services';
import { sleepUnlessStopped } from '../../src/util/retry';
import { connectorConformance } from './connector.suite';
import { committing } from './push-source';

const connectors: WebhookConnector[] = [];
const stopSenders = new AbortController();
afterAll(() => stopSenders.abort());

/** One sender per connector and model: a FIFO of bodies, sent one at a time. */
class Sender {
  private readonly queue: unknown[] = [];
  private running = false;

  constructor(
    private readonly connector: WebhookConnector,
    private readonly model: string,
  ) {}

  send(body: unknown): void {
    if (this.connector.url === undefined) return; // not listening: the provider gets nowhere
    this.queue.push(body);
    if (!this.running) void this.run();
  }

  private async run(): Promise<void> {
    this.running = true;
    while (this.queue.length > 0 && !stopSenders.signal.aborted) {
      let status: number;
      try {
        const res = await fetch(`${this.connector.url}/${this.model}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(this.queue[0]),
        });
        status = res.status;
        await res.arrayBuffer();
      } catch {
        status = 0; // connection refused: the connector was stopped
      }
      if (status === 503 && this.connector.health().state === 'streaming') {
        await sleepUnlessStopped(10, stopSenders.signal); // window full: retry, as providers do
        continue;
      }
      if (status !== 202) {
        this.queue.length = 0; // nobody takes it any more
        break;
      }
      this.queue.shift();
    }
    this.running = false;
  }
}

const senders = new Map<string, Sender>();
function post(model: string, body: unknown): Promise<void> {
  connectors.forEach((connector, i) => {
    const id = `${i}/${model}`;
    let sender = senders.get(id);
    if (!sender) senders.set(id, (sender = new Sender(connector, model)));
    sender.send(body);
  });
  return Promise.resolve();
}

connectorConformance({
  name: 'webhook',
  connector: async () => {
    const dataSource = {
      name: 'hooks',
      settings: { port: 0, rateLimit: false },
      logger: createLogger({ level: 'silent' }),
      connector: undefined as unknown,
    };
    await initialize(dataSource);
    const connector = dataSource.connector as WebhookConnector;
    connectors.push(connector);
    return committing(connector);
  },
  model: async () => {
    const name = uniqueName('m');
    return {
      name,
      settings: { opPath: 'op' },
      create: (key, value) => post(name, { id: key, op: 'create', value }),
      update: (key, value) => post(name, { id: key, op: 'update', value }),
      remove: (key) => post(name, { id: key, op: 'delete' }),
    };
  },
  valueOf: (row) => (row ? (row.value as number) : undefined),
  features: { positions: false, before: false, coalesces: false, history: false, pauses: true },
});
