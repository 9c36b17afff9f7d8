/**
 * Benchmark receiver: a separate process that subscribes with evpub's client and reports when
 * the expected number of messages arrived. Used the same way for every publisher measured, so
 * the receiving side is equal for the raw library and for evpub.
 *
 *   tsx bench/receiver.ts <url> <topic> <count> <client-options-json>
 *
 * Prints `ready` once subscribed, then one JSON line { count, firstAt, lastAt } (epoch ms with
 * sub-millisecond precision) when `count` messages arrived, or after 120 s of silence.
 */
import { createClient } from '../src/pubsub/index';

const [url, topic, countArg, optionsJson] = process.argv.slice(2);
const expected = Number(countArg);
const now = (): number => performance.timeOrigin + performance.now();

async function main(): Promise<void> {
  const client = createClient(url!, JSON.parse(optionsJson ?? '{}') as Record<string, unknown>);
  let count = 0;
  let firstAt = 0;
  let lastAt = 0;
  let idle: NodeJS.Timeout | undefined;
  const finish = (): void => {
    process.stdout.write(JSON.stringify({ count, firstAt, lastAt }) + '\n');
    void client.end().then(() => process.exit(0));
  };
  const arm = (): void => {
    clearTimeout(idle);
    idle = setTimeout(finish, 120_000);
  };
  client.on('message', () => {
    const t = now();
    if (count === 0) firstAt = t;
    lastAt = t;
    count++;
    if (count === expected) finish();
    else if ((count & 1023) === 0) arm();
  });
  await client.subscribe(topic!);
  arm();
  process.stdout.write('ready\n');
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
