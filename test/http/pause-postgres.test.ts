/**
 * Pause and resume over HTTP with a real PostgreSQL source (a logical replication slot) and a
 * real broker (Redis): a row inserted while the feed is paused is not read, and is published
 * after resume; nothing is lost and the checkpoint only moves on after resume. The datasource
 * URL carries a password: no reply of any route (errors included, a few seconds of the live
 * event stream) and no log line shows it.
 */
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { evpub } from '../../src/app/app';
import { createMetrics } from '../../src/metrics/index';
import { parseExposition } from '../helpers/prometheus';
import { quietLogger, subscriber } from '../helpers/publisher';
import { PgFixture, sql } from '../helpers/postgres';
import { requireService, SERVICES, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

beforeAll(async () => {
  await requireService('postgres');
  await requireService('redis');
});

describe('pause over HTTP, PostgreSQL → Redis', () => {
  it('does not read a row inserted while paused, publishes it after resume, loses nothing', async () => {
    const password = `pw-${uniqueName('s')}`;
    // Trust authentication on the test server: the password is accepted and ignored.
    const url = SERVICES.postgres.url.replace('postgres@', `postgres:${password}@`);
    const fixture = new PgFixture(url);
    cleanups.push(() => fixture.drop());
    const table = await fixture.table('id text PRIMARY KEY, n int');
    const root = uniqueName('pause');
    const redisUrl = SERVICES.redis.url;
    const events = await subscriber(redisUrl, `${root}/#`);
    cleanups.push(() => events.client.end());
    let logText = '';
    const logger = pino(
      { level: 'debug' },
      new Writable({
        write(chunk: Buffer, _enc, done) {
          logText += chunk.toString();
          done();
        },
      }),
    );
    const token = `tk-${uniqueName('t')}`;
    const app = evpub({
      logger,
      brokers: { default: redisUrl },
      checkpoints: { store: 'memory' },
      http: { port: 0, token },
    });
    cleanups.push(() => app.stop());
    app.dataSource('pg', {
      connector: 'postgres',
      url,
      slot: fixture.slot,
      publication: fixture.publication,
      statusInterval: 200,
      heartbeatInterval: 200,
    });
    app.model({ name: 'orders' }, { dataSource: 'pg', topic: `${root}/{key}`, settings: { table } });
    await app.start();
    const { url: api } = await app.listen();
    const bodies: string[] = [];
    const call = async (
      method: 'GET' | 'POST',
      path: string,
      options: { body?: unknown; token?: string } = {},
    ) => {
      const res = await fetch(api + path, {
        method,
        headers: {
          authorization: `Bearer ${options.token ?? token}`,
          ...(options.body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
      });
      const text = await res.text();
      bodies.push(`${res.status} ${method} ${path}: ${text}`);
      const json = res.headers.get('content-type')?.startsWith('application/json')
        ? (JSON.parse(text) as { changed?: boolean; state?: string })
        : {};
      return { status: res.status, json };
    };
    const feed = () => app.status().feeds['pg/orders']!;

    await sql(`INSERT INTO ${table} VALUES ('before', 1)`);
    await waitFor(() => events.got.length === 1, 'the row inserted before the pause');
    await waitFor(() => feed().committed !== null && feed().inFlight === 0, 'the first row committed');

    const paused = await call('POST', '/api/feeds/pg/orders/pause');
    expect(paused.json).toMatchObject({ changed: true, feed: { state: 'paused' } });
    expect((await call('GET', '/ready')).status).toBe(200); // paused on purpose is ready
    const received = feed().received ?? 0;
    const committed = feed().committed;

    await sql(`INSERT INTO ${table} VALUES ('while-paused', 2)`);
    // Proving an absence takes an observation window: the connector streams this slot with a
    // 200 ms status interval, so 2 s is many chances to (wrongly) read the row.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    expect(events.got.map((m) => m.topic)).toEqual([`${root}/before`]);
    // The connector learns of the pause at its next push: it may hand over the one transaction
    // it had read, which is held in the window, unpublished and uncommitted.
    expect(feed().received).toBeLessThanOrEqual(received + 1);
    expect(feed().committed).toBe(committed);
    expect((await call('POST', '/api/feeds/pg/orders/pause')).json.changed).toBe(false);

    // The live event stream, read for a few seconds around a row published.
    let stream = '';
    const reading = new AbortController();
    const sse = await fetch(`${api}/api/events`, {
      headers: { authorization: `Bearer ${token}` },
      signal: reading.signal,
    });
    expect(sse.status).toBe(200);
    const streamed = (async () => {
      const decoder = new TextDecoder();
      try {
        for await (const chunk of sse.body as unknown as AsyncIterable<Uint8Array>) {
          stream += decoder.decode(chunk, { stream: true });
        }
      } catch {
        // aborted
      }
    })();

    const resumed = await call('POST', '/api/feeds/pg/orders/resume');
    expect(resumed.json).toMatchObject({ changed: true });
    await waitFor(() => events.got.length === 2, 'the row inserted while paused, after resume');
    expect(events.got.map((m) => m.topic)).toEqual([`${root}/before`, `${root}/while-paused`]);
    await sql(`INSERT INTO ${table} VALUES ('after', 3)`);
    await waitFor(() => events.got.length === 3, 'a row inserted after resume');
    await waitFor(
      () => stream.includes('event: change') && stream.includes('"after"'),
      'the row on the stream',
    );
    await new Promise((resolve) => setTimeout(resolve, 2000));
    reading.abort();
    await streamed;
    bodies.push(stream);
    await waitFor(() => feed().committed !== committed && feed().inFlight === 0, 'the checkpoint moved on');
    expect((await call('GET', '/api/feeds/pg/orders')).json).toMatchObject({
      state: 'streaming',
      counters: { published: 3, deadLettered: 0 },
    });
    await call('GET', '/api/config');
    await call('GET', '/api/feeds');
    await call('GET', '/metrics');
    expect((await call('GET', '/health')).status).toBe(200);
    expect((await call('GET', '/openapi.json')).status).toBe(200);
    expect((await call('GET', '/api/cluster')).status).toBe(404); // alone, not in a cluster
    expect((await call('GET', '/')).status).toBe(200);
    // Error replies: a wrong token, a bad body, an unknown feed, a bad filter of the stream.
    expect((await call('GET', '/api/feeds', { token: 'wrong' })).status).toBe(401);
    expect((await call('POST', '/api/feeds/pg/orders/pause', { body: { force: true } })).status).toBe(400);
    expect((await call('GET', '/api/feeds/pg/nope')).status).toBe(404);
    expect((await call('POST', '/api/feeds/pg%2Fnope/resume')).status).toBe(404);
    expect((await call('GET', '/api/events?topic=a/%23/b')).status).toBe(400);
    // A re-snapshot: every row again, as snapshot events.
    const resnapshot = await call('POST', '/api/feeds/pg/orders/snapshot', { body: { reason: 'test' } });
    expect(resnapshot.status).toBe(202);
    await waitFor(() => events.got.length === 6, 'the three rows again, from the re-snapshot');
    await waitFor(
      async () => (await call('GET', '/api/feeds/pg/orders')).json.state === 'streaming',
      'streaming after the re-snapshot',
    );
    // Stopping a paused PostgreSQL feed does not hang on the paused stream.
    await call('POST', '/api/feeds/pg/orders/pause');
    await sql(`INSERT INTO ${table} VALUES ('at-stop', 4)`);
    const began = Date.now();
    await app.stop();
    expect(Date.now() - began).toBeLessThan(10_000); // well under the 30 s stopTimeout
    expect(events.got).toHaveLength(6);
    expect(logText).toContain('feed paused');
    const replies = bodies.join('\n');
    expect(replies).toContain('postgres://');
    for (const status of [200, 202, 400, 401, 404]) expect(replies).toContain(`\n${status} `);
    expect(replies).toContain('event: change');
    expect(replies + logText).not.toContain(password);
  });
});

describe('feed state while a PostgreSQL snapshot runs', () => {
  it('is snapshotting with its progress (and in the metrics), then streaming', async () => {
    const fixture = new PgFixture();
    cleanups.push(() => fixture.drop());
    const table = await fixture.table('id int PRIMARY KEY, n int');
    await sql(`INSERT INTO ${table} SELECT g, g FROM generate_series(1, 500) g`);
    const app = evpub({
      logger: quietLogger(),
      brokers: { default: `memory://${uniqueName('b')}` },
      checkpoints: { store: 'memory' },
    });
    cleanups.push(() => app.stop());
    app.dataSource('pg', {
      connector: 'postgres',
      url: fixture.url,
      slot: fixture.slot,
      publication: fixture.publication,
      snapshot: 'initial',
      snapshotChunk: 100,
    });
    app.model({ name: 'items' }, { dataSource: 'pg', settings: { table } });
    const metrics = createMetrics(app);
    cleanups.push(async () => metrics.close());
    // Read at the moment each progress report arrives (listeners run synchronously).
    const seen: { state: string; snapshot?: { done: number; total?: number } }[] = [];
    let during: Promise<string> | undefined;
    app.on('status', (s) => {
      if (s.type === 'connector' && s.status.type === 'snapshot') {
        const feed = app.status().feeds['pg/items']!;
        seen.push({ state: feed.state, ...(feed.snapshot ? { snapshot: feed.snapshot } : {}) });
        during ??= metrics.text(); // a scrape while the snapshot runs (after its first report)
      }
    });
    await app.start();
    const { url } = await app.listen({ port: 0 });
    await waitFor(() => app.status().feeds['pg/items']!.published === 500, 'every row published');
    expect(seen.length).toBeGreaterThanOrEqual(2);
    expect(seen[0]).toMatchObject({ state: 'snapshotting', snapshot: { done: 100 } });
    const items = { datasource: 'pg', model: 'items' };
    const mid = parseExposition(await during!);
    const midDone = mid.value('evpub_snapshot_rows_done', items)!;
    expect(midDone).toBeGreaterThanOrEqual(100);
    expect(mid.value('evpub_snapshot_rows_expected', items)).toBeGreaterThanOrEqual(midDone);
    // Done: the last report says every row, and so do the gauges.
    const end = parseExposition(await metrics.text());
    expect(end.value('evpub_snapshot_rows_done', items)).toBe(500);
    expect(end.value('evpub_snapshot_rows_expected', items)).toBe(500);
    expect(end.value('evpub_events_published_total', { ...items, op: 'snapshot' })).toBe(500);
    await waitFor(
      async () =>
        ((await (await fetch(`${url}/api/feeds/pg/items`)).json()) as { state: string }).state ===
        'streaming',
      'streaming once the snapshot is done',
    );
  });
});
