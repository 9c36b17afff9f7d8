/** The mysql connector's snapshot settings (`signalTable`, typos) and its keyset condition. */
import { describe, expect, it } from 'vitest';
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
