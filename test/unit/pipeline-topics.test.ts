import { describe, expect, it } from 'vitest';
import { compileTopic, escapeLevel } from '../../src/pipeline/topics';
import { fieldProjector } from '../../src/pipeline/fields';
import type { ChangeEvent } from '../../src/events/change-event';

const ev = { datasource: 'db', model: 'accounts', op: 'create', key: 'k1' } as const;

describe('topic templates', () => {
  it('fills placeholders', () => {
    expect(compileTopic('{datasource}/{model}/{op}/{key}')(ev)).toBe('db/accounts/create/k1');
    expect(compileTopic('/v1/subutest')(ev)).toBe('/v1/subutest');
    expect(compileTopic('cdc.{model}-{op}')(ev)).toBe('cdc.accounts-create');
  });

  it('escapes /, +, #, % and NUL so a value is one level and never a wildcard', () => {
    const render = compileTopic('{model}/{key}');
    expect(render({ ...ev, key: 'a/b+c#d%e\u0000' })).toBe('accounts/a%2Fb%2Bc%23d%25e%00');
    expect(decodeURIComponent(escapeLevel('a/b+c#d%e'))).toBe('a/b+c#d%e');
  });

  it('a template without {key} renders each datasource, model and operation as its own, in any order', () => {
    const render = compileTopic('{datasource}/{model}/{op}');
    const seen: string[] = [];
    for (const [datasource, model, op] of [
      ['db', 'accounts', 'create'],
      ['db', 'accounts', 'create'],
      ['db', 'accounts', 'delete'],
      ['db', 'orders', 'create'],
      ['db2', 'orders', 'create'],
      ['db', 'accounts', 'create'],
      ['db', 'a/b', 'update'],
    ] as const) {
      seen.push(render({ datasource, model, op, key: String(seen.length) }));
    }
    expect(seen).toEqual([
      'db/accounts/create',
      'db/accounts/create',
      'db/accounts/delete',
      'db/orders/create',
      'db2/orders/create',
      'db/accounts/create',
      'db/a%2Fb/update',
    ]);
  });

  it('rejects unknown placeholders, unbalanced braces and wildcards', () => {
    expect(() => compileTopic('{model}/{table}', 'models.x.topic')).toThrow(
      /models.x.topic: unknown placeholder \{table\}/,
    );
    expect(() => compileTopic('{model/x')).toThrow(/unbalanced/);
    expect(() => compileTopic('a/+/{model}')).toThrow(/wildcard/);
  });
});

describe('field include/exclude', () => {
  const event: ChangeEvent = {
    id: '1',
    datasource: 'db',
    model: 'm',
    op: 'update',
    key: 'k',
    before: { a: 1, b: 2, secret: 's' },
    after: { a: 3, b: 4, secret: 't' },
    position: '1',
    sourceTime: '2026-01-01T00:00:00Z',
  };

  it('include keeps only the named fields; exclude removes', () => {
    expect(fieldProjector({ include: ['a', 'secret'], exclude: ['secret'] })(event)).toMatchObject({
      before: { a: 1 },
      after: { a: 3 },
    });
    expect(fieldProjector({ exclude: ['secret'] })(event).after).toEqual({ a: 3, b: 4 });
    expect(fieldProjector({})(event)).toBe(event);
  });
});
