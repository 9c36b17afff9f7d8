/**
 * A child process for the bridge crash test: an evpub app bridging a Redis stream (durable
 * consumer group) to a NATS broker. It prints "ready" once started, then "pushed <position>"
 * each time its connector hands on another message, and runs until killed.
 *
 *   node --import tsx test/helpers/bridge-app.ts <redis url> <stream> <durable> <nats url> <topic root> [claimIdleMs]
 *
 * `claimIdleMs` (the Redis adapter's option; default its own) is how long an entry another
 * consumer of the group read and never acked waits before this one takes it over.
 */
import { evpub } from '../../src/app/app';
import { createLogger } from '../../src/logger';

async function main(): Promise<void> {
  const [redis, stream, durable, nats, root, claimIdleMs] = process.argv.slice(2) as [
    string,
    string,
    string,
    string,
    string,
    string | undefined,
  ];
  const app = evpub({
    logger: createLogger({ level: 'silent' }),
    brokers: { default: nats },
    checkpoints: { store: 'memory' },
  });
  app.dataSource('src', {
    connector: 'bridge',
    url: redis,
    options: { redis: { mode: 'streams', ...(claimIdleMs ? { claimIdleMs: Number(claimIdleMs) } : {}) } },
  });
  app.model('orders', {
    dataSource: 'src',
    topic: `${root}/{model}/{key}`,
    settings: { topics: stream, durable, groupStart: 'earliest', keyPath: 'id' },
  });
  await app.start();
  process.stdout.write('ready\n');
  let last: string | null | undefined;
  setInterval(() => {
    const position = app.status().datasources.src?.health.positions?.orders;
    if (position !== last) {
      last = position;
      process.stdout.write(`pushed ${String(position)}\n`);
    }
  }, 10);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(2);
});
