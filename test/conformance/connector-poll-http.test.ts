/**
 * The event connector conformance suite for the HTTP poll connector, against a JSON API served
 * by the test (node:http): an append-only change log per model, `GET /<model>?after=<seq>`
 * answering the changes after `seq`, oldest first, at most 100. Every change is an entry
 * (nothing coalesces); the `seq` cursor is the position, so feeds resume.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { EventConnector } from '../../src/connectors/contract';
import { initialize } from '../../src/connectors/poll/index';
import { createLogger } from '../../src/logger';
import { uniqueName } from '../helpers/services';
import { connectorConformance } from './connector.suite';

interface Entry {
  seq: number;
  id: string;
  op: 'create' | 'update' | 'delete';
  value?: number;
}

const logs = new Map<string, Entry[]>();
let seq = 0;
let server: Server;
let url: string;

function serve(): Promise<void> {
  server = createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const log = logs.get(u.pathname.slice(1));
    if (req.method !== 'GET' || !log) {
      res.writeHead(404).end();
      return;
    }
    const after = Number(u.searchParams.get('after') ?? '-1');
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(log.filter((e) => e.seq > after).slice(0, 100)));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
}

connectorConformance({
  name: 'poll (HTTP)',
  setup: async () => {
    await serve();
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  },
  teardown: async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  },
  connector: async (): Promise<EventConnector> => {
    const dataSource = {
      name: 'api',
      settings: { url, interval: 20 },
      logger: createLogger({ level: 'silent' }),
      connector: undefined as unknown,
    };
    await initialize(dataSource);
    return dataSource.connector as EventConnector;
  },
  model: async () => {
    const name = uniqueName('m');
    const log: Entry[] = [];
    logs.set(name, log);
    const append = async (entry: Omit<Entry, 'seq'>): Promise<void> => {
      log.push({ seq: ++seq, ...entry });
    };
    return {
      name,
      settings: { itemsPath: '', cursorField: 'seq', cursorParam: 'after', opPath: 'op' },
      create: (key, value) => append({ id: key, op: 'create', value }),
      update: (key, value) => append({ id: key, op: 'update', value }),
      remove: (key) => append({ id: key, op: 'delete' }),
    };
  },
  valueOf: (row) => (row ? (row.value as number) : undefined),
  features: { positions: true, before: false, coalesces: false },
});
