/**
 * Who may POST to a webhook endpoint: the `auth` setting's schemes, checked by `verify()` before
 * the body is parsed (settings.ts validates them).
 *
 * - `standard-webhooks` (https://www.standardwebhooks.com): headers `webhook-id`,
 *   `webhook-timestamp` (Unix seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of
 *   "id.timestamp.body">`, several separated by spaces while the sender rotates its secret). The
 *   `standardwebhooks` library decodes the `whsec_` secret and computes the signature; the
 *   timestamp must be within `tolerance` seconds of this machine's clock (either way), so a
 *   captured request is worth nothing once the window is past; inside the window, the id is
 *   remembered (ReplayGuard) and a second request with it is refused.
 * - `hmac`: one header with the HMAC of the body (GitHub's `X-Hub-Signature-256`, Shopify...).
 *   No timestamp and no id in the scheme, so no replay protection: prefer standard-webhooks.
 * - `token`: a shared token, `Authorization: Bearer <token>` (or the whole value of `header`).
 * - `none`: any request (allowed on a non-loopback address only when said explicitly).
 *
 * Every comparison runs in constant time over equal-length digests. A refused request gets
 * `401` with the same body whatever the reason; the reason goes to the log only (never a secret).
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { Webhook } from 'standardwebhooks';

export interface HmacAuth {
  scheme: 'hmac';
  header: string;
  secret: string;
  algorithm: 'sha256' | 'sha1';
  prefix: string;
  encoding: 'hex' | 'base64';
}

export interface StandardWebhooksAuth {
  scheme: 'standard-webhooks';
  /** The `whsec_...` secret, decoded once. */
  webhook: Webhook;
  /** Seconds a request's timestamp may differ from this machine's clock. */
  tolerance: number;
  /** The most webhook ids remembered at once (per endpoint). */
  replayCache: number;
}

export interface TokenAuth {
  scheme: 'token';
  token: string;
  /** Lower-case header name; `authorization` means `Bearer <token>`. */
  header: string;
}

export type WebhookAuth = HmacAuth | StandardWebhooksAuth | TokenAuth | { scheme: 'none' };

/** Does the header value match the body's HMAC? Constant time over the digest bytes. */
export function signatureMatches(sig: HmacAuth, body: Buffer, header: string | undefined): boolean {
  if (header === undefined || !header.startsWith(sig.prefix)) return false;
  const given = Buffer.from(header.slice(sig.prefix.length).trim(), sig.encoding);
  const expected = createHmac(sig.algorithm, sig.secret).update(body).digest();
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** Equal strings, compared in constant time (over their SHA-256, so lengths do not leak). */
function sameSecret(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

export type Headers = Record<string, string | string[] | undefined>;

function header(headers: Headers, name: string): string | undefined {
  const value = headers[name];
  return typeof value === 'string' ? value : undefined;
}

/** The outcome of `verify`: accepted (with the sender's message id when the scheme has one), or why not. */
export type Verdict = { ok: true; id?: string; expiresAt?: number } | { ok: false; reason: string };

/** Webhook ids longer than this are refused: an id is remembered, its size must be bounded. */
const MAX_ID_LENGTH = 256;

/** Checks a request against `auth` at time `now` (ms). Does not consult the replay guard. */
export function verify(auth: WebhookAuth, body: Buffer, headers: Headers, now: number): Verdict {
  switch (auth.scheme) {
    case 'none':
      return { ok: true };
    case 'token': {
      const value = header(headers, auth.header);
      if (value === undefined) return { ok: false, reason: `missing ${auth.header} header` };
      const token =
        auth.header === 'authorization' ? /^Bearer +(.+)$/i.exec(value.trim())?.[1] : value.trim();
      return token !== undefined && sameSecret(token, auth.token)
        ? { ok: true }
        : { ok: false, reason: 'wrong token' };
    }
    case 'hmac':
      return signatureMatches(auth, body, header(headers, auth.header))
        ? { ok: true }
        : { ok: false, reason: 'bad or missing signature' };
    case 'standard-webhooks':
      return verifyStandard(auth, body, headers, now);
  }
}

function verifyStandard(auth: StandardWebhooksAuth, body: Buffer, headers: Headers, now: number): Verdict {
  const id = header(headers, 'webhook-id');
  const timestamp = header(headers, 'webhook-timestamp');
  const signatures = header(headers, 'webhook-signature');
  if (!id || !timestamp || !signatures) return { ok: false, reason: 'missing webhook-* headers' };
  if (id.length > MAX_ID_LENGTH) return { ok: false, reason: 'webhook-id too long' };
  if (!/^\d{1,12}$/.test(timestamp)) return { ok: false, reason: 'webhook-timestamp is not Unix seconds' };
  const seconds = Number(timestamp);
  if (Math.abs(now / 1000 - seconds) > auth.tolerance) {
    return { ok: false, reason: `webhook-timestamp outside the ${auth.tolerance} s tolerance` };
  }
  const expected = Buffer.from(auth.webhook.sign(id, new Date(seconds * 1000), body));
  const matches = signatures
    .split(' ')
    .map((s) => Buffer.from(s))
    .some((given) => given.length === expected.length && timingSafeEqual(given, expected));
  if (!matches) return { ok: false, reason: 'no matching webhook-signature' };
  // The id needs remembering until no request with this timestamp can be accepted any more.
  return { ok: true, id, expiresAt: (seconds + auth.tolerance) * 1000 };
}

/**
 * The webhook ids accepted within the tolerance window, per endpoint: a second request with a
 * remembered id is a replay. `claim` records an id while its request is handled; `release`
 * forgets it again when the request was not answered 2xx (the sender's retry, with the same id,
 * must then be accepted). Entries expire with the window; at most `max` are kept, and when that
 * many are live, new ids are refused (`full`: answered 503) rather than accepted unremembered.
 *
 * In memory only: after a restart, a request captured within its window is accepted once
 * more; it then carries the same event id as the first (the id derives from `webhook-id`), so a
 * consumer or broker that drops duplicate ids drops it.
 */
export class ReplayGuard {
  private readonly seen = new Map<string, number>();

  constructor(private readonly max: number) {}

  get size(): number {
    return this.seen.size;
  }

  claim(id: string, expiresAt: number, now: number): 'ok' | 'replay' | 'full' {
    const known = this.seen.get(id);
    if (known !== undefined && known > now) return 'replay';
    this.sweep(now);
    if (this.seen.size >= this.max) return 'full';
    this.seen.set(id, expiresAt);
    return 'ok';
  }

  release(id: string): void {
    this.seen.delete(id);
  }

  /** Forgets expired ids: the oldest first (insertion order), all of them when full. */
  private sweep(now: number): void {
    for (const [id, expiresAt] of this.seen) {
      if (expiresAt > now && this.seen.size < this.max) break;
      if (expiresAt <= now) this.seen.delete(id);
    }
  }
}
