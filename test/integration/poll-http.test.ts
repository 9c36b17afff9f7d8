/**
 * The HTTP poll connector against a small JSON API served by the test (node:http): cursor
 * paging (`next` in the body), `since` from an item field, resume, 'now', and retries after
 * server errors.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { EventConnector, ModelFeed } from '../../src/connectors/contract';
import { initialize } from '../../src/connectors/poll/index';
import type { StartFrom } from '../../src/events/change-event';
import { createLogger } from '../../src/logger';
import { RecordingSink } from '../conformance/connector.suite';
import { waitFor } from '../helpers/wait';

interface Item {
  seq: number;
  id: string;
  kind: string;
}

/** An API over an append-only list: `/events?cursor=<offset>` pages of 3 with `next`, or `/since?after=<seq>`. */
async function startApi(): Promise<{
  url: string;
  items: Item[];
  failNext: number;
  requests: string[];
  close(): Promise<void>;
}> {
  const state = { items: [] as Item[], failNext: 0, requests: [] as string[] };
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    state.requests.push(url.pathname + url.search);
    if (req.headers.authorization !== 'Bearer t0ken') {
      res.writeHead(401).end();
      return;
    }
    if (state.failNext > 0) {
      state.failNext--;
      res.writeHead(503).end('busy');
      return;
    }
    res.setHeader('content-type', 'application/json');
    if (url.pathname === '/events') {
      const offset = Number(url.searchParams.get('cursor') ?? '0');
      const page = state.items.slice(offset, offset + 3);
      const next = offset + page.length;
      // A full page always has a next cursor; the last (partial) page has none.
      res.end(JSON.stringify({ data: { items: page }, next: page.length === 3 ? String(next) : null }));
    } else if (url.pathname === '/since') {
      const after = Number(url.searchParams.get('after') ?? '-1');
      res.end(JSON.stringify(state.items.filter((i) => i.seq > after).slice(0, 2)));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  });
}

const running: EventConnector[] = [];
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((c) => c.stop()));
  for (const c of closers.splice(0)) await c();
});

async function poller(url: string, model: ModelFeed, sink = new RecordingSink()) {
  const ds = {
    name: 'api',
    settings: { url, interval: 20, headers: { authorization: 'Bearer t0ken' } },
    logger: createLogger({ level: 'silent' }),
    connector: undefined as unknown,
  };
  await initialize(ds);
  const connector = ds.connector as EventConnector;
  running.push(connector);
  await connector.start({ models: [model], sink });
  return { connector, sink };
}

const paged = (from: StartFrom): ModelFeed => ({
  name: 'events',
  from,
  settings: {
    itemsPath: 'data.items',
    nextCursorPath: 'next',
    opPath: 'kind',
    opMap: { added: 'create', changed: 'update', removed: 'delete' },
  },
});

let seq = 0;
const add = (api: { items: Item[] }, id: string, kind = 'added') => api.items.push({ seq: seq++, id, kind });

