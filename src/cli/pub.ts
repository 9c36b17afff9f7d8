/**
 * `evpub pub <url> <topic> [message|-]`: mosquitto_pub for every broker.
 *
 *   evpub pub mqtt://localhost /v1/subutest '{"hello":1}'
 *   echo '{"a":1}' | evpub pub redis://localhost orders/created -
 *   cat events.ndjson | evpub pub nats://localhost orders --lines -o nats.jetstream=true
 *
 * Exits 0 once the broker confirmed every message, 1 with the error otherwise.
 */
import type { Command } from 'commander';
import { createClient } from '../pubsub/registry';
import type { PublishOptions } from '../pubsub/adapter';
import { collect, parseClientOptions, parsePairs, parseQos, readStdin } from './options';

interface PubFlags {
  header: string[];
  key?: string;
  qos?: string;
  retain?: boolean;
  contentType?: string;
  lines?: boolean;
  option: string[];
}

export function registerPub(program: Command): void {
  program
    .command('pub')
    .description('publish a message (or stdin with "-") to a topic on any broker')
    .argument('<url>', 'broker URL: mqtt://, redis://, amqp://, nats://, kafka://, memory://')
    .argument('<topic>', 'topic, levels separated by "/"')
    .argument('[message]', 'the message; "-" or absent reads stdin')
    .option('-H, --header <k=v>', 'a header (repeatable)', collect, [])
    .option('-k, --key <key>', 'ordering / partition key')
    .option('-q, --qos <0|1|2>', 'MQTT quality of service (default 1)')
    .option('-r, --retain', 'MQTT retained message')
    .option('-c, --content-type <type>', 'content type of the payload')
    .option('-l, --lines', 'publish each line of the input as its own message')
    .option('-o, --option <k=v>', 'client option, e.g. nats.jetstream=true (repeatable)', collect, [])
    .action(async (url: string, topic: string, message: string | undefined, flags: PubFlags) => {
      const options: PublishOptions = {};
      if (flags.header.length > 0) options.headers = parsePairs(flags.header, '--header');
      if (flags.key !== undefined) options.key = flags.key;
      if (flags.qos !== undefined) options.qos = parseQos(flags.qos);
      if (flags.retain) options.retain = true;
      if (flags.contentType !== undefined) options.contentType = flags.contentType;
      const client = createClient(url, parseClientOptions(flags.option));
      try {
        const input = message === undefined || message === '-' ? await readStdin() : Buffer.from(message);
        const payloads = flags.lines
          ? input
              .toString('utf8')
              .split('\n')
              .filter((line) => line.length > 0)
          : [input];
        await Promise.all(payloads.map((p) => client.publish(topic, p, options)));
      } finally {
        await client.end();
      }
    });
}
