/**
 * The CDC benchmark's subscriber: a separate process that records when each event arrives.
 * The same process and client (evpub's own, plain subscription) receive from every system
 * measured, so the receiving side is equal for evpub, the minimal relay and the broker ceiling.
 *
 *   tsx bench/cdc/subscriber.ts <url> <topic> <client-options-json>
 *
 * Protocol (lines): prints `ready` once subscribed. Then reads commands on stdin:
 * - `expect <n>`: starts a phase (prints `ok`); when n messages have arrived in it, prints one
 *   JSON line, a PhaseResult.
 * - `report`: prints the current phase's PhaseResult now (a phase that never completes).
 * - `peek`: prints `{"peek": <count so far>}` without ending the phase.
 * - `end`: unsubscribes and exits.
 * Latency of a message = its arrival (epoch ms, sub-millisecond) − the row's `updated_at`,
 * read from `after` (or `before`) of evpub's CloudEvents `data` or of the relay's message.
 * Messages without a parsable `updated_at` (the ceiling's pre-built ones, deletes without the
 * old row) are counted, not timed.
 */
import { createInterface } from 'node:readline';
import { createClient } from '../../src/pubsub/index';
import { parseTimestamp, percentiles, type PhaseResult } from './stats';

const [url, topic, optionsJson] = process.argv.slice(2);
const now = (): number => performance.timeOrigin + performance.now();

interface Row {
  updated_at?: unknown;
}
interface Change {
  op?: string;
  before?: Row | null;
  after?: Row | null;
}

async function main(): Promise<void> {
  const client = createClient(url!, JSON.parse(optionsJson ?? '{}') as Record<string, unknown>);
  let expected = Infinity;
  let count = 0;
  let bytes = 0;
  let firstAt = 0;
  let lastAt = 0;
  let ops: Record<string, number> = {};
  let latencies = new Float64Array(1024);
  let timed = 0;
  let done = false;

  const result = (): PhaseResult => ({
    count,
    bytes,
    firstAt,
    lastAt,
    ops,
    latency: percentiles(latencies.subarray(0, timed)),
  });
  const finish = (): void => {
    done = true;
    process.stdout.write(JSON.stringify(result()) + '\n');
  };

  client.on('message', (_topic, payload) => {
    const t = now();
    if (count === 0) firstAt = t;
    lastAt = t;
    count++;
    bytes += payload.length;
    let change: Change | undefined;
    try {
      const msg = JSON.parse(payload.toString('utf8')) as Change & { data?: Change };
      change = msg.data ?? msg;
    } catch {
      // a ceiling message or a binary envelope: counted, not timed
    }
    if (change?.op) {
      ops[change.op] = (ops[change.op] ?? 0) + 1;
      const at = parseTimestamp((change.after ?? change.before)?.updated_at);
      if (at !== undefined && change.op !== 'delete') {
        if (timed === latencies.length) {
          const bigger = new Float64Array(latencies.length * 2);
          bigger.set(latencies);
          latencies = bigger;
        }
        latencies[timed++] = t - at;
      }
    }
    if (!done && count >= expected) finish();
  });
  client.on('error', (err) => process.stderr.write(`subscriber: ${err.message}\n`));

  await client.subscribe(topic!);
  createInterface({ input: process.stdin }).on('line', (line) => {
    const [command, arg] = line.trim().split(/\s+/);
    if (command === 'expect') {
      expected = Number(arg);
      count = 0;
      bytes = 0;
      firstAt = 0;
      lastAt = 0;
      ops = {};
      timed = 0;
      done = false;
      process.stdout.write('ok\n');
    } else if (command === 'report') finish();
    else if (command === 'peek') process.stdout.write(JSON.stringify({ peek: count }) + '\n');
    else if (command === 'end') void client.end().then(() => process.exit(0));
  });
  process.stdout.write('ready\n');
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
