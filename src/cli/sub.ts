/**
 * `evpub sub <url> <pattern...>`: mosquitto_sub for every broker.
 *
 * Prints each message's payload on its own line (`-v` prefixes the topic; `--json` prints one
 * JSON object per message with topic, payload, headers and key). `--count N` exits after N
 * messages. A line "subscribed" goes to stderr once the subscription is live.
 */
import type { Command } from 'commander';
import { createClient } from '../pubsub/registry';
import type { SubscribeOptions } from '../pubsub/adapter';
import { collect, parseClientOptions, parsePositiveInt, parseQos } from './options';

interface SubFlags {
  json?: boolean;
  verbose?: boolean;
  count?: string;
  qos?: string;
  durable?: string;
  option: string[];
}

/** UTF-8 text stays text; anything else is shown as base64 in --json output. */
function payloadForJson(payload: Buffer): { payload: string; encoding?: 'base64' } {
  const text = payload.toString('utf8');
  return Buffer.from(text, 'utf8').equals(payload)
    ? { payload: text }
    : { payload: payload.toString('base64'), encoding: 'base64' };
}

export function registerSub(program: Command): void {
  program
    .command('sub')
    .description('subscribe to topic patterns ("+" one level, "#" the rest) on any broker and print messages')
    .argument('<url>', 'broker URL')
    .argument('<pattern...>', 'one or more topic patterns')
    .option('--json', 'one JSON object per message: {topic, payload, headers, key}')
    .option('-v, --verbose', 'print the topic before each payload')
    .option('-C, --count <n>', 'exit after n messages')
    .option('-q, --qos <0|1|2>', 'MQTT quality of service (default 1)')
    .option('-d, --durable <name>', 'durable subscription name (consumer group, durable queue/consumer)')
    .option('-o, --option <k=v>', 'client option, e.g. redis.mode=streams (repeatable)', collect, [])
    .action(async (url: string, patterns: string[], flags: SubFlags) => {
      const limit = flags.count === undefined ? Infinity : parsePositiveInt(flags.count, '--count');
      const options: SubscribeOptions = {};
      if (flags.qos !== undefined) options.qos = parseQos(flags.qos);
      if (flags.durable !== undefined) options.durable = flags.durable;
      const client = createClient(url, parseClientOptions(flags.option));
      let seen = 0;
      const done = new Promise<void>((resolve, reject) => {
        client.on('error', reject);
        client.on('message', (topic, payload, meta) => {
          if (seen >= limit) return;
          seen++;
          if (flags.json) {
            const line = { topic, ...payloadForJson(payload), headers: meta.headers, key: meta.key };
            process.stdout.write(JSON.stringify(line) + '\n');
          } else {
            process.stdout.write(
              flags.verbose ? `${topic} ${payload.toString()}\n` : `${payload.toString()}\n`,
            );
          }
          if (seen >= limit) resolve();
        });
        const stop = (): void => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      try {
        await client.subscribe(patterns, options);
        process.stderr.write(`subscribed to ${patterns.join(' ')}\n`);
        await done;
      } finally {
        await client.end();
      }
    });
}
