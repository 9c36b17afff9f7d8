/** Settings validation of the webhook and poll connectors, and the webhook's signature check. */
import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { initialize as initPoll, type PollConnector } from '../../src/connectors/poll/index';
import { signatureMatches } from '../../src/connectors/webhook';
import { parseWebhookModel, parseWebhookSettings } from '../../src/connectors/webhook/settings';
import { createLogger } from '../../src/logger';
import { RecordingSink } from '../conformance/connector.suite';
import { openTestDb } from '../helpers/poll-tables';

const base = parseWebhookSettings({ port: 0, basePath: '/hooks/' }, 'w');

describe('webhook settings', () => {
  it('requires a port and reads defaults', () => {
    expect(() => parseWebhookSettings({}, 'w')).toThrow(/datasources\.w\.port: is required/);
    expect(() => parseWebhookSettings({ port: 70000 }, 'w')).toThrow(/at most 65535/);
    expect(() => parseWebhookSettings({ port: 1, prot: 2 }, 'w')).toThrow(
      'datasources.w.prot: unknown setting; did you mean port?',
    );
    expect(() => parseWebhookModel('o', { keypath: 'x' }, {}, base)).toThrow(
      'models.o.settings.keypath: unknown setting; did you mean keyPath?',
    );
    expect(base).toEqual({
      port: 0,
      host: '127.0.0.1',
      basePath: '/hooks',
      ackTimeout: 30000,
      retryAfter: 1,
      tls: undefined,
    });
    const m = parseWebhookModel('orders', {}, {}, base);
    expect(m.route).toBe('/hooks/orders');
    expect(m.defaultOp).toBe('update');
    expect(m.bodyLimit).toBe(1048576);
  });

  it('takes model settings over datasource defaults, and never echoes the secret', () => {
    const m = parseWebhookModel('o', { path: 'in/{model}' }, { keyPath: 'data.id', bodyLimit: 10 }, base);
    expect(m).toMatchObject({ route: '/hooks/in/o', keyPath: ['data', 'id'], bodyLimit: 10 });
    expect(() => parseWebhookModel('o', { opMap: { x: 'upsert' } }, {}, base)).toThrow(
      /models\.o\.settings\.opMap\.x/,
    );
    let message = '';
    try {
      parseWebhookModel('o', { signature: { secret: 'hunter2-secret' } }, {}, base);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/models\.o\.settings\.signature\.header/);
    expect(message).not.toContain('hunter2');
  });

  it('checks HMAC signatures: algorithm, prefix, encoding', () => {
    const body = Buffer.from('{"id":1}');
    const sig = {
      scheme: 'hmac' as const,
      header: 'x-sig',
      secret: 's3',
      algorithm: 'sha1' as const,
      prefix: 'sha1=',
      encoding: 'base64' as const,
    };
    const good = `sha1=${createHmac('sha1', 's3').update(body).digest('base64')}`;
    expect(signatureMatches(sig, body, good)).toBe(true);
    expect(signatureMatches(sig, Buffer.from('{"id":2}'), good)).toBe(false);
    expect(signatureMatches(sig, body, good.slice(5))).toBe(false);
    expect(signatureMatches(sig, body, undefined)).toBe(false);
    expect(signatureMatches(sig, body, 'sha1=')).toBe(false);
  });
});

describe('poll settings', () => {
  const make = async (settings: Record<string, unknown>) => {
    const ds = {
      name: 'p',
      settings,
      logger: createLogger({ level: 'silent' }),
      connector: undefined as unknown,
    };
    await initPoll(ds);
    return ds.connector as PollConnector;
  };

  it('picks the source by the url scheme; refuses others without echoing credentials', async () => {
    expect((await make({ url: 'sqlite:/tmp/x.db' })).kind).toBe('sql');
    expect((await make({ url: 'https://api.example.com' })).kind).toBe('http');
    await expect(make({})).rejects.toThrow(/datasources\.p\.url: is required/);
    await expect(make({ url: 'sqlite:/tmp/x.db', headers: {} })).rejects.toThrow(
      /datasources\.p\.headers: unknown setting; the settings here are url, table/,
    );
    await expect(make({ url: 'ftp://u:pw123@h/x' })).rejects.toThrow(/ftp:\/\/u:\*\*\*@h/);
  });

  it('needs exactly one of nextCursorPath and cursorField', async () => {
    const c = await make({ url: 'http://127.0.0.1:1' });
    await expect(
      c.start({ models: [{ name: 'm', settings: {}, from: 'now' }], sink: new RecordingSink() }),
    ).rejects.toThrow(/exactly one is required/);
  });

  it('fails start on a table that does not exist', async () => {
    const db = await openTestDb('sqlite');
    try {
      await db.exec('CREATE TABLE present (id TEXT)');
      const c = await make({ url: db.url });
      await expect(
        c.start({
          models: [{ name: 'missing', settings: {}, from: 'beginning' }],
          sink: new RecordingSink(),
        }),
      ).rejects.toMatchObject({ code: 'EVPUB_SOURCE_FAILED' });
      expect(c.health().state).toBe('stopped');
    } finally {
      await db.close();
    }
  });
});
