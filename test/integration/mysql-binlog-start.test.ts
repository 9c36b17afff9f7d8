/**
 * Where the mysql connector starts on MariaDB when the binlog's GTID state is unusual, on a
 * private mariadbd: a brand-new binlog (no GTID written yet: `gtid_binlog_pos` is empty) and a
 * binlog whose first files were purged (the oldest one left starts after some GTIDs). The empty
 * GTID state means "from the first binlog whose Gtid_list is empty" to the server, so
 * `'beginning'` must not send it once a binlog was purged (it did: the server refused the dump
 * after start() had resolved, and the feed streamed nothing).
 */
import type { RowDataPacket } from 'mysql2';
import type { Connection } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventConnector } from '../../src/connectors/contract';
import type { StartFrom } from '../../src/events/change-event';
import { ErrorCode, isEvpubError } from '../../src/errors';
import { RecordingSink } from '../conformance/connector.suite';
import { mysqlConnector, startPrivateMariaDb, type PrivateMariaDb } from '../helpers/mariadb';
import { waitFor } from '../helpers/wait';

describe('mysql connector: where streaming starts on a new or purged MariaDB binlog', () => {
  let server: PrivateMariaDb;
  let conn: Connection;
  const running: EventConnector[] = [];

  beforeAll(async () => {
    server = await startPrivateMariaDb();
    conn = await server.connect();
    await conn.query('USE test');
  });

  afterAll(async () => {
    await Promise.all(running.map((c) => c.stop().catch(() => undefined)));
    await conn?.end().catch(() => undefined);
    await server?.close();
  });

  async function started(table: string, from: StartFrom) {
    const connector = await mysqlConnector({ url: server.url });
    running.push(connector);
    const sink = new RecordingSink();
    await connector.start({ models: [{ name: 'm', settings: { table }, from }], sink });
    return { connector, sink };
  }

  async function oldestGtidList(): Promise<string> {
    const [logs] = await conn.query<RowDataPacket[]>('SHOW BINARY LOGS');
    const [events] = await conn.query<RowDataPacket[]>(
      `SHOW BINLOG EVENTS IN '${String(logs[0]!.Log_name)}' LIMIT 5`,
    );
    return String(events.find((e) => e.Event_type === 'Gtid_list')?.Info);
  }

  it("a brand-new binlog (no GTID yet): 'now' and 'beginning' stream; 'now' marks the empty state", async () => {
    await conn.query('CREATE TABLE e (id INT PRIMARY KEY)');
    await conn.query('RESET MASTER');
    const [[pos]] = await conn.query<RowDataPacket[]>('SELECT @@GLOBAL.gtid_binlog_pos AS pos');
    expect(pos!.pos).toBe('');
    const now = await started('e', 'now');
    const beginning = await started('e', 'beginning');
    expect(now.sink.marks.map((m) => m.position)).toEqual(['{"g":""}']);
    await conn.query('INSERT INTO e VALUES (1), (2)');
    await waitFor(() => now.sink.events.length >= 2 && beginning.sink.events.length >= 2, 'both feeds');
    expect(now.sink.keys()).toEqual(['1', '2']);
    expect(beginning.sink.keys()).toEqual(['1', '2']);
    await Promise.all([now.connector.stop(), beginning.connector.stop()]);
    await conn.query('INSERT INTO e VALUES (3)');
    // Resuming after the empty state reads everything written since it was marked.
    const resumed = await started('e', { after: now.sink.marks[0]!.position });
    await waitFor(() => resumed.sink.events.length >= 3, 'the changes since the mark');
    expect(resumed.sink.keys()).toEqual(['1', '2', '3']);
    expect(resumed.sink.failures).toEqual([]);
    await resumed.connector.stop();
  });

  it("'beginning' after the first binlogs were purged streams the oldest binlog left", async () => {
    await conn.query('CREATE TABLE b (id INT PRIMARY KEY)');
    await conn.query('INSERT INTO b VALUES (1)');
    // MariaDB keeps a file crash recovery may still need, so one PURGE is not always enough.
    await waitFor(async () => {
      await conn.query('FLUSH BINARY LOGS');
      const [logs] = await conn.query<RowDataPacket[]>('SHOW BINARY LOGS');
      await conn.query(`PURGE BINARY LOGS TO '${String(logs.at(-1)!.Log_name)}'`);
      return (await oldestGtidList()) !== '[]';
    }, 'the binlogs before row 1 to be purged');
    await conn.query('INSERT INTO b VALUES (2)');
    const { connector, sink } = await started('b', 'beginning');
    await conn.query('INSERT INTO b VALUES (3)');
    await waitFor(() => sink.events.length >= 2 || sink.failures.length > 0, 'rows 2 and 3');
    expect(sink.failures.map((f) => f.err.message)).toEqual([]);
    expect(sink.keys()).toEqual(['2', '3']);
    expect(connector.health().state).toBe('streaming');
    await connector.stop();
  });

  it('a checkpoint of the empty GTID state once binlogs were purged: sink.fail at start, not silence', async () => {
    expect(await oldestGtidList()).not.toBe('[]');
    await conn.query('CREATE TABLE IF NOT EXISTS g (id INT PRIMARY KEY)');
    const { connector, sink } = await started('g', { after: '{"g":""}' });
    expect(sink.failures).toHaveLength(1);
    const err = sink.failures[0]!.err;
    expect(isEvpubError(err, ErrorCode.SOURCE_FAILED)).toBe(true);
    expect(err.message).toContain('no longer has (or never had) the binlog');
    expect(connector.health().state).toBe('failed');
  });
});
