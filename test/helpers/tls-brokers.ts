/**
 * Shared by the TLS broker tests (tls-mqtt, tls-redis, tls-nats):
 *
 *   await roundTrip(url, options)          // subscribe, publish, receive once over one client
 *   const err = await refused(client.connect(), { code, endpoint, reason, secrets })
 *   const { logger, lines } = warnings()   // a logger at warn level that keeps its lines
 *   expectWarnedOnce(lines, { endpoint, setting, secrets })
 *
 * `refused` asserts what a user relies on when a connection is refused: the EvpubError code,
 * the endpoint and the reason in its message, and that no secret appears in the message or the
 * context.
 */
import pino from 'pino';
import { expect } from 'vitest';
import type { Logger } from '../../src/logger';
import { isEvpubError, type ErrorCode, type EvpubError } from '../../src/errors';
import { createClient, type ClientOptions } from '../../src/pubsub/index';
import { uniqueName } from './services';
import { waitFor } from './wait';

/** A client on `url` subscribes to a fresh topic, publishes to it and receives the message. */
export async function roundTrip(url: string, options: ClientOptions, topicRoot = 'tls'): Promise<void> {
  const client = createClient(url, { connectTimeout: 5000, ...options });
  try {
    const topic = `${topicRoot}/${uniqueName()}`;
    const got: string[] = [];
    client.on('message', (t, payload) => {
      if (t === topic) got.push(payload.toString());
    });
    await client.subscribe(topic);
    await client.publish(topic, 'over tls');
    await waitFor(() => got.length === 1, `the message on ${topic}`, 10_000);
    expect(got).toEqual(['over tls']);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export interface Refusal {
  code: ErrorCode;
  /** Text the message must contain to name the endpoint (host:port). */
  endpoint: string;
  /** What the message must say about the reason. */
  reason?: RegExp;
  /** Strings that must appear nowhere in the message or the context. */
  secrets: string[];
}

/** Awaits a connect that must fail, and checks the error; returns it. */
export async function refused(attempt: Promise<unknown>, expected: Refusal): Promise<EvpubError> {
  const err: unknown = await attempt.then(
    () => new Error('it connected, but it should have been refused'),
    (e: unknown) => e,
  );
  if (!isEvpubError(err)) throw err;
  expect(err.code, err.message).toBe(expected.code);
  expect(err.message).toContain(expected.endpoint);
  if (expected.reason) expect(err.message).toMatch(expected.reason);
  const visible = `${err.message} ${JSON.stringify(err.context)}`;
  for (const secret of expected.secrets) expect(visible).not.toContain(secret);
  return err;
}

/** The reasons tlsFailure() gives, as the tests look for them. */
export const REASON = {
  untrusted: /not signed by a CA evpub trusts.*tls\.ca/,
  expired: /certificate has expired/,
  wrongHost: /not for this host name.*tls\.servername/,
  clientCert: /refused the TLS handshake.*tls\.cert/,
};

/** A logger at warn level that keeps its JSON lines (for the `rejectUnauthorized: false` warning). */
export function warnings(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
  return { logger, lines };
}

/** Exactly one "TLS verification is off" warning, naming the endpoint and the setting, and no secret in any line. */
export function expectWarnedOnce(
  lines: string[],
  expected: { endpoint: string; setting: string; secrets: string[] },
): void {
  const warned = lines.filter((l) => l.includes('TLS verification is off'));
  expect(warned, lines.join('\n')).toHaveLength(1);
  expect(warned[0]).toContain(expected.endpoint);
  expect(warned[0]).toContain(`${expected.setting}.rejectUnauthorized`);
  for (const secret of expected.secrets) expect(lines.join('\n')).not.toContain(secret);
}
