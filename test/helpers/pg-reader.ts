/**
 * A child process for the PostgreSQL takeover test: one postgres connector streaming a table
 * from a slot, printing `ready` once it streams and `event <key>` for each change, until killed.
 *
 *   node --import tsx test/helpers/pg-reader.ts <url> <slot> <publication> <table>
 */
import { initialize, type PostgresConnector } from '../../src/connectors/postgres/index';
import type { ChangeSink } from '../../src/connectors/contract';
import { createLogger } from '../../src/logger';

async function main(): Promise<void> {
  const [url, slot, publication, table] = process.argv.slice(2);
  if (!url || !slot || !publication || !table)
    throw new Error('usage: pg-reader <url> <slot> <publication> <table>');
  const dataSource = {
    name: 'pg',
    settings: { url, slot, publication, reconnectDelay: 50, maxReconnectDelay: 500 },
    logger: createLogger({ level: process.env.EVPUB_TEST_LOG_LEVEL ?? 'silent' }),
    connector: undefined as unknown,
  };
  await initialize(dataSource);
  const connector = dataSource.connector as PostgresConnector;
  const sink: ChangeSink = {
    push: (event) => {
      process.stdout.write(`event ${event.key} ${event.position}\n`);
      return true;
    },
    deadLetter: () => true,
    drain: () => Promise.resolve(),
    mark: () => undefined,
    fail: (model, err) => void process.stdout.write(`failed ${model}: ${err.message}\n`),
    status: () => undefined,
  };
  await connector.start({ models: [{ name: table, settings: {}, from: 'now' }], sink });
  process.stdout.write('ready\n');
  setInterval(() => undefined, 1000); // keep running until killed
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(2);
});
