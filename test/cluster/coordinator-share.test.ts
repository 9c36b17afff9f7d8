/**
 * The coordinator's fair share, with the real Redis lease store (the shared server, a cluster
 * name per test) and hosts that only record what they are told: a `UnitHost` is the
 * coordinator's own contract (startUnit / stopUnit / feedsOf), not a server.
 *
 * Every host writes itself into one shared map when it starts a unit and out when it stops it,
 * so two hosts running one unit at once is seen (and must never happen).
 */
import { performance } from 'node:perf_hooks';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseClusterConfig } from '../../src/cluster/config';
import { Coordinator, type UnitHost } from '../../src/cluster/coordinator';
import { RedisLeaseStore } from '../../src/cluster/redis';
import type { PublisherStatus } from '../../src/pipeline/status';
import { quietLogger } from '../helpers/publisher';
import { requireService, SERVICES, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const TTL = 10_000;
const POLL = 100;
const UNITS = ['u0', 'u1', 'u2', 'u3', 'u4', 'u5', 'u6'];

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

beforeAll(async () => {
  await requireService('redis');
});

/** Which instance runs each unit, and every moment two did. */
interface World {
  running: Map<string, string>;
  overlaps: string[];
}

class RecordingHost implements UnitHost {
  /** Units whose start rejects (a source down for this instance). */
  readonly failing = new Set<string>();
  /** Starts reject while this many units run here (an instance short of something). */
  limit = Infinity;
  readonly starts: { unit: string; at: number; ok: boolean }[] = [];

  constructor(
    private readonly instance: string,
    private readonly world: World,
  ) {}

  async startUnit(unit: string): Promise<void> {
    const mine = [...this.world.running.values()].filter((i) => i === this.instance).length;
    const ok = !this.failing.has(unit) && mine < this.limit;
    this.starts.push({ unit, at: performance.now(), ok });
    await new Promise((r) => setTimeout(r, 5)); // a start takes a moment
    if (!ok) throw new Error(`the source of ${unit} does not answer`);
    const other = this.world.running.get(unit);
    if (other !== undefined) this.world.overlaps.push(`${unit}: ${this.instance} while ${other}`);
    this.world.running.set(unit, this.instance);
  }

  async stopUnit(unit: string): Promise<void> {
    await new Promise((r) => setTimeout(r, 5)); // draining takes a moment
    if (this.world.running.get(unit) === this.instance) this.world.running.delete(unit);
  }

  feedsOf(unit: string): string[] {
    return [`ds/${unit}`];
  }
}

interface Node {
  instance: string;
  coordinator: Coordinator;
  host: RecordingHost;
  statuses: PublisherStatus[];
}

function cluster() {
  const name = uniqueName('share');
  const world: World = { running: new Map(), overlaps: [] };
  const nodes: Node[] = [];
  const make = (instance: string, failing: string[] = []): Node => {
    const store = new RedisLeaseStore({ url: SERVICES.redis.url, cluster: name });
    const config = parseClusterConfig({
      store: 'redis',
      url: SERVICES.redis.url,
      name,
      leaseTtl: TTL,
      instance,
    });
    const host = new RecordingHost(instance, world);
    for (const u of failing) host.failing.add(u);
    const statuses: PublisherStatus[] = [];
    const coordinator = new Coordinator({
      store,
      config,
      units: UNITS,
      host,
      logger: quietLogger(),
      emit: (s) => statuses.push(s),
      pollInterval: POLL,
    });
    const node = { instance, coordinator, host, statuses };
    nodes.push(node);
    cleanups.push(async () => {
      await coordinator.stop();
      await store.close();
    });
    return node;
  };
  /** Units per instance of `live`, sorted from most to fewest. */
  const counts = (live: Node[]): number[] =>
    live.map((n) => [...world.running.values()].filter((i) => i === n.instance).length).sort((a, b) => b - a);
  return { world, nodes, make, counts };
}

describe('the coordinator shares units fairly', () => {
  it('7 units over 3 instances: 3/2/2; a 4th gets units handed over; one leaving hands its units on', async () => {
    const c = cluster();
    const [a, b, d] = [c.make('a'), c.make('b'), c.make('c')];
    for (const n of [a, b, d]) await n.coordinator.start();
    await waitFor(
      () => c.world.running.size === 7 && c.counts([a, b, d]).join('/') === '3/2/2',
      '3/2/2',
      15_000,
    );
    // Each coordinator's view agrees with the hosts.
    for (const n of [a, b, d]) {
      const view = n.coordinator.view();
      for (const u of view.units.filter((x) => x.mine)) expect(c.world.running.get(u.unit)).toBe(n.instance);
    }

    const e = c.make('d');
    await e.coordinator.start();
    await waitFor(
      () => c.world.running.size === 7 && c.counts([a, b, d, e]).join('/') === '2/2/2/1',
      'the 4th gets a unit: 2/2/2/1',
      15_000,
    );
    // A unit handed over went through a graceful stop, then the newcomer's start.
    expect(e.host.starts.filter((s) => s.ok).length).toBeGreaterThanOrEqual(1);
    expect([a, b, d].some((n) => n.statuses.some((s) => s.type === 'unit' && s.event === 'released'))).toBe(
      true,
    );

    // b leaves (SIGTERM): its units are released after their stop, the others take them.
    const leaving = [...c.world.running.entries()].filter(([, i]) => i === 'b').map(([u]) => u);
    expect(leaving.length).toBeGreaterThanOrEqual(1);
    const stoppedAt = performance.now();
    await b.coordinator.stop();
    await waitFor(
      () => c.world.running.size === 7 && leaving.every((u) => c.world.running.get(u) !== 'b'),
      "b's units taken over",
      TTL,
    );
    const took = performance.now() - stoppedAt;
    console.log(
      `units of a leaving instance taken over ${took.toFixed(0)} ms after its stop (${(took / POLL).toFixed(1)} ticks of ${POLL} ms; TTL ${TTL} ms)`,
    );
    // Released (drained, then the lease freed), not left to expire.
    const released = b.statuses.flatMap((s) => (s.type === 'unit' && s.event === 'released' ? [s.unit] : []));
    expect(released).toEqual(expect.arrayContaining(leaving));
    await waitFor(() => c.counts([a, d, e]).join('/') === '3/2/2', '3/2/2 again', 15_000);
    expect(c.world.overlaps).toEqual([]);
  }, 60_000);

  it('a unit whose start fails is released, retried after a back-off, and taken by an instance with room', async () => {
    const c = cluster();
    const a = c.make('a', ['u3']);
    await a.coordinator.start();
    // Alone, a tries u3 again after 1 s, then after 2 s more (doubling).
    await waitFor(
      () => a.host.starts.filter((s) => s.unit === 'u3').length >= 3,
      'three tries of u3',
      15_000,
    );
    const tries = a.host.starts.filter((s) => s.unit === 'u3').map((s) => s.at);
    expect(tries[1]! - tries[0]!).toBeGreaterThanOrEqual(1000);
    expect(tries[2]! - tries[1]!).toBeGreaterThanOrEqual(2000);
    const failed = a.statuses.filter((s) => s.type === 'unit' && s.event === 'failed');
    expect(failed[0]).toMatchObject({
      unit: 'u3',
      instance: 'a',
      error: { message: expect.stringContaining('does not answer') },
    });
    expect(c.world.running.has('u3')).toBe(false);
    expect(c.world.running.size).toBe(6);

    // b has room (share 4 of 7): it takes u3, which a released, and the units a hands over.
    const b = c.make('b');
    await b.coordinator.start();
    await waitFor(() => c.world.running.get('u3') === 'b', 'u3 started by b', 15_000);
    await waitFor(() => c.world.running.size === 7 && c.counts([a, b]).join('/') === '4/3', '4/3', 15_000);
    expect(a.host.starts.some((s) => s.unit === 'u3' && s.ok)).toBe(false);
    expect(c.world.overlaps).toEqual([]);
  }, 60_000);

  it('balancing backs off while a low member cannot start the units it is handed', async () => {
    const c = cluster();
    const [a, b] = [c.make('a'), c.make('b')];
    for (const n of [a, b]) await n.coordinator.start();
    await waitFor(() => c.world.running.size === 7 && c.counts([a, b]).join('/') === '4/3', '4/3', 15_000);
    // d can run one unit, no more: 3/3/1 is as even as it gets.
    const d = c.make('d');
    d.host.limit = 1;
    await d.coordinator.start();
    await waitFor(() => c.counts([a, b, d]).join('/') === '3/3/1', '3/3/1', 15_000);
    const handovers = () =>
      [a, b].flatMap((n) => n.statuses).filter((s) => s.type === 'unit' && s.event === 'released').length;
    const from = handovers();
    const since = performance.now();
    await new Promise((r) => setTimeout(r, 8000)); // the span the handovers are counted over
    const count = handovers() - from;
    console.log(`balance handovers in ${(performance.now() - since).toFixed(0)} ms: ${count}`);
    // Rounds at most every renewInterval (TTL / 3), doubling; a round hands over one unit per
    // instance at the share. Without the back-off: one every couple of ticks.
    expect(count).toBeLessThanOrEqual(8);
    await waitFor(() => c.world.running.size === 7, 'every unit running');
    expect(c.world.overlaps).toEqual([]);
  }, 60_000);
});
