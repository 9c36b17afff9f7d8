/**
 * The mysql connector with several instances on one datasource (issue 14): one unit per model
 * (contract point 10); instances started with different models use distinct, stable binlog
 * server ids (serverId + the model's place in the configured models); a second reader with a
 * configured serverId already read with by a live reader (another process) is refused at start
 * with EVPUB_FEED_OWNED_ELSEWHERE naming the feed and that process, and the first goes on;
 * after kill -9 of that process the id is free at once; `takeover` (point 11) displaces the
 * stale reader, which stops with the same code instead of taking turns. A user that may not
 * list the readers (no REPLICATION MASTER ADMIN) starts anyway, and the reader it displaces
 * stops the same way; `evpub check` names the grant.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import path from 'node:path';
import type { RowDataPacket } from 'mysql2';
import type { Connection } from 'mysql2/promise';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EventConnector } from '../../src/connectors/contract';
import { initialize, type MysqlConnector } from '../../src/connectors/mysql';
import { isEvpubError, type EvpubError } from '../../src/errors';
import { createLogger } from '../../src/logger';
import { RecordingSink } from '../conformance/connector.suite';
import { sharedConnection, uniqueTable } from '../helpers/mariadb';
import { subscriber, tempDir } from '../helpers/publisher';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const root = path.resolve(__dirname, '../..');
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

let conn: Connection;
const tables: string[] = [];
beforeAll(async () => {
  conn = await sharedConnection();
});
afterAll(async () => {
  for (const t of tables) await conn.query(`DROP TABLE IF EXISTS \`${t}\``);
  await conn?.end();
});

async function table(): Promise<string> {
  const t = uniqueTable();
  tables.push(t);
  await conn.query(`CREATE TABLE \`${t}\` (id INT PRIMARY KEY, n INT NOT NULL)`);
  return t;
}

/** A server id for this test: explicit ones must not meet another test file's. */
function freshServerId(): number {
  return randomInt(1_000_000, 2 ** 31 - 10_000);
}

/** A connector of datasource "my" (configured models `models`), stopped after the test. */
async function connector(settings: Record<string, unknown>, models?: string[]): Promise<MysqlConnector> {
  const dataSource = {
    name: 'my',
    settings: {
      url: 'mysql://root@127.0.0.1:3306/test',
      reconnectDelay: 100,
      maxReconnectDelay: 1000,
      heartbeat: 1000,
      ...settings,
    },
    logger: createLogger({ level: process.env.EVPUB_LOG_LEVEL ?? 'silent' }),
    ...(models ? { models } : {}),
    connector: undefined as unknown,
  };
  await initialize(dataSource);
  const c = dataSource.connector as MysqlConnector;
  cleanups.push(() => c.stop());
  return c;
}

async function startOne(
  c: EventConnector,
  model: string,
  t: string,
  takeover = false,
): Promise<RecordingSink> {
  const sink = new RecordingSink();
  await c.start({ models: [{ name: model, settings: { table: t }, from: 'now' }], sink, takeover });
  return sink;
}

/** SHOW SLAVE HOSTS: server id → report host. */
async function readers(): Promise<Map<number, string>> {
  const [rows] = await conn.query<RowDataPacket[]>('SHOW SLAVE HOSTS');
  return new Map(rows.map((r) => [Number(r.Server_id), String(r.Host)]));
}

const thisProcess = new RegExp(`^evpub .+:${process.pid} #\\d+$`);

