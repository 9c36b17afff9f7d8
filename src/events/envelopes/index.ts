/** The envelopes by name. */
import type { EnvelopeName } from './config';
import { ErrorCode, EvpubError } from '../../errors';
import type { Logger } from '../../logger';
import { binaryOrStructured, structuredEnvelope } from './cloudevents';
import type { Envelope } from './envelope';
import { legacyEnvelope } from './legacy';

export type { Envelope, EncodedEvent } from './envelope';
export { structuredEnvelope, binaryEnvelope, binaryEnvelopeWith, bindingPrefix } from './cloudevents';
export { legacyEnvelope } from './legacy';

export const ENVELOPE_NAMES: readonly EnvelopeName[] = ['cloudevents', 'cloudevents-binary', 'legacy'];

export function createEnvelope(
  name: EnvelopeName,
  /** The broker's config name and features, and the adapter (for the binding's header names). */
  broker: { headers: boolean; name: string; adapter?: string },
  logger: Logger,
): Envelope {
  switch (name) {
    case 'cloudevents':
      return structuredEnvelope;
    case 'cloudevents-binary':
      return binaryOrStructured(broker.headers, logger, broker.name, broker.adapter);
    case 'legacy':
      return legacyEnvelope;
    default:
      throw new EvpubError(
        ErrorCode.CONFIG_INVALID,
        `unknown envelope ${JSON.stringify(name)}; use one of ${ENVELOPE_NAMES.join(', ')}`,
      );
  }
}
