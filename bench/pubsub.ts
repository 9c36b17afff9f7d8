/**
 * The pub/sub client benchmark: evpub's Client beside the raw client library, same broker,
 * same run.
 *
 *   npm run bench                       # every broker
 *   npm run bench -- mqtt redis         # some of them
 *   BENCH_N=20000 npm run bench         # fewer messages
 *
 * For each broker, 100,000 messages of 300 bytes are published with at most 1,000 unconfirmed
 * at a time by the raw library and by evpub, in BENCH_ROUNDS rounds (3 by default) whose order
 * alternates (raw first, then evpub first, ...) so that neither side always runs on a warmer or
 * cooler machine; the best figure of each side is kept. A receiver in another process
 * (bench/receiver.ts, the same for both) counts the messages.
 *   publish/s   = messages / time until the last publish was confirmed by the broker
 *   end-to-end/s = messages / time from the first publish to the last message received
 *   CPU µs/msg  = this (publishing) process's CPU time per message while publishing: on a busy
 *                 or shared machine the steadier figure, since other processes stretch wall
 *                 time, not the CPU time the publishing code itself takes
 * Prints a table with footnotes on what each raw baseline does, and writes
 * bench/results/pubsub-<date>.json. bench/publish-inprocess.ts measures the publish path alone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { createClient } from '../src/pubsub/index';
import { toDotted, toKafka } from '../src/pubsub/topics';
import { startMosquitto } from '../test/helpers/mosquitto';
import { startKafkaMock } from '../test/helpers/kafka-mock';
import { windowed } from './windowed';

const N = Number(process.env.BENCH_N ?? 100_000);
const SIZE = 300;
const WINDOW = 1000;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const payload = Buffer.alloc(SIZE, 'x');
const now = (): number => performance.timeOrigin + performance.now();

interface Raw {
  publish(topic: string): Promise<void>;
  end(): Promise<void>;
}

interface Target {
  name: string;
  url: string;
  options: Record<string, unknown>;
  /** The raw library doing what a correct publisher must: publish and await confirmation. */
  raw(url: string): Promise<Raw>;
  /** What the raw baseline does differently from evpub, printed under the table. */
  note?: string;
  cleanup?(): Promise<void>;
}

async function rawMqtt(url: string): Promise<Raw> {
  const mqtt = await import('mqtt');
  const c = await mqtt.connectAsync(url, { protocolVersion: 5 });
  return {
    publish: (topic) => windowed(N, WINDOW, () => c.publishAsync(topic, payload, { qos: 1 })),
    end: () => c.endAsync(),
  };
}

async function rawRedis(url: string): Promise<Raw> {
  const { Redis } = await import('ioredis');
  const r = new Redis(url);
  return {
    publish: (topic) => windowed(N, WINDOW, () => r.publish(topic, payload)),
    end: async () => void (await r.quit()),
  };
}

async function rawAmqp(url: string): Promise<Raw> {
  const amqp = await import('amqplib');
  const conn = await amqp.connect(url);
  const ch = await conn.createConfirmChannel();
  await ch.assertExchange('evpub', 'topic', { durable: true });
  return {
    publish: (topic) => {
      const key = toDotted(topic);
      return windowed(
        N,
        WINDOW,
        () =>
          new Promise<void>((resolve, reject) => {
            ch.publish('evpub', key, payload, { deliveryMode: 2 }, (err: unknown) =>
              err ? reject(err instanceof Error ? err : new Error('nack')) : resolve(),
            );
          }),
      );
    },
    end: async () => {
      await ch.close();
      await conn.close();
    },
  };
}

async function rawNats(url: string, mode: 'core' | 'core-tick' | 'jetstream'): Promise<Raw> {
  const { connect } = await import('@nats-io/transport-node');
  const nc = await connect({ servers: new URL(url).host });
  if (mode === 'core-tick') {
    return {
      publish: (topic) => {
        const subject = toDotted(topic);
        // What evpub does: every publish awaits a flush round trip shared by its tick.
        let tick: Promise<void> | undefined;
        return windowed(N, WINDOW, () => {
          nc.publish(subject, payload);
          if (!tick) {
            tick = nc.flush();
            queueMicrotask(() => (tick = undefined));
          }
          return tick;
        });
      },
      end: () => nc.close(),
    };
  }
  if (mode === 'core') {
    return {
      publish: async (topic) => {
        const subject = toDotted(topic);
        // Core NATS confirms nothing; a flush round trip per window is what "accepted" costs.
        await windowed(N / WINDOW, 1, async () => {
          for (let i = 0; i < WINDOW; i++) nc.publish(subject, payload);
          await nc.flush();
        });
      },
      end: () => nc.close(),
    };
  }
  const { jetstream: js, jetstreamManager } = await import('@nats-io/jetstream');
  const jsm = await jetstreamManager(nc);
  const client = js(nc);
  let stream = '';
  return {
    publish: async (topic) => {
      const subject = toDotted(topic);
      stream = `BENCH_RAW_${Date.now()}`;
      await jsm.streams.add({ name: stream, subjects: [subject] });
      await windowed(N, WINDOW, () => client.publish(subject, payload));
    },
    end: async () => {
      if (stream) await jsm.streams.delete(stream);
      await nc.close();
    },
  };
}

