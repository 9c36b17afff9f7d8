/**
 * The event connector conformance suite for the bridge connector, reading the shared
 * Mosquitto: each change is a JSON message published to the model's topic. A plain MQTT
 * subscription keeps nothing for a connector that was not subscribed (no history), and the
 * bridge's positions are a sequence of its process (not resumable).
 */
import { initialize, type BridgeConnector } from '../../src/connectors/bridge';
import { createLogger } from '../../src/logger';
import type { Client } from '../../src/pubsub/client';
import { createClient } from '../../src/pubsub/registry';
import { requireService, uniqueName } from '../helpers/services';
import { connectorConformance } from './connector.suite';
import { committing } from './push-source';

const logger = createLogger({ level: 'silent' });
let url: string;
let producer: Client;

connectorConformance({
  name: 'bridge (MQTT)',
  setup: async () => {
    url = await requireService('mosquitto');
    producer = createClient(url, { logger });
  },
  teardown: async () => {
    await producer?.end();
  },
  connector: async () => {
    const dataSource = { name: 'mqtt', settings: { url }, logger, connector: undefined as unknown };
    await initialize(dataSource);
    return committing(dataSource.connector as BridgeConnector);
  },
  model: async () => {
    const name = uniqueName('m');
    const topic = `evpub-conformance/${name}`;
    const publish = (body: unknown) => producer.publish(topic, JSON.stringify(body), { qos: 1 });
    return {
      name,
      settings: { topics: [topic], keyPath: 'id', opPath: 'op' },
      create: (key, value) => publish({ id: key, op: 'create', value }),
      update: (key, value) => publish({ id: key, op: 'update', value }),
      remove: (key) => publish({ id: key, op: 'delete' }),
    };
  },
  valueOf: (row) => (row ? (row.value as number) : undefined),
  features: { positions: false, before: false, coalesces: false, history: false, pauses: true },
});
