/**
 * Takeover of a replication slot (contract point 11): a connector started with `takeover: true`
 * (its instance holds the unit's lease) ends the backend of another process still reading the
 * slot (a stale owner: here a real evpub connector process, paused with SIGSTOP, whose
 * connection stays open), says so in a warning naming it, and streams. A role that may not end
 * that backend fails with EVPUB_FEED_OWNED_ELSEWHERE naming the grant. (Without takeover a busy
 * slot fails start: postgres-owned.test.ts.)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { hostname } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { LogicalReplicationService, PgoutputPlugin } from 'pg-logical-replication';
import pino from 'pino';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { initialize, type PostgresConnector } from '../../src/connectors/postgres/index';
import { APPLICATION_NAME } from '../../src/connectors/postgres/settings';
import { isEvpubError, type EvpubError } from '../../src/errors';
import { RecordingSink } from '../conformance/connector.suite';
import { PgFixture, PG_URL, sql } from '../helpers/postgres';
import { requireService, uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const ROOT = path.resolve(__dirname, '../..');

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  const errors: unknown[] = [];
  for (const f of cleanup.splice(0).reverse()) await f().catch((err: unknown) => errors.push(err));
  if (errors.length > 0) throw errors[0];
});

beforeAll(async () => {
  await requireService('postgres');
});

function fixture(url?: string): PgFixture {
  const f = new PgFixture(url);
  cleanup.push(() => f.drop());
  return f;
}

/** A postgres connector whose warnings (and worse) are kept, as JSON lines, in `logs`. */
async function connector(
  f: PgFixture,
  settings: Record<string, unknown> = {},
): Promise<{ c: PostgresConnector; logs: string[] }> {
  const logs: string[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, done) {
      logs.push(chunk.toString());
      done();
    },
  });
  const dataSource = {
    name: 'pg',
    settings: {
      url: PG_URL,
      slot: f.slot,
      publication: f.publication,
      reconnectDelay: 50,
      maxReconnectDelay: 500,
      ...settings,
    },
    logger: pino({ level: 'warn' }, out),
    connector: undefined as unknown,
  };
  await initialize(dataSource);
  const c = dataSource.connector as PostgresConnector;
  cleanup.push(() => c.stop());
  return { c, logs };
}

/** The reader process (test/helpers/pg-reader.ts): prints `ready`, then `event <key> <position>`. */
function reader(f: PgFixture, table: string): { child: ChildProcess; out(): string } {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(ROOT, 'test/helpers/pg-reader.ts'), PG_URL, f.slot, f.publication, table],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (out += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  cleanup.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
    }
    await exited;
  });
  return { child, out: () => out };
}

async function slotReader(slot: string): Promise<{ pid: number | null; app: string | null }> {
  const rows = await sql<{ pid: number | null; app: string | null }>(
    `SELECT s.active_pid AS pid, a.application_name AS app
       FROM pg_replication_slots s LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid WHERE s.slot_name = $1`,
    [slot],
  );
  return rows[0]!;
}

