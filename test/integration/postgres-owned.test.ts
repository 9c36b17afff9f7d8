/**
 * Without `cluster`, one process reads a replication slot: a second one finding the slot active
 * for another backend fails start() at once with EVPUB_FEED_OWNED_ELSEWHERE naming the slot,
 * the feeds and the other process (its application_name, pid and address), and the first one
 * keeps publishing, each change once.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LogicalReplicationService, PgoutputPlugin } from 'pg-logical-replication';
import { RecordingSink } from '../conformance/connector.suite';
import type { PostgresConnector } from '../../src/connectors/postgres/index';
import { APPLICATION_NAME } from '../../src/connectors/postgres/settings';
import { isEvpubError, type EvpubError } from '../../src/errors';
import { PgFixture, PG_URL, sql } from '../helpers/postgres';
import { requireService } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  const errors: unknown[] = [];
  for (const f of cleanup.splice(0).reverse()) await f().catch((err: unknown) => errors.push(err));
  if (errors.length > 0) throw errors[0];
});

beforeAll(async () => {
  await requireService('postgres');
});

function fixture(): PgFixture {
  const f = new PgFixture();
  cleanup.push(() => f.drop());
  return f;
}

function track(c: PostgresConnector): PostgresConnector {
  cleanup.push(() => c.stop());
  return c;
}

describe('postgres: a slot read by another process', () => {
  it('another process (not this one) holding the slot: start fails at once, naming it', async () => {
    const f = fixture();
    const t = await f.table();
    await f.slots(1);
    // A real other reader: a walsender streaming the slot under another evpub's name.
    const holder = new LogicalReplicationService(
      { connectionString: PG_URL, application_name: 'evpub otherhost:4242' },
      { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: false } },
    );
    holder.on('error', () => undefined);
    const started = new Promise<void>((resolve) => holder.once('start', () => resolve()));
    void holder
      .subscribe(new PgoutputPlugin({ protoVersion: 1, publicationNames: [f.publication] }), f.slot, '0/0')
      .catch(() => undefined);
    cleanup.push(async () => void (await holder.stop()));
    await started;

    // connectTimeout is long: the refusal must not wait for it (the holder is not this process).
    const c = track(await f.connector({ connectTimeout: 60_000 }));
    const err = await c
      .start({ models: [{ name: t, settings: {}, from: 'now' }], sink: new RecordingSink() })
      .catch((e: unknown) => e);
    expect(isEvpubError(err, 'EVPUB_FEED_OWNED_ELSEWHERE')).toBe(true);
    const e = err as EvpubError;
    expect(e.retriable).toBe(false);
    expect(e.message).toContain(`the feed ${t} is already read by another process`);
    expect(e.message).toContain(`replication slot "${f.slot}"`);
    expect(e.message).toContain('"evpub otherhost:4242"');
    expect(e.message).toMatch(/backend pid \d+, from 127\.0\.0\.1/);
    expect(e.context).toMatchObject({ slot: f.slot, feeds: [t], application: 'evpub otherhost:4242' });
  });

  it('two connectors on one slot: the second fails with the code, the first publishes each change once', async () => {
    const f = fixture();
    const t = await f.table();
    const first = track(await f.connector());
    const sink = new RecordingSink();
    await first.start({ models: [{ name: t, settings: {}, from: 'now' }], sink });
    await sql(`INSERT INTO ${t} VALUES ('a', 1)`);
    await waitFor(() => sink.events.length === 1, 'the first change');

    const second = track(await f.connector({ connectTimeout: 500 }));
    const other = new RecordingSink();
    const err = await second
      .start({ models: [{ name: t, settings: {}, from: 'now' }], sink: other })
      .catch((e: unknown) => e);
    expect(isEvpubError(err, 'EVPUB_FEED_OWNED_ELSEWHERE')).toBe(true);
    // The first connector's connection names this process: `evpub <host>:<pid>`.
    expect((err as Error).message).toContain(`"${APPLICATION_NAME}"`);

    await sql(`INSERT INTO ${t} VALUES ('b', 2)`);
    await waitFor(() => sink.events.length === 2, 'the second change');
    expect(sink.failures).toEqual([]);
    expect(other.events).toEqual([]);
    expect(sink.events.map((ev) => ev.key)).toEqual(['a', 'b']);
  });

  it('a restart of the same connector waits for its own ending walsender', async () => {
    const f = fixture();
    const t = await f.table();
    const c = track(await f.connector());
    await c.start({ models: [{ name: t, settings: {}, from: 'now' }], sink: new RecordingSink() });
    await c.stop();
    const again = track(await f.connector());
    const sink = new RecordingSink();
    await again.start({ models: [{ name: t, settings: {}, from: 'now' }], sink });
    await sql(`INSERT INTO ${t} VALUES ('c', 3)`);
    await waitFor(() => sink.events.length === 1, 'the change after the restart');
  });
});
