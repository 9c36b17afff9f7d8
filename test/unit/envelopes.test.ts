import { CloudEvent, HTTP } from 'cloudevents';
import { describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../../src/events/change-event';
import {
  binaryEnvelope,
  createEnvelope,
  legacyEnvelope,
  structuredEnvelope,
} from '../../src/events/envelopes/index';
import { createLogger } from '../../src/logger';

const event: ChangeEvent = {
  id: 'couch:accounts:2-abc',
  datasource: 'dsCloudAntIn',
  model: 'accounts',
  op: 'update',
  key: '26dd638e8462387f03f2f6f25e4e6926',
  before: { name: 'James' },
  after: { name: 'James Bond', region: 'Bangalore' },
  position: '12-g1AAAA',
  sourceTime: '2026-11-28T01:02:03.456Z',
  tx: { id: 'tx1' },
  source: { rev: '2-abc' },
};

describe('CloudEvents structured envelope', () => {
  it('is a valid CloudEvent 1.0 for the official SDK, with our attributes', () => {
    const encoded = structuredEnvelope.encode(event);
    expect(encoded.contentType).toBe('application/cloudevents+json');
    expect(encoded.headers).toBeUndefined();
    const parsed = HTTP.toEvent({
      headers: { 'content-type': encoded.contentType },
      body: encoded.payload.toString('utf8'),
    }) as CloudEvent<Record<string, unknown>>;
    expect(parsed.validate()).toBe(true);
    expect(parsed.specversion).toBe('1.0');
    expect(parsed.id).toBe(event.id);
    expect(parsed.source).toBe('/evpub/dsCloudAntIn/accounts');
    expect(parsed.type).toBe('evpub.accounts.update');
    expect(parsed.subject).toBe(event.key);
    expect(parsed.time).toBe(event.sourceTime);
    expect(parsed.datacontenttype).toBe('application/json');
    expect(parsed.data).toEqual({
      op: 'update',
      key: event.key,
      before: event.before,
      after: event.after,
      position: event.position,
      tx: { id: 'tx1' },
      source: { rev: '2-abc' },
    });
  });

  it('strict construction by the SDK accepts it; odd names stay a valid URI-reference source', () => {
    const odd = { ...event, datasource: 'my ds', model: 'a/b', op: 'create' as const, before: null };
    const body = JSON.parse(structuredEnvelope.encode(odd).payload.toString('utf8')) as Record<
      string,
      unknown
    >;
    const ce = new CloudEvent(body, true);
    expect(ce.source).toBe('/evpub/my%20ds/a%2Fb');
    expect((ce.data as unknown as { before: unknown }).before).toBeNull();
  });

  it('a value JSON cannot carry is an encode error; a BigInt is its decimal string', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => structuredEnvelope.encode({ ...event, after: cyclic })).toThrow(/cannot be encoded/);
    const big = structuredEnvelope.encode({ ...event, after: { n: 2n ** 64n } });
    expect(JSON.parse(big.payload.toString())).toMatchObject({
      data: { after: { n: '18446744073709551616' } },
    });
  });

  it('is byte for byte the attributes, then data, as one JSON object, whatever the event holds', () => {
    // The text JSON.stringify gives for the object the CloudEvents spec describes, members in
    // this order: what consumers have been receiving, and what de-duplicating hashes see.
    const text = (e: ChangeEvent, source: string) => {
      const data: Record<string, unknown> = {
        op: e.op,
        key: e.key,
        before: e.before ?? null,
        after: e.after ?? null,
        position: e.position,
      };
      if (e.tx !== undefined) data.tx = e.tx;
      if (e.source !== undefined) data.source = e.source;
      const attributes = {
        specversion: '1.0',
        id: e.id,
        source,
        type: `evpub.${e.model}.${e.op}`,
        subject: e.key,
        time: e.sourceTime,
        datacontenttype: 'application/json',
      };
      return JSON.stringify({ ...attributes, data });
    };
    const odd = 'quote " back \\ nl \n tab \t ctl \u0001 é 日本 \ud83d\ude00 lone \ud800 end';
    const cases: [ChangeEvent, string][] = [
      [event, '/evpub/dsCloudAntIn/accounts'],
      [
        { ...event, tx: undefined, source: undefined, position: null, before: undefined },
        '/evpub/dsCloudAntIn/accounts',
      ],
      [{ ...event, op: 'delete', after: null, key: odd, id: odd }, '/evpub/dsCloudAntIn/accounts'],
      [{ ...event, datasource: 'my ds', model: 'a/b"c' }, '/evpub/my%20ds/a%2Fb%22c'],
      [
        {
          ...event,
          after: {
            [odd]: odd,
            when: new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6)),
            bytes: Buffer.from('hi'),
            nested: { list: [1, -0, 1.5e300, NaN, null, undefined, 'x'], skip: undefined, fn: () => 1 },
            custom: { toJSON: (key: string) => `custom at ${key}` },
          },
        },
        '/evpub/dsCloudAntIn/accounts',
      ],
      [{ ...event, sourceTime: undefined as unknown as string }, '/evpub/dsCloudAntIn/accounts'],
      [{ ...event, after: { n: 1 }, tx: { id: '7', commitTime: undefined } }, '/evpub/dsCloudAntIn/accounts'],
    ];
    for (const [e, source] of cases) {
      expect(structuredEnvelope.encode(e).payload.toString('utf8')).toBe(text(e, source));
    }
  });
});

