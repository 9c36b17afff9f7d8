/** The postgres connector's datasource settings: URL or LoopBack's parts, unknown keys rejected. */
import { describe, expect, it } from 'vitest';
import { parsePostgresSettings } from '../../src/connectors/postgres/settings';
import { validateConfig } from '../../src/app/config';

describe('postgres settings', () => {
  it('takes a URL, or host/port/user/password/database', () => {
    const a = parsePostgresSettings('db', { connector: 'postgres', url: 'postgres://u:s3cret@h:5433/app' });
    expect(a).toMatchObject({
      slot: 'evpub_db',
      publication: 'evpub_db',
      displayUrl: 'postgres://u:***@h:5433/app',
    });
    const b = parsePostgresSettings('Main-DB', {
      connector: 'postgresql',
      name: 'Main-DB',
      host: 'db.local',
      user: 'rep',
      password: 'p@ss/word',
      database: 'app',
    });
    expect(b.url).toBe('postgres://rep:p%40ss%2Fword@db.local:5432/app');
    expect(b.slot).toBe('evpub_main_db');
    expect(b.displayUrl).not.toContain('p%40ss');
  });

  it('names a typo, a missing database and a URL given twice', () => {
    expect(() => parsePostgresSettings('db', { url: 'postgres://h/app', heartbeatIntervall: 5 })).toThrow(
      'datasources.db.heartbeatIntervall: unknown setting; did you mean heartbeatInterval?',
    );
    expect(() => parsePostgresSettings('db', { host: 'h' })).toThrow(/datasources\.db\.url: is required/);
    expect(() => parsePostgresSettings('db', { url: 'postgres://h/app', host: 'h' })).toThrow(
      /datasources\.db\.host: cannot be given with "url"/,
    );
    expect(() => parsePostgresSettings('db', { url: 'mysql://h/app' })).toThrow(
      /datasources\.db\.url: must be a URL/,
    );
  });

  it('a configuration with a postgres datasource validates', () => {
    const config = validateConfig({
      brokers: { default: { url: 'memory://x' } },
      datasources: {
        pg: {
          connector: 'postgres',
          url: 'postgres://postgres@127.0.0.1:5432/test',
          slot: 'evpub_pg',
          publication: 'evpub_pg',
          snapshot: 'initial',
          snapshotChunk: 500,
          heartbeatInterval: 10_000,
          statusInterval: 10_000,
          reconnectDelay: 1000,
          maxReconnectDelay: 30_000,
          connectTimeout: 10_000,
        },
      },
      models: { accounts: { dataSource: 'pg', settings: { table: 'public.accounts', snapshot: 'never' } } },
    });
    expect(config.datasources.pg!.snapshot).toBe('initial');
  });
});
