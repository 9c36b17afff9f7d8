/**
 * A child process for the Redis Streams crash test: a durable subscriber with a random consumer
 * name (no clientId) and manual acks that never acks. It prints "subscribed" once subscribe
 * resolved, then "got <payload>" per message, and runs until it is killed.
 *
 *   node --import tsx test/helpers/redis-stream-consumer.ts <redis url> <stream> <group>
 */
import { createClient } from '../../src/pubsub/index';
import { createLogger } from '../../src/logger';

async function main(): Promise<void> {
  const [url, stream, group] = process.argv.slice(2);
  if (!url || !stream || !group) throw new Error('usage: redis-stream-consumer <url> <stream> <group>');
  const client = createClient(url, { redis: { mode: 'streams' }, logger: createLogger({ level: 'silent' }) });
  client.on('message', (_topic, payload) => process.stdout.write(`got ${payload.toString()}\n`));
  await client.subscribe(stream, { durable: group, ack: 'manual' });
  process.stdout.write('subscribed\n');
  setInterval(() => undefined, 1000); // keep running until killed
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(2);
});
