/**
 * The connector side of the outbox, without a server: the `outbox` settings (kit/outbox.ts) and
 * the order of MySQL binlog positions by which each outbox model resumes (position.ts).
 */
import { describe, expect, it } from 'vitest';
import { isOutboxModel, outboxModels, parseOutboxSetting } from '../../src/connectors/kit/outbox';
import { SettingsReader } from '../../src/connectors/kit/settings';
import { comparePositions } from '../../src/connectors/mysql/position';
import { parseMysqlSettings } from '../../src/connectors/mysql/settings';
import { parsePostgresSettings } from '../../src/connectors/postgres/settings';

const read = (outbox: unknown) => parseOutboxSetting(SettingsReader.forDataSource('db', { outbox }), 63);

describe('outbox settings', () => {
  it('reads true, an object, absent and false', () => {
    expect(read(true)).toEqual({ table: 'evpub_outbox', schema: undefined, create: true });
    expect(read({ table: 'ob', schema: 'app', create: false })).toEqual({
      table: 'ob',
      schema: 'app',
      create: false,
    });
    expect(read(undefined)).toBeUndefined();
    expect(read(false)).toBeUndefined();
  });

  it('names the key and the fix for bad values', () => {
    expect(() => read('yes')).toThrow(
      'datasources.db.outbox: must be true or an object { table, schema, create }',
    );
    expect(() => read({ tabel: 'x' })).toThrow(
      'datasources.db.outbox.tabel: unknown setting; did you mean table?',
    );
    expect(() => read({ create: 'no' })).toThrow('datasources.db.outbox.create: must be true or false');
    expect(() => read({ table: 'a`b' })).toThrow('datasources.db.outbox.table:');
  });

  it('defaults the schema per connector', () => {
    expect(parsePostgresSettings('pg', { url: 'postgres://u@h/d', outbox: true }).outbox).toMatchObject({
      schema: 'public',
      table: 'evpub_outbox',
    });
    expect(parseMysqlSettings({ url: 'mysql://root@h/shop', outbox: true }, 'my').outbox).toMatchObject({
      schema: 'shop',
    });
    expect(() => parseMysqlSettings({ url: 'mysql://root@h', outbox: true }, 'my')).toThrow(
      'datasources.my.outbox.schema: is required',
    );
  });

  it('an outbox model has no table of its own; a datasource without outbox is named', () => {
    expect(isOutboxModel('A', { outbox: true })).toBe(true);
    expect(isOutboxModel('A', { table: 'a' })).toBe(false);
    expect(() => isOutboxModel('A', { outbox: true, snapshot: 'initial' })).toThrow(
      'models.A.settings.snapshot: cannot be given with outbox: true',
    );
    expect(() => isOutboxModel('A', { outbox: 1 })).toThrow(
      'models.A.settings.outbox: must be true or false',
    );
    expect(() =>
      outboxModels('postgres', 'db', undefined, [{ name: 'A', settings: { outbox: true } }]),
    ).toThrow('models.A.settings.outbox is true but datasources.db.outbox is not set');
  });
});

describe('mysql positions in order', () => {
  it('orders MariaDB GTID states, then transactions and rows', () => {
    expect(comparePositions({ gtid: '0-1-5' }, { gtid: '0-1-7' })).toBe(-1);
    expect(
      comparePositions({ gtid: '0-1-7', tx: '0-1-8', row: 2 }, { gtid: '0-1-7', tx: '0-1-8', row: 1 }),
    ).toBe(1);
    expect(comparePositions({ gtid: '0-1-7' }, { gtid: '0-1-7', tx: '0-1-8', row: 1 })).toBe(-1);
    expect(comparePositions({ gtid: '0-1-7,1-1-3' }, { gtid: '0-1-7,1-1-3' })).toBe(0);
    expect(comparePositions({ gtid: '' }, { gtid: '0-1-1' })).toBe(-1);
    // Each ahead in one domain: no order (the caller reads rather than skips).
    expect(comparePositions({ gtid: '0-1-8,1-1-2' }, { gtid: '0-1-7,1-1-3' })).toBeUndefined();
  });

  it('orders MySQL GTID sets and files with offsets', () => {
    const uuid = '3e11fa47-71ca-11e1-9e33-c80aa9429562';
    expect(comparePositions({ gtid: `${uuid}:1-5` }, { gtid: `${uuid}:1-9` })).toBe(-1);
    expect(comparePositions({ file: 'bin.000002', pos: 4 }, { file: 'bin.000001', pos: 900 })).toBe(1);
    expect(comparePositions({ file: 'bin.000001', pos: 300 }, { file: 'bin.000001', pos: 900 })).toBe(-1);
    expect(comparePositions({ file: 'bin.000001', pos: 4 }, { gtid: '0-1-1' })).toBeUndefined();
  });
});
