/**
 * Property tests of the config loader: whatever it is given (any JSON value, objects with
 * near-valid keys and wrong values, any file text), it returns a frozen config or throws one
 * EvpubError CONFIG_INVALID whose every problem names a path: never a TypeError, a crash or a
 * stack in the message.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, validateConfig } from '../../src/app/config';
import * as my from '../../src/connectors/mysql/settings';
import * as poll from '../../src/connectors/poll/sql';
import * as pg from '../../src/connectors/postgres/settings';
import * as webhook from '../../src/connectors/webhook/settings';
import { ErrorCode, EvpubError } from '../../src/errors';

/**
 * Runs `fn`; a throw must be CONFIG_INVALID with no stack trace, naming at least one path (or,
 * for text that does not parse, the file).
 */
function answers(fn: () => unknown, file?: string): void {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof EvpubError) || err.code !== ErrorCode.CONFIG_INVALID) {
      throw new Error(`not a CONFIG_INVALID: ${String(err)}`, { cause: err });
    }
    expect(err.message).not.toMatch(/\n\s+at /); // no stack
    if (file !== undefined && err.message.startsWith(`${file}`)) return;
    expect(err.message).toMatch(/^invalid evpub configuration/);
    const problems = (err.context?.problems ?? []) as { path: string; message: string }[];
    expect(problems.length).toBeGreaterThan(0);
    for (const p of problems) expect(p.path).not.toBe('');
  }
}

const env = { EVPUB_HTTP_PORT: undefined };

/** Words the schema knows, and near misses of them. */
const KNOWN = [
  'datasources',
  'models',
  'brokers',
  'checkpoints',
  'publisher',
  'http',
  'connector',
  'url',
  'dataSource',
  'topic',
  'broker',
  'settings',
  'envelope',
  'store',
  'path',
  'options',
  'port',
  'host',
  'token',
  'ops',
  'fields',
  'include',
  'exclude',
  'snapshot',
  'maxInFlight',
  'checkpointInterval',
  'deadLetterTopic',
  'table',
  'slot',
  'auth',
  'tls',
];
const key = fc.oneof(
  fc.constantFrom(...KNOWN),
  fc
    .tuple(fc.constantFrom(...KNOWN), fc.nat(), fc.string({ maxLength: 2 }))
    .map(([k, i, s]) => k.slice(0, i % (k.length + 1)) + s + k.slice((i % (k.length + 1)) + 1)),
  fc.string({ maxLength: 6 }),
  fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty'),
);
const scalar = fc.oneof(
  fc.constantFrom(
    'memory://b',
    'mqtt://localhost:1883',
    'postgres://u:hunter2@localhost/db',
    'webhook',
    'postgres',
    'memory',
    'file',
    '{model}/{key}',
    '{nope}',
    'a/+/b',
    '${NOT_SET}',
    '',
  ),
  fc.string({ maxLength: 8 }),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
);
const nearConfig = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small' }, scalar, tie('object'), fc.array(tie('value'), { maxLength: 3 })),
  object: fc.dictionary(key, tie('value'), { maxKeys: 5 }),
})).object;

/** A config shaped like a real one, then one part of it replaced by something random. */
const mutated = fc
  .tuple(
    fc.constantFrom(
      ['brokers'],
      ['brokers', 'default'],
      ['datasources', 'db'],
      ['datasources', 'db', 'connector'],
      ['models', 'orders'],
      ['models', 'orders', 'topic'],
      ['models', 'orders', 'settings'],
      ['checkpoints'],
      ['publisher'],
      ['http'],
    ),
    fc.oneof(nearConfig, fc.jsonValue({ maxDepth: 3 }), scalar),
  )
  .map(([at, value]) => {
    const config: Record<string, unknown> = {
      brokers: { default: { url: 'memory://fuzz' } },
      datasources: { db: { connector: 'memory' } },
      models: { orders: { dataSource: 'db', topic: 'evpub/{model}/{key}' } },
    };
    let node = config;
    for (const k of at.slice(0, -1)) node = node[k] as Record<string, unknown>;
    node[at[at.length - 1]!] = value;
    return config;
  });

const RUNS = { numRuns: 150 };

describe('validateConfig answers every input with a config or a CONFIG_INVALID naming a path', () => {
  it('any JSON value', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 4 }), (value) => answers(() => validateConfig(value, { env }))),
      RUNS,
    );
  });

  it('objects with near-valid keys and any values', () => {
    fc.assert(
      fc.property(nearConfig, (value) => answers(() => validateConfig(value, { env }))),
      RUNS,
    );
  });

  it('a valid config with one part replaced', () => {
    fc.assert(
      fc.property(mutated, (value) => answers(() => validateConfig(value, { env }))),
      RUNS,
    );
  });
});

describe('loadConfig answers any file text', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'evpub-fuzz-config-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('JSON and YAML files holding anything', () => {
    const text = fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
      nearConfig.map((v) => JSON.stringify(v)),
      fc.constantFrom(
        '{',
        'a: [',
        'datasources: 3',
        '---\n- x',
        '\u0000',
        '{"models": {"a": ',
        '*!', // an alias before its anchor
        'a: &a [x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]',
      ),
    );
    fc.assert(
      fc.property(text, fc.constantFrom('evpub.config.json', 'evpub.config.yaml'), (content, name) => {
        const file = path.join(dir, name);
        writeFileSync(file, content);
        answers(() => loadConfig({ file, env: {} }), file);
      }),
      { numRuns: 100 },
    );
  });
});

describe('connector settings readers answer any settings with a value or a CONFIG_INVALID naming the key', () => {
  const settingsKey = fc.oneof(
    key,
    fc.constantFrom(
      'auth',
      'signature',
      'rateLimit',
      'tls',
      'scheme',
      'secret',
      'tolerance',
      'keyColumn',
      'cursorColumn',
      'publication',
      'signalTable',
      'database',
    ),
  );
  const settings = fc.dictionary(
    settingsKey,
    fc.oneof(scalar, nearConfig, fc.constantFrom('none', 'x"; drop table y; --', { scheme: 'hmac' })),
    { maxKeys: 4 },
  );
  const named = (fn: () => unknown, where: string): void => {
    try {
      fn();
    } catch (err) {
      if (!(err instanceof EvpubError) || err.code !== ErrorCode.CONFIG_INVALID) {
        throw new Error(`not a CONFIG_INVALID: ${String(err)}`, { cause: err });
      }
      expect(err.message.startsWith(`${where}.`)).toBe(true);
      expect(err.context?.setting).toEqual(expect.stringMatching(/^(datasources|models)\./));
    }
  };

  it('webhook, postgres, mysql and SQL poll settings', () => {
    const base = webhook.parseWebhookSettings({ port: 0 }, 'w');
    const mysqlBase = my.parseMysqlSettings({ url: 'mysql://root@localhost/test' }, 'm');
    fc.assert(
      fc.property(settings, fc.string({ maxLength: 12 }), (s, model) => {
        fc.pre(model !== '');
        const m = `models.${model}.settings`;
        named(() => webhook.parseWebhookSettings({ port: 0, ...s }, 'w'), 'datasources.w');
        named(() => webhook.parseWebhookModel(model, s, {}, base), m);
        named(() => pg.parsePostgresSettings('p', { url: 'postgres://localhost/db', ...s }), 'datasources.p');
        named(() => pg.tableOf(model, s), m);
        named(() => my.tableOf(model, s, mysqlBase), m);
        named(() => poll.parseSqlModel(model, s), m);
      }),
      { numRuns: 300 },
    );
  });
});
