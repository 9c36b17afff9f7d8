/**
 * The CDC benchmark's table and the writes of each scenario, shaped like Sequin's workload:
 * a text, a numeric, a jsonb and a timestamptz `updated_at` set by `clock_timestamp()` (the
 * time the row was written, not the transaction's start), so that latency = arrival −
 * updated_at measures from the write itself.
 */
import { Client } from 'pg';

export const PG_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

const ROW_VALUES = `'customer ' || g, (g * 1.37)::numeric(12, 2),
  jsonb_build_object('sku', 'SKU-' || g, 'qty', g % 17, 'tags', jsonb_build_array('a', 'b'))`;

export class Workload {
  private constructor(
    private readonly db: Client,
    readonly table: string,
  ) {}

  /** A new, empty table named `table` (dropped first if it exists). */
  static async create(table: string): Promise<Workload> {
    const db = new Client({ connectionString: PG_URL });
    await db.connect();
    await db.query(`DROP TABLE IF EXISTS ${table}`);
    await db.query(`CREATE TABLE ${table} (
      id bigserial PRIMARY KEY,
      name text NOT NULL,
      amount numeric(12, 2) NOT NULL,
      payload jsonb NOT NULL,
      updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )`);
    return new Workload(db, table);
  }

  /** Creates a publication for the table and a pgoutput slot (for the relay). */
  async createSlot(slot: string, publication: string): Promise<void> {
    await this.db.query(`CREATE PUBLICATION ${publication} FOR TABLE ${this.table}`);
    await this.db.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
  }

  /** Drops a slot and a publication if they exist (the relay's, or those evpub created). */
  async dropSlot(slot: string, publication: string): Promise<void> {
    await this.db.query(
      `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`,
      [slot],
    );
    await this.db.query(`DROP PUBLICATION IF EXISTS ${publication}`);
  }

  /** Inserts `rows` rows in transactions of `perTx` (one INSERT ... SELECT each). */
  async burst(rows: number, perTx: number): Promise<void> {
    for (let done = 0; done < rows; done += perTx) {
      const n = Math.min(perTx, rows - done);
      await this.db.query(`INSERT INTO ${this.table} (name, amount, payload)
        SELECT ${ROW_VALUES} FROM generate_series(1, ${n}) AS g`);
    }
  }

  /**
   * Inserts `rate` rows/s for `seconds`, in one small autocommit insert every 10 ms (rate/100
   * rows), on a schedule that does not drift: a late tick writes its rows at once.
   * Returns the rows written.
   */
  async steady(rate: number, seconds: number): Promise<number> {
    const tick = 10;
    const perTick = Math.max(1, Math.round((rate * tick) / 1000));
    const ticks = Math.round((seconds * 1000) / tick);
    const start = performance.now();
    for (let i = 0; i < ticks; i++) {
      const due = start + i * tick;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      await this.db.query(`INSERT INTO ${this.table} (name, amount, payload)
        SELECT ${ROW_VALUES} FROM generate_series(1, ${perTick}) AS g`);
    }
    return ticks * perTick;
  }

  /**
   * Mixed changes on existing rows: `txs` transactions of 100 changes each, a third inserts, a
   * third updates (setting updated_at) and a third deletes, of distinct rows. Returns the count
   * of each operation.
   */
  /** The rows in the table now (the mixed scenario updates and deletes 66 per transaction). */
  async count(): Promise<number> {
    const { rows } = await this.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${this.table}`);
    return rows[0]!.n;
  }

  async mixed(txs: number): Promise<Record<string, number>> {
    const { rows } = await this.db.query<{ id: string }>(
      `SELECT id::text FROM ${this.table} ORDER BY id LIMIT ${txs * 66}`,
    );
    if (rows.length < txs * 66)
      throw new Error(`mixed: needs ${txs * 66} rows, the table has ${rows.length}`);
    const counts = { create: 0, update: 0, delete: 0 };
    for (let t = 0; t < txs; t++) {
      const ids = rows.slice(t * 66, (t + 1) * 66).map((r) => r.id);
      await this.db.query('BEGIN');
      await this.db.query(`INSERT INTO ${this.table} (name, amount, payload)
        SELECT ${ROW_VALUES} FROM generate_series(1, 34) AS g`);
      await this.db.query(
        `UPDATE ${this.table} SET amount = amount + 1, updated_at = clock_timestamp() WHERE id = ANY($1::bigint[])`,
        [ids.slice(0, 33)],
      );
      await this.db.query(`DELETE FROM ${this.table} WHERE id = ANY($1::bigint[])`, [ids.slice(33)]);
      await this.db.query('COMMIT');
      counts.create += 34;
      counts.update += 33;
      counts.delete += 33;
    }
    return counts;
  }

  async close(drop = true): Promise<void> {
    if (drop) await this.db.query(`DROP TABLE IF EXISTS ${this.table}`);
    await this.db.end();
  }
}
