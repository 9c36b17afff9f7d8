/**
 * Cluster mode in the management API and the metrics: two instances in this process share two
 * units (memory datasources) through leases in Redis. `/api/cluster` lists both instances (host,
 * pid, API address, units) and every unit's owner, epoch and since when; `/api/feeds` carries
 * each feed's unit and owner, the other instance's feeds `standby`; pausing one of those is a
 * 409 naming the owner; `/ready` stays 200 with standby feeds but is 503 while the lease store
 * (a private Redis, stopped) does not answer, and 200 again once it is back; the cluster metrics
 * follow the units and the store.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import type { ClusterApiView, FeedsView, FeedView, ReadyView } from '../../src/http/views';
import { clusterFixture } from '../helpers/cluster-apps';
import { parseExposition, type Exposition } from '../helpers/prometheus';
import { quietLogger, subscriber } from '../helpers/publisher';
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

const TOKEN = `tok-${uniqueName('token')}`;

async function get<T>(url: string, path: string, token?: string): Promise<{ status: number; body: T }> {
  const res = await fetch(url + path, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: res.status, body: (await res.json().catch(() => undefined)) as T };
}

async function post(url: string, path: string, token?: string) {
  const res = await fetch(url + path, {
    method: 'POST',
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function metrics(url: string, token?: string): Promise<Exposition> {
  const res = await fetch(`${url}/metrics`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return parseExposition(await res.text());
}

const sum = (m: Exposition, name: string, labels: Record<string, string>): number =>
  m
    .all(name)
    .filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((n, s) => n + s.value, 0);

describe('cluster mode: API and metrics', () => {
  it('shows instances, units, owners and standby feeds; a feed owned elsewhere is a 409', async () => {
    const f = clusterFixture(SERVICES.redis.url, cleanups);
    const sub = await subscriber(f.broker);
    cleanups.push(() => sub.client.end());
    const a = await f.start('a', { token: TOKEN });
    const b = await f.start('b');
    // b joins: a hands one unit over.
    await waitFor(async () => {
      const { units, members } = (await get<ClusterApiView>(a.url, '/api/cluster', TOKEN)).body;
      return (
        units.filter((u) => u.owner === 'a').length === 1 &&
        units.filter((u) => u.owner === 'b').length === 1 &&
        // Both entries up to date: each lists one unit.
        members.length === 2 &&
        members.every((m) => Object.keys(m.info.units).length === 1)
      );
    }, 'one unit each');

    expect((await get(a.url, '/api/cluster')).status).toBe(401);
    const cluster = (await get<ClusterApiView>(a.url, '/api/cluster', TOKEN)).body;
    expect(cluster).toMatchObject({ instance: 'a', name: f.name, store: 'redis', state: 'ok' });
    expect(cluster.members.map((m) => m.instance).sort()).toEqual(['a', 'b']);
    const member = (i: string) => cluster.members.find((m) => m.instance === i)!;
    expect(member('a').info).toMatchObject({ pid: process.pid, api: a.url });
    expect(member('b').info).toMatchObject({ pid: process.pid, api: b.url });
    expect(typeof member('a').info.host).toBe('string');
    expect(Object.keys(member('a').info).sort()).toEqual(['api', 'host', 'pid', 'units']);
    const mine = cluster.units.find((u) => u.owner === 'a')!;
    const theirs = cluster.units.find((u) => u.owner === 'b')!;
    expect(mine).toMatchObject({ mine: true, feeds: [f.feeds[f.units.indexOf(mine.unit)]] });
    expect(theirs.mine).toBe(false);
    expect(member('a').info.units).toEqual({ [mine.unit]: { epoch: mine.epoch, since: mine.since } });
    expect(member('b').info.units).toEqual({ [theirs.unit]: { epoch: theirs.epoch, since: theirs.since } });
    // The unit a handed over has a greater epoch than when a held it.
    expect(theirs.epoch).toBeGreaterThanOrEqual(2);
    expect(Date.parse(mine.since!)).toBeLessThanOrEqual(Date.now());

    const feeds = (await get<FeedsView>(a.url, '/api/feeds', TOKEN)).body;
    expect(feeds.cluster).toEqual({ instance: 'a', name: f.name, store: 'redis', state: 'ok' });
    const myFeed = feeds.feeds.find((x) => x.unit === mine.unit)!;
    const otherFeed = feeds.feeds.find((x) => x.unit === theirs.unit)!;
    expect(myFeed).toMatchObject({
      state: 'streaming',
      owner: { instance: 'a', epoch: mine.epoch, since: mine.since, mine: true },
    });
    expect(otherFeed).toMatchObject({
      state: 'standby',
      owner: { instance: 'b', epoch: theirs.epoch, since: theirs.since, mine: false },
    });
    const one = await get<FeedView>(a.url, `/api/feeds/${encodeURIComponent(otherFeed.id)}`, TOKEN);
    expect(one.body).toMatchObject({ state: 'standby', unit: theirs.unit, owner: { instance: 'b' } });
    // Standby feeds are ready: the other instance publishes them.
    expect((await get<ReadyView>(a.url, '/ready')).body).toEqual({ ready: true, reasons: [] });

    // Operating a feed of the other instance: 409, the code and the owner.
    for (const action of ['pause', 'resume', 'snapshot']) {
      const reply = await post(a.url, `/api/feeds/${encodeURIComponent(otherFeed.id)}/${action}`, TOKEN);
      expect(reply.status, action).toBe(409);
      expect(reply.body).toMatchObject({ code: 'EVPUB_FEED_OWNED_ELSEWHERE', owner: 'b' });
      expect(reply.body.message).toContain('but by b');
    }
    expect((await post(b.url, `/api/feeds/${encodeURIComponent(otherFeed.id)}/pause`)).status).toBe(200);
    expect((await post(b.url, `/api/feeds/${encodeURIComponent(otherFeed.id)}/resume`)).status).toBe(200);

    // Each instance publishes its own unit's events.
    f.write(mine.unit, myFeed.model, 'k1');
    f.write(theirs.unit, otherFeed.model, 'k2');
    await waitFor(() => sub.got.length >= 2, 'two events');

    let m = await metrics(a.url, TOKEN);
    expect(m.value('evpub_cluster_members')).toBe(2);
    expect(m.value('evpub_cluster_units_owned')).toBe(1);
    expect(m.value('evpub_cluster_store_up')).toBe(1);
    expect(m.value('evpub_unit_owned', { unit: mine.unit })).toBe(1);
    expect(m.value('evpub_unit_owned', { unit: theirs.unit })).toBe(0);
    expect(m.value('evpub_unit_epoch', { unit: mine.unit })).toBe(mine.epoch);
    expect(m.value('evpub_unit_epoch', { unit: theirs.unit })).toBe(theirs.epoch);
    // a took both units alone, then handed one over to b.
    expect(sum(m, 'evpub_unit_changes_total', { event: 'acquired' })).toBe(2);
    expect(sum(m, 'evpub_unit_changes_total', { event: 'released', unit: theirs.unit })).toBe(1);
    // The Grafana dashboard's cluster panels read metrics a cluster-mode instance serves.
    const grafana = JSON.parse(
      readFileSync(path.join(__dirname, '../../docs/grafana-dashboard.json'), 'utf8'),
    ) as { panels: { targets: { expr: string }[] }[] };
    const clusterNames = new Set(
      grafana.panels
        .flatMap((p) => p.targets.flatMap((t) => [...t.expr.matchAll(/\bevpub_(?:cluster|unit)_[a-z_]+/g)]))
        .map((x) => x[0]),
    );
    expect(clusterNames.size).toBeGreaterThan(2);
    expect([...clusterNames].filter((n) => !m.types.has(n))).toEqual([]);

    // b stops (hands over at once): a owns both.
    await b.app.stop();
    // The gauge and the acquisition counter are updated at two moments of the takeover (the
    // lease, then the unit started): wait for both.
    await waitFor(async () => {
      const now = await metrics(a.url, TOKEN);
      return (
        now.value('evpub_cluster_units_owned') === 2 &&
        sum(now, 'evpub_unit_changes_total', { event: 'acquired', unit: theirs.unit }) === 2
      );
    }, 'a owns both units');
    m = await metrics(a.url, TOKEN);
    expect(m.value('evpub_cluster_members')).toBe(1);
    expect(m.value('evpub_unit_epoch', { unit: theirs.unit })).toBeGreaterThan(theirs.epoch!);
    expect(sum(m, 'evpub_unit_changes_total', { event: 'acquired', unit: theirs.unit })).toBe(2);
    const after = (await get<FeedsView>(a.url, '/api/feeds', TOKEN)).body.feeds;
    expect(after.every((x) => x.owner?.instance === 'a' && x.owner.mine)).toBe(true);
  }, 60_000);

  it('is not ready while the lease store does not answer, and ready again when it is back', async () => {
    const leases = await startRedisServer();
    cleanups.push(() => leases.close());
    const f = clusterFixture(leases.url, cleanups);
    const a = await f.start('a');
    expect((await get<ReadyView>(a.url, '/ready')).status).toBe(200);

    await leases.stop();
    const down = await waitFor(async () => {
      const r = await get<ReadyView>(a.url, '/ready');
      return r.status === 503 ? r.body : undefined;
    }, '/ready 503');
    expect(down?.ready).toBe(false);
    expect(down?.reasons.join('\n')).toMatch(/^the lease store \(redis\) does not answer: EVPUB_/m);
    const cluster = (await get<ClusterApiView>(a.url, '/api/cluster')).body;
    expect(cluster.state).toBe('unreachable');
    expect(cluster.error?.code).toMatch(/^EVPUB_/);
    expect((await metrics(a.url)).value('evpub_cluster_store_up')).toBe(0);
    expect(a.statuses).toContainEqual(expect.objectContaining({ type: 'cluster', state: 'unreachable' }));

    await leases.start();
    await waitFor(async () => (await get(a.url, '/ready')).status === 200, '/ready 200 again', 30_000);
    const m = await metrics(a.url);
    expect(m.value('evpub_cluster_store_up')).toBe(1);
    expect(a.statuses).toContainEqual({ type: 'cluster', state: 'ok' });
    await waitFor(
      async () => (await metrics(a.url)).value('evpub_cluster_units_owned') === 2,
      'a holds both units again',
      30_000,
    );
  }, 60_000);

  it('alone: no /api/cluster (404), no cluster metrics, no cluster fields', async () => {
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
    const reply = await get<{ message: string }>(url, '/api/cluster');
    expect(reply.status).toBe(404);
    expect(reply.body.message).toContain('runs alone');
    const feeds = (await get<FeedsView>(url, '/api/feeds')).body;
    expect(feeds.cluster).toBeUndefined();
    expect(feeds.feeds[0]!.owner).toBeUndefined();
    const m = await metrics(url);
    expect([...m.types.keys()].filter((n) => /^evpub_(cluster|unit)_/.test(n))).toEqual([]);
  });

  it('the OpenAPI document describes /api/cluster, owners and the standby state', async () => {
    const f = clusterFixture(SERVICES.redis.url, cleanups);
    const a = await f.start('a');
    const doc = (await get<{ paths: Record<string, unknown> }>(a.url, '/openapi.json')).body;
    expect(Object.keys(doc.paths)).toContain('/api/cluster');
    const feed = JSON.stringify(doc);
    expect(feed).toContain('"standby"');
    expect(feed).toContain('EVPUB_FEED_OWNED_ELSEWHERE');
  });
});
