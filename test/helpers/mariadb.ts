/**
 * MariaDB for the mysql connector tests: a connection to the shared server (unique tables,
 * dropped after), and a private `mariadbd` (its own free port and temp datadir) for tests that
 * restart the server, purge its binlogs or change its settings, which the shared one must never see.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import type { Connection } from 'mysql2/promise';
import { createLogger } from '../../src/logger';
import type { EventConnector } from '../../src/connectors/contract';
import { initialize } from '../../src/connectors/mysql';
import { freePort, requireService, uniqueName } from './services';
import { waitFor } from './wait';

export const SHARED_URL = 'mysql://root@127.0.0.1:3306/test';

/** A query connection to the shared MariaDB (fails with the start command when it is down). */
export async function sharedConnection(): Promise<Connection> {
  await requireService('mariadb');
  return mysql.createConnection({ host: '127.0.0.1', port: 3306, user: 'root', database: 'test' });
}

/**
 * Creates the snapshot signal table (default name `evpub_signal`) in the shared server's `test`
 * database if it is missing. It is shared by concurrent tests (each writes its own row) and
 * never dropped.
 */
export async function ensureSignalTable(conn: Connection, table = 'evpub_signal'): Promise<void> {
  await conn.query(
    `CREATE TABLE IF NOT EXISTS test.\`${table}\` (id VARCHAR(255) PRIMARY KEY, watermark VARCHAR(64) NOT NULL)`,
  );
}

/** A new, not started mysql connector for the datasource settings given. */
export async function mysqlConnector(settings: Record<string, unknown>): Promise<EventConnector> {
  const dataSource = {
    name: 'my',
    settings: { reconnectDelay: 100, maxReconnectDelay: 1000, heartbeat: 1000, ...settings },
    logger: createLogger({ level: process.env.EVPUB_LOG_LEVEL ?? 'silent' }),
    connector: undefined as unknown,
  };
  await initialize(dataSource);
  return dataSource.connector as EventConnector;
}

/** A table name unique to this test. */
export function uniqueTable(): string {
  return uniqueName('my');
}

export interface PrivateMariaDb {
  port: number;
  url: string;
  dir: string;
  running: boolean;
  connect(): Promise<Connection>;
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

export interface PrivateMariaDbOptions {
  /** Run with the binary log (ROW) on; default true. */
  binlog?: boolean;
  /** Extra mariadbd arguments. */
  args?: string[];
  /**
   * Serve TLS with this certificate and key, trusting `ca` for client certificates (PEM file
   * paths, e.g. from makePki()). The files are read again on `FLUSH SSL`.
   */
  tls?: { cert: string; key: string; ca: string };
}

/** Installs a datadir in a temp dir and runs a private mariadbd on a free port. */
export async function startPrivateMariaDb(options: PrivateMariaDbOptions = {}): Promise<PrivateMariaDb> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'evpub-mariadb-'));
  const datadir = join(dir, 'data');
  await run('mariadb-install-db', [
    '--no-defaults',
    `--datadir=${datadir}`,
    '--auth-root-authentication-method=normal',
    '--skip-test-db',
    ...(process.getuid?.() === 0 ? ['--user=root'] : []),
  ]);
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const binlog = options.binlog ?? true;
  const args = [
    '--no-defaults',
    ...(process.getuid?.() === 0 ? ['--user=root'] : []),
    `--datadir=${datadir}`,
    `--port=${port}`,
    '--bind-address=127.0.0.1',
    `--socket=${join(dir, 'sock')}`,
    `--pid-file=${join(dir, 'pid')}`,
    `--log-error=${join(dir, 'error.log')}`,
    '--innodb-buffer-pool-size=16M',
    '--server-id=7',
    ...(binlog ? ['--log-bin=mysql-bin', '--binlog-format=ROW', '--binlog-row-metadata=FULL'] : []),
    ...(options.tls
      ? [`--ssl-cert=${options.tls.cert}`, `--ssl-key=${options.tls.key}`, `--ssl-ca=${options.tls.ca}`]
      : []),
    ...(options.args ?? []),
  ];
  const connect = (): Promise<Connection> =>
    mysql.createConnection({ host: '127.0.0.1', port, user: 'root', multipleStatements: true });
  const server: PrivateMariaDb = {
    port,
    url: `mysql://root@127.0.0.1:${port}/test`,
    dir,
    get running() {
      return child !== undefined;
    },
    connect,
    async start() {
      if (child) return;
      const proc = spawn('mariadbd', args, { stdio: 'ignore' });
      child = proc;
      exited = new Promise((resolve) => proc.once('exit', () => resolve()));
      void exited.then(() => {
        if (child === proc) child = undefined;
      });
      await waitFor(async () => {
        if (proc.exitCode !== null)
          throw new Error(`mariadbd exited (${proc.exitCode}); see ${dir}/error.log`);
        try {
          const c = await connect();
          await c.end();
          return true;
        } catch {
          return false;
        }
      }, `the private mariadbd on port ${port}`);
    },
    async stop() {
      const proc = child;
      if (!proc) return;
      proc.kill('SIGTERM');
      await exited;
    },
    async close() {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  await server.start();
  const c = await connect();
  await c.query('CREATE DATABASE IF NOT EXISTS test');
  await c.end();
  return server;
}

/** Runs a setup command; a failure carries the end of what it printed (why it failed). */
function run(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const proc = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const keep = (chunk: Buffer): void => void (output = (output + chunk.toString()).slice(-4000));
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    proc.once('error', reject);
    proc.once('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`${command} exited with ${code}:\n${output.trim()}`)),
    );
  });
}