describe('CloudEvents binary envelope', () => {
  it('puts data in the payload and attributes in ce-* headers that the SDK reads', () => {
    const encoded = binaryEnvelope.encode(event);
    expect(encoded.contentType).toBe('application/json');
    expect(encoded.headers).toMatchObject({
      'ce-specversion': '1.0',
      'ce-id': event.id,
      'ce-type': 'evpub.accounts.update',
      'content-type': 'application/json',
    });
    const parsed = HTTP.toEvent({
      headers: encoded.headers!,
      body: encoded.payload.toString('utf8'),
    }) as CloudEvent;
    expect(parsed.validate()).toBe(true);
    expect(parsed.id).toBe(event.id);
    expect(parsed.subject).toBe(event.key);
    expect(parsed.source).toBe('/evpub/dsCloudAntIn/accounts');
    expect((parsed.data as unknown as { after: unknown }).after).toEqual(event.after);
  });

  it('percent-encodes header values outside printable ASCII', () => {
    const encoded = binaryEnvelope.encode({ ...event, key: 'ü"%' });
    expect(encoded.headers!['ce-subject']).toBe('%C3%BC%22%25');
  });

  it('falls back to structured mode on a broker without headers', () => {
    const envelope = createEnvelope(
      'cloudevents-binary',
      { headers: false, name: 'redis' },
      createLogger({ level: 'silent' }),
    );
    const encoded = envelope.encode(event);
    expect(encoded.headers).toBeUndefined();
    expect(encoded.contentType).toBe('application/cloudevents+json');
  });
});

describe('legacy envelope', () => {
  it("is byte for byte the seed's message", () => {
    const doc = {
      _id: '26dd638e8462387f03f2f6f25e4e6926',
      _rev: '1-08fb96a08261081dcd24b7a1629c8cde',
      name: 'James Bond',
      type: 'Demo',
      region: 'Bangalore',
    };
    const encoded = legacyEnvelope.encode({ ...event, op: 'create', before: null, after: doc });
    expect(encoded.payload.toString('utf8')).toBe(
      '{"model":"accounts","message":{"_id":"26dd638e8462387f03f2f6f25e4e6926","_rev":"1-08fb96a08261081dcd24b7a1629c8cde","name":"James Bond","type":"Demo","region":"Bangalore"}}',
    );
    expect(encoded.headers).toBeUndefined();
  });

  it('a CouchDB delete (no before image, a revision) carries its tombstone, as the seed published it', () => {
    const encoded = legacyEnvelope.encode({
      ...event,
      op: 'delete',
      key: 'doc1',
      before: null,
      after: null,
      source: { database: 'accounts', rev: '3-abc' },
    });
    expect(encoded.payload.toString()).toBe(
      '{"model":"accounts","message":{"_id":"doc1","_rev":"3-abc","_deleted":true}}',
    );
    // Without a revision (not CouchDB) there is nothing to carry.
    const bare = legacyEnvelope.encode({
      ...event,
      op: 'delete',
      before: null,
      after: null,
      source: undefined,
    });
    expect(bare.payload.toString()).toBe('{"model":"accounts","message":null}');
  });

  it('a delete carries the record before it', () => {
    const encoded = legacyEnvelope.encode({ ...event, op: 'delete', before: { _id: 'x' }, after: null });
    expect(encoded.payload.toString()).toBe('{"model":"accounts","message":{"_id":"x"}}');
  });
});

describe('cloudevents-binary: header names follow each broker binding', () => {
  it('Kafka ce_*, AMQP cloudEvents_*, MQTT 5 bare user properties, NATS ce-*', () => {
    const logger = createLogger({ level: 'silent' });
    const idHeader = (adapter: string): string[] =>
      Object.keys(
        createEnvelope('cloudevents-binary', { headers: true, name: 'b', adapter }, logger).encode(event)
          .headers!,
      ).filter((h) => h.endsWith('id'));
    expect(idHeader('kafka')).toEqual(['ce_id']);
    expect(idHeader('amqp')).toEqual(['cloudEvents_id']);
    expect(idHeader('mqtt')).toEqual(['id']);
    expect(idHeader('nats')).toEqual(['ce-id']);
  });
});
