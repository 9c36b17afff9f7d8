/** The webhook connector's auth settings, its replay guard and its rate limit (token bucket). */
import { describe, expect, it } from 'vitest';
import { ReplayGuard } from '../../src/connectors/webhook/auth';
import { TokenBucket } from '../../src/connectors/webhook/rate-limit';
import { parseWebhookModel, parseWebhookSettings } from '../../src/connectors/webhook/settings';
import { ErrorCode } from '../../src/errors';

const base = parseWebhookSettings({ port: 0 }, 'w');
const model = (settings: Record<string, unknown>, ds: Record<string, unknown> = {}) =>
  parseWebhookModel('o', settings, ds, base);
const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';

function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toMatchObject({ code: ErrorCode.CONFIG_INVALID });
    return (err as Error).message;
  }
  throw new Error('expected a CONFIG_INVALID');
}

describe('webhook auth settings', () => {
  it('reads each scheme with its defaults; the datasource gives the default, a model overrides it', () => {
    expect(model({ auth: { scheme: 'standard-webhooks', secret: SECRET } }).auth).toMatchObject({
      scheme: 'standard-webhooks',
      tolerance: 300,
      replayCache: 100_000,
    });
    expect(model({ auth: 'none' }).auth).toEqual({ scheme: 'none' });
    expect(model({ auth: { scheme: 'token', token: 't' } }).auth).toEqual({
      scheme: 'token',
      token: 't',
      header: 'authorization',
    });
    expect(model({}).auth).toBeUndefined();
    const ds = { signature: { header: 'X-Sig', secret: 's' } };
    expect(model({}, ds).auth).toMatchObject({ scheme: 'hmac', header: 'x-sig', algorithm: 'sha256' });
    expect(model({ auth: 'none' }, ds).auth).toEqual({ scheme: 'none' });
    expect(model({}).rateLimit).toEqual({ perSecond: 100, burst: 200 });
    expect(model({ rateLimit: { perSecond: 5 } }).rateLimit).toEqual({ perSecond: 5, burst: 10 });
    expect(model({ rateLimit: false }).rateLimit).toBeUndefined();
  });

  it('refuses bad auth settings naming the key (and the nearest one), never echoing a secret', () => {
    expect(messageOf(() => model({ auth: { scheme: 'standard-webhooks', secrte: SECRET } }))).toBe(
      'models.o.settings.auth.secrte: unknown setting; did you mean secret?',
    );
    expect(messageOf(() => model({ auth: { secret: SECRET } }))).toMatch(
      /^models\.o\.settings\.auth\.scheme: is required/,
    );
    expect(messageOf(() => model({ auth: { scheme: 'basic' } }))).toMatch(/auth\.scheme: must be one of/);
    expect(messageOf(() => model({ auth: 'open' }))).toMatch(/^models\.o\.settings\.auth: must be 'none' or/);
    const bad = messageOf(() =>
      model({ auth: { scheme: 'standard-webhooks', secret: 'whsec_not base64!' } }),
    );
    expect(bad).toMatch(/auth\.secret: must be whsec_/);
    expect(bad).not.toContain('not base64');
    const conflict = messageOf(() => model({ auth: 'none', signature: { header: 'x', secret: 'hunter2' } }));
    expect(conflict).toMatch(/^models\.o\.settings\.signature: cannot be given with auth/);
    expect(conflict).not.toContain('hunter2');
    expect(messageOf(() => model({ auth: { scheme: 'token' } }))).toMatch(/auth\.token: is required/);
    expect(messageOf(() => model({ rateLimit: { perSecnd: 1 } }))).toMatch(/did you mean perSecond\?/);
    expect(messageOf(() => model({ rateLimit: { perSecond: 0 } }))).toMatch(/perSecond: must be a positive/);
  });

  it('needs cert and key for HTTPS, and takes no client-only TLS key', () => {
    expect(messageOf(() => parseWebhookSettings({ port: 0, tls: true }, 'w'))).toMatch(
      /^datasources\.w\.tls\.cert: is required to serve HTTPS/,
    );
    expect(messageOf(() => parseWebhookSettings({ port: 0, tls: { cert: 'c.pem' } }, 'w'))).toMatch(
      /tls\.key: a client certificate needs both/,
    );
    expect(
      messageOf(() => parseWebhookSettings({ port: 0, tls: { cert: 'c', key: 'k', servername: 'x' } }, 'w')),
    ).toMatch(/tls\.servername: .*a server does not take it/);
    expect(
      messageOf(() => parseWebhookSettings({ port: 0, tls: { cert: 'c', key: 'k', passphrse: 'x' } }, 'w')),
    ).toMatch(/tls\.passphrse: unknown TLS setting; did you mean passphrase\?/);
  });
});

describe('replay guard', () => {
  it('refuses an id seen within its window, forgets it when released or expired, and is bounded', () => {
    const guard = new ReplayGuard(2);
    expect(guard.claim('a', 1000, 0)).toBe('ok');
    expect(guard.claim('a', 1000, 500)).toBe('replay');
    guard.release('a');
    expect(guard.claim('a', 1000, 500)).toBe('ok');
    expect(guard.claim('b', 2000, 600)).toBe('ok');
    expect(guard.claim('c', 2000, 700)).toBe('full'); // two live ids: not accepted unremembered
    expect(guard.claim('c', 3000, 1000)).toBe('ok'); // a expired at 1000
    expect(guard.claim('a', 3000, 1001)).toBe('full');
    expect(guard.size).toBe(2);
  });
});

describe('token bucket', () => {
  it('gives burst tokens at once, then perSecond, and says how long to wait', () => {
    let now = 0;
    const bucket = new TokenBucket(2, 3, () => now);
    expect([bucket.take(), bucket.take(), bucket.take()]).toEqual([0, 0, 0]);
    expect(bucket.take()).toBe(1);
    now = 500; // one token back
    expect(bucket.take()).toBe(0);
    expect(bucket.take()).toBe(1);
    now = 60_000; // refilled to burst, not beyond
    expect([bucket.take(), bucket.take(), bucket.take(), bucket.take()]).toEqual([0, 0, 0, 1]);
    const slow = new TokenBucket(0.1, 1, () => now);
    slow.take();
    expect(slow.take()).toBe(10);
  });
});
