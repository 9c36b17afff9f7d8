/**
 * The publish path alone, in one process and with no receiver: the raw library beside evpub's
 * Client, alternating, so the figures are stable enough to compare one change with the next and
 * to profile (`node --cpu-prof --import tsx bench/publish-inprocess.ts redis`).
 *
 *   npx tsx bench/publish-inprocess.ts [redis] [nats] [nats-flush]
 *   BENCH_N=200000 BENCH_ROUNDS=3 npx tsx bench/publish-inprocess.ts redis
 *
 * Every publish is awaited (1,000 unconfirmed at most), as in bench/pubsub.ts. `nats` measures
 * the raw library the way bench/pubsub.ts does (a flush round trip per 1,000 messages);
 * `nats-flush` measures it the way evpub confirms (a flush per tick, each publish awaiting it).
 */
import { createClient } from '../src/pubsub/index';
import { toDotted } from '../src/pubsub/topics';
import { windowed } from './windowed';

const N = Number(process.env.BENCH_N ?? 200_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const WINDOW = 1000;
const payload = Buffer.alloc(300, 'x');

type Run = (topic: string) => Promise<void>;

interface Target {
  url: string;
  raw(): Promise<{ run: Run; end(): Promise<void> }>;
}

const targets: Record<string, Target> = {
  redis: {
    url: 'redis://127.0.0.1:6379',
    raw: async () => {
      const { Redis } = await import('ioredis');
      const r = new Redis('redis://127.0.0.1:6379');
      return {
        run: (topic) => windowed(N, WINDOW, () => r.publish(topic, payload)),
        end: async () => void (await r.quit()),
      };
    },
  },
  nats: {
    url: 'nats://127.0.0.1:4222',
    raw: async () => {
      const { connect } = await import('@nats-io/transport-node');
      const nc = await connect({ servers: '127.0.0.1:4222' });
      return {
        run: (topic) => {
          const subject = toDotted(topic);
          return windowed(N / WINDOW, 1, async () => {
            for (let i = 0; i < WINDOW; i++) nc.publish(subject, payload);
            await nc.flush();
          });
        },
        end: () => nc.close(),
      };
    },
  },
  'nats-flush': {
    url: 'nats://127.0.0.1:4222',
    raw: async () => {
      const { connect } = await import('@nats-io/transport-node');
      const nc = await connect({ servers: '127.0.0.1:4222' });
      return {
        run: (topic) => {
          const subject = toDotted(topic);
          // One flush per tick shared by that tick's publishes, each publish awaiting it.
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
    },
  },
};

/**
 * Messages per second of wall time, and this process's CPU time per message: on a shared
 * machine the CPU figure is the steadier one (other processes stretch wall time, not CPU time).
 */
async function timed(run: () => Promise<void>): Promise<[perSec: number, cpuMicros: number]> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await run();
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return [N / (wall / 1000), (cpu.user + cpu.system) / N];
}

async function main(): Promise<void> {
  const names = process.argv.slice(2);
  for (const name of names.length > 0 ? names : ['redis', 'nats']) {
    const target = targets[name];
    if (!target) throw new Error(`unknown target ${name}; known: ${Object.keys(targets).join(', ')}`);
    const only = process.env.BENCH_ONLY; // 'raw' or 'evpub', for profiling one side
    for (let round = 1; round <= ROUNDS; round++) {
      const topic = `bench/inprocess/${name}/${Date.now()}`;
      let raw = 0;
      let ev = 0;
      let rawCpu = 0;
      let evCpu = 0;
      if (only !== 'evpub') {
        const r = await target.raw();
        [raw, rawCpu] = await timed(() => r.run(topic));
        await r.end();
      }
      if (only !== 'raw') {
        const client = createClient(target.url);
        await client.connect();
        [ev, evCpu] = await timed(() => windowed(N, WINDOW, () => client.publish(topic, payload)));
        await client.end();
      }
      const ratio = raw && ev ? (ev / raw).toFixed(2) : '-';
      console.log(
        `${name} round ${round}: raw ${Math.round(raw)}/s ${rawCpu.toFixed(2)} µs CPU/msg, ` +
          `evpub ${Math.round(ev)}/s ${evCpu.toFixed(2)} µs CPU/msg, ratio ${ratio}`,
      );
    }
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
