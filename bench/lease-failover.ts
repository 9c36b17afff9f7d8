/**
 * How long a unit waits for a new owner (docs/deploy.md, "Choosing the TTL"): two `evpub`
 * processes (this file as a child: an app in cluster mode with two memory datasources, so two
 * units) share leases in a private redis-server. Once each holds one unit:
 *
 * - kill -9 of one: the time until the other reports the orphaned unit acquired (expected: up
 *   to the TTL after the dead one's last renew, plus a tick, plus the unit's start);
 * - then, with a new process holding one unit again, SIGTERM of one: the time until the other
 *   has acquired its unit (expected: well under a second).
 *
 *   npx tsx bench/lease-failover.ts                  # leaseTtl 5s
 *   LEASE_TTL=15s npx tsx bench/lease-failover.ts
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { evpub } from '../src/app/app';
import { createLogger } from '../src/logger';
import { startRedisServer } from '../test/helpers/redis-server';

const TTL = process.env.LEASE_TTL ?? '5s';

/** The child: an instance that prints every unit it acquires, releases or loses. */
async function child(instance: string, leases: string, checkpoints: string): Promise<void> {
  const app = evpub({
    logger: createLogger({ level: 'silent' }),
    brokers: { default: 'memory://lease-failover' },
    checkpoints: { store: 'redis', url: checkpoints },
    cluster: { store: 'redis', url: leases, name: 'failover', leaseTtl: TTL, instance },
    handleSignals: true,
  });
  app.on('status', (s) => {
    if (s.type === 'unit') process.stdout.write(`${JSON.stringify({ unit: s.unit, event: s.event })}\n`);
  });
  for (const ds of ['one', 'two']) {
    app.dataSource(ds, { connector: 'memory' });
    app.model(`${ds}_model`, { dataSource: ds, topic: 'bench/{model}' });
  }
  await app.start();
  setInterval(() => undefined, 1000);
}

interface Instance {
  name: string;
  proc: ChildProcess;
  held: Set<string>;
  /** Resolves when this instance has acquired `unit`, with performance.now(). */
  acquired(unit: string): Promise<number>;
}

function start(name: string, leases: string, checkpoints: string): Instance {
  const proc = spawn(process.execPath, ['--import', 'tsx', __filename, 'child', name, leases, checkpoints], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const held = new Set<string>();
  const waiters: { unit: string; resolve: (t: number) => void }[] = [];
  createInterface({ input: proc.stdout }).on('line', (line) => {
    const { unit, event } = JSON.parse(line) as { unit: string; event: string };
    if (event === 'acquired') {
      held.add(unit);
      const now = performance.now();
      for (const w of waiters.filter((x) => x.unit === unit)) w.resolve(now);
    } else held.delete(unit);
  });
  return {
    name,
    proc,
    held,
    acquired: (unit) =>
      held.has(unit)
        ? Promise.resolve(performance.now())
        : new Promise((resolve) => waiters.push({ unit, resolve })),
  };
}

async function until(check: () => boolean, what: string, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const exited = (p: ChildProcess): Promise<void> =>
  p.exitCode !== null || p.signalCode !== null
    ? Promise.resolve()
    : new Promise((r) => p.once('exit', () => r()));

async function main(): Promise<void> {
  const leases = await startRedisServer();
  const checkpoints = await startRedisServer();
  const running: Instance[] = [];
  try {
    const a = start('a', leases.url, checkpoints.url);
    running.push(a);
    await until(() => a.held.size === 2, 'a to hold both units');
    const b = start('b', leases.url, checkpoints.url);
    running.push(b);
    await until(() => a.held.size === 1 && b.held.size === 1, 'one unit each');

    const orphan = [...a.held][0]!;
    const killedAt = performance.now();
    a.proc.kill('SIGKILL');
    const taken = await b.acquired(orphan);
    console.log(
      `leaseTtl ${TTL}: kill -9 → the other instance acquired ${orphan} after ${(taken - killedAt).toFixed(0)} ms`,
    );
    await exited(a.proc);

    const c = start('c', leases.url, checkpoints.url);
    running.push(c);
    await until(() => b.held.size === 1 && c.held.size === 1, 'one unit each again');
    const handed = [...b.held][0]!;
    const termAt = performance.now();
    b.proc.kill('SIGTERM');
    const took = await c.acquired(handed);
    console.log(
      `leaseTtl ${TTL}: SIGTERM → the other instance acquired ${handed} after ${(took - termAt).toFixed(0)} ms`,
    );
    await exited(b.proc);
  } finally {
    for (const i of running) if (i.proc.exitCode === null) i.proc.kill('SIGKILL');
    await leases.close();
    await checkpoints.close();
  }
}

if (process.argv[2] === 'child') {
  child(process.argv[3]!, process.argv[4]!, process.argv[5]!).catch((err: unknown) => {
    console.error(err);
    process.exit(2);
  });
} else {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
