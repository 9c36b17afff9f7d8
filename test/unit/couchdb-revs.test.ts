import { describe, expect, it } from 'vitest';
import { compareRevs, parseRev, ReplayFilter } from '../../src/connectors/couchdb/revs';

describe('couchdb revisions', () => {
  it('compares generations first, then hashes', () => {
    expect(parseRev('12-abc')).toEqual({ generation: 12, hash: 'abc' });
    expect(compareRevs('2-aaa', '10-aaa')).toBeLessThan(0);
    expect(compareRevs('3-bbb', '3-aaa')).toBeGreaterThan(0);
    expect(compareRevs('3-aaa', '3-aaa')).toBe(0);
    expect(compareRevs('garbage', '1-a')).toBeLessThan(0);
  });

  it('drops revisions not newer than the last seen, and passes new ones', () => {
    const f = new ReplayFilter(10);
    expect(f.accept('a', '1-x', false)).toBe(true);
    expect(f.accept('a', '1-x', false)).toBe(false);
    expect(f.accept('a', '2-y', false)).toBe(true);
    expect(f.accept('a', '1-x', false)).toBe(false);
    expect(f.accept('a', '3-z', true)).toBe(true);
    expect(f.accept('a', '3-z', true)).toBe(false);
  });

  it('passes a live conflict branch that wins after the other branch was deleted', () => {
    const f = new ReplayFilter(10);
    expect(f.accept('a', '4-del', true)).toBe(true);
    expect(f.accept('a', '2-other', false)).toBe(true);
  });

  it('forgets the least recently seen document beyond its limit', () => {
    const f = new ReplayFilter(2);
    f.accept('a', '1-a', false);
    f.accept('b', '1-b', false);
    expect(f.accept('a', '1-a', false)).toBe(false); // touches a
    f.accept('c', '1-c', false); // evicts b
    expect(f.size).toBe(2);
    expect(f.accept('a', '1-a', false)).toBe(false);
    expect(f.accept('b', '1-b', false)).toBe(true);
  });
});
