/**
 * The seed's envelope, byte for byte: `{"model":"accounts","message":{...the record...}}`.
 *
 * `message` is the record after the change, or before it for a delete (the seed published the
 * document CouchDB reported). No headers, no position, no operation: consumers written for the
 * seed keep working, and they get no more than the seed gave them.
 */
import type { ChangeEvent } from '../change-event';
import type { EncodedEvent, Envelope } from './envelope';
import { toJson } from './json';

export const legacyEnvelope: Envelope = {
  name: 'legacy',
  carriesId: false,
  encode(event: ChangeEvent): EncodedEvent {
    const message = event.after ?? event.before ?? null;
    const body = { model: event.model, message };
    return { payload: Buffer.from(toJson(body, event), 'utf8'), contentType: 'application/json' };
  },
};
