/**
 * Runs the example: `node dist/index.js` (see README.md). Reads the environment (src/config.ts),
 * creates the table, starts the REST API and evpub, prints both addresses, and on SIGTERM or
 * SIGINT stops (evpub drains its in-flight events and saves its checkpoints) and exits 0.
 */
import { EvpubBindings } from 'evpub/loopback';
import { AccountsApplication } from './application';
import { readConfig } from './config';
import { ACCOUNTS_DB, type AccountsDbDataSource } from './datasources/accounts-db.datasource';
import { migrate } from './migrate';

export async function main(): Promise<AccountsApplication> {
  const config = readConfig();
  const app = new AccountsApplication(config);
  const ds = await app.get<AccountsDbDataSource>(ACCOUNTS_DB);
  await migrate(ds, { table: config.table, outbox: config.outbox, model: config.model });
  await app.start();
  console.log(`REST API: ${app.restServer.url}/accounts (OpenAPI: ${app.restServer.url}/openapi.json)`);
  // The component serves it at app.start() (`listen: true`); listen() again gives its address.
  const management = await (await app.get(EvpubBindings.APP)).listen();
  console.log(
    `evpub management API: ${management.url} (dashboard: ${management.url}/, health: ${management.url}/health)`,
  );

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: stopping`);
    app.stop().then(
      () => {
        console.log('stopped');
        process.exit(0);
      },
      (err: unknown) => {
        console.error('stop failed', err);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  return app;
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error('cannot start the accounts example:', err);
    process.exit(1);
  });
}
