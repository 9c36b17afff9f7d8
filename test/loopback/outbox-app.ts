/**
 * A small LoopBack 4 application process for the outbox kill -9 case, run by tsx: the Account
 * REST application (outbox mode) and, in the same process, the evpub app whose postgres
 * connector publishes the outbox. Configured by the EVPUB_OUTBOX_APP environment variable (JSON,
 * `OutboxAppConfig`). Prints `READY` once both run; with `write`, pauses the feed first (so the
 * event cannot be published before the process dies: the window between commit and publish,
 * held open), creates the account and prints `COMMITTED <id>`; then waits to be killed.
 */
import type { RestApplication } from '@loopback/rest';
import { evpub } from '../../src/app/app';
import { createLogger } from '../../src/logger';
import { accountsApp } from './accounts-app';

export interface OutboxAppConfig {
  pgUrl: string;
  mqttUrl: string;
  table: string;
  outbox: string;
  slot: string;
  publication: string;
  topic: string;
  checkpoints: string;
  write?: { name: string; balance: number };
}

async function main(): Promise<void> {
  const config = JSON.parse(process.env.EVPUB_OUTBOX_APP ?? '{}') as OutboxAppConfig;
  const app = evpub({
    logger: createLogger({ level: process.env.EVPUB_TEST_LOG_LEVEL ?? 'silent' }),
    brokers: { default: config.mqttUrl },
    checkpoints: { store: 'file', path: config.checkpoints },
  });
  app.dataSource('pg', {
    connector: 'postgres',
    url: config.pgUrl,
    slot: config.slot,
    publication: config.publication,
    heartbeatInterval: 200,
    outbox: { table: config.outbox },
  });
  app.model('accounts', {
    dataSource: 'pg',
    topic: config.topic,
    from: 'beginning',
    settings: { outbox: true },
  });
  await app.start();
  const lb: RestApplication = accountsApp({
    table: config.table,
    url: config.pgUrl,
    publishing: { mode: 'outbox', model: 'accounts' },
    evpubApp: app,
  });
  await lb.start();
  process.stdout.write('READY\n');
  if (config.write) {
    app.pause('pg/accounts');
    const repo = await lb.get<{ create(e: object): Promise<{ id: number }> }>(
      'repositories.AccountRepository',
    );
    const created = await repo.create(config.write);
    process.stdout.write(`COMMITTED ${created.id}\n`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${String((err as Error)?.stack ?? err)}\n`);
  process.exit(1);
});
