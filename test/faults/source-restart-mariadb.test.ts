/**
 * Fault matrix: a private mariadbd (test/helpers/mariadb.ts; the shared server must never
 * restart) stopped and started again while the mysql connector streams its binlog: the
 * connector reconnects and resumes after the last row it pushed, so every row arrives once and
 * in order. The connector runs under a recording sink: the fault is the source's.
 */
import type { Connection } from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventConnector } from '../../src/connectors/contract';
import { RecordingSink } from '../conformance/connector.suite';
import { mysqlConnector, startPrivateMariaDb, type PrivateMariaDb } from '../helpers/mariadb';
import { waitFor } from '../helpers/wait';
import { countDelivery, reportRow } from './matrix';

describe('fault matrix: source restarted mid-stream (mariadb)', () => {
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

  it('survives a server restart mid-stream: reconnects and loses nothing', async () => {
    const began = Date.now();
    await conn.query('CREATE TABLE r (id INT PRIMARY KEY)');
    const { connector, sink } = await started('r', 'now');
    for (let i = 1; i <= 100; i++) await conn.query('INSERT INTO r VALUES (?)', [i]);
    await waitFor(() => sink.events.length >= 50, 'rows before the restart');
    await conn.end();
    await server.stop();
    await waitFor(() => sink.statuses.some((s) => s.type === 'reconnecting'), 'the connector to notice');
    await server.start();
    conn = await server.connect();
    await conn.query('USE test');
    for (let i = 101; i <= 200; i++) await conn.query('INSERT INTO r VALUES (?)', [i]);
    await waitFor(() => sink.events.length >= 200, 'all 200 rows', 30_000);
    expect(sink.keys()).toEqual(Array.from({ length: 200 }, (_, i) => String(i + 1)));
    expect(connector.health().state).toBe('streaming');
    const row = reportRow({
      fault: 'source restarted (mariadbd SIGTERM, start)',
      source: 'mariadb',
      broker: '— (connector → sink)',
      ...countDelivery(
        Array.from({ length: 200 }, (_, i) => String(i + 1)),
        sink.keys(),
      ),
      seconds: (Date.now() - began) / 1000,
    });
    expect(row.lost).toBe(0);
    await connector.stop();
  });
});