describe('postgres: takeover of a slot from a stale owner', () => {
  it('a paused process holding the slot: its backend is ended, the new owner streams from its checkpoint', async () => {
    const f = fixture();
    const t = await f.table();
    await f.slots(1);
    const a = reader(f, t);
    await waitFor(() => a.out().includes('ready'), 'the reader process to stream', 30_000);
    await sql(`INSERT INTO ${t} VALUES ('a1', 1)`);
    const seen = await waitFor(
      () => /^event a1 (\S+)$/m.exec(a.out())?.[1],
      'a1 read by the reader process',
      30_000,
    );
    const checkpoint = seen!; // as if the old owner had published a1 and checkpointed it
    const old = await slotReader(f.slot);
    expect(old.app).toBe(`evpub ${hostname()}:${a.child.pid}`.slice(0, 63));

    a.child.kill('SIGSTOP'); // paused past its deadline: its connection stays open
    await sql(`INSERT INTO ${t} VALUES ('b1', 2)`);

    const { c, logs } = await connector(f, { connectTimeout: 15_000 });
    const sink = new RecordingSink();
    await c.start({ models: [{ name: t, settings: {}, from: { after: checkpoint } }], sink, takeover: true });

    // The old reader's backend is gone; the slot is read by this process's connection.
    await waitFor(
      async () => (await sql('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [old.pid])).length === 0,
      "the old reader's backend to end",
    );
    const now = await slotReader(f.slot);
    expect(now.app).toBe(APPLICATION_NAME);
    expect(now.pid).not.toBe(old.pid);

    await sql(`INSERT INTO ${t} VALUES ('c1', 3)`);
    await waitFor(() => sink.keys().includes('c1'), 'the change made after the takeover');
    // What the paused owner read but had not checkpointed (b1) is read again; a1 is not.
    expect(sink.keys()).toEqual(['b1', 'c1']);
    expect(sink.failures).toEqual([]);

    const warning = logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.level === 40);
    expect(warning?.msg).toContain(`takeover: the replication slot "${f.slot}"`);
    expect(warning?.msg).toContain(`"evpub ${hostname()}:${a.child.pid}`);
    expect(warning?.msg).toContain(`backend pid ${old.pid}`);
    expect(warning?.msg).toMatch(/from 127\.0\.0\.1/);
    expect(warning).toMatchObject({ backendPid: old.pid, application: old.app, clientAddr: '127.0.0.1' });

    // Resumed, the old process cannot get the slot back: the new owner keeps streaming.
    a.child.kill('SIGCONT');
    await sql(`INSERT INTO ${t} VALUES ('d1', 4)`);
    await waitFor(() => sink.keys().includes('d1'), 'a change after the old owner resumed');
    // (b1 may have reached its socket before the pause; c1 and d1 were sent to the new owner only.)
    expect(a.out()).not.toMatch(/^event [cd]1 /m);
    expect((await slotReader(f.slot)).app).toBe(APPLICATION_NAME);
  });

  it('a reader that took the slot while the owner was reconnecting is ended on reconnect', async () => {
    const f = fixture();
    const t = await f.table();
    await f.slots(1);
    // A long back-off, so that the other reader gets in while the owner waits to reconnect.
    const { c, logs } = await connector(f, { reconnectDelay: 1500, maxReconnectDelay: 1500 });
    const sink = new RecordingSink();
    await c.start({ models: [{ name: t, settings: {}, from: 'now' }], sink, takeover: true });
    await sql(`INSERT INTO ${t} VALUES ('x1', 1)`);
    await waitFor(() => sink.keys().includes('x1'), 'x1');

    await sql('SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1', [
      f.slot,
    ]);
    await waitFor(async () => (await slotReader(f.slot)).pid === null, 'the slot to be free');
    const other = new LogicalReplicationService(
      { connectionString: PG_URL, application_name: 'evpub otherhost:4242' },
      { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: false } },
    );
    other.on('error', () => undefined);
    const started = new Promise<void>((resolve) => other.once('start', () => resolve()));
    void other
      .subscribe(new PgoutputPlugin({ protoVersion: 1, publicationNames: [f.publication] }), f.slot, '0/0')
      .catch(() => undefined);
    cleanup.push(async () => void (await other.stop()));
    await started;
    const stale = await slotReader(f.slot);
    expect(stale.app).toBe('evpub otherhost:4242');

    await waitFor(
      async () => (await slotReader(f.slot)).app === APPLICATION_NAME,
      'the owner to take the slot back',
    );
    await sql(`INSERT INTO ${t} VALUES ('x2', 2)`);
    await waitFor(() => sink.keys().includes('x2'), 'x2 after the reconnect');
    expect(sink.keys()).toEqual(['x1', 'x2']);
    expect(sink.failures).toEqual([]);
    const warnings = logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.level === 40);
    expect(warnings.some((w) => w.backendPid === stale.pid && w.application === 'evpub otherhost:4242')).toBe(
      true,
    );
  });

  it('a role that may not end the other backend: EVPUB_FEED_OWNED_ELSEWHERE naming the grant', async () => {
    const holderRole = uniqueName('r_holder');
    const takerRole = uniqueName('r_taker');
    for (const role of [holderRole, takerRole]) {
      await sql(`CREATE ROLE ${role} LOGIN REPLICATION`);
      cleanup.push(async () => void (await sql(`DROP ROLE IF EXISTS ${role}`)));
    }
    const f = fixture();
    const t = await f.table();
    await f.slots(1);
    const roleUrl = (role: string): string => PG_URL.replace('postgres://postgres@', `postgres://${role}@`);
    const holder = new LogicalReplicationService(
      { connectionString: roleUrl(holderRole), application_name: 'evpub otherhost:4242' },
      { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: false } },
    );
    holder.on('error', () => undefined);
    const started = new Promise<void>((resolve) => holder.once('start', () => resolve()));
    void holder
      .subscribe(new PgoutputPlugin({ protoVersion: 1, publicationNames: [f.publication] }), f.slot, '0/0')
      .catch(() => undefined);
    cleanup.push(async () => void (await holder.stop()));
    await started;
    const before = await slotReader(f.slot);

    const { c } = await connector(f, { url: roleUrl(takerRole), connectTimeout: 60_000 });
    const err = await c
      .start({ models: [{ name: t, settings: {}, from: 'now' }], sink: new RecordingSink(), takeover: true })
      .catch((e: unknown) => e);
    expect(isEvpubError(err, 'EVPUB_FEED_OWNED_ELSEWHERE')).toBe(true);
    const e = err as EvpubError;
    expect(e.retriable).toBe(false);
    expect(e.message).toContain(`cannot take over the replication slot "${f.slot}"`);
    expect(e.message).toContain('"evpub otherhost:4242"');
    expect(e.message).toContain(`The role "${takerRole}" needs to be able to signal the other backend`);
    expect(e.message).toContain(`("${holderRole}")`);
    expect(e.message).toContain(`GRANT pg_signal_backend TO "${takerRole}"`);
    // The holder still reads the slot.
    expect(await slotReader(f.slot)).toEqual(before);
  });
});
