/**
 * examples/loopback4-accounts run as a user runs it: built with its own tsconfig (tsc, for
 * LoopBack's decorator metadata), started as a child process (`node dist/index.js`) on the
 * shared PostgreSQL and Mosquitto, driven over HTTP with plain fetch.
 *
 * Each run has its own table (hence outbox, slot, publication, checkpoint table) and topic,
 * through the example's environment variables; everything is dropped at the end.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/pubsub/client';
import { subscriber, type Received } from '../helpers/publisher';
import { dropSlotWhenFree, sql } from '../helpers/postgres';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';
import { mosquittoSub } from '../loopback/helpers';

const ROOT = path.resolve(__dirname, '../..');
const EXAMPLE = path.join(ROOT, 'examples/loopback4-accounts');
const run = promisify(execFile);

interface AppProcess {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<number | string>;
  /** The first stdout line starting with `prefix`, without it (waits for it). */
  line(prefix: string): Promise<string>;
}

function startApp(env: Record<string, string>): AppProcess {
  const child = spawn(process.execPath, ['dist/index.js'], {
    cwd: EXAMPLE,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let gone = false;
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => {
      gone = true;
      resolve(code ?? signal ?? -1);
    }),
  );
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    line: async (prefix) =>
      (await waitFor(
        () => {
          const found = stdout.split('\n').find((l) => l.startsWith(prefix));
          if (found !== undefined) return found.slice(prefix.length).trim();
          if (gone) throw new Error(`the example exited before printing "${prefix}":\n${stdout}\n${stderr}`);
          return undefined;
        },
        `"${prefix}" from the example`,
        // Creating the replication slot waits for every transaction open on the server to end:
        // other test files' long transactions on the shared PostgreSQL can hold the start back.
        90_000,
      ))!,
  };
}

interface CloudEvent {
  specversion: string;
  id: string;
  type: string;
  source: string;
  subject: string;
  time: string;
  data: {
    op: string;
    key: string;
    before: Record<string, unknown> | null;
    after: Record<string, unknown> | null;
  };
}

const table = uniqueName('acct');
const prefix = uniqueName('bank');
const topic = `${prefix}/accounts/{op}/{key}`;
let app: AppProcess | undefined;
let events: { client: Client; got: Received[] } | undefined;
let mosq: { proc: ChildProcess; lines: string[] } | undefined;
let env: Record<string, string> = {};
let api = '';
let management = '';

/** The CloudEvents received for `key` (in arrival order). */
const eventsOf = (key: string | number): CloudEvent[] =>
  events!.got.filter((m) => m.topic.endsWith(`/${key}`)).map((m) => m.json as unknown as CloudEvent);

async function waitForEvents(key: string | number, n: number): Promise<CloudEvent[]> {
  const got = await waitFor(() => {
    const all = eventsOf(key);
    return all.length >= n ? all : undefined;
  }, `${n} event(s) for account ${key}`);
  return got!;
}

