/**
 * The scale curve's tables and writes (bench/scale.ts), in PostgreSQL and MariaDB.
 *
 * Row shapes (the size is that of the row as evpub's `data.after` JSON, about):
 *   narrow  10 columns, ~200 B: id, text, numeric, int, boolean, two short texts, a small jsonb,
 *           a date, updated_at
 *   wide    50 columns, ~2 KB: id, updated_at and 48 texts of 32 characters
 *   huge    3 columns: id, one jsonb of ~100 KB, updated_at
 *
 * Every table the bench makes goes through a `Tracker` (scale.ts), which drops it at the end of
 * its point and, on SIGINT/SIGTERM, drops whatever is left.
 */
import { Client } from 'pg';
import { createConnection, type Connection } from 'mysql2/promise';

export type Shape = 'narrow' | 'wide' | 'huge';
export const SHAPES: readonly Shape[] = ['narrow', 'wide', 'huge'];

/** Rows per transaction of a burst of this shape (a transaction of 100 KB rows: 10 of them, 1 MB). */
export const PER_TX: Record<Shape, number> = { narrow: 1000, wide: 1000, huge: 10 };

const WIDE_COLUMNS = Array.from({ length: 48 }, (_, i) => `c${String(i + 1).padStart(2, '0')}`);

const PG_COLUMNS: Record<Shape, string> = {
  narrow: `id bigserial PRIMARY KEY, name text NOT NULL, amount numeric(12, 2) NOT NULL, qty int NOT NULL,
    active boolean NOT NULL, sku text NOT NULL, city text NOT NULL, payload jsonb NOT NULL, created date NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()`,
  wide: `id bigserial PRIMARY KEY, ${WIDE_COLUMNS.map((c) => `${c} text NOT NULL`).join(', ')},
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()`,
  huge: `id bigserial PRIMARY KEY, doc jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT clock_timestamp()`,
};

const PG_INSERT: Record<Shape, { columns: string; values: string }> = {
  narrow: {
    columns: 'name, amount, qty, active, sku, city, payload, created',
    values: `'customer ' || g, (g * 1.37)::numeric(12, 2), g % 17, g % 2 = 0, 'SKU-' || g, 'city ' || (g % 100),
      jsonb_build_object('sku', 'SKU-' || g, 'qty', g % 17, 'tags', jsonb_build_array('a', 'b')), current_date`,
  },
  wide: {
    columns: WIDE_COLUMNS.join(', '),
    values: WIDE_COLUMNS.map((c) => `md5(g::text || '${c}')`).join(', '),
  },
  huge: {
    columns: 'doc',
    values: `jsonb_build_object('id', g, 'blob', repeat(md5(g::text), 3200))`,
  },
};

export const PG_DDL = (table: string, shape: Shape): string => `CREATE TABLE ${table} (${PG_COLUMNS[shape]})`;

/** One INSERT ... SELECT of `n` rows of `shape` into `table`. */
export const pgInsert = (table: string, shape: Shape, n: number): string =>
  `INSERT INTO ${table} (${PG_INSERT[shape].columns}) SELECT ${PG_INSERT[shape].values} FROM generate_series(1, ${n}) AS g`;

export const MARIADB_DDL = (table: string): string => `CREATE TABLE \`${table}\` (
  id bigint AUTO_INCREMENT PRIMARY KEY, name varchar(64) NOT NULL, amount decimal(12, 2) NOT NULL,
  qty int NOT NULL, active boolean NOT NULL, sku varchar(32) NOT NULL, city varchar(32) NOT NULL,
  payload json NOT NULL, created date NOT NULL,
  updated_at timestamp(6) NOT NULL DEFAULT current_timestamp(6))`;

/** One INSERT ... SELECT of `n` narrow rows (MariaDB's sequence engine). */
export const mariadbInsert = (table: string, n: number): string =>
  `INSERT INTO \`${table}\` (name, amount, qty, active, sku, city, payload, created)
   SELECT concat('customer ', seq), seq * 1.37, seq % 17, seq % 2 = 0, concat('SKU-', seq), concat('city ', seq % 100),
     json_object('sku', concat('SKU-', seq), 'qty', seq % 17, 'tags', json_array('a', 'b')), curdate()
   FROM seq_1_to_${n}`;

/** Something that runs statements: one PostgreSQL or MariaDB connection of a writer. */
export interface Writer {
  /** `rows` rows in transactions of `perTx`, each into the next of `tables` in turn. */
  burst(tables: string[], rows: number, perTx: number): Promise<void>;
  end(): Promise<void>;
}

export async function pgWriter(url: string, shape: Shape): Promise<Writer> {
  const db = new Client({ connectionString: url });
  await db.connect();
  return {
    async burst(tables, rows, perTx) {
      for (let done = 0, i = 0; done < rows; done += perTx, i++) {
        await db.query(pgInsert(tables[i % tables.length]!, shape, Math.min(perTx, rows - done)));
      }
    },
    end: () => db.end(),
  };
}

export async function mariadbWriter(url: string): Promise<Writer> {
  const db: Connection = await createConnection(url);
  return {
    async burst(tables, rows, perTx) {
      for (let done = 0, i = 0; done < rows; done += perTx, i++) {
        await db.query(mariadbInsert(tables[i % tables.length]!, Math.min(perTx, rows - done)));
      }
    },
    end: () => db.end(),
  };
}
