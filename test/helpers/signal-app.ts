/**
 * A child process for the signal test: an app with `handleSignals: true` that writes 200
 * records, prints "ready" once its connector has read them all, and waits for SIGTERM/SIGINT.
 *
 *   node --import tsx test/helpers/signal-app.ts <checkpoint dir>
 */
import { evpub } from '../../src/app/app';
import { createLogger } from '../../src/logger';

async function main(): Promise<void> {
  const app = evpub({
    logger: createLogger({ level: 'silent' }),
    brokers: { default: 'memory://signals' },
    checkpoints: { store: 'file', path: process.argv[2] ?? '.evpub/checkpoints' },
    handleSignals: true,
  });
  const ds = app.dataSource('local', { connector: 'memory' });
  app.model('accounts', { dataSource: ds, from: 'beginning' });
  await app.start();
  for (let i = 1; i <= 200; i++) ds.connector!.create('accounts', `k${i}`, { i });
  // Ready once all 200 were read (pushed); their publishes and the checkpoint may still be in flight.
  while (ds.connector!.health().positions?.accounts !== '200') await new Promise((r) => setImmediate(r));
  process.stdout.write('ready\n');
  setInterval(() => undefined, 1000); // keep running until a signal
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(2);
});
