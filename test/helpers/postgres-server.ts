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
 * - TLS (`tls: { cert, key, ca }`, e.g. from makePki()): the files are copied into the temp dir
 *   (owned by the server's user, key mode 0600), `ssl=on` and ssl_cert_file / ssl_key_file /
 *   ssl_ca_file are written to postgresql.conf. `serverCert(pair)` swaps the server certificate
 *   (ALTER SYSTEM + reload) and resolves once new connections get it.
 * - `hba`: pg_hba.conf lines replacing initdb's; the superuser `postgres` keeps trust on the
 *   socket and on 127.0.0.1 without TLS (so `url` works for setting up), before these lines.
 */
import { execFile, execFileSync } from 'node:child_process';
import {
  appendFileSync,
  chmodSync,
  chownSync,
  copyFileSync,
  mkdtempSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
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
  /** With `tls`: serves `pair` (cert and key files) from now on. */
  serverCert(pair: { cert: string; key: string }): Promise<void>;
}

export interface PrivatePostgresOptions {
  /** Server settings (`-c name=value`), over the defaults (wal_level=logical, 10 slots...). */
  settings?: Record<string, string | number>;
  /** Serve TLS with this certificate, key and client CA (PEM files). */
  tls?: { cert: string; key: string; ca: string };
  /** pg_hba.conf lines (after the superuser's trust lines). */
  hba?: string[];
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
  let owner: { uid: number; gid: number } | undefined;
  if (isRoot()) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    owner = { uid, gid };
    chownSync(dir, uid, gid);
  }
  /** Copies a PEM file into the dir, readable by the server's user only. */
  let copies = 0;
  const install = (file: string, name: string): string => {
    const target = path.join(dir, `${name}-${(copies += 1)}.pem`);
    copyFileSync(file, target);
    chmodSync(target, 0o600);
    if (owner) chownSync(target, owner.uid, owner.gid);
    return target;
  };
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
  const asOwner = (file: string, text: string, append = false): void => {
    if (append) appendFileSync(file, text);
    else writeFileSync(file, text);
    if (owner) chownSync(file, owner.uid, owner.gid);
  };
  if (options.tls) {
    const lines = [
      'ssl = on',
      `ssl_cert_file = '${install(options.tls.cert, 'server')}'`,
      `ssl_key_file = '${install(options.tls.key, 'server-key')}'`,
      `ssl_ca_file = '${install(options.tls.ca, 'ca')}'`,
    ];
    asOwner(path.join(data, 'postgresql.conf'), `\n${lines.join('\n')}\n`, true);
  }
  if (options.hba) {
    const lines = [
      'local all all trust',
      'host all postgres 127.0.0.1/32 trust',
      'host replication postgres 127.0.0.1/32 trust',
      ...options.hba,
    ];
    asOwner(path.join(data, 'pg_hba.conf'), `${lines.join('\n')}\n`);
  }

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
  const serverCert = async (pair: { cert: string; key: string }): Promise<void> => {
    if (!options.tls) throw new Error('privatePostgres: serverCert needs the tls option');
    const cert = install(pair.cert, 'server');
    const key = install(pair.key, 'server-key');
    const { Client } = await import('pg');
    const client = new Client({ host: dir, port, user: 'postgres', database: 'postgres' });
    await client.connect();
    try {
      await client.query(`ALTER SYSTEM SET ssl_cert_file = '${cert}'`);
      await client.query(`ALTER SYSTEM SET ssl_key_file = '${key}'`);
      await client.query('SELECT pg_reload_conf()');
    } finally {
      await client.end();
    }
    // The postmaster reloads on SIGHUP, asynchronously: a backend started after the reload
    // (with the new SSL context) sees the new setting.
    for (let i = 0; i < 200; i++) {
      const probe = new Client({ host: dir, port, user: 'postgres', database: 'postgres' });
      await probe.connect();
      const { rows } = await probe.query<{ setting: string }>(
        "SELECT setting FROM pg_settings WHERE name = 'ssl_cert_file'",
      );
      await probe.end();
      if (rows[0]?.setting === cert) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error('privatePostgres: the server did not reload its certificate');
  };
  return {
    url: urlOf(),
    port,
    urlOf,
    serverCert,
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
