/**
 * The event connector conformance suite for the websocket connector, in resume mode (cursor
 * `seq`, resumed with `?since=`), against a WebSocket server started by the test. Each model is
 * a channel of that server; create/update/remove send events on it.
 */
import type { EventConnector } from '../../src/connectors/contract';
import { initialize, type WebSocketConnector } from '../../src/connectors/websocket';
import { createLogger } from '../../src/logger';
import { uniqueName } from '../helpers/services';
import { startWsEventServer, type WsEventServer } from '../helpers/ws-event-server';
import { connectorConformance } from './connector.suite';

let server: WsEventServer;

connectorConformance({
  name: 'websocket (cursor resume)',
  setup: async () => {
    server = await startWsEventServer();
  },
  teardown: async () => {
    await server?.close();
  },
  connector: async (): Promise<EventConnector> => {
    const dataSource = {
      name: 'ws',
      settings: {
        url: server.url,
        resume: { param: 'since', beginning: '0' },
        subscribe: { type: 'subscribe', channel: '{model}' },
        match: { path: 'channel', value: '{model}' },
        keyPath: 'id',
        opPath: 'op',
        opMap: { created: 'create', updated: 'update', deleted: 'delete' },
        cursorPath: 'seq',
        reconnectDelay: 50,
      },
      logger: createLogger({ level: 'silent' }),
      connector: undefined as unknown,
    };
    await initialize(dataSource);
    return dataSource.connector as WebSocketConnector;
  },
  model: async () => {
    const channel = uniqueName('ch');
    return {
      name: channel,
      settings: {},
      create: async (key, value) => void server.send({ channel, op: 'created', id: key, value }),
      update: async (key, value) => void server.send({ channel, op: 'updated', id: key, value }),
      remove: async (key) => void server.send({ channel, op: 'deleted', id: key }),
    };
  },
  valueOf: (row) => (row ? (row.value as number) : undefined),
  features: { positions: true, before: false, coalesces: false },
});
