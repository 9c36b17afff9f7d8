/**
 * How the CLI reports a failure: an EvpubError is the user's to fix, so its message alone
 * (it names the setting and the fix) goes to stderr; any other error is a bug, shown with its
 * stack. `EVPUB_DEBUG=1` shows stacks for every error. Either is redacted (src/util/redact.ts).
 */
import { isEvpubError, toError } from '../errors';
import { redactText } from '../util/redact';

export function reportError(err: unknown, stream: NodeJS.WritableStream = process.stderr): void {
  const e = toError(err);
  const debug = process.env.EVPUB_DEBUG === '1' || process.env.EVPUB_DEBUG === 'true';
  if (isEvpubError(e) && !debug) {
    stream.write(`evpub: ${redactText(e.message)}\n`);
  } else {
    stream.write(`evpub: ${redactText(e.stack ?? e.message)}\n`);
  }
}
