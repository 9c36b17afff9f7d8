/**
 * A private PostgreSQL cluster for fault tests: `initdb` into a temp dir, `pg_ctl start` on a
 * free port, never the shared server on 5432 (others run tests against it).
 *
 * - Trust authentication on 127.0.0.1 (also for replication connections), the socket in the
 *   temp dir, `wal_level=logical` and 10 slots / WAL senders unless `settings` say otherwise.
 * - PostgreSQL refuses to run as root: when the tests run as root, initdb and pg_ctl run as the
 *   `postgres` user (`runuser`), and the temp dir is handed to that user.
 * - `stop()` is `pg_ctl stop -m immediate`: the server quits without a shutdown checkpoint, as
 *   after a crash (the next start replays the WAL). `start()` runs it again on the same port
 *   and data. `close()` stops it and removes the dir; a process exit stops it too, so a
 *   failed test never leaves a server behind.
 */
import { execFile, execFileSync } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { PrivateBroker } from '../conformance/pubsub.suite';
import { freePort } from './services';

const run = promisify(execFile);

export const PG_BIN = process.env.EVPUB_PG_BIN ?? '/usr/lib/postgresql/15/bin';

export interface PrivatePostgres extends PrivateBroker {
  port: number;
  /** `postgres://postgres@127.0.0.1:<port>/<database>` (default database `postgres`). */
  urlOf(database?: string): string;
}

export interface PrivatePostgresOptions {
  /** Server settings (`-c name=value`), over the defaults (wal_level=logical, 10 slots...). */
  settings?: Record<string, string | number>;
}

const isRoot = (): boolean => process.getuid?.() === 0;

/** The command and arguments that run `bin` as the postgres user when we are root. */
function asPostgres(bin: string, args: string[]): [string, string[]] {
  const file = path.join(PG_BIN, bin);
  return isRoot() ? ['runuser', ['-u', 'postgres', '--', file, ...args]] : [file, args];
}

export async function privatePostgres(options: PrivatePostgresOptions = {}): Promise<PrivatePostgres> {
  const dir = mkdtempSync(path.join(tmpdir(), 'evpub-pg-'));
  const data = path.join(dir, 'data');
  if (isRoot()) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    chownSync(dir, uid, gid);
  }
  const port = await freePort();
  const settings: Record<string, string | number> = {
    wal_level: 'logical',
    listen_addresses: '127.0.0.1',
    max_replication_slots: 10,
    max_wal_senders: 10,
    fsync: 'off', // a process crash keeps what the OS has; only a machine crash would need fsync
    shared_buffers: '16MB',
    ...options.settings,
  };
  const serverOptions = [
    `-p ${port}`,
    `-k ${dir}`,
    ...Object.entries(settings).map(([k, v]) => `-c ${k}=${v}`),
  ].join(' ');
  const pgCtl = (args: string[]): Promise<unknown> => {
    const [file, argv] = asPostgres('pg_ctl', ['-D', data, ...args]);
    return run(file, argv, { timeout: 30_000 });
  };
  let running = false;
  const stopSync = (): void => {
    if (!running) return;
    const [file, argv] = asPostgres('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
    try {
      execFileSync(file, argv, { stdio: 'ignore', timeout: 30_000 });
    } catch {
      // already gone
    }
    running = false;
  };
  process.once('exit', stopSync);

  const [initFile, initArgs] = asPostgres('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '-N']);
  await run(initFile, initArgs, { timeout: 60_000 });

  const start = async (): Promise<void> => {
    if (running) return;
    await pgCtl(['-o', serverOptions, '-l', path.join(dir, 'server.log'), '-w', '-t', '30', 'start']);
    running = true;
  };
  const stop = async (): Promise<void> => {
    if (!running) return;
    await pgCtl(['-m', 'immediate', '-w', 'stop']);
    running = false;
  };
  try {
    await start();
  } catch (err) {
    process.off('exit', stopSync);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const urlOf = (database = 'postgres'): string => `postgres://postgres@127.0.0.1:${port}/${database}`;
  return {
    url: urlOf(),
    port,
    urlOf,
    start,
    stop,
    close: async () => {
      try {
        await stop();
      } finally {
        stopSync();
        process.off('exit', stopSync);
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
