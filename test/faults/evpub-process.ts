/**
 * The publisher of the fault cases that measure memory: `evpub start --config <dir>/evpub.config.json`
 * from the built CLI (`dist/`, what `npm start` and the installed bin run), so the RSS measured
 * is evpub's and not tsx's compiler and loader thread (idle with a memory datasource: 65 MB built,
 * 121 MB through tsx). A build older than the sources fails the case with the command to run
 * (`npm test` builds first).
 *
 *   const dir = tempDir();  const pub = await startEvpub(dir, config);  ... ;  await killCli(pub);
 *
 * Also: the PostgreSQL source of a case (its table, slot and publication, dropped by `drop()`),
 * and the lines of the publisher's output that show why a case failed.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Client as PgClient } from 'pg';
import { dropSlotWhenFree, PG_URL, sql } from '../helpers/postgres';
import { uniqueName } from '../helpers/services';
import { BUILT_CLI, ROOT, spawnCli, type CliProcess } from '../e2e/cli';

/** Newest modification time (ms) of the files under `dir`. */
function newest(dir: string): number {
  let max = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    max = Math.max(max, entry.isDirectory() ? newest(file) : statSync(file).mtimeMs);
  }
  return max;
}

/** Throws, naming the command, unless dist/ is built from the current sources. */
export function requireFreshBuild(): void {
  const hint = 'run `npm run build` first (npm test does)';
  if (!existsSync(BUILT_CLI)) throw new Error(`${BUILT_CLI} is missing: ${hint}`);
  if (newest(path.join(ROOT, 'src')) > newest(path.join(ROOT, 'dist')))
    throw new Error(`dist/ is older than src/: ${hint}`);
}

/** A temp dir for a case's config and file checkpoints; `remove()` deletes it. */
export function tempDir(prefix: string): { dir: string; remove(): void } {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Writes `config` to `<dir>/evpub.config.json` and runs `evpub start` on it (log level info);
 * resolves once it printed "evpub started".
 */
export async function startEvpub(dir: string, config: unknown): Promise<CliProcess> {
  const file = path.join(dir, 'evpub.config.json');
  writeFileSync(file, JSON.stringify(config, null, 2));
  const proc = spawnCli(['start', '--config', file], {
    cwd: dir,
    built: true,
    env: { EVPUB_LOG_LEVEL: 'info', EVPUB_HTTP_PORT: '0' },
  });
  await proc.waitForOutput('evpub started', 60_000);
  return proc;
}

/** The warnings and errors a publisher logged (pino JSON lines, level ≥ 40), for a failure message. */
export function problems(proc: CliProcess, max = 20): string {
  const lines = (proc.stdout() + proc.stderr())
    .split('\n')
    .filter((line) => /"level":(4|5|6)0/.test(line) || (line !== '' && !line.startsWith('{')));
  return lines.slice(-max).join('\n');
}

/** A case's PostgreSQL source on the shared server: a table `(id int PRIMARY KEY, v int)`, a slot, a publication. */
export class PgSource {
  readonly table = uniqueName('fault');
  readonly slot = uniqueName('slot');
  readonly publication = uniqueName('pub');
  private client: PgClient | undefined;

  constructor(readonly url: string = PG_URL) {}

  async create(): Promise<void> {
    await sql(`CREATE TABLE ${this.table} (id int PRIMARY KEY, v int NOT NULL)`, [], this.url);
  }

  /** The datasource config of `evpub start` for this source (fast status and heartbeats). */
  datasource(): Record<string, unknown> {
    return {
      connector: 'postgres',
      url: this.url,
      slot: this.slot,
      publication: this.publication,
      statusInterval: 200,
      heartbeatInterval: 500,
      reconnectDelay: 100,
    };
  }

  /** One query on the case's own connection (opened on first use). */
  async query<T extends Record<string, unknown>>(text: string, values: unknown[] = []): Promise<T[]> {
    if (!this.client) {
      const client = new PgClient({ connectionString: this.url });
      await client.connect();
      this.client = client;
    }
    return (await this.client.query<T>(text, values)).rows;
  }

  /** Inserts ids from..to (inclusive) in one transaction. */
  async insert(from: number, to: number): Promise<void> {
    await this.query(`INSERT INTO ${this.table} SELECT g, 0 FROM generate_series($1::int, $2::int) g`, [
      from,
      to,
    ]);
  }

  /** The slot's confirmed_flush_lsn as a number (undefined while it has none). */
  async confirmedFlush(): Promise<bigint | undefined> {
    const rows = await this.query<{ lsn: string | null }>(
      'SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1',
      [this.slot],
    );
    const lsn = rows[0]?.lsn;
    return lsn ? parseLsn(lsn) : undefined;
  }

  async drop(): Promise<void> {
    await this.client?.end().catch(() => undefined);
    this.client = undefined;
    await dropSlotWhenFree(this.slot, this.url);
    await sql(`DROP PUBLICATION IF EXISTS ${this.publication}`, [], this.url);
    await sql(`DROP TABLE IF EXISTS ${this.table}`, [], this.url);
  }
}

/** `16/B374D848` as a number. */
export function parseLsn(text: string): bigint {
  const [high, low] = text.split('/');
  return (BigInt(`0x${high}`) << 32n) | BigInt(`0x${low}`);
}
