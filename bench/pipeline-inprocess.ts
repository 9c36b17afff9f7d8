/**
 * The publish path behind a connector, in one process: PostgreSQL-shaped rows (pgoutput text
 * tuples decoded with the connector's `decodeValue`) → ChangeEvent → Pipeline (CloudEvents
 * structured, checkpoint tracker with an in-memory store) → Client.publish on the memory broker
 * or NATS, with the window the connector keeps (push false → await drain). Prints this process's
 * CPU µs per event, per round: compare two commits by running each, interleaved.
 *
 *   npx tsx bench/pipeline-inprocess.ts [memory|nats|jetstream|redis|mqtt|amqp]
 *   BENCH_N=100000 BENCH_ROUNDS=5 npx tsx bench/pipeline-inprocess.ts nats
 *   node --cpu-prof --import tsx bench/pipeline-inprocess.ts memory
 */
import { MemoryCheckpointStore } from '../src/checkpoints/memory';
import { decodeValue } from '../src/connectors/postgres/types';
import type { ChangeEvent, Row } from '../src/events/change-event';
import { structuredEnvelope } from '../src/events/envelopes';
import { createLogger } from '../src/logger';
import { CheckpointTracker } from '../src/pipeline/checkpoint-tracker';
import { Pipeline } from '../src/pipeline/pipeline';
import { compileTopic } from '../src/pipeline/topics';
import { createClient } from '../src/pubsub/registry';

const N = Number(process.env.BENCH_N ?? 100_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const BROKERS: Record<string, string> = {
  nats: 'nats://127.0.0.1:4222',
  jetstream: 'nats://127.0.0.1:4222',
  redis: 'redis://127.0.0.1:6379',
  mqtt: 'mqtt://127.0.0.1:1883',
  amqp: 'amqp://guest:guest@127.0.0.1:5672',
};
const brokerName = process.argv[2] ?? 'memory';
const broker = BROKERS[brokerName] ?? `memory://bench-${process.pid}`;

// The benchmark table's columns (bench/cdc): id serial, name text, amount numeric, payload jsonb,
// updated_at timestamptz, flag bool, qty int4.
const columns = [
  { name: 'id', typeOid: 23 },
  { name: 'name', typeOid: 25 },
  { name: 'amount', typeOid: 1700 },
  { name: 'payload', typeOid: 3802 },
  { name: 'updated_at', typeOid: 1184 },
  { name: 'flag', typeOid: 16 },
  { name: 'qty', typeOid: 23 },
];
const noArrays = () => 0;

function tuple(i: number): Record<string, string | null> {
  return {
    id: String(i),
    name: `customer ${i}`,
    amount: '1234.50',
    payload: `{"note": "row ${i}", "tags": ["a", "b"], "n": ${i}}`,
    updated_at: '2026-12-06 16:00:00.123456+00',
    flag: 't',
    qty: '7',
  };
}

async function round(model: string): Promise<number> {
  const logger = createLogger({ level: 'warn' });
  const client = createClient(
    broker,
    brokerName === 'jetstream'
      ? { logger, nats: { jetstream: true, stream: `BENCH_INPROC_${process.pid}` } }
      : { logger },
  );
  await client.connect();
  let committed = '';
  const tracker = new CheckpointTracker({
    feedId: `bench/${model}`,
    model,
    store: new MemoryCheckpointStore(),
    commit: async (_m, p) => void (committed = p),
  });
  const pipeline = new Pipeline({
    datasource: 'bench',
    feeds: [
      {
        feedId: `bench/${model}`,
        model,
        client,
        envelope: structuredEnvelope,
        topic: compileTopic('{datasource}/{model}/{op}'),
        maxEventBytes: 1_000_000,
        tracker,
      },
    ],
    maxInFlight: 1000,
    deadLetterTopic: 'bench/dead-letter',
    logger,
    emit: () => undefined,
  });
  const tx = { id: '1234', commitPosition: '0/16B3748', commitTime: '2026-12-06T16:00:00.123456Z' };
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < N; i++) {
    const t = tuple(i);
    const row: Row = {};
    for (const c of columns) row[c.name] = decodeValue(c.typeOid, t[c.name]!, noArrays);
    const event: ChangeEvent = {
      id: `0/16B3748:${i}`,
      datasource: 'bench',
      model,
      op: 'create',
      key: String(row.id),
      before: null,
      after: row,
      position: null,
      sourceTime: tx.commitTime,
      tx,
      source: { schema: 'public', table: model, lsn: tx.commitPosition, index: i },
    };
    event.position = `${tx.commitPosition}#${i}`;
    if (!pipeline.push(event)) await pipeline.drain();
  }
  // Every event confirmed and its position committed (saves are coalesced, at most every 200 ms).
  const last = `${tx.commitPosition}#${N - 1}`;
  while (committed !== last) await new Promise((resolve) => setTimeout(resolve, 5));
  const cpu = process.cpuUsage(cpu0);
  pipeline.close();
  tracker.close();
  await client.end();
  return (cpu.user + cpu.system) / N;
}

async function main(): Promise<void> {
  for (let r = 1; r <= ROUNDS; r++) {
    const us = await round(`orders${r}`);
    console.log(`${brokerName} round ${r}: ${us.toFixed(2)} µs CPU/event`);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
