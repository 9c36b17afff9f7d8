/**
 * What `evpub dead-letters replay` reads from a letter: the letters come from the publisher's
 * own code (src/pipeline/dead-letter.ts), so a change of the format shows here.
 */
import { describe, expect, it } from 'vitest';
import { parseLetter } from '../../src/cli/dead-letters';
import type { ChangeEvent } from '../../src/events/change-event';
import { binaryEnvelope, legacyEnvelope, structuredEnvelope } from '../../src/events/envelopes/index';
import { deadLetterPayload, rawDeadLetterPayload } from '../../src/pipeline/dead-letter';

const event: ChangeEvent = {
  id: 'e1',
  datasource: 'db',
  model: 'orders',
  op: 'update',
  key: 'k/1',
  before: null,
  after: { total: 12 },
  position: '42',
  sourceTime: '2026-12-06T07:00:00.000Z',
};
const failure = (envelope: string) => ({
  code: 'EVPUB_NOT_AUTHORIZED',
  reason: 'no',
  topic: 'db/orders',
  envelope,
});

describe('parseLetter', () => {
  it('structured CloudEvents: the original bytes, its content type, the key and the id', () => {
    const encoded = structuredEnvelope.encode(event);
    const letter = parseLetter(deadLetterPayload(event, failure('cloudevents'), encoded, 1e6));
    expect(letter).toEqual({
      id: 'e1',
      code: 'EVPUB_NOT_AUTHORIZED',
      topic: 'db/orders',
      original: encoded.payload,
      options: { contentType: 'application/cloudevents+json', key: 'k/1', messageId: 'e1' },
    });
  });

  it('binary CloudEvents: the headers, the content type from them', () => {
    const encoded = binaryEnvelope.encode(event);
    const letter = parseLetter(deadLetterPayload(event, failure('cloudevents-binary'), encoded, 1e6));
    expect(letter.original).toEqual(encoded.payload);
    expect(letter.options.headers).toEqual(encoded.headers);
    expect(letter.options.contentType).toBe('application/json');
  });

  it('legacy: application/json', () => {
    const encoded = legacyEnvelope.encode(event);
    const letter = parseLetter(deadLetterPayload(event, failure('legacy'), encoded, 1e6));
    expect(letter.options.contentType).toBe('application/json');
    expect(letter.unusable).toBeUndefined();
  });

  it('says why a letter cannot be replayed', () => {
    const encoded = structuredEnvelope.encode(event);
    expect(parseLetter(deadLetterPayload(event, failure('cloudevents'), encoded, 100)).unusable).toMatch(
      /^no original: the encoded event \(\d+ bytes\) did not fit in the letter$/,
    );
    expect(parseLetter(deadLetterPayload(event, failure('cloudevents'), undefined, 1e6)).unusable).toBe(
      'no original: the event could not be encoded',
    );
    const raw = parseLetter(
      rawDeadLetterPayload(
        { datasource: 'ws', model: 'ticks', position: null },
        { code: 'EVPUB_MALFORMED_INPUT', reason: 'not JSON' },
        { payload: Buffer.from([0xff, 0xfe]) },
        1e6,
      ),
    );
    expect(raw).toMatchObject({ id: 'ws/ticks@null', code: 'EVPUB_MALFORMED_INPUT' });
    expect(raw.unusable).toMatch(/^raw input/);
    expect(parseLetter(Buffer.from('not json')).unusable).toBe('not a dead letter (not a JSON object)');
    expect(parseLetter(Buffer.from('{"hello":1}')).unusable).toBe(
      'not a dead letter (no "event" nor "input")',
    );
  });
});
