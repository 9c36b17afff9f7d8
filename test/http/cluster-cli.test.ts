/**
 * `evpub cluster` and `evpub status` (real CLI processes) against two running instances of one
 * cluster (in this process, leases in Redis): the instances with their units, every unit's
 * owner, `--json`, the OWNER column with this instance marked and the other's feeds standby;
 * exit 1 while the lease store (a private Redis, stopped) does not answer, and for an evpub
 * that runs alone.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import type { ClusterApiView } from '../../src/http/views';
import { spawnCli } from '../e2e/cli';
import { clusterFixture } from '../helpers/cluster-apps';
import { quietLogger } from '../helpers/publisher';
import { startRedisServer } from '../helpers/redis-server';
import { requireService, SERVICES, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

beforeAll(async () => {
  await requireService('redis');
});

async function run(args: string[], env: Record<string, string> = {}) {
  const proc = spawnCli(args, { env: { EVPUB_HTTP_TOKEN: '', EVPUB_URL: '', ...env } });
  const code = await proc.exited;
  return { code, stdout: proc.stdout(), stderr: proc.stderr() };
}

describe('evpub cluster and evpub status in cluster mode', () => {
  it('list the instances, the units and their owners', async () => {
    const token = uniqueName('tok');
    const f = clusterFixture(SERVICES.redis.url, cleanups);
    const a = await f.start('a', { token });
    const b = await f.start('b', { token });
    const both = () => {
      const owners = a.app
        .status()
        .cluster?.units.map((u) => u.owner)
        .sort();
      const members = a.app.status().cluster?.members ?? [];
      // Both entries up to date: each lists one unit.
      return (
        owners?.join() === 'a,b' &&
        members.length === 2 &&
        members.every((m) => Object.keys(m.info.units as object).length === 1)
      );
    };
    await waitFor(both, 'one unit each');
    const mine = a.app.status().cluster!.units.find((u) => u.mine)!;
    const theirs = a.app.status().cluster!.units.find((u) => !u.mine)!;

    const table = await run(['cluster', '--url', a.url, '--token', token]);
    expect(table.code, table.stderr).toBe(0);
    const out = table.stdout;
    expect(out).toContain(`cluster ${f.name}: 2 live instances, 2 units, lease store redis`);
    expect(out).toMatch(/^INSTANCE\s+HOST\s+PID\s+API\s+UNITS$/m);
    const since = (iso: string) => iso.replace(/\.\d+Z$/, 'Z');
    expect(out).toMatch(
      new RegExp(
        `^a \\*\\s+\\S+\\s+${process.pid}\\s+${a.url}\\s+${mine.unit} \\(epoch ${mine.epoch}, since ${since(mine.since!)}\\)$`,
        'm',
      ),
    );
    expect(out).toMatch(
      new RegExp(`^b\\s+\\S+\\s+${process.pid}\\s+${b.url}\\s+${theirs.unit} \\(epoch`, 'm'),
    );
    expect(out).toMatch(
      new RegExp(`^${mine.unit}\\s+a \\*\\s+${mine.epoch}\\s+\\S+\\s+${mine.feeds[0]}$`, 'm'),
    );
    expect(out).toMatch(
      new RegExp(`^${theirs.unit}\\s+b\\s+${theirs.epoch}\\s+\\S+\\s+${theirs.feeds[0]}$`, 'm'),
    );
    expect(out).toContain('lease store redis: ok');
    expect(out).not.toContain(token);

    const json = await run(['cluster', '--json'], { EVPUB_URL: b.url, EVPUB_HTTP_TOKEN: token });
    expect(json.code, json.stderr).toBe(0);
    const view = JSON.parse(json.stdout) as ClusterApiView;
    expect(view.instance).toBe('b');
    expect(view.units.find((u) => u.unit === theirs.unit)).toMatchObject({ owner: 'b', mine: true });

    const status = await run(['status', '--url', a.url, '--token', token]);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/^FEED\s+STATE\s+OWNER\s+EPOCH\s+SINCE\s+EVENTS\/S/m);
    expect(status.stdout).toMatch(
      new RegExp(`^${mine.feeds[0]}\\s+streaming\\s+a \\*\\s+${mine.epoch}\\s`, 'm'),
    );
    expect(status.stdout).toMatch(
      new RegExp(`^${theirs.feeds[0]}\\s+standby\\s+b\\s+${theirs.epoch}\\s`, 'm'),
    );
    expect(status.stdout).toContain(`cluster ${f.name}, this instance a (*), lease store redis: ok`);
    expect(status.stdout).toMatch(/^ready$/m);
  }, 90_000);

  it('exit 1 while the lease store does not answer', async () => {
    const leases = await startRedisServer();
    cleanups.push(() => leases.close());
    const f = clusterFixture(leases.url, cleanups);
    const a = await f.start('a');
    await leases.stop();
    await waitFor(() => a.app.status().cluster?.state === 'unreachable', 'the store unreachable');
    const cluster = await run(['cluster', '--url', a.url]);
    expect(cluster.code).toBe(1);
    expect(cluster.stdout).toMatch(/lease store redis: unreachable: EVPUB_/);
    const status = await run(['status', '--url', a.url]);
    expect(status.code).toBe(1);
    expect(status.stdout).toContain('lease store redis: unreachable');
    expect(status.stdout).toContain('not ready: ');
    expect(status.stdout).toContain('the lease store (redis) does not answer');
  }, 60_000);

  it('an evpub that runs alone has no cluster: exit 1, saying so', async () => {
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: `memory://${uniqueName('b')}` },
      checkpoints: { store: 'memory' },
    });
    cleanups.push(() => app.stop());
    app.dataSource('local', { connector: 'memory', store: uniqueName('s') });
    app.model(uniqueName('m'), { dataSource: 'local' });
    const { url } = await app.listen({ port: 0 });
    await app.start();
    const reply = await run(['cluster', '--url', url]);
    expect(reply.code).toBe(1);
    expect(reply.stderr).toContain('runs alone');
    const status = await run(['status', '--url', url]);
    expect(status.code).toBe(0);
    expect(status.stdout).not.toContain('OWNER');
  }, 30_000);
});
