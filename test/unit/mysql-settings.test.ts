/**
 * The mysql connector's settings (`signalTable`, `statusInterval`, typos), its keyset condition
 * and its binlog lag arithmetic.
 */
import { describe, expect, it } from 'vitest';
import { lagBytes, lagSeconds } from '../../src/connectors/mysql/lag';
import { parseMysqlSettings, signalTableOf } from '../../src/connectors/mysql/settings';
import { keysetAfter } from '../../src/connectors/mysql/snapshot';
import { ErrorCode, isEvpubError } from '../../src/errors';

function error(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    expect(isEvpubError(err, ErrorCode.CONFIG_INVALID)).toBe(true);
    return err as Error;
  }
  throw new Error('expected a CONFIG_INVALID error');
}

describe('mysql settings', () => {
  it('signalTable: evpub_signal in the datasource database by default, or database.table', () => {
    expect(signalTableOf(parseMysqlSettings({ url: 'mysql://u@h/shop' }, 'my'), 'my')).toEqual({
      database: 'shop',
      table: 'evpub_signal',
    });
    expect(
      signalTableOf(parseMysqlSettings({ url: 'mysql://u@h/shop', signalTable: 'ops.sig' }, 'my'), 'my'),
    ).toEqual({
      database: 'ops',
      table: 'sig',
    });
    expect(signalTableOf(parseMysqlSettings({ database: 'shop', signalTable: 'sig' }, 'my'), 'my')).toEqual({
      database: 'shop',
      table: 'sig',
    });
  });

  it('signalTable: a bad value, or no database to put it in, names the setting', () => {
    expect(error(() => parseMysqlSettings({ signalTable: 'a.b.c' }, 'my')).message).toContain('signalTable');
    expect(error(() => parseMysqlSettings({ signalTable: 3 }, 'my')).message).toContain('signalTable');
    const settings = parseMysqlSettings({ host: 'h' }, 'my');
    expect(error(() => signalTableOf(settings, 'my')).message).toMatch(/signalTable.*database\.table/);
  });

  it('an unknown key names the nearest valid one', () => {
    expect(error(() => parseMysqlSettings({ signalTabel: 'x' }, 'my')).message).toContain(
      'did you mean signalTable?',
    );
    expect(error(() => parseMysqlSettings({ snapshotchunk: 5 }, 'my')).message).toContain(
      'did you mean snapshotChunk?',
    );
    expect(error(() => parseMysqlSettings({ zzzzzzzz: 1 }, 'my')).message).not.toContain('did you mean');
  });

  it('snapshotChunk must be a positive integer', () => {
    expect(error(() => parseMysqlSettings({ snapshotChunk: 0 }, 'my')).message).toContain('snapshotChunk');
    expect(parseMysqlSettings({}, 'my').snapshotChunk).toBe(1000);
  });

  it('statusInterval (the binlog lag reports): 10 s by default, at least 100 ms', () => {
    expect(parseMysqlSettings({}, 'my').statusInterval).toBe(10_000);
    expect(parseMysqlSettings({ statusInterval: 250 }, 'my').statusInterval).toBe(250);
    expect(error(() => parseMysqlSettings({ statusInterval: 50 }, 'my')).message).toContain(
      'datasources.my.statusInterval',
    );
    expect(error(() => parseMysqlSettings({ statusIntervall: 50 }, 'my')).message).toContain(
      'did you mean statusInterval?',
    );
  });
});

describe('binlog lag', () => {
  const files = [
    { name: 'bin.000001', size: 4000 },
    { name: 'bin.000002', size: 4100 },
    { name: 'bin.000003', size: 900 },
  ];

  it("bytes: the rest of the reader's file and every later file; unknown once its file is gone", () => {
    expect(lagBytes(files, { file: 'bin.000003', pos: 900 })).toBe(0);
    expect(lagBytes(files, { file: 'bin.000003', pos: 400 })).toBe(500);
    expect(lagBytes(files, { file: 'bin.000001', pos: 3000 })).toBe(1000 + 4100 + 900);
    expect(lagBytes(files, { file: 'bin.000000', pos: 4 })).toBeUndefined();
  });

  it('seconds: 0 when caught up, else from the later of the last event and the last catch-up', () => {
    const now = 1_000_000;
    expect(lagSeconds(0, now, undefined, undefined)).toBe(0);
    expect(lagSeconds(10, now, now - 5000, undefined)).toBe(5);
    // Idle for an hour, caught up 2 s ago: a row written since is at most 2 s behind.
    expect(lagSeconds(10, now, now - 3_600_000, now - 2000)).toBe(2);
    expect(lagSeconds(10, now, undefined, undefined)).toBeUndefined();
  });
});

describe('keysetAfter', () => {
  it('spells out the row comparison of a composite key', () => {
    expect(keysetAfter(['id'], [7])).toEqual({ sql: '`id` > ?', params: [7] });
    expect(keysetAfter(['a', 'b', 'c'], [1, 'x', 3])).toEqual({
      sql: '(`a` > ?) OR (`a` = ? AND `b` > ?) OR (`a` = ? AND `b` = ? AND `c` > ?)',
      params: [1, 1, 'x', 1, 'x', 3],
    });
  });
});
