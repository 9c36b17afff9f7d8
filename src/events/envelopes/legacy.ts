/**
 * The seed's envelope, byte for byte: `{"model":"accounts","message":{...the record...}}`.
 *
 * `message` is the record after the change, or before it for a delete (the seed published the
 * document CouchDB reported). A delete with no before image but a revision in `source.rev`
 * (CouchDB) carries the tombstone CouchDB reports for it, `{"_id", "_rev", "_deleted": true}`,
 * as the seed's feed (include_docs) gave it. No headers, no position, no operation: consumers written for the
 * seed keep working, and they get no more than the seed gave them.
 */
import type { ChangeEvent } from '../change-event';
import type { EncodedEvent, Envelope } from './envelope';
import { toJson } from './json';

export const legacyEnvelope: Envelope = {
  name: 'legacy',
  carriesId: false,
  encode(event: ChangeEvent): EncodedEvent {
    const message = legacyMessage(event);
    const body = { model: event.model, message };
    return { payload: Buffer.from(toJson(body, event), 'utf8'), contentType: 'application/json' };
  },
};

/** The seed's `message` for an event (see the header). */
export function legacyMessage(event: ChangeEvent): unknown {
  if (event.after !== null && event.after !== undefined) return event.after;
  if (event.before !== null && event.before !== undefined) return event.before;
  const rev = event.source?.rev;
  if (event.op === 'delete' && typeof rev === 'string') return { _id: event.key, _rev: rev, _deleted: true };
  return null;
}