async function http(method: string, url: string, body?: unknown): Promise<Response> {
  return fetch(url, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

beforeAll(async () => {
  const pgUrl = await requireService('postgres');
  const mqttUrl = await requireService('mosquitto');
  if (!existsSync(path.join(ROOT, 'dist/loopback/index.js'))) {
    throw new Error('dist/ is missing: the example imports the built evpub/loopback; run `npm run build`');
  }
  // The example's own build (tsc: LoopBack reads the decorator metadata esbuild does not emit).
  await run(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', EXAMPLE]);

  events = await subscriber(mqttUrl, `${prefix}/#`);
  mosq = await mosquittoSub(`${prefix}/#`, { verbose: true });
  env = {
    DATABASE_URL: pgUrl,
    MQTT_URL: mqttUrl,
    PORT: '0',
    EVPUB_HTTP_PORT: '0',
    ACCOUNTS_TABLE: table,
    ACCOUNTS_TOPIC: topic,
  };
  app = startApp(env);
  api = (await app.line('REST API:')).split(' ')[0]!.replace(/\/accounts$/, '');
  management = (await app.line('evpub management API:')).split(' ')[0]!;
}, 150_000);

afterAll(async () => {
  if (app && app.child.exitCode === null && app.child.signalCode === null) app.child.kill('SIGKILL');
  await app?.exited;
  mosq?.proc.kill('SIGKILL');
  await events?.client.end();
  await dropSlotWhenFree(`evpub_${table}`);
  await sql(`DROP PUBLICATION IF EXISTS evpub_${table}`);
  await sql(
    `DROP TABLE IF EXISTS ${table}, ${table}_outbox, ${table}_checkpoints, ${table}_checkpoints_owners CASCADE`,
  );
  await sql(`DROP FUNCTION IF EXISTS ${table}_changed(), ${table}_outboxed()`);
});

describe('examples/loopback4-accounts: REST CRUD over PostgreSQL, every change published to MQTT', () => {
  let id = 0;

  it('POST /accounts publishes a create CloudEvent (evpub subscriber and mosquitto_sub)', async () => {
    const res = await http('POST', `${api}/accounts`, {
      owner: 'Ann',
      email: 'ann@example.com',
      balance: 100,
    });
    expect(res.status).toBe(200);
    const account = (await res.json()) as { id: number };
    id = account.id;
    expect(account).toEqual({ id, owner: 'Ann', email: 'ann@example.com', balance: 100 });

    const [created] = await waitForEvents(id, 1);
    expect(created).toMatchObject({
      specversion: '1.0',
      type: 'evpub.Account.create',
      subject: String(id),
      data: { op: 'create', key: String(id), before: null, after: account },
    });
    const expectedTopic = `${prefix}/accounts/create/${id}`;
    await waitFor(() => mosq!.lines.some((l) => l.startsWith(`${expectedTopic} `)), 'mosquitto_sub');
    const line = mosq!.lines.find((l) => l.startsWith(`${expectedTopic} `))!;
    expect(JSON.parse(line.slice(expectedTopic.length + 1))).toEqual(created);
  });

  it('PATCH publishes an update with the changed field, PUT another, DELETE a delete', async () => {
    expect((await http('PATCH', `${api}/accounts/${id}`, { balance: 150 })).status).toBe(204);
    const [, patched] = await waitForEvents(id, 2);
    expect(patched).toMatchObject({
      type: 'evpub.Account.update',
      data: { op: 'update', before: { balance: 100 }, after: { id, owner: 'Ann', balance: 150 } },
    });

    const replacement = { owner: 'Ann Lee', email: 'ann.lee@example.com', balance: 150 };
    expect((await http('PUT', `${api}/accounts/${id}`, replacement)).status).toBe(204);
    const [, , replaced] = await waitForEvents(id, 3);
    expect(replaced).toMatchObject({ type: 'evpub.Account.update', data: { after: { id, ...replacement } } });

    expect((await http('DELETE', `${api}/accounts/${id}`)).status).toBe(204);
    const [, , , deleted] = await waitForEvents(id, 4);
    expect(deleted).toMatchObject({
      type: 'evpub.Account.delete',
      subject: String(id),
      data: { op: 'delete', before: { id, ...replacement }, after: null },
    });
    expect((await http('GET', `${api}/accounts/${id}`)).status).toBe(404);
    // One event per write: no path published a write twice.
    expect(eventsOf(id).map((e) => e.data.op)).toEqual(['create', 'update', 'update', 'delete']);

    // The example's @subscribe consumer received the same four from MQTT and logged them.
    const logged = () =>
      app!
        .stdout()
        .split('\n')
        .filter((l) => l.includes(` account ${id} balance `));
    await waitFor(() => logged().length === 4, "the consumer's four lines");
    expect(logged().map((l) => l.split(' ')[2])).toEqual([
      'evpub.Account.create',
      'evpub.Account.update',
      'evpub.Account.update',
      'evpub.Account.delete',
    ]);
  });

  it('a change made directly in PostgreSQL arrives in the same envelope, once', async () => {
    const [row] = await sql<{ id: number }>(
      `INSERT INTO ${table} (owner, email, balance) VALUES ('Bob', 'bob@example.com', 7) RETURNING id`,
    );
    const key = row!.id;
    await sql(`UPDATE ${table} SET balance = balance + 1 WHERE id = $1`, [key]);
    await sql(`DELETE FROM ${table} WHERE id = $1`, [key]);
    const [created, updated, deleted] = await waitForEvents(key, 3);
    const bob = { id: key, owner: 'Bob', email: 'bob@example.com', balance: 7 };
    expect(created).toMatchObject({ type: 'evpub.Account.create', data: { before: null, after: bob } });
    expect(updated).toMatchObject({
      type: 'evpub.Account.update',
      data: { before: bob, after: { ...bob, balance: 8 } },
    });
    expect(deleted).toMatchObject({ type: 'evpub.Account.delete', data: { after: null } });
    // The shape of a REST write's event: same attributes, same data keys, same source.
    const rest = eventsOf(id)[0]!;
    for (const e of [created!, updated!, deleted!]) {
      expect(Object.keys(e).sort()).toEqual(Object.keys(rest).sort());
      expect(Object.keys(e.data).sort()).toEqual(Object.keys(rest.data).sort());
      expect(e.source).toBe(rest.source);
    }
    // A rolled-back change publishes nothing (checked after a later committed one arrived).
    await sql(`BEGIN; INSERT INTO ${table} (owner, email) VALUES ('Nobody', 'no@example.com'); ROLLBACK`);
    const [after] = await sql<{ id: number }>(
      `INSERT INTO ${table} (owner, email) VALUES ('Cy', 'cy@example.com') RETURNING id`,
    );
    await waitForEvents(after!.id, 1);
    expect(
      events!.got.filter((m) => (m.json as unknown as CloudEvent).data.after?.owner === 'Nobody'),
    ).toEqual([]);
    expect(eventsOf(key)).toHaveLength(3);
  });

  it("serves evpub's management API beside the REST API", async () => {
    const health = await fetch(`${management}/health`);
    expect(health.status).toBe(200);
    const feeds = await (await fetch(`${management}/api/feeds`)).json();
    expect(JSON.stringify(feeds)).toContain('Account');
    const metrics = await (await fetch(`${management}/metrics`)).text();
    expect(metrics).toContain('evpub_');
  });

  it('SIGTERM stops the application (evpub drains and checkpoints) and the process exits 0', async () => {
    const lsn = (position: string): bigint => {
      const [hi, lo] = position.split('#')[0]!.split('/');
      return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
    };
    const positions = events!.got.map((m) => lsn((m.json as { data: { position: string } }).data.position));
    const last = positions.reduce((a, b) => (b > a ? b : a), 0n);
    app!.child.kill('SIGTERM');
    expect(await app!.exited).toBe(0);
    expect(app!.stdout()).toContain('stopped');
    // Every event published is behind the checkpoint saved: a restart publishes none of them again.
    const [saved] = await sql<{ position: string }>(
      `SELECT position FROM ${table}_checkpoints WHERE feed_id = 'events/Account'`,
    );
    expect(lsn(saved!.position)).toBeGreaterThanOrEqual(last);
  });

  it('a change made while the application is down is published at the next start, once', async () => {
    expect(app!.child.exitCode).toBe(0); // stopped by the case above
    const [row] = await sql<{ id: number }>(
      `INSERT INTO ${table} (owner, email, balance) VALUES ('Dee', 'dee@example.com', 3) RETURNING id`,
    );
    const before = events!.got.length;
    app = startApp(env);
    await app.line('evpub management API:');
    const [created] = await waitForEvents(row!.id, 1);
    expect(created).toMatchObject({ type: 'evpub.Account.create', data: { after: { owner: 'Dee' } } });
    // Nothing published before the stop came again (the checkpoint was past it).
    await sql(`UPDATE ${table} SET balance = 4 WHERE id = $1`, [row!.id]);
    await waitForEvents(row!.id, 2);
    expect(events!.got.length - before).toBe(2);
    app.child.kill('SIGTERM');
    expect(await app.exited).toBe(0);
  });
});