/** Removes a stream the benchmark made, so runs leave nothing on the shared server. */
async function deleteStream(url: string, name: string): Promise<void> {
  const { connect } = await import('@nats-io/transport-node');
  const { jetstreamManager } = await import('@nats-io/jetstream');
  const nc = await connect({ servers: new URL(url).host });
  try {
    await (await jetstreamManager(nc)).streams.delete(name);
  } catch {
    // not there: nothing to remove
  }
  await nc.close();
}

async function rawKafka(url: string): Promise<Raw> {
  const { Kafka, logLevel } = await import('kafkajs');
  const kafka = new Kafka({ brokers: [new URL(url).host], logLevel: logLevel.NOTHING });
  const producer = kafka.producer();
  await producer.connect();
  const admin = kafka.admin();
  await admin.connect();
  return {
    publish: async (topic) => {
      const name = toKafka(topic);
      // librdkafka's mock cluster has no controller and creates topics on first use.
      await admin.createTopics({ topics: [{ topic: name, numPartitions: 1 }] }).catch(() => false);
      await windowed(N, WINDOW, () =>
        producer.send({ topic: name, acks: -1, messages: [{ value: payload }] }),
      );
    },
    end: async () => {
      await admin.disconnect();
      await producer.disconnect();
    },
  };
}

function spawnReceiver(
  target: Target,
  topic: string,
): { child: ChildProcess; ready: Promise<void>; result: Promise<{ count: number; lastAt: number }> } {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(__dirname, 'receiver.ts'),
      target.url,
      topic,
      String(N),
      JSON.stringify(target.options),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const lines = createInterface({ input: child.stdout });
  let onReady!: () => void;
  const ready = new Promise<void>((r) => (onReady = r));
  const result = new Promise<{ count: number; lastAt: number }>((resolve, reject) => {
    lines.on('line', (line) => {
      if (line === 'ready') onReady();
      else resolve(JSON.parse(line) as { count: number; lastAt: number });
    });
    child.once('exit', (code) => reject(new Error(`receiver exited with ${code}`)));
  });
  return { child, ready, result };
}

interface Measure {
  publishPerSec: number;
  e2ePerSec: number;
  cpuMicrosPerMsg: number;
  received: number;
}

async function measure(
  target: Target,
  publishAll: (topic: string) => Promise<void>,
  label: string,
): Promise<Measure> {
  const topic = `bench/${target.name.replace(/[^a-z0-9]/gi, '_')}/${label}_${Date.now()}`;
  const receiver = spawnReceiver(target, topic);
  await receiver.ready;
  const cpu0 = process.cpuUsage();
  const t0 = now();
  await publishAll(topic);
  const published = now();
  const cpu = process.cpuUsage(cpu0);
  const { count, lastAt } = await receiver.result;
  return {
    publishPerSec: Math.round(N / ((published - t0) / 1000)),
    e2ePerSec: count === N ? Math.round(N / ((lastAt - t0) / 1000)) : 0,
    cpuMicrosPerMsg: (cpu.user + cpu.system) / N,
    received: count,
  };
}

/** The best of each figure over the rounds (publish and end-to-end may come from different rounds). */
function best(a: Measure | undefined, b: Measure): Measure {
  if (!a) return b;
  return {
    publishPerSec: Math.max(a.publishPerSec, b.publishPerSec),
    e2ePerSec: Math.max(a.e2ePerSec, b.e2ePerSec),
    cpuMicrosPerMsg: Math.min(a.cpuMicrosPerMsg, b.cpuMicrosPerMsg),
    received: Math.min(a.received, b.received),
  };
}

