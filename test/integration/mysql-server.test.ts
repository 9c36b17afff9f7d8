/**
 * The mysql connector against private mariadbd processes (own port and temp datadir), for what
 * the shared server must never see: purged binlogs, binary logging off, a binlog format other
 * than ROW, binlog filters. (A server restart mid-stream is a case of the fault matrix:
 * test/faults/source-restart-mariadb.test.ts.)
 */
import type { RowDataPacket } from 'mysql2';
import type { Connection } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventConnector } from '../../src/connectors/contract';
import { ErrorCode, isEvpubError } from '../../src/errors';
import { RecordingSink } from '../conformance/connector.suite';
import { mysqlConnector, startPrivateMariaDb, type PrivateMariaDb } from '../helpers/mariadb';
import { waitFor } from '../helpers/wait';

describe('mysql connector (private mariadbd)', () => {
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

  async function started(table: string, from: 'now' | { after: string }) {
    const connector = await mysqlConnector({ url: server.url });
    running.push(connector);
    const sink = new RecordingSink();
    await connector.start({ models: [{ name: 'm', settings: { table }, from }], sink });
    return { connector, sink };
  }

  it('a checkpoint whose binlog was purged: sink.fail with the fix, never a silent skip', async () => {
    await conn.query('CREATE TABLE p (id INT PRIMARY KEY)');
    const first = await started('p', 'now');
    await conn.query('INSERT INTO p VALUES (1)');
    await waitFor(() => first.sink.events.length === 1, 'the first row');
    await first.connector.stop();
    const checkpoint = first.sink.events[0]!.position!;
    await conn.query('INSERT INTO p VALUES (2)');
    // Purge until the oldest binlog starts after the checkpoint's transaction (MariaDB keeps a
    // file while crash recovery may still need it, so one PURGE is not always enough).
    const checkpointSeq = Number(/-(\d+)"/.exec(checkpoint)![1]);
    let id = 10;
    await waitFor(async () => {
      await conn.query('INSERT INTO p VALUES (?)', [id++]);
      await conn.query('FLUSH BINARY LOGS');
      const [logs] = await conn.query<RowDataPacket[]>('SHOW BINARY LOGS');
      await conn.query(`PURGE BINARY LOGS TO '${String(logs.at(-1)!.Log_name)}'`);
      const [left] = await conn.query<RowDataPacket[]>('SHOW BINARY LOGS');
      const [events] = await conn.query<RowDataPacket[]>(
        `SHOW BINLOG EVENTS IN '${String(left[0]!.Log_name)}' LIMIT 3`,
      );
      const list = events.find((e) => e.Event_type === 'Gtid_list');
      return Number(/-(\d+)\]/.exec(String(list?.Info))?.[1] ?? 0) > checkpointSeq;
    }, "the checkpoint's binlog to be purged");
    const second = await started('p', { after: checkpoint });
    expect(second.sink.failures).toHaveLength(1);
    const err = second.sink.failures[0]!.err;
    expect(isEvpubError(err, ErrorCode.SOURCE_FAILED)).toBe(true);
    expect(err.message).toContain('no longer has (or never had) the binlog');
    expect(err.message).toContain('binlog_expire_logs_seconds');
    expect(second.sink.events).toEqual([]);
    expect(second.connector.health().state).toBe('failed');
  });

  it('binlog_format other than ROW: start() rejects naming the setting', async () => {
    await conn.query('CREATE TABLE f (id INT PRIMARY KEY)');
    await conn.query("SET GLOBAL binlog_format = 'STATEMENT'");
    try {
      const connector = await mysqlConnector({ url: server.url });
      running.push(connector);
      const err = await connector
        .start({ models: [{ name: 'm', settings: { table: 'f' }, from: 'now' }], sink: new RecordingSink() })
        .catch((e: unknown) => e);
      expect(isEvpubError(err, ErrorCode.SOURCE_FAILED)).toBe(true);
      expect((err as Error).message).toContain('binlog_format is STATEMENT');
      expect((err as Error).message).toContain('binlog_format=ROW');
    } finally {
      await conn.query("SET GLOBAL binlog_format = 'ROW'");
    }
  });

  it('binary logging off: start() rejects naming log_bin', async () => {
    const plain = await startPrivateMariaDb({ binlog: false });
    try {
      const c = await plain.connect();
      await c.query('CREATE TABLE test.o (id INT PRIMARY KEY)');
      await c.end();
      const connector = await mysqlConnector({ url: plain.url });
      running.push(connector);
      const err = await connector
        .start({ models: [{ name: 'm', settings: { table: 'o' }, from: 'now' }], sink: new RecordingSink() })
        .catch((e: unknown) => e);
      expect(isEvpubError(err, ErrorCode.SOURCE_FAILED)).toBe(true);
      expect((err as Error).message).toContain('binary logging is off');
      expect((err as Error).message).toContain('log_bin');
    } finally {
      await plain.close();
    }
  });

  it('a snapshot signal table the server keeps out of its binlog: start() rejects naming signalTable', async () => {
    const filtered = await startPrivateMariaDb({ args: ['--binlog-ignore-db=ops'] });
    try {
      const c = await filtered.connect();
      await c.query('CREATE DATABASE ops');
      await c.query('CREATE TABLE test.o (id INT PRIMARY KEY)');
      await c.query('CREATE TABLE ops.sig (id VARCHAR(255) PRIMARY KEY, watermark VARCHAR(64) NOT NULL)');
      await c.end();
      const connector = await mysqlConnector({
        url: filtered.url,
        snapshot: 'initial',
        signalTable: 'ops.sig',
      });
      running.push(connector);
      const err = await connector
        .start({ models: [{ name: 'm', settings: { table: 'o' }, from: 'now' }], sink: new RecordingSink() })
        .catch((e: unknown) => e);
      expect(isEvpubError(err, ErrorCode.CONFIG_INVALID)).toBe(true);
      expect((err as Error).message).toContain('signalTable');
      expect((err as Error).message).toContain('binlog_ignore_db: ops');
    } finally {
      await filtered.close();
    }
  });
});