describe('poll connector: HTTP JSON API', () => {
  it('follows next cursors page by page, then keeps polling the last page for new items', async () => {
    const api = await startApi();
    closers.push(() => api.close());
    for (const id of ['a', 'b', 'c', 'd']) add(api, id);
    const { sink } = await poller(api.url, paged('beginning'));
    await waitFor(() => sink.events.length >= 4, 'four items');
    add(api, 'a', 'changed');
    add(api, 'e');
    add(api, 'b', 'removed');
    add(api, 'f');
    await waitFor(() => sink.events.length >= 8, 'eight items');
    expect(sink.events.map((e) => [e.op, e.key])).toEqual([
      ['create', 'a'],
      ['create', 'b'],
      ['create', 'c'],
      ['create', 'd'],
      ['update', 'a'],
      ['create', 'e'],
      ['delete', 'b'],
      ['create', 'f'],
    ]);
    expect(sink.events[6]!.before).toMatchObject({ id: 'b', kind: 'removed' });
    expect(new Set(sink.events.map((e) => e.id)).size).toBe(8);
  });

  it('resumes from a position in the middle of a page: nothing lost or repeated', async () => {
    const api = await startApi();
    closers.push(() => api.close());
    for (const id of ['a', 'b', 'c', 'd', 'e']) add(api, id);
    const sink = new RecordingSink();
    sink.full = true; // pause after the first item of the first page
    const first = await poller(api.url, paged('beginning'), sink);
    await waitFor(() => sink.drains >= 1, 'the pause');
    await first.connector.stop();
    expect(sink.keys()).toEqual(['a']);
    const at = sink.events[0]!.position!;
    expect(JSON.parse(at)).toEqual({ c: null, n: 1 });
    add(api, 'f');
    const second = await poller(api.url, paged({ after: at }));
    await waitFor(() => second.sink.events.length >= 5, 'the rest');
    expect(second.sink.keys()).toEqual(['b', 'c', 'd', 'e', 'f']);
    // The same item read again has the same id.
    const again = await poller(api.url, paged('beginning'));
    await waitFor(() => again.sink.events.length >= 6, 'all again');
    expect(again.sink.events.slice(1).map((e) => e.id)).toEqual(second.sink.events.map((e) => e.id));
  });

  it("starts 'now' at the end of the list and marks it; a restart from the mark reads what came since", async () => {
    const api = await startApi();
    closers.push(() => api.close());
    for (const id of ['o1', 'o2', 'o3', 'o4']) add(api, id);
    const first = await poller(api.url, paged('now'));
    await waitFor(() => first.sink.marks.length >= 1, 'the mark');
    add(api, 'n1');
    await waitFor(() => first.sink.events.length >= 1, 'n1');
    await first.connector.stop();
    add(api, 'n2');
    const second = await poller(api.url, paged({ after: first.sink.events[0]!.position! }));
    await waitFor(() => second.sink.events.length >= 1, 'n2');
    expect([...first.sink.keys(), ...second.sink.keys()]).toEqual(['n1', 'n2']);
  });

  it('polls with `since` taken from the last item, and retries after server errors from the same cursor', async () => {
    const api = await startApi();
    closers.push(() => api.close());
    for (const id of ['s1', 's2', 's3']) add(api, id);
    const base = seq - 3;
    const model: ModelFeed = {
      name: 'since',
      from: { after: JSON.stringify({ c: base - 1 }) },
      settings: { path: '/since', itemsPath: '', cursorParam: 'after', cursorField: 'seq' },
    };
    const { sink, connector } = await poller(api.url, model);
    await waitFor(() => sink.events.length >= 3, 'three');
    api.failNext = 3;
    add(api, 's4');
    await waitFor(() => sink.statuses.some((s) => s.type === 'reconnecting'), 'a retry');
    await waitFor(() => sink.events.length >= 4, 's4 after the errors');
    expect(sink.keys()).toEqual(['s1', 's2', 's3', 's4']);
    expect(JSON.parse(sink.events[3]!.position!)).toEqual({ c: seq - 1 });
    expect(connector.health().state).toBe('streaming');
    expect(api.requests.some((r) => r === `/since?after=${seq - 2}`)).toBe(true);
  });
});

describe('poll connector: HTTP authorisation', () => {
  it('fails the feed on 401 instead of retrying forever', async () => {
    const api = await startApi();
    closers.push(() => api.close());
    const ds = {
      name: 'api',
      settings: { url: api.url, interval: 20, headers: { authorization: 'Bearer wrong' } },
      logger: createLogger({ level: 'silent' }),
      connector: undefined as unknown,
    };
    await initialize(ds);
    const connector = ds.connector as EventConnector;
    running.push(connector);
    const sink = new RecordingSink();
    // 'beginning' probes the first page at start: the 401 rejects start() at once.
    await expect(connector.start({ models: [paged('beginning')], sink })).rejects.toMatchObject({
      code: 'EVPUB_AUTH_FAILED',
    });
    expect(connector.health().state).toBe('stopped');
  });
});