async function benchTarget(target: Target): Promise<{ raw: Measure; evpub: Measure }> {
  let raw: Measure | undefined;
  let ev: Measure | undefined;
  const runRaw = async (): Promise<void> => {
    const r = await target.raw(target.url);
    raw = best(raw, await measure(target, (t) => r.publish(t), 'raw'));
    await r.end();
  };
  const runEvpub = async (): Promise<void> => {
    const client = createClient(target.url, target.options);
    await client.connect();
    ev = best(
      ev,
      await measure(target, (t) => windowed(N, WINDOW, () => client.publish(t, payload)), 'evpub'),
    );
    await client.end();
  };
  for (let round = 0; round < ROUNDS; round++) {
    if (round % 2 === 0) {
      await runRaw();
      await runEvpub();
    } else {
      await runEvpub();
      await runRaw();
    }
  }
  return { raw: raw!, evpub: ev! };
}

async function main(): Promise<void> {
  const only = process.argv.slice(2);
  const mosquitto = await startMosquitto();
  const kafka = await startKafkaMock();
  const all: Target[] = [
    { name: 'mqtt', url: mosquitto.url, options: {}, raw: rawMqtt },
    { name: 'redis', url: 'redis://127.0.0.1:6379', options: {}, raw: rawRedis },
    { name: 'amqp', url: 'amqp://guest:guest@127.0.0.1:5672', options: {}, raw: rawAmqp },
    {
      name: 'nats',
      url: 'nats://127.0.0.1:4222',
      options: {},
      raw: (u) => rawNats(u, 'core'),
      note: 'raw awaits one flush round trip per 1,000 publishes; evpub confirms every publish (one round trip per tick): see nats-tick',
    },
    {
      name: 'nats-tick',
      url: 'nats://127.0.0.1:4222',
      options: {},
      raw: (u) => rawNats(u, 'core-tick'),
      note: 'raw confirms every publish as evpub does: each awaits a flush round trip shared by its tick',
    },
    {
      name: 'nats-jetstream',
      url: 'nats://127.0.0.1:4222',
      options: { nats: { jetstream: true, stream: 'BENCH_EVPUB' } },
      raw: (u) => rawNats(u, 'jetstream'),
      cleanup: () => deleteStream('nats://127.0.0.1:4222', 'BENCH_EVPUB'),
    },
    {
      name: 'kafka',
      url: kafka.url,
      options: {},
      raw: rawKafka,
      note: 'raw sends one message per producer.send while evpub batches the messages of a tick into one send: a ratio above 1 is expected',
    },
  ];
  // `nats` also runs `nats-tick`, the baseline that confirms every publish as evpub does.
  const wanted = only.includes('nats') ? [...only, 'nats-tick'] : only;
  const targets = all.filter((t) => wanted.length === 0 || wanted.includes(t.name));

  const rows: Record<string, unknown>[] = [];
  try {
    for (const target of targets) {
      process.stderr.write(`bench ${target.name}...\n`);
      try {
        const { raw, evpub } = await benchTarget(target);
        rows.push({
          broker: target.name,
          'raw publish/s': raw.publishPerSec,
          'evpub publish/s': evpub.publishPerSec,
          'publish ratio': +(evpub.publishPerSec / raw.publishPerSec).toFixed(2),
          'raw end-to-end/s': raw.e2ePerSec,
          'evpub end-to-end/s': evpub.e2ePerSec,
          'end-to-end ratio': raw.e2ePerSec ? +(evpub.e2ePerSec / raw.e2ePerSec).toFixed(2) : 0,
          'raw CPU µs/msg': +raw.cpuMicrosPerMsg.toFixed(2),
          'evpub CPU µs/msg': +evpub.cpuMicrosPerMsg.toFixed(2),
        });
      } catch (err) {
        rows.push({ broker: target.name, error: (err as Error).message });
      } finally {
        await target.cleanup?.();
      }
    }
  } finally {
    await mosquitto.close();
    await kafka.close();
  }
  console.table(rows);
  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}`;
  console.log(
    `${N} messages of ${SIZE} bytes, window ${WINDOW}, best of ${ROUNDS}; ${machine}; ${new Date().toISOString()}`,
  );
  for (const t of targets) if (t.note) console.log(`  ${t.name}: ${t.note}`);
  const dir = join(__dirname, 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `pubsub-${new Date().toISOString().slice(0, 10)}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        machine,
        n: N,
        size: SIZE,
        window: WINDOW,
        rounds: ROUNDS,
        rows,
        notes: Object.fromEntries(targets.filter((t) => t.note).map((t) => [t.name, t.note])),
      },
      null,
      2,
    ) + '\n',
  );
  console.log(`results: ${file}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
