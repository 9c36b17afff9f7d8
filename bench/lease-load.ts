/**
 * What a cluster of instances costs its lease store (docs/deploy.md, "The load on the lease
 * store"): three apps in this process share six units (memory datasources) through leases in a
 * private redis-server; once each holds two, the server's command counters are reset and read
 * again after a while. Every lease operation of the Redis store is one script (`EVAL`), so the
 * `eval` count is the number of lease-store operations, and the commands inside tell which:
 * `zrangebyscore` one per member read, `pexpire` one per renew, `zadd` one per heartbeat. It
 * also prints what `/ready` answers for each instance.
 *
 *   npx tsx bench/lease-load.ts                 # TTL 15 s and 5 s, 20 s each
 *   LEASE_TTLS=3s,30s LEASE_SECONDS=60 npx tsx bench/lease-load.ts
 *
 * Needs redis-server on the PATH (a private one is started) and nothing else: checkpoints go to
 * a second private redis-server, events to a memory broker.
 */
import { Redis } from 'ioredis';
import { evpub, type App } from '../src/app/app';
import { readyView } from '../src/http/views';
import { createLogger } from '../src/logger';
import { startRedisServer } from '../test/helpers/redis-server';

const INSTANCES = ['a', 'b', 'c'];
const UNITS = 6;
const ttls = (process.env.LEASE_TTLS ?? '15s,5s').split(',');
const seconds = Number(process.env.LEASE_SECONDS ?? 20);

async function waitUntil(check: () => boolean, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function measure(ttl: string): Promise<void> {
  const leases = await startRedisServer();
  const checkpoints = await startRedisServer();
  const apps: App[] = [];
  try {
    for (const instance of INSTANCES) {
      const app = evpub({
        logger: createLogger({ level: 'silent' }),
        brokers: { default: `memory://lease-load-${ttl}` },
        checkpoints: { store: 'redis', url: checkpoints.url },
        cluster: { store: 'redis', url: leases.url, name: 'bench', leaseTtl: ttl, instance },
      });
      for (let i = 0; i < UNITS; i++) {
        app.dataSource(`ds${i}`, { connector: 'memory' });
        app.model(`m${i}`, { dataSource: `ds${i}`, topic: 'bench/{model}' });
      }
      await app.start();
      apps.push(app);
    }
    const share = UNITS / INSTANCES.length;
    await waitUntil(() => {
      const units = apps[0]!.status().cluster?.units ?? [];
      return INSTANCES.every((x) => units.filter((u) => u.owner === x).length === share);
    }, 'every instance to hold its share');

    // What `/ready` answers for each instance while it holds its share (docs/deploy.md, Kubernetes).
    for (const [i, app] of apps.entries()) {
      const view = readyView(app);
      console.log(
        `/ready of ${INSTANCES[i]}: ${view.ready ? 200 : 503} ${view.reasons.slice(0, 2).join('; ')}`,
      );
    }
    const redis = new Redis(leases.url);
    await redis.config('RESETSTAT');
    const started = Date.now();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const info = await redis.info('commandstats');
    const elapsed = (Date.now() - started) / 1000;
    await redis.quit();

    const calls: Record<string, number> = {};
    for (const line of info.split('\n')) {
      const m = /^cmdstat_(\w+):calls=(\d+)/.exec(line);
      if (m) calls[m[1]!] = Number(m[2]);
    }
    const rate = (name: string): string => ((calls[name] ?? 0) / elapsed).toFixed(2);
    console.log(
      `leaseTtl ${ttl}, ${INSTANCES.length} instances, ${UNITS} units, ${elapsed.toFixed(1)} s: ` +
        `${rate('eval')} operations/s = member reads ${rate('zrangebyscore')}/s + renews ${rate('pexpire')}/s ` +
        `+ heartbeats ${rate('zadd')}/s (+ acquires)`,
    );
  } finally {
    for (const app of apps) await app.stop().catch(() => undefined);
    await leases.close();
    await checkpoints.close();
  }
}

async function main(): Promise<void> {
  for (const ttl of ttls) await measure(ttl);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
