/** The postgres connector's datasource settings: URL or LoopBack's parts, unknown keys rejected. */
import { describe, expect, it } from 'vitest';
import { parsePostgresSettings, pgSsl } from '../../src/connectors/postgres/settings';
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

describe('postgres tls settings', () => {
  it('tls is validated at datasources.<name>.tls (nearest key), and refused beside sslmode in the URL', () => {
    const s = parsePostgresSettings('shop', { url: 'postgres://u@h/app', tls: { ca: '/etc/ca.pem' } });
    expect(s.tls).toEqual({ ca: '/etc/ca.pem' });
    expect(s.tlsPath).toBe('datasources.shop.tls');
    expect(() => parsePostgresSettings('shop', { url: 'postgres://u@h/app', tls: { caa: 'x' } })).toThrow(
      'datasources.shop.tls.caa: unknown TLS setting; did you mean ca?',
    );
    expect(() =>
      parsePostgresSettings('shop', {
        url: 'postgres://u@h/app?sslmode=require',
        tls: { ca: '/etc/ca.pem' },
      }),
    ).toThrow(/datasources\.shop\.tls: cannot be given with "sslmode" in the url/);
    expect(parsePostgresSettings('shop', { url: 'postgres://u@h/app?sslmode=require' }).tls).toBeUndefined();
  });

  it('a certificate file that cannot be read is CONFIG_INVALID naming the key, at start', () => {
    const s = parsePostgresSettings('shop', {
      url: 'postgres://u@h/app',
      tls: { ca: '/nonexistent/ca.pem' },
    });
    expect(() => pgSsl(s)).toThrow('datasources.shop.tls.ca: cannot read "/nonexistent/ca.pem" (ENOENT)');
  });

  it('checkpoints.tls of the postgres store is checked by the config loader', () => {
    const base = {
      brokers: { default: { url: 'memory://tls-settings' } },
      datasources: { db: { connector: 'memory' } },
      models: { m: { dataSource: 'db' } },
    };
    const ok = validateConfig({
      ...base,
      checkpoints: { store: 'postgres', url: 'postgres://u@h/app', tls: { ca: '/etc/ca.pem' } },
    });
    expect(ok.checkpoints).toMatchObject({ tls: { ca: '/etc/ca.pem' } });
    expect(() =>
      validateConfig({
        ...base,
        checkpoints: { store: 'postgres', url: 'postgres://u@h/app', tls: { servrname: 'db' } },
      }),
    ).toThrow('checkpoints.tls.servrname: unknown TLS setting; did you mean servername?');
  });
});