describe('mysql connector: units and server ids', () => {
  it('units(): one unit per model, in the given order', async () => {
    const c = await connector({});
    expect(c.units(['b', 'a', 'c'])).toEqual([['b'], ['a'], ['c']]);
    expect(c.units([])).toEqual([]);
  });

  it('two instances of one datasource, one model each: serverId + the configured place; both stream', async () => {
    const [ta, tb] = [await table(), await table()];
    const base = freshServerId();
    const a = await connector({ serverId: base }, ['ma', 'mb']);
    const b = await connector({ serverId: base }, ['ma', 'mb']);
    // Started with one model each, the second configured first: ids by the configured list.
    const sinkB = await startOne(b, 'mb', tb);
    const sinkA = await startOne(a, 'ma', ta);
    const listed = await readers();
    expect(listed.get(base)).toMatch(thisProcess);
    expect(listed.get(base + 1)).toMatch(thisProcess);
    await conn.query(`INSERT INTO \`${ta}\` VALUES (1, 1)`);
    await conn.query(`INSERT INTO \`${tb}\` VALUES (2, 2)`);
    await waitFor(() => sinkA.events.length === 1 && sinkB.events.length === 1, 'one change on each');
    expect(sinkA.keys()).toEqual(['1']);
    expect(sinkB.keys()).toEqual(['2']);
    expect([...sinkA.failures, ...sinkB.failures]).toEqual([]);
  });

  it('the default serverId is random per instance: two instances never share one', async () => {
    const [ta, tb] = [await table(), await table()];
    const a = await connector({}, ['ma', 'mb']);
    const b = await connector({}, ['ma', 'mb']);
    const sinkA = await startOne(a, 'ma', ta);
    const sinkB = await startOne(b, 'mb', tb);
    const ids = [a.settings.serverId, b.settings.serverId + 1];
    expect(ids[0]).not.toBe(ids[1]);
    const listed = await readers();
    for (const id of ids) expect(listed.get(id)).toMatch(thisProcess);
    await conn.query(`INSERT INTO \`${ta}\` VALUES (1, 1)`);
    await conn.query(`INSERT INTO \`${tb}\` VALUES (2, 2)`);
    await waitFor(() => sinkA.events.length === 1 && sinkB.events.length === 1, 'one change on each');
    expect([...sinkA.failures, ...sinkB.failures]).toEqual([]);
  });

  it('one process, the same id twice without takeover: the second fails, the first goes on', async () => {
    const t = await table();
    const id = freshServerId();
    const first = await connector({ serverId: id });
    const sink = await startOne(first, 'm', t);
    // A reader of this very process is waited for (it may be ending), up to connectTimeout.
    const second = await connector({ serverId: id, connectTimeout: 500 });
    const err = await startOne(second, 'm', t).catch((e: unknown) => e);
    expect(isEvpubError(err, 'EVPUB_FEED_OWNED_ELSEWHERE')).toBe(true);
    expect((err as Error).message).toContain(`the feed my/m is already read by another binlog reader`);
    expect((err as Error).message).toContain(`pid ${process.pid}`);
    await conn.query(`INSERT INTO \`${t}\` VALUES (1, 1)`);
    await waitFor(() => sink.events.length === 1, 'the change through the first');
    expect(sink.failures).toEqual([]);
  });
});

describe('mysql connector: evpub check and the server ids', () => {
  it('a configured serverId: check lists the ids another reader uses now (a warning), else ok', async () => {
    const t = await table();
    const id = freshServerId();
    const models = [
      { name: 'ma', settings: { table: t } },
      { name: 'mb', settings: { table: t } },
    ];
    const checker = await connector({ serverId: id }, ['ma', 'mb']);
    const finding = async () =>
      (await checker.check(models)).find((f) => f.what === 'binlog server ids (serverId)');
    expect(await finding()).toMatchObject({ level: 'ok', detail: `${id}..${id + 1}: none read with now` });
    const reader = await connector({ serverId: id }, ['ma', 'mb']);
    await startOne(reader, 'mb', t);
    const found = await finding();
    expect(found?.level).toBe('warning');
    expect(found?.detail).toContain(`${id + 1} (model mb) by "evpub `);
    // The default (random) serverId needs no such check.
    expect((await (await connector({})).check(models)).map((f) => f.what)).not.toContain(
      'binlog server ids (serverId)',
    );
  });
});

describe('mysql connector: a user that may not list the binlog readers', () => {
  it('the start goes on; the reader it displaces stops with FEED_OWNED_ELSEWHERE; check says what to grant', async () => {
    const user = uniqueName('u');
    await conn.query(`CREATE USER '${user}'@'%' IDENTIFIED BY 'pw'`);
    cleanups.push(() => conn.query(`DROP USER '${user}'@'%'`));
    // What the connector needs to stream, without REPLICATION MASTER ADMIN (SHOW SLAVE HOSTS).
    await conn.query(`GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO '${user}'@'%'`);
    const t = await table();
    const id = freshServerId();
    const first = await connector({ serverId: id });
    const firstSink = await startOne(first, 'm', t);

    const url = `mysql://${user}:pw@127.0.0.1:3306/test`;
    const second = await connector({ url, serverId: id });
    const finding = (await second.check([{ name: 'm', settings: { table: t } }])).find(
      (f) => f.what === 'binlog server ids (serverId)',
    );
    expect(finding).toMatchObject({ level: 'warning' });
    expect(finding?.fix).toContain(`GRANT REPLICATION MASTER ADMIN ON *.* TO '${user}'@'%'`);

    const sink = await startOne(second, 'm', t);
    await waitFor(() => firstSink.failures.length === 1, 'the displaced reader to stop');
    expect(isEvpubError(firstSink.failures[0]!.err, 'EVPUB_FEED_OWNED_ELSEWHERE')).toBe(true);
    await conn.query(`INSERT INTO \`${t}\` VALUES (1, 1)`);
    await waitFor(() => sink.events.length === 1, 'the change through the second reader');
    expect(firstSink.events).toEqual([]);
    expect(sink.failures).toEqual([]);
  });
});

