import { MsgHdrsImpl } from '@nats-io/transport-node';
import { describe, expect, it } from 'vitest';
import { natsOptions } from '../../src/pubsub/adapters/nats-options';
import { covers, headerBytes, isValidName, subjectsFor } from '../../src/pubsub/adapters/nats-subjects';
import { ErrorCode } from '../../src/errors';

describe('NATS subjects', () => {
  it('subscribes MQTT "#" on the parent subject too', () => {
    expect(subjectsFor('a/#')).toEqual(['a', 'a.>']);
    expect(subjectsFor('a/+/#')).toEqual(['a.*', 'a.*.>']);
    expect(subjectsFor('#')).toEqual(['>']);
    expect(subjectsFor('/v1/subutest')).toEqual(['%.v1.subutest']);
    expect(subjectsFor('a/+/c')).toEqual(['a.*.c']);
  });

  it('knows which subject covers which', () => {
    expect(covers('a.>', 'a.b.c')).toBe(true);
    expect(covers('a.>', 'a')).toBe(false);
    expect(covers('a.*.c', 'a.b.c')).toBe(true);
    expect(covers('a.*.c', 'a.*.c')).toBe(true);
    expect(covers('a.b.c', 'a.*.c')).toBe(false);
    expect(covers('a.*', 'a.>')).toBe(false);
    expect(covers('>', 'a.>')).toBe(true);
    expect(covers('a.b', 'a.b.c')).toBe(false);
  });

  it('counts header bytes exactly as nats.js encodes them', () => {
    const pairs: [string, string][] = [
      ['ce-id', 'abc'],
      ['Evpub-Key', 'ü-key'],
    ];
    const h = new MsgHdrsImpl();
    for (const [k, v] of pairs) h.set(k, v);
    expect(headerBytes(pairs)).toBe(h.encode().length);
    expect(headerBytes([])).toBe(new MsgHdrsImpl().encode().length);
  });

  it('validates stream and consumer names', () => {
    expect(isValidName('EVPUB')).toBe(true);
    expect(isValidName('a.b')).toBe(false);
    expect(isValidName('a b')).toBe(false);
    expect(isValidName('')).toBe(false);
  });

  it('checks options.nats against a closed schema, naming the key', () => {
    expect(natsOptions(undefined)).toEqual({
      jetstream: false,
      stream: 'EVPUB',
      subjects: undefined,
      duplicateWindow: 120_000,
    });
    expect(natsOptions({ jetstream: true, subjects: ['orders.>'] })).toMatchObject({
      subjects: ['orders.>'],
      duplicateWindow: 120_000,
    });
    expect(natsOptions({ jetstream: true, duplicateWindow: 600_000 }).duplicateWindow).toBe(600_000);
    const bad: [unknown, RegExp][] = [
      [{ jetstream: 'yes' }, /nats\.jetstream/],
      [{ jetstream: true, stream: 'a.b' }, /nats\.stream/],
      [{ jetstream: true, subjects: [] }, /nats\.subjects/],
      [{ subjects: ['a'] }, /nats\.subjects: only applies with nats\.jetstream/],
      [{ duplicateWindow: 60_000 }, /nats\.duplicateWindow: only applies with nats\.jetstream/],
      [{ jetstream: true, duplicateWindow: '2m' }, /nats\.duplicateWindow: must be a number of milliseconds/],
      [
        { jetstream: true, duplicateWindow: 10 },
        /nats\.duplicateWindow: must be a number of milliseconds from 1000/,
      ],
      [{ jetstream: true, duplicateWindow: 8 * 24 * 3600 * 1000 }, /nats\.duplicateWindow: .*max age/],
      [{ jetstrem: true }, /nats\.jetstrem: unknown option/],
      ['x', /nats: must be an object/],
    ];
    for (const [raw, message] of bad) {
      expect(() => natsOptions(raw)).toThrow(message);
      expect(() => natsOptions(raw)).toThrow(expect.objectContaining({ code: ErrorCode.CONFIG_INVALID }));
    }
  });
});
