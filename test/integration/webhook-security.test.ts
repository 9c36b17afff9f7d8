/**
 * Webhooks that cannot be forged or replayed: real HTTP(S) requests to the webhook connector of
 * a real evpub app, the published events read on its (memory) broker. Each refused request must
 * publish nothing: a marker event sent last shows everything before it has been through.
 */
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { Webhook } from 'standardwebhooks';
import { evpub } from '../../src/app/app';
import { MemoryCheckpointStore } from '../../src/checkpoints/memory';
import type { WebhookConnector } from '../../src/connectors/webhook';
import { ErrorCode } from '../../src/errors';
import { makePki } from '../helpers/certs';
import { quietLogger, subscriber } from '../helpers/publisher';
import { uniqueName } from '../helpers/services';
import { waitFor } from '../helpers/wait';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});
const pki = makePki();
afterAll(() => pki.remove());

const SECRET = `whsec_${randomBytes(24).toString('base64')}`;
const signer = new Webhook(SECRET);

async function hookApp(datasource: Record<string, unknown>, model: Record<string, unknown> = {}) {
  const broker = `memory://${uniqueName('b')}`;
  const root = uniqueName('wh');
  const sub = await subscriber(broker, `${root}/#`);
  cleanups.push(() => sub.client.end());
  const app = evpub({
    logger: quietLogger(),
    brokers: { default: broker },
    checkpoints: new MemoryCheckpointStore(),
    stopTimeout: 1000,
  });
  cleanups.push(() => app.stop());
  const ds = app.dataSource<WebhookConnector>('hooks', { connector: 'webhook', port: 0, ...datasource });
  app.model('orders', { dataSource: ds, topic: `${root}/{model}`, settings: model });
  await app.start();
  const url = `${ds.connector!.url}/orders`;
  const keys = () => sub.got.map((m) => (m.json.data as { key: string }).key);
  return { app, url, got: sub.got, keys };
}

/** Headers of a Standard Webhooks request signed with `secret` at `at`. */
function signed(body: string, options: { id?: string; at?: Date; webhook?: Webhook } = {}) {
  const id = options.id ?? `msg_${randomUUID()}`;
  const at = options.at ?? new Date();
  return {
    'content-type': 'application/json',
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': (options.webhook ?? signer).sign(id, at, body),
  };
}

const post = (url: string, body: string, headers: Record<string, string>) =>
  fetch(url, { method: 'POST', body, headers });

const order = (id: string) => JSON.stringify({ id, total: 1 });

describe('webhook auth: standard-webhooks', () => {
  it('refuses unsigned, wrongly signed, expired and replayed requests with a bare 401; publishes a valid one once', async () => {
    const { url, got, keys } = await hookApp({ auth: { scheme: 'standard-webhooks', secret: SECRET } });
    const refusals: Response[] = [];
    refusals.push(await post(url, order('unsigned'), { 'content-type': 'application/json' }));
    const other = new Webhook(`whsec_${randomBytes(24).toString('base64')}`);
    refusals.push(await post(url, order('forged'), signed(order('forged'), { webhook: other })));
    // Signed for another body (tampered on the way).
    refusals.push(await post(url, order('tampered'), signed(order('original'))));
    const tenMinutesAgo = new Date(Date.now() - 10 * 60_000);
    refusals.push(await post(url, order('expired'), signed(order('expired'), { at: tenMinutesAgo })));
    const inAnHour = new Date(Date.now() + 3600_000);
    refusals.push(await post(url, order('future'), signed(order('future'), { at: inAnHour })));

    const headers = signed(order('valid'));
    const ok = await post(url, order('valid'), headers);
    expect(ok.status).toBe(202);
    const answer = (await ok.json()) as { id: string };
    refusals.push(await post(url, order('valid'), headers)); // the same request again: a replay

    for (const res of refusals) {
      expect(res.status).toBe(401);
      expect(await res.text()).toBe('{"error":"unauthorized"}');
    }
    expect((await post(url, order('marker'), signed(order('marker')))).status).toBe(202);
    await waitFor(() => got.length === 2, 'the valid event and the marker');
    expect(keys()).toEqual(['valid', 'marker']);
    // The webhook-id is the event's idempotency key: a copy replayed after a restart carries it too.
    expect(got[0]!.json.id).toBe(answer.id);
  });

  it('forgets the id of a request it did not accept (the sender retries it), and takes a wider tolerance when configured', async () => {
    const { url, got, keys } = await hookApp({
      auth: { scheme: 'standard-webhooks', secret: SECRET, tolerance: 1200 },
    });
    const id = `msg_${randomUUID()}`;
    const bad = await post(url, '{"not json', signed('{"not json', { id }));
    expect(bad.status).toBe(400);
    expect((await post(url, order('retried'), signed(order('retried'), { id }))).status).toBe(202);
    const tenMinutesAgo = new Date(Date.now() - 10 * 60_000);
    expect((await post(url, order('late'), signed(order('late'), { at: tenMinutesAgo }))).status).toBe(202);
    await waitFor(() => got.length === 2, 'both events');
    expect(keys()).toEqual(['retried', 'late']);
  });
});

