/**
 * `evpub init --connector X` writes a configuration that is valid for every connector, and
 * `evpub check` tells what a source and a broker still need, with the fix, against the real
 * PostgreSQL and MariaDB: a role without REPLICATION, a table without a primary key, a missing
 * table, an unreachable broker; exit 0 once nothing is in the way.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigFrom } from '../../src/app/config';
import { configTemplate, INIT_CONNECTORS } from '../../src/cli/init';
import { builtinConnectors, initializeConnector } from '../../src/connectors/registry';
import { spawnCli } from '../e2e/cli';
import { sharedConnection } from '../helpers/mariadb';
import { PG_URL, sql } from '../helpers/postgres';
import { quietLogger } from '../helpers/publisher';
import { freePort, uniqueName } from '../helpers/services';

let dir: string;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'evpub-check-'));
});
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

async function check(config: Record<string, unknown>): Promise<{ code: number | string; out: string }> {
  const file = path.join(dir, `${uniqueName('cfg')}.json`);
  writeFileSync(file, JSON.stringify(config));
  const cli = spawnCli(['check', '--config', file], { cwd: dir });
  const code = await cli.exited;
  return { code, out: cli.stdout() + cli.stderr() };
}

describe('evpub init --connector', () => {
  it.each(INIT_CONNECTORS)(
    '%s: the configuration validates and its connector initializes',
    async (connector) => {
      const file = path.join(dir, `${connector}.yaml`);
      writeFileSync(file, configTemplate(connector));
      const { config } = loadConfigFrom({ file });
      const registry = builtinConnectors();
      for (const [name, settings] of Object.entries(config.datasources)) {
        const module = await registry.resolve(settings.connector, `datasources.${name}.connector`, dir);
        const models = Object.keys(config.models).filter((m) => config.models[m]!.dataSource === name);
        const connector = await initializeConnector(
          module,
          { name, settings, logger: quietLogger() },
          models,
        );
        expect(connector.name).toBeTruthy();
      }
    },
  );
});

describe('evpub check', () => {
  it('PostgreSQL: a role without REPLICATION and a table without a key are errors with their fix; fixed, exit 0', async () => {
    const role = uniqueName('evpub_check');
    const table = uniqueName('nokey');
    await sql(`CREATE ROLE ${role} LOGIN`);
    await sql(`CREATE TABLE ${table} (id int, v text)`);
    await sql(`ALTER TABLE ${table} OWNER TO ${role}`);
    cleanups.push(() => sql(`DROP TABLE IF EXISTS ${table}`));
    cleanups.push(() => sql(`DROP ROLE IF EXISTS ${role}`));
    const url = new URL(PG_URL);
    url.username = role;
    const config = {
      brokers: { default: { url: `memory://${uniqueName('b')}` } },
      datasources: { db: { connector: 'postgres', url: url.toString(), slot: uniqueName('slot') } },
      models: { rows: { dataSource: 'db', settings: { table: `public.${table}` } } },
    };
    const first = await check(config);
    expect(first.code).toBe(1);
    expect(first.out).toContain('✓ wal_level: logical');
    expect(first.out).toContain(`✗ REPLICATION attribute: role ${role} lacks REPLICATION`);
    expect(first.out).toContain(`fix: ALTER ROLE "${role}" WITH REPLICATION`);
    expect(first.out).toContain(`✗ table public.${table} (model rows): has no replica identity`);
    expect(first.out).toContain('not ready');

    await sql(`ALTER ROLE ${role} WITH REPLICATION`);
    await sql(`ALTER TABLE ${table} ADD PRIMARY KEY (id)`);
    const second = await check(config);
    expect(second.out).toContain('ready: evpub start can capture');
    expect(second.code).toBe(0);
  });

  it('MariaDB: the binlog settings and grants pass; a missing table is an error; an unreachable broker too', async () => {
    const conn = await sharedConnection();
    cleanups.push(() => conn.end());
    const table = uniqueName('chk');
    await conn.query(`CREATE TABLE test.${table} (id INT PRIMARY KEY, v TEXT)`);
    cleanups.push(() => conn.query(`DROP TABLE IF EXISTS test.${table}`));
    const port = await freePort(); // nothing listens there
    const result = await check({
      brokers: { default: { url: `mqtt://127.0.0.1:${port}` } },
      datasources: { db: { connector: 'mariadb', url: 'mysql://root@127.0.0.1:3306/test' } },
      models: {
        there: { dataSource: 'db', settings: { table } },
        missing: { dataSource: 'db', settings: { table: uniqueName('gone') } },
      },
    });
    expect(result.out).toContain('✓ log_bin');
    expect(result.out).toContain('✓ binlog_format: ROW');
    expect(result.out).toContain('✓ replication grants');
    expect(result.out).toContain(`✓ table test.${table} (model there)`);
    expect(result.out).toMatch(/✗ table test\.gone_\w+ \(model missing\): does not exist/);
    expect(result.out).toMatch(/✗ broker default \(mqtt:\/\/127\.0\.0\.1:\d+\/?\)/);
    expect(result.code).toBe(1);
  });
});
