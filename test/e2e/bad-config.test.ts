/**
 * `evpub start` with a bad configuration exits 1 with the path and the problem named, before
 * connecting to anything: every URL that is well formed points at a TCP server of the test's
 * that counts connections, and it must count none.
 *
 * (The validation rules themselves are unit-tested in test/unit/config.test.ts; this is the
 * process seen from outside.)
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnCli } from './cli';

let server: Server;
let port: number;
let connections = 0;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'evpub-badconf-'));
  server = createServer((socket) => {
    connections++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as { port: number }).port;
});
afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
});

function config(overrides: {
  broker?: Record<string, unknown>;
  datasource?: Record<string, unknown>;
}): Record<string, unknown> {
  return {
    brokers: { default: { url: `mqtt://u:hunter2@127.0.0.1:${port}`, ...overrides.broker } },
    checkpoints: { store: 'memory' },
    datasources: { db: { connector: 'couchdb', url: `http://127.0.0.1:${port}/`, ...overrides.datasource } },
    models: { accounts: { dataSource: 'db' } },
  };
}

/** Built when the test runs: the counting server's port is known by then. */
const CASES: { name: string; config: () => Record<string, unknown>; message: string }[] = [
  {
    name: 'an unknown connector',
    config: () => config({ datasource: { connector: 'cloudantevents' } }),
    message: 'datasources.db.connector: unknown connector "cloudantevents"',
  },
  {
    name: 'an unknown broker scheme',
    config: () => config({ broker: { url: `zmq://127.0.0.1:${port}` } }),
    message: 'brokers.default.url:',
  },
  {
    name: 'a missing broker URL',
    config: () => config({ broker: { url: undefined } }),
    message: 'brokers.default.url',
  },
  {
    name: 'a missing datasource URL',
    config: () => config({ datasource: { url: undefined } }),
    message: 'datasources.db.url',
  },
];

describe('evpub start with a bad configuration', () => {
  it.each(CASES)(
    '$name: exits 1 naming the path, and opens no connection',
    async ({ name, config, message }) => {
      const file = path.join(dir, `${name.replace(/\W+/g, '-')}.json`);
      writeFileSync(file, JSON.stringify(config()));
      const run = spawnCli(['start', '--config', file], { cwd: dir, env: { EVPUB_LOG_LEVEL: 'info' } });
      expect(await run.exited).toBe(1);
      expect(run.stderr()).toContain(message);
      expect(run.stderr()).not.toMatch(/\n\s+at /); // a message, not a stack
      expect(run.stderr()).not.toContain('hunter2');
      expect(run.stdout()).not.toContain('evpub started');
      expect(connections).toBe(0);
    },
  );
});
