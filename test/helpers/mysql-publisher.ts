/**
 * A child process for the mysql kill -9 test: an evpub app publishing one MariaDB table's
 * changes to Redis Streams, with file checkpoints. Prints "ready" once started, then runs
 * until it is killed.
 *
 *   node --import tsx test/helpers/mysql-publisher.ts <redis url> <topic> <table> <checkpoint dir> [settings]
 *
 * `settings`: optional JSON of more datasource settings (e.g. `{"snapshot":"initial"}`).
 */
import { evpub } from '../../src/app/app';
import { createLogger } from '../../src/logger';

async function main(): Promise<void> {
  const [redis, topic, table, dir, more] = process.argv.slice(2);
  if (!redis || !topic || !table || !dir)
    throw new Error('usage: mysql-publisher <redis> <topic> <table> <dir>');
  const app = evpub({
    logger: createLogger({ level: process.env.EVPUB_LOG_LEVEL ?? 'silent' }),
    brokers: { default: { url: redis, options: { redis: { mode: 'streams' } } } },
    checkpoints: { store: 'file', path: dir },
    publisher: { maxInFlight: 100 },
  });
  const ds = app.dataSource('my', {
    connector: 'mysql',
    url: 'mysql://root@127.0.0.1:3306/test',
    reconnectDelay: 100,
    heartbeat: 1000,
    ...(more ? (JSON.parse(more) as Record<string, unknown>) : {}),
  });
  app.model('m', { dataSource: ds, topic, from: 'now', settings: { table } });
  await app.start();
  process.stdout.write('ready\n');
  setInterval(() => undefined, 1000); // keep running until killed
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(2);
});
