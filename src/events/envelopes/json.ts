/** JSON encoding shared by the envelopes: a value JSON cannot carry is an encode error. */
import { ErrorCode, EvpubError } from '../../errors';
import type { ChangeEvent } from '../change-event';

/**
 * `JSON.stringify` that fails loudly instead of producing something lossy: BigInts and cycles
 * throw in JSON.stringify already; `undefined` at the top level is refused here.
 */
export function toJson(value: unknown, event: ChangeEvent): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    throw new EvpubError(ErrorCode.PUBLISH_FAILED, `event ${event.id} cannot be encoded as JSON`, {
      cause: err,
      context: { reason: 'encode', model: event.model, key: event.key },
    });
  }
  if (text === undefined) {
    throw new EvpubError(ErrorCode.PUBLISH_FAILED, `event ${event.id} encodes to nothing`, {
      context: { reason: 'encode', model: event.model, key: event.key },
    });
  }
  return text;
}
