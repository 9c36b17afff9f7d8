/**
 * Fault matrix: the mysql connector's connection to the shared MariaDB cut by a TCP proxy
 * mid-stream (every open connection destroyed, new ones refused until the proxy listens
 * again); rows are written meanwhile. The connector reconnects and resumes after the last row
 * it pushed: every row once, in order. The connector runs under a recording sink: the fault is
 * the source's.
 */
import type { Connection } from 'mysql2/promise';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EventConnector } from '../../src/connectors/contract';
import { RecordingSink } from '../conformance/connector.suite';
import { mysqlConnector, sharedConnection, uniqueTable } from '../helpers/mariadb';
import { startTcpProxy } from '../helpers/tcp-proxy';
import { waitFor } from '../helpers/wait';
import { countDelivery, reportRow } from './matrix';

let conn: Connection;
const tables: string[] = [];
const running: EventConnector[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  conn = await sharedConnection();
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((c) => c.stop().catch(() => undefined)));
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

afterAll(async () => {
  for (const t of tables) await conn.query(`DROP TABLE IF EXISTS \`${t}\``);
  await conn?.end();
});

async function table(columns: string): Promise<string> {
  const name = uniqueTable();
  tables.push(name);
  await conn.query(`CREATE TABLE \`${name}\` (${columns})`);
  return name;
}

describe('fault matrix: the connection to the source cut mid-stream (mariadb)', () => {
  it('reconnects after a connection cut and resumes from the last row pushed: nothing lost, nothing repeated', async () => {
    const began = Date.now();
    const name = await table('id INT PRIMARY KEY');
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: 3306 });
    cleanups.push(() => proxy.close());
    const connector = await mysqlConnector({ url: `mysql://root@127.0.0.1:${proxy.port}/test` });
    running.push(connector);
    const sink = new RecordingSink();
    await connector.start({ models: [{ name: 'm', settings: { table: name }, from: 'now' }], sink });
    let next = 1;
    const write = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) await conn.query(`INSERT INTO \`${name}\` VALUES (?)`, [next++]);
    };
    await write(50);
    await waitFor(() => sink.events.length >= 20, 'the first rows');
    await proxy.stop();
    await write(50);
    await waitFor(() => sink.statuses.some((s) => s.type === 'reconnecting'), 'a reconnect attempt');
    expect(connector.health().state).toBe('reconnecting');
    await proxy.start();
    await write(50);
    await waitFor(() => sink.events.length >= 150, 'all 150 rows', 30_000);
    expect(sink.keys()).toEqual(Array.from({ length: 150 }, (_, i) => String(i + 1)));
    expect(connector.health().state).toBe('streaming');
    const row = reportRow({
      fault: 'source connection cut (tcp proxy)',
      source: 'mariadb',
      broker: '— (connector → sink)',
      ...countDelivery(
        Array.from({ length: 150 }, (_, i) => String(i + 1)),
        sink.keys(),
      ),
      seconds: (Date.now() - began) / 1000,
    });
    expect(row.lost).toBe(0);
  });
});
