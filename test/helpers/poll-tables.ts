/**
 * Tables for the poll connector's tests, in SQLite (a temp file), the shared PostgreSQL and the
 * shared MariaDB: `(id, value, created_at, updated_at, deleted)`, with writes that set the
 * timestamps the way an application would (both on insert, updated_at on update, a soft delete
 * sets `deleted` and updated_at). Timestamps come from a clock that never repeats unless asked
 * (`at`), so tests decide exactly which rows share one.
 */
import Database from 'better-sqlite3';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { requireService, uniqueName } from './services';

export type Dialect = 'sqlite' | 'postgres' | 'mysql';

export interface TestDb {
  dialect: Dialect;
  /** The poll datasource url. */
  url: string;
  exec(sql: string, params?: unknown[]): Promise<void>;
  close(): Promise<void>;
}

export interface PollTable {
  name: string;
  insert(id: string, value: number, at?: string): Promise<void>;
  update(id: string, value: number, at?: string): Promise<void>;
  softDelete(id: string, at?: string): Promise<void>;
}

let last = 0;
/** A timestamp (microseconds, UTC, `YYYY-MM-DD HH:MM:SS.ffffff`) later than every one before. */
export function tick(): string {
  last = Math.max(last + 1, Date.now() * 1000);
  const d = new Date(Math.floor(last / 1000));
  const micros = String(last % 1_000_000).padStart(6, '0');
  return `${d.toISOString().slice(0, 19).replace('T', ' ')}.${micros}`;
}

export async function openTestDb(dialect: Dialect): Promise<TestDb> {
  if (dialect === 'sqlite') {
    const dir = await mkdtemp(path.join(tmpdir(), 'evpub-poll-'));
    const file = path.join(dir, 'test.db');
    const db = new Database(file);
    db.pragma('journal_mode = WAL');
    return {
      dialect,
      url: `sqlite:${file}`,
      exec: (sql, params = []) => {
        db.prepare(sql).run(...params);
        return Promise.resolve();
      },
      close: async () => {
        db.close();
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
  if (dialect === 'postgres') {
    const url = await requireService('postgres');
    const pool = new pg.Pool({ connectionString: url, max: 2 });
    return {
      dialect,
      url,
      exec: async (sql, params = []) => {
        let n = 0;
        await pool.query(
          sql.replace(/\?/g, () => `$${++n}`),
          params,
        );
      },
      close: () => pool.end(),
    };
  }
  const url = await requireService('mariadb');
  const pool = mysql.createPool({ uri: url, connectionLimit: 2 });
  return {
    dialect,
    url,
    exec: async (sql, params = []) => {
      await pool.query(sql, params);
    },
    close: () => pool.end(),
  };
}

export async function createPollTable(db: TestDb): Promise<PollTable> {
  const name = uniqueName('poll');
  const ts = { sqlite: 'TEXT', postgres: 'TIMESTAMP(6)', mysql: 'DATETIME(6)' }[db.dialect];
  await db.exec(
    `CREATE TABLE ${name} (id VARCHAR(64) PRIMARY KEY, value INTEGER, created_at ${ts} NOT NULL, updated_at ${ts} NOT NULL, deleted INTEGER NOT NULL DEFAULT 0)`,
  );
  return {
    name,
    insert: (id, value, at = tick()) =>
      db.exec(`INSERT INTO ${name} (id, value, created_at, updated_at) VALUES (?, ?, ?, ?)`, [
        id,
        value,
        at,
        at,
      ]),
    update: (id, value, at = tick()) =>
      db.exec(`UPDATE ${name} SET value = ?, updated_at = ? WHERE id = ?`, [value, at, id]),
    softDelete: (id, at = tick()) =>
      db.exec(`UPDATE ${name} SET deleted = 1, updated_at = ? WHERE id = ?`, [at, id]),
  };
}
