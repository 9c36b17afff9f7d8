/**
 * The envelope contract: how a change event becomes a broker message.
 *
 * `encode(event)` is synchronous and pure: it returns the payload bytes, the headers to send
 * (only in modes that use headers) and the payload's MIME type. It throws an EvpubError when the
 * event cannot be encoded (e.g. a value JSON cannot carry); the publisher dead-letters that event
 * and goes on. Field include/exclude is applied by the publisher before `encode` is called.
 */
import type { EnvelopeName } from './config';
import type { ChangeEvent } from '../change-event';

export interface EncodedEvent {
  payload: Buffer;
  /** Message headers (CloudEvents binary mode); absent when the envelope needs none. */
  headers?: Record<string, string>;
  contentType: string;
}

export interface Envelope {
  readonly name: EnvelopeName;
  /**
   * The encoded message carries the event's id (in the payload or its headers), so consumers
   * can de-duplicate on it; when false the publisher also sends it as the transport message id.
   */
  readonly carriesId: boolean;
  encode(event: ChangeEvent): EncodedEvent;
}