describe('webhook replay across a restart', () => {
  it('is accepted by a new process (the ids were in memory) and carries the same event id', async () => {
    const auth = { auth: { scheme: 'standard-webhooks', secret: SECRET } };
    const headers = signed(order('again'));
    const first = await hookApp(auth);
    expect((await post(first.url, order('again'), headers)).status).toBe(202);
    await waitFor(() => first.got.length === 1, 'the first copy');
    await first.app.stop();
    const second = await hookApp(auth);
    expect((await post(second.url, order('again'), headers)).status).toBe(202);
    await waitFor(() => second.got.length === 1, 'the replayed copy');
    expect(second.got[0]!.json.id).toBe(first.got[0]!.json.id);
    expect((await post(second.url, order('again'), headers)).status).toBe(401);
  });
});

describe('webhook auth: hmac and token', () => {
  it('checks an HMAC header (auth scheme hmac) and a bearer token', async () => {
    const hmac = await hookApp({
      auth: { scheme: 'hmac', header: 'X-Sig', secret: 'k3y', prefix: 'sha256=' },
    });
    const sig = (b: string) => `sha256=${createHmac('sha256', 'k3y').update(b).digest('hex')}`;
    const bad = await post(hmac.url, order('h-bad'), { 'x-sig': sig(order('other')) });
    expect(bad.status).toBe(401);
    expect((await post(hmac.url, order('h-ok'), { 'x-sig': sig(order('h-ok')) })).status).toBe(202);
    await waitFor(() => hmac.got.length === 1, 'the signed event');
    expect(hmac.keys()).toEqual(['h-ok']);

    const token = await hookApp({}, { auth: { scheme: 'token', token: 't0ken-value' } });
    expect((await post(token.url, order('t-none'), {})).status).toBe(401);
    expect((await post(token.url, order('t-bad'), { authorization: 'Bearer t0ken-valuE' })).status).toBe(401);
    expect((await post(token.url, order('t-ok'), { authorization: 'Bearer t0ken-value' })).status).toBe(202);
    await waitFor(() => token.got.length === 1, 'the event with the token');
    expect(token.keys()).toEqual(['t-ok']);
  });
});

describe('webhook exposure and rate limit', () => {
  it('refuses to listen beyond loopback with no auth, unless auth is none', async () => {
    await expect(hookApp({ host: '0.0.0.0' })).rejects.toMatchObject({
      code: ErrorCode.CONFIG_INVALID,
      message: expect.stringMatching(/^models\.orders\.settings\.auth: .*0\.0\.0\.0.*auth: 'none'/) as string,
    });
    const open = await hookApp({ host: '0.0.0.0', auth: 'none' });
    const url = open.url.replace('0.0.0.0', '127.0.0.1');
    expect((await post(url, order('open'), {})).status).toBe(202);
  });

  it('answers 429 with Retry-After beyond the endpoint rate, before checking anything else', async () => {
    const { url } = await hookApp({
      auth: { scheme: 'standard-webhooks', secret: SECRET },
      rateLimit: { perSecond: 1, burst: 2 },
    });
    const answers = await Promise.all(
      Array.from({ length: 6 }, () => post(url, order('flood'), { 'content-type': 'application/json' })),
    );
    const statuses = answers.map((r) => r.status).sort();
    expect(statuses.filter((s) => s === 401).length).toBeGreaterThanOrEqual(1);
    const limited = answers.filter((r) => r.status === 429);
    expect(limited.length).toBeGreaterThanOrEqual(1);
    expect(Number(limited[0]!.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
  });
});

/** POST over HTTPS trusting the test CA; resolves the status. */
function postHttps(url: string, body: string, tls: { cert?: string; key?: string } = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      url,
      {
        method: 'POST',
        ca: readPem(pki.ca),
        ...(tls.cert ? { cert: readPem(tls.cert), key: readPem(tls.key!) } : {}),
        headers: { 'content-type': 'application/json' },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const readPem = (file: string): string => readFileSync(file, 'utf8');

describe('webhook over HTTPS', () => {
  it('serves HTTPS with tls.cert and tls.key; plain HTTP to it fails', async () => {
    const { url, got, keys } = await hookApp({
      auth: 'none',
      tls: { cert: pki.server.cert, key: pki.server.key },
    });
    expect(url).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/orders$/);
    expect(await postHttps(url, order('secure'))).toBe(202);
    await expect(post(url.replace('https:', 'http:'), order('plain'), {})).rejects.toThrow();
    await waitFor(() => got.length === 1, 'the HTTPS event');
    expect(keys()).toEqual(['secure']);
  });

  it('with tls.ca, takes only clients with a certificate from that CA (and counts as auth beyond loopback)', async () => {
    const { url, got, keys } = await hookApp({
      host: '0.0.0.0',
      tls: { cert: pki.server.cert, key: pki.server.key, ca: pki.ca },
    });
    const local = url.replace('0.0.0.0', '127.0.0.1');
    await expect(postHttps(local, order('anonymous'))).rejects.toThrow();
    await expect(postHttps(local, order('stranger'), pki.untrusted)).rejects.toThrow();
    expect(await postHttps(local, order('client'), pki.client)).toBe(202);
    await waitFor(() => got.length === 1, 'the event of the client with a certificate');
    expect(keys()).toEqual(['client']);
  });
});