/** The mysql-publisher app in a child process (Redis Streams, file checkpoints); resolves once ready. */
async function publisherProcess(args: string[]): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(root, 'test/helpers/mysql-publisher.ts'), ...args],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
  await waitFor(() => {
    if (child.exitCode !== null) throw new Error(`the publisher exited (${child.exitCode}): ${err}`);
    return out.includes('ready');
  }, 'the publisher to be ready');
  return child;
}

describe('mysql connector: a configured serverId read with by another process', () => {
  it('the second reader fails at start naming the feed and the process; the first goes on; after its kill -9 the id is free', async () => {
    const redis = await requireService('redis');
    const t = await table();
    const id = freshServerId();
    const topic = `evpub/test/${uniqueName('myunits')}`;
    const sub = await subscriber(redis, topic, { redis: { mode: 'streams' } });
    cleanups.push(() => sub.client.end());
    await sub.client.unsubscribe(topic);
    await sub.client.subscribe(topic, { durable: uniqueName('g'), from: 'earliest' });
    const dir = await tempDir('evpub-mysql-units-');
    cleanups.push(() => dir.remove());
    // Its own checkpoint directory: the checkpoint claims do not see this process, the server id does.
    const first = await publisherProcess([redis, topic, t, dir.dir, JSON.stringify({ serverId: id })]);

    const second = await connector({ serverId: id });
    const err = await startOne(second, 'm', t).catch((e: unknown) => e);
    expect(isEvpubError(err, 'EVPUB_FEED_OWNED_ELSEWHERE')).toBe(true);
    const e = err as EvpubError;
    expect(e.retriable).toBe(false);
    expect(e.message).toContain('the feed my/m is already read by another binlog reader');
    expect(e.message).toContain(`replica server id ${id}`);
    expect(e.message).toMatch(
      new RegExp(`evpub on .+, pid ${first.pid}, MySQL connection \\d+ from 127\\.0\\.0\\.1:\\d+\\)`),
    );
    expect(e.context).toMatchObject({ feed: 'my/m', serverId: id, other: { pid: first.pid } });

    await conn.query(`INSERT INTO \`${t}\` VALUES (1, 1)`);
    await waitFor(() => sub.got.length === 1, 'the change through the first process');

    // kill -9: the server may still list its reader; it is left by a gone process, no obstacle.
    first.kill('SIGKILL');
    await new Promise((resolve) => first.once('exit', resolve));
    const third = await connector({ serverId: id });
    const sink = await startOne(third, 'm', t);
    await conn.query(`INSERT INTO \`${t}\` VALUES (2, 2)`);
    await waitFor(() => sink.events.length === 1, 'the change through the new reader');
    expect(sink.keys()).toEqual(['2']);
    expect(sink.failures).toEqual([]);
  });

  it('takeover: the stale reader is displaced and stops with FEED_OWNED_ELSEWHERE; the new one streams', async () => {
    const t = await table();
    const id = freshServerId();
    const stale = await connector({ serverId: id });
    const staleSink = await startOne(stale, 'm', t);
    await conn.query(`INSERT INTO \`${t}\` VALUES (1, 1)`);
    await waitFor(() => staleSink.events.length === 1, 'the change through the stale reader');

    const owner = await connector({ serverId: id });
    const sink = await startOne(owner, 'm', t, true);
    await waitFor(() => staleSink.failures.length === 1, 'the stale reader to stop');
    const failure = staleSink.failures[0]!.err;
    expect(isEvpubError(failure, 'EVPUB_FEED_OWNED_ELSEWHERE')).toBe(true);
    expect(failure.message).toContain(`replica server id ${id}`);
    expect(stale.health().state).toBe('failed');

    await conn.query(`INSERT INTO \`${t}\` VALUES (2, 2)`);
    await waitFor(() => sink.events.length === 1, 'the change through the new owner');
    // Past the stale reader's reconnect delay: it did not come back to displace the owner.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await conn.query(`INSERT INTO \`${t}\` VALUES (3, 3)`);
    await waitFor(() => sink.events.length === 2, 'the next change through the new owner');
    expect(sink.keys()).toEqual(['2', '3']);
    expect(sink.failures).toEqual([]);
    expect(staleSink.keys()).toEqual(['1']);
    expect((await readers()).get(id)).toMatch(thisProcess);
  });
});
